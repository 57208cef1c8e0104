"""The simultaneously safe policy: oracle O_s (SPEC section 4) and its exact verification.

Three ways to obtain ``pi_s``, all followed by the same exact verification:

(a) ``from_task``: the occupancy-LP optimum of a user-given pessimistic task (the
    paper's experiment: gridworld noise 0.4);
(b) ``robust``: robust value iteration over the (s, a)-rectangular hull of the cover
    tasks' transitions, on the per-step objective ``c~ - lam * r`` (``c~`` the costs
    divided by their limits and summed over constraints), with ``lam >= 0`` searched by
    bisection for the most rewarding greedy policy whose exact slack on every cover task
    stays at least ``margin``; ``lam = 0`` is the worst-case cost minimiser, the safest
    deterministic policy the hull admits;
(c) ``verify``: exact values of ``pi_s`` on every given task; ``xi_hat`` is the smallest
    slack over tasks and constraints. ``xi_hat <= 0`` raises
    :class:`~safemeta_fast.errors.SafetyAssumptionError` naming the worst task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP
from .errors import ConvergenceError, SafetyAssumptionError
from .evaluation import evaluate
from .kernels.evaluation import EPS as _EPS
from .kernels.evaluation import FLOOR_ULPS as _FLOOR_ULPS
from .kernels.robust import robust_value_iteration
from .policy import as_policy
from .validation import readonly

_k_FLOOR = _FLOOR_ULPS * _EPS

__all__ = ["SafetyCheck", "verify_safe_policy", "robust_safe_policy", "union_successors"]


@dataclass(frozen=True, eq=False)
class SafetyCheck:
    """Exact verification of a policy on a set of tasks.

    Attributes
    ----------
    reward : ndarray (n,)
        ``V_r(pi; M_i)``.
    slack : ndarray (n, K)
        ``b_k - V_c^k(pi; M_i)``.
    xi_hat : float
        ``min slack`` over tasks and constraints (the verified margin).
    worst_task, worst_constraint : int
        Where that minimum is attained.
    """

    reward: np.ndarray
    slack: np.ndarray
    xi_hat: float
    worst_task: int
    worst_constraint: int

    @property
    def safe(self) -> bool:
        return self.xi_hat > 0


def _check_tasks(tasks) -> list[CMDP]:
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks must hold at least one CMDP")
    for i, M in enumerate(tasks):
        if not isinstance(M, CMDP):
            raise TypeError(f"tasks[{i}] is a {type(M).__name__}; expected a CMDP")
        if (M.n_states, M.n_actions, M.n_constraints) != (
            tasks[0].n_states, tasks[0].n_actions, tasks[0].n_constraints
        ):
            raise ValueError(
                f"tasks[{i}] has (S, A, K) = {(M.n_states, M.n_actions, M.n_constraints)}; "
                f"tasks[0] has {(tasks[0].n_states, tasks[0].n_actions, tasks[0].n_constraints)}"
            )
    return tasks


def verify_safe_policy(pi, tasks, *, names=None, raise_on_unsafe: bool = True) -> SafetyCheck:
    """Exact slack of ``pi`` on every task (SPEC section 4, O_s step (c)).

    Parameters
    ----------
    pi : array_like (S, A)
    tasks : sequence of CMDP
    names : sequence of str, optional
        Labels of the tasks for the error message (e.g. their parameters).
    raise_on_unsafe : bool
        Raise SafetyAssumptionError when xi_hat <= 0 (default).
    """
    tasks = _check_tasks(tasks)
    pi = as_policy(pi, tasks[0].n_states, tasks[0].n_actions, "safe_policy")
    n, K = len(tasks), tasks[0].n_constraints
    reward = np.empty(n)
    slack = np.empty((n, K))
    for i, M in enumerate(tasks):
        ev = evaluate(M, pi)
        reward[i] = ev.reward
        slack[i] = M.cost_limit - ev.cost
    flat = int(np.argmin(slack))
    wt, wk = divmod(flat, K)
    check = SafetyCheck(readonly(reward), readonly(slack), float(slack[wt, wk]), wt, wk)
    if raise_on_unsafe and not check.safe:
        label = names[wt] if names is not None else f"task {wt}"
        raise SafetyAssumptionError(
            f"the safe policy is not strictly feasible: on {label} constraint {wk} its slack is "
            f"{check.xi_hat:.6g} (cost {tasks[wt].cost_limit[wk] - check.xi_hat:.6g} against limit "
            f"{tasks[wt].cost_limit[wk]:.6g}); the method's safety assumption fails"
        )
    return check


def union_successors(tasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR rows over the union of the tasks' supports: (ptr, nxt, P_stack (n, nnz))."""
    tasks = _check_tasks(tasks)
    S, A = tasks[0].n_states, tasks[0].n_actions
    keys = []
    for M in tasks:
        rows = np.repeat(np.arange(S * A, dtype=np.int64), np.diff(M.succ_ptr))
        keys.append(rows * S + M.succ_next)
    union = np.unique(np.concatenate(keys))
    rows_u = union // S
    nxt = (union % S).astype(np.int64)
    ptr = np.zeros(S * A + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows_u, minlength=S * A), out=ptr[1:])
    P_stack = np.zeros((len(tasks), union.size))
    for m, (M, k) in enumerate(zip(tasks, keys)):
        P_stack[m, np.searchsorted(union, k)] = M.succ_prob
    return ptr, nxt, P_stack


