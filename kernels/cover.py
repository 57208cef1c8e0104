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
- ``greedy_lazy``: the exact model distance (or a parameter closeness) without any stored
  neighbour list:
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

from .distance import pair_within


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
def _greedy_core(n, cnt, ptr, idx, tptr, tidx, dense, close, closeT, max_uncovered, chosen,
                 covered):
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
    return _greedy_core(n, cnt, dummy, dummy, dummy, dummy, True, close, closeT, max_uncovered,
                        chosen, covered)


@njit(cache=True)
def greedy_csr(n, ptr, idx, tptr, tidx, max_uncovered, chosen, covered):
    """Greedy cover on neighbour lists (entries of a row must be distinct).

    Returns (n_chosen, n_covered, status).
    """
    cnt = np.empty(n, dtype=np.int64)
    for j in range(n):
        cnt[j] = ptr[j + 1] - ptr[j]
    dummyT = np.zeros((1, 1), dtype=np.bool_)
    return _greedy_core(n, cnt, ptr, idx, tptr, tidx, False, dummyT, dummyT, max_uncovered,
                        chosen, covered)


# ---------------------------------------------------------------------------
# lazy greedy on the exact model distance (no stored neighbour lists)
# ---------------------------------------------------------------------------

@njit(cache=True)
def fenwick_build(bits):
    """Fenwick (binary indexed) tree of the 0/1 values ``bits`` (n,); returns (n + 1,) int64."""
    n = bits.shape[0]
    fw = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        fw[i + 1] += bits[i]
        p = (i + 1) + ((i + 1) & -(i + 1))
        if p <= n:
            fw[p] += fw[i + 1]
    return fw


@njit(cache=True)
def fenwick_add(fw, i, v):
    """Add ``v`` at position ``i`` (0-based)."""
    n = fw.shape[0] - 1
    p = i + 1
    while p <= n:
        fw[p] += v
        p += p & -p


@njit(cache=True)
def fenwick_prefix(fw, i):
    """Sum of positions [0, i)."""
    s = 0
    p = i
    while p > 0:
        s += fw[p]
        p -= p & -p
    return s


@njit(cache=True)
def fenwick_range(fw, lo, hi):
    """Sum of positions [lo, hi)."""
    return fenwick_prefix(fw, hi) - fenwick_prefix(fw, lo)


@njit(cache=True)
def _param_within(j, k, eps, theta, scale):
    for e in range(theta.shape[1]):
        if scale[e] * abs(theta[j, e] - theta[k, e]) > eps:
            return False
    return True


@njit(cache=True)
def _within(j, k, eps, tol, use_params, theta, scale, Dp, r, c, nu, group, lptr, goff, gnxt,
            base, prob):
    """(j covers k, an exact model distance was computed)."""
    if k == j:
        return True, False
    if use_params:
        return _param_within(j, k, eps, theta, scale), False
    return pair_within(j, k, eps, tol, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob)


@njit(cache=True)
def _flag_one(q, j, lo, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
              group, lptr, goff, gnxt, base, prob, flags, exact):
    k = order[lo + q]
    flags[q] = 0
    exact[q] = 0
    if covered[k]:
        return
    ok, ex = _within(j, k, eps, tol, use_params, theta, scale, Dp, r, c, nu, group, lptr,
                     goff, gnxt, base, prob)
    if ok:
        flags[q] = 1
    if ex:
        exact[q] = 1


@njit(parallel=True, cache=True)
def _eval_window_par(j, lo, hi, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
                     group, lptr, goff, gnxt, base, prob, flags, exact):
    for q in prange(hi - lo):
        _flag_one(q, j, lo, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
                  group, lptr, goff, gnxt, base, prob, flags, exact)


@njit(cache=True)
def _eval_window(j, lo, hi, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
                 group, lptr, goff, gnxt, base, prob, flags, exact, par_min):
    """flags[q] = 1 when the uncovered task at sorted position lo + q is within eps of j.

    Parallel over the window when it holds at least ``par_min`` positions (a parallel
    launch costs more than a short serial scan).
    """
    if hi - lo >= par_min:
        _eval_window_par(j, lo, hi, order, covered, eps, tol, use_params, theta, scale, Dp, r,
                         c, nu, group, lptr, goff, gnxt, base, prob, flags, exact)
    else:
        for q in range(hi - lo):
            _flag_one(q, j, lo, order, covered, eps, tol, use_params, theta, scale, Dp, r, c,
                      nu, group, lptr, goff, gnxt, base, prob, flags, exact)


@njit(cache=True)
def _count_serial(j, lo, hi, order, covered, eps, tol, use_params, theta, scale, Dp, r, c, nu,
                  group, lptr, goff, gnxt, base, prob):
    cnt = 0
    nex = 0
    for a in range(lo, hi):
        k = order[a]
        if covered[k]:
            continue
        ok, ex = _within(j, k, eps, tol, use_params, theta, scale, Dp, r, c, nu, group, lptr,
                         goff, gnxt, base, prob)
        if ok:
            cnt += 1
        if ex:
            nex += 1
    return cnt, nex


