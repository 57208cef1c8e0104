"""Greedy cover (SPEC section 5 step 3).

Repeatedly choose the not-yet-chosen index j that covers the most still-uncovered tasks
(ties -> smallest index), mark what it covers, and stop as soon as the number of
uncovered tasks is <= ``max_uncovered`` (3 * delta * N in the paper).

Priority structure: a max segment tree over the candidates' counts whose internal
nodes hold the index of the best leaf below (larger count, then smaller index: the
left child wins ties, so the root is always the smallest index among the maxima).
Counts are decremented exactly when a task becomes covered; the touched leaves are
collected and their paths refreshed once per pick, so each pick costs
O(touched * log N) instead of O(N).

Three front ends share the tree:

- ``greedy_dense``: boolean closeness matrix ``close[j, i]`` ("j covers i") and its
  transpose;
- ``greedy_csr``: neighbour lists (``ptr``, ``idx``: j covers ``idx[ptr[j]:ptr[j+1]]``)
  and the transposed lists (the same arrays for a symmetric relation);
- ``greedy_lazy``: the exact model distance (or a parameter closeness) without any stored neighbour list:
  counts start at an upper bound (the pivot-0 window size) and are recomputed exactly
  only for the current top candidate (lazy greedy). Since counts only decrease, a
  freshly recomputed top candidate is the true greedy choice, so the result equals
  ``greedy_csr`` on the exact neighbour lists.

Status codes: 0 = stopped by the rule; 1 = no remaining candidate covers an uncovered
task (only possible for a non-reflexive relation).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .distance import _pair_within


@njit(cache=True)
def _pick(cnt, a, b):
    if a < 0:
        return b
    if b < 0:
        return a
    if cnt[b] > cnt[a]:
        return b
    return a


@njit(cache=True)
def _tree_build(cnt):
    n = cnt.shape[0]
    size = 1
    while size < n:
        size *= 2
    tree = np.full(2 * size, -1, dtype=np.int64)
    for i in range(n):
        tree[size + i] = i
    for node in range(size - 1, 0, -1):
        tree[node] = _pick(cnt, tree[2 * node], tree[2 * node + 1])
    return tree, size


@njit(cache=True)
def _tree_update(tree, size, cnt, i):
    node = (size + i) >> 1
    while node >= 1:
        tree[node] = _pick(cnt, tree[2 * node], tree[2 * node + 1])
        node >>= 1


@njit(cache=True)
def _greedy_core(n, cnt, ptr, idx, tptr, tidx, dense, close, closeT, max_uncovered, chosen, covered):
    tree, size = _tree_build(cnt)
    covered[:] = False
    dirty = np.zeros(n, dtype=np.bool_)
    dlist = np.empty(n, dtype=np.int64)
    n_unc = n
    k = 0
    status = 0
    while n_unc > max_uncovered:
        j = tree[1]
        if j < 0 or cnt[j] <= 0:
            status = 1
            break
        chosen[k] = j
        k += 1
        nd = 0
        if dense:
            for u in range(n):
                if close[j, u] and not covered[u]:
                    covered[u] = True
                    n_unc -= 1
                    for w in range(n):
                        if closeT[u, w]:
                            cnt[w] -= 1
                            if not dirty[w]:
                                dirty[w] = True
                                dlist[nd] = w
                                nd += 1
        else:
            for e in range(ptr[j], ptr[j + 1]):
                u = idx[e]
                if not covered[u]:
                    covered[u] = True
                    n_unc -= 1
                    for f in range(tptr[u], tptr[u + 1]):
                        w = tidx[f]
                        cnt[w] -= 1
                        if not dirty[w]:
                            dirty[w] = True
                            dlist[nd] = w
                            nd += 1
        cnt[j] = -1 - n  # chosen: below every candidate
        if not dirty[j]:
            dirty[j] = True
            dlist[nd] = j
            nd += 1
        for q in range(nd):
            w = dlist[q]
            dirty[w] = False
            _tree_update(tree, size, cnt, w)
    return k, n - n_unc, status


@njit(cache=True)
def greedy_dense(close, closeT, max_uncovered, chosen, covered):
    """Greedy cover on a boolean matrix; ``close[j, i]`` means j covers i.

    Returns (n_chosen, n_covered, status); ``chosen[:n_chosen]`` holds the picks in order
    and ``covered`` (n,) marks the covered tasks.
    """
    n = close.shape[0]
    cnt = np.zeros(n, dtype=np.int64)
    for j in range(n):
        s = 0
        for i in range(n):
            if close[j, i]:
                s += 1
        cnt[j] = s
    dummy = np.zeros(1, dtype=np.int64)
    return _greedy_core(n, cnt, dummy, dummy, dummy, dummy, True, close, closeT, max_uncovered, chosen, covered)


@njit(cache=True)
def greedy_csr(n, ptr, idx, tptr, tidx, max_uncovered, chosen, covered):
    """Greedy cover on neighbour lists (entries of a row must be distinct).

    Returns (n_chosen, n_covered, status).
    """
    cnt = np.empty(n, dtype=np.int64)
    for j in range(n):
        cnt[j] = ptr[j + 1] - ptr[j]
    dummyT = np.zeros((1, 1), dtype=np.bool_)
    return _greedy_core(n, cnt, ptr, idx, tptr, tidx, False, dummyT, dummyT, max_uncovered, chosen, covered)


# ---------------------------------------------------------------------------
# lazy greedy on the exact model distance (no stored neighbour lists)
# ---------------------------------------------------------------------------

@njit(cache=True)
def _param_within(j, k, eps, theta, scale):
    for e in range(theta.shape[1]):
        if scale[e] * abs(theta[j, e] - theta[k, e]) > eps:
            return False
    return True


@njit(parallel=True, cache=True)
def _eval_window(j, lo, hi, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
                 group, lptr, goff, gnxt, base, prob, flags, exact):
    for q in prange(hi - lo):
        k = order[lo + q]
        flags[q] = 0
        exact[q] = 0
        if covered[k]:
            continue
        if k == j:
            flags[q] = 1
            continue
        if use_params:
            if _param_within(j, k, eps, theta, scale):
                flags[q] = 1
            continue
        ok, ex = _pair_within(j, k, eps, tol, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob)
        if ok:
            flags[q] = 1
        if ex:
            exact[q] = 1


@njit(cache=True)
def greedy_lazy(order, pos, lo, hi, eps, tol, use_params, theta, scale, Dp, r, c, nu, group,
                lptr, goff, gnxt, base, prob, max_uncovered, chosen, covered):
    """Exact greedy cover on {(i, j): d(i, j) <= eps} without storing neighbour lists.

    ``order`` sorts tasks by a 1-Lipschitz key (the distance to pivot 0, or the scaled
    first parameter), ``pos`` is its inverse, and the window of sorted position a is
    [lo[a], hi[a]) (all positions whose key is within eps + tol): it contains every
    neighbour. With ``use_params`` the closeness is
    ``max_k scale[k] |theta[i, k] - theta[j, k]| <= eps``; otherwise the model distance
    with pivot bounds (``Dp`` (N, m)) and early exit. Returns
    (n_chosen, n_covered, status, n_exact, n_evaluations).
    """
    n = order.shape[0]
    ub = np.empty(n, dtype=np.int64)
    wmax = 1
    for t in range(n):
        a = pos[t]
        ub[t] = hi[a] - lo[a]
        if ub[t] > wmax:
            wmax = ub[t]
    fresh = np.full(n, -1, dtype=np.int64)
    tree, size = _tree_build(ub)
    covered[:] = False
    flags = np.zeros(wmax, dtype=np.int8)
    exact = np.zeros(wmax, dtype=np.int8)
    owner = -1
    n_unc = n
    k = 0
    status = 0
    n_exact = 0
    n_eval = 0
    while n_unc > max_uncovered:
        j = tree[1]
        if j < 0 or ub[j] <= 0:
            status = 1
            break
        a = pos[j]
        if fresh[j] != k or owner != j:
            # (re)evaluate the exact count of uncovered tasks within eps of j
            _eval_window(j, lo[a], hi[a], order, covered, eps, tol, use_params, theta, scale, Dp,
                         r, c, nu, group, lptr, goff, gnxt, base, prob, flags, exact)
            cnt = 0
            for q in range(hi[a] - lo[a]):
                cnt += flags[q]
                n_exact += exact[q]
            n_eval += 1
            owner = j
            if fresh[j] == k and ub[j] == cnt:
                pass  # a re-evaluation of a fresh candidate (buffer was overwritten)
            else:
                fresh[j] = k
                ub[j] = cnt
                _tree_update(tree, size, ub, j)
                continue
        # j is fresh (exact count) and on top: choose it
        chosen[k] = j
        k += 1
        for q in range(hi[a] - lo[a]):
            if flags[q]:
                t = order[lo[a] + q]
                covered[t] = True
                n_unc -= 1
        ub[j] = -1
        owner = -1
        _tree_update(tree, size, ub, j)
    return k, n - n_unc, status, n_exact, n_eval
