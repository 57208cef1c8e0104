"""Back end ``"cvxpy"``: the occupancy LP as a DPP problem with Parameters, compiled once per
shape and transition support (Clarabel, or HiGHS through cvxpy)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from ..cmdp import CMDP
from ..validation import check_bool, check_cmdp
from .problem import LPResult, Pattern, check_margin, check_solver, cost_matrix, solve_with

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

        self.pattern = Pattern(M)
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
        self.C.value = cost_matrix(M)
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
        check_cmdp(M)
        return solve_with(self, M, check_margin(margin, M.n_constraints), check_solver(solver),
                           bool(warm_start), objective, k, cache_hit=True,
                           reuse_basis=check_bool("reuse_basis", reuse_basis))