@njit(parallel=True, cache=True)
def _count_batch_par(batch, bpiv, blo, bhi, nb, order, covered, eps, tol, use_params, theta,
                     scale, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob, cnt_out, nex_out):
    for b in prange(nb):
        cnt, nex = _count_serial(batch[b], blo[b], bhi[b], order[bpiv[b]], covered, eps, tol,
                                 use_params, theta, scale, Dp, r, c, nu, group, lptr, goff, gnxt,
                                 base, prob)
        cnt_out[b] = cnt
        nex_out[b] = nex


@njit(cache=True)
def _count_batch(batch, bpiv, blo, bhi, nb, order, covered, eps, tol, use_params, theta, scale,
                 Dp, r, c, nu, group, lptr, goff, gnxt, base, prob, cnt_out, nex_out, par_min):
    """Exact uncovered-neighbour counts of ``batch[:nb]`` over their windows.

    Candidate b scans sorted positions [blo[b], bhi[b]) of ``order[bpiv[b]]``. Parallel
    over the candidates when the windows hold at least ``par_min`` positions in total.
    """
    tot = 0
    for b in range(nb):
        tot += bhi[b] - blo[b]
    if nb > 1 and tot >= par_min:
        _count_batch_par(batch, bpiv, blo, bhi, nb, order, covered, eps, tol, use_params, theta,
                         scale, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob, cnt_out,
                         nex_out)
        return
    for b in range(nb):
        cnt, nex = _count_serial(batch[b], blo[b], bhi[b], order[bpiv[b]], covered, eps, tol,
                                 use_params, theta, scale, Dp, r, c, nu, group, lptr, goff, gnxt,
                                 base, prob)
        cnt_out[b] = cnt
        nex_out[b] = nex


@njit(cache=True)
def _window_bound(j, fws, pos, lo, hi):
    """(smallest count of uncovered tasks over j's pivot windows, that pivot)."""
    best = -1
    bp = 0
    for p in range(pos.shape[0]):
        a = pos[p, j]
        b = fenwick_range(fws[p], lo[p, a], hi[p, a])
        if best < 0 or b < best:
            best = b
            bp = p
    return best, bp


@njit(cache=True)
def pair_box_counts(order_p, pos_p, lo_p, hi_p, pos_q, lo_q, hi_q, out):
    """out[j] = number of tasks inside both of j's windows under keys p and q.

    A task t is counted when its position under key p lies in [lo_p[a], hi_p[a]) with
    a = pos_p[j], and its position under key q in [lo_q[b], hi_q[b]) with b = pos_q[j]
    (j itself included). Offline sweep over the positions of key p with a Fenwick tree
    over the positions of key q: O(N log N).
    """
    n = order_p.shape[0]
    start = np.zeros(n + 2, dtype=np.int64)
    for j in range(n):
        a = pos_p[j]
        start[lo_p[a] + 1] += 1
        start[hi_p[a] + 1] += 1
    for i in range(n + 1):
        start[i + 1] += start[i]
    fill = start.copy()
    qj = np.empty(2 * n, dtype=np.int64)
    qs = np.empty(2 * n, dtype=np.int64)
    for j in range(n):
        a = pos_p[j]
        e = lo_p[a]
        qj[fill[e]] = j
        qs[fill[e]] = -1
        fill[e] += 1
        e = hi_p[a]
        qj[fill[e]] = j
        qs[fill[e]] = 1
        fill[e] += 1
    fw = np.zeros(n + 1, dtype=np.int64)
    out[:] = 0
    for i in range(n + 1):
        for e in range(start[i], start[i + 1]):
            j = qj[e]
            b = pos_q[j]
            out[j] += qs[e] * fenwick_range(fw, lo_q[b], hi_q[b])
        if i < n:
            fenwick_add(fw, pos_q[order_p[i]], 1)


@njit(parallel=True, cache=True)
def _pair_box_all(order, pos, lo, hi, pp, qq, out):
    """out[u] (n_pairs, N): pair_box_counts for the pivot pair (pp[u], qq[u])."""
    for u in prange(pp.shape[0]):
        pair_box_counts(order[pp[u]], pos[pp[u]], lo[pp[u]], hi[pp[u]], pos[qq[u]], lo[qq[u]],
                        hi[qq[u]], out[u])