def _greedy_robust(ptr, nxt, P_stack, w, gamma, tol, max_iter) -> np.ndarray:
    S, A = w.shape
    v = np.empty(S)
    act = np.empty(S, dtype=np.int64)
    it, res = robust_value_iteration(P_stack, ptr, nxt, np.ascontiguousarray(w), gamma, tol,
                                     max_iter, v, act)
    # the kernel raises tol to the float64 floor 32 eps gamma/(1-gamma) ||v|| (gamma near 1)
    reachable = max(tol, _k_FLOOR * gamma / (1.0 - gamma) * float(np.max(np.abs(v))))
    if res > reachable:
        raise ConvergenceError(
            f"robust value iteration hit max_iter={max_iter} after {it} sweeps with error bound "
            f"{res:.3g} > tol {reachable:g}"
        )
    pi = np.zeros((S, A))
    pi[np.arange(S), act] = 1.0
    return pi


def robust_safe_policy(tasks, *, margin: float | None = None, tol: float = 1e-10,
                       max_iter: int = 100_000, bisection_steps: int = 40):
    """O_s option (b): a policy safe on the rectangular hull of the tasks' transitions.

    Parameters
    ----------
    tasks : sequence of CMDP
        The cover tasks (same S, A, K, gamma; rewards, costs and limits of tasks[0]
        define the objective; every task's own costs are used in the exact check).
    margin : float, optional
        Smallest exact slack (on every task and constraint) the returned policy must keep.
        Default: half the slack of the safest (lam = 0) policy.
    tol, max_iter
        Robust value iteration accuracy and cap.
    bisection_steps : int
        Steps of the bisection on the reward weight lam.

    Returns
    -------
    pi : ndarray (S, A), deterministic
    info : dict
        ``lam``, ``margin``, ``min_slack`` (exact, over the tasks), ``safest_slack``.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> pi, info = robust_safe_policy([gridworld(0.25), gridworld(0.35)])
    >>> info["min_slack"] > 0
    True
    """
    tasks = _check_tasks(tasks)
    gammas = {M.gamma for M in tasks}
    if len(gammas) != 1:
        raise ValueError(
            f"tasks have different gamma values {sorted(gammas)}; robust O_s needs one")
    M0 = tasks[0]
    ptr, nxt, P_stack = union_successors(tasks)
    b = np.where(M0.cost_limit != 0, np.abs(M0.cost_limit), 1.0)
    c_norm = (M0.c / b).sum(axis=2)

    def policy_for(lam):
        return _greedy_robust(ptr, nxt, P_stack, c_norm - lam * M0.r, M0.gamma, tol, max_iter)

    def min_slack(pi):
        return verify_safe_policy(pi, tasks, raise_on_unsafe=False).xi_hat

    pi0 = policy_for(0.0)
    s0 = min_slack(pi0)
    if margin is None:
        margin = 0.5 * s0 if s0 > 0 else 0.0
    margin = float(margin)
    if not np.isfinite(margin):
        raise ValueError(f"margin is {margin}; it must be finite")
    info = {"safest_slack": s0, "margin": margin}
    if s0 < margin:
        return pi0, {**info, "lam": 0.0, "min_slack": s0}
    lo, hi = 0.0, 1.0
    best, best_s = pi0, s0
    while True:  # grow hi until it breaks the margin (or reward-greedy stays safe)
        pi_hi = policy_for(hi)
        s_hi = min_slack(pi_hi)
        if s_hi < margin:
            break
        lo, best, best_s = hi, pi_hi, s_hi
        if hi > 1e8:
            return best, {**info, "lam": lo, "min_slack": best_s}
        hi *= 4.0
    for _ in range(bisection_steps):
        mid = 0.5 * (lo + hi)
        pi_mid = policy_for(mid)
        s_mid = min_slack(pi_mid)
        if s_mid >= margin:
            lo, best, best_s = mid, pi_mid, s_mid
        else:
            hi = mid
    return best, {**info, "lam": lo, "min_slack": best_s}
