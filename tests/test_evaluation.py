"""Exact evaluation: closed forms, dense twins, solver agreement, mixtures, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings

from safemeta_fast import CMDP
from safemeta_fast.envs import gridworld
from safemeta_fast.evaluation import (
    Evaluation,
    choose_method,
    evaluate,
    evaluate_many,
    evaluate_mixture,
    occupancy,
    state_values,
)
from safemeta_fast.policy import Mixture
from tests.strategies import cmdp_and_policy, random_cmdp, random_policy
from tests.twins import evaluate_dense, state_values_dense

SOLVERS = ("dense", "iterative", "sparse", "span")


def _close(a, b, scale, rel=1e-10):
    """|a - b| <= rel * scale elementwise (scale = magnitude of the state values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.all(np.abs(a - b) <= rel * max(scale, 1e-300)), (a, b, scale)


def _scale(M, pi):
    vr, vc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
    return max(np.abs(vr).max(), np.abs(vc).max(), 1e-12)


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("p_stay", [1.0, 0.0, 0.3, 0.75])
def test_two_state_closed_form(two_state, method, p_stay):
    g = two_state.gamma
    pi = np.array([[p_stay, 1 - p_stay], [0.5, 0.5]])
    v1 = 0.5 / (1 - g)
    v0_r = (p_stay + (1 - p_stay) * g * v1) / (1 - g * p_stay)
    v0_c = p_stay / (1 - g * p_stay)
    ev = evaluate(two_state, pi, method=method)
    assert ev.method == method
    assert ev.reward == pytest.approx(v0_r, rel=1e-12)
    assert ev.cost[0] == pytest.approx(v0_c, rel=1e-12, abs=1e-14)
    sv = state_values(two_state, pi, method=method)
    np.testing.assert_allclose(sv.reward, [v0_r, v1], rtol=1e-12)
    # occupancy: d(0) = (1-g) / (1 - g p), the rest at the absorbing state
    mu = occupancy(two_state, pi, method=method)
    d0 = (1 - g) / (1 - g * p_stay)
    np.testing.assert_allclose(mu.sum(axis=1), [d0, 1 - d0], rtol=1e-11, atol=1e-14)


def test_two_state_slack_and_feasible(two_state):
    stay = np.array([[1.0, 0.0], [1.0, 0.0]])
    leave = np.array([[0.0, 1.0], [1.0, 0.0]])
    ev = evaluate(two_state, stay)  # V_c = 1/(1-0.5) = 2 = limit
    np.testing.assert_allclose(ev.slack, [0.0], atol=1e-14)
    assert ev.feasible
    mix = np.array([[0.9, 0.1], [1.0, 0.0]])  # stays longer with reward... cost 0.9/(1-0.45)
    ev2 = evaluate(two_state, mix)
    assert ev2.cost[0] == pytest.approx(0.9 / 0.55)
    assert ev2.feasible
    ev3 = evaluate(two_state, leave)
    assert ev3.cost[0] == 0.0 and ev3.slack[0] == pytest.approx(2.0)


def test_gamma_zero_is_immediate_reward():
    rng = np.random.default_rng(3)
    M = random_cmdp(rng, 5, 3, K=2, gamma=0.0)
    pi = random_policy(rng, 5, 3)
    for method in SOLVERS:
        ev = evaluate(M, pi, method=method)
        assert ev.reward == pytest.approx(float(M.nu0 @ (pi * M.r).sum(1)), rel=1e-13)
        np.testing.assert_allclose(ev.cost, np.einsum("s,sa,sak->k", M.nu0, pi, M.c), rtol=1e-13)


# ---------------------------------------------------------------------------
# against the dense twin
# ---------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(cmdp_and_policy())
def test_evaluate_matches_dense_twin(case):
    M, pi = case
    vr, vc, mu = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
    scale = _scale(M, pi)
    for method in SOLVERS:
        ev = evaluate(M, pi, method=method)
        _close(ev.reward, vr, scale)
        _close(ev.cost, vc, scale)
        sv = state_values(M, pi, method=method)
        tr, tc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
        _close(sv.reward, tr, scale)
        _close(sv.cost, tc, scale)
        occ = occupancy(M, pi, method=method)
        _close(occ, mu, 1.0)


@settings(max_examples=25, deadline=None)
@given(cmdp_and_policy())
def test_occupancy_is_normalised_and_reproduces_values(case):
    M, pi = case
    for method in SOLVERS:
        mu = occupancy(M, pi, method=method)
        assert mu.shape == (M.n_states, M.n_actions)
        assert np.all(mu >= 0)
        assert mu.sum() == pytest.approx(1.0, abs=1e-12)
        ev = evaluate(M, pi, method="dense")
        scale = _scale(M, pi)
        _close((mu * M.r).sum() / (1 - M.gamma), ev.reward, scale)
        _close(np.einsum("sa,sak->k", mu, M.c) / (1 - M.gamma), ev.cost, scale)
        # flow conservation: sum_a mu(s', a) = (1-g) nu0(s') + g sum P mu
        inflow = (1 - M.gamma) * M.nu0 + M.gamma * np.einsum("sat,sa->t", M.P, mu)
        np.testing.assert_allclose(mu.sum(axis=1), inflow, atol=1e-10)


@pytest.mark.parametrize("size", [7, 12, 20])
def test_direct_equals_iterative_on_gridworlds(size):
    rng = np.random.default_rng(size)
    M = gridworld(0.3, size)
    for deterministic in (False, True):
        pi = random_policy(rng, M.n_states, M.n_actions, deterministic)
        dense = evaluate(M, pi, method="dense")
        it = evaluate(M, pi, method="iterative")
        sp = evaluate(M, pi, method="sparse")
        vr, vc, mu = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
        scale = _scale(M, pi)
        for ev in (dense, it, sp):
            _close(ev.reward, vr, scale)
            _close(ev.cost, vc, scale)
        _close(occupancy(M, pi, method="iterative"), mu, 1.0)
        _close(occupancy(M, pi, method="sparse"), mu, 1.0)


def test_large_gridworld_iterative_matches_sparse_lu():
    M = gridworld(0.3, 50)
    rng = np.random.default_rng(50)
    pi = random_policy(rng, M.n_states, M.n_actions)
    it = state_values(M, pi, method="iterative")
    sp = state_values(M, pi, method="sparse")
    scale = max(np.abs(sp.reward).max(), np.abs(sp.cost).max())
    _close(it.reward, sp.reward, scale)
    _close(it.cost, sp.cost, scale)
    _close(occupancy(M, pi, method="iterative"), occupancy(M, pi, method="sparse"), 1.0)
    assert evaluate(M, pi).method == "iterative"


def test_high_gamma_iterative_and_sparse_agree():
    M = gridworld(0.3, 10).replace(gamma=0.995)
    pi = random_policy(np.random.default_rng(1), M.n_states, M.n_actions)
    vr, vc, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
    scale = _scale(M, pi)
    for method in SOLVERS:
        ev = evaluate(M, pi, method=method)
        _close(ev.reward, vr, scale)
        _close(ev.cost, vc, scale)


def test_choose_method():
    assert choose_method(gridworld(0.3)) == "dense"
    big = gridworld(0.3, 50)
    assert choose_method(big) == "iterative"
    assert choose_method(big, "direct") == "sparse"
    assert choose_method(gridworld(0.3), "direct") == "dense"
    assert choose_method(big.replace(gamma=0.999)) == "sparse"
    assert choose_method(gridworld(0.3, 10).replace(gamma=0.999)) == "dense"
    assert choose_method(big, "dense") == "dense"


def test_choose_method_span_on_dense_transitions():
    from safemeta_fast.envs import RandomCMDPFamily

    dense = RandomCMDPFamily(320, 2, base_seed=0, gamma=0.95).build([0.5, 0.5])
    assert choose_method(dense) == "span"
    assert choose_method(RandomCMDPFamily(60, 3).build([0.5, 0.5])) != "span"  # S < 300
    assert choose_method(gridworld(0.3, 12)) != "span"                          # sparse


def test_span_converges_on_dense_random_tasks_and_matches_twin():
    from safemeta_fast.kernels import evaluation as ke

    from safemeta_fast.envs import RandomCMDPFamily

    M = RandomCMDPFamily(150, 3, n_constraints=2, base_seed=1, gamma=0.95).build([0.3, 0.8])
    pi = random_policy(np.random.default_rng(2), 150, 3)
    rhs = ke.policy_rhs(M.r, M.c, pi)
    Ppi = ke.policy_matrix_dense(M.succ_ptr, M.succ_next, M.succ_prob, pi)
    V, sweeps, status = ke.solve_values_span(Ppi, rhs, M.gamma, 1e-11, 20)
    assert status == ke.STATUS_OK and sweeps < 20   # 11 sweeps, far below gamma^k's 600
    tr, tc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
    scale = max(np.abs(tr).max(), np.abs(tc).max())
    _close(V[:, 0], tr, scale)
    _close(V[:, 1:], tc, scale)
    ev = evaluate(M, pi, method="span")
    vr, vc, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
    _close(ev.reward, vr, scale)
    _close(ev.cost, vc, scale)


def test_span_budget_runs_out_on_slow_mixing_then_lu(grid03):
    from safemeta_fast.kernels import evaluation as ke

    pi = np.full((49, 4), 0.25)
    Ppi = ke.policy_matrix_dense(grid03.succ_ptr, grid03.succ_next, grid03.succ_prob, pi)
    rhs = ke.policy_rhs(grid03.r, grid03.c, pi)
    _, sweeps, status = ke.solve_values_span(Ppi, rhs, grid03.gamma, 1e-11, 10)
    assert status == ke.STATUS_MAX_ITER and sweeps == 10
    sv = state_values(grid03, pi, method="span")      # falls back to the dense LU
    tr, _ = state_values_dense(grid03.P, grid03.r, grid03.c, grid03.gamma, pi)
    _close(sv.reward, tr, np.abs(tr).max())


def test_paper_policy_values_gridworld(grid03):
    # uniform policy: the goal is absorbing with reward 10, so v(45) = 10 / (1 - 0.9)
    sv = state_values(grid03, np.full((49, 4), 0.25))
    assert sv.reward[45] == pytest.approx(100.0, rel=1e-12)
    assert sv.cost[45, 0] == pytest.approx(0.0, abs=1e-12)
    # cost cells: each step there costs 10
    assert np.all(sv.cost[[9, 16, 23, 30, 11, 18, 25, 32], 0] >= 10.0)


# ---------------------------------------------------------------------------
# batches and mixtures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dense", "iterative", "span", "auto"])
def test_evaluate_many_equals_loop(method):
    rng = np.random.default_rng(11)
    M = random_cmdp(rng, 8, 3, K=2, gamma=0.9, sparsity=0.5)
    pis = np.stack([random_policy(rng, 8, 3, d) for d in (False, True) * 5])
    batch = evaluate_many(M, pis, method=method)
    assert batch.reward.shape == (10,) and batch.cost.shape == (10, 2)
    assert len(batch) == 10
    for i, pi in enumerate(pis):
        ev = evaluate(M, pi, method=batch.method)
        assert batch.reward[i] == pytest.approx(ev.reward, rel=1e-13, abs=1e-13)
        np.testing.assert_allclose(batch.cost[i], ev.cost, rtol=1e-13, atol=1e-13)
        assert batch[i].reward == batch.reward[i]
    np.testing.assert_array_equal(batch.slack, M.cost_limit[None] - batch.cost)
    np.testing.assert_array_equal(batch.feasible, np.all(batch.cost <= M.cost_limit, axis=1))


def test_evaluate_many_large_gridworld_parallel_matches_single():
    M = gridworld(0.3, 30)
    rng = np.random.default_rng(2)
    pis = np.stack([random_policy(rng, M.n_states, 4) for _ in range(4)])
    batch = evaluate_many(M, pis)
    assert batch.method == "iterative"
    for i in range(4):
        ev = evaluate(M, pis[i], method="iterative")
        assert batch.reward[i] == pytest.approx(ev.reward, rel=1e-13)


def test_evaluate_many_single_policy_2d():
    M = gridworld(0.3)
    batch = evaluate_many(M, np.full((49, 4), 0.25))
    assert batch.reward.shape == (1,)


@settings(max_examples=20, deadline=None)
@given(cmdp_and_policy())
def test_mixture_values_linear_in_weights(case):
    M, pi = case
    rng = np.random.default_rng(0)
    pis = np.stack([pi, random_policy(rng, M.n_states, M.n_actions, True),
                    random_policy(rng, M.n_states, M.n_actions)])
    evs = [evaluate(M, p) for p in pis]
    scale = max(_scale(M, p) for p in pis)
    for w in ([1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5]):
        mix = evaluate_mixture(M, pis, w)
        _close(mix.reward, sum(wi * e.reward for wi, e in zip(w, evs)), scale, 1e-12)
        _close(mix.cost, sum(wi * e.cost for wi, e in zip(w, evs)), scale, 1e-12)
        mix2 = evaluate_mixture(M, Mixture(pis, w))
        assert mix2.reward == mix.reward
        np.testing.assert_array_equal(mix2.cost, mix.cost)


def test_mixture_is_not_the_per_step_average(two_state):
    stay = np.array([[1.0, 0.0], [1.0, 0.0]])
    leave = np.array([[0.0, 1.0], [1.0, 0.0]])
    mix = evaluate_mixture(two_state, [stay, leave], [0.5, 0.5])
    assert mix.reward == pytest.approx(0.5 * 2.0 + 0.5 * 0.5)
    step = evaluate(two_state, 0.5 * (stay + leave))
    assert abs(step.reward - mix.reward) > 0.1


# ---------------------------------------------------------------------------
# results are frozen
# ---------------------------------------------------------------------------

def test_results_are_read_only(two_state):
    pi = np.full((2, 2), 0.5)
    ev = evaluate(two_state, pi)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.reward = 0.0
    with pytest.raises(ValueError):
        ev.cost[0] = 1.0
    assert isinstance(ev, Evaluation)
    sv = state_values(two_state, pi)
    assert not sv.reward.flags.writeable and not sv.cost.flags.writeable
    assert not occupancy(two_state, pi).flags.writeable
    batch = evaluate_many(two_state, np.stack([pi, pi]))
    assert not batch.reward.flags.writeable and not batch.cost.flags.writeable


# ---------------------------------------------------------------------------
# validation: one test per error
# ---------------------------------------------------------------------------

def test_model_must_be_cmdp():
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        evaluate("not a model", np.ones((1, 1)))
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        evaluate_many(None, np.ones((1, 1, 1)))


def test_policy_shape_error(two_state):
    with pytest.raises(ValueError, match=r"pi must have shape \(S, A\) = \(2, 2\)"):
        evaluate(two_state, np.full((3, 2), 0.5))


def test_policy_not_stochastic(two_state):
    with pytest.raises(ValueError, match=r"pi\[1\] sums to"):
        occupancy(two_state, [[0.5, 0.5], [0.5, 0.6]])
    with pytest.raises(ValueError, match=r"probabilities must be >= 0"):
        state_values(two_state, [[1.5, -0.5], [0.5, 0.5]])


def test_unknown_method(two_state):
    with pytest.raises(ValueError, match="method is 'lu'; expected one of"):
        evaluate(two_state, np.full((2, 2), 0.5), method="lu")


def test_bad_rtol(two_state):
    with pytest.raises(ValueError, match="rtol is 0.0; it must lie in"):
        evaluate(two_state, np.full((2, 2), 0.5), rtol=0.0)
    with pytest.raises(TypeError, match="rtol must be a real number"):
        evaluate(two_state, np.full((2, 2), 0.5), rtol="small")


def test_evaluate_many_rejects_sparse(two_state):
    with pytest.raises(ValueError, match="method 'sparse' is not available in evaluate_many"):
        evaluate_many(two_state, np.full((1, 2, 2), 0.5), method="sparse")


def test_evaluate_many_policies_shape(two_state):
    with pytest.raises(ValueError, match=r"policies must have shape \(n, S, A\)"):
        evaluate_many(two_state, np.full((2, 3, 2), 0.5))


def test_mixture_weights_errors(two_state):
    pis = np.full((2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="weights is required"):
        evaluate_mixture(two_state, pis)
    with pytest.raises(ValueError, match="weights must be omitted"):
        evaluate_mixture(two_state, Mixture(pis, [0.5, 0.5]), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"weights must have shape \(n,\) = \(2,\)"):
        evaluate_mixture(two_state, pis, [1.0])
    with pytest.raises(ValueError, match=r"weights\[\] sums to"):
        evaluate_mixture(two_state, pis, [0.5, 0.6])


def test_mixture_shape_mismatch(two_state):
    with pytest.raises(ValueError, match=r"mixture policies must have shape \(m, S, A\)"):
        evaluate_mixture(two_state, Mixture(np.full((2, 3, 2), 0.5), [0.5, 0.5]))


def test_cmdp_from_successors_without_dense_tensor():
    M = gridworld(0.2, 15)
    assert not M.has_dense
    evaluate(M, np.full((225, 4), 0.25))
    evaluate(M, np.full((225, 4), 0.25), method="sparse")
    occupancy(M, np.full((225, 4), 0.25), method="iterative")
    assert not M.has_dense  # no solver needed the dense tensor


def test_absorbing_start_state():
    # nu0 on an absorbing state with zero reward: every value is 0, occupancy is a point mass
    P = np.zeros((2, 1, 2))
    P[0, 0, 1] = 1.0
    P[1, 0, 1] = 1.0
    M = CMDP(P, [[1.0], [0.0]], [[1.0], [0.0]], 1.0, 0.9, [0.0, 1.0])
    for method in SOLVERS:
        ev = evaluate(M, [[1.0], [1.0]], method=method)
        assert ev.reward == 0.0 and ev.cost[0] == 0.0
        np.testing.assert_allclose(occupancy(M, [[1.0], [1.0]], method=method), [[0.0], [1.0]],
                                   atol=1e-12)


@pytest.mark.parametrize("gamma", [5e-324, 1e-300, 1e-12])
def test_tiny_gamma_iterative(gamma):
    """Regression (found by hypothesis): a denormal gamma overflowed the sweep cap."""
    import numpy as np

    from safemeta_fast import CMDP, evaluate

    M = CMDP(np.ones((1, 1, 1)), [[2.0]], [[1.0]], 1.0, gamma, [1.0])
    ev = evaluate(M, np.ones((1, 1)), method="iterative")
    assert ev.reward == pytest.approx(2.0 / (1.0 - gamma), rel=1e-12)


# ---------------------------------------------------------------------------
# issue 10: iterative solvers stop at a tolerance float64 can reach, within a bounded cap
# ---------------------------------------------------------------------------

def _mixing_pair(gamma: float) -> CMDP:
    """Two states that swap with probability 1/2: no absorbing state, so Gauss-Seidel
    contracts the mean error by only gamma per sweep."""
    P = np.full((2, 1, 2), 0.5)
    return CMDP(P, r=[[1.0], [0.0]], c=[[0.0], [1.0]], cost_limit=1.0, gamma=gamma,
                nu0=[1.0, 0.0])


def test_iterative_near_one_gamma_returns_exact_values_at_reachable_tolerance():
    from safemeta_fast.evaluation import reachable_rtol

    g = 1.0 - 1e-9
    M = gridworld(0.3, gamma=g)
    pi = np.full((49, 4), 0.25)
    mu = occupancy(M, pi, method="iterative")
    mu_lu = occupancy(M, pi, method="dense")
    assert np.abs(mu - mu_lu).sum() <= 1e-6
    ev_it, ev_lu = evaluate(M, pi, method="iterative"), evaluate(M, pi, method="dense")
    assert abs(ev_it.reward - ev_lu.reward) <= reachable_rtol(g, 1e-11) * abs(ev_lu.reward)
    assert reachable_rtol(0.9, 1e-11) == 1e-11  # the default accuracy is untouched


@pytest.mark.parametrize("which", ["occupancy", "evaluate", "evaluate_many"])
def test_iterative_sweep_cap_raises_convergence_error_naming_cap_and_residual(which):
    from safemeta_fast.errors import ConvergenceError
    from safemeta_fast.evaluation import ITERATIVE_MAX_SWEEPS

    M = _mixing_pair(1.0 - 1e-9)
    pi = np.ones((2, 1))
    call = {"occupancy": occupancy, "evaluate": evaluate, "evaluate_many": evaluate_many}[which]
    with pytest.raises(ConvergenceError, match=rf"cap of {ITERATIVE_MAX_SWEEPS} .*error \d"):
        call(M, pi, method="iterative")
    # the factorisations answer the same question exactly
    assert evaluate(M, pi, method="dense").reward == pytest.approx(0.5e9, rel=1e-6)
