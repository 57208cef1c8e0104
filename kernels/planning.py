"""Planning kernels: value iteration, policy iteration and modified policy iteration (on the
compressed successor rows or a dense tensor) and the entropy-regularised primal-dual CMDP
solver (BASELINES.md section 2).

``ptr, nxt, prob`` are the CSR successor rows of a CMDP (pair ``i = s*A + a``).
Status codes: 0 converged / finished, 1 iteration cap reached, 2 non-finite values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .evaluation import EPS, FLOOR_ULPS, matvec

STATUS_OK = 0
STATUS_MAX_ITER = 1
STATUS_NONFINITE = 2


@njit(cache=True)
def _expect_next(ptr, nxt, prob, i, v):
    """sum_j P(s_j | pair i) v(s_j)."""
    tot = 0.0
    for j in range(ptr[i], ptr[i + 1]):
        tot += prob[j] * v[nxt[j]]
    return tot


@njit(cache=True)
def value_iteration_kernel(ptr, nxt, prob, R, gamma, tol, max_iter, v, q):
    """Gauss-Seidel value iteration (maximisation) with self-loop elimination.

    Sweep (in place, states in index order):
    ``v(s) <- max_a (R(s,a) + gamma sum_{s' != s} P(s'|s,a) v(s')) / (1 - gamma P(s|s,a))``,
    a gamma-contraction in max-norm with fixed point v*, so
    ``||v_k - v*|| <= gamma / (1 - gamma) ||v_k - v_{k-1}||``; stops when that bound is
    ``<= max(tol, FLOOR_ULPS eps gamma/(1-gamma) ||v_k||_inf)`` (the second term is the
    smallest change float64 round-off allows, so the stop is reachable for gamma near 1;
    the caller reports the bound actually met). Then ``q = R + gamma P v``. ``v`` (S,)
    holds the start point on entry and the result on exit; ``q`` (S, A) is filled.
    Returns (iterations, residual, status) where residual = ||v_k - v_{k-1}||_inf of the
    last sweep.
    """
    S, A = R.shape
    factor = gamma / (1.0 - gamma)
    residual = np.inf
    it = 0
    status = STATUS_MAX_ITER
    while it < max_iter:
        it += 1
        delta = 0.0
        vmax = 0.0
        for s in range(S):
            best = -np.inf
            for a in range(A):
                i = s * A + a
                acc = R[s, a]
                self_p = 0.0
                for j in range(ptr[i], ptr[i + 1]):
                    t = nxt[j]
                    if t == s:
                        self_p = prob[j]
                    else:
                        acc += gamma * prob[j] * v[t]
                val = acc / (1.0 - gamma * self_p)
                if val > best:
                    best = val
            d = abs(best - v[s])
            if d > delta:
                delta = d
            if abs(best) > vmax:
                vmax = abs(best)
            v[s] = best
        residual = delta
        if not np.isfinite(delta):
            status = STATUS_NONFINITE
            break
        if factor * delta <= max(tol, factor * FLOOR_ULPS * EPS * vmax):
            status = STATUS_OK
            break
    for s in range(S):
        for a in range(A):
            q[s, a] = R[s, a] + gamma * _expect_next(ptr, nxt, prob, s * A + a, v)
    return it, residual, status


@njit(cache=True)
def _entropy(p):
    """-sum p ln p with 0 ln 0 = 0."""
    h = 0.0
    for a in range(p.shape[0]):
        x = p[a]
        if x > 0.0:
            h -= x * np.log(x)
    return h


@njit(cache=True)
def _softmax_row(logits, out):
    """out = softmax(logits) (max-shifted; -inf logits give exact zeros)."""
    A = logits.shape[0]
    m = -np.inf
    for a in range(A):
        if logits[a] > m:
            m = logits[a]
    tot = 0.0
    for a in range(A):
        e = np.exp(logits[a] - m)
        out[a] = e
        tot += e
    for a in range(A):
        out[a] /= tot


@njit(cache=True)
def _cost_sweeps(ptr, nxt, prob, c, pi, gamma, vc, vc_new, max_sweeps, sweep_tol):
    """Warm-started Jacobi sweeps vc <- sum_a pi [c + gamma P vc] (all K columns at once).

    At least one sweep, at most max_sweeps, stop when max_{s,k} |vc_new - vc| <= sweep_tol.
    vc is updated in place. Returns the number of sweeps.
    """
    S, A = pi.shape
    K = c.shape[2]
    n = 0
    while n < max_sweeps:
        n += 1
        diff = 0.0
        for s in range(S):
            for k in range(K):
                vc_new[s, k] = 0.0
            for a in range(A):
                w = pi[s, a]
                if w == 0.0:
                    continue
                i = s * A + a
                for k in range(K):
                    acc = c[s, a, k]
                    for j in range(ptr[i], ptr[i + 1]):
                        acc += gamma * prob[j] * vc[nxt[j], k]
                    vc_new[s, k] += w * acc
        for s in range(S):
            for k in range(K):
                d = abs(vc_new[s, k] - vc[s, k])
                if d > diff:
                    diff = d
                vc[s, k] = vc_new[s, k]
        if diff <= sweep_tol:
            break
    return n


@njit(cache=True)
def primal_dual_kernel(ptr, nxt, prob, r, c, b, nu0, gamma, beta, pi_exponent, q_coef,
                       eta_xi, n_iter, max_sweeps, sweep_tol, alternating,
                       pi, xi, v, vc):
    """Entropy-regularised primal-dual CMDP solver (BASELINES.md 2b), whole loop compiled.

    For it = 1..n_iter:
      1. r_xi = r - sum_k xi_k c_k
      2. soft evaluation of pi for r_xi, warm-started Jacobi sweeps
         v <- sum_a pi (r_xi + gamma P v) + beta H(pi(.|s))  (>= 1, <= max_sweeps, stop on
         max-norm change <= sweep_tol)
      3. q = r_xi + gamma P v
      4. pi_new ∝ pi^pi_exponent exp(q_coef (q - max_a q))
         [pi_exponent = 1 - eta_p beta/(1-gamma), q_coef = eta_p/(1-gamma);
         pi_exponent = 0 gives softmax(q/beta) and 0^0 = 1]
      5. cost evaluation (warm-started sweeps on vc) of pi_new (alternating) or pi (simultaneous)
      6. xi_k <- max(0, xi_k - eta_xi (b_k - nu0 . vc_k))
      7. pi <- pi_new
    In/out: pi (S, A) holds the start policy on entry, xi (K,), v (S,), vc (S, K) the
    warm starts. Returns (iterations, total sweeps, status).
    """
    S, A = r.shape
    K = c.shape[2]
    rxi = np.empty((S, A))
    qrow = np.empty(A)
    logits = np.empty(A)
    pi_new = np.empty((S, A))
    v_new = np.empty(S)
    ent = np.empty(S)
    vc_new = np.empty((S, K))
    total_sweeps = 0
    for it in range(n_iter):
        # 1. Lagrangian reward
        for s in range(S):
            for a in range(A):
                x = r[s, a]
                for k in range(K):
                    x -= xi[k] * c[s, a, k]
                rxi[s, a] = x
            ent[s] = beta * _entropy(pi[s])
        # 2. soft policy evaluation (Jacobi, warm start)
        n = 0
        while n < max_sweeps:
            n += 1
            diff = 0.0
            for s in range(S):
                acc = ent[s]
                for a in range(A):
                    w = pi[s, a]
                    if w == 0.0:
                        continue
                    i = s * A + a
                    acc += w * (rxi[s, a] + gamma * _expect_next(ptr, nxt, prob, i, v))
                v_new[s] = acc
            for s in range(S):
                d = abs(v_new[s] - v[s])
                if d > diff:
                    diff = d
                v[s] = v_new[s]
            if diff <= sweep_tol:
                break
        total_sweeps += n
        # 3-4. q and the mirror / soft policy iteration step
        for s in range(S):
            qmax = -np.inf
            for a in range(A):
                qa = rxi[s, a] + gamma * _expect_next(ptr, nxt, prob, s * A + a, v)
                qrow[a] = qa
                if qa > qmax:
                    qmax = qa
            for a in range(A):
                lg = q_coef * (qrow[a] - qmax)
                if pi_exponent != 0.0:
                    p = pi[s, a]
                    if p > 0.0:
                        lg += pi_exponent * np.log(p)
                    else:
                        lg = -np.inf
                logits[a] = lg
            _softmax_row(logits, pi_new[s])
        # 5-6. dual step
        if alternating:
            total_sweeps += _cost_sweeps(ptr, nxt, prob, c, pi_new, gamma, vc, vc_new,
                                         max_sweeps, sweep_tol)
        else:
            total_sweeps += _cost_sweeps(ptr, nxt, prob, c, pi, gamma, vc, vc_new,
                                         max_sweeps, sweep_tol)
        for k in range(K):
            val = 0.0
            for s in range(S):
                val += nu0[s] * vc[s, k]
            x = xi[k] - eta_xi * (b[k] - val)
            xi[k] = x if x > 0.0 else 0.0
        # 7.
        for s in range(S):
            for a in range(A):
                pi[s, a] = pi_new[s, a]
        if not np.isfinite(v[0]) or not np.isfinite(xi[0]):
            return it + 1, total_sweeps, STATUS_NONFINITE
    for s in range(S):
        if not np.isfinite(v[s]):
            return n_iter, total_sweeps, STATUS_NONFINITE
        for a in range(A):
            if not np.isfinite(pi[s, a]):
                return n_iter, total_sweeps, STATUS_NONFINITE
    return n_iter, total_sweeps, STATUS_OK


# ---------------------------------------------------------------------------
# policy iteration and modified policy iteration (issue 13)
# ---------------------------------------------------------------------------
#
# Both solvers stop on the McQueen-Porteus bounds: for any v with d = T v - v (T the
# Bellman optimality operator, a monotone gamma-contraction that commutes with adding
# constants),
#     T v + gamma/(1-gamma) min(d) <= v* <= T v + gamma/(1-gamma) max(d),
# so the midpoint ``T v + gamma/(1-gamma) (max d + min d)/2`` is within
# ``gamma/(1-gamma) span(d)/2`` of v* in max-norm. The loops stop when that bound is <= tol.
# Greedy actions: the lowest index attaining the maximum; the current action is kept
# while it is within ``keep_tol`` of the maximum (this stops policy iteration from
# cycling between actions whose q-values differ by round-off only).
#
# The kernels take the CSR pair rows ``ptr, nxt, prob`` and ``P2``: the dense tensor
# ``P.reshape(S*A, S)`` (C-contiguous; the dense path, looped over with ``evaluation.matvec``)
# or an empty (0, 0) array (the sparse path). Exact evaluation uses LAPACK (np.linalg.solve).
# In/out: ``v`` (S,) start values on entry, the midpoint estimate on exit; ``sigma`` (S,)
# int64 start policy on entry, the last greedy policy on exit; ``q`` (S, A) filled with
# ``R + gamma P v`` of the returned v. Return (iterations, span of the last d, work, status)
# where work counts linear solves (PI) or partial-evaluation sweeps (MPI).


@njit(cache=True)
def _improve(S, A, R, gamma, ev, v, tv, sigma, keep_tol):
    """tv = max_a (R + gamma ev) with ev[i] = (P v)[i]; greedy sigma; returns (dmin, dmax)."""
    dmin = np.inf
    dmax = -np.inf
    for s in range(S):
        best = -np.inf
        arg = 0
        for a in range(A):
            qa = R[s, a] + gamma * ev[s * A + a]
            if qa > best:
                best = qa
                arg = a
        cur = sigma[s]
        if R[s, cur] + gamma * ev[s * A + cur] < best - keep_tol * (1.0 + abs(best)):
            sigma[s] = arg
        tv[s] = best
        d = best - v[s]
        if d < dmin:
            dmin = d
        if d > dmax:
            dmax = d
    return dmin, dmax


@njit(cache=True)
def _expect_all(ptr, nxt, prob, P2, v, ev):
    """ev[i] = sum_s' P(s' | pair i) v(s') for every pair: the dense P2 when it has rows,
    else the successor rows."""
    if P2.shape[0] > 0:
        matvec(P2, v, ev)
    else:
        for i in range(ev.shape[0]):
            ev[i] = _expect_next(ptr, nxt, prob, i, v)


@njit(cache=True)
def _midpoint(v, tv, gamma, dmin, dmax):
    """v = tv + gamma/(1-gamma) (dmin + dmax)/2 (the McQueen-Porteus midpoint)."""
    shift = gamma / (1.0 - gamma) * 0.5 * (dmin + dmax)
    for s in range(v.shape[0]):
        v[s] = tv[s] + shift


@njit(cache=True)
def _stop(gamma, dmin, dmax, tol, tv):
    """-1 = go on, STATUS_OK = the bound holds, STATUS_NONFINITE = values blew up.

    The bound is compared with ``max(tol, gamma/(1-gamma) FLOOR_ULPS eps ||T v||_inf)``:
    span(d) cannot shrink below a few dozen ulps of the values, so a smaller tol would
    never be met (gamma near 1); the caller reports the bound actually met."""
    span = dmax - dmin
    if not np.isfinite(span):
        return STATUS_NONFINITE
    vmax = 0.0
    for s in range(tv.shape[0]):
        if abs(tv[s]) > vmax:
            vmax = abs(tv[s])
    k = gamma / (1.0 - gamma)
    if k * 0.5 * span <= max(tol, k * FLOOR_ULPS * EPS * vmax):
        return STATUS_OK
    return -1


@njit(cache=True)
def _policy_rows(ptr, nxt, prob, P2, R, sigma, Ps, rs):
    """Dense P_sigma (S, S) and r_sigma (S,) of a deterministic policy."""
    S, A = R.shape
    dense = P2.shape[0] > 0
    for s in range(S):
        i = s * A + sigma[s]
        rs[s] = R[s, sigma[s]]
        if dense:
            for t in range(S):
                Ps[s, t] = P2[i, t]
        else:
            for t in range(S):
                Ps[s, t] = 0.0
            for j in range(ptr[i], ptr[i + 1]):
                Ps[s, nxt[j]] = prob[j]


@njit(cache=True)
def _finish(ptr, nxt, prob, P2, R, gamma, v, ev, q):
    """q = R + gamma P v of the returned values."""
    S, A = R.shape
    _expect_all(ptr, nxt, prob, P2, v, ev)
    for s in range(S):
        for a in range(A):
            q[s, a] = R[s, a] + gamma * ev[s * A + a]


@njit(cache=True)
def policy_iteration_kernel(ptr, nxt, prob, P2, R, gamma, tol, max_iter, keep_tol, v, sigma, q):
    """Howard's policy iteration: exact evaluation of sigma (LAPACK LU of the dense
    I - gamma P_sigma), greedy improvement; stops on the McQueen-Porteus bound or a stable
    policy. Dense path when P2 (S*A, S) has rows, else the successor rows."""
    S, A = R.shape
    system = np.empty((S, S))
    rhs = np.empty(S)
    ev = np.empty(S * A)
    tv = np.empty(S)
    it = 0
    span = np.inf
    status = STATUS_MAX_ITER
    while it < max_iter:
        it += 1
        _policy_rows(ptr, nxt, prob, P2, R, sigma, system, rhs)
        for s in range(S):
            for t in range(S):
                system[s, t] *= -gamma
            system[s, s] += 1.0
        v[:] = np.linalg.solve(system, rhs)
        _expect_all(ptr, nxt, prob, P2, v, ev)
        old = sigma.copy()
        dmin, dmax = _improve(S, A, R, gamma, ev, v, tv, sigma, keep_tol)
        span = dmax - dmin
        st = _stop(gamma, dmin, dmax, tol, tv)
        if st == STATUS_NONFINITE:
            status = st
            break
        if st == STATUS_OK or np.array_equal(old, sigma):
            _midpoint(v, tv, gamma, dmin, dmax)
            status = STATUS_OK
            break
    _finish(ptr, nxt, prob, P2, R, gamma, v, ev, q)
    return it, span, it, status


@njit(cache=True)
def modified_pi_kernel(ptr, nxt, prob, P2, R, gamma, tol, max_iter, n_sweeps, v, sigma, q):
    """Modified policy iteration: v <- T v (greedy sigma), then ``n_sweeps`` Jacobi sweeps
    v <- r_sigma + gamma P_sigma v; stops on the McQueen-Porteus bound. Dense path (P_sigma
    gathered into an S x S matrix once per improvement) when P2 (S*A, S) has rows, else
    sweeps over the successor rows."""
    S, A = R.shape
    dense = P2.shape[0] > 0
    ev = np.empty(S * A)
    tv = np.empty(S)
    n_dense = S if dense and n_sweeps > 0 else 0
    Ps = np.empty((n_dense, n_dense))
    rs = np.empty(S)
    it = 0
    work = 0
    span = np.inf
    status = STATUS_MAX_ITER
    while it < max_iter:
        it += 1
        _expect_all(ptr, nxt, prob, P2, v, ev)
        dmin, dmax = _improve(S, A, R, gamma, ev, v, tv, sigma, 0.0)
        span = dmax - dmin
        st = _stop(gamma, dmin, dmax, tol, tv)
        if st != -1:
            status = st
            if st == STATUS_OK:
                _midpoint(v, tv, gamma, dmin, dmax)
            break
        v[:] = tv
        if n_dense > 0:
            _policy_rows(ptr, nxt, prob, P2, R, sigma, Ps, rs)
        for _ in range(n_sweeps):
            if n_dense > 0:
                matvec(Ps, v, tv)
            else:
                for s in range(S):
                    tv[s] = _expect_next(ptr, nxt, prob, s * A + sigma[s], v)
            for s in range(S):
                v[s] = R[s, sigma[s]] + gamma * tv[s]
        work += n_sweeps
    _finish(ptr, nxt, prob, P2, R, gamma, v, ev, q)
    return it, span, work, status
