"""Records of the test-time phase: :class:`AdaptStep` (one ask) and :class:`TestLog`.

:func:`build_log` turns the per-episode arrays of either decision logic (classic
profiles or certified) into a :class:`TestLog`, with the exact audit when the test model
is known: every deployed mixture ``w pi_a + (1 - w) pi_c`` is evaluated exactly from the
components' exact values (episode-level mixtures have values linear in the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .policy import Mixture
from .validation import readonly

if TYPE_CHECKING:  # pragma: no cover
    from .profiles import Profile

__all__ = ["AdaptStep", "TestLog", "build_log", "exact_components", "mixture_values",
           "violation_headline"]


@dataclass(frozen=True, eq=False)
class AdaptStep:
    """The policy to run for one episode (from :meth:`SafeAdapter.ask`).

    Attributes
    ----------
    episode : int
        0-based episode index k.
    component : int
        0 = the candidate was drawn, 1 = the safe policy (drawn once for the episode).
    policy : numpy.ndarray, shape (S, A)
        The drawn component's policy table (read-only): run it for the whole episode.
    alpha : float
        Mixture weight of the candidate.
    candidate : int
        Current candidate l (-1 once every candidate is eliminated).
    stage : int
        Stage m (classic profiles; 0 for the certified profile).
    index : int
        Index of the drawn policy among the components (0..n-1 candidates, n = pi_s).
    pair : tuple of int
        The deployed episode-level mixture ``weight pi_pair[0] + (1 - weight) pi_pair[1]``.
    weight : float
        Weight of ``pair[0]``.
    """

    episode: int
    component: int
    policy: np.ndarray
    alpha: float
    candidate: int
    stage: int
    index: int = -1
    pair: tuple = (-1, -1)
    weight: float = 1.0


@dataclass(frozen=True, eq=False)
class TestLog:
    """Record of one test phase.

    Attributes
    ----------
    profile : Profile
    constants : dict
        The resolved constants actually used (on the profile's scale).
    seed, horizon : int
    n_episodes : int
        Episodes actually run (< the budget only when stopped on a violation).
    candidate, alpha, component, stage, event : numpy.ndarray, shape (n_episodes,)
        Per episode: candidate l (-1: none left), weight on candidates, drawn component
        (0 candidate, 1 safe), stage m (0 for the certified profile), and the decision
        after it (0 none, 1 elimination, 2 update; certified: 3 references rejected,
        4 calibration refuted).
    pair, weight : numpy.ndarray, shapes (n_episodes, 2), (n_episodes,)
        The deployed mixture ``weight pi_pair[0] + (1 - weight) pi_pair[1]`` over the
        components (0..n-1 candidates, n = pi_s), for every profile.
    drawn : numpy.ndarray, shape (n_episodes,)
        Index of the component actually run in each episode (n = pi_s).
    reward, cost : numpy.ndarray, shapes (n_episodes,), (n_episodes, K)
        Observed discounted returns.
    exact_reward, exact_cost : numpy.ndarray or None, shapes (n_episodes,), (n_episodes, K)
        Exact values of each deployed mixture on the test task (model known).
    regret : numpy.ndarray or None, shape (n_episodes,)
        Cumulative ``sum_{j<=k} (V* - V_r(pi_j))``.
    regret_reference : float or None
        V* (the test task's LP optimum unless the user passed one).
    violations : int or None
        Number of episodes whose deployed mixture's exact cost exceeds the limit.
    violation_episodes : numpy.ndarray or None
    stopped_on_violation : bool
    eliminated, eliminated_at : numpy.ndarray of int64
        Candidates in the order they were eliminated, and the episode of each.
    pi_out_weights : numpy.ndarray, shape (n + 1,)
        pi_out = uniform average of the deployed mixtures, as weights over the n
        candidates and (last entry) pi_s.
    pi_out : Mixture
        The same as an episode-level mixture.
    pi_out_policy : numpy.ndarray or None, shape (S, A)
        A stationary policy with the same occupancy measure (hence the same exact values)
        as pi_out on the test task (model known).
    guarantee : bool
        Whether a safety guarantee applies: the paper profile with its preconditions met,
        or the certified profile (probability ``1 - delta_cal - delta_test`` under its
        stated assumptions).
    notes : tuple of str
    delta_cal, delta_test : float or None
        Certified: the failure probabilities of the prior and of the confidence sequences.
    alive : numpy.ndarray or None, shape (n_episodes,)
        Certified: alive calibrated reference tasks when the episode was deployed.
    certified_cost : numpy.ndarray or None, shape (n_episodes, K)
        Certified: the certified cost bound of each deployment (max over alive
        references); above the limit only for uncertified pi_s fallbacks.
    uncertified : int or None
        Certified: episodes deployed as the pi_s fallback because no mixture was certified.
    refuted_at : int or None
        Certified: episode at which every reference was rejected (the calibrated prior is
        refuted; pi_s ran alone afterwards), -1 when it never happened.
    """

    __test__ = False  # not a pytest class

    profile: Profile
    constants: dict
    seed: int
    horizon: int
    n_episodes: int
    candidate: np.ndarray
    alpha: np.ndarray
    component: np.ndarray
    stage: np.ndarray
    event: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    exact_reward: np.ndarray | None
    exact_cost: np.ndarray | None
    regret: np.ndarray | None
    regret_reference: float | None
    violations: int | None
    violation_episodes: np.ndarray | None
    stopped_on_violation: bool
    eliminated: np.ndarray
    eliminated_at: np.ndarray
    pi_out_weights: np.ndarray
    pi_out: Mixture
    pi_out_policy: np.ndarray | None
    guarantee: bool
    notes: tuple = field(default_factory=tuple)
    pair: np.ndarray | None = None
    weight: np.ndarray | None = None
    drawn: np.ndarray | None = None
    delta_cal: float | None = None
    delta_test: float | None = None
    alive: np.ndarray | None = None
    certified_cost: np.ndarray | None = None
    uncertified: int | None = None
    refuted_at: int | None = None

    @property
    def final_alpha(self) -> float:
        return float(self.alpha[-1]) if self.n_episodes else math.nan

    @property
    def final_regret(self) -> float | None:
        if self.regret is None or self.n_episodes == 0:
            return None
        return float(self.regret[-1])

    @property
    def mean_candidate_weight(self) -> float:
        """Mean over episodes of the deployed weight on candidates (1 - weight on pi_s)."""
        return float(np.mean(self.alpha)) if self.n_episodes else math.nan

    def summary(self) -> str:
        """A short report; violations are printed first and in capitals when present."""
        lines = []
        if self.violations:
            lines.append(violation_headline(self.violations, self.n_episodes,
                                            int(self.violation_episodes[0]),
                                            "deployed mixtures have"))
        if self.refuted_at is not None and self.refuted_at >= 0:
            lines.append(f"!!! CALIBRATION REFUTED at episode {self.refuted_at}: every reference "
                         "task was rejected; pi_s ran alone afterwards !!!")
        if self.stopped_on_violation:
            lines.append(f"!!! RUN STOPPED at episode {self.n_episodes} on a violation !!!")
        lines.append(f"profile {self.profile.name}, {self.n_episodes} episodes, "
                     f"H = {self.horizon}, seed {self.seed}")
        if self.regret is not None:
            lines.append(f"cumulative regret {self.final_regret:.6g} (reference V* = "
                         f"{self.regret_reference:.6g}); violations {self.violations}")
        lines.append(f"final alpha {self.final_alpha:.6g}, final candidate "
                     f"{int(self.candidate[-1]) if self.n_episodes else -1}")
        el = ", ".join(f"{int(c)}@{int(e)}" for c, e in zip(self.eliminated, self.eliminated_at))
        lines.append(f"eliminations (candidate@episode): {el or 'none'}")
        if self.delta_cal is not None:
            lines.append(f"certified: delta_cal {self.delta_cal:g} + "
                         f"delta_test {self.delta_test:g}; "
                         f"mean weight on candidates {self.mean_candidate_weight:.4g}; "
                         f"{self.uncertified} uncertified pi_s episodes; alive references "
                         f"{int(self.alive[-1]) if self.n_episodes else 0} at the end")
        if not self.guarantee:
            lines.append("note: the paper's safety guarantee does not apply to this run")
        lines.extend(self.notes)
        return "\n".join(lines)


def violation_headline(n_unsafe: int, n_episodes: int, first: int, what: str) -> str:
    """The capitalised first line of a summary with unsafe episodes (shared by every log)."""
    return (f"!!! SAFETY VIOLATIONS: {n_unsafe} of {n_episodes} {what} exact cost above the "
            f"limit (first at episode {first}) !!!")


def exact_components(M, ps):
    """Exact reward (m,) and costs (m, K) of the candidates and (last) pi_s on M."""
    from .evaluation import evaluate_many

    ev = evaluate_many(M, np.concatenate([ps.policies, ps.safe_policy[None]]))
    return np.ascontiguousarray(ev.reward), np.ascontiguousarray(ev.cost)


def mixture_values(pair, weight, ex_r, ex_c):
    """Exact values of per-episode mixtures: ``w V(pi_a) + (1 - w) V(pi_c)``."""
    a, c = pair[:, 0], pair[:, 1]
    er = weight * ex_r[a] + (1.0 - weight) * ex_r[c]
    ec = weight[:, None] * ex_c[a] + (1.0 - weight)[:, None] * ex_c[c]
    return er, ec


def _occupancy_policy(M, comps, w):
    from .evaluation import occupancy

    mu = np.zeros((M.n_states, M.n_actions))
    for i in np.flatnonzero(w > 0):
        mu += w[i] * occupancy(M, comps[i])
    d = mu.sum(axis=1, keepdims=True)
    pol = np.full_like(mu, 1.0 / M.n_actions)
    reach = d[:, 0] > 1e-300
    pol[reach] = mu[reach] / d[reach]
    return pol


def build_log(ps, *, profile, constants, seed, horizon, cand, alpha, comp, stage, event, pair,
              weight, drawn, R, C, elim, guarantee, notes, ex_r=None, ex_c=None, vstar=None, M=None,
              stopped=False, tol=1e-9, certified=None) -> TestLog:
    """A :class:`TestLog` from per-episode arrays (``d`` = their length).

    ``ex_r`` (d,), ``ex_c`` (d, K) are the exact values of the deployed mixtures (None
    without a model); ``certified`` is None for classic profiles, else a dict with
    ``delta_cal``, ``delta_test``, ``alive`` (d,), ``bound`` (d, K), ``refuted_at``.
    """
    n = ps.n_policies
    b = np.asarray(ps.cost_limit)
    d = int(cand.size)
    order = np.argsort(np.where(elim >= 0, elim, np.iinfo(np.int64).max), kind="stable")
    order = order[elim[order] >= 0]
    w = np.zeros(n + 1)
    if d:
        np.add.at(w, pair[:, 0], weight)
        np.add.at(w, pair[:, 1], 1.0 - weight)
        w /= d
    else:
        w[n] = 1.0
    comps = np.concatenate([ps.policies, ps.safe_policy[None]])
    pi_out = Mixture(comps, w / w.sum())
    regret = violations = viol_eps = pi_pol = None
    if ex_r is not None:
        regret = np.cumsum(vstar - ex_r)
        viol_mask = np.any(ex_c > b[None, :] + tol, axis=1)
        viol_eps = np.flatnonzero(viol_mask)
        violations = int(viol_eps.size)
        pi_pol = _occupancy_policy(M, comps, pi_out.weights)
    notes = tuple(notes)
    if certified is None and cand.size and np.any(cand < 0):
        first = int(np.flatnonzero(cand < 0)[0])
        notes += (f"every candidate was eliminated by episode {first}; the safe policy ran "
                  "alone afterwards",)
    ro = lambda a: None if a is None else readonly(np.ascontiguousarray(a))  # noqa: E731
    extra = {}
    if certified is not None:
        bound = certified["bound"]
        alive = certified["alive"]
        unc = int(np.count_nonzero((alive > 0) & np.any(bound > b[None, :], axis=1)))
        extra = {"delta_cal": float(certified["delta_cal"]),
                 "delta_test": float(certified["delta_test"]), "alive": ro(alive),
                 "certified_cost": ro(bound), "uncertified": unc,
                 "refuted_at": int(certified["refuted_at"])}
        if unc:
            notes += (f"{unc} episodes ran pi_s as an uncertified fallback (no mixture had a "
                      "certified cost within the limit); their safety rests on O_s's "
                      "verification, not on the certified bound",)
        if extra["refuted_at"] >= 0:
            notes += (f"calibration refuted at episode {extra['refuted_at']}: no reference task "
                      "is consistent with the observed returns (probability <= delta_cal + "
                      "delta_test if the assumptions hold); pi_s ran alone afterwards",)
    return TestLog(
        profile=profile, constants=dict(constants), seed=int(seed), horizon=int(horizon),
        n_episodes=d, candidate=ro(cand), alpha=ro(alpha), component=ro(comp), stage=ro(stage),
        event=ro(event), reward=ro(R), cost=ro(C), exact_reward=ro(ex_r), exact_cost=ro(ex_c),
        regret=ro(regret), regret_reference=vstar, violations=violations,
        violation_episodes=ro(viol_eps), stopped_on_violation=bool(stopped),
        eliminated=ro(order.astype(np.int64)), eliminated_at=ro(elim[order].copy()),
        pi_out_weights=ro(w), pi_out=pi_out, pi_out_policy=ro(pi_pol),
        guarantee=bool(guarantee), notes=notes, pair=ro(pair), weight=ro(weight), drawn=ro(drawn),
        **extra,
    )
