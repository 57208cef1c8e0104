"""Oracle O_l: :func:`solve_lp` and :func:`min_cost`, the default solver rule and the LRU of
compiled problems."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..cmdp import CMDP
from ..validation import check_bool, check_choice, check_cmdp
from .cvxpy_backend import OccupancyLP
from .highs_backend import HighsOccupancyLP
from .problem import LPResult, check_margin, check_objective, check_solver, pattern_key, solve_with

BACKENDS = ("auto", "highspy", "cvxpy")
_CACHE_SIZE = 8

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


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------

_CACHE: "OrderedDict[tuple, OccupancyLP | HighsOccupancyLP]" = OrderedDict()


def clear_lp_cache() -> None:
    """Drop every compiled LP held by :func:`solve_lp`."""
    _CACHE.clear()


def _get_lp(M: CMDP, backend: str):
    key = (backend,) + pattern_key(M)
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
    check_cmdp(M)
    margin_arr = check_margin(margin, M.n_constraints)
    warm_start = check_bool("warm_start", warm_start)
    name = _default_solver(M, warm_start) if solver is None else check_solver(solver)
    check_objective(objective, k, M.n_constraints)
    backend = check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        backend = "highspy" if name == "HIGHS" else "cvxpy"
    elif backend == "highspy" and name != "HIGHS":
        raise ValueError(f"backend 'highspy' runs only solver 'HIGHS'; got solver {name!r}")
    reuse_basis = check_bool("reuse_basis", reuse_basis)
    lp, hit = _get_lp(M, backend)
    return solve_with(lp, M, margin_arr, name, warm_start, objective, k, cache_hit=hit,
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
    check_cmdp(M)
    if k is not None:
        return float(solve_lp(M, solver=solver, objective="cost", k=k).cost[k])
    return np.array([
        solve_lp(M, solver=solver, objective="cost", k=j).cost[j] for j in range(M.n_constraints)
    ])
