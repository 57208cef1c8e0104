"""Episode sampling with transition counting for DOPE+ and DOPE (BASELINES.md 5b, 7c).

One kernel, :func:`count_episodes`: it samples episodes of one stationary policy with
:func:`.trajectory.sample_episode` (stopping when an episode lands in an absorbing
state) and adds every transition to the visit counts ``n(s, a)`` and ``n(s, a, s')``.
When an episode ends in an absorbing state ``s_abs`` it also adds one self-loop count
``(s_abs, a', s_abs)`` for EVERY action ``a'`` (the reference's extra count of all four
goal actions, generalised to any absorbing state).

Transition counts are stored on the compressed successor rows of the task
(``n_succ[j]`` counts ``(s, a, succ_next[j])`` for ``succ_ptr[s*A+a] <= j <
succ_ptr[s*A+a+1]``): a sampled transition always lies in the support, so this is the
dense ``n(s, a, s')`` without its structural zeros (the estimator sees the same
numbers). Episode ``first_index + e`` uses stream ``first_index + e`` of ``seed``;
counts are integers, so the result never depends on the thread count.
"""

from __future__ import annotations

from numba import njit

from .trajectory import sample_episode

__all__ = ["count_episodes"]


@njit(cache=True)
def _add_transition(succ_ptr, succ_next, n_sa, n_succ, i, s_next):
    n_sa[i] += 1
    for j in range(succ_ptr[i], succ_ptr[i + 1]):
        if succ_next[j] == s_next:
            n_succ[j] += 1
            return


@njit(cache=True)
def count_episodes(seed, first_index, n_episodes, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf,
                   horizon, absorbing, n_sa, n_succ, states, actions):
    """Sample ``n_episodes`` episodes and add their transitions to the counts in place.

    Parameters
    ----------
    seed, first_index, n_episodes : int
        Episode ``first_index + e`` uses stream ``first_index + e`` of ``seed``.
    pi_cdf : (S, A) float64
        Row-wise CDF of the policy (:func:`.trajectory.policy_cdf`).
    nu_cdf : (S,) float64
        CDF of the initial distribution.
    succ_ptr, succ_next, succ_cdf : CSR successor rows and their row-wise CDF.
    horizon : int
        At most this many steps per episode (>= 1).
    absorbing : (S,) bool
        Episodes stop right after the first step that lands in such a state.
    n_sa : (S*A,) int64
        ``n(s, a)``, updated in place.
    n_succ : (nnz,) int64
        ``n(s, a, succ_next[j])``, updated in place.
    states, actions : (horizon + 1,) int64
        Scratch space.

    Returns
    -------
    int
        Number of sampled steps (the extra absorbing self-loop counts excluded).
    """
    A = pi_cdf.shape[1]
    total = 0
    for e in range(n_episodes):
        T = sample_episode(seed, first_index + e, pi_cdf, nu_cdf, succ_ptr, succ_next, succ_cdf,
                           horizon, True, absorbing, states, actions)
        for t in range(T):
            _add_transition(succ_ptr, succ_next, n_sa, n_succ, states[t] * A + actions[t],
                            states[t + 1])
        total += T
        last = states[T]
        if T > 0 and absorbing[last]:
            for a in range(A):
                _add_transition(succ_ptr, succ_next, n_sa, n_succ, last * A + a, last)
    return total
