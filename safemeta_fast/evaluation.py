"""Exact values of policies and episode-level mixtures (SPEC section 2).

Values are expected discounted infinite-horizon sums from ``s_0 ~ nu0``:
``V_r(pi) = nu0^T (I - gamma P_pi)^{-1} r_pi`` and likewise for each cost column, with
``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']`` built from the CMDP's compressed successor
rows. The solvers are exact to 1e-10 relative (the iterative ones up to the float64
floor given below):

* ``"dense"``: LU solve of the dense S x S system (fastest for small S);
* ``"iterative"``: Gauss-Seidel sweeps on the sparse rows of ``P_pi`` with self-loop
  elimination, stopped by the rigorous bound ``gamma/(1-gamma) ||v_k - v_{k-1}||_inf <=
  rtol ||v_k||_inf`` (fastest for large sparse tasks at moderate gamma);
  the requested ``rtol`` is raised to the float64 floor ``32 eps gamma/(1-gamma)``
  (:func:`reachable_rtol`) and the sweeps are capped at :data:`ITERATIVE_MAX_SWEEPS`, past
  which :class:`~safemeta_fast.errors.ConvergenceError` names the cap and the residual;
* ``"sparse"``: scipy's sparse LU (SuperLU) of ``I - gamma P_pi`` (large S with gamma
  close to 1, where sweeps would be slow);
* ``"span"``: Jacobi sweeps on the dense ``P_pi`` stopped by the McQueen-Porteus bound
  ``gamma/(1-gamma) span(T v - v)/2 <= rtol ||T v||_inf`` (the midpoint is returned), with a
  budget of about one LU's cost, then the dense LU (dense, well-mixing tasks such as dense
  random CMDPs, where a handful of sweeps suffices).

``"direct"`` means ``"dense"`` up to :data:`DENSE_MAX_STATES` states and ``"sparse"``
above; ``"auto"`` picks the cheapest by a cost model measured on this project's
gridworlds and dense random tasks (see :func:`choose_method`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP
from .errors import ConvergenceError
from .kernels import evaluation as _k
from .policy import Mixture, as_policies, as_policy, as_weights
from .validation import check_choice, check_cmdp, check_real, readonly

__all__ = [
    "Evaluation",
    "EvaluationBatch",
    "StateValues",
    "evaluate",
    "evaluate_many",
    "evaluate_affine",
    "evaluate_mixture",
    "occupancy",
    "state_values",
    "choose_method",
    "METHODS",
    "DENSE_MAX_STATES",
    "ITERATIVE_MAX_SWEEPS",
    "reachable_rtol",
]

#: Accepted values of the ``method`` argument.
METHODS = ("auto", "direct", "dense", "sparse", "iterative", "span")

#: "direct" uses a dense LU up to this many states, a sparse LU above.
DENSE_MAX_STATES = 1000

#: Relative accuracy target of the iterative solver (certified bound).
DEFAULT_RTOL = 1e-11

#: Hard cap on Gauss-Seidel sweeps (values and occupancy). The proven worst-case count grows
#: like ``log(rtol) / log(gamma)`` (5e10 sweeps at gamma = 1 - 1e-9); past this cap the
#: solvers raise ConvergenceError instead of running for hours ("auto" takes a
#: factorisation long before: above 2000 worst-case sweeps).
ITERATIVE_MAX_SWEEPS = 100_000

# Cost model for "auto" (seconds, measured on the 7x7..100x100 gridworlds):
# dense ~ S^3 * C_DENSE; iterative ~ worst-case sweeps * min(nnz, S^2) * (1 + K) * _C_SWEEP
# (the worst-case sweep count and the nnz estimate both overshoot on gridworlds; the
# constant absorbs that). Crossover: about 250-300 states on gridworlds, thousands of
# states on dense random CMDPs.
C_DENSE = 3e-11
_C_SWEEP = 2.8e-10
# Sweeps beyond which the sparse LU is preferred to the iterative method.
_MAX_AUTO_SWEEPS = 2000
# Below this many states a dense LU beats SuperLU even on sparse systems.
_SPARSE_MIN_STATES = 300
# "auto" takes "span" when at least this fraction of P is non-zero (dense transitions mix
# fast) and S is at least _SPAN_MIN_STATES (below, the LU costs less than ~15 sweeps).
_SPAN_MIN_FILL = 0.25
_SPAN_MIN_STATES = 300
# One entry of a dense Jacobi sweep (kernels.evaluation.matvec), seconds; the span budget is
# the LU's cost in sweeps, C_DENSE S^3 / (_C_SPAN S^2), at least _SPAN_MIN_SWEEPS.
_C_SPAN = 6e-10
_SPAN_MIN_SWEEPS = 10
# Measured on RandomCMDPFamily(500, 5, gamma=0.95) with a random policy: 8 sweeps to rtol
# 1e-11, about 2 ms against 4-8 ms for the dense LU.


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


class CostCheck:
    """Mixin for results with ``cost`` (K,) and ``cost_limit`` (K,): slack and feasibility."""

    @property
    def slack(self) -> np.ndarray:
        """``cost_limit - cost``, shape (K,) (the paper's utility value ``V_g``)."""
        return readonly(self.cost_limit - self.cost)

    @property
    def feasible(self) -> bool:
        """Whether ``cost[k] <= cost_limit[k]`` for every k."""
        return bool(np.all(self.cost <= self.cost_limit))


@dataclass(frozen=True, eq=False)
class Evaluation(CostCheck):
    """Exact discounted values of one policy (or mixture) from ``nu0``.

    Attributes
    ----------
    reward : float
        ``V_r``.
    cost : numpy.ndarray, shape (K,)
        ``V_c^k`` (read-only).
    cost_limit : numpy.ndarray, shape (K,)
        The task's limits ``b`` (read-only).
    method : str
        The solver actually used ("dense", "sparse", "iterative").
    """

    reward: float
    cost: np.ndarray
    cost_limit: np.ndarray
    method: str



@dataclass(frozen=True, eq=False)
class EvaluationBatch:
    """Exact values of n policies.

    Attributes
    ----------
    reward : numpy.ndarray, shape (n,)
    cost : numpy.ndarray, shape (n, K)
    cost_limit : numpy.ndarray, shape (K,)
    method : str
    """

    reward: np.ndarray
    cost: np.ndarray
    cost_limit: np.ndarray
    method: str

    @property
    def slack(self) -> np.ndarray:
        """``cost_limit - cost``, shape (n, K)."""
        return readonly(self.cost_limit[None, :] - self.cost)

    @property
    def feasible(self) -> np.ndarray:
        """Per policy: every constraint met, shape (n,) bool."""
        return readonly(np.all(self.cost <= self.cost_limit[None, :], axis=1))

    def __len__(self) -> int:
        return self.reward.shape[0]

    def __getitem__(self, i: int) -> Evaluation:
        return Evaluation(float(self.reward[i]), readonly(self.cost[i].copy()),
                          self.cost_limit, self.method)


@dataclass(frozen=True, eq=False)
class StateValues:
    """Per-state values of a policy: ``v = (I - gamma P_pi)^{-1} x_pi``.

    Attributes
    ----------
    reward : numpy.ndarray, shape (S,)
    cost : numpy.ndarray, shape (S, K)
    method : str
    """

    reward: np.ndarray
    cost: np.ndarray
    method: str


# ---------------------------------------------------------------------------
# validation and solver choice
# ---------------------------------------------------------------------------

def _check_rtol(rtol) -> float:
    """The relative tolerance of the iterative paths: a real number in (0, 1)."""
    return check_real("rtol", rtol, 0.0, 1.0, lo_open=True, hi_open=True)


def _expected_sweeps(gamma: float, rtol: float) -> int:
    return int(_k.gs_sweep_bound(gamma, reachable_rtol(gamma, rtol)))


def reachable_rtol(gamma: float, rtol: float) -> float:
    """The relative accuracy the iterative value solver actually certifies.

    ``max(rtol, 32 eps gamma / (1 - gamma))``: a sweep's change cannot be expected below a
    few dozen ulps of the values, so asking for less would never stop. For gamma = 0.99 the
    floor is 7e-13 (below the default 1e-11); for gamma = 1 - 1e-9 it is 7e-6.

    Examples
    --------
    >>> reachable_rtol(0.9, 1e-11), reachable_rtol(1 - 1e-9, 1e-11) > 1e-6
    (1e-11, True)
    """
    return float(_k.reachable_rtol(float(gamma), float(rtol)))


def _raise_not_converged(what: str, rtol: float, cap: int, bound: float) -> None:
    raise ConvergenceError(
        f"{what} hit its sweep cap of {cap} with certified relative error {bound:.3e} "
        f"> rtol {rtol:.3e}; use method='sparse' or 'dense' (gamma close to 1 needs a "
        "factorisation)"
    )


def choose_method(M: CMDP, method: str = "auto", rtol: float = DEFAULT_RTOL) -> str:
    """Resolve ``method`` to the solver used for ``M``.

    Parameters
    ----------
    M : CMDP
    method : {"auto", "direct", "dense", "sparse", "iterative", "span"}
    rtol : float
        Accuracy target of the iterative solver (changes the sweep estimate only).

    Returns
    -------
    str
        ``"dense"``, ``"sparse"``, ``"iterative"`` or ``"span"``. ``"auto"`` takes
        ``"span"`` when at least 25% of the transition entries are non-zero and
        ``S >= 300`` (dense transitions mix fast; the span budget is one LU's cost, so it
        costs at most about twice the LU). Otherwise it compares the cost models ``S^3``
        (dense LU) and ``sweeps * nnz * (1 + K)`` (Gauss-Seidel, with the worst-case
        sweep count for gamma); when that sweep count would exceed 2000 (gamma close to
        1) it takes a factorisation instead: the sparse LU for sparse systems above 300
        states, else the dense LU. The constants were measured on the 7x7 to 100x100
        gridworlds and on dense random tasks with S = 500.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> choose_method(gridworld(0.3)), choose_method(gridworld(0.3, 50))
    ('dense', 'iterative')
    """
    method = check_choice("method", method, METHODS)
    S = M.n_states
    if method == "direct":
        return "dense" if S <= DENSE_MAX_STATES else "sparse"
    if method != "auto":
        return method
    if S >= _SPAN_MIN_STATES and M.nnz >= _SPAN_MIN_FILL * S * M.n_actions * S:
        return "span"
    nnz_est = min(M.nnz, S * S)  # an upper estimate of nnz(P_pi)
    sweeps = _expected_sweeps(M.gamma, rtol)
    t_dense = C_DENSE * float(S) ** 3
    t_iter = _C_SWEEP * sweeps * nnz_est * (1 + M.n_constraints)
    if sweeps > _MAX_AUTO_SWEEPS:
        # gamma close to 1: a factorisation, sparse when the system is large and sparse
        sparse_pays = S > _SPARSE_MIN_STATES and nnz_est * 10 <= S * S
        return "sparse" if sparse_pays else "dense"
    return "dense" if t_dense <= t_iter else "iterative"


def _policy_system(M: CMDP, pi: np.ndarray):
    pptr, pcol, pval = _k.policy_matrix_csr(M.succ_ptr, M.succ_next, M.succ_prob, pi)
    return pptr, pcol, pval


def _sparse_matrix(M: CMDP, pptr, pcol, pval, transpose: bool):
    from scipy import sparse
    from scipy.sparse.linalg import splu

    S = M.n_states
    Ppi = sparse.csr_matrix((pval, pcol, pptr), shape=(S, S))
    A = sparse.identity(S, format="csc") - M.gamma * (Ppi.T if transpose else Ppi).tocsc()
    return splu(A.tocsc())


_MODES = {"dense": _k.MODE_DENSE, "iterative": _k.MODE_ITERATIVE, "span": _k.MODE_SPAN}


def _sweep_cap(M: CMDP, method: str, rtol: float) -> int:
    """Sweep cap of the kernel: the proven Gauss-Seidel bound, or the span budget."""
    if method == "span":
        return max(_SPAN_MIN_SWEEPS, int(C_DENSE * M.n_states / _C_SPAN))
    return min(_expected_sweeps(M.gamma, rtol) + 10, ITERATIVE_MAX_SWEEPS)


def _values_matrix(M: CMDP, pi: np.ndarray, method: str, rtol: float) -> np.ndarray:
    """State values (S, 1 + K): column 0 reward, columns 1.. costs."""
    if method == "sparse":
        rhs = _k.policy_rhs(M.r, M.c, pi)
        pptr, pcol, pval = _policy_system(M, pi)
        return np.asarray(_sparse_matrix(M, pptr, pcol, pval, transpose=False).solve(rhs))
    cap = _sweep_cap(M, method, rtol)
    rtol = reachable_rtol(M.gamma, rtol)
    V, status, bound = _k.values_matrix(M.succ_ptr, M.succ_next, M.succ_prob, M.r, M.c, pi,
                                        M.gamma, _MODES[method], rtol, cap)
    if status != _k.STATUS_OK:
        _raise_not_converged("iterative evaluation", rtol, cap, bound)
    return V


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------

def evaluate(M: CMDP, pi, *, method: str = "auto", rtol: float = DEFAULT_RTOL) -> Evaluation:
    """Exact discounted values of a policy from ``nu0``.

    ``V_r = nu0^T (I - gamma P_pi)^{-1} r_pi`` and ``V_c^k`` likewise (SPEC section 2).

    Parameters
    ----------
    M : CMDP
        The task (S states, A actions, K constraints).
    pi : array_like, shape (S, A)
        Row-stochastic policy.
    method : {"auto", "direct", "dense", "sparse", "iterative", "span"}, default "auto"
        Solver, see :func:`choose_method`.
    rtol : float, default 1e-11
        Certified relative accuracy of the iterative solver (relative to the largest
        state value of each column), raised to :func:`reachable_rtol` when float64 cannot
        reach it.

    Raises
    ------
    ConvergenceError
        When the iterative solver hits :data:`ITERATIVE_MAX_SWEEPS` (gamma close to 1);
        the message names the cap and the certified error reached.

    Returns
    -------
    Evaluation
        ``reward`` (float), ``cost`` (K,), plus ``slack`` and ``feasible``.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> ev = evaluate(M, np.full((49, 4), 0.25))
    >>> ev.cost.shape, ev.feasible
    ((1,), False)
    """
    M = check_cmdp(M)
    pi = as_policy(pi, M.n_states, M.n_actions)
    rtol = _check_rtol(rtol)
    used = choose_method(M, method, rtol)
    if used == "sparse":
        vals = M.nu0 @ _values_matrix(M, pi, used, rtol)
    else:  # one fused kernel call: P_pi rows, right-hand sides, solve, nu0-weighting
        vals = np.zeros(1 + M.n_constraints)
        bound = np.zeros(1)
        cap = _sweep_cap(M, used, rtol)
        rtol = reachable_rtol(M.gamma, rtol)
        status = _k.evaluate_one(M.succ_ptr, M.succ_next, M.succ_prob, M.r, M.c, M.nu0, pi,
                                 M.gamma, _MODES[used], rtol, cap, vals, bound)
        if status != _k.STATUS_OK:
            _raise_not_converged("iterative evaluation", rtol, cap, float(bound[0]))
    return Evaluation(float(vals[0]), readonly(vals[1:].copy()), M.cost_limit, used)


def state_values(M: CMDP, pi, *, method: str = "auto", rtol: float = DEFAULT_RTOL) -> StateValues:
    """Per-state values ``v_r`` (S,) and ``v_c`` (S, K) of a policy.

    ``v = (I - gamma P_pi)^{-1} x_pi`` with ``x_pi[s] = sum_a pi[s, a] x[s, a]``.

    Parameters
    ----------
    M : CMDP
    pi : array_like, shape (S, A)
    method, rtol
        As in :func:`evaluate`.

    Returns
    -------
    StateValues
        ``reward`` (S,), ``cost`` (S, K), read-only; ``nu0 @ reward`` is ``V_r``.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> sv = state_values(gridworld(0.3), np.full((49, 4), 0.25))
    >>> round(float(sv.reward[45]), 6)
    100.0
    """
    M = check_cmdp(M)
    pi = as_policy(pi, M.n_states, M.n_actions)
    rtol = _check_rtol(rtol)
    used = choose_method(M, method, rtol)
    V = _values_matrix(M, pi, used, rtol)
    return StateValues(readonly(V[:, 0].copy()), readonly(V[:, 1:].copy()), used)


def occupancy(M: CMDP, pi, *, method: str = "auto", rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Normalised discounted state-action occupancy ``mu(s, a)``.

    ``d = (1 - gamma) (I - gamma P_pi^T)^{-1} nu0`` and ``mu(s, a) = d(s) pi(s, a)``; it
    sums to 1 and ``V_r = <mu, r> / (1 - gamma)``, ``V_c^k = <mu, c_k> / (1 - gamma)``.

    Parameters
    ----------
    M : CMDP
    pi : array_like, shape (S, A)
    method, rtol
        As in :func:`evaluate` (the iterative solver certifies ``||d - d*||_1 <= rtol``
        through the residual, with ``rtol`` raised to the float64 floor
        ``32 eps (1 + nnz(P_pi)/S) / (1 - gamma)`` and at most ITERATIVE_MAX_SWEEPS sweeps;
        "span" solves the adjoint system by the dense LU).

    Returns
    -------
    numpy.ndarray, shape (S, A)
        Read-only, non-negative, summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> mu = occupancy(gridworld(0.3), np.full((49, 4), 0.25))
    >>> round(float(mu.sum()), 12)
    1.0
    """
    M = check_cmdp(M)
    pi = as_policy(pi, M.n_states, M.n_actions)
    rtol = _check_rtol(rtol)
    used = choose_method(M, method, rtol)
    if used in ("dense", "span"):  # the adjoint system has no span stop: the dense LU
        used = "dense"
        system = _k.dense_system_pairs(M.succ_ptr, M.succ_next, M.succ_prob, pi, M.gamma)
        d = np.linalg.solve(system.T, (1.0 - M.gamma) * M.nu0)
    elif used == "sparse":
        pptr, pcol, pval = _policy_system(M, pi)
        d = _sparse_matrix(M, pptr, pcol, pval, transpose=True).solve((1.0 - M.gamma) * M.nu0)
    else:
        pptr, pcol, pval = _policy_system(M, pi)
        rtol = float(_k.reachable_occupancy_rtol(M.gamma, rtol, pcol.shape[0] / M.n_states))
        cap = min(4 * (int(_k.gs_sweep_bound(M.gamma, rtol)) + 10), ITERATIVE_MAX_SWEEPS)
        d, _, status, bound = _k.solve_occupancy_gs(pptr, pcol, pval, M.nu0, M.gamma, rtol, cap)
        if status != _k.STATUS_OK:
            _raise_not_converged("iterative occupancy", rtol, cap, bound)
    d = np.maximum(np.asarray(d), 0.0)  # round-off can leave -1e-17 on unreachable states
    mu = d[:, None] * pi
    mu /= mu.sum()
    return readonly(mu)


def evaluate_many(M: CMDP, policies, *, method: str = "auto",
                  rtol: float = DEFAULT_RTOL) -> EvaluationBatch:
    """Exact values of a stack of policies, in parallel over the policies.

    Parameters
    ----------
    M : CMDP
    policies : array_like, shape (n, S, A) (or one (S, A) policy)
    method : {"auto", "direct", "dense", "iterative", "span"}, default "auto"
        ``"sparse"`` is not available here (it runs in Python); "auto"/"direct" fall
        back to "dense"/"iterative" accordingly.
    rtol : float
        As in :func:`evaluate`.

    Returns
    -------
    EvaluationBatch
        ``reward`` (n,), ``cost`` (n, K), ``slack`` (n, K), ``feasible`` (n,).

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> batch = evaluate_many(gridworld(0.3), np.full((3, 49, 4), 0.25))
    >>> batch.reward.shape, batch.cost.shape
    ((3,), (3, 1))
    """
    M = check_cmdp(M)
    pis = as_policies(policies, M.n_states, M.n_actions)
    rtol = _check_rtol(rtol)
    used = choose_method(M, method, rtol)
    if used == "sparse":
        if method == "sparse":
            raise ValueError(
                "method 'sparse' is not available in evaluate_many; use 'iterative' or 'dense'"
            )
        used = "iterative"
    n, K = pis.shape[0], M.n_constraints
    out = np.zeros((n, 1 + K))
    status = np.zeros(n, dtype=np.int64)
    bound = np.zeros(n)
    cap = _sweep_cap(M, used, rtol)
    rtol = reachable_rtol(M.gamma, rtol)
    _k.evaluate_batch(M.succ_ptr, M.succ_next, M.succ_prob, M.r, M.c, M.nu0,
                      np.ascontiguousarray(pis), M.gamma, _MODES[used], rtol, cap, out, status,
                      bound)
    if np.any(status != _k.STATUS_OK):
        i = int(np.flatnonzero(status)[0])
        _raise_not_converged(f"iterative evaluation of policies[{i}]", rtol, cap,
                             float(bound[i]))
    return EvaluationBatch(readonly(out[:, 0].copy()), readonly(out[:, 1:].copy()),
                           M.cost_limit, used)


def evaluate_mixture(M: CMDP, policies, weights=None, *, method: str = "auto",
                     rtol: float = DEFAULT_RTOL) -> Evaluation:
    """Exact values of an episode-level mixture ``sum_i w_i pi_i``.

    The component is drawn once per episode, so the values are linear in the weights:
    ``V(mix) = sum_i w_i V(pi_i)`` (SPEC section 2). Each component is evaluated exactly
    and the values are combined.

    Parameters
    ----------
    M : CMDP
    policies : array_like, shape (m, S, A), or a :class:`~safemeta_fast.policy.Mixture`
    weights : array_like, shape (m,)
        Non-negative, summing to 1; must be omitted when ``policies`` is a Mixture.
    method, rtol
        As in :func:`evaluate_many`.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> ev = evaluate_mixture(M, np.full((2, 49, 4), 0.25), [0.5, 0.5])
    >>> round(ev.reward - evaluate(M, np.full((49, 4), 0.25)).reward, 12)
    0.0
    """
    M = check_cmdp(M)
    if isinstance(policies, Mixture):
        if weights is not None:
            raise ValueError("weights must be omitted when policies is a Mixture (it has its own)")
        policies.check_shape(M.n_states, M.n_actions)
        pis, w = policies.policies, policies.weights
    else:
        if weights is None:
            raise ValueError("weights is required unless policies is a Mixture")
        pis = as_policies(policies, M.n_states, M.n_actions)
        w = as_weights(weights, pis.shape[0])
    batch = evaluate_many(M, pis, method=method, rtol=rtol)
    reward = float(w @ batch.reward)
    cost = w @ batch.cost
    return Evaluation(reward, readonly(cost), M.cost_limit, batch.method)


def evaluate_affine(model, thetas, policies, *, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Exact values of m policies on many tasks of an affine family, without building CMDPs.

    Parameters
    ----------
    model : safemeta_fast.tasks.AffineModel
        The family's data as ``base + sum_k (theta_k - theta0_k) slope_k`` on one support
        (:meth:`safemeta_fast.tasks.TaskFamily.affine_model`).
    thetas : array_like, shape (n, d)
    policies : array_like, shape (m, S, A)

    Returns
    -------
    numpy.ndarray, shape (n, m, 1 + K)
        ``[V_r, V_c^0, ...]`` of every policy on every task, equal to :func:`evaluate_many`
        on each built task up to rounding (a test compares them).
    """
    M = model.base
    pis = np.ascontiguousarray(as_policies(policies, M.n_states, M.n_actions))
    rtol = _check_rtol(rtol)
    th = np.ascontiguousarray(np.asarray(thetas, dtype=np.float64).reshape(-1, model.dim))
    used = choose_method(M, "auto", rtol)
    if used == "sparse":
        used = "iterative"
    n, m, K = th.shape[0], pis.shape[0], M.n_constraints
    out = np.zeros((n, m, 1 + K))
    status = np.zeros((n, m), dtype=np.int64)
    cap = _sweep_cap(M, used, rtol)
    rtol = reachable_rtol(M.gamma, rtol)
    _k.evaluate_affine_tasks(M.succ_ptr, M.succ_next, model.prob0, model.dprob,
                             np.asarray(M.r), model.dr, np.asarray(M.c), model.dc,
                             np.asarray(M.nu0), model.dnu0, th - model.theta0, pis, M.gamma,
                             _MODES[used], rtol, cap, out, status)
    if np.any(status != _k.STATUS_OK):  # pragma: no cover - the cap is a proven bound
        t, i = (int(x) for x in np.argwhere(status != _k.STATUS_OK)[0])
        raise ConvergenceError(f"evaluation of policies[{i}] on task {t} did not converge")
    return out
