"""Distance between tasks (SPEC section 3) and exact range search with pivot pruning.

    d(M, M') = max( max|r - r'|, max|c - c'|, TV(nu0, nu0'), max_{s,a} TV(P(.|s,a), P'(.|s,a)) ),
    TV(p, q) = 0.5 * sum_s' |p(s') - q(s')|.

Tasks are stacked once (:func:`stack_tasks`) in the compact successor form: tasks whose
successor rows have the same structure share it, and only their probabilities are
stored per task, so 10^5 gridworld tasks fit in well under a gigabyte.

For the paper's gridworld the distance is exactly ``0.75 * |noise_i - noise_j|``: rewards,
costs and nu0 do not depend on the noise, and the largest row change is at an interior
cell (4 in-grid neighbours), where the intended cell moves by ``0.75 * dnoise`` and each
of the 3 others by ``dnoise / 4``. Noise closeness 0.005 (the authors' check) is model
distance 0.00375.

For an affine family (:meth:`~safemeta_fast.tasks.TaskFamily.affine_model`) every entry
of a task is ``x(theta0) + (theta - theta0) . v`` with a slope vector v, so the distance of
two tasks depends on their parameters only: with dtheta = theta_i - theta_j,

    d = max( max_v |dtheta . v| over the r and c slopes,
             0.5 sum_v |dtheta . v| over the nu0 slopes,
             max over (s, a) rows of 0.5 sum_v |dtheta . v| over the row's P slopes ).

:func:`stack_affine` stacks such tasks in reduced coordinates without building them:
one coordinate ``(theta - theta0) . v`` per slope, after dropping zero slopes, merging
slopes that differ only in sign among the r and c entries, and keeping one copy of P
rows that hold the same slopes (up to sign and order). The distance kernels then run
unchanged and give the model distance up to rounding (~1e-15; a test compares them with
the built tasks on random pairs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP
from .kernels.distance import (
    affine_coordinates,
    compact_pairs,
    distances_to,
    pair_distance_sparse,
    pairs_to_csr,
    pairwise_dense,
    pairwise_sparse,
    window_pairs,
)
from .validation import check_real, readonly

__all__ = [
    "TaskStack",
    "Neighbours",
    "stack_tasks",
    "stack_affine",
    "stack_family",
    "affine_distance_slopes",
    "distance",
    "pairwise_distance",
    "neighbours_within",
    "select_pivots",
    "PIVOT_TOL",
]

#: Slack added to pivot bounds so floating-point rounding can never change a neighbour set.
PIVOT_TOL = 1e-9


@dataclass(frozen=True, eq=False)
class TaskStack:
    """N tasks of one shape (S, A, K) stacked for the distance kernels.

    Attributes
    ----------
    n_tasks, n_states, n_actions, n_constraints : int
    r : ndarray, shape (N, S*A)
    c : ndarray, shape (N, S*A*K)
    nu0 : ndarray, shape (N, S)
    group : ndarray of int64, shape (N,)
        Structure group of each task (same successor rows within a group).
    lptr : ndarray of int64, shape (G, S*A + 1)
        Row pointers of each group (local offsets).
    goff : ndarray of int64, shape (G,)
        Start of each group's successor states in ``gnxt``.
    gnxt : ndarray of int64
        Successor states, sorted within each row.
    base : ndarray of int64, shape (N,)
        Start of each task's probabilities in ``prob``.
    prob : ndarray of float64
        Transition probabilities of every task.
    reduced : bool
        True for a stack of an affine family in reduced coordinates (:func:`stack_affine`):
        the distances are the tasks', but the columns of r, c, nu and the rows are not
        the tasks' own (the shapes above do not hold, and :meth:`dense` is unavailable).
    """

    n_tasks: int
    n_states: int
    n_actions: int
    n_constraints: int
    r: np.ndarray
    c: np.ndarray
    nu0: np.ndarray
    group: np.ndarray
    lptr: np.ndarray
    goff: np.ndarray
    gnxt: np.ndarray
    base: np.ndarray
    prob: np.ndarray
    reduced: bool = False

    @property
    def kernel_args(self) -> tuple:
        """(r, c, nu0, group, lptr, goff, gnxt, base, prob) in kernel order."""
        return (self.r, self.c, self.nu0, self.group, self.lptr, self.goff, self.gnxt,
                self.base, self.prob)

    @property
    def nbytes(self) -> int:
        """Bytes of task data held (what one pass over every task reads)."""
        return int(sum(a.nbytes for a in self.kernel_args))

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stacked dense arrays (r (N, SA), c (N, SA*K), nu0 (N, S), P (N, SA, S))."""
        if self.reduced:
            raise ValueError("this TaskStack holds the reduced coordinates of an affine family "
                             "(stack_affine), not the tasks' arrays; stack the built tasks "
                             "with stack_tasks for the dense form")
        N, S, A = self.n_tasks, self.n_states, self.n_actions
        P = np.zeros((N, S * A, S))
        counts = np.diff(self.lptr, axis=1)
        for t in range(N):
            g = self.group[t]
            nnz = self.lptr[g, -1]
            rows = np.repeat(np.arange(S * A), counts[g])
            cols = self.gnxt[self.goff[g]: self.goff[g] + nnz]
            P[t, rows, cols] = self.prob[self.base[t]: self.base[t] + nnz]
        return np.array(self.r), np.array(self.c), np.array(self.nu0), P


