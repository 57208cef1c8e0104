"""Exact policy evaluation on the compressed successor rows of a CMDP.

Notation: ``ptr, nxt, prob`` are the CSR successor rows of a CMDP (pair ``i = s*A + a``
has successors ``nxt[ptr[i]:ptr[i+1]]`` with probabilities ``prob[...]``), ``r`` is
(S, A), ``c`` is (S, A, K), ``pi`` is (S, A). The policy's own transition matrix
``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']`` is built once in CSR form (duplicates merged)
and every method works on it:

* dense: LU solve of ``(I - gamma P_pi) V = [r_pi, c_pi]`` (S x S); ``policy_matrix_dense``
  builds P_pi straight from the pair rows in O(nnz) (no CSR merge and sort).
* ``solve_values_span`` : Jacobi sweeps on the dense P_pi with the McQueen-Porteus (span)
  stop; ``values_matrix`` falls back to the LU when a sweep budget runs out.
* ``solve_values_gs`` : Gauss-Seidel sweeps with self-loop elimination, a gamma-contraction
  in max-norm, stopped by the a-posteriori bound ``gamma/(1-gamma) ||v_k - v_{k-1}|| <=
  rtol ||v_k||`` per column.
* ``solve_occupancy_gs`` (and a dense LU of the transposed system) : the adjoint system
  ``(I - gamma P_pi^T) d = (1 - gamma) nu0``; the iterative one certifies its stop with the
  residual bound ``||d - d*||_1 <= ||res||_1 / (1 - gamma)``.

Status codes: 0 converged, 1 sweep cap reached.

The tolerances passed to the iterative kernels are the ones float64 can reach: the
orchestrator raises a requested ``rtol`` to :func:`reachable_rtol` /
:func:`reachable_occupancy_rtol` before the call (a stop test below round-off never fires).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

STATUS_OK = 0
STATUS_MAX_ITER = 1

#: Machine epsilon of float64.
EPS = 2.220446049250313e-16
#: A sweep's max-norm change (relative to the largest value) and the l1 residual of the
#: occupancy system (relative to ||d||_1 = 1, per mean row entry) cannot be expected below
#: this many epsilons: round-off in the row sums keeps them there.
FLOOR_ULPS = 32.0


@njit(cache=True)
def reachable_rtol(gamma, rtol):
    """Smallest relative accuracy the value stop ``gamma/(1-gamma) delta <= rtol vmax`` can
    certify in float64: ``max(rtol, FLOOR_ULPS eps gamma / (1 - gamma))``."""
    return max(rtol, FLOOR_ULPS * EPS * gamma / (1.0 - gamma))


@njit(cache=True)
def reachable_occupancy_rtol(gamma, rtol, mean_row):
    """Same for the occupancy stop ``||res||_1 <= rtol (1 - gamma)``: the l1 residual's
    floor is ``FLOOR_ULPS eps (1 + mean_row)``, so ``max(rtol, floor / (1 - gamma))``."""
    return max(rtol, FLOOR_ULPS * EPS * (1.0 + mean_row) / (1.0 - gamma))


@njit(cache=True)
def policy_matrix_csr(ptr, nxt, prob, pi):
    """CSR rows of P_pi (S rows); returns (pptr, pcol, pval), columns sorted per row."""
    S, A = pi.shape
    nnz_max = ptr[S * A]
    pptr = np.zeros(S + 1, dtype=np.int64)
    pcol = np.empty(nnz_max, dtype=np.int64)
    pval = np.empty(nnz_max, dtype=np.float64)
    acc = np.zeros(S, dtype=np.float64)
    seen = np.zeros(S, dtype=np.bool_)
    touched = np.empty(S, dtype=np.int64)
    k = 0
    for s in range(S):
        nt = 0
        for a in range(A):
            w = pi[s, a]
            if w == 0.0:
                continue
            i = s * A + a
            for j in range(ptr[i], ptr[i + 1]):
                t = nxt[j]
                if not seen[t]:
                    seen[t] = True
                    touched[nt] = t
                    nt += 1
                acc[t] += w * prob[j]
        # insertion sort of the (few) touched columns
        for m in range(1, nt):
            key = touched[m]
            q = m - 1
            while q >= 0 and touched[q] > key:
                touched[q + 1] = touched[q]
                q -= 1
            touched[q + 1] = key
        for m in range(nt):
            t = touched[m]
            pcol[k] = t
            pval[k] = acc[t]
            k += 1
            acc[t] = 0.0
            seen[t] = False
        pptr[s + 1] = k
    return pptr, pcol[:k].copy(), pval[:k].copy()


@njit(cache=True)
def policy_rhs(r, c, pi):
    """rhs[s, 0] = sum_a pi r, rhs[s, 1 + k] = sum_a pi c_k; shape (S, 1 + K)."""
    S, A = pi.shape
    K = c.shape[2]
    rhs = np.zeros((S, 1 + K))
    for s in range(S):
        for a in range(A):
            w = pi[s, a]
            if w == 0.0:
                continue
            rhs[s, 0] += w * r[s, a]
            for k in range(K):
                rhs[s, 1 + k] += w * c[s, a, k]
    return rhs


@njit(cache=True)
def matvec(P, v, out):
    """out = P v for a C-contiguous (n, m) matrix, four partial sums per row in a fixed order.

    A plain loop rather than BLAS: within 2x of a single-threaded dgemv, independent of
    the BLAS thread count (deterministic), and 10x faster than threaded BLAS on a busy
    2-core machine, where BLAS threads spin against each other.
    """
    n, m = P.shape
    for i in range(n):
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        j = 0
        while j + 4 <= m:
            a0 += P[i, j] * v[j]
            a1 += P[i, j + 1] * v[j + 1]
            a2 += P[i, j + 2] * v[j + 2]
            a3 += P[i, j + 3] * v[j + 3]
            j += 4
        while j < m:
            a0 += P[i, j] * v[j]
            j += 1
        out[i] = (a0 + a1) + (a2 + a3)


@njit(cache=True)
def policy_matrix_dense(ptr, nxt, prob, pi):
    """Dense P_pi (S, S) straight from the pair rows.

    One pass over the successor entries of the pairs with ``pi > 0`` (no merge, no sort),
    so its cost is O(nnz) even for dense random tasks where the CSR of P_pi would need
    sorting.
    """
    S, A = pi.shape
    Ppi = np.zeros((S, S))
    for s in range(S):
        for a in range(A):
            w = pi[s, a]
            if w == 0.0:
                continue
            i = s * A + a
            for j in range(ptr[i], ptr[i + 1]):
                Ppi[s, nxt[j]] += w * prob[j]
    return Ppi


@njit(cache=True)
def _to_system(Ppi, gamma):
    """Ppi <- I - gamma Ppi in place."""
    S = Ppi.shape[0]
    for s in range(S):
        for t in range(S):
            Ppi[s, t] *= -gamma
        Ppi[s, s] += 1.0
    return Ppi


@njit(cache=True)
def dense_system_pairs(ptr, nxt, prob, pi, gamma):
    """Dense I - gamma P_pi, shape (S, S), from the pair rows in O(nnz + S^2)."""
    return _to_system(policy_matrix_dense(ptr, nxt, prob, pi), gamma)


@njit(cache=True)
def solve_values_span(Ppi, rhs, gamma, rtol, max_sweeps):
    """Jacobi sweeps ``v <- rhs + gamma P_pi v`` (per column, from 0) with the span stop.

    For the affine contraction ``T v = rhs + gamma P_pi v`` and ``d = T v - v``,
    ``T v + gamma/(1-gamma) min(d) <= v_pi <= T v + gamma/(1-gamma) max(d)`` (McQueen-
    Porteus), so a column stops when ``gamma/(1-gamma) span(d)/2 <= rtol ||T v||_inf`` and
    takes the midpoint. On well-mixing chains (dense random tasks) span(d) shrinks far
    faster than gamma^k. Returns (V (S, m), largest sweep count, status).
    """
    S, m = rhs.shape
    V = np.zeros((S, m))
    v = np.empty(S)
    tv = np.empty(S)
    k = gamma / (1.0 - gamma)
    most = 0
    for col in range(m):
        for s in range(S):
            v[s] = 0.0
        done = False
        sweep = 0
        while sweep < max_sweeps and not done:
            sweep += 1
            matvec(Ppi, v, tv)
            dmin = np.inf
            dmax = -np.inf
            vmax = 0.0
            for s in range(S):
                t = rhs[s, col] + gamma * tv[s]
                d = t - v[s]
                if d < dmin:
                    dmin = d
                if d > dmax:
                    dmax = d
                if abs(t) > vmax:
                    vmax = abs(t)
                tv[s] = t
            if k * 0.5 * (dmax - dmin) <= rtol * vmax:
                shift = k * 0.5 * (dmax + dmin)
                for s in range(S):
                    V[s, col] = tv[s] + shift
                done = True
            else:
                for s in range(S):
                    v[s] = tv[s]
        if sweep > most:
            most = sweep
        if not done:
            return V, most, STATUS_MAX_ITER
    return V, most, STATUS_OK


@njit(cache=True)
def gs_sweep_bound(gamma, rtol):
    """A sweep count after which the Gauss-Seidel stopping rule is guaranteed to fire."""
    if gamma <= 0.0:
        return 2
    # from v0 = 0: ||v_n - v*|| <= gamma^n ||v*||, so the rule fires once
    # gamma^(n-1) (1 + gamma) gamma / (1 - gamma) <= rtol (1 - gamma^n)
    target = rtol * (1.0 - gamma) / (4.0 * gamma)
    if not target < 1.0:  # tiny (even denormal) gamma: the rule fires at once (also catches inf)
        return 4
    return int(np.log(target) / np.log(gamma)) + 4


@njit(cache=True)
def solve_values_gs(pptr, pcol, pval, rhs, gamma, rtol, max_sweeps):
    """Gauss-Seidel for (I - gamma P_pi) V = rhs with self-loop elimination.

    Each sweep is a gamma-contraction in max-norm with fixed point V, so
    ``||V - v_k||_inf <= gamma / (1 - gamma) ||v_k - v_{k-1}||_inf``; the loop stops
    when that bound is <= rtol * ||v_k||_inf for every column. Returns (V, sweeps, status,
    bound) where bound is the largest ``gamma/(1-gamma) delta / vmax`` of the last sweep.
    """
    S, m = rhs.shape
    V = np.zeros((S, m))
    diag = np.zeros(S)
    for s in range(S):
        for j in range(pptr[s], pptr[s + 1]):
            if pcol[j] == s:
                diag[s] = 1.0 / (1.0 - gamma * pval[j])
        if diag[s] == 0.0:
            diag[s] = 1.0
    delta = np.zeros(m)
    vmax = np.zeros(m)
    acc = np.zeros(m)
    factor = gamma / (1.0 - gamma)
    for sweep in range(1, max_sweeps + 1):
        for col in range(m):
            delta[col] = 0.0
            vmax[col] = 0.0
        for s in range(S):
            for col in range(m):
                acc[col] = rhs[s, col]
            for j in range(pptr[s], pptr[s + 1]):
                t = pcol[j]
                if t != s:
                    g = gamma * pval[j]
                    for col in range(m):
                        acc[col] += g * V[t, col]
            for col in range(m):
                new = acc[col] * diag[s]
                d = abs(new - V[s, col])
                if d > delta[col]:
                    delta[col] = d
                a = abs(new)
                if a > vmax[col]:
                    vmax[col] = a
                V[s, col] = new
        done = True
        bound = 0.0
        for col in range(m):
            if factor * delta[col] > rtol * vmax[col]:
                done = False
            if vmax[col] > 0.0 and factor * delta[col] / vmax[col] > bound:
                bound = factor * delta[col] / vmax[col]
        if done:
            return V, sweep, STATUS_OK, bound
    return V, max_sweeps, STATUS_MAX_ITER, bound


@njit(cache=True)
def transpose_csr(pptr, pcol, pval):
    """CSR of P_pi^T (rows are the columns of P_pi, sorted)."""
    S = pptr.shape[0] - 1
    nnz = pptr[S]
    tptr = np.zeros(S + 1, dtype=np.int64)
    for j in range(nnz):
        tptr[pcol[j] + 1] += 1
    for s in range(S):
        tptr[s + 1] += tptr[s]
    fill = tptr[:-1].copy()
    tcol = np.empty(nnz, dtype=np.int64)
    tval = np.empty(nnz, dtype=np.float64)
    for s in range(S):
        for j in range(pptr[s], pptr[s + 1]):
            t = pcol[j]
            tcol[fill[t]] = s
            tval[fill[t]] = pval[j]
            fill[t] += 1
    return tptr, tcol, tval


@njit(cache=True)
def _occupancy_residual_l1(tptr, tcol, tval, d, b, gamma):
    S = d.shape[0]
    res = 0.0
    for s in range(S):
        acc = b[s] - d[s]
        for j in range(tptr[s], tptr[s + 1]):
            acc += gamma * tval[j] * d[tcol[j]]
        res += abs(acc)
    return res


@njit(cache=True)
def solve_occupancy_gs(pptr, pcol, pval, nu0, gamma, rtol, max_sweeps):
    """Gauss-Seidel on (I - gamma P_pi^T) d = (1 - gamma) nu0.

    A sweep whose change passes ``gamma/(1-gamma) ||d_k - d_{k-1}||_1 <= rtol`` triggers a
    residual check, and the loop stops only when the rigorous bound
    ``||d - d*||_1 <= ||(1-gamma) nu0 - (I - gamma P_pi^T) d||_1 / (1 - gamma) <= rtol``
    holds (``||d*||_1 = 1``). Returns (d, sweeps, status, bound) where bound is the last
    certified ``||res||_1 / (1 - gamma)`` (inf when no residual check ran).
    """
    S = nu0.shape[0]
    tptr, tcol, tval = transpose_csr(pptr, pcol, pval)
    b = (1.0 - gamma) * nu0
    diag = np.ones(S)
    for s in range(S):
        for j in range(tptr[s], tptr[s + 1]):
            if tcol[j] == s:
                diag[s] = 1.0 / (1.0 - gamma * tval[j])
    d = np.zeros(S)
    factor = gamma / (1.0 - gamma)
    bound = np.inf
    for sweep in range(1, max_sweeps + 1):
        delta = 0.0
        for s in range(S):
            acc = b[s]
            for j in range(tptr[s], tptr[s + 1]):
                t = tcol[j]
                if t != s:
                    acc += gamma * tval[j] * d[t]
            new = acc * diag[s]
            delta += abs(new - d[s])
            d[s] = new
        if factor * delta <= rtol or sweep == max_sweeps:
            bound = _occupancy_residual_l1(tptr, tcol, tval, d, b, gamma) / (1.0 - gamma)
            if bound <= rtol:
                return d, sweep, STATUS_OK, bound
    return d, max_sweeps, STATUS_MAX_ITER, bound


MODE_ITERATIVE = 0
MODE_DENSE = 1
MODE_SPAN = 2


@njit(cache=True)
def values_matrix(ptr, nxt, prob, r, c, pi, gamma, mode, rtol, max_sweeps):
    """State values V (S, 1 + K) of a policy: column 0 reward, 1.. costs. Returns (V, status).

    mode: MODE_DENSE (LU of I - gamma P_pi), MODE_ITERATIVE (Gauss-Seidel on the CSR of
    P_pi, at most ``max_sweeps``), MODE_SPAN (Jacobi on the dense P_pi with the span stop
    for at most ``max_sweeps``, then the LU if it has not converged: at most about twice
    the cheaper of the two). Returns (V, status, bound): bound is the Gauss-Seidel
    certified relative error of the last sweep (0 for the LU and the span stop).
    """
    rhs = policy_rhs(r, c, pi)
    if mode == MODE_ITERATIVE:
        pptr, pcol, pval = policy_matrix_csr(ptr, nxt, prob, pi)
        V, sweeps, status, bound = solve_values_gs(pptr, pcol, pval, rhs, gamma, rtol,
                                                   max_sweeps)
        return V, status, bound
    Ppi = policy_matrix_dense(ptr, nxt, prob, pi)
    if mode == MODE_SPAN:
        V, sweeps, status = solve_values_span(Ppi, rhs, gamma, rtol, max_sweeps)
        if status == STATUS_OK:
            return V, status, 0.0
    return np.linalg.solve(_to_system(Ppi, gamma), rhs), STATUS_OK, 0.0


@njit(cache=True)
def evaluate_one(ptr, nxt, prob, r, c, nu0, pi, gamma, mode, rtol, max_sweeps, out, bound):
    """Values from nu0 of one policy into out (1 + K,): [V_r, V_c^0, ...]; bound[0] gets the
    certified relative error of the iterative solver. Returns status."""
    V, status, b = values_matrix(ptr, nxt, prob, r, c, pi, gamma, mode, rtol, max_sweeps)
    bound[0] = b
    m = V.shape[1]
    S = nu0.shape[0]
    for col in range(m):
        tot = 0.0
        for s in range(S):
            tot += nu0[s] * V[s, col]
        out[col] = tot
    return status


@njit(cache=True, parallel=True)
def evaluate_batch(ptr, nxt, prob, r, c, nu0, pis, gamma, mode, rtol, max_sweeps, out, status,
                   bound):
    """Values of n policies (n, S, A) into out (n, 1 + K), status (n,), bound (n,);
    parallel over policies."""
    n = pis.shape[0]
    for i in prange(n):
        status[i] = evaluate_one(ptr, nxt, prob, r, c, nu0, pis[i], gamma, mode, rtol,
                                 max_sweeps, out[i], bound[i:i + 1])


@njit(cache=True, parallel=True)
def evaluate_affine_tasks(ptr, nxt, prob0, dprob, r0, dr, c0, dc, nu00, dnu0, dtheta, pis, gamma,
                          mode, rtol, max_sweeps, out, status):
    """Values of m policies on n tasks whose data are affine in theta; parallel over tasks.

    Task t has ``prob = prob0 + sum_k dtheta[t, k] dprob[k]`` on the fixed successor lists
    (ptr, nxt), and likewise r (S, A), c (S, A, K) and nu0 (S,). ``out`` (n, m, 1 + K),
    ``status`` (n, m). Each task is built and solved in its own iteration, so the results
    do not depend on the thread count.
    """
    n, d = dtheta.shape
    m = pis.shape[0]
    for t in prange(n):
        bound = np.zeros(1)
        prob = prob0.copy()
        r = r0.copy()
        c = c0.copy()
        nu0 = nu00.copy()
        for k in range(d):
            x = dtheta[t, k]
            if x != 0.0:
                prob += x * dprob[k]
                r += x * dr[k]
                c += x * dc[k]
                nu0 += x * dnu0[k]
        for i in range(m):
            status[t, i] = evaluate_one(ptr, nxt, prob, r, c, nu0, pis[i], gamma, mode, rtol,
                                        max_sweeps, out[t, i], bound)
