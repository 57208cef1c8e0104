"""Covering subroutine of the training phase (SPEC section 5, steps 1-4).

1. N = ceil(ln(delta)^2 / delta^2) tasks (``n_rule="paper"``), or the reference code's
   int(ln(1/delta) / delta^2) (``n_rule="authors"``).
2. Sample N tasks; closeness O_c(M_i, M_j) = [d(i, j) <= eps] with the model distance
   (SPEC section 3) or the family's parameter closeness.
3. Greedy cover: repeatedly choose the index covering the most uncovered tasks (ties ->
   smallest index) until at most 3 delta N tasks are uncovered. U = chosen tasks.
4. Stop when sqrt(|U| ln(2N/delta) / (N - |U|)) <= delta (N - |U| <= 0 counts as a
   failed test); otherwise grow N: "paper" doubles N and samples all tasks afresh,
   "authors" appends int(ln(1/delta)/delta^2) new tasks to the previous ones.

No N x N matrix and no neighbour list is formed. Tasks are sorted by their distance to
each of m pivot tasks; every neighbour of task j lies in each of its m windows (the
tasks whose distance to that pivot is within eps of j's). The cover kernel
(:mod:`safemeta_fast.kernels.cover`) is a lazy greedy over upper bounds on each
candidate's count of uncovered neighbours: the smallest count of still-uncovered tasks
in its windows (Fenwick-tree range counts, O(m log N), shrinking as picks cover tasks),
refined to the exact count (distances to the uncovered tasks of that window, the other
pivots' bounds as a pre-filter, early exit above eps) only for candidates that reach the
top. An exact count is carried to later picks without new distances while every pick
made since is provably farther than 2 eps (pivot lower bound). The picks equal the
greedy on the full closeness matrix (ties -> smallest index). Nothing is assumed about
the family beyond the metric. On the paper's gridworld the windows are the exact
neighbourhoods, so a round needs about one exact count per pick; on families of higher
intrinsic dimension the first pick of a round computes most tasks' counts (windows are
looser there).

The tasks of an affine family (:meth:`~safemeta_fast.tasks.TaskFamily.affine_model_on`)
are never built: their exact model distances come from reduced coordinates of their
parameters (:func:`~safemeta_fast.distance.stack_affine`); other families build and
stack each task (:func:`~safemeta_fast.distance.stack_tasks`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .distance import (
    PIVOT_TOL,
    Neighbours,
    all_pivot_windows,
    select_pivots,
    stack_family,
)
from .kernels.cover import greedy_csr, greedy_dense, greedy_lazy
from .seeding import resolve_seed
from .tasks import TaskFamily
from .validation import check_int, check_real, readonly

__all__ = [
    "GreedyCover",
    "CoverRound",
    "CoverResult",
    "greedy_cover",
    "initial_n",
    "stopping_value",
    "build_cover",
]


@dataclass(frozen=True, eq=False)
class GreedyCover:
    """Result of one greedy cover.

    Attributes
    ----------
    chosen : ndarray of int64, shape (n_U,)
        Chosen indices, in the order they were picked.
    covered : ndarray of bool, shape (N,)
        Tasks covered by the chosen ones.
    n_covered : int
    complete : bool
        False when the stop rule was not reached because no candidate covered any
        remaining task (only possible for a non-reflexive closeness).
    """

    chosen: np.ndarray
    covered: np.ndarray
    n_covered: int
    complete: bool


def greedy_cover(closeness, *, max_uncovered: float = 0.0) -> GreedyCover:
    """Greedy cover (SPEC section 5 step 3) on a closeness matrix or neighbour lists.

    Parameters
    ----------
    closeness : ndarray of bool, shape (N, N), or Neighbours
        ``closeness[j, i]`` True when task j covers task i (for the symmetric O_c the
        orientation does not matter). Neighbour lists (:func:`neighbours_within`) are
        symmetric and list each task as its own neighbour.
    max_uncovered : float, default 0
        Stop as soon as the number of uncovered tasks is <= this (3 delta N in the paper).

    Returns
    -------
    GreedyCover

    Examples
    --------
    >>> import numpy as np
    >>> A = np.eye(4, dtype=bool); A[0, 1] = A[1, 0] = A[1, 2] = A[2, 1] = True
    >>> greedy_cover(A).chosen.tolist()
    [1, 3]
    """
    m = float(max_uncovered)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"max_uncovered is {max_uncovered!r}; it must be finite and >= 0")
    if isinstance(closeness, Neighbours):
        n = closeness.n_tasks
        chosen = np.empty(n, dtype=np.int64)
        covered = np.empty(n, dtype=np.bool_)
        k, ncov, status = greedy_csr(n, closeness.ptr, closeness.idx, closeness.ptr, closeness.idx,
                                     m, chosen, covered)
    else:
        A = np.asarray(closeness)
        if A.dtype != np.bool_:
            raise TypeError(
                f"closeness must be a boolean matrix or Neighbours; got dtype {A.dtype}")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"closeness must have shape (N, N); got {A.shape}")
        n = A.shape[0]
        chosen = np.empty(n, dtype=np.int64)
        covered = np.empty(n, dtype=np.bool_)
        k, ncov, status = greedy_dense(np.ascontiguousarray(A), np.ascontiguousarray(A.T), m,
                                       chosen, covered)
    return GreedyCover(chosen=readonly(chosen[:k].copy()), covered=readonly(covered),
                       n_covered=int(ncov), complete=status == 0)


def initial_n(delta: float, n_rule: str = "paper") -> int:
    """Initial number of tasks: ceil(ln(delta)^2/delta^2) ("paper") or int(ln(1/delta)/delta^2)
    ("authors").

    Examples
    --------
    >>> initial_n(0.05), initial_n(0.05, "authors")
    (3590, 1198)
    """
    d = check_real("delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)
    if n_rule == "paper":
        return int(math.ceil(math.log(d) ** 2 / d ** 2))
    if n_rule == "authors":
        return max(1, int(math.log(1.0 / d) / d ** 2))
    raise ValueError(f"n_rule is {n_rule!r}; expected 'paper' or 'authors'")


def stopping_value(n_u: int, n: int, delta: float) -> float:
    """sqrt(|U| ln(2N/delta) / (N - |U|)); +inf when N - |U| <= 0 (the test then fails).

    Examples
    --------
    >>> round(stopping_value(10, 114880, 0.05), 4)
    0.0365
    """
    if n - n_u <= 0:
        return math.inf
    return math.sqrt(n_u * math.log(2.0 * n / delta) / (n - n_u))


@dataclass(frozen=True)
class CoverRound:
    """Record of one round of the covering loop.

    ``n_exact_distances`` counts every exact model distance computed (the N (m + 1)
    pivot distances included; 0 for the parameter closeness), ``n_evaluations`` the
    exact neighbour counts of candidates.
    """

    n_tasks: int
    n_chosen: int
    n_uncovered: int
    test_value: float
    passed: bool
    n_exact_distances: int
    n_evaluations: int
    seconds: float


@dataclass(frozen=True, eq=False)
class CoverResult:
    """Outcome of :func:`build_cover`.

    Attributes
    ----------
    chosen_params : ndarray, shape (n_U, d)
        Parameters of the cover tasks U (in pick order).
    chosen_indices : ndarray of int64, shape (n_U,)
        Their indices into ``params``.
    params : ndarray, shape (N, d)
        All tasks sampled in the final round.
    covered : ndarray of bool, shape (N,)
        Tasks of the final round within eps of a chosen task.
    rounds : tuple of CoverRound
    seed : int
        The seed actually used.
    eps, delta : float
    distance, n_rule : str
    converged : bool
        Whether the stopping test passed (False: max_rounds reached).
    """

    chosen_params: np.ndarray
    chosen_indices: np.ndarray
    params: np.ndarray
    covered: np.ndarray
    rounds: tuple
    seed: int
    eps: float
    delta: float
    distance: str
    n_rule: str
    converged: bool

    @property
    def n_cover(self) -> int:
        return int(self.chosen_indices.size)


def _cover_round(family: TaskFamily, params: np.ndarray, eps: float, max_unc: float,
                 distance: str, n_pivots: int, batch_size: int = 8, par_min: int = 2048):
    N = params.shape[0]
    chosen = np.empty(N, dtype=np.int64)
    covered = np.empty(N, dtype=np.bool_)
    dummy2 = np.zeros((1, 1))
    if distance == "parameter":
        scale = np.ascontiguousarray(family.parameter_scale, dtype=np.float64)
        theta = np.ascontiguousarray(params, dtype=np.float64)
        # every scaled parameter is a 1-Lipschitz key of the closeness: one window each
        order, pos, lo, hi = all_pivot_windows(theta * scale[None, :], eps)
        st = stack_family(family, params[:1])  # only to satisfy the kernel signature
        n_exact0 = 0
        use_params = True
        Dp = dummy2
    else:
        st = stack_family(family, params)
        _, Dp, n_exact0 = select_pivots(st, n_pivots)
        order, pos, lo, hi = all_pivot_windows(Dp, eps)
        theta = dummy2
        scale = np.zeros(1)
        use_params = False
    # windows are [lo[p, a], hi[p, a]) in the positions sorted by pivot key p
    k, ncov, status, n_exact, n_eval = greedy_lazy(
        order, pos, lo, hi, eps, PIVOT_TOL, use_params, theta, scale, Dp, *st.kernel_args,
        max_unc, chosen, covered, batch_size, par_min)
    return chosen[:k].copy(), covered, int(ncov), status, int(n_exact + n_exact0), int(n_eval)


def build_cover(family: TaskFamily, *, eps: float, delta: float, distance: str = "model",
                n_rule: str = "paper", seed=None, progress: bool = True, max_rounds: int = 8,
                n_pivots: int = 8) -> CoverResult:
    """Sample tasks and grow N until the greedy cover passes the paper's test (SPEC 5, steps 1-4).

    Parameters
    ----------
    family : TaskFamily
    eps : float
        Closeness radius (model distance, or parameter distance).
    delta : float in (0, 1)
    distance : {"model", "parameter"}
        "model": the exact distance of SPEC section 3 (with pivot pruning), from the
        parameters for an affine family, else on the built CMDPs;
        "parameter": the family's parameter closeness (e.g. |noise_i - noise_j| for the
        gridworld; the model distance there is 0.75 times that).
    n_rule : {"paper", "authors"}
        "paper": N0 = ceil(ln(delta)^2/delta^2), N doubles with fresh samples each round.
        "authors": N0 = int(ln(1/delta)/delta^2) and the same number of new tasks is
        appended to the previous ones each round (the reference code).
    seed : int, Generator or None
    progress : bool
        Show a tqdm bar over rounds.
    max_rounds : int
        Give up (with a warning, ``converged=False``) after this many rounds.
    n_pivots : int, default 8
        Pivot tasks for the model distance (farthest-first). Each costs N exact
        distances once per round and tightens the bounds: every pivot gives a window
        (tasks whose pivot distance is within eps) and every pivot pair a box; more
        pivots mean fewer exact distances on families of higher intrinsic dimension.

    Returns
    -------
    CoverResult

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily
    >>> res = build_cover(GridworldFamily(), eps=0.02, delta=0.2, distance="parameter",
    ...                   seed=0, progress=False)
    >>> res.converged
    True
    """
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily; got {type(family).__name__}")
    e = check_real("eps", eps, lo=0.0)
    d = check_real("delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)
    if distance not in ("model", "parameter"):
        raise ValueError(f"distance is {distance!r}; expected 'model' or 'parameter'")
    if distance == "parameter":
        if family.parameter_scale is None:
            raise ValueError(
                f"{type(family).__name__} has no parameter closeness; use distance='model'")
        sc = np.asarray(family.parameter_scale, dtype=np.float64)
        if sc.shape != (family.dim,) or not np.all(np.isfinite(sc)) or (sc <= 0).any():
            raise ValueError(f"{type(family).__name__}.parameter_scale must be {family.dim} "
                             f"finite positive numbers; got {sc}")
    max_rounds = check_int("max_rounds", max_rounds, 1)
    if isinstance(n_pivots, bool) or not isinstance(n_pivots, (int, np.integer)) or n_pivots < 1:
        raise ValueError(f"n_pivots is {n_pivots!r}; expected an integer >= 1")
    n0 = initial_n(d, n_rule)
    seed_used = resolve_seed(seed)
    rng = np.random.default_rng(seed_used)
    rounds = []
    params = np.empty((0, family.dim))
    N = n0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_rounds, desc="cover rounds", unit="round")
    try:
        for rnd in range(max_rounds):
            t0 = time.perf_counter()
            round_seed = int(rng.integers(0, 2**63 - 1))
            if n_rule == "paper":
                N = n0 * 2 ** rnd
                params = family.check_params(family.sample(N, seed=round_seed))
            else:
                new = family.check_params(family.sample(n0, seed=round_seed))
                params = np.concatenate([params, new]) if params.size else new
                N = params.shape[0]
            max_unc = 3.0 * d * N
            chosen, covered, ncov, status, n_exact, n_eval = _cover_round(
                family, params, e, max_unc, distance, n_pivots)
            n_u = chosen.size
            val = stopping_value(n_u, N, d)
            passed = val <= d
            rounds.append(CoverRound(n_tasks=N, n_chosen=n_u, n_uncovered=N - ncov, test_value=val,
                                     passed=passed, n_exact_distances=n_exact, n_evaluations=n_eval,
                                     seconds=time.perf_counter() - t0))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(N=N, U=n_u, test=f"{val:.4f}")
            if passed:
                break
    finally:
        if bar is not None:
            bar.close()
    converged = rounds[-1].passed
    if not converged:
        warnings.warn(
            f"build_cover: the stopping test did not pass within max_rounds={max_rounds} "
            f"(last N={rounds[-1].n_tasks}, |U|={rounds[-1].n_chosen}, "
            f"value {rounds[-1].test_value:.4g} > delta={d}); returning the last round",
            RuntimeWarning, stacklevel=2)
    return CoverResult(
        chosen_params=readonly(params[chosen]), chosen_indices=readonly(chosen),
        params=readonly(params), covered=readonly(covered), rounds=tuple(rounds),
        seed=seed_used, eps=e, delta=d, distance=distance, n_rule=n_rule, converged=converged)
