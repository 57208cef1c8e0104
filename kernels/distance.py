"""Distance between tabular CMDPs (SPEC section 3) and pivot-pruned range search.

    d(M, M') = max( max|r - r'|, max|c - c'|, TV(nu0, nu0'), max_{s,a} TV(P(.|s,a), P'(.|s,a)) ),
    TV(p, q) = 0.5 * sum |p - q|.

Stacked sparse layout (built by ``safemeta_fast.distance.stack_tasks``), N tasks sharing
(S, A, K), SA = S * A:

- ``r`` (N, SA), ``c`` (N, SA*K), ``nu`` (N, S): float64.
- ``group`` (N,): structure id; tasks of one group have identical successor rows.
- ``lptr`` (G, SA+1): local row pointers of each structure group; ``goff`` (G,): start of the
  group's successor states in ``gnxt``; ``gnxt``: successor states (sorted per row).
- ``base`` (N,): start of task t's probabilities in ``prob``; row ``i`` of task t holds
  ``prob[base[t] + lptr[g, i] : base[t] + lptr[g, i+1]]`` with states
  ``gnxt[goff[g] + lptr[g, i] : ...]``, g = group[t].

Tasks of one group are compared entry by entry; tasks of different groups by merging
the two sorted rows. Both paths add the same terms in the same (state) order, so the
result does not depend on which path ran, nor on the thread count (each pair is
computed by one thread, in a fixed order).

A ``bound`` argument allows an early exit: as soon as one component exceeds ``bound``
the partial maximum (a value > bound, a lower bound on the distance) is returned.
Results <= bound are exact.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

INF = np.inf


@njit(cache=True)
def _max_abs_diff(x, i, j, m):
    for e in range(x.shape[1]):
        v = abs(x[i, e] - x[j, e])
        if v > m:
            m = v
    return m


@njit(cache=True)
def _head_distance(i, j, r, c, nu, bound):
    """max(max|r_i - r_j|, max|c_i - c_j|, TV(nu_i, nu_j)), stopping early above ``bound``."""
    m = _max_abs_diff(r, i, j, 0.0)
    if m > bound:
        return m
    m = _max_abs_diff(c, i, j, m)
    if m > bound:
        return m
    s = 0.0
    for e in range(nu.shape[1]):
        s += abs(nu[i, e] - nu[j, e])
    if 0.5 * s > m:
        m = 0.5 * s
    return m


@njit(cache=True)
def pair_distance_sparse(i, j, r, c, nu, group, lptr, goff, gnxt, base, prob, bound):
    """SPEC section 3 distance between stacked tasks i and j (early exit above ``bound``)."""
    m = _head_distance(i, j, r, c, nu, bound)
    if m > bound:
        return m
    gi = group[i]
    gj = group[j]
    n_rows = lptr.shape[1] - 1
    bi = base[i]
    bj = base[j]
    if gi == gj:
        for row in range(n_rows):
            a0 = lptr[gi, row]
            a1 = lptr[gi, row + 1]
            s = 0.0
            for e in range(a0, a1):
                s += abs(prob[bi + e] - prob[bj + e])
            tv = 0.5 * s
            if tv > m:
                m = tv
                if m > bound:
                    return m
        return m
    oi = goff[gi]
    oj = goff[gj]
    for row in range(n_rows):
        a = lptr[gi, row]
        a1 = lptr[gi, row + 1]
        b = lptr[gj, row]
        b1 = lptr[gj, row + 1]
        s = 0.0
        while a < a1 and b < b1:
            sa = gnxt[oi + a]
            sb = gnxt[oj + b]
            if sa == sb:
                s += abs(prob[bi + a] - prob[bj + b])
                a += 1
                b += 1
            elif sa < sb:
                s += prob[bi + a]
                a += 1
            else:
                s += prob[bj + b]
                b += 1
        while a < a1:
            s += prob[bi + a]
            a += 1
        while b < b1:
            s += prob[bj + b]
            b += 1
        tv = 0.5 * s
        if tv > m:
            m = tv
            if m > bound:
                return m
    return m


@njit(cache=True)
def _fill_row_sparse(i, r, c, nu, group, lptr, goff, gnxt, base, prob, out):
    N = r.shape[0]
    for j in range(i + 1, N):
        d = pair_distance_sparse(i, j, r, c, nu, group, lptr, goff, gnxt, base, prob, INF)
        out[i, j] = d
        out[j, i] = d


@njit(parallel=True, cache=True)
def pairwise_sparse(r, c, nu, group, lptr, goff, gnxt, base, prob, out):
    """All-pairs distances into ``out`` (N, N) (diagonal set to 0).

    Parallel over balanced row pairs (i, N-1-i); each pair (i < j) is computed once by
    the thread owning row i, which writes both out[i, j] and out[j, i].
    """
    N = r.shape[0]
    half = (N + 1) // 2
    for b in prange(half):
        out[b, b] = 0.0
        _fill_row_sparse(b, r, c, nu, group, lptr, goff, gnxt, base, prob, out)
        i2 = N - 1 - b
        if i2 != b:
            out[i2, i2] = 0.0
            _fill_row_sparse(i2, r, c, nu, group, lptr, goff, gnxt, base, prob, out)


@njit(parallel=True, cache=True)
def distances_to(t, targets, r, c, nu, group, lptr, goff, gnxt, base, prob, bound, out):
    """out[k] = d(t, targets[k]) (early exit above ``bound``), parallel over targets."""
    for k in prange(targets.shape[0]):
        out[k] = pair_distance_sparse(t, targets[k], r, c, nu, group, lptr, goff, gnxt, base, prob,
                                      bound)


@njit(parallel=True, cache=True)
def affine_coordinates(x, V, out):
    """out[t, e] = sum_k x[t, k] V[e, k] (k in increasing order), parallel over tasks t.

    For an affine family, ``x`` (N, d) holds theta_t - theta0 and the rows of ``V`` (E, d)
    are the slopes of the model entries that enter the distance, so the difference of two
    tasks' coordinates is that entry's difference between the tasks.
    """
    d = V.shape[1]
    for t in prange(x.shape[0]):
        for e in range(V.shape[0]):
            s = 0.0
            for k in range(d):
                s += x[t, k] * V[e, k]
            out[t, e] = s


# ---------------------------------------------------------------------------
# dense path: stacked dense arrays, P (N, SA, S)
# ---------------------------------------------------------------------------

@njit(cache=True)
def pair_distance_dense(i, j, r, c, nu, P, bound):
    """SPEC section 3 distance from stacked dense arrays (early exit above ``bound``)."""
    m = _head_distance(i, j, r, c, nu, bound)
    if m > bound:
        return m
    n_rows = P.shape[1]
    S = P.shape[2]
    for row in range(n_rows):
        s = 0.0
        for e in range(S):
            s += abs(P[i, row, e] - P[j, row, e])
        tv = 0.5 * s
        if tv > m:
            m = tv
            if m > bound:
                return m
    return m


@njit(cache=True)
def _fill_row_dense(i, r, c, nu, P, out):
    N = r.shape[0]
    for j in range(i + 1, N):
        d = pair_distance_dense(i, j, r, c, nu, P, INF)
        out[i, j] = d
        out[j, i] = d


@njit(parallel=True, cache=True)
def pairwise_dense(r, c, nu, P, out):
    """All-pairs distances from stacked dense arrays into ``out`` (N, N)."""
    N = r.shape[0]
    half = (N + 1) // 2
    for b in prange(half):
        out[b, b] = 0.0
        _fill_row_dense(b, r, c, nu, P, out)
        i2 = N - 1 - b
        if i2 != b:
            out[i2, i2] = 0.0
            _fill_row_dense(i2, r, c, nu, P, out)


# ---------------------------------------------------------------------------
# pivot-pruned range search
# ---------------------------------------------------------------------------

@njit(cache=True)
def pair_within(i, j, eps, tol, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob):
    """Return (is_within, computed_exact) using pivot bounds first.

    Lower bound |d(i,p) - d(j,p)| > eps + tol -> not within (no exact distance);
    upper bound d(i,p) + d(j,p) <= eps - tol -> within (no exact distance);
    otherwise the exact distance with early exit above eps.
    """
    n_piv = Dp.shape[1]
    for p in range(n_piv):
        if abs(Dp[i, p] - Dp[j, p]) > eps + tol:
            return False, False
    for p in range(n_piv):
        if Dp[i, p] + Dp[j, p] <= eps - tol:
            return True, False
    d = pair_distance_sparse(i, j, r, c, nu, group, lptr, goff, gnxt, base, prob, eps)
    return d <= eps, True


@njit(parallel=True, cache=True)
def window_pairs(a0, a1, order, hi, woff, eps, tol, Dp, r, c, nu, group, lptr, goff, gnxt,
                 base, prob, flags, n_exact):
    """For sorted positions a in [a0, a1): test every later position b < hi[a].

    ``order`` sorts tasks by their distance to pivot 0, ``hi[a]`` ends the window of
    positions whose pivot-0 key is within eps (+tol) of position a's. ``flags`` gets 1 at
    ``woff[a - a0] + (b - a - 1)`` when the pair is within eps; ``n_exact[a - a0]`` counts
    the exact distances computed for row a.
    """
    for q in prange(a1 - a0):
        a = a0 + q
        i = order[a]
        cnt = 0
        off = woff[q]
        for b in range(a + 1, hi[a]):
            j = order[b]
            ok, ex = pair_within(i, j, eps, tol, Dp, r, c, nu, group, lptr, goff, gnxt, base, prob)
            flags[off + b - a - 1] = 1 if ok else 0
            if ex:
                cnt += 1
        n_exact[q] = cnt


@njit(cache=True)
def compact_pairs(a0, a1, order, hi, woff, flags, out_i, out_j):
    """Write the flagged pairs (task indices) of a block; returns how many."""
    k = 0
    for q in range(a1 - a0):
        a = a0 + q
        off = woff[q]
        for b in range(a + 1, hi[a]):
            if flags[off + b - a - 1]:
                out_i[k] = order[a]
                out_j[k] = order[b]
                k += 1
    return k


@njit(cache=True)
def pairs_to_csr(n, pi, pj):
    """Symmetric CSR (ptr, idx) from unordered pairs, with each i listed as its own neighbour.

    Rows are sorted by neighbour index.
    """
    counts = np.ones(n, dtype=np.int64)
    for k in range(pi.shape[0]):
        counts[pi[k]] += 1
        counts[pj[k]] += 1
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + counts[i]
    idx = np.empty(ptr[n], dtype=np.int64)
    fill = ptr[:-1].copy()
    for i in range(n):
        idx[fill[i]] = i
        fill[i] += 1
    for k in range(pi.shape[0]):
        a = pi[k]
        b = pj[k]
        idx[fill[a]] = b
        fill[a] += 1
        idx[fill[b]] = a
        fill[b] += 1
    for i in range(n):
        idx[ptr[i]:ptr[i + 1]] = np.sort(idx[ptr[i]:ptr[i + 1]])
    return ptr, idx