@njit(cache=True)
def _far_apart(j, c, lim, use_params, theta, scale, Dp):
    """True when a lower bound on d(j, c) exceeds ``lim`` (pivot bounds, or the parameter
    distance itself), so j and c have no common eps-neighbour for lim >= 2 eps."""
    if use_params:
        for e in range(theta.shape[1]):
            if scale[e] * abs(theta[j, e] - theta[c, e]) > lim:
                return True
        return False
    for p in range(Dp.shape[1]):
        if abs(Dp[j, p] - Dp[c, p]) > lim:
            return True
    return False


@njit(cache=True)
def _exact_still_current(t, k, xstamp, xval, ub, chosen, lim2, use_params, theta, scale, Dp):
    """Whether t's exact count from pick xstamp[t] is still exact at pick k.

    It is when no pick since then came within 2 eps of t (then none removed a task
    from t's neighbourhood); xstamp[t] is advanced to k. A stale count is dropped
    (xstamp[t] = -1) and False returned.
    """
    if xstamp[t] < 0 or ub[t] != xval[t]:
        return False
    for q in range(xstamp[t], k):
        if not _far_apart(t, chosen[q], lim2, use_params, theta, scale, Dp):
            xstamp[t] = -1
            return False
    xstamp[t] = k
    return True


@njit(cache=True)
def _refresh_window_bound(t, k, wstamp, ub, wpiv, fws, pos, lo, hi, tree, size):
    """Refresh t's window bound once per pick; True if it lowered t's key in the tree."""
    if wstamp[t] == k:
        return False
    wstamp[t] = k
    b, bp = _window_bound(t, fws, pos, lo, hi)
    if b < ub[t]:
        ub[t] = b
        wpiv[t] = bp
        _tree_update(tree, size, ub, t)
        return True
    return False


