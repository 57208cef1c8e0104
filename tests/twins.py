"""Slow, obviously-correct NumPy twins of the kernels (dense, straight from the formulas).

Tests compare every kernel against these; bench/ times the kernels next to them.
"""

from __future__ import annotations

import numpy as np


def dense_policy_matrix(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']."""
    return np.einsum("sa,sat->st", pi, P)


def evaluate_dense(P, r, c, nu0, gamma, pi):
    """Exact discounted values from nu0: returns (V_r, V_c (K,), occupancy (S, A)).

    d_s = (1-gamma) (I - gamma P_pi^T)^{-1} nu0,  mu(s, a) = d_s(s) pi(s, a),
    V_r = <mu, r> / (1-gamma),  V_c^k = <mu, c_k> / (1-gamma)   (SPEC section 2).
    """
    S = P.shape[0]
    Ppi = dense_policy_matrix(P, pi)
    d = (1.0 - gamma) * np.linalg.solve(np.eye(S) - gamma * Ppi.T, nu0)
    mu = d[:, None] * pi
    c3 = c if c.ndim == 3 else c[:, :, None]
    return float((mu * r).sum() / (1 - gamma)), np.einsum("sa,sak->k", mu, c3) / (1 - gamma), mu


def value_iteration_dense(P, r, gamma, tol=1e-10, max_iter=100_000):
    """Optimal unconstrained state values and a greedy policy, by dense Bellman sweeps."""
    S, A, _ = P.shape
    v = np.zeros(S)
    for _ in range(max_iter):
        q = r + gamma * P @ v
        v_new = q.max(axis=1)
        if np.max(np.abs(v_new - v)) * gamma / (1 - gamma) <= tol:
            v = v_new
            break
        v = v_new
    q = r + gamma * P @ v
    pi = np.zeros((S, A))
    pi[np.arange(S), q.argmax(axis=1)] = 1.0
    return v, pi


def rollout_per_step(P, r, c, nu0, gamma, pi, n_episodes, horizon, rng):
    """The authors' per-step loop: draw s0, then a ~ pi(s), s' ~ P(s, a) for H steps.

    Returns discounted returns (n,) and costs (n, K).
    """
    S, A = r.shape
    c3 = c if c.ndim == 3 else c[:, :, None]
    R = np.zeros(n_episodes)
    C = np.zeros((n_episodes, c3.shape[2]))
    for e in range(n_episodes):
        s = rng.choice(S, p=nu0)
        g = 1.0
        for _ in range(horizon):
            a = rng.choice(A, p=pi[s])
            R[e] += g * r[s, a]
            C[e] += g * c3[s, a]
            s = rng.choice(S, p=P[s, a])
            g *= gamma
    return R, C
