"""Safe Meta-RL adaptation step (BASELINES.md section 4b): padded paths, MC advantages, dual loop.

Three kernels, called once per adaptation step by
:func:`safemeta_fast.baselines.safe_meta_rl.safe_meta_rl`:

* :func:`sample_padded_block` draws the step's episodes with
  :func:`.trajectory.sample_episode` (stream = global episode index) and pads each one
  that reaches an absorbing state ``g`` after ``T`` steps with copies of
  ``(g, action 0)`` up to the horizon;
* :func:`mc_advantages` runs the backward discounted sums over the padded paths and
  scatter-adds every visit into the Q / V sums (every-visit Monte Carlo, advantages 0
  on unvisited pairs), the mean discounted cost ``J_c`` and the buffer's state histogram;
* :func:`dual_policy` runs the projected dual descent on ``u`` (one entry per
  constraint) and returns the closed-form policy of the last pass.

All three kernels are serial. A step's 50 episodes take ~40 us on one thread; a
``prange`` over them cost ~10 ms per step in thread wake-ups on a loaded 2-core machine,
and the dual loop is sequential in ``u``. Parallel work belongs one level up (several
runs / test tasks at once). All reductions run serially in a fixed order (episode by
episode, time step by time step backwards), so results never depend on the thread count.
The resampling of the dual loop uses one stream, ``RESAMPLE_STREAM_BASE + step``, drawn
sequentially: dual iteration ``i``, draw ``j`` is uniform number ``i * n + j`` of that
stream and picks the buffer entry ``floor(u * n)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rng import stream_state, u64_to_unit, xoshiro256pp_next
from .trajectory import sample_episode

__all__ = ["RESAMPLE_STREAM_BASE", "sample_padded_block", "mc_advantages", "dual_policy"]

#: Stream index of the dual resampling of adaptation step 0 (step ``i`` uses base + i);
#: episode streams use the global episode index, far below this.
RESAMPLE_STREAM_BASE = 1 << 60


@njit(cache=True)
def sample_padded_block(seed, first_index, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf,
                        absorbing, states, actions, lengths):
    """Sample ``N = states.shape[0]`` padded episodes of horizon ``H = states.shape[1]``.

    Episode ``j`` uses stream ``first_index + j``. It stops right after the first step
    that lands in an absorbing state ``g`` (after ``T`` steps); steps ``T..H-1`` are then
    ``(g, 0)``. Writes ``states`` / ``actions`` (N, H) int64 and ``lengths[j] = T``.
    """
    n, horizon = states.shape
    for j in range(n):
        st = np.empty(horizon + 1, np.int64)
        ac = np.empty(horizon + 1, np.int64)
        T = sample_episode(seed, first_index + j, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf,
                           horizon, True, absorbing, st, ac)
        for t in range(T):
            states[j, t] = st[t]
            actions[j, t] = ac[t]
        g = st[T]
        for t in range(T, horizon):
            states[j, t] = g
            actions[j, t] = 0
        lengths[j] = T


@njit(cache=True)
def mc_advantages(states, actions, r, c, gamma, adv_r, adv_c, j_c, hist):
    """Every-visit Monte-Carlo advantages from padded paths (BASELINES.md 4b).

    For each path, backwards: ``G_t = r(s_t, a_t) + gamma G_{t+1}`` (and per constraint
    for ``c``), truncated at the path's end. Every visit adds ``G_t`` to the sums of
    ``(s_t, a_t)`` and of ``s_t``. Writes ``adv_r`` (S, A) ``= Q_r - V_r`` and ``adv_c``
    (S, A, K) on visited pairs, 0 elsewhere; ``j_c`` (K,) = mean over paths of ``G^c_0``;
    ``hist`` (S,) int64 = visits of each state (the histogram of the state buffer).
    """
    n, horizon = states.shape
    S, A = r.shape
    K = c.shape[2]
    q_r = np.zeros((S, A))
    q_c = np.zeros((S, A, K))
    n_sa = np.zeros((S, A), np.int64)
    v_r = np.zeros(S)
    v_c = np.zeros((S, K))
    g_c = np.empty(K)
    for k in range(K):
        j_c[k] = 0.0
    for s in range(S):
        hist[s] = 0
    for i in range(n):
        g_r = 0.0
        for k in range(K):
            g_c[k] = 0.0
        for t in range(horizon - 1, -1, -1):
            s = states[i, t]
            a = actions[i, t]
            g_r = r[s, a] + gamma * g_r
            q_r[s, a] += g_r
            v_r[s] += g_r
            n_sa[s, a] += 1
            hist[s] += 1
            for k in range(K):
                g_c[k] = c[s, a, k] + gamma * g_c[k]
                q_c[s, a, k] += g_c[k]
                v_c[s, k] += g_c[k]
        for k in range(K):
            j_c[k] += g_c[k]
    for k in range(K):
        j_c[k] /= n
    for s in range(S):
        for a in range(A):
            m = n_sa[s, a]
            if m > 0:
                adv_r[s, a] = q_r[s, a] / m - v_r[s] / hist[s]
                for k in range(K):
                    adv_c[s, a, k] = q_c[s, a, k] / m - v_c[s, k] / hist[s]
            else:
                adv_r[s, a] = 0.0
                for k in range(K):
                    adv_c[s, a, k] = 0.0


@njit(cache=True)
def _adapted_policy(log_pi, adv_r, adv_c, u, eta, log_clip, gamma, lam_c, pi_u, f):
    """pi_u ∝ exp(log_pi + (A_r - u.A_c)/eta) per state; ``f[s, k]`` = the per-state dual term."""
    S, A = log_pi.shape
    K = adv_c.shape[2]
    logits = np.empty(A)
    for s in range(S):
        mx = -np.inf
        for a in range(A):
            x = adv_r[s, a]
            for k in range(K):
                x -= u[k] * adv_c[s, a, k]
            logits[a] = log_pi[s, a] + x / eta
            if logits[a] > mx:
                mx = logits[a]
        z = 0.0
        for a in range(A):
            logits[a] = np.exp(logits[a] - mx)
            z += logits[a]
        kl = 0.0
        for a in range(A):
            p = logits[a] / z
            pi_u[s, a] = p
            kl += p * (np.log(max(p, log_clip)) - log_pi[s, a])
        for k in range(K):
            acc = 0.0
            for a in range(A):
                acc += pi_u[s, a] * adv_c[s, a, k]
            f[s, k] = acc + (1.0 - gamma) * lam_c * kl


@njit(cache=True)
def dual_policy(pi, adv_r, adv_c, d_prime, lam, lam_c, gamma, dual_step, dual_iters, log_clip,
                buffer, hist, exact, seed, stream, pi_out, u_used, u_last):
    """Projected dual descent and the closed-form adapted policy (BASELINES.md 4b steps 2-5).

    Parameters
    ----------
    pi : (S, A) current policy; ``log_pi = ln max(pi, log_clip)`` is computed once.
    adv_r, adv_c : (S, A), (S, A, K) advantages from :func:`mc_advantages`.
    d_prime : (K,) normalised slacks ``(1 - gamma)(b + delta - J_c)``.
    buffer : (n,) int64 buffer states (used when ``exact`` is False).
    hist : (S,) int64 histogram of ``buffer`` (used when ``exact`` is True).
    exact : bool; False draws ``n`` buffer states with replacement per dual iteration from
        stream ``stream`` of ``seed``; True uses the histogram's exact expectation.

    Each of ``dual_iters`` passes: ``eta = lam + (1 - gamma) lam_c sum_k u_k``;
    ``pi_u ∝ exp(log_pi + (A_r - sum_k u_k A_c^k)/eta)`` (row maximum subtracted);
    ``g_k = d'_k - mean_s [sum_a pi_u A_c^k + (1 - gamma) lam_c sum_a pi_u (ln max(pi_u,
    log_clip) - log_pi)]``; ``u_k <- max(0, u_k - dual_step g_k)``. Writes the last pass's
    ``pi_u`` to ``pi_out``, the ``u`` it used to ``u_used`` and the final ``u`` to ``u_last``.
    """
    S, A = pi.shape
    K = adv_c.shape[2]
    n = buffer.size
    log_pi = np.empty((S, A))
    for s in range(S):
        for a in range(A):
            log_pi[s, a] = np.log(max(pi[s, a], log_clip))
    u = np.zeros(K)
    f = np.empty((S, K))
    mean = np.empty(K)
    s0, s1, s2, s3 = stream_state(seed, stream)
    for it in range(dual_iters):
        usum = 0.0
        for k in range(K):
            usum += u[k]
        eta = lam + (1.0 - gamma) * usum * lam_c
        _adapted_policy(log_pi, adv_r, adv_c, u, eta, log_clip, gamma, lam_c, pi_out, f)
        if exact:
            for k in range(K):
                acc = 0.0
                for s in range(S):
                    acc += hist[s] * f[s, k]
                mean[k] = acc / n
        elif K == 1:
            acc = 0.0
            for j in range(n):
                x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
                idx = int(u64_to_unit(x) * n)
                if idx >= n:
                    idx = n - 1
                acc += f[buffer[idx], 0]
            mean[0] = acc / n
        else:
            for k in range(K):
                mean[k] = 0.0
            for j in range(n):
                x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
                idx = int(u64_to_unit(x) * n)
                if idx >= n:
                    idx = n - 1
                for k in range(K):
                    mean[k] += f[buffer[idx], k]
            for k in range(K):
                mean[k] /= n
        for k in range(K):
            u_used[k] = u[k]
            u[k] = max(0.0, u[k] - dual_step * (d_prime[k] - mean[k]))
    for k in range(K):
        u_last[k] = u[k]
