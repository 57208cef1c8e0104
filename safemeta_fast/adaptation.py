"""Test-time phase (paper Algorithm 2): safe mixture adaptation with elimination.

One implementation of the decision logic (``safemeta_fast.kernels.adaptation``: the
elimination test, the weight schedule, candidate selection, the pooled safe-policy
windows, the minimum window and the update gate, as jitted functions over a small state
array) is driven in two ways:

* **ask/tell** (:meth:`SafeAdapter.ask`, :meth:`SafeAdapter.tell`) for any environment the
  user runs; it never needs the test task's model;
* **fused** (:meth:`SafeAdapter.run`): the whole K-episode loop, rollouts included, in one
  compiled kernel on a known tabular test task, with an exact audit of every deployed
  mixture (reward, cost, regret, violations).

Algorithm (SPEC section 6), per episode k = 0..K-1 (0-based here):

1. deploy ``pi_k = alpha pi_l + (1 - alpha) pi_s`` as an episode-level mixture: the
   component (0 = candidate, 1 = safe) is drawn once, from stream k of the seed;
2. observe the discounted returns ``R_k``, ``C_k`` (horizon H);
3. elimination: with n episodes in the window, if ``|mean R - u_lm| > sqrt(c_r/n) + e_r``
   or, for any constraint k, ``|mean slack_k - v_lm,k| > sqrt(c_c/n) + e_c`` (and
   ``n >= min_window``), drop l, take the alive candidate with the largest u, m = 0,
   alpha = 0, new window;
4. else if ``n - gate_offset >= max_k min(max(gate_const / v_lm,k^2, gate_min), gate_max)``
   and ``m <= m_max(l)``: ``alpha <- alpha_{m+1}``, m <- m + 1, new window.

Several constraints: the cost test runs per constraint (any failing one eliminates);
alpha_1, the recursion and m_max are computed per constraint and the smallest value is
used; the update gate takes the largest episode count over constraints. This is the most
conservative combination.

Choices where SPEC is silent (documented, also listed in the module's tests):

* ties in u go to the lowest candidate index (the reference's list order);
* once every candidate is eliminated the safe policy is deployed alone (candidate -1);
* the "reference" profile's pooled windows: every episode run with m = 0 (pi_s alone)
  is added to one pool shared by all candidates; after the first elimination, a
  candidate at m = 0 is tested (and gated) on the pooled means and pooled count, with
  cost radius ``sqrt(150/n) + eps L_c`` and the usual reward radius;
* the "reference" and "pce" profiles compare with ``>=`` (the authors' code), "paper"
  with ``>`` (SPEC: "exceeds");
* "paper" works on the normalised scale of SPEC section 2: reward quantities are divided
  by the per-step reward range, slack of constraint k by ``max |(1-gamma) b_k - c_k|``
  (a shift of the reward does not matter: reward enters only through differences and
  the argmax of u). eps is the policy set's eps read on that scale, and the margin xi is
  ``xi_hat / max_k scale_k``;
* ``alpha_1`` or the recursion are clipped to [0, 1]; ``m_max`` is 0 when
  ``C_l`` is not in (0, 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .cmdp import CMDP, _readonly
from .errors import SafetyAssumptionError
from .kernels import adaptation as _k
from .kernels.rollout import build_tables, table_size
from .policy import Mixture
from .policyset import PolicySet
from .rollout import _MAX_ENTRIES, _alias_table, _tail
from .seeding import resolve_seed
from .validation import check_int, check_real

__all__ = [
    "Profile",
    "PAPER",
    "REFERENCE",
    "PCE",
    "PROFILES",
    "SafeAdapter",
    "AdaptStep",
    "TestLog",
    "lipschitz_constant",
    "normalisation_of",
]


def lipschitz_constant(gamma: float) -> float:
    """L = 1/(1-gamma) + 2 gamma/(1-gamma)^2 (SPEC section 3; 190 at gamma = 0.9)."""
    return 1.0 / (1.0 - gamma) + 2.0 * gamma / (1.0 - gamma) ** 2


def normalisation_of(M: CMDP) -> dict:
    """Scales of the paper profile's normalised copy of a task family (SPEC section 2).

    Returns ``{"reward_range": max r - min r, "utility_scale": max_{s,a} |(1-gamma) b_k - c[s, a, k]|}``
    (shape (K,)); pass them to :class:`SafeAdapter` as keywords. Any task of the family
    with the same r, c, b and gamma gives the same numbers; the test model is not needed.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> normalisation_of(gridworld(0.3))["reward_range"]
    10.0
    """
    if not isinstance(M, CMDP):
        raise TypeError(f"M must be a CMDP; got {type(M).__name__}")
    r = np.asarray(M.r)
    util = (1.0 - M.gamma) * np.asarray(M.cost_limit)[None, None, :] - np.asarray(M.c)
    return {
        "reward_range": float(r.max() - r.min()),
        "utility_scale": np.abs(util).reshape(-1, M.n_constraints).max(axis=0),
    }


@dataclass(frozen=True)
class Profile:
    """Constants of the test-time phase (SPEC section 6). ``None`` = the theory value.

    Theory values (the "paper" profile) use L = :func:`lipschitz_constant`, the horizon
    K = ``n_episodes`` and ``delta`` of the adapter, on the normalised scale.

    Attributes
    ----------
    name : str
    normalised : bool
        Work on the normalised scale of SPEC section 2 (paper) or in raw units.
    eps : float or None
        Closeness radius; None: the policy set's eps.
    lipschitz : float or None
        L; None: ``1/(1-gamma) + 2 gamma/(1-gamma)^2``.
    L_r, L_c : float or None
        Model error of the reward / cost test is ``eps * L_r`` / ``eps * L_c``; None: L + 1.
    reward_radius, cost_radius : float or None
        ``c`` in the radius ``sqrt(c / n)``; None: ``2 ln(4K/delta) / (1-gamma)^2``.
    pooled_cost_radius : float or None
        ``c`` of the pooled safe-policy windows; None: no pooling.
    min_window : int
        No elimination before the window holds this many episodes.
    gate_const, gate_min, gate_max, gate_offset : float
        Update when ``n - gate_offset >= max_k min(max(gate_const / v_lm,k^2, gate_min), gate_max)``;
        ``gate_const`` None: ``32 ln(4K/delta) / (1-gamma)^2``.
    alpha1_shift, alpha1_denom : float or None
        ``alpha_1 = (v_s - shift) / (v_s - shift + denom)``; None: ``2 eps (L+2)`` and ``2/(1-gamma)``.
    recursion_add : float or None
        ``alpha_{m+1} = 3 v_s alpha_m / ((2 + alpha_m) v_s + add)``; None: ``(4L+9) eps``.
    mmax_add : float or None
        ``m_max = log_C(eps)``, ``C = (2 v_s + add) / (3 v_s)``; None: ``(4L+9) eps``.
    fixed_alpha : float or None
        When set, alpha never changes (PCE: 1, the candidate alone).
    inclusive : bool
        Eliminate on ``deviation >= radius`` instead of ``>``.
    check_preconditions : bool
        Check ``(8L+18) eps <= xi`` and ``v_s > (4L+9) eps`` at start (paper).
    horizon : int or None
        Default episode horizon of this profile.
    """

    name: str = "custom"
    normalised: bool = False
    eps: float | None = None
    lipschitz: float | None = None
    L_r: float | None = None
    L_c: float | None = None
    reward_radius: float | None = None
    cost_radius: float | None = None
    pooled_cost_radius: float | None = None
    min_window: int = 1
    gate_const: float | None = None
    gate_min: float = 0.0
    gate_max: float = math.inf
    gate_offset: float = 0.0
    alpha1_shift: float | None = None
    alpha1_denom: float | None = None
    recursion_add: float | None = None
    mmax_add: float | None = None
    fixed_alpha: float | None = None
    inclusive: bool = False
    check_preconditions: bool = False
    horizon: int | None = None

    def resolve(self, *, gamma: float, eps: float, n_episodes: int, delta: float) -> dict:
        """All constants as numbers for a run (None entries -> theory values)."""
        L = lipschitz_constant(gamma) if self.lipschitz is None else float(self.lipschitz)
        e = float(eps if self.eps is None else self.eps)
        log_term = math.log(4.0 * n_episodes / delta)
        theory_rad = 2.0 * log_term / (1.0 - gamma) ** 2
        pick = lambda x, default: float(default if x is None else x)  # noqa: E731
        return {
            "eps": e,
            "L": L,
            "reward_radius": pick(self.reward_radius, theory_rad),
            "cost_radius": pick(self.cost_radius, theory_rad),
            "pooled_cost_radius": -1.0 if self.pooled_cost_radius is None
            else float(self.pooled_cost_radius),
            "reward_model_error": e * pick(self.L_r, L + 1.0),
            "cost_model_error": e * pick(self.L_c, L + 1.0),
            "min_window": float(self.min_window),
            "gate_const": pick(self.gate_const, 32.0 * log_term / (1.0 - gamma) ** 2),
            "gate_min": float(self.gate_min),
            "gate_max": float(self.gate_max),
            "gate_offset": float(self.gate_offset),
            "alpha1_shift": pick(self.alpha1_shift, 2.0 * e * (L + 2.0)),
            "alpha1_denom": pick(self.alpha1_denom, 2.0 / (1.0 - gamma)),
            "recursion_add": pick(self.recursion_add, (4.0 * L + 9.0) * e),
            "mmax_add": pick(self.mmax_add, (4.0 * L + 9.0) * e),
            "fixed_alpha": math.nan if self.fixed_alpha is None else float(self.fixed_alpha),
            "inclusive": bool(self.inclusive),
        }


#: SPEC section 6 exactly, normalised scale, theory constants, preconditions checked.
PAPER = Profile(name="paper", normalised=True, check_preconditions=True)

_REF_EPS = 0.01
#: The authors' gridworld run (raw units): eps 0.01, L_r 8, L_c 1, radii 4000 / 300,
#: pooled 150, min window 1000, gate min(max(100/v^2, 1000), 5200) after n - 2.
#: Not reproduced: the authors' code also multiplies each new alpha by 1.5 (1.2) when the
#: EXACT cost of the current mixture on the test task leaves a margin above 0.4 (0.2);
#: that uses the unknown test model, so no profile does it. With or without it these
#: constants deploy unsafe mixtures on the paper's setting (README, "Safety audit").
REFERENCE = Profile(
    name="reference", normalised=False, eps=_REF_EPS, lipschitz=0.0, L_r=8.0, L_c=1.0,
    reward_radius=4000.0, cost_radius=300.0, pooled_cost_radius=150.0, min_window=1000,
    gate_const=100.0, gate_min=1000.0, gate_max=5200.0, gate_offset=2.0,
    alpha1_shift=2.0 * _REF_EPS * 1.0, alpha1_denom=2.0,
    recursion_add=(2.0 * 1.0 + 1.0) * _REF_EPS, mmax_add=0.0, inclusive=True, horizon=600,
)

#: Paper appendix F without safety: alpha fixed at 1, eps 0.1, radii 3000 / 600, window 100.
PCE = Profile(
    name="pce", normalised=False, eps=0.1, lipschitz=0.0, L_r=8.0, L_c=1.0,
    reward_radius=3000.0, cost_radius=600.0, min_window=100, gate_const=0.0,
    alpha1_shift=0.0, alpha1_denom=1.0, recursion_add=0.0, mmax_add=0.0, fixed_alpha=1.0,
    inclusive=True, horizon=600,
)

PROFILES = {"paper": PAPER, "reference": REFERENCE, "pce": PCE}


def _params_array(c: dict, inv_r: float) -> np.ndarray:
    p = np.empty(_k.N_PARAMS)
    p[_k.P_RAD_R] = c["reward_radius"]
    p[_k.P_RAD_C] = c["cost_radius"]
    p[_k.P_RAD_POOL] = c["pooled_cost_radius"]
    p[_k.P_ERR_R] = c["reward_model_error"]
    p[_k.P_ERR_C] = c["cost_model_error"]
    p[_k.P_MIN_WIN] = c["min_window"]
    p[_k.P_GATE_CONST] = c["gate_const"]
    p[_k.P_GATE_MIN] = c["gate_min"]
    p[_k.P_GATE_MAX] = c["gate_max"]
    p[_k.P_GATE_OFF] = c["gate_offset"]
    p[_k.P_A1_SHIFT] = c["alpha1_shift"]
    p[_k.P_A1_DENOM] = c["alpha1_denom"]
    p[_k.P_REC_ADD] = c["recursion_add"]
    p[_k.P_MMAX_ADD] = c["mmax_add"]
    p[_k.P_EPS] = c["eps"]
    p[_k.P_FIXED_ALPHA] = c["fixed_alpha"]
    p[_k.P_INCLUSIVE] = 1.0 if c["inclusive"] else 0.0
    p[_k.P_INV_R] = inv_r
    return p


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
        Stage m.
    """

    episode: int
    component: int
    policy: np.ndarray
    alpha: float
    candidate: int
    stage: int


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
        Per episode: candidate l (-1: none left), weight, drawn component (0 candidate,
        1 safe), stage m, and the decision after it (0 none, 1 elimination, 2 update).
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
        Whether the paper's guarantee applies (paper profile with its preconditions met).
    notes : tuple of str
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

    @property
    def final_alpha(self) -> float:
        return float(self.alpha[-1]) if self.n_episodes else math.nan

    @property
    def final_regret(self) -> float | None:
        if self.regret is None or self.n_episodes == 0:
            return None
        return float(self.regret[-1])

    def summary(self) -> str:
        """A short report; violations are printed first and in capitals when present."""
        lines = []
        if self.violations:
            lines.append(f"!!! SAFETY VIOLATIONS: {self.violations} of {self.n_episodes} deployed "
                         f"mixtures have exact cost above the limit (first at episode "
                         f"{int(self.violation_episodes[0])}) !!!")
        if self.stopped_on_violation:
            lines.append(f"!!! RUN STOPPED at episode {self.n_episodes} on a violation !!!")
        lines.append(f"profile {self.profile.name}, {self.n_episodes} episodes, H = {self.horizon}, "
                     f"seed {self.seed}")
        if self.regret is not None:
            lines.append(f"cumulative regret {self.final_regret:.6g} (reference V* = "
                         f"{self.regret_reference:.6g}); violations {self.violations}")
        lines.append(f"final alpha {self.final_alpha:.6g}, final candidate "
                     f"{int(self.candidate[-1]) if self.n_episodes else -1}")
        el = ", ".join(f"{int(c)}@{int(e)}" for c, e in zip(self.eliminated, self.eliminated_at))
        lines.append(f"eliminations (candidate@episode): {el or 'none'}")
        if not self.guarantee:
            lines.append("note: the paper's safety guarantee does not apply to this run")
        lines.extend(self.notes)
        return "\n".join(lines)


