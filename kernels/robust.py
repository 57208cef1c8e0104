"""Robust value iteration over the (s, a)-rectangular hull of several tasks' transitions.

The tasks share (S, A) and their transition rows are given in one CSR layout over the
union of their supports: ``P_stack[m, j]`` is task m's probability of the successor
``nxt[j]``, for the pairs whose rows are ``ptr[i]:ptr[i+1]`` (i = s * A + a). The hull
of the rows {P_m(.|s, a)} is a polytope whose worst case for a linear objective is
attained at a vertex, i.e. at one of the tasks, so the robust Bellman operator is

    (T v)(s) = min_a [ w(s, a) + gamma * max_m sum_j P_stack[m, j] v(nxt[j]) ]

for the combined per-step cost ``w = c - lam * r``. Iterating it from v = 0 converges
(gamma-contraction) to the worst-case-optimal values; the greedy policy is returned.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .evaluation import EPS, FLOOR_ULPS


@njit(cache=True)
def _worst_next(P_stack, ptr, nxt, row, v):
    best = -np.inf
    for m in range(P_stack.shape[0]):
        acc = 0.0
        for j in range(ptr[row], ptr[row + 1]):
            acc += P_stack[m, j] * v[nxt[j]]
        if acc > best:
            best = acc
    return best


@njit(cache=True)
def robust_value_iteration(P_stack, ptr, nxt, w, gamma, tol, max_iter, v_out, policy_out):
    """Minimise the worst-case discounted sum of w over the rectangular hull.

    Parameters
    ----------
    P_stack : (n_tasks, nnz) float64
    ptr : (S*A + 1,) int64, nxt : (nnz,) int64
    w : (S, A) float64, per-step cost to minimise
    gamma, tol : float; max_iter : int
    v_out : (S,) float64, out: robust values
    policy_out : (S,) int64, out: greedy action per state

    Returns
    -------
    (iterations, bound) ; bound = gamma/(1-gamma) ||v_k - v_{k-1}||_inf >= ||v - v*||_inf.
    The loop stops once bound <= max(tol, FLOOR_ULPS eps gamma/(1-gamma) ||v||_inf) (a tol
    below float64 round-off is raised to that floor, so gamma near 1 stops); a bound above
    that means max_iter was hit.
    """
    S, A = w.shape
    v = np.zeros(S)
    v_new = np.empty(S)
    residual = np.inf
    it = 0
    while it < max_iter:
        it += 1
        residual = 0.0
        vmax = 0.0
        for s in range(S):
            best = np.inf
            for a in range(A):
                q = w[s, a] + gamma * _worst_next(P_stack, ptr, nxt, s * A + a, v)
                if q < best:
                    best = q
            v_new[s] = best
            d = abs(best - v[s])
            if d > residual:
                residual = d
            if abs(best) > vmax:
                vmax = abs(best)
        for s in range(S):
            v[s] = v_new[s]
        # ||v - v*|| <= gamma/(1-gamma) ||v_k - v_{k-1}||
        if residual * gamma <= max(tol * (1.0 - gamma), FLOOR_ULPS * EPS * gamma * vmax):
            break
    for s in range(S):
        best = np.inf
        arg = 0
        for a in range(A):
            q = w[s, a] + gamma * _worst_next(P_stack, ptr, nxt, s * A + a, v)
            if q < best:
                best = q
                arg = a
        policy_out[s] = arg
        v_out[s] = v[s]
    return it, residual * gamma / (1.0 - gamma) if gamma > 0 else residual
