"""Converters from gymnasium toy-text, pymdptoolbox (sparse) and QuantEcon, checked on values."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp

from safemeta_fast import CMDP, evaluate, solve_lp
from safemeta_fast.converters import ModelWarning, quantecon_feasible_actions, reachable_states


def hole_cost(s, a, s_next, reward, terminated):
    return float(terminated and reward == 0)


def _table_values(table, pi, gamma, nu0, fn):
    """Slow twin on the raw toy-text table: E sum_t gamma^t fn(transition_t), episodes
    ending at terminated transitions (no absorbing state, no conversion code)."""
    S, A = len(table), len(table[0])
    P = np.zeros((S, S))
    f = np.zeros(S)
    for s in range(S):
        for a in range(A):
            for prob, s2, rew, term in table[s][a]:
                f[s] += pi[s, a] * prob * fn(s, a, s2, rew, term)
                if not term:
                    P[s, s2] += pi[s, a] * prob
    v = np.linalg.solve(np.eye(S) - gamma * P, f)
    return float(nu0 @ v)


@pytest.fixture(scope="module")
def lake4():
    return gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True)


# -- gymnasium -----------------------------------------------------------------------

def test_frozenlake_state_cost_on_holes_warns_and_is_never_incurred(lake4):
    holes = (lake4.unwrapped.desc.ravel() == b"H").astype(float)
    with pytest.warns(ModelWarning,
                      match=r"only on state\(s\) 5, 7, 11, 12.*never incurred.*cost_fn"):
        trap = CMDP.from_gymnasium(lake4, c=holes, cost_limit=0.01, gamma=0.95)
    assert trap.terminal_state == 16 and not reachable_states(trap)[[5, 7, 11, 12]].any()
    good = CMDP.from_gymnasium(lake4, cost_fn=hole_cost, cost_limit=0.01, gamma=0.95)
    lp_trap, lp_good = solve_lp(trap), solve_lp(good)
    # the trap model calls every policy cost-free: its LP ignores the constraint
    assert evaluate(trap, lp_trap.policy).cost[0] == 0.0
    assert lp_trap.reward == pytest.approx(0.1805, abs=1e-4)
    assert lp_good.reward == pytest.approx(0.0432, abs=1e-4)
    # ... and its "feasible" policy really falls in a hole with discounted weight 0.052
    assert evaluate(good, lp_trap.policy).cost[0] == pytest.approx(0.0522, abs=1e-4)


def test_cost_fn_gives_the_exact_discounted_hole_cost(lake4):
    table = lake4.unwrapped.P
    nu0 = lake4.unwrapped.initial_state_distrib
    M = CMDP.from_gymnasium(lake4, cost_fn=hole_cost, cost_limit=0.05, gamma=0.9)
    rng = np.random.default_rng(0)
    for pi16 in (np.full((16, 4), 0.25), rng.dirichlet(np.ones(4), size=16)):
        pi = np.vstack([pi16, np.full((1, 4), 0.25)])  # any row for the terminal state
        ev = evaluate(M, pi)
        assert ev.cost[0] == pytest.approx(_table_values(table, pi16, 0.9, nu0, hole_cost),
                                           abs=1e-12)
        reward = _table_values(table, pi16, 0.9, nu0, lambda s, a, s2, r, t: r)
        assert ev.reward == pytest.approx(reward, abs=1e-12)


def test_no_warning_when_cost_is_incurred(lake4):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a step cost on every state: losing it on the holes is the episodic meaning
        CMDP.from_gymnasium(lake4, c=np.ones(16), cost_limit=1.0, gamma=0.9)
        CMDP.from_gymnasium(lake4, cost_fn=hole_cost, cost_limit=1.0, gamma=0.9)


def test_cliffwalking_reward_fn_moves_the_penalty_into_a_cost():
    env = gym.make("CliffWalking-v1")
    table = env.unwrapped.P
    is_cliff = lambda s, a, s2, r, t: float(r == -100)  # noqa: E731
    M = CMDP.from_gymnasium(env, cost_limit=0.5, gamma=0.95,
                            reward_fn=lambda s, a, s2, r, t: -1.0, cost_fn=is_cliff)
    M0 = CMDP.from_gymnasium(env, c=np.zeros(48), cost_limit=0.0, gamma=0.95)
    pi = np.full((M.n_states, 4), 0.25)
    e, e0 = evaluate(M, pi), evaluate(M0, pi)
    nu0 = env.unwrapped.initial_state_distrib
    assert e.cost[0] == pytest.approx(_table_values(table, pi[:48], 0.95, nu0, is_cliff))
    # old reward = new reward - 99 per cliff step
    assert e0.reward == pytest.approx(e.reward - 99.0 * e.cost[0])


def test_vector_cost_fn_and_per_state_c(lake4):
    M = CMDP.from_gymnasium(lake4, cost_limit=[1.0, 1.0], gamma=0.9,
                            cost_fn=lambda s, a, s2, r, t: [float(t and r == 0), float(s == 0)])
    assert M.n_constraints == 2 and M.c[0, 2, 1] == 1.0 and M.c[1, 2, 1] == 0.0
    M1 = CMDP.from_gymnasium(lake4, c=np.arange(16.0), cost_limit=1.0, gamma=0.9)
    assert M1.c[3, :, 0].tolist() == [3.0] * 4 and M1.c[16].sum() == 0.0


def test_from_gymnasium_errors(lake4):
    with pytest.raises(TypeError, match="no transition table env.unwrapped.P.*run_env"):
        CMDP.from_gymnasium(gym.make("CartPole-v1"), c=np.zeros(1), cost_limit=0.0, gamma=0.9)
    with pytest.raises(TypeError, match="exactly one of c"):
        CMDP.from_gymnasium(lake4, cost_limit=0.0, gamma=0.9)
    with pytest.raises(TypeError, match="exactly one of c"):
        CMDP.from_gymnasium(lake4, c=np.zeros(16), cost_fn=hole_cost, cost_limit=0.0, gamma=0.9)
    with pytest.raises(TypeError, match="needs cost_limit and gamma"):
        CMDP.from_gymnasium(lake4, cost_fn=hole_cost)
    with pytest.raises(ValueError, match=r"cost_fn\(0, 0, 0, 0.0, False\) returned nan"):
        CMDP.from_gymnasium(lake4, cost_fn=lambda *t: np.nan, cost_limit=0.0, gamma=0.9)
    with pytest.raises(ValueError, match="returned 2 value"):
        CMDP.from_gymnasium(lake4, cost_limit=0.0, gamma=0.9,
                            cost_fn=lambda s, a, s2, r, t: [0.0] * (1 + (s > 0)))
    with pytest.raises(ValueError, match=r"shape \(S,\), \(S, A\) or"):
        CMDP.from_gymnasium(lake4, c=np.zeros(15), cost_limit=0.0, gamma=0.9)


def test_terminal_state_survives_pickle_and_replace(lake4):
    M = CMDP.from_gymnasium(lake4, cost_fn=hole_cost, cost_limit=0.1, gamma=0.9)
    assert pickle.loads(pickle.dumps(M)).terminal_state == 16
    assert M.replace(cost_limit=0.2).terminal_state == 16
    assert CMDP.from_gymnasium(
        {0: {0: [(1.0, 0, 1.0, False)]}}, c=[[0.0]], cost_limit=0.0, gamma=0.5, nu0=[1.0]
    ).terminal_state is None
    with pytest.raises(AttributeError, match="frozen"):
        M.terminal_state = 3
    with pytest.raises(ValueError, match="terminal_state is 0; it must index an absorbing"):
        CMDP.from_successors([[[1]], [[1]]], [[[1.0]], [[1.0]]], r=[[0.0], [0.0]],
                             c=[[0.0], [0.0]], cost_limit=0.0, gamma=0.5, nu0=[1.0, 0.0],
                             terminal_state=0)


# -- pymdptoolbox sparse ---------------------------------------------------------------

def test_mdptoolbox_sparse_equals_dense():
    rng = np.random.default_rng(3)
    A, S = 3, 6
    P = rng.random((A, S, S)) * (rng.random((A, S, S)) < 0.4)
    P[:, :, 0] += 0.1
    P /= P.sum(axis=2, keepdims=True)
    R = rng.random((A, S, S))
    c = rng.random((S, A))
    nu0 = np.full(S, 1 / S)
    dense = CMDP.from_mdptoolbox(P, R, c, 1.0, 0.9, nu0)
    for Psp in ([sp.csr_matrix(m) for m in P], [sp.coo_matrix(m) for m in P],
                np.array([sp.csr_matrix(m) for m in P] + [None], dtype=object)[:A]):
        for Rin in (R, [sp.csr_matrix(m) for m in R]):
            M = CMDP.from_mdptoolbox(Psp, Rin, c, 1.0, 0.9, nu0)
            assert not M.has_dense  # the sparse input is never densified
            np.testing.assert_allclose(M.P, dense.P, rtol=0, atol=1e-15)
            np.testing.assert_allclose(M.r, dense.r, rtol=1e-14, atol=1e-15)
    # sparse P with dense per-transition R, and the dense path with sparse R
    M2 = CMDP.from_mdptoolbox(P, [sp.csr_matrix(m) for m in R], c, 1.0, 0.9, nu0)
    np.testing.assert_allclose(M2.r, dense.r, rtol=1e-14)
    with pytest.raises(ValueError, match=r"P\[1\] has shape \(6, 5\)"):
        CMDP.from_mdptoolbox([sp.csr_matrix(P[0]), sp.csr_matrix(P[1][:, :5])], R[:2], c[:, :2],
                             1.0, 0.9, nu0)
    bad = [sp.csr_matrix(m) for m in P]
    bad[2] = sp.csr_matrix(P[2] * 0.5)
    with pytest.raises(ValueError, match=r"probs\[0, 2\] sums to 0.5"):
        CMDP.from_mdptoolbox(bad, R, c, 1.0, 0.9, nu0)


# -- QuantEcon ---------------------------------------------------------------------------

def _random_ddp_parts(seed=5, S=5, A=3):
    rng = np.random.default_rng(seed)
    Q = rng.dirichlet(np.ones(S), size=(S, A))
    return rng.random((S, A)), Q, rng.random((S, A, 2))


def test_quantecon_round_trip_values_equal():
    qe = pytest.importorskip("quantecon")  # in the test extra: always present in CI
    R, Q, c = _random_ddp_parts()
    ddp = qe.markov.DiscreteDP(R, Q, 0.9)
    M = CMDP.from_quantecon(ddp, c, [1.0, 2.0], np.full(5, 0.2))
    np.testing.assert_allclose(M.P, Q, atol=1e-15)
    assert M.gamma == 0.9 and M.n_constraints == 2
    back = M.to_quantecon()
    res, res_back = ddp.solve(method="policy_iteration"), back.solve(method="policy_iteration")
    np.testing.assert_allclose(res_back.v, res.v, rtol=1e-12)
    np.testing.assert_array_equal(res_back.sigma, res.sigma)
    # QuantEcon's own value of its optimal policy equals our exact evaluation
    pi = np.eye(3)[res.sigma]
    assert evaluate(M, pi).reward == pytest.approx(float(M.nu0 @ res.v), rel=1e-12)
    # the Lagrangian reward r - c @ lambda
    lam = np.array([0.5, 0.25])
    lag = M.to_quantecon(multiplier=lam)
    np.testing.assert_allclose(lag.R, (R - c @ lam).ravel())
    # the pair formulation (sparse Q) converts to the same model
    s_idx, a_idx = (x.ravel() for x in np.indices((5, 3)))
    ddp_sa = qe.markov.DiscreteDP(R.ravel(), sp.csr_matrix(Q.reshape(15, 5)), 0.9, s_idx, a_idx)
    M_sa = CMDP.from_quantecon(ddp_sa, c, [1.0, 2.0], np.full(5, 0.2))
    np.testing.assert_allclose(M_sa.P, M.P, atol=1e-15)
    np.testing.assert_array_equal(M_sa.r, M.r)


def test_quantecon_infeasible_actions():
    qe = pytest.importorskip("quantecon")
    R, Q, c = _random_ddp_parts()
    R[1, 2] = -np.inf
    R[3, 0] = -np.inf
    ddp = qe.markov.DiscreteDP(R, Q, 0.9)
    with pytest.raises(ValueError, match=r"forbids action 2 in state 1 .* 2 pair\(s\).*'copy'"):
        CMDP.from_quantecon(ddp, c, [1.0, 2.0], np.full(5, 0.2))
    M = CMDP.from_quantecon(ddp, c, [1.0, 2.0], np.full(5, 0.2), infeasible="copy")
    # forbidden pairs copy the first feasible action: (1, 2) <- (1, 0), (3, 0) <- (3, 1)
    np.testing.assert_array_equal(M.P[1, 2], Q[1, 0])
    np.testing.assert_array_equal(M.P[3, 0], Q[3, 1])
    assert M.r[3, 0] == R[3, 1] and M.c[1, 2].tolist() == c[1, 0].tolist()
    mask = quantecon_feasible_actions(ddp)
    assert (~mask).sum() == 2 and not mask[1, 2] and not mask[3, 0]
    # the copies change nothing: same optimal values, and round trip with the mask
    res = ddp.solve(method="policy_iteration")
    back = M.to_quantecon(feasible=mask)
    np.testing.assert_allclose(back.solve(method="policy_iteration").v, res.v, rtol=1e-12)
    np.testing.assert_allclose(M.to_quantecon().solve(method="policy_iteration").v, res.v,
                               rtol=1e-12)
    # the pair formulation without the forbidden pairs gives the same model
    keep = mask.ravel()
    s_idx, a_idx = (x.ravel()[keep] for x in np.indices((5, 3)))
    ddp_sa = qe.markov.DiscreteDP(R.ravel()[keep], Q.reshape(15, 5)[keep], 0.9, s_idx, a_idx)
    np.testing.assert_array_equal(quantecon_feasible_actions(ddp_sa), mask)
    M_sa = CMDP.from_quantecon(ddp_sa, c, [1.0, 2.0], np.full(5, 0.2), infeasible="copy")
    np.testing.assert_allclose(M_sa.P, M.P, atol=1e-15)
    with pytest.raises(ValueError, match="infeasible is 'drop'"):
        CMDP.from_quantecon(ddp, c, 1.0, np.full(5, 0.2), infeasible="drop")
    with pytest.raises(ValueError, match=r"feasible\[0\] has no True entry"):
        M.to_quantecon(feasible=np.zeros((5, 3), dtype=bool))
    with pytest.raises(TypeError, match="DiscreteDP"):
        CMDP.from_quantecon(object(), c, 1.0, np.full(5, 0.2))