class SafeAdapter:
    """The test-time phase of the paper (Algorithm 2), by ask/tell or fused.

    Parameters
    ----------
    policy_set : PolicySet
        Candidates ``pi_i`` with predictions (u, v), the safe policy and its (u_s, v_s).
    profile : {"paper", "reference", "pce"} or Profile, default "paper"
    n_episodes : int
        The budget K (enters the paper constants through ln(4K/delta)).
    delta : float, default: the policy set's delta
        Confidence in (0, 1).
    horizon : int, default: the profile's horizon, else 600
        Episode length H (used by :meth:`run`; ask/tell users run their own episodes).
    seed : int, numpy.random.Generator or None
        Resolved once; episode k draws its component (and, in :meth:`run`, its rollout)
        from stream k of this seed.
    strict : bool, default True
        Paper profile: raise :class:`~safemeta_fast.errors.SafetyAssumptionError` when
        ``(8L+18) eps > xi`` or ``v_s <= (4L+9) eps``; False turns it into a warning (the
        guarantee then does not hold; the log says so).
    reward_range, utility_scale : float, array_like (K,), optional
        Normalisation of the paper profile (see :func:`normalisation_of`); required for a
        normalised profile.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> from safemeta_fast.lp import solve_lp
    >>> from safemeta_fast.evaluation import evaluate_many
    >>> from safemeta_fast.policyset import PolicySet
    >>> tasks = [gridworld(x) for x in (0.28, 0.32)]
    >>> pols = np.stack([solve_lp(M).policy for M in tasks])
    >>> safe = solve_lp(gridworld(0.4)).policy
    >>> ev = [evaluate_many(M, np.stack([*pols, safe])) for M in tasks]
    >>> ps = PolicySet(policies=pols, u=[e.reward[i] for i, e in enumerate(ev)],
    ...     v=[1.5 - e.cost[i] for i, e in enumerate(ev)], u_s=[e.reward[2] for e in ev],
    ...     v_s=[1.5 - e.cost[2] for e in ev], safe_policy=safe, cover_params=[0.28, 0.32],
    ...     cost_limit=[1.5], gamma=0.9, eps=0.005, delta=0.05, xi_hat=0.2, seed=0)
    >>> ad = SafeAdapter(ps, profile="reference", n_episodes=2000, seed=1)
    >>> step = ad.ask(); step.alpha, step.component
    (0.0, 1)
    >>> ad.tell(47.0, [1.1])
    >>> log = ad.run(gridworld(0.3))
    >>> log.violations
    0
    """

    def __init__(self, policy_set, *, profile="paper", n_episodes, delta=None, horizon=None,
                 seed=None, strict=True, reward_range=None, utility_scale=None):
        if not isinstance(policy_set, PolicySet):
            raise TypeError(f"policy_set must be a PolicySet; got {type(policy_set).__name__}")
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"profile is {profile!r}; expected one of {sorted(PROFILES)} "
                                 "or a Profile")
            profile = PROFILES[profile]
        elif not isinstance(profile, Profile):
            raise TypeError(f"profile must be a str or a Profile; got {type(profile).__name__}")
        if not isinstance(strict, (bool, np.bool_)):
            raise TypeError(f"strict must be a bool; got {type(strict).__name__}")
        ps = policy_set
        self.policy_set = ps
        self.profile = profile
        self.n_episodes = check_int("n_episodes", n_episodes, 1)
        self.delta = check_real("delta", ps.delta if delta is None else delta, 0.0, 1.0,
                                 lo_open=True, hi_open=True)
        if horizon is None:
            horizon = profile.horizon if profile.horizon is not None else 600
        self.horizon = check_int("horizon", horizon, 1)
        self.seed = resolve_seed(seed)
        gamma = ps.gamma
        K = ps.n_constraints
        if profile.fixed_alpha is not None:
            check_real("profile.fixed_alpha", profile.fixed_alpha, 0.0, 1.0)
        # scales
        if profile.normalised:
            if reward_range is None or utility_scale is None:
                raise ValueError(
                    f"profile {profile.name!r} works on the normalised scale: pass reward_range "
                    "and utility_scale (e.g. **normalisation_of(M_train) for any task of the family)"
                )
            rr = check_real("reward_range", reward_range, 0.0, lo_open=True)
            us = np.asarray(utility_scale, dtype=np.float64).reshape(-1)
            if us.size != K:
                raise ValueError(f"utility_scale must have shape ({K},); got {us.shape}")
            for k in range(K):
                if not (math.isfinite(us[k]) and us[k] > 0):
                    raise ValueError(f"utility_scale[{k}] is {us[k]}; it must be finite and > 0")
        else:
            rr = 1.0
            us = np.ones(K)
        self.reward_scale = rr
        self.utility_scale = _readonly(us.copy())
        self._inv_c = np.ascontiguousarray(1.0 / us)
        self._u = np.ascontiguousarray(ps.u / rr)
        self._u_s = np.ascontiguousarray(ps.u_s / rr)
        self._v = np.ascontiguousarray(ps.v / us[None, :])
        self._v_s = np.ascontiguousarray(ps.v_s / us[None, :])
        self._b = np.ascontiguousarray(ps.cost_limit, dtype=np.float64)
        self.constants = profile.resolve(gamma=gamma, eps=ps.eps, n_episodes=self.n_episodes,
                                         delta=self.delta)
        self._params = _params_array(self.constants, 1.0 / rr)
        self.notes: list[str] = []
        self.guarantee = False
        if profile.check_preconditions:
            self.guarantee = self._check_preconditions(strict)
        # ask/tell state
        self._istate = np.zeros(_k.N_ISTATE, dtype=np.int64)
        self._fstate = np.zeros(_k.F_SUM_C + 2 * K)
        self._elim = np.zeros(ps.n_policies, dtype=np.int64)
        self._vlm = np.empty(K)
        _k.init_state(self._istate, self._fstate, self._elim, self._u, self._params)
        self._pending: AdaptStep | None = None
        n = self.n_episodes
        self._h_cand = np.zeros(n, dtype=np.int64)
        self._h_alpha = np.zeros(n)
        self._h_comp = np.zeros(n, dtype=np.int64)
        self._h_stage = np.zeros(n, dtype=np.int64)
        self._h_event = np.zeros(n, dtype=np.int64)
        self._h_r = np.zeros(n)
        self._h_c = np.zeros((n, K))

    # -- preconditions --------------------------------------------------------------

    def _check_preconditions(self, strict: bool) -> bool:
        c = self.constants
        L, eps = c["L"], c["eps"]
        xi = self.policy_set.xi_hat / float(np.max(self.utility_scale))
        vs_min = float(self._v_s.min())
        problems = []
        if (8 * L + 18) * eps > xi:
            problems.append(
                f"(8L+18) eps = {(8 * L + 18) * eps:.6g} > xi = {xi:.6g} (normalised margin; "
                f"L = {L:.6g}, eps = {eps:.6g}); it holds for eps <= {xi / (8 * L + 18):.6g}"
            )
        if vs_min <= (4 * L + 9) * eps:
            problems.append(
                f"min v_s = {vs_min:.6g} <= (4L+9) eps = {(4 * L + 9) * eps:.6g} (normalised); "
                f"it holds for eps < {vs_min / (4 * L + 9):.6g}"
            )
        if not problems:
            return True
        msg = ("paper profile preconditions fail: " + "; ".join(problems)
               + ". The safety guarantee of the paper does not hold.")
        if strict:
            raise SafetyAssumptionError(msg + " Pass strict=False to run anyway.")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.notes.append("WARNING: " + msg)
        return False

    # -- ask / tell -----------------------------------------------------------------

    @property
    def episode(self) -> int:
        """Episodes told so far."""
        return int(self._istate[_k.I_EP])

    @property
    def alpha(self) -> float:
        return float(self._fstate[_k.F_ALPHA]) if self._istate[_k.I_CAND] >= 0 else 0.0

    @property
    def candidate(self) -> int:
        return int(self._istate[_k.I_CAND])

    def ask(self) -> AdaptStep:
        """The policy for the next episode (the same step again until :meth:`tell`).

        Raises
        ------
        RuntimeError
            When all ``n_episodes`` episodes have been told.
        """
        if self._pending is not None:
            return self._pending
        k = self.episode
        if k >= self.n_episodes:
            raise RuntimeError(f"all n_episodes = {self.n_episodes} episodes are done")
        l = self.candidate
        alpha = self.alpha
        comp = int(_k.draw_component(self.seed, k, alpha))
        ps = self.policy_set
        pol = ps.policies[l] if (comp == 0 and l >= 0) else ps.safe_policy
        self._pending = AdaptStep(episode=k, component=comp, policy=pol, alpha=alpha,
                                  candidate=l, stage=int(self._istate[_k.I_STAGE]))
        return self._pending

    def tell(self, reward_return, cost_returns) -> None:
        """Feed back the discounted returns of the episode of the last :meth:`ask`.

        Parameters
        ----------
        reward_return : float
            ``R = sum_{t<H} gamma^t r_t``.
        cost_returns : float or array_like, shape (K,)
            ``C_k = sum_{t<H} gamma^t c_t^k``.
        """
        if self._pending is None:
            raise RuntimeError("tell() called without a pending ask()")
        R = check_real("reward_return", reward_return)
        C = np.asarray(cost_returns, dtype=np.float64).reshape(-1)
        K = self.policy_set.n_constraints
        if C.size != K:
            raise ValueError(f"cost_returns must have shape ({K},); got {np.shape(cost_returns)}")
        bad = np.flatnonzero(~np.isfinite(C))
        if bad.size:
            raise ValueError(f"cost_returns[{bad[0]}] is {C[bad[0]]}; it must be finite")
        st = self._pending
        k = st.episode
        self._h_cand[k] = st.candidate
        self._h_alpha[k] = st.alpha
        self._h_comp[k] = st.component
        self._h_stage[k] = st.stage
        self._h_r[k] = R
        self._h_c[k] = C
        self._h_event[k] = _k.observe(self._istate, self._fstate, self._elim, self._u, self._v,
                                      self._u_s, self._v_s, self._b, self._inv_c, self._params,
                                      R, C, self._vlm)
        self._pending = None

    def log(self) -> TestLog:
        """The ask/tell record so far (no exact audit: the model is unknown here)."""
        n = self.episode
        return self._make_log(n, self._h_cand[:n].copy(), self._h_alpha[:n].copy(),
                              self._h_comp[:n].copy(), self._h_stage[:n].copy(),
                              self._h_event[:n].copy(), self._h_r[:n].copy(),
                              self._h_c[:n].copy(), self._elim.copy(), None, None, None, None,
                              False, None)

    # -- fused ----------------------------------------------------------------------

    def _tables(self, M: CMDP):
        ps = self.policy_set
        n = ps.n_policies
        pols = np.empty((2 * n, ps.n_states, ps.n_actions))
        pols[0::2] = ps.policies
        pols[1::2] = ps.safe_policy
        succ_ptr = np.ascontiguousarray(M.succ_ptr, dtype=np.int64)
        if table_size(pols, succ_ptr) > _MAX_ENTRIES:
            raise ValueError("the rollout tables of this policy set are too large")
        r = np.ascontiguousarray(M.r, dtype=np.float64)
        c = np.ascontiguousarray(M.c, dtype=np.float64)
        absorbing = np.ascontiguousarray(M.absorbing, dtype=np.int64)
        state_info, rec, bucket_state = build_tables(
            pols, succ_ptr, np.ascontiguousarray(M.succ_next, dtype=np.int64),
            np.ascontiguousarray(M.succ_prob, dtype=np.float64), r, c, absorbing)
        nu_thr, nu_alias = _alias_table(np.asarray(M.nu0))
        return (nu_thr, nu_alias, state_info, rec, bucket_state, r.reshape(-1), c.reshape(-1),
                np.ascontiguousarray(r[:, 0]), np.ascontiguousarray(c[:, 0, :]).reshape(-1),
                float(M.gamma), self.horizon, _tail(M.gamma, self.horizon))

    def _check_model(self, M, exact):
        if not isinstance(M, CMDP):
            raise TypeError(f"M_test must be a CMDP; got {type(M).__name__}")
        ps = self.policy_set
        if (M.n_states, M.n_actions, M.n_constraints) != (ps.n_states, ps.n_actions,
                                                          ps.n_constraints):
            raise ValueError(
                f"M_test has (S, A, K) = {(M.n_states, M.n_actions, M.n_constraints)}; the policy "
                f"set has {(ps.n_states, ps.n_actions, ps.n_constraints)}")
        if not np.allclose(M.cost_limit, ps.cost_limit, rtol=0, atol=1e-12):
            raise ValueError(f"M_test.cost_limit is {M.cost_limit}; the policy set's slacks refer "
                             f"to {ps.cost_limit}")
        if abs(M.gamma - ps.gamma) > 1e-12:
            raise ValueError(f"M_test.gamma is {M.gamma}; the policy set has gamma {ps.gamma}")
        if not isinstance(exact, (bool, np.bool_)):
            raise TypeError(f"exact must be a bool; got {type(exact).__name__}")

    def _exact_values(self, M):
        from .evaluation import evaluate_many

        ps = self.policy_set
        ev = evaluate_many(M, np.concatenate([ps.policies, ps.safe_policy[None]]))
        return np.ascontiguousarray(ev.reward), np.ascontiguousarray(ev.cost)

    def run(self, M_test, *, exact=True, regret_reference=None, stop_on_violation=False,
            violation_tol=1e-9, closed_form=True) -> TestLog:
        """All ``n_episodes`` episodes on a known tabular test task in one compiled kernel.

        Starts from a fresh state with the adapter's seed (independent of any ask/tell
        progress) and takes exactly the decisions ask/tell takes on the same returns.

        Parameters
        ----------
        M_test : CMDP
        exact : bool, default True
            Audit every deployed mixture exactly (reward, cost, regret, violations).
        regret_reference : float, optional
            V* for the regret; default the exact LP optimum of ``M_test``
            (:func:`safemeta_fast.lp.solve_lp`). The authors used the primal-dual value
            (:func:`safemeta_fast.planning.primal_dual`).
        stop_on_violation : bool, default False
            Stop before deploying a mixture whose exact cost exceeds the limit (the
            reference's behaviour). By default violations are recorded and the run goes on.
        violation_tol : float, default 1e-9
            A violation is ``exact cost > limit + violation_tol``.
        closed_form : bool, default True
            Finish episodes in absorbing states in closed form (exact; see ``rollout``).

        Returns
        -------
        TestLog
        """
        self._check_model(M_test, exact)
        tol = check_real("violation_tol", violation_tol, 0.0)
        if stop_on_violation and not exact:
            raise ValueError("stop_on_violation=True needs exact=True")
        logs = self._run(M_test, np.array([self.seed], dtype=np.int64), exact, regret_reference,
                         bool(stop_on_violation), tol, bool(closed_form), parallel=False)
        return logs[0]

    def run_seeds(self, M_test, seeds, *, exact=True, regret_reference=None,
                  stop_on_violation=False, violation_tol=1e-9, closed_form=True,
                  parallel=True) -> list:
        """:meth:`run` for several seeds of one test task, runs spread over threads.

        ``seeds`` is a sequence of ints; run i equals ``SafeAdapter(..., seed=seeds[i]).run``
        bit for bit, whatever the thread count.
        """
        self._check_model(M_test, exact)
        tol = check_real("violation_tol", violation_tol, 0.0)
        seeds = np.array([resolve_seed(int(s)) for s in seeds], dtype=np.int64)
        if seeds.size == 0:
            raise ValueError("seeds is empty; pass at least one seed")
        return self._run(M_test, seeds, exact, regret_reference, bool(stop_on_violation), tol,
                         bool(closed_form), parallel=bool(parallel))

    def run_tasks(self, tasks, *, seeds=None, regret_references=None, exact=True,
                  stop_on_violation=False, violation_tol=1e-9, closed_form=True,
                  threads=None) -> list:
        """:meth:`run` on several test tasks (and seeds), one run per worker thread.

        Parameters
        ----------
        tasks : sequence of CMDP
        seeds : sequence of int, optional
            Seeds run on every task; default ``[adapter seed]``.
        regret_references : sequence of float, optional
            One V* per task (default: each task's LP optimum, see :meth:`run`).
        threads : int, optional
            Worker threads (default: ``numba.get_num_threads()``). The fused kernel
            releases the GIL, so runs proceed in parallel; every run owns its arrays and
            its random streams, so results do not depend on ``threads``.

        Returns
        -------
        list of list of TestLog
            ``logs[i][j]`` is task i with seed j, equal bit for bit to
            ``SafeAdapter(..., seed=seeds[j]).run(tasks[i], ...)``.
        """
        from concurrent.futures import ThreadPoolExecutor

        import numba

        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks is empty; pass at least one CMDP")
        for i, M in enumerate(tasks):
            try:
                self._check_model(M, exact)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"tasks[{i}]: {exc}") from None
        tol = check_real("violation_tol", violation_tol, 0.0)
        if stop_on_violation and not exact:
            raise ValueError("stop_on_violation=True needs exact=True")
        seeds = [self.seed] if seeds is None else [resolve_seed(int(s)) for s in seeds]
        if not seeds:
            raise ValueError("seeds is empty; pass at least one seed")
        if regret_references is None:
            refs = [None] * len(tasks)
        else:
            refs = list(regret_references)
            if len(refs) != len(tasks):
                raise ValueError(f"regret_references has {len(refs)} entries for {len(tasks)} tasks")
        n_threads = numba.get_num_threads() if threads is None else check_int("threads", threads, 1)
        preps = [self._prepare(M, exact, ref) for M, ref in zip(tasks, refs)]
        units = [(i, j, s) for i in range(len(tasks)) for j, s in enumerate(seeds)]

        def work(unit):
            i, _, s = unit
            return self._execute(preps[i], s, bool(stop_on_violation), tol, bool(closed_form))

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            outs = list(pool.map(work, units))
        logs = [[None] * len(seeds) for _ in tasks]
        for (i, j, s), out in zip(units, outs):
            logs[i][j] = self._log_of(preps[i], out, s, tol)
        return logs

    def _prepare(self, M, exact, regret_reference):
        """Per-task inputs of the fused kernel: tables, exact values, V*."""
        n, K = self.policy_set.n_policies, self.policy_set.n_constraints
        if exact:
            ex_r, ex_c = self._exact_values(M)
            if regret_reference is None:
                from .lp import solve_lp

                vstar = float(solve_lp(M).reward)
            else:
                vstar = check_real("regret_reference", regret_reference)
        else:
            ex_r = np.full(n + 1, np.nan)
            ex_c = np.full((n + 1, K), np.nan)
            vstar = None
        return {"M": M, "exact": exact, "ex_r": ex_r, "ex_c": ex_c, "vstar": vstar,
                "tabs": self._tables(M)}

    def _fresh_outputs(self, B):
        ps = self.policy_set
        n, K, N = ps.n_policies, ps.n_constraints, self.n_episodes
        o = {"ist": np.zeros((B, _k.N_ISTATE), dtype=np.int64),
             "fst": np.zeros((B, _k.F_SUM_C + 2 * K)),
             "elim": np.zeros((B, n), dtype=np.int64),
             "r": np.zeros((B, N)), "c": np.zeros((B, N, K)),
             "comp": np.zeros((B, N), dtype=np.int64), "cand": np.zeros((B, N), dtype=np.int64),
             "alpha": np.zeros((B, N)), "stage": np.zeros((B, N), dtype=np.int64),
             "event": np.zeros((B, N), dtype=np.int64),
             "er": np.zeros((B, N)), "ec": np.zeros((B, N, K)),
             "status": np.zeros(B, dtype=np.int64), "done": np.zeros(B, dtype=np.int64)}
        for b in range(B):
            _k.init_state(o["ist"][b], o["fst"][b], o["elim"][b], self._u, self._params)
        return o

    def _common(self):
        return (self._u, self._v, self._u_s, self._v_s, self._b, self._inv_c, self._params)

    def _execute(self, prep, seed, stop, tol, closed_form):
        """One fused run (releases the GIL); returns its output arrays (leading axis 1)."""
        o = self._fresh_outputs(1)
        o["status"][0], o["done"][0] = _k.run_fused(
            int(seed), self.n_episodes, *self._common(), o["ist"][0], o["fst"][0], o["elim"][0],
            *prep["tabs"], closed_form, prep["ex_r"], prep["ex_c"], stop, tol, o["r"][0],
            o["c"][0], o["comp"][0], o["cand"][0], o["alpha"][0], o["stage"][0], o["event"][0],
            o["er"][0], o["ec"][0])
        return o

    def _log_of(self, prep, o, seed, tol, b=0):
        d = int(o["done"][b])
        exact = prep["exact"]
        return self._make_log(
            d, o["cand"][b, :d], o["alpha"][b, :d], o["comp"][b, :d], o["stage"][b, :d],
            o["event"][b, :d], o["r"][b, :d], o["c"][b, :d], o["elim"][b],
            o["er"][b, :d] if exact else None, o["ec"][b, :d] if exact else None,
            prep["vstar"], prep["M"] if exact else None, o["status"][b] == _k.STATUS_STOPPED,
            tol, seed=int(seed))

    def _run(self, M, seeds, exact, regret_reference, stop, tol, closed_form, parallel):
        prep = self._prepare(M, exact, regret_reference)
        if not parallel:
            return [self._log_of(prep, self._execute(prep, s, stop, tol, closed_form), s, tol)
                    for s in seeds]
        o = self._fresh_outputs(seeds.size)
        _k.run_fused_batch(seeds, self.n_episodes, *self._common(), o["ist"], o["fst"], o["elim"],
                           *prep["tabs"], closed_form, prep["ex_r"], prep["ex_c"], stop, tol,
                           o["r"], o["c"], o["comp"], o["cand"], o["alpha"], o["stage"],
                           o["event"], o["er"], o["ec"], o["status"], o["done"])
        return [self._log_of(prep, o, s, tol, b) for b, s in enumerate(seeds)]

    def _make_log(self, d, cand, alpha, comp, stage, event, R, C, elim, ex_r, ex_c, vstar, M,
                  stopped, tol, seed=None):
        ps = self.policy_set
        n = ps.n_policies
        order = np.argsort(np.where(elim >= 0, elim, np.iinfo(np.int64).max), kind="stable")
        order = order[elim[order] >= 0]
        w = np.zeros(n + 1)
        if d:
            alive = cand >= 0
            np.add.at(w, cand[alive], alpha[alive])
            w[n] = np.sum(1.0 - alpha[alive]) + np.count_nonzero(~alive)
            w /= d
        else:
            w[n] = 1.0
        comps = np.concatenate([ps.policies, ps.safe_policy[None]])
        pi_out = Mixture(comps, w / w.sum())
        regret = violations = viol_eps = pi_pol = None
        if ex_r is not None:
            regret = np.cumsum(vstar - ex_r)
            viol_mask = np.any(ex_c > self._b[None, :] + tol, axis=1)
            viol_eps = np.flatnonzero(viol_mask)
            violations = int(viol_eps.size)
            pi_pol = self._occupancy_policy(M, comps, pi_out.weights)
        notes = tuple(self.notes)
        if cand.size and np.any(cand < 0):
            first = int(np.flatnonzero(cand < 0)[0])
            notes += (f"every candidate was eliminated by episode {first}; the safe policy ran "
                      "alone afterwards",)
        ro = lambda a: None if a is None else _readonly(np.ascontiguousarray(a))  # noqa: E731
        return TestLog(
            profile=self.profile, constants=dict(self.constants),
            seed=self.seed if seed is None else seed, horizon=self.horizon, n_episodes=d,
            candidate=ro(cand), alpha=ro(alpha), component=ro(comp), stage=ro(stage),
            event=ro(event), reward=ro(R), cost=ro(C), exact_reward=ro(ex_r), exact_cost=ro(ex_c),
            regret=ro(regret), regret_reference=vstar, violations=violations,
            violation_episodes=ro(viol_eps), stopped_on_violation=bool(stopped),
            eliminated=ro(order.astype(np.int64)), eliminated_at=ro(elim[order].copy()),
            pi_out_weights=ro(w), pi_out=pi_out, pi_out_policy=ro(pi_pol),
            guarantee=bool(self.guarantee), notes=notes,
        )

    @staticmethod
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
