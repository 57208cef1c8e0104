"""kernels/trajectory.py: inverse-CDF episodes against a NumPy twin and exact occupancies."""

import numpy as np
import pytest
from safemeta_fast.kernels.rng import fill_uniforms
from safemeta_fast.kernels.trajectory import csr_cdf, policy_cdf, sample_episode

from safemeta_fast import occupancy
from safemeta_fast.envs import gridworld


def _tables(M, pi):
    return (policy_cdf(np.ascontiguousarray(pi)), policy_cdf(np.asarray(M.nu0)[None, :])[0],
            csr_cdf(M.succ_ptr, M.succ_prob))


def twin_episode(M, pi, seed, index, horizon, stop):
    """Straight NumPy: the same uniforms, searchsorted on cumulative rows."""
    u = np.empty(1 + 2 * horizon)
    fill_uniforms(seed, index, u)
    P = M.P
    s = min(int(np.searchsorted(np.cumsum(M.nu0), u[0], side="right")), M.n_states - 1)
    states, actions = [s], []
    for t in range(horizon):
        a = min(int(np.searchsorted(np.cumsum(pi[s]), u[1 + 2 * t], side="right")), M.n_actions - 1)
        nxt = np.flatnonzero(P[s, a] > 0)  # CSR rows list successors in increasing order
        cum = np.cumsum(P[s, a, nxt])
        s = int(nxt[min(int(np.searchsorted(cum, u[2 + 2 * t], side="right")), nxt.size - 1)])
        actions.append(a)
        states.append(s)
        if stop and M.absorbing[s]:
            break
    return np.array(states), np.array(actions)


@pytest.mark.parametrize("stop", [False, True])
def test_episode_matches_twin(stop):
    M = gridworld(0.3)
    rng = np.random.default_rng(1)
    pi = rng.dirichlet(np.ones(4), size=M.n_states)
    pc, nc, sc = _tables(M, pi)
    H = 60
    for index in range(20):
        st = np.empty(H + 1, np.int64)
        ac = np.empty(H + 1, np.int64)
        T = sample_episode(7, index, pc, nc, M.succ_ptr, M.succ_next, sc, H, stop, M.absorbing,
                           st, ac)
        ts, ta = twin_episode(M, pi, 7, index, H, stop)
        assert T == ta.size
        np.testing.assert_array_equal(st[:T + 1], ts)
        np.testing.assert_array_equal(ac[:T], ta)


def test_visit_frequencies_match_occupancy():
    """Discounted visit counts over many episodes estimate the exact occupancy measure."""
    M = gridworld(0.2)
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.ones(4), size=M.n_states)
    pc, nc, sc = _tables(M, pi)
    H, n = 120, 20_000
    mu_hat = np.zeros((M.n_states, M.n_actions))
    disc = M.gamma ** np.arange(H)
    st = np.empty(H + 1, np.int64)
    ac = np.empty(H + 1, np.int64)
    for e in range(n):
        sample_episode(3, e, pc, nc, M.succ_ptr, M.succ_next, sc, H, False, M.absorbing, st, ac)
        np.add.at(mu_hat, (st[:H], ac[:H]), disc)
    mu_hat *= (1 - M.gamma) / n
    mu = occupancy(M, pi)
    # per-entry standard error is below sqrt(mu (1-gamma) / n); allow 6 sigma + truncation
    tol = 6 * np.sqrt(np.maximum(mu, 1e-4) / n) + M.gamma ** H
    assert np.all(np.abs(mu_hat - mu) <= tol)
