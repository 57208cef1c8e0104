"""The occupancy LP shared by both back ends: its data, its checks, one verified solve.

A back end (:mod:`.cvxpy_backend`, :mod:`.highs_backend`) only turns the data into a raw
solution (``solve_raw``); :func:`solve_with` builds the data, calls it, reports an
infeasible task with its smallest achievable costs, and verifies the answer by exact
evaluation of the extracted policy (``VERIFY_RTOL``).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
from dataclasses import dataclass

import numpy as np

from ..cmdp import CMDP
from ..errors import InfeasibleError, OracleError
from ..validation import check_choice, check_finite, readonly

#: States whose total occupancy is at most this get the uniform policy.
UNREACHED_TOL = 1e-10

#: Every LP answer is checked by exact evaluation of the returned policy
#: (:func:`safemeta_fast.evaluation.evaluate`): a value the LP reports may differ from the
#: exact one by at most ``VERIFY_RTOL * (|exact| + max |x|)`` (x the one-step reward or
#: cost), else OracleError. The exact values are the ones returned. Measured gaps: HiGHS
#: 1e-16..1e-11, Clarabel up to 2e-5 (20x20 gridworld, gamma 0.99, cost at its limit);
#: the 1-1e-7 gridworld that motivated the check: 3e-2.
VERIFY_RTOL = 1e-4
#: ``1 - gamma`` below this, or rewards/costs above EXTREME_SCALE in absolute value, are
#: named in the OracleError messages (the LP is then badly scaled for a float64 solver).
EXTREME_HORIZON = 1e-5
EXTREME_SCALE = 1e10

SOLVERS = ("HIGHS", "CLARABEL")
OBJECTIVES = ("reward", "cost")


# ---------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LPResult:
    """Solution of the occupancy LP for one task.

    Attributes
    ----------
    policy : numpy.ndarray, shape (S, A)
        ``pi(a|s) = mu(s, a) / sum_a mu(s, a)``; uniform where ``sum_a mu(s, a) <= 1e-10``.
    occupancy : numpy.ndarray, shape (S, A)
        The LP's occupancy ``mu`` (solver round-off below 0 clipped to 0); sums to 1.
    reward : float
        The exact discounted reward of ``policy`` from ``nu0`` (by
        :func:`~safemeta_fast.evaluation.evaluate`; it agrees with the LP's
        ``<mu, r> / (1 - gamma)`` within ``VERIFY_RTOL``, else OracleError).
    cost : numpy.ndarray, shape (K,)
        Its exact discounted costs (checked against ``<mu, c_k> / (1 - gamma)`` likewise).
    duals : numpy.ndarray, shape (K,)
        Multipliers of the cost constraints (>= 0 up to solver tolerance): the rate at
        which the optimal reward grows per unit of cost limit. All zero for
        ``objective="cost"`` (no cost constraint is imposed then).
    status : str
        ``"optimal"`` (anything else raises).
    solver : str
        ``"HIGHS"`` or ``"CLARABEL"``.
    backend : str
        ``"highspy"`` or ``"cvxpy"``.
    solve_time : float
        Wall-clock seconds for this solve: data update, solver call(s) and extraction
        (compilation on a cache miss excluded).
    objective : str
        ``"reward"`` or ``"cost"``; for ``"cost"`` see ``cost_index``.
    cost_index : int or None
        The constraint whose cost was minimised (``objective="cost"``).
    cost_limit : numpy.ndarray, shape (K,)
        The limits imposed, ``M.cost_limit - margin`` (``inf`` for ``objective="cost"``).
    warm_started : bool
        Whether the solve started from a previous basis / solution (``start == "warm"``).
    cache_hit : bool
        Whether a compiled problem of the same shape and pattern was reused.
    start : str
        ``"warm"`` (previous optimal basis or solution), ``"crash"`` (HiGHS from the basis
        of the unconstrained optimal policy, see :meth:`HighsOccupancyLP.crash_basis`) or
        ``"cold"``.
    """

    policy: np.ndarray
    occupancy: np.ndarray
    reward: float
    cost: np.ndarray
    duals: np.ndarray
    status: str
    solver: str
    backend: str
    solve_time: float
    objective: str
    cost_index: int | None
    cost_limit: np.ndarray
    warm_started: bool
    cache_hit: bool
    start: str = "cold"


# ---------------------------------------------------------------------------
# problem data shared by both back ends
# ---------------------------------------------------------------------------

def pattern_key(M: CMDP) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(M.succ_ptr).tobytes())
    h.update(np.ascontiguousarray(M.succ_next).tobytes())
    return (M.n_states, M.n_actions, M.n_constraints, M.nnz, h.hexdigest())


class Pattern:
    """Shape and transition support of a family of tasks (what a compiled LP depends on)."""

    def __init__(self, M: CMDP):
        self.S, self.A, self.K = M.n_states, M.n_actions, M.n_constraints
        self.n = self.S * self.A
        self.ptr = np.array(M.succ_ptr)
        self.nxt = np.array(M.succ_next)
        self.key = pattern_key(M)

    def matches(self, M: CMDP) -> bool:
        return (
            (M.n_states, M.n_actions, M.n_constraints) == (self.S, self.A, self.K)
            and np.array_equal(M.succ_ptr, self.ptr)
            and np.array_equal(M.succ_next, self.nxt)
        )


def objective_vector(M: CMDP, objective: str, k: int | None) -> np.ndarray:
    """w such that the LP maximises w . mu (flattened pair index i = s*A + a)."""
    scale = 1.0 / (1.0 - M.gamma)
    if objective == "reward":
        return M.r.ravel() * scale
    return -M.c[:, :, k].ravel() * scale


def cost_matrix(M: CMDP) -> np.ndarray:
    """C[k, i] = c[s, a, k] / (1 - gamma), shape (K, S*A)."""
    return np.ascontiguousarray(M.c.reshape(-1, M.n_constraints).T) / (1.0 - M.gamma)


# ---------------------------------------------------------------------------
# argument checks particular to the LP
# ---------------------------------------------------------------------------

def check_margin(margin, K: int) -> np.ndarray:
    if isinstance(margin, (bool, np.bool_)):
        raise TypeError(
            f"margin must be a real number or an array of shape (K,) = ({K},); got bool")
    if isinstance(margin, numbers.Real):
        m = float(margin)
        if not math.isfinite(m):
            raise ValueError(f"margin is {m!r}; it must be finite")
        return np.full(K, m)
    if isinstance(margin, (str, bytes)) or margin is None:
        raise TypeError(
            f"margin must be a real number or an array of shape (K,) = ({K},); "
            f"got {type(margin).__name__}"
        )
    arr = np.asarray(margin)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                   or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"margin must hold real numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full(K, float(arr))
    if arr.shape != (K,):
        raise ValueError(f"margin must be a scalar or have shape (K,) = ({K},); got {arr.shape}")
    check_finite("margin", arr)
    return arr


def check_solver(solver) -> str:
    """``"HIGHS"`` or ``"CLARABEL"``, any case."""
    return check_choice("solver", solver, SOLVERS, case_insensitive=True)


def check_objective(objective, k, K: int):
    if objective not in OBJECTIVES:
        raise ValueError(f"objective is {objective!r}; expected one of {OBJECTIVES}")
    if objective == "reward":
        return None
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer constraint index; got {k!r}")
    if not 0 <= int(k) < K:
        raise ValueError(f"k is {k}; constraint indices lie in [0, {K})")
    return int(k)


# ---------------------------------------------------------------------------
# solving
# ---------------------------------------------------------------------------

def extract_policy(mu_sa: np.ndarray) -> np.ndarray:
    S, A = mu_sa.shape
    tot = mu_sa.sum(axis=1)
    pi = np.full((S, A), 1.0 / A)
    seen = tot > UNREACHED_TOL
    pi[seen] = mu_sa[seen] / tot[seen, None]
    return pi


def solve_with(lp, M, margin_arr, solver, warm_start, objective, k, cache_hit,
                reuse_basis=False) -> LPResult:
    k = check_objective(objective, k, M.n_constraints)
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    C = cost_matrix(M)
    w = objective_vector(M, objective, k)
    if objective == "reward":
        b = np.asarray(M.cost_limit) - margin_arr
        b_solver = b
    else:
        b = np.full(K, np.inf)
        # HiGHS takes infinite bounds; for cvxpy use a limit no occupancy can reach
        # (mu sums to 1, so |C_k mu| <= max |C_k|)
        b_solver = b if lp.backend == "highspy" else np.abs(C).max(axis=1) + 1.0
    t0 = time.perf_counter()
    if lp.backend == "highspy":
        status, mu, duals, start = lp.solve_raw(
            M, w, b_solver, warm_start=warm_start,
            basis_key="reward" if objective == "reward" else ("cost", k),
            crash_policy=lambda: unconstrained_policy(M, objective, k),
            reuse_basis=reuse_basis,
        )
    else:  # cvxpy's warm start reuses the previous solution: history, so only on request
        status, mu, duals, start = lp.solve_raw(M, w, b_solver, solver=solver,
                                                warm_start=warm_start and reuse_basis)
    if status == "infeasible":
        if objective == "cost":  # pragma: no cover - the flow polytope is never empty
            raise OracleError("the flow polytope was reported empty; this is a solver failure",
                              status=status)
        mins = np.array([
            solve_with(lp, M, margin_arr, solver, warm_start, "cost", j, cache_hit,
                        reuse_basis).cost[j]
            for j in range(K)
        ])
        parts = ", ".join(
            f"constraint {j}: smallest achievable cost {mins[j]:.4f} vs limit {b[j]:.4f}"
            f" (cost_limit {M.cost_limit[j]:.4f} - margin {margin_arr[j]:g})"
            for j in range(K)
        )
        joint = "" if (mins > b).any() else (
            "; each limit is achievable on its own but not all of them at once"
        )
        raise InfeasibleError(
            f"no policy meets the cost limits of this task ({parts}){joint}",
            min_cost=readonly(mins), cost_limit=readonly(b.copy()),
        )
    if status != "optimal":
        raise OracleError(
            f"{solver} ({lp.backend}) returned status {status!r} for the occupancy LP; "
            f"try another solver (solver='HIGHS' or 'CLARABEL'){scale_note(M)}",
            status=str(status),
        )
    mu_sa = np.maximum(mu, 0.0).reshape(S, A)
    policy = extract_policy(mu_sa)
    reward, cost = verified_values(M, policy, float(M.r.ravel() @ mu_sa.ravel()) /
                                    (1.0 - M.gamma), C @ mu_sa.ravel(), solver, lp.backend)
    if objective == "cost":
        duals = np.zeros(K)
    elapsed = time.perf_counter() - t0
    return LPResult(
        policy=readonly(policy),
        occupancy=readonly(mu_sa),
        reward=reward,
        cost=readonly(cost),
        duals=readonly(np.array(duals, dtype=np.float64)),
        status="optimal",
        solver=solver,
        backend=lp.backend,
        solve_time=elapsed,
        objective=objective,
        cost_index=k,
        cost_limit=readonly(b.copy()),
        warm_started=start == "warm",
        cache_hit=bool(cache_hit),
        start=start,
    )


def scale_note(M: CMDP) -> str:
    """Why the LP may be numerically out of reach, when the data say so ("" otherwise)."""
    notes = []
    if 1.0 - M.gamma < EXTREME_HORIZON:
        notes.append(
            f"gamma = {M.gamma!r}: the flow right-hand side (1 - gamma) nu0 <= {1 - M.gamma:.1e} "
            "is at the solver's feasibility tolerance (about 1e-7)"
        )
    for name, x in (("reward", M.r), ("cost", M.c)):
        top = float(np.max(np.abs(x))) if x.size else 0.0
        if top > EXTREME_SCALE:
            notes.append(f"max |{name}| = {top:.3g} is beyond what a float64 LP solves "
                         f"reliably (rescale {name}s to O(1), e.g. divide by {top:.3g})")
    return ("; the task's scale is extreme: " + "; ".join(notes)) if notes else ""


def verified_values(M: CMDP, policy, reward_lp: float, cost_lp, solver, backend):
    """Exact values of the returned policy, checked against what the LP reported.

    ``evaluation.evaluate`` solves ``(I - gamma P_pi) v = x_pi`` for the extracted policy;
    when the LP's own ``<mu, x>/(1 - gamma)`` differs by more than
    ``VERIFY_RTOL * (|exact| + max |x|)`` (per value) the LP answer is not the policy's,
    and OracleError names both. Otherwise the exact values are returned.
    """
    from ..evaluation import evaluate

    ev = evaluate(M, policy)
    exact = np.concatenate([[ev.reward], ev.cost])
    reported = np.concatenate([[reward_lp], np.asarray(cost_lp, dtype=np.float64)])
    unit = np.concatenate([[np.max(np.abs(M.r))], np.max(np.abs(M.c), axis=(0, 1))])
    tol = VERIFY_RTOL * (np.abs(exact) + unit)
    gap = np.abs(exact - reported)
    bad = np.flatnonzero(~(gap <= tol))
    if bad.size:
        j = int(bad[0])
        what = "reward" if j == 0 else f"cost[{j - 1}]"
        raise OracleError(
            f"{solver} ({backend}) reported {what} {reported[j]:.6g} for its policy, but the "
            f"exact evaluation of that policy gives {exact[j]:.6g} (gap {gap[j]:.3g} > "
            f"tolerance {tol[j]:.3g}); the LP answer cannot be trusted{scale_note(M)}",
            status="value_mismatch",
        )
    return float(exact[0]), exact[1:].copy()


def unconstrained_policy(M: CMDP, objective: str, k: int | None) -> np.ndarray:
    """Action indices (S,) of the optimal policy of the LP's objective without cost rows."""
    from ..planning import solve_mdp

    if objective == "reward":
        return np.argmax(solve_mdp(M).policy, axis=1)
    return np.argmax(solve_mdp(M, objective="cost", constraint=k).policy, axis=1)
