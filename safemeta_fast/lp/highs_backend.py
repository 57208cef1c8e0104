"""Back end ``"highspy"``: a persistent HiGHS model per shape and transition support, filled
straight from the successor rows, re-solved from a warm or crash basis."""

from __future__ import annotations

import numpy as np

from ..cmdp import CMDP
from ..validation import check_bool, check_cmdp
from .problem import LPResult, Pattern, check_margin, cost_matrix, solve_with

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
        self.pattern = Pattern(M)
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
            np.ones(n), -g * np.asarray(M.succ_prob), cost_matrix(M).T.ravel(),
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
        check_cmdp(M)
        return solve_with(self, M, check_margin(margin, M.n_constraints), "HIGHS",
                           bool(warm_start), objective, k, cache_hit=True,
                           reuse_basis=check_bool("reuse_basis", reuse_basis))
