"""Policy-gradient batches for LB-SGD (BASELINES.md 6b, 6e): reward-to-go form, fixed-order sums.

The reference estimator (G(PO)MDP, "reward x cumulative score") of one trajectory of
exactly H steps is

    g_r = sum_t gamma^t r_t z_t,   z_t = sum_{t' <= t} grad_theta ln pi(a_t' | s_t'),

with the softmax score ``grad_theta ln pi(a|s) = e_a - pi(.|s)`` on row ``s`` only. Swapping
the sums gives the reward-to-go form used here,

    g_r = sum_t' (e_{a_t'} - pi(.|s_t')) G_t',   G_t' = sum_{t >= t'} gamma^t r_t

(discounted from time 0, not from t'), and, since the score is linear, the whole batch
reduces to one weight table ``W[s, a] = sum over visits of (s, a) of G_t``:

    g_r[s, a] = W[s, a] - pi[s, a] * sum_a' W[s, a'].

That is O(1) work per step (O(K) with K constraints) instead of O(S A). Costs are the
same with ``c[s, a, k]``; ``J_c[k] = sum_t gamma^t c_t`` is ``G_0`` of the cost.

Determinism: trajectory ``j`` of a batch is episode ``first + j`` of the run, i.e. stream
``first + j`` of ``seed`` (``trajectory.sample_episode``). Trajectories are grouped in
chunks of a size fixed by the caller (never by the thread count); each chunk is summed
serially into its own partial table, ``prange`` runs over chunks, and the partials are
added serially in chunk order. The result is bit-identical on any number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .trajectory import sample_episode

__all__ = ["accumulate_chunk", "gradient_batch", "project_scores"]


@njit(cache=True)
def accumulate_chunk(seed, first, lo, hi, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf, r, c,
                     disc, absorbing, w_r, w_c, j_r, j_c, states, actions):
    """Add trajectories ``lo..hi-1`` (episodes ``first + j``) to the weight tables.

    ``w_r[s, a] += G_t`` (reward-to-go from time 0 discounting) at every visit of
    ``(s, a)``, ``w_c[k, s, a]`` likewise for cost k; ``j_r[0] += G_0`` and
    ``j_c[k] += G_0^c``. Episodes run exactly ``disc.size`` steps (no early stop).
    ``states``/``actions`` are scratch of length >= ``disc.size + 1``.
    """
    horizon = disc.size
    K = c.shape[2]
    g_c = np.empty(K)
    for j in range(lo, hi):
        sample_episode(seed, first + j, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf, horizon,
                       False, absorbing, states, actions)
        g_r = 0.0
        for k in range(K):
            g_c[k] = 0.0
        for t in range(horizon - 1, -1, -1):
            s = states[t]
            a = actions[t]
            d = disc[t]
            g_r += d * r[s, a]
            w_r[s, a] += g_r
            for k in range(K):
                g_c[k] += d * c[s, a, k]
                w_c[k, s, a] += g_c[k]
        j_r[0] += g_r
        for k in range(K):
            j_c[k] += g_c[k]


@njit(cache=True)
def project_scores(pi, w, out):
    """``out[s, a] = w[s, a] - pi[s, a] * sum_a' w[s, a']`` (the softmax score applied to W)."""
    S, A = pi.shape
    for s in range(S):
        tot = 0.0
        for a in range(A):
            tot += w[s, a]
        for a in range(A):
            out[s, a] = w[s, a] - pi[s, a] * tot


@njit(cache=True, parallel=True)
def gradient_batch(seed, first, n, chunk, pi, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf, r,
                   c, gamma, horizon, absorbing, g_r, g_c, j_r, j_c):
    """Batch means of the LB-SGD estimator over ``n`` trajectories of ``horizon`` steps.

    Writes ``g_r`` (S, A), ``g_c`` (K, S, A), ``j_r`` (1,) and ``j_c`` (K,): the averages over
    the batch of the reference estimator (module docstring). Trajectory ``j`` is
    episode ``first + j`` of ``seed``. ``chunk`` >= 1 trajectories per work unit; the
    result does not depend on the thread count. Returns 0 (status OK).
    """
    S, A = pi.shape
    K = c.shape[2]
    n_chunks = (n + chunk - 1) // chunk
    disc = np.empty(horizon)
    acc = 1.0
    for t in range(horizon):
        disc[t] = acc
        acc *= gamma
    part_r = np.zeros((n_chunks, S, A))
    part_c = np.zeros((n_chunks, K, S, A))
    part_jr = np.zeros((n_chunks, 1))
    part_jc = np.zeros((n_chunks, K))
    for ch in prange(n_chunks):
        states = np.empty(horizon + 1, np.int64)
        actions = np.empty(horizon + 1, np.int64)
        lo = ch * chunk
        hi = min(n, lo + chunk)
        accumulate_chunk(seed, first, lo, hi, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf, r, c,
                         disc, absorbing, part_r[ch], part_c[ch], part_jr[ch], part_jc[ch],
                         states, actions)
    # fixed-order combination of the partials
    w_r = np.zeros((S, A))
    w_c = np.zeros((K, S, A))
    jr = 0.0
    for k in range(K):
        j_c[k] = 0.0
    for ch in range(n_chunks):
        w_r += part_r[ch]
        w_c += part_c[ch]
        jr += part_jr[ch, 0]
        for k in range(K):
            j_c[k] += part_jc[ch, k]
    inv = 1.0 / max(n, 1)
    project_scores(pi, w_r, g_r)
    for s in range(S):
        for a in range(A):
            g_r[s, a] *= inv
    for k in range(K):
        project_scores(pi, w_c[k], g_c[k])
        for s in range(S):
            for a in range(A):
                g_c[k, s, a] *= inv
        j_c[k] *= inv
    j_r[0] = jr * inv
    return 0