def stack_tasks(tasks: Iterable[CMDP] | TaskStack) -> TaskStack:
    """Stack CMDPs of one shape for the distance kernels.

    Parameters
    ----------
    tasks : iterable of CMDP (at least one) or TaskStack
        All tasks must share (S, A, K). An iterator is consumed once; the CMDPs are not
        kept (only their arrays), so a generator keeps memory low for large N.

    Returns
    -------
    TaskStack

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> st = stack_tasks([gridworld(0.2), gridworld(0.3)])
    >>> st.n_tasks, int(st.lptr.shape[0])
    (2, 1)
    """
    if isinstance(tasks, TaskStack):
        return tasks
    if isinstance(tasks, CMDP):
        raise TypeError("tasks must be a sequence of CMDP objects; got a single CMDP")
    r_l, c_l, nu_l, prob_l, group_l = [], [], [], [], []
    groups: dict[tuple, int] = {}
    lptr_l, gnxt_l = [], []
    shape = None
    n = 0
    for t, M in enumerate(tasks):
        if not isinstance(M, CMDP):
            raise TypeError(f"tasks[{t}] must be a CMDP; got {type(M).__name__}")
        sh = (M.n_states, M.n_actions, M.n_constraints)
        if shape is None:
            shape = sh
        elif sh != shape:
            raise ValueError(
                f"tasks[{t}] has (S, A, K) = {sh}; every task must share tasks[0]'s {shape}"
            )
        key = (M.succ_ptr.tobytes(), M.succ_next.tobytes())
        g = groups.get(key)
        if g is None:
            g = len(groups)
            groups[key] = g
            lptr_l.append(np.asarray(M.succ_ptr, dtype=np.int64))
            gnxt_l.append(np.asarray(M.succ_next, dtype=np.int64))
        group_l.append(g)
        r_l.append(M.r.reshape(-1))
        c_l.append(M.c.reshape(-1))
        nu_l.append(M.nu0)
        prob_l.append(M.succ_prob)
        n += 1
    if n == 0:
        raise ValueError("tasks is empty; give at least one CMDP")
    S, A, K = shape
    sizes = np.array([p.size for p in prob_l], dtype=np.int64)
    base = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=base[1:])
    gsizes = np.array([x.size for x in gnxt_l], dtype=np.int64)
    goff = np.zeros(len(gnxt_l), dtype=np.int64)
    np.cumsum(gsizes[:-1], out=goff[1:])
    return TaskStack(
        n_tasks=n, n_states=S, n_actions=A, n_constraints=K,
        r=readonly(np.stack(r_l)), c=readonly(np.stack(c_l)), nu0=readonly(np.stack(nu_l)),
        group=readonly(np.array(group_l, dtype=np.int64)),
        lptr=readonly(np.stack(lptr_l)), goff=readonly(goff),
        gnxt=readonly(np.concatenate(gnxt_l)), base=readonly(base),
        prob=readonly(np.concatenate(prob_l)),
    )


