"""Planning with a known model: value iteration and the entropy-regularised
primal-dual CMDP solver of the reference experiment (BASELINES.md section 2).

Both run entirely inside numba kernels on the CMDP's compressed successor rows.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP, _readonly
from .errors import ConvergenceError, SafeMetaError
from .evaluation import CostCheck, _check_model, evaluate
from .kernels import planning as _k

__all__ = [
    "ValueIterationResult",
    "PrimalDualResult",
    "value_iteration",
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
    ``||v_k - v*||_inf <= tol``.

    Parameters
    ----------
    M : CMDP
    tol : float, default 1e-8
        Absolute accuracy of the values (> 0).
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
    M = _check_model(M)
    tol = _positive("tol", tol)
    max_iter = _count("max_iter", max_iter, 1)
    objective = _choice("objective", objective, ("reward", "cost"))
    constraint = _count("constraint", constraint, 0)
    if constraint >= M.n_constraints:
        raise ValueError(
            f"constraint is {constraint}; the task has {M.n_constraints} constraint(s), "
            f"so it must lie in [0, {M.n_constraints})"
        )
    sign = 1.0 if objective == "reward" else -1.0
    R = np.ascontiguousarray(M.r if objective == "reward" else -M.c[:, :, constraint])
    S, A = M.n_states, M.n_actions
    v = np.zeros(S)
    q = np.empty((S, A))
    it, residual, status = _k.value_iteration_kernel(
        M.succ_ptr, M.succ_next, M.succ_prob, R, M.gamma, tol, max_iter, v, q
    )
    bound = M.gamma / (1.0 - M.gamma) * residual
    if status == _k.STATUS_NONFINITE:  # pragma: no cover - validated inputs are finite
        raise SafeMetaError("value iteration produced non-finite values")
    if status != _k.STATUS_OK:
        raise ConvergenceError(
            f"value iteration hit max_iter={max_iter} with residual {residual:.3e} "
            f"(error bound {bound:.3e} > tol {tol:g}); raise max_iter or tol"
        )
    pi = np.zeros((S, A))
    pi[np.arange(S), np.argmax(q, axis=1)] = 1.0
    values = sign * v
    return ValueIterationResult(
        values=_readonly(values), q=_readonly(sign * q), policy=_readonly(pi),
        iterations=int(it), residual=float(residual), error_bound=float(bound),
        value=float(M.nu0 @ values), objective=objective,
    )


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
    M = _check_model(M)
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

    S, A, K = M.n_states, M.n_actions, M.n_constraints
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
        policy=_readonly(pi), multiplier=_readonly(xi), soft_value=_readonly(v),
        lagrangian=float(M.nu0 @ v + xi @ M.cost_limit), reward=ev.reward, cost=ev.cost,
        cost_limit=M.cost_limit, iterations=int(it), sweeps=int(sweeps),
    )
