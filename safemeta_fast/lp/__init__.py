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

Rooms: :mod:`.problem` (data, checks, the verified solve), :mod:`.cvxpy_backend`,
:mod:`.highs_backend`, :mod:`.oracle` (``solve_lp``, ``min_cost``, the solver rule, the cache).
"""

from .cvxpy_backend import OccupancyLP
from .highs_backend import HighsOccupancyLP, quiet_highs
from .oracle import AUTO_SIMPLEX_MAX_PAIRS, DEFAULT_SOLVER_TIMES, clear_lp_cache, min_cost, solve_lp
from .problem import UNREACHED_TOL, VERIFY_RTOL, LPResult

__all__ = [
    "LPResult",
    "OccupancyLP",
    "HighsOccupancyLP",
    "solve_lp",
    "min_cost",
    "clear_lp_cache",
    "quiet_highs",
    "AUTO_SIMPLEX_MAX_PAIRS",
    "DEFAULT_SOLVER_TIMES",
    "UNREACHED_TOL",
    "VERIFY_RTOL",
]