def _sign_normalised(v: np.ndarray) -> np.ndarray:
    """Slope vectors (..., d) with their first nonzero component made positive (|x . v| is
    unchanged) and -0.0 turned into 0.0."""
    first = np.take_along_axis(v, np.argmax(v != 0, axis=-1)[..., None], axis=-1)
    return np.where(first < 0, -v, v) + 0.0


def _nonzero_unique(v: np.ndarray) -> np.ndarray:
    """The distinct nonzero slope vectors among v (n, d), up to sign, shape (m, d)."""
    u = np.unique(_sign_normalised(v), axis=0)
    return np.ascontiguousarray(u[np.any(u != 0, axis=1)])


def affine_distance_slopes(model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The slopes that determine the distance of an affine family, reduced.

    Parameters
    ----------
    model : safemeta_fast.tasks.AffineModel

    Returns
    -------
    point : ndarray, shape (n_point, d)
        Distinct nonzero r and c slopes (up to sign): the max |dtheta . v| terms.
    nu : ndarray, shape (n_nu, d)
        Nonzero nu0 slopes (all kept: they are summed).
    row_ptr : ndarray of int64, shape (R + 1,)
    rows : ndarray, shape (row_ptr[-1], d)
        P rows holding at least one nonzero slope, one copy of each distinct row (its
        nonzero slopes up to sign and order); row q is ``rows[row_ptr[q]:row_ptr[q+1]]``.
    """
    d = model.dim
    point = _nonzero_unique(np.concatenate([model.dr.reshape(d, -1).T, model.dc.reshape(d, -1).T]))
    nu = model.dnu0.T
    nu = np.ascontiguousarray(nu[np.any(nu != 0, axis=1)])
    ptr = np.asarray(model.base.succ_ptr, dtype=np.int64)
    counts = np.diff(ptr)
    n_rows, width = counts.size, max(int(counts.max(initial=0)), 1)
    rows_of = np.repeat(np.arange(n_rows), counts)
    W = np.zeros((n_rows, width, d))
    W[rows_of, np.arange(rows_of.size) - ptr[rows_of]] = model.dprob.T
    # one id per distinct slope vector; a row is the multiset of its ids (zero padding
    # and zero slopes add nothing to a row's sum)
    vecs, ids = np.unique(_sign_normalised(W).reshape(-1, d), axis=0, return_inverse=True)
    uniq = np.unique(np.sort(ids.reshape(n_rows, width), axis=1), axis=0)
    slopes = vecs[uniq]  # (R', width, d)
    keep = np.any(slopes != 0, axis=2)
    row_ptr = np.zeros(int(keep.any(axis=1).sum()) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1)[keep.any(axis=1)], out=row_ptr[1:])
    return point, nu, row_ptr, np.ascontiguousarray(slopes[keep])


def stack_affine(model, params) -> TaskStack:
    """Stack tasks of an affine family in reduced coordinates, without building them.

    Parameters
    ----------
    model : safemeta_fast.tasks.AffineModel
        From :meth:`~safemeta_fast.tasks.TaskFamily.affine_model_on` (valid for ``params``).
    params : array_like, shape (N, d)
        Task parameters (N >= 1).

    Returns
    -------
    TaskStack
        ``reduced=True``; every distance kernel gives the model distance of the tasks
        (module notes). Memory N * (number of reduced slopes) * 8 bytes.

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily
    >>> fam = GridworldFamily()
    >>> st = stack_affine(fam.affine_model(), [[0.2], [0.3]])
    >>> round(float(pairwise_distance(st)[0, 1]), 12)
    0.075
    """
    from .tasks import AffineModel

    if not isinstance(model, AffineModel):
        raise TypeError(f"model must be an AffineModel; got {type(model).__name__}")
    th = np.asarray(params, dtype=np.float64)
    if th.ndim != 2 or th.shape[1] != model.dim or th.shape[0] == 0:
        raise ValueError(f"params must have shape (N, {model.dim}) with N >= 1; got {th.shape}")
    if not np.all(np.isfinite(th)):
        i, j = (int(k) for k in np.argwhere(~np.isfinite(th))[0])
        raise ValueError(f"params[{i}, {j}] is {th[i, j]}; it must be finite")
    point, nu, row_ptr, rows = affine_distance_slopes(model)
    x = np.ascontiguousarray(th - model.theta0)
    N = x.shape[0]

    def coords(V):
        out = np.empty((N, V.shape[0]))
        affine_coordinates(x, np.ascontiguousarray(V), out)
        return readonly(out)

    E = rows.shape[0]
    M = model.base
    return TaskStack(
        n_tasks=N, n_states=M.n_states, n_actions=M.n_actions, n_constraints=M.n_constraints,
        r=coords(point), c=readonly(np.zeros((N, 0))), nu0=coords(nu),
        group=readonly(np.zeros(N, dtype=np.int64)), lptr=readonly(row_ptr[None, :].copy()),
        goff=readonly(np.zeros(1, dtype=np.int64)),
        gnxt=readonly(np.arange(E, dtype=np.int64) - np.repeat(row_ptr[:-1], np.diff(row_ptr))),
        base=readonly(np.arange(N, dtype=np.int64) * E),
        prob=readonly(coords(rows).reshape(-1)), reduced=True)


def stack_family(family, params, *, affine: bool = True) -> TaskStack:
    """Stack the tasks of a family at ``params`` (N, d) for the distance kernels.

    An affine family whose parameters lie in its distribution's box
    (:meth:`~safemeta_fast.tasks.TaskFamily.affine_model_on`) is stacked in reduced
    coordinates (:func:`stack_affine`, no CMDP built); otherwise, or with
    ``affine=False``, each task is built and stacked (:func:`stack_tasks`). Both give the
    same distances up to rounding.

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily
    >>> stack_family(GridworldFamily(), [[0.2], [0.3]]).reduced
    True
    """
    from .tasks import TaskFamily

    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily; got {type(family).__name__}")
    th = family.check_params(params)
    if th.shape[0] == 0:
        raise ValueError("params is empty; give at least one parameter vector")
    model = family.affine_model_on(th) if affine else None
    if model is None:
        return stack_tasks(family.build_many(th))
    return stack_affine(model, th)


def distance(M1: CMDP, M2: CMDP) -> float:
    """Distance between two tasks (SPEC section 3).

    Parameters
    ----------
    M1, M2 : CMDP
        Tasks with the same (S, A, K).

    Returns
    -------
    float
        ``max(max|r - r'|, max|c - c'|, TV(nu0, nu0'), max_{s,a} TV(P(.|s,a), P'(.|s,a)))``.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> round(distance(gridworld(0.3), gridworld(0.31)), 6)
    0.0075
    """
    for name, M in (("M1", M1), ("M2", M2)):
        if not isinstance(M, CMDP):
            raise TypeError(f"{name} must be a CMDP; got {type(M).__name__}")
    st = stack_tasks([M1, M2])
    return float(pair_distance_sparse(0, 1, *st.kernel_args, np.inf))


def pairwise_distance(tasks, *, method: str = "sparse") -> np.ndarray:
    """All-pairs distance matrix (SPEC section 3).

    Parameters
    ----------
    tasks : sequence of CMDP or TaskStack
        N tasks sharing (S, A, K).
    method : {"sparse", "dense"}
        "sparse" (default) merges the compact successor rows; "dense" materialises the
        stacked (N, S*A, S) tensor (memory N*S*S*A*8 bytes) and compares full rows.
        Both give the same numbers up to rounding (1e-15).

    Returns
    -------
    ndarray, shape (N, N)
        Symmetric, zero diagonal, read-only.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> D = pairwise_distance([gridworld(x) for x in (0.2, 0.3, 0.4)])
    >>> D.round(6).tolist()[0]
    [0.0, 0.075, 0.15]
    """
    if method not in ("sparse", "dense"):
        raise ValueError(f"method is {method!r}; expected 'sparse' or 'dense'")
    st = stack_tasks(tasks)
    out = np.empty((st.n_tasks, st.n_tasks))
    if method == "sparse":
        pairwise_sparse(*st.kernel_args, out)
    else:
        r, c, nu, P = st.dense()
        pairwise_dense(r, c, nu, P, out)
    return readonly(out)


def select_pivots(st: TaskStack, n_pivots: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Farthest-first pivots and the distances of every task to them.

    The first pivot is the task farthest from task 0 (an extreme task), each next one
    the task farthest from the pivots chosen so far. Returns (pivots (m,), Dp (N, m),
    number of exact distances computed).
    """
    N = st.n_tasks
    allidx = np.arange(N, dtype=np.int64)
    d0 = np.empty(N)
    distances_to(0, allidx, *st.kernel_args, np.inf, d0)
    n_exact = N
    m = max(1, min(int(n_pivots), N))
    Dp = np.empty((N, m))
    pivots = np.empty(m, dtype=np.int64)
    nearest = d0
    for p in range(m):
        cand = int(np.argmax(nearest))
        pivots[p] = cand
        col = np.empty(N)
        distances_to(cand, allidx, *st.kernel_args, np.inf, col)
        Dp[:, p] = col
        n_exact += N
        nearest = Dp[:, p].copy() if p == 0 else np.minimum(nearest, Dp[:, p])
    return pivots, Dp, n_exact


@dataclass(frozen=True, eq=False)
class Neighbours:
    """Neighbour lists of ``d(i, j) <= eps`` in CSR form.

    Attributes
    ----------
    ptr : ndarray of int64, shape (N + 1,)
    idx : ndarray of int64
        Neighbours of task i are ``idx[ptr[i]:ptr[i+1]]``, sorted, i itself included.
    eps : float
    n_exact : int
        Exact distances computed (pivot distances included).
    n_pairs : int
        N (N - 1) / 2, the pairs a brute force would compute.
    pivots : ndarray of int64
        Tasks used as pivots.
    """

    ptr: np.ndarray
    idx: np.ndarray
    eps: float
    n_exact: int
    n_pairs: int
    pivots: np.ndarray

    @property
    def n_tasks(self) -> int:
        return self.ptr.shape[0] - 1

    def degree(self) -> np.ndarray:
        """Number of neighbours of each task (itself included), shape (N,)."""
        return np.diff(self.ptr)


def pivot_windows(Dp: np.ndarray, eps: float):
    """Sort by pivot-0 distance; return (order, pos, lo, hi) of the eps windows."""
    key = Dp[:, 0]
    order = np.argsort(key, kind="stable").astype(np.int64)
    sk = key[order]
    lo = np.searchsorted(sk, sk - eps - PIVOT_TOL, side="left").astype(np.int64)
    hi = np.searchsorted(sk, sk + eps + PIVOT_TOL, side="right").astype(np.int64)
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size, dtype=np.int64)
    return order, pos, lo, hi


