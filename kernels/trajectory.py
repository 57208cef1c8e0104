"""Step-by-step trajectories of one stationary policy, for learners that need the path.

The fused rollout kernel (``rollout.py``) returns only discounted returns. Learning
baselines (Safe Meta-RL, DOPE+/DOPE, LB-SGD) need the visited (state, action) pairs
themselves; they sample them with :func:`sample_episode` inside their own kernels
and accumulate what they need (advantage sums, transition counts, score terms).

Sampling is by inverse CDF over small rows (a policy row of A entries, a successor
row of the CSR form of ``CMDP``), linear scan. Episode ``index`` of a ``seed`` uses
stream ``index`` of ``rng.py``: one uniform for the initial state, then two per
step (action, next state), so an episode's path depends only on (seed, index) and
never on the thread that runs it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rng import stream_state, u64_to_unit, xoshiro256pp_next

__all__ = ["policy_cdf", "csr_cdf", "draw", "sample_episode"]


@njit(cache=True)
def policy_cdf(pi):
    """Row-wise cumulative sums of ``pi`` (S, A), last entry of each row set to 1."""
    S, A = pi.shape
    out = np.empty((S, A))
    for s in range(S):
        acc = 0.0
        for a in range(A):
            acc += pi[s, a]
            out[s, a] = acc
        out[s, A - 1] = 1.0
    return out


@njit(cache=True)
def csr_cdf(succ_ptr, succ_prob):
    """Cumulative sums within each CSR row, last entry of each non-empty row set to 1."""
    out = np.empty(succ_prob.size)
    for i in range(succ_ptr.size - 1):
        acc = 0.0
        for j in range(succ_ptr[i], succ_ptr[i + 1]):
            acc += succ_prob[j]
            out[j] = acc
        if succ_ptr[i + 1] > succ_ptr[i]:
            out[succ_ptr[i + 1] - 1] = 1.0
    return out


@njit(cache=True)
def draw(cdf, lo, hi, u):
    """First ``j`` in ``[lo, hi)`` with ``u < cdf[j]`` (``hi - 1`` if none)."""
    for j in range(lo, hi - 1):
        if u < cdf[j]:
            return j
    return hi - 1


@njit(cache=True)
def sample_episode(seed, index, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf, horizon,
                   stop_at_absorbing, absorbing, states, actions):
    """One episode of at most ``horizon`` steps; returns the number of steps T taken.

    Writes ``states[0..T]`` (``states[T]`` is the state after the last step) and
    ``actions[0..T-1]``; both arrays need length >= horizon + 1. With
    ``stop_at_absorbing`` the episode ends right after the first step that lands in a
    state with ``absorbing[s'] != 0`` (the caller finishes or pads it); otherwise it
    always runs ``horizon`` steps.
    """
    S, A = pi_cdf.shape
    s0, s1, s2, s3 = stream_state(seed, index)
    x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
    s = draw(nu_cdf, 0, S, u64_to_unit(x))
    states[0] = s
    for t in range(horizon):
        x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
        a = draw(pi_cdf[s], 0, A, u64_to_unit(x))
        x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
        i = s * A + a
        j = draw(succ_cdf, succ_ptr[i], succ_ptr[i + 1], u64_to_unit(x))
        s = succ_next[j]
        actions[t] = a
        states[t + 1] = s
        if stop_at_absorbing and absorbing[s]:
            return t + 1
    return horizon
