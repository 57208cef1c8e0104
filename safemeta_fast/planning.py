"""Planning with a known model: value iteration and the entropy-regularised
primal-dual CMDP solver of the reference experiment (BASELINES.md section 2).

Both run entirely inside numba kernels on the CMDP's compressed successor rows.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP
from .errors import ConvergenceError, SafeMetaError
from .evaluation import C_DENSE, CostCheck, evaluate
from .kernels import planning as _k
from .validation import check_cmdp, readonly

__all__ = [
    "ValueIterationResult",
    "MDPSolution",
    "PrimalDualResult",
    "value_iteration",
    "solve_mdp",
    "DEFAULT_SWEEPS",
    "MDP_METHODS",
    "MDP_PATHS",
    "primal_dual",
    "PRIMAL_DUAL_MODES",
]

#: Accepted values of ``primal_dual(..., mode=)``.
PRIMAL_DUAL_MODES = ("alternating", "simultaneous")


# ---------------------------------------------------------------------------
# validation vocabulary
# ---------------------------------------------------------------------------

def _real(name: str, x) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} is {v!r}; it must be finite")
    return v


def _positive(name: str, x) -> float:
    v = _real(name, x)
    if v <= 0.0:
        raise ValueError(f"{name} is {v!r}; it must be > 0")
    return v


def _nonneg(name: str, x) -> float:
    v = _real(name, x)
    if v < 0.0:
        raise ValueError(f"{name} is {v!r}; it must be >= 0")
    return v


def _count(name: str, x, minimum: int) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(x).__name__}")
    v = int(x)
    if v < minimum:
        raise ValueError(f"{name} is {v}; it must be >= {minimum}")
    return v


def _choice(name: str, x, options: tuple[str, ...]) -> str:
    if not isinstance(x, str) or x not in options:
        raise ValueError(f"{name} is {x!r}; expected one of {', '.join(map(repr, options))}")
    return x


# ---------------------------------------------------------------------------
# value iteration
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ValueIterationResult:
    """Optimal unconstrained values of one objective.

    Attributes
    ----------
    values : numpy.ndarray, shape (S,)
        ``v*`` (for ``objective="cost"``: the minimal discounted cost per state).
    q : numpy.ndarray, shape (S, A)
        ``q(s, a) = x(s, a) + gamma sum_s' P(s'|s, a) v*(s')``.
    policy : numpy.ndarray, shape (S, A)
        Deterministic greedy policy (one-hot rows; ties go to the lowest action).
    iterations : int
        Sweeps performed.
    residual : float
        ``||v_k - v_{k-1}||_inf`` of the last sweep.
    error_bound : float
        ``gamma / (1 - gamma) * residual`` >= ``||v_k - v*||_inf``.
    value : float
        ``nu0 @ values``.
    objective : str
        "reward" or "cost".
    """

    values: np.ndarray
    q: np.ndarray
    policy: np.ndarray
    iterations: int
    residual: float
    error_bound: float
    value: float
    objective: str


def value_iteration(M: CMDP, *, tol: float = 1e-8, max_iter: int = 100_000,
                    objective: str = "reward", constraint: int = 0) -> ValueIterationResult:
    """Optimal unconstrained values by Gauss-Seidel value iteration.

    Each sweep updates the states in place,
    ``v(s) <- max_a (x(s,a) + gamma sum_{s' != s} P v(s')) / (1 - gamma P(s|s,a))``
    (self-loops eliminated; a gamma-contraction with fixed point ``v*``), and the loop
    stops when ``gamma/(1-gamma) ||v_k - v_{k-1}||_inf <= tol``, which guarantees
    ``||v_k - v*||_inf <= tol``. A ``tol`` below float64 resolution (the change of a sweep
    cannot drop below a few dozen ulps of ``||v||_inf``: about ``7e-15 ||v||_inf
    gamma/(1-gamma)``) is raised to that floor, so gamma close to 1 stops instead of
    spinning to ``max_iter``; ``error_bound`` reports the bound actually met.

    Parameters
    ----------
    M : CMDP
    tol : float, default 1e-8
        Absolute accuracy of the values (> 0), up to the float64 floor above.
    max_iter : int, default 100000
        Sweep cap (>= 1).
    objective : {"reward", "cost"}, default "reward"
        Maximise the reward, or minimise the cost of constraint ``constraint``.
    constraint : int, default 0
        Which cost column to minimise when ``objective="cost"``.

    Returns
    -------
    ValueIterationResult

    Raises
    ------
    ConvergenceError
        If ``max_iter`` sweeps do not reach ``tol`` (the message gives the residual).

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> res = value_iteration(gridworld(0.3))
    >>> round(float(res.values[45]), 6)
    100.0
    """
    M = check_cmdp(M)
    tol = _positive("tol", tol)
    max_iter = _count("max_iter", max_iter, 1)
    sign, R = _objective_rewards(M, objective, constraint)
    v = np.zeros(M.n_states)
    q = np.empty((M.n_states, M.n_actions))
    it, residual, status = _k.value_iteration_kernel(
        M.succ_ptr, M.succ_next, M.succ_prob, R, M.gamma, tol, max_iter, v, q
    )
    bound = M.gamma / (1.0 - M.gamma) * residual
    _check_status("value iteration", status, max_iter, residual, bound, tol)
    return ValueIterationResult(**_result_fields(M, v, q, sign, it, residual, bound))


def _objective_rewards(M: CMDP, objective, constraint) -> tuple[float, np.ndarray]:
    """(sign, R): the maximised per-pair reward (S, A) and the sign that maps back."""
    objective = _choice("objective", objective, ("reward", "cost"))
    constraint = _count("constraint", constraint, 0)
    if constraint >= M.n_constraints:
        raise ValueError(
            f"constraint is {constraint}; the task has {M.n_constraints} constraint(s), "
            f"so it must lie in [0, {M.n_constraints})"
        )
    if objective == "reward":
        return 1.0, np.ascontiguousarray(M.r)
    return -1.0, np.ascontiguousarray(-M.c[:, :, constraint])


def _check_status(name: str, status: int, max_iter: int, residual: float, bound: float,
                  tol: float) -> None:
    if status == _k.STATUS_NONFINITE:  # pragma: no cover - validated inputs are finite
        raise SafeMetaError(f"{name} produced non-finite values")
    if status != _k.STATUS_OK:
        raise ConvergenceError(
            f"{name} hit max_iter={max_iter} with residual {residual:.3e} "
            f"(error bound {bound:.3e} > tol {tol:g}); raise max_iter or tol"
        )


def _result_fields(M: CMDP, v, q, sign, it, residual, bound) -> dict:
    """Fields shared by every solver's result; greedy policy: lowest index on exact ties."""
    S, A = q.shape
    pi = np.zeros((S, A))
    pi[np.arange(S), np.argmax(q, axis=1)] = 1.0
    values = sign * v
    return dict(
        values=readonly(values), q=readonly(sign * q), policy=readonly(pi),
        iterations=int(it), residual=float(residual), error_bound=float(bound),
        value=float(M.nu0 @ values), objective=("reward" if sign > 0 else "cost"),
    )


# ---------------------------------------------------------------------------
# policy iteration, modified policy iteration and the solver choice (issue 13)
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MDPSolution(ValueIterationResult):
    """Optimal unconstrained values from :func:`solve_mdp`.

    Attributes
    ----------
    values, q, policy, iterations, residual, error_bound, value, objective
        As in :class:`ValueIterationResult`. ``residual`` is ``||v_k - v_{k-1}||_inf``
        for value iteration and ``span(T v - v)`` of the last improvement step for
        (modified) policy iteration; ``error_bound >= ||values - v*||_inf`` either way.
    method : str
        The solver used: "value_iteration", "policy_iteration" or
        "modified_policy_iteration".
    path : str
        "sparse" (numba on the successor rows) or "dense" (numba loops and LAPACK on ``M.P``).
    work : int
        Linear solves (policy iteration), partial-evaluation sweeps (modified policy
        iteration) or Gauss-Seidel sweeps (value iteration).
    """

    method: str
    path: str
    work: int


#: Accepted values of ``solve_mdp(..., method=)``.
MDP_METHODS = ("auto", "value_iteration", "policy_iteration", "modified_policy_iteration")
#: Accepted values of ``solve_mdp(..., path=)``.
MDP_PATHS = ("auto", "sparse", "dense")

#: ``path="auto"`` takes the dense path when at least this fraction of ``P`` is non-zero
DENSE_MIN_FILL = 0.25
#: ...and the dense tensor needs at most this many bytes.
DENSE_MAX_BYTES = 1 << 30


#: Measured cost model of ``method="auto"`` (seconds; 2-core machine, see setup_notes.md):
#: one visit of a transition entry in a numba sweep on the successor rows...
_C_VISIT_SPARSE = 1.6e-9
#: ...and in a dense matrix-vector loop on the tensor (``kernels.evaluation.matvec``);
_C_VISIT_DENSE = 6e-10
#: improvement steps policy iteration typically needs (2-4 on dense random tasks, 4-10 on
#: gridworlds); its dense LU costs ``evaluation.C_DENSE * S**3`` per step.
_PI_STEPS = 4
#: "auto" never falls back to policy iteration above this many states (LU memory/time).
_PI_MAX_STATES = 4000
#: Smallest modified-PI budget of "auto" (at that size the call overhead dominates anyway).
_MIN_BUDGET = 20
#: Default partial-evaluation sweeps of modified policy iteration (measured best or within
#: 10% of best on the 7x7..50x50 gridworlds and dense random tasks, S = 200..500).
DEFAULT_SWEEPS = 5


def _path_of(M: CMDP, path: str) -> str:
    if path != "auto":
        return path
    S, A = M.n_states, M.n_actions
    fill = M.nnz / float(S * A * S)
    return "dense" if fill >= DENSE_MIN_FILL and S * A * S * 8 <= DENSE_MAX_BYTES else "sparse"


def _auto_budget(M: CMDP, path: str, n_sweeps: int) -> int | None:
    """Improvement steps modified PI gets before "auto" switches to policy iteration.

    ``t_PI = _PI_STEPS * (C_DENSE S^3 + c nnz)`` against one modified-PI step
    ``t_step = c (nnz + n_sweeps nnz_pi)`` (``c`` per visited entry, ``nnz`` entries of P,
    ``nnz_pi`` of P_sigma; dense path: ``nnz = S A S``). Modified PI runs for
    ``t_PI / t_step`` steps (at least 20); if it has not met the bound by then, policy
    iteration takes over from its policy, so "auto" costs at most about twice the cheaper
    of the two. None: no fallback (S too large for a dense LU).
    """
    S, A = M.n_states, M.n_actions
    if S > _PI_MAX_STATES:
        return None
    if path == "dense":
        c, nnz, nnz_pi = _C_VISIT_DENSE, S * A * S, S * S
    else:
        c, nnz, nnz_pi = _C_VISIT_SPARSE, M.nnz, M.nnz / A
    t_pi = _PI_STEPS * (C_DENSE * float(S) ** 3 + c * nnz)
    t_step = c * (nnz + n_sweeps * nnz_pi)
    return max(_MIN_BUDGET, int(t_pi / t_step))


def solve_mdp(M: CMDP, *, method: str = "auto", path: str = "auto", tol: float = 1e-8,
              max_iter: int | None = None, objective: str = "reward", constraint: int = 0,
              n_sweeps: int | None = None) -> MDPSolution:
    """Optimal unconstrained values by value iteration, policy iteration or modified PI.

    * ``"value_iteration"``: :func:`value_iteration` (Gauss-Seidel sweeps, sparse path).
    * ``"policy_iteration"`` (Howard): evaluate the greedy deterministic policy exactly,
      ``v = (I - gamma P_sigma)^{-1} r_sigma`` (dense LU), then improve,
      ``sigma(s) <- argmax_a r(s,a) + gamma P(.|s,a) v``.
    * ``"modified_policy_iteration"``: ``v <- T v`` (greedy ``sigma``), then ``n_sweeps``
      Jacobi sweeps ``v <- r_sigma + gamma P_sigma v``.
    * ``"auto"``: modified PI with a step budget from a measured cost model, then policy
      iteration from its policy if the budget runs out (see Notes).

    (Modified) policy iteration stops on the McQueen-Porteus bounds
    ``T v + gamma/(1-gamma) min(Tv - v) <= v* <= T v + gamma/(1-gamma) max(Tv - v)``:
    once ``gamma/(1-gamma) span(Tv - v)/2 <= tol`` the midpoint is returned, so
    ``||values - v*||_inf <= tol`` for every method (``tol`` raised to the float64 floor
    ``gamma/(1-gamma) 32 eps ||T v||_inf`` when it is smaller; ``error_bound`` reports the
    bound met). Policy iteration also stops when its
    policy is stable (an action changes only if another is better by more than 1e-13
    relative). The returned policy is greedy for the returned values (lowest action index
    on exact ties).

    Parameters
    ----------
    M : CMDP
    method : {"auto", "value_iteration", "policy_iteration", "modified_policy_iteration"}
    path : {"auto", "sparse", "dense"}, default "auto"
        "sparse" runs numba kernels on the successor rows; "dense" runs numba kernels with
        dense loops (and LAPACK for policy iteration's solves) on the dense tensor ``M.P``
        (materialised if needed). "auto" takes "dense"
        when at least ``DENSE_MIN_FILL`` (25%) of ``P`` is non-zero and it needs at most
        ``DENSE_MAX_BYTES`` (1 GiB). Value iteration always runs on the sparse path.
    tol : float, default 1e-8
        Absolute accuracy of the values (> 0).
    max_iter : int, optional
        Cap on improvement steps (PI, modified PI) or sweeps (VI); default 100000.
    objective : {"reward", "cost"}, default "reward"
    constraint : int, default 0
        As in :func:`value_iteration`.
    n_sweeps : int, optional
        Partial-evaluation sweeps per improvement of modified PI (>= 0; 0 is Jacobi value
        iteration with the span stop); default ``DEFAULT_SWEEPS`` (5).

    Returns
    -------
    MDPSolution
        ``method`` and ``path`` say what ran ("auto" that fell back reports
        "policy_iteration" and counts the steps of both).

    Raises
    ------
    ConvergenceError
        If ``max_iter`` is reached before the bound holds.
    TypeError, ValueError
        For a bad argument.

    Notes
    -----
    Cost model of ``method="auto"`` (constants measured on a 2-core machine): one entry
    visit costs 1.6 ns in a numba sweep on the successor rows and 0.6 ns in a dense
    matrix-vector loop; a dense LU of S x S costs ``3e-11 S^3`` s; policy iteration takes
    about 4 improvement steps. Modified PI gets ``t_PI / t_step`` steps (at least 20), where
    ``t_PI = 4 (3e-11 S^3 + c nnz)`` and ``t_step = c (nnz + n_sweeps nnz / A)``. On the
    measured tasks modified PI converged inside its budget (7x7 gridworld 11 steps,
    50x50: 26, dense random S=500 A=5 gamma 0.95: 3), so "auto" ran modified PI there;
    slowly mixing tasks with gamma close to 1 and a few hundred states switch to policy
    iteration. Above 4000 states there is no fallback.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> res = solve_mdp(gridworld(0.3), method="policy_iteration")
    >>> round(res.value, 6), res.error_bound <= 1e-8
    (52.857149, True)
    >>> solve_mdp(gridworld(0.3)).method
    'modified_policy_iteration'
    """
    M = check_cmdp(M)
    method = _choice("method", method, MDP_METHODS)
    path = _path_of(M, _choice("path", path, MDP_PATHS))
    tol = _positive("tol", tol)
    max_iter = 100_000 if max_iter is None else _count("max_iter", max_iter, 1)
    sweeps = DEFAULT_SWEEPS if n_sweeps is None else _count("n_sweeps", n_sweeps, 0)
    sign, R = _objective_rewards(M, objective, constraint)
    if method == "value_iteration":
        res = value_iteration(M, tol=tol, max_iter=max_iter, objective=objective,
                              constraint=constraint)
        fields = {f: getattr(res, f) for f in ValueIterationResult.__dataclass_fields__}
        return MDPSolution(**fields, method=method, path="sparse", work=res.iterations)
    g = M.gamma
    S, A = M.n_states, M.n_actions
    v = np.zeros(S)
    q = np.empty((S, A))
    sigma = np.argmax(R, axis=1).astype(np.int64)
    P2 = np.ascontiguousarray(M.P).reshape(S * A, S) if path == "dense" else np.empty((0, 0))
    data = (M.succ_ptr, M.succ_next, M.succ_prob, P2)
    pi_k, mpi_k = _k.policy_iteration_kernel, _k.modified_pi_kernel
    it = work = 0
    status = _k.STATUS_MAX_ITER
    if method in ("auto", "modified_policy_iteration"):
        budget = _auto_budget(M, path, sweeps) if method == "auto" else None
        cap = max_iter if budget is None else min(budget, max_iter)
        it, span, work, status = mpi_k(*data, R, g, tol, cap, sweeps, v, sigma, q)
        used = "modified_policy_iteration"
    if method == "policy_iteration" or (method == "auto" and status == _k.STATUS_MAX_ITER
                                        and it < max_iter):
        it2, span, work2, status = pi_k(*data, R, g, tol, max_iter - it, _KEEP_TOL, v, sigma, q)
        it, work, used = it + it2, work + work2, "policy_iteration"
    bound = g / (1.0 - g) * 0.5 * span
    _check_status(used.replace("_", " "), status, max_iter, span, bound, tol)
    return MDPSolution(**_result_fields(M, v, q, sign, it, span, bound), method=used,
                       path=path, work=int(work))


#: Policy iteration keeps the current action unless another one is better by more than
#: this (relative) amount: round-off cannot make it cycle.
_KEEP_TOL = 1e-13


# ---------------------------------------------------------------------------
# primal-dual
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PrimalDualResult(CostCheck):
    """Last iterate of the entropy-regularised primal-dual solver, exactly evaluated.

    Attributes
    ----------
    policy : numpy.ndarray, shape (S, A)
        The last policy iterate (entries may be as small as 1e-300).
    multiplier : numpy.ndarray, shape (K,)
        The last multipliers ``xi_k >= 0``.
    soft_value : numpy.ndarray, shape (S,)
        The warm-started soft (entropy-regularised) value estimate ``v`` of the
        Lagrangian reward, as the loop left it.
    lagrangian : float
        ``nu0 @ soft_value + multiplier @ cost_limit`` (the reference's "primal value").
    reward : float
        Exact ``V_r`` of ``policy``.
    cost : numpy.ndarray, shape (K,)
        Exact ``V_c`` of ``policy``.
    cost_limit : numpy.ndarray, shape (K,)
    iterations : int
    sweeps : int
        Bellman sweeps performed in total (soft and cost evaluations).
    """

    policy: np.ndarray
    multiplier: np.ndarray
    soft_value: np.ndarray
    lagrangian: float
    reward: float
    cost: np.ndarray
    cost_limit: np.ndarray
    iterations: int
    sweeps: int



def primal_dual(M: CMDP, *, beta: float = 0.1, eta_p: float | None = None, eta_xi: float = 0.1,
                n_iter: int = 10_000, max_sweeps: int = 50, sweep_tol: float = 1e-5,
                mode: str = "alternating") -> PrimalDualResult:
    """Entropy-regularised primal-dual CMDP solver (the reference's ``cmdp_gda``).

    Saddle point of ``V_r(pi) + beta * H_causal(pi) - sum_k xi_k (V_c^k(pi) - b_k)``,
    ``xi >= 0``. Start: ``pi = softmax(r / beta)``, ``v = 0``, ``v_c = 0``, ``xi = 0``.
    Each of the ``n_iter`` iterations (no early stop; BASELINES.md 2b):

    1. ``r_xi = r - sum_k xi_k c_k``;
    2. soft evaluation, warm-started Jacobi sweeps
       ``v <- sum_a pi (r_xi + gamma P v) + beta H(pi(.|s))`` (at least 1, at most
       ``max_sweeps``, stop when the max-norm change is <= ``sweep_tol``);
    3. ``q = r_xi + gamma P v``;
    4. ``pi_new ∝ pi^(1 - eta_p beta/(1-gamma)) exp(eta_p (q - max_a q)/(1-gamma))``;
       with the default ``eta_p = (1-gamma)/beta`` this is ``softmax(q / beta)``;
    5. cost values by warm-started sweeps of ``pi_new`` ("alternating") or of ``pi``
       ("simultaneous");
    6. ``xi_k <- max(0, xi_k - eta_xi (b_k - nu0 . v_c^k))`` (no upper bound);
    7. ``pi <- pi_new``.

    The last iterate is returned and evaluated exactly.

    Parameters
    ----------
    M : CMDP
    beta : float, default 0.1
        Entropy temperature (> 0).
    eta_p : float, optional
        Primal (mirror) step in ``(0, (1-gamma)/beta]``; default ``(1-gamma)/beta``.
    eta_xi : float, default 0.1
        Dual step (>= 0).
    n_iter : int, default 10000
        Iterations (>= 1).
    max_sweeps : int, default 50
        Sweep cap of each evaluation (>= 1).
    sweep_tol : float, default 1e-5
        Max-norm early stop of the sweeps (>= 0).
    mode : {"alternating", "simultaneous"}, default "alternating"

    Returns
    -------
    PrimalDualResult

    Raises
    ------
    SafeMetaError
        If the iterates become non-finite.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> res = primal_dual(gridworld(0.4))
    >>> round(res.reward, 6), round(float(res.cost[0]), 6)
    (44.915306, 1.5)
    """
    M = check_cmdp(M)
    beta = _positive("beta", beta)
    gamma = M.gamma
    eta_max = (1.0 - gamma) / beta
    if eta_p is None:
        exponent, q_coef = 0.0, 1.0 / beta
    else:
        eta_p = _positive("eta_p", eta_p)
        if eta_p > eta_max * (1.0 + 1e-12):
            raise ValueError(
                f"eta_p is {eta_p!r}; it must lie in (0, (1-gamma)/beta] = (0, {eta_max!r}] "
                "(a larger step gives pi a negative exponent)"
            )
        exponent = 1.0 - eta_p * beta / (1.0 - gamma)
        if abs(exponent) < 1e-12:
            exponent = 0.0
        q_coef = eta_p / (1.0 - gamma)
    eta_xi = _nonneg("eta_xi", eta_xi)
    n_iter = _count("n_iter", n_iter, 1)
    max_sweeps = _count("max_sweeps", max_sweeps, 1)
    sweep_tol = _nonneg("sweep_tol", sweep_tol)
    mode = _choice("mode", mode, PRIMAL_DUAL_MODES)

    S, K = M.n_states, M.n_constraints
    z = M.r / beta
    pi = np.exp(z - z.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    xi = np.zeros(K)
    v = np.zeros(S)
    vc = np.zeros((S, K))
    it, sweeps, status = _k.primal_dual_kernel(
        M.succ_ptr, M.succ_next, M.succ_prob, M.r, M.c, M.cost_limit, M.nu0, gamma, beta,
        exponent, q_coef, eta_xi, n_iter, max_sweeps, sweep_tol, mode == "alternating",
        pi, xi, v, vc,
    )
    if status != _k.STATUS_OK:
        raise SafeMetaError(
            f"primal_dual produced non-finite iterates at iteration {it} "
            f"(beta={beta}, eta_xi={eta_xi}); reduce the step sizes"
        )
    pi /= pi.sum(axis=1, keepdims=True)
    ev = evaluate(M, pi)
    return PrimalDualResult(
        policy=readonly(pi), multiplier=readonly(xi), soft_value=readonly(v),
        lagrangian=float(M.nu0 @ v + xi @ M.cost_limit), reward=ev.reward, cost=ev.cost,
        cost_limit=M.cost_limit, iterations=int(it), sweeps=int(sweeps),
    )