def all_pivot_windows(Dp: np.ndarray, eps: float):
    """Windows of every pivot key: (order, pos, lo, hi), each of shape (m, N).

    Row p is :func:`pivot_windows` on ``Dp[:, p]``: ``order[p]`` sorts the tasks by their
    distance to pivot p, ``pos[p]`` is its inverse and [lo[p, a], hi[p, a]) are the
    sorted positions whose key is within eps (+ 1e-9) of position a's; by the triangle
    inequality every eps-neighbour of a task lies in each of its m windows.
    """
    Dp = np.asarray(Dp, dtype=np.float64)
    m = Dp.shape[1]
    out = [np.empty((m, Dp.shape[0]), dtype=np.int64) for _ in range(4)]
    for p in range(m):
        for arr, row in zip(out, pivot_windows(Dp[:, p:p + 1], eps)):
            arr[p] = row
    return tuple(out)


def neighbours_within(tasks, eps: float, *, n_pivots: int = 4,
                      block_entries: int = 20_000_000) -> Neighbours:
    """All pairs with ``d(i, j) <= eps``, exactly, with pivot pruning.

    Parameters
    ----------
    tasks : sequence of CMDP or TaskStack
    eps : float
        Closeness radius (>= 0).
    n_pivots : int, default 4
        Pivots chosen farthest-first; every task's distance to each is computed once.
    block_entries : int
        Candidate pairs examined per kernel call (bounds the temporary memory).

    Returns
    -------
    Neighbours
        The same sets as a brute-force scan of all pairs.

    Notes
    -----
    Candidates j of task i are restricted to the window |d(i, p0) - d(j, p0)| <= eps
    (sorted by the distance to pivot 0); a candidate is rejected without computing
    d(i, j) when |d(i, p) - d(j, p)| > eps for any pivot p, accepted without computing
    it when d(i, p) + d(j, p) <= eps, and otherwise d(i, j) is computed with an early
    exit as soon as one component exceeds eps. Bounds carry a 1e-9 slack so rounding
    can never flip a decision.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> nb = neighbours_within([gridworld(x) for x in (0.2, 0.201, 0.3)], eps=0.01)
    >>> nb.idx[nb.ptr[0]:nb.ptr[1]].tolist()
    [0, 1]
    """
    e = check_real("eps", eps, lo=0.0)
    if isinstance(n_pivots, bool) or not isinstance(n_pivots, (int, np.integer)) or n_pivots < 1:
        raise ValueError(f"n_pivots is {n_pivots!r}; expected an integer >= 1")
    st = stack_tasks(tasks)
    N = st.n_tasks
    pivots, Dp, n_exact = select_pivots(st, n_pivots)
    order, pos, lo, hi = pivot_windows(Dp, e)
    wlen = np.maximum(hi - np.arange(N) - 1, 0)
    pi_l, pj_l = [], []
    a0 = 0
    cums = np.cumsum(wlen)
    while a0 < N:
        start = cums[a0 - 1] if a0 > 0 else 0
        a1 = int(np.searchsorted(cums, start + block_entries, side="right"))
        a1 = min(max(a1, a0 + 1), N)
        woff = np.zeros(a1 - a0, dtype=np.int64)
        np.cumsum(wlen[a0:a1 - 1], out=woff[1:])
        total = int(woff[-1] + wlen[a1 - 1])
        flags = np.zeros(max(total, 1), dtype=np.int8)
        nex = np.zeros(a1 - a0, dtype=np.int64)
        window_pairs(a0, a1, order, hi, woff, e, PIVOT_TOL, Dp, *st.kernel_args, flags, nex)
        n_exact += int(nex.sum())
        k = int(flags.sum(dtype=np.int64))
        oi = np.empty(k, dtype=np.int64)
        oj = np.empty(k, dtype=np.int64)
        compact_pairs(a0, a1, order, hi, woff, flags, oi, oj)
        pi_l.append(oi)
        pj_l.append(oj)
        a0 = a1
    ptr, idx = pairs_to_csr(N, np.concatenate(pi_l), np.concatenate(pj_l))
    return Neighbours(ptr=readonly(ptr), idx=readonly(idx), eps=e, n_exact=int(n_exact),
                      n_pairs=N * (N - 1) // 2, pivots=readonly(pivots))
