"""What every comparison method returns: a per-episode exact audit (BASELINES.md 0.1-0.2).

The x index of every curve counts episodes (sampled trajectories of the test task),
whatever the number of episodes a method spends per policy update. A method that
holds one policy over a block of episodes repeats that policy's exact values over
the block. Regret increments are ``regret_reference - V_r(pi_k)``, exact and unclipped
(PCE without safety uses the absolute value; it is not a baseline here but a profile of
:class:`safemeta_fast.SafeAdapter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..evaluation import evaluate
from ..testlog import violation_headline
from ..validation import check_real, readonly

__all__ = ["BaselineLog", "block_values", "BlockAudit", "regret_reference_of"]


@dataclass(frozen=True, eq=False)
class BaselineLog:
    """Exact per-episode record of one baseline run on a known test task.

    Attributes
    ----------
    method : str
        Method name (e.g. ``"safe_meta_rl"``).
    seed : int
        Seed actually used.
    exact_reward : numpy.ndarray, shape (n_episodes,)
        Exact ``V_r`` of the policy that generated episode k.
    exact_cost : numpy.ndarray, shape (n_episodes, n_constraints)
        Exact ``V_c^k`` of that policy.
    cost_limit : numpy.ndarray, shape (n_constraints,)
    regret_reference : float
        ``V*`` of the regret (the authors used the primal-dual value of the test task).
    policy_starts : numpy.ndarray of int64, shape (n_policies,)
        Episode index at which each successive policy was first deployed.
    stopped_on_violation : bool
        True when the run was stopped before deploying an unsafe policy (then
        ``n_episodes`` is smaller than the budget).
    n_budget : int
        Episodes requested.
    info : dict
        Method-specific diagnostics (JSON-serialisable scalars and short lists).
    violation_tol : float
        A violation is ``exact cost > limit + violation_tol``.
    """

    method: str
    seed: int
    exact_reward: np.ndarray
    exact_cost: np.ndarray
    cost_limit: np.ndarray
    regret_reference: float
    policy_starts: np.ndarray
    stopped_on_violation: bool
    n_budget: int
    info: dict = field(default_factory=dict)
    violation_tol: float = 1e-9

    def __post_init__(self):
        r = np.ascontiguousarray(self.exact_reward, dtype=np.float64)
        c = np.ascontiguousarray(self.exact_cost, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None]
        if r.ndim != 1 or c.shape[0] != r.size:
            raise ValueError(f"exact_reward (n,) and exact_cost (n, K) disagree: "
                             f"{r.shape}, {c.shape}")
        object.__setattr__(self, "exact_reward", readonly(r))
        object.__setattr__(self, "exact_cost", readonly(c))
        object.__setattr__(self, "cost_limit",
                           readonly(np.ascontiguousarray(self.cost_limit,
                                                         dtype=np.float64).ravel()))
        object.__setattr__(self, "policy_starts",
                           readonly(np.ascontiguousarray(self.policy_starts, dtype=np.int64)))

    @property
    def n_episodes(self) -> int:
        """Episodes actually run."""
        return int(self.exact_reward.size)

    @property
    def regret(self) -> np.ndarray:
        """Cumulative regret ``sum_{j<=k} (V* - V_r(pi_j))``, shape (n_episodes,)."""
        return np.cumsum(self.regret_reference - self.exact_reward)

    @property
    def final_regret(self) -> float:
        return float(self.regret[-1]) if self.n_episodes else 0.0

    @property
    def violation_episodes(self) -> np.ndarray:
        """Episodes whose deployed policy has an exact cost above the limit."""
        over = np.any(self.exact_cost > self.cost_limit[None, :] + self.violation_tol, axis=1)
        return np.flatnonzero(over)

    @property
    def violations(self) -> int:
        return int(self.violation_episodes.size)

    def summary(self) -> str:
        """A short report; violations come first and in capitals when present."""
        lines = []
        if self.violations:
            lines.append(violation_headline(self.violations, self.n_episodes,
                                            int(self.violation_episodes[0]),
                                            "episodes ran a policy with"))
        if self.stopped_on_violation:
            lines.append(f"!!! RUN STOPPED after {self.n_episodes} of {self.n_budget} episodes "
                         f"before deploying an unsafe policy !!!")
        lines.append(f"{self.method}: {self.n_episodes} episodes, seed {self.seed}, "
                     f"{self.policy_starts.size} policies; cumulative regret "
                     f"{self.final_regret:.6g} "
                     f"(reference {self.regret_reference:.6g}); max exact cost "
                     f"{self.exact_cost.max() if self.n_episodes else float('nan'):.6g} "
                     f"(limit {self.cost_limit.min():.6g}); violations {self.violations}")
        return "\n".join(lines)


def block_values(values: np.ndarray, starts: np.ndarray, n_episodes: int) -> np.ndarray:
    """Repeat per-policy values over their episode blocks.

    Parameters
    ----------
    values : numpy.ndarray, shape (n_policies,) or (n_policies, K)
        Exact values of each successive policy.
    starts : numpy.ndarray of int, shape (n_policies,)
        Increasing first episodes, ``starts[0] == 0``.
    n_episodes : int
        Total episodes; policy i covers ``[starts[i], starts[i+1])``, the last one up to
        ``n_episodes``.

    Returns
    -------
    numpy.ndarray, shape (n_episodes,) or (n_episodes, K)

    Examples
    --------
    >>> block_values(np.array([1.0, 2.0]), np.array([0, 2]), 5)
    array([1., 1., 2., 2., 2.])
    """
    starts = np.asarray(starts, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if starts.size != values.shape[0] or starts.size == 0 or starts[0] != 0 \
            or np.any(np.diff(starts) <= 0) or starts[-1] >= max(n_episodes, 1):
        raise ValueError(f"starts must increase from 0 and stay below n_episodes={n_episodes}; "
                         f"got {starts.tolist()[:10]} for {values.shape[0]} values")
    lengths = np.diff(np.append(starts, n_episodes))
    return np.repeat(values, lengths, axis=0)


def regret_reference_of(M, regret_reference) -> float:
    """``V*`` of the regret: the given value (checked), else the exact LP optimum of ``M``."""
    if regret_reference is None:
        from ..lp import solve_lp

        return float(solve_lp(M).reward)
    return check_real("regret_reference", regret_reference)


class BlockAudit:
    """Exact values of successive policies, each deployed on a block of episodes.

    ``deploy(pi, start)`` evaluates ``pi`` exactly; with ``stop_on_violation`` an unsafe
    policy is not deployed (``deploy`` returns False and :attr:`stopped` is set).
    ``arrays(n_run)`` repeats the values over the blocks up to episode ``n_run``.
    """

    def __init__(self, M, stop_on_violation: bool, violation_tol: float):
        self.M = M
        self.limit = np.asarray(M.cost_limit, dtype=np.float64)
        self.stop_on_violation = stop_on_violation
        self.violation_tol = violation_tol
        self.rewards: list[float] = []
        self.costs: list[np.ndarray] = []
        self.starts: list[int] = []
        self.stopped = False

    def deploy(self, pi, start: int) -> bool:
        ev = evaluate(self.M, pi)
        cost = np.asarray(ev.cost, dtype=np.float64)
        if self.stop_on_violation and np.any(cost > self.limit + self.violation_tol):
            self.stopped = True
            return False
        self.rewards.append(float(ev.reward))
        self.costs.append(cost)
        self.starts.append(int(start))
        return True

    def arrays(self, n_run: int):
        """``(policy_starts, exact_reward (n_run,), exact_cost (n_run, K))``."""
        K = self.limit.size
        if not self.starts:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, K))
        starts = np.asarray(self.starts, dtype=np.int64)
        return (starts, block_values(np.asarray(self.rewards), starts, n_run),
                block_values(np.vstack(self.costs), starts, n_run))
