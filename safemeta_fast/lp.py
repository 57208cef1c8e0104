"""The occupancy-measure LP oracle O_l (SPEC section 4).

For a CMDP ``M`` the LP over the normalised discounted occupancy ``mu`` (shape (S, A)) is

    maximise   <mu, r> / (1 - gamma)
    subject to sum_a mu(s', a) - gamma sum_{s, a} P[s, a, s'] mu(s, a) = (1 - gamma) nu0(s')
                                                                    for every state s'
               <mu, c_k> / (1 - gamma) <= b[k] - margin                for every k
               mu >= 0,

and the policy is ``pi(a|s) = mu(s, a) / sum_a mu(s, a)`` (uniform where
``sum_a mu(s, a) <= 1e-10``, i.e. on states the optimal occupancy never visits). The LP
value is exactly the value of that policy (the flow constraints make ``mu`` its
occupancy measure), so the oracle returns exact values, not estimates.

Two interchangeable back ends solve the same LP:

``"highspy"``
    A persistent :class:`highspy.Highs` model per problem shape. The constraint matrix is
    filled straight from the CMDP's compressed successor rows (never from a dense P) with
    one precomputed scatter per sparsity pattern, and a re-solve starts from the previous
    optimal simplex basis (``reuse_basis``) or the task's crash basis. Used for
    ``solver="HIGHS"``.
``"cvxpy"``
    A DPP-compliant cvxpy problem, compiled once per problem shape, whose data are
    :class:`cvxpy.Parameter` objects; the flow matrix ``gamma P^T`` is a *sparse*
    parameter with the pattern of the successor rows. Used for ``solver="CLARABEL"`` (an
    interior-point method) and available for HiGHS with ``backend="cvxpy"``.

Both are cached in a small module-level LRU keyed by ``(S, A, K, sparsity pattern of the
transitions)``: tasks of one family that share their support reuse one compiled problem;
a task with a different support gets its own entry (never a silently wrong matrix). The
cache is not thread-safe; use one process per worker.

Default solver (``solver=None``): HiGHS' dual simplex whenever it may start from a basis
(``warm_start=True``, the default): the *crash basis* of the task's own unconstrained
optimal policy (:func:`safemeta_fast.planning.solve_mdp`, milliseconds), which is dual
feasible, so the dual simplex only repairs the cost rows. The basis depends on the task
alone, so answers do not depend on the solve history; ``reuse_basis=True`` starts from the
previous optimal basis instead (1.4-1.6x faster re-solves, history-dependent). Every answer
is checked by exact evaluation of its policy (``VERIFY_RTOL``). From such a basis HiGHS was the
fastest back end at every measured size, sparse or dense, first solve or re-solve (see
``DEFAULT_SOLVER_TIMES``). A cold simplex (``warm_start=False``) grows quickly with size,
so then HiGHS is used up to ``AUTO_SIMPLEX_MAX_PAIRS`` (600) pairs and Clarabel above.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .cmdp import CMDP
from .errors import InfeasibleError, OracleError
from .validation import check_finite, readonly

__all__ = [
    "LPResult",
    "OccupancyLP",
    "HighsOccupancyLP",
    "solve_lp",
    "min_cost",
    "clear_lp_cache",
    "AUTO_SIMPLEX_MAX_PAIRS",
    "DEFAULT_SOLVER_TIMES",
    "UNREACHED_TOL",
    "VERIFY_RTOL",
]

#: With ``warm_start=False``, the largest number of state-action pairs S*A for which
#: ``solver=None`` picks HiGHS (a cold dual simplex); larger problems use Clarabel (interior
#: point). Measured on the gridworld family, cold solves (no basis), on a loaded 2-core
#: machine:
#:
#: ========  ======  ===========  ========  ===========
#: grid      S*A     HiGHS cold   Clarabel  HiGHS warm
#: ========  ======  ===========  ========  ===========
#: 10x10     400     6 ms         6 ms      1 ms
#: 15x15     900     21 ms        12 ms     3 ms
#: 20x20     1,600   52 ms        25 ms     6 ms
#: 30x30     3,600   240 ms       78 ms     23 ms
#: 50x50     10,000  3.3-6 s      ~0.35 s   50-100 ms
#: ========  ======  ===========  ========  ===========
#:
#: "HiGHS warm" re-solves a nearby task (noise +0.01..0.05) from the previous optimal basis.
AUTO_SIMPLEX_MAX_PAIRS = 600

#: What the default (``warm_start=True``) rule rests on: seconds per solve (minimum over
#: rounds), a pair of nearby tasks solved in alternation (gridworld noise 0.30 / 0.31; dense
#: random ``RandomCMDPFamily(500, 5, gamma=0.95)`` at (0.30, 0.30) / (0.31, 0.31)), one run
#: of ``bench/bench_peers.py`` on a 2-core machine shared with other work (the cold HiGHS
#: column by a separate script). "first" is the first solve of a shape (cvxpy compilation
#: included for Clarabel; HiGHS from the crash basis), "re-solve" the later ones.
DEFAULT_SOLVER_TIMES = {
    #  task                (HiGHS cold first, HiGHS crash first, HiGHS warm re-solve,
    #                       Clarabel first, Clarabel re-solve)
    "gridworld 7x7":       (0.035, 0.0015, 0.00055, 0.0096, 0.0035),
    "gridworld 50x50":     (6.1, 0.095, 0.057, 0.37, 0.32),
    "dense random S=500":  (65.0, 0.78, 0.47, 12.3, 10.7),
}
AUTO_SIMPLEX_MAX_PAIRS = 600

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

_SOLVERS = ("HIGHS", "CLARABEL")
_BACKENDS = ("auto", "highspy", "cvxpy")
_OBJECTIVES = ("reward", "cost")
_CACHE_SIZE = 8


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

def _pattern_key(M: CMDP) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(M.succ_ptr).tobytes())
    h.update(np.ascontiguousarray(M.succ_next).tobytes())
    return (M.n_states, M.n_actions, M.n_constraints, M.nnz, h.hexdigest())


class _Pattern:
    """Shape and transition support of a family of tasks (what a compiled LP depends on)."""

    def __init__(self, M: CMDP):
        self.S, self.A, self.K = M.n_states, M.n_actions, M.n_constraints
        self.n = self.S * self.A
        self.ptr = np.array(M.succ_ptr)
        self.nxt = np.array(M.succ_next)
        self.key = _pattern_key(M)

    def matches(self, M: CMDP) -> bool:
        return (
            (M.n_states, M.n_actions, M.n_constraints) == (self.S, self.A, self.K)
            and np.array_equal(M.succ_ptr, self.ptr)
            and np.array_equal(M.succ_next, self.nxt)
        )


def _objective_vector(M: CMDP, objective: str, k: int | None) -> np.ndarray:
    """w such that the LP maximises w . mu (flattened pair index i = s*A + a)."""
    scale = 1.0 / (1.0 - M.gamma)
    if objective == "reward":
        return M.r.ravel() * scale
    return -M.c[:, :, k].ravel() * scale


def _cost_matrix(M: CMDP) -> np.ndarray:
    """C[k, i] = c[s, a, k] / (1 - gamma), shape (K, S*A)."""
    return np.ascontiguousarray(M.c.reshape(-1, M.n_constraints).T) / (1.0 - M.gamma)


# ---------------------------------------------------------------------------
# back end 1: cvxpy with Parameters (compiled once per pattern)
# ---------------------------------------------------------------------------

class OccupancyLP:
    """The occupancy LP compiled once in cvxpy (DPP) for one shape and transition support.

    Parameters
    ----------
    M : CMDP
        Any task of the family; only its shape ``(S, A, K)`` and the support of its
        successor rows are used.

    Notes
    -----
    Variables: ``mu`` (S*A,), non-negative. Parameters: ``gP`` (S, S*A), sparse with the
    pattern of ``P^T`` (values ``gamma P[s, a, s']`` at ``[s', s*A + a]``); ``w`` (S*A,)
    the objective; ``C`` (K, S*A) the scaled costs; ``b`` (K,) the limits; ``rhs`` (S,)
    ``(1 - gamma) nu0``. Problem: maximise ``w @ mu`` s.t. ``E @ mu - gP @ mu == rhs``,
    ``C @ mu <= b``, where ``E`` (constant) sums the actions of each state.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.1)
    >>> lp = OccupancyLP(M)
    >>> round(lp.solve(M, solver="CLARABEL").reward, 4)
    59.7369
    """

    backend = "cvxpy"

    def __init__(self, M: CMDP):
        import cvxpy as cp

        self.pattern = _Pattern(M)
        S, A, K, n = self.pattern.S, self.pattern.A, self.pattern.K, self.pattern.n
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(M.succ_ptr))   # pair i
        cols = np.asarray(M.succ_next, dtype=np.int64)                        # next state s'
        # canonical (row-major) order of the entries of gP[s', i]
        self._perm = np.lexsort((rows, cols))
        self._coords = (cols[self._perm], rows[self._perm])
        self._shape = (S, n)
        E = sp.csr_array(
            (np.ones(n), (np.repeat(np.arange(S), A), np.arange(n))), shape=(S, n)
        )
        self.mu = cp.Variable(n, nonneg=True, name="mu")
        self.gP = cp.Parameter((S, n), sparsity=self._coords, name="gammaPT")
        self.w = cp.Parameter(n, name="w")
        self.C = cp.Parameter((K, n), name="C")
        self.b = cp.Parameter(K, name="b")
        self.rhs = cp.Parameter(S, name="rhs")
        self.flow = E @ self.mu - self.gP @ self.mu == self.rhs
        self.limits = self.C @ self.mu <= self.b
        self.problem = cp.Problem(cp.Maximize(self.w @ self.mu), [self.flow, self.limits])
        if not self.problem.is_dpp():  # pragma: no cover - a construction invariant
            raise RuntimeError("occupancy LP is not DPP")
        self._solved_once: set[str] = set()

    def _set(self, M, w, b):
        g = M.gamma
        vals = g * np.asarray(M.succ_prob)[self._perm]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*sparse CVXPY expression.*")
            self.gP.value_sparse = sp.coo_array((vals, self._coords), shape=self._shape)
        self.w.value = w
        self.C.value = _cost_matrix(M)
        self.b.value = b
        self.rhs.value = (1.0 - g) * np.asarray(M.nu0)

    def _run(self, solver: str, warm_start: bool):
        import cvxpy as cp

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*sparse CVXPY expression.*")
            try:
                self.problem.solve(solver=solver, warm_start=warm_start)
            except cp.error.SolverError:
                if not warm_start:
                    return "solver_error"
                # cvxpy's HiGHS warm start occasionally fails: retry cold once
                try:
                    self.problem.solve(solver=solver, warm_start=False)
                except cp.error.SolverError:
                    return "solver_error"
        return self.problem.status

    def solve_raw(self, M: CMDP, w: np.ndarray, b: np.ndarray, *, solver: str = "CLARABEL",
                  warm_start: bool = True):
        """Solve with objective vector ``w`` (S*A,) and limits ``b`` (K,).

        Returns ``(status, mu (S*A,) or None, duals (K,) or None, start)``;
        ``status`` is ``"optimal"``, ``"infeasible"`` or the solver's failure status and
        ``start`` is ``"warm"`` (cvxpy's warm start from the previous solution) or ``"cold"``.
        """
        if not self.pattern.matches(M):
            raise ValueError(
                "M does not have the shape and transition support this LP was built for")
        self._set(M, w, b)
        warm = bool(warm_start) and solver in self._solved_once
        start = "warm" if warm else "cold"
        status = self._run(solver, warm)
        if status == "optimal":
            self._solved_once.add(solver)
            return status, np.asarray(self.mu.value, dtype=np.float64), \
                np.asarray(self.limits.dual_value, dtype=np.float64).reshape(-1), start
        if status in ("infeasible", "infeasible_inaccurate"):
            return "infeasible", None, None, start
        return str(status), None, None, start

    def solve(self, M: CMDP, *, margin=0.0, solver: str = "CLARABEL", warm_start: bool = True,
              objective: str = "reward", k: int = 0, reuse_basis: bool = False) -> LPResult:
        """Solve for task ``M`` (same shape and support); see :func:`solve_lp`."""
        _check_cmdp(M)
        return _solve_with(self, M, _check_margin(margin, M.n_constraints), _check_solver(solver),
                           bool(warm_start), objective, k, cache_hit=True,
                           reuse_basis=_check_flag("reuse_basis", reuse_basis))


# ---------------------------------------------------------------------------
# back end 2: a persistent HiGHS model fed straight from the successor rows
# ---------------------------------------------------------------------------

def quiet_highs(highspy):
    """A ``highspy.Highs()`` whose copyright banner does not reach stdout.

    HiGHS prints the banner from C++ when the object is built, before any option can be
    set, so the process's stdout file descriptor is pointed at /dev/null meanwhile.
    """
    import os
    import sys

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced (e.g. captured)
        return highspy.Highs()
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            return highspy.Highs()
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class HighsOccupancyLP:
    """The occupancy LP as a persistent HiGHS model for one shape and transition support.

    The column of pair ``i = s*A + a`` holds ``1 - gamma P[i, s]`` at row ``s``,
    ``-gamma P[i, s']`` at the other successor rows ``s'`` and ``c[s, a, k] / (1-gamma)``
    at the cost rows ``S + k``. Its CSC structure is computed once per pattern; each solve
    fills the values with one ``bincount`` and re-solves from the previous optimal basis.

    Parameters
    ----------
    M : CMDP
        Any task of the family (shape and successor support are used).

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> round(HighsOccupancyLP(M).solve(M).reward, 4)
    51.9628
    """

    backend = "highspy"

    def __init__(self, M: CMDP):
        import highspy

        self._hp = highspy
        self.pattern = _Pattern(M)
        S, A, K, n = self.pattern.S, self.pattern.A, self.pattern.K, self.pattern.n
        cnt = np.diff(M.succ_ptr)
        col = np.concatenate([
            np.arange(n, dtype=np.int64),                  # diagonal (state of the pair)
            np.repeat(np.arange(n, dtype=np.int64), cnt),  # successors
            np.repeat(np.arange(n, dtype=np.int64), K),    # cost rows
        ])
        row = np.concatenate([
            np.repeat(np.arange(S, dtype=np.int64), A),
            np.asarray(M.succ_next, dtype=np.int64),
            np.tile(S + np.arange(K, dtype=np.int64), n),
        ])
        lin = col * (S + K) + row
        uniq, self._inv = np.unique(lin, return_inverse=True)
        self._nnz = uniq.size
        self._index = (uniq % (S + K)).astype(np.int32)
        self._start = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(uniq // (S + K), minlength=n), out=self._start[1:])
        self._h = quiet_highs(highspy)
        self._h.setOptionValue("output_flag", False)
        self._basis: dict = {}

    def crash_basis(self, sigma: np.ndarray):
        """The simplex basis of the deterministic policy ``sigma`` (S,) of action indices.

        Basic: the column of pair ``(s, sigma[s])`` for every state (the flow rows then
        form ``I - gamma P_sigma^T``, which is non-singular) and the slacks of the K cost
        rows; every other column sits at its lower bound 0. When ``sigma`` is optimal for
        the unconstrained objective this basis is dual feasible (its reduced costs are
        ``q(s, a) - v(s) <= 0``), so the dual simplex only has to repair the cost rows.
        """
        hp = self._hp
        S, A, K = self.pattern.S, self.pattern.A, self.pattern.K
        sigma = np.asarray(sigma, dtype=np.int64)
        if sigma.shape != (S,) or sigma.min() < 0 or sigma.max() >= A:
            raise ValueError(f"sigma must hold S = {S} action indices in [0, {A}); got {sigma!r}")
        basis = hp.HighsBasis()
        cols = [hp.HighsBasisStatus.kLower] * (S * A)
        for i in np.arange(S) * A + sigma:
            cols[int(i)] = hp.HighsBasisStatus.kBasic
        basis.col_status = cols
        basis.row_status = [hp.HighsBasisStatus.kLower] * S + [hp.HighsBasisStatus.kBasic] * K
        basis.valid = True
        return basis

    def solve_raw(self, M: CMDP, w: np.ndarray, b: np.ndarray, *, solver: str = "HIGHS",
                  warm_start: bool = True, basis_key="reward", crash_policy=None,
                  reuse_basis: bool = False):
        """Solve maximise ``w . mu`` with limits ``b`` (K,) (``inf`` = no limit).

        ``crash_policy``: a callable returning action indices (S,); with ``warm_start``
        the solve starts from :meth:`crash_basis` of that policy, a function of this task
        only, so the answer does not depend on what was solved before. With
        ``reuse_basis`` it starts from the previous optimal basis under ``basis_key``
        instead, when there is one (faster; history-dependent on degenerate LPs). Returns
        ``(status, mu, duals, start)`` like :meth:`OccupancyLP.solve_raw`, ``start`` being
        ``"warm"`` (previous optimal basis), ``"crash"`` or ``"cold"``.
        """
        hp = self._hp
        if not self.pattern.matches(M):
            raise ValueError(
                "M does not have the shape and transition support this LP was built for")
        S, K, n = self.pattern.S, self.pattern.K, self.pattern.n
        g = M.gamma
        raw = np.concatenate([
            np.ones(n), -g * np.asarray(M.succ_prob), _cost_matrix(M).T.ravel(),
        ])
        values = np.bincount(self._inv, weights=raw, minlength=self._nnz)
        lp = hp.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = S + K
        lp.col_cost_ = -np.asarray(w, dtype=np.float64)
        lp.col_lower_ = np.zeros(n)
        lp.col_upper_ = np.full(n, hp.kHighsInf)
        rhs = (1.0 - g) * np.asarray(M.nu0)
        up = np.where(np.isfinite(b), b, hp.kHighsInf)
        lp.row_lower_ = np.concatenate([rhs, np.full(K, -hp.kHighsInf)])
        lp.row_upper_ = np.concatenate([rhs, up])
        lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
        lp.a_matrix_.start_ = self._start
        lp.a_matrix_.index_ = self._index
        lp.a_matrix_.value_ = values
        basis = self._basis.get(basis_key) if warm_start and reuse_basis else None
        start = "cold" if basis is None else "warm"
        if basis is None and warm_start and crash_policy is not None:
            basis, start = self.crash_basis(crash_policy()), "crash"
        status = self._run(lp, basis)
        if basis is not None and status not in ("kOptimal", "kInfeasible"):
            status = self._run(lp, None)   # retry cold
            start = "cold"
        if status == "kOptimal":
            sol = self._h.getSolution()
            self._basis[basis_key] = self._h.getBasis()
            mu = np.asarray(sol.col_value, dtype=np.float64)
            duals = -np.asarray(sol.row_dual, dtype=np.float64)[S:]
            return "optimal", mu, duals, start
        if status in ("kInfeasible", "kUnboundedOrInfeasible"):
            # the flow polytope is bounded (mu sums to 1), so "or unbounded" is infeasible
            return "infeasible", None, None, start
        return status, None, None, start

    def _run(self, lp, basis) -> str:
        h = self._h
        h.clearSolver()
        h.passModel(lp)
        if basis is not None:
            h.setBasis(basis)
        h.run()
        return h.getModelStatus().name

    def solve(self, M: CMDP, *, margin=0.0, warm_start: bool = True, objective: str = "reward",
              k: int = 0, reuse_basis: bool = False) -> LPResult:
        """Solve for task ``M`` (same shape and support); see :func:`solve_lp`."""
        _check_cmdp(M)
        return _solve_with(self, M, _check_margin(margin, M.n_constraints), "HIGHS",
                           bool(warm_start), objective, k, cache_hit=True,
                           reuse_basis=_check_flag("reuse_basis", reuse_basis))


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------

_CACHE: "OrderedDict[tuple, OccupancyLP | HighsOccupancyLP]" = OrderedDict()


def clear_lp_cache() -> None:
    """Drop every compiled LP held by :func:`solve_lp`."""
    _CACHE.clear()


def _get_lp(M: CMDP, backend: str):
    key = (backend,) + _pattern_key(M)
    lp = _CACHE.get(key)
    if lp is not None and lp.pattern.matches(M):
        _CACHE.move_to_end(key)
        return lp, True
    lp = OccupancyLP(M) if backend == "cvxpy" else HighsOccupancyLP(M)
    _CACHE[key] = lp
    _CACHE.move_to_end(key)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return lp, False


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

def _check_cmdp(M) -> None:
    if not isinstance(M, CMDP):
        raise TypeError(f"M must be a safemeta_fast.CMDP; got {type(M).__name__}")


def _check_margin(margin, K: int) -> np.ndarray:
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


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def _check_solver(solver) -> str:
    if not isinstance(solver, str):
        raise TypeError(f"solver must be None or one of {_SOLVERS}; got {type(solver).__name__}")
    name = solver.upper()
    if name not in _SOLVERS:
        raise ValueError(
            f"solver is {solver!r}; expected one of {_SOLVERS} (case-insensitive) or None")
    return name


def _check_objective(objective, k, K: int):
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective is {objective!r}; expected one of {_OBJECTIVES}")
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

def _extract_policy(mu_sa: np.ndarray) -> np.ndarray:
    S, A = mu_sa.shape
    tot = mu_sa.sum(axis=1)
    pi = np.full((S, A), 1.0 / A)
    seen = tot > UNREACHED_TOL
    pi[seen] = mu_sa[seen] / tot[seen, None]
    return pi


def _solve_with(lp, M, margin_arr, solver, warm_start, objective, k, cache_hit,
                reuse_basis=False) -> LPResult:
    k = _check_objective(objective, k, M.n_constraints)
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    C = _cost_matrix(M)
    w = _objective_vector(M, objective, k)
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
            crash_policy=lambda: _unconstrained_policy(M, objective, k),
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
            _solve_with(lp, M, margin_arr, solver, warm_start, "cost", j, cache_hit,
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
            f"try another solver (solver='HIGHS' or 'CLARABEL'){_scale_note(M)}",
            status=str(status),
        )
    mu_sa = np.maximum(mu, 0.0).reshape(S, A)
    policy = _extract_policy(mu_sa)
    reward, cost = _verified_values(M, policy, float(M.r.ravel() @ mu_sa.ravel()) /
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


def _scale_note(M: CMDP) -> str:
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


def _verified_values(M: CMDP, policy, reward_lp: float, cost_lp, solver, backend):
    """Exact values of the returned policy, checked against what the LP reported.

    ``evaluation.evaluate`` solves ``(I - gamma P_pi) v = x_pi`` for the extracted policy;
    when the LP's own ``<mu, x>/(1 - gamma)`` differs by more than
    ``VERIFY_RTOL * (|exact| + max |x|)`` (per value) the LP answer is not the policy's,
    and OracleError names both. Otherwise the exact values are returned.
    """
    from .evaluation import evaluate

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
            f"tolerance {tol[j]:.3g}); the LP answer cannot be trusted{_scale_note(M)}",
            status="value_mismatch",
        )
    return float(exact[0]), exact[1:].copy()


def _unconstrained_policy(M: CMDP, objective: str, k: int | None) -> np.ndarray:
    """Action indices (S,) of the optimal policy of the LP's objective without cost rows."""
    from .planning import solve_mdp

    if objective == "reward":
        return np.argmax(solve_mdp(M).policy, axis=1)
    return np.argmax(solve_mdp(M, objective="cost", constraint=k).policy, axis=1)


def _default_solver(M: CMDP, warm_start: bool) -> str:
    """``solver=None``: HiGHS whenever it may start from a basis (a previous optimal one,
    else the crash basis of the unconstrained optimum); for a cold start the size rule
    (HiGHS up to ``AUTO_SIMPLEX_MAX_PAIRS`` pairs, Clarabel above). See ``DEFAULT_SOLVER_TIMES``."""
    if warm_start or M.n_states * M.n_actions <= AUTO_SIMPLEX_MAX_PAIRS:
        return "HIGHS"
    return "CLARABEL"


def solve_lp(M: CMDP, *, margin=0.0, solver: str | None = None, warm_start: bool = True,
             objective: str = "reward", k: int = 0, backend: str = "auto",
             reuse_basis: bool = False) -> LPResult:
    """Oracle O_l: the optimal constrained policy of a tabular CMDP by its occupancy LP.

    Solves ``max <mu, r>/(1-gamma)`` over occupancy measures ``mu`` (flow conservation
    ``sum_a mu(s', a) - gamma sum_{s,a} P[s, a, s'] mu(s, a) = (1-gamma) nu0(s')``, ``mu >= 0``)
    subject to ``<mu, c_k>/(1-gamma) <= cost_limit[k] - margin`` for every k, and returns
    ``pi(a|s) = mu(s, a) / sum_a mu(s, a)`` (uniform on unreached states) with its exact
    values. The problem is compiled once per shape and transition support and re-solved
    from the cache for every further task of that family.

    Parameters
    ----------
    M : CMDP
        The task (S states, A actions, K constraints).
    margin : float or array_like of shape (K,), default 0
        Shift of the limits: the LP imposes ``V_c^k <= cost_limit[k] - margin``. A positive
        margin asks for slack >= margin (a strictly feasible, "xi-feasible" policy); a
        negative margin relaxes the limits ("relaxed feasibility"). Must be finite.
    solver : {"HIGHS", "CLARABEL"} or None, default None
        None picks HiGHS (dual simplex) when ``warm_start`` is true or
        ``S * A <= AUTO_SIMPLEX_MAX_PAIRS``, Clarabel (interior point) otherwise (the
        measurements are in ``DEFAULT_SOLVER_TIMES``). Case-insensitive.
    warm_start : bool, default True
        HiGHS: start from the crash basis of this task's unconstrained optimal policy
        (``LPResult.start == "crash"``). The basis is a function of the task alone, so the
        same input gives the same policy whatever was solved before in the process. A
        solve from a basis that fails is retried cold automatically.
    reuse_basis : bool, default False
        Start instead from the previous optimal basis of the same compiled problem (HiGHS;
        ``start == "warm"``) or the previous solution (cvxpy's ``warm_start``). About 1.5x
        faster per re-solve, but on LPs with several optimal vertices the answer then
        depends on the solve history (issue 10 measured 5 distinct rewards over 6
        histories on one task).
    objective : {"reward", "cost"}, default "reward"
        ``"cost"`` instead minimises ``<mu, c_k>/(1-gamma)`` over the flow polytope with no
        cost constraint (the smallest achievable cost of constraint ``k``, and a policy
        that achieves it); ``margin`` is then ignored and ``duals`` are zero.
    k : int, default 0
        The constraint minimised when ``objective="cost"``.
    backend : {"auto", "highspy", "cvxpy"}, default "auto"
        "auto" uses the direct HiGHS model for HiGHS and cvxpy for Clarabel; "cvxpy" also
        runs HiGHS through the compiled cvxpy problem. "highspy" requires HiGHS.

    Returns
    -------
    LPResult
        Policy (S, A), occupancy (S, A), reward, cost (K,), duals (K,), status, solver,
        solve_time and bookkeeping.

    Raises
    ------
    InfeasibleError
        When no policy meets the (margin-shifted) limits. The message gives the smallest
        achievable cost of each constraint; ``min_cost`` (K,) and ``cost_limit`` (K,) carry
        the numbers.
    OracleError
        When the solver returns any other non-optimal status (``status`` attribute), or
        when the values it reports for its policy disagree with that policy's exact
        evaluation (``status == "value_mismatch"``); the message names an extreme scale
        (gamma within 1e-5 of 1, rewards or costs above 1e10) when there is one.
    TypeError, ValueError
        For a bad argument (not a CMDP, non-finite margin, unknown solver, ...).

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> res = solve_lp(gridworld(0.1))
    >>> round(res.reward, 6), bool(res.cost[0] <= 1.5 + 1e-9)
    (59.736929, True)
    >>> round(float(solve_lp(gridworld(0.1), objective="cost").cost[0]), 4)
    0.1655
    """
    _check_cmdp(M)
    margin_arr = _check_margin(margin, M.n_constraints)
    if not isinstance(warm_start, (bool, np.bool_)):
        raise TypeError(f"warm_start must be a bool; got {type(warm_start).__name__}")
    name = _default_solver(M, bool(warm_start)) if solver is None else _check_solver(solver)
    _check_objective(objective, k, M.n_constraints)
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend is {backend!r}; expected one of {_BACKENDS}")
    if backend == "auto":
        backend = "highspy" if name == "HIGHS" else "cvxpy"
    elif backend == "highspy" and name != "HIGHS":
        raise ValueError(f"backend 'highspy' runs only solver 'HIGHS'; got solver {name!r}")
    reuse_basis = _check_flag("reuse_basis", reuse_basis)
    lp, hit = _get_lp(M, backend)
    return _solve_with(lp, M, margin_arr, name, bool(warm_start), objective, k, cache_hit=hit,
                       reuse_basis=reuse_basis)


def min_cost(M: CMDP, k: int | None = None, *, solver: str | None = None):
    """Smallest achievable discounted cost ``min_pi V_c^k(pi)`` of a task.

    Solves ``min <mu, c_k>/(1-gamma)`` over the flow polytope (no cost constraint).

    Parameters
    ----------
    M : CMDP
    k : int or None, default None
        One constraint index, or None for all of them.
    solver : {"HIGHS", "CLARABEL"} or None
        As in :func:`solve_lp`.

    Returns
    -------
    float or numpy.ndarray of shape (K,)
        A float when ``k`` is given, else the (K,) array of minima.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> round(min_cost(gridworld(0.5), 0), 4)
    2.0042
    """
    _check_cmdp(M)
    if k is not None:
        return float(solve_lp(M, solver=solver, objective="cost", k=k).cost[k])
    return np.array([
        solve_lp(M, solver=solver, objective="cost", k=j).cost[j] for j in range(M.n_constraints)
    ])