@njit(cache=True)
def greedy_lazy(order, pos, lo, hi, eps, tol, use_params, theta, scale, Dp, r, c, nu, group,
                lptr, goff, gnxt, base, prob, max_uncovered, chosen, covered, batch_size=8,
                par_min=2048):
    """Exact greedy cover on {(i, j): d(i, j) <= eps} without storing neighbour lists.

    ``order`` (m, N) sorts the tasks by m 1-Lipschitz keys (the distances to m pivots,
    or the scaled first parameter), ``pos`` (m, N) is its inverse, and the window of
    sorted position a under key p is [lo[p, a], hi[p, a]) (all positions whose key is
    within eps + tol): it contains every neighbour. With ``use_params`` the closeness is
    ``max_k scale[k] |theta[i, k] - theta[j, k]| <= eps``; otherwise the model distance
    with pivot bounds (``Dp`` (N, m')) and early exit.

    Lazy greedy with three levels of upper bounds on a candidate's count of uncovered
    neighbours, kept in a max segment tree (ties -> smallest index):

    1. a stale value (a bound or exact count from an earlier pick round: counts only
       decrease, so it is still an upper bound);
    2. the window bound: the smallest number of still-uncovered tasks in its m windows,
       range counts in Fenwick trees over the sorted positions (O(m log N)); the
       starting values also use, for every pivot pair, the number of tasks inside both
       windows (an offline sweep, O(m^2 N log N) once);
    3. the exact count (distances to the uncovered tasks of the window that gave the
       bound, pivot bounds as a pre-filter, early exit above eps). An exact count stays
       exact while every later pick c is provably farther than 2 eps from the candidate
       (a pivot lower bound: then c covered none of its neighbours), so it is carried
       to the next rounds without new distances.

    The top candidate is refreshed to the next level until it holds its exact count
    for the current round; it is then the true greedy choice (every other candidate's
    stored value bounds its true count from above and ranks below), so the picks equal
    the greedy on the full closeness matrix. The first exact count of a pick round runs
    alone (parallel over the window); later ones, needed only for candidates ranked
    above the best exact count so far, are batched (up to ``batch_size`` candidates
    holding a current window bound) into one call, parallel over the candidates. Work
    smaller than ``par_min`` window positions runs serially (no parallel launch).

    Returns (n_chosen, n_covered, status, n_exact, n_evaluations).
    """
    m = order.shape[0]
    n = order.shape[1]
    ub = np.empty(n, dtype=np.int64)
    wpiv = np.zeros(n, dtype=np.int64)  # pivot whose window gave the current bound
    wmax = 1
    for t in range(n):
        for p in range(m):
            a = pos[p, t]
            w = hi[p, a] - lo[p, a]
            if p == 0 or w < ub[t]:
                ub[t] = w
                wpiv[t] = p
            if w > wmax:
                wmax = w
    if m >= 2:
        # static bound: the tasks inside both windows of a pivot pair (tighter when the
        # family has more than one dimension)
        n_pairs = m * (m - 1) // 2
        pp = np.empty(n_pairs, dtype=np.int64)
        qq = np.empty(n_pairs, dtype=np.int64)
        u = 0
        for p in range(m):
            for q in range(p + 1, m):
                pp[u] = p
                qq[u] = q
                u += 1
        boxes = np.empty((n_pairs, n), dtype=np.int64)
        _pair_box_all(order, pos, lo, hi, pp, qq, boxes)
        for u in range(boxes.shape[0]):
            for t in range(n):
                if boxes[u, t] < ub[t]:
                    ub[t] = boxes[u, t]
    # stamps: the pick round in which the window bound / exact count was last computed
    wstamp = np.full(n, -1, dtype=np.int64)
    xstamp = np.full(n, -1, dtype=np.int64)
    xval = np.full(n, -1, dtype=np.int64)  # the exact count computed in round xstamp
    lim2 = 2.0 * eps + 2.0 * tol
    tree, size = _tree_build(ub)
    covered[:] = False
    fws = np.empty((m, n + 1), dtype=np.int64)
    ones = np.ones(n, dtype=np.int64)
    for p in range(m):
        fws[p] = fenwick_build(ones)
    flags = np.zeros(wmax, dtype=np.int8)
    exact = np.zeros(wmax, dtype=np.int8)
    bsz = max(1, batch_size)
    batch = np.empty(bsz, dtype=np.int64)
    bpiv = np.empty(bsz, dtype=np.int64)
    blo = np.empty(bsz, dtype=np.int64)
    bhi = np.empty(bsz, dtype=np.int64)
    bcnt = np.empty(bsz, dtype=np.int64)
    bnex = np.empty(bsz, dtype=np.int64)
    owner = -1  # candidate whose flags are in the buffer (for the current round)
    have_exact = False  # some candidate holds an exact count of the current round
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
        p = wpiv[j]
        a = pos[p, j]
        wlo = lo[p, a]
        whi = hi[p, a]
        if xstamp[j] == k:
            # exact and current, on top: the greedy choice
            if owner != j:
                _eval_window(j, wlo, whi, order[p], covered, eps, tol, use_params, theta, scale,
                             Dp, r, c, nu, group, lptr, goff, gnxt, base, prob, flags, exact,
                             par_min)
                for q in range(whi - wlo):
                    n_exact += exact[q]
                n_eval += 1
            chosen[k] = j
            k += 1
            for q in range(whi - wlo):
                if flags[q]:
                    t = order[p, wlo + q]
                    covered[t] = True
                    for pp in range(m):
                        fenwick_add(fws[pp], pos[pp, t], -1)
                    n_unc -= 1
            ub[j] = -1
            owner = -1
            have_exact = False
            _tree_update(tree, size, ub, j)
            continue
        if _exact_still_current(j, k, xstamp, xval, ub, chosen, lim2, use_params, theta, scale, Dp):
            continue
        if _refresh_window_bound(j, k, wstamp, ub, wpiv, fws, pos, lo, hi, tree, size):
            continue
        # j holds its current window bound and is on top: count exactly
        if not have_exact:
            # the round's first exact count: alone, parallel over the window
            _eval_window(j, wlo, whi, order[p], covered, eps, tol, use_params, theta, scale, Dp,
                         r, c, nu, group, lptr, goff, gnxt, base, prob, flags, exact, par_min)
            cnt = 0
            for q in range(whi - wlo):
                cnt += flags[q]
                n_exact += exact[q]
            n_eval += 1
            owner = j
            have_exact = True
            xstamp[j] = k
            xval[j] = cnt
            ub[j] = cnt
            _tree_update(tree, size, ub, j)
            continue
        # the tree holds an exact current count X (candidate e); every candidate ranked
        # above (X, e) must be refined before a pick. Take j and the next such candidates
        # that hold a current window bound (refreshing window bounds on the way) and
        # count them in one call, parallel over candidates.
        nb = 0
        while nb < bsz:
            t = tree[1]
            if t < 0 or ub[t] <= 0 or xstamp[t] == k:
                break
            if _exact_still_current(t, k, xstamp, xval, ub, chosen, lim2, use_params, theta,
                                    scale, Dp):
                break  # exact and current: it ends the batch
            if _refresh_window_bound(t, k, wstamp, ub, wpiv, fws, pos, lo, hi, tree, size):
                continue
            pt = wpiv[t]
            at = pos[pt, t]
            batch[nb] = t
            bpiv[nb] = pt
            blo[nb] = lo[pt, at]
            bhi[nb] = hi[pt, at]
            nb += 1
            ub[t] = -2 - n  # out of the tree while the batch is gathered
            _tree_update(tree, size, ub, t)
        _count_batch(batch, bpiv, blo, bhi, nb, order, covered, eps, tol, use_params, theta,
                     scale, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob, bcnt, bnex, par_min)
        for q in range(nb):
            t = batch[q]
            xstamp[t] = k
            xval[t] = bcnt[q]
            ub[t] = bcnt[q]
            n_exact += bnex[q]
            n_eval += 1
            _tree_update(tree, size, ub, t)
    return k, n - n_unc, status, n_exact, n_eval
