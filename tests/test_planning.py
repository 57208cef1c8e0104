"""Value iteration and the primal-dual CMDP solver: twins, brute force, check values."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from safemeta_fast.kernels import planning as kp

from safemeta_fast import CMDP, ConvergenceError
from safemeta_fast.envs import PAPER_TEST_NOISES, gridworld
from safemeta_fast.evaluation import evaluate, state_values
from safemeta_fast.planning import primal_dual, value_iteration
from tests.strategies import cmdps, random_cmdp
from tests.twins import evaluate_dense, primal_dual_dense, state_values_dense, value_iteration_dense


def _all_deterministic(S, A):
    for choice in itertools.product(range(A), repeat=S):
        pi = np.zeros((S, A))
        pi[np.arange(S), choice] = 1.0
        yield pi


# ---------------------------------------------------------------------------
# value iteration
# ---------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(cmdps(max_states=6, max_actions=3))
def test_value_iteration_matches_dense_twin(M):
    res = value_iteration(M, tol=1e-10)
    v_twin, _ = value_iteration_dense(M.P, M.r, M.gamma, tol=1e-10)
    np.testing.assert_allclose(res.values, v_twin, atol=2.5e-10)
    assert res.error_bound <= 1e-10
    # the greedy policy is optimal: its exact values equal v*
    vr, _ = state_values_dense(M.P, M.r, M.c, M.gamma, res.policy)
    np.testing.assert_allclose(vr, res.values, atol=1e-9)
    # q is the one-step look-ahead of the returned values
    np.testing.assert_allclose(res.q, M.r + M.gamma * M.P @ res.values, atol=1e-12)
    assert res.value == pytest.approx(float(M.nu0 @ res.values), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(cmdps(max_states=4, max_actions=3))
def test_value_iteration_matches_brute_force(M):
    S, A = M.n_states, M.n_actions
    best_r = np.full(S, -np.inf)
    best_c = np.full(S, np.inf)
    for pi in _all_deterministic(S, A):
        vr, vc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
        best_r = np.maximum(best_r, vr)
        best_c = np.minimum(best_c, vc[:, 0])
    res = value_iteration(M, tol=1e-10)
    np.testing.assert_allclose(res.values, best_r, atol=1e-9)
    res_c = value_iteration(M, tol=1e-10, objective="cost")
    np.testing.assert_allclose(res_c.values, best_c, atol=1e-9)
    assert res_c.objective == "cost"
    # greedy cost policy attains the minimum
    _, vc = state_values_dense(M.P, M.r, M.c, M.gamma, res_c.policy)
    np.testing.assert_allclose(vc[:, 0], best_c, atol=1e-9)


def test_value_iteration_two_state(two_state):
    # staying forever is worth 1/(1-g) = 2 > leaving 0.5 g/(1-g) = 0.5
    res = value_iteration(two_state, tol=1e-12)
    np.testing.assert_allclose(res.values, [2.0, 1.0], atol=1e-12)
    np.testing.assert_array_equal(res.policy[0], [1.0, 0.0])
    res_c = value_iteration(two_state, tol=1e-12, objective="cost")
    np.testing.assert_allclose(res_c.values, [0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(res_c.policy[0], [0.0, 1.0])


def test_value_iteration_paper_check_values():
    # BASELINES.md section 1: unconstrained optima and minimal achievable costs
    M1, M3, M4 = gridworld(0.1), gridworld(0.3), gridworld(0.4)
    assert value_iteration(M1).value == pytest.approx(59.762607, abs=5e-6)
    res3 = value_iteration(M3)
    assert res3.value == pytest.approx(52.857149, abs=5e-6)
    assert evaluate(M3, res3.policy).cost[0] == pytest.approx(3.644, abs=5e-4)
    assert value_iteration(M1, objective="cost").value == pytest.approx(0.1655, abs=5e-5)
    assert value_iteration(M3, objective="cost").value == pytest.approx(0.7561, abs=5e-5)
    assert value_iteration(M4, objective="cost").value == pytest.approx(1.2656, abs=5e-5)
    assert value_iteration(gridworld(0.5), objective="cost").value == pytest.approx(2.0042,
                                                                                   abs=5e-5)


def test_value_iteration_large_gridworld_greedy_is_optimal():
    M = gridworld(0.3, 30)
    res = value_iteration(M, tol=1e-9)
    sv = state_values(M, res.policy)
    np.testing.assert_allclose(sv.reward, res.values, atol=1e-8)
    # Bellman optimality of the result
    np.testing.assert_allclose(res.q.max(axis=1), res.values, atol=2e-9)


def test_value_iteration_second_constraint():
    rng = np.random.default_rng(4)
    M = random_cmdp(rng, 4, 2, K=2)
    res = value_iteration(M, objective="cost", constraint=1, tol=1e-11)
    best = np.full(4, np.inf)
    for pi in _all_deterministic(4, 2):
        _, vc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
        best = np.minimum(best, vc[:, 1])
    np.testing.assert_allclose(res.values, best, atol=1e-10)


def test_value_iteration_convergence_error(grid03):
    with pytest.raises(ConvergenceError,
                       match=r"max_iter=3 with residual [0-9.e+-]+ \(error bound"):
        value_iteration(grid03, max_iter=3)


def test_value_iteration_result_frozen(two_state):
    res = value_iteration(two_state)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.iterations = 0
    for arr in (res.values, res.q, res.policy):
        assert not arr.flags.writeable


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"tol": 0.0}, ValueError, "tol is 0.0; it must be > 0"),
        ({"tol": "x"}, TypeError, "tol must be a real number"),
        ({"tol": float("nan")}, ValueError, "tol is nan; it must be finite"),
        ({"max_iter": 0}, ValueError, "max_iter is 0; it must be >= 1"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an integer"),
        ({"objective": "utility"}, ValueError, "objective is 'utility'; expected one of"),
        ({"constraint": 1}, ValueError, r"constraint is 1; the task has 1 constraint\(s\)"),
        ({"constraint": -1}, ValueError, "constraint is -1; it must be >= 0"),
    ],
)
def test_value_iteration_validation(two_state, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        value_iteration(two_state, **kwargs)


def test_value_iteration_model_type():
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        value_iteration(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------------------
# primal-dual: check values of the reference (BASELINES.md 2d)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "noise, v_r, v_c",
    [(0.4, 44.915306, 1.500000), (0.3, 51.953329, 1.500000)],
)
def test_primal_dual_check_values(noise, v_r, v_c):
    res = primal_dual(gridworld(noise))
    assert res.reward == pytest.approx(v_r, abs=5e-7)
    assert res.cost[0] == pytest.approx(v_c, abs=5e-7)
    assert res.iterations == 10_000
    assert res.multiplier[0] > 0  # the constraint is active


def test_primal_dual_safe_policy_is_nearly_deterministic():
    res = primal_dual(gridworld(0.4))
    # smallest entry ~1e-282 in the reference: no underflow to NaN, no 0 * log 0 trouble
    assert 0.0 <= res.policy.min() < 1e-250
    assert np.all(np.isfinite(res.policy))
    np.testing.assert_allclose(res.policy.sum(axis=1), 1.0, atol=1e-12)
    ev = evaluate(gridworld(0.4), res.policy)
    assert ev.reward == res.reward


def test_primal_dual_lb_start_policy():
    res = primal_dual(gridworld(0.4), beta=8.0, eta_p=0.0125)
    assert res.reward == pytest.approx(35.2742, abs=5e-5)
    assert res.cost[0] == pytest.approx(1.500140, abs=5e-7)
    assert not res.feasible  # marginally above the limit, as in the reference
    assert res.policy.min() > 1e-16


@pytest.mark.parametrize(
    "noise, u_opt",
    [(PAPER_TEST_NOISES[0], 49.4664), (PAPER_TEST_NOISES[1], 54.3663),
     (PAPER_TEST_NOISES[8], 49.1506), (PAPER_TEST_NOISES[9], 53.7147)],
)
def test_primal_dual_u_opt_table(noise, u_opt):
    res = primal_dual(gridworld(noise))
    assert res.reward == pytest.approx(u_opt, abs=5e-5)
    assert res.cost[0] == pytest.approx(1.5, abs=1e-5)


def test_primal_dual_noise_01_oscillates_around_reference():
    """At noise 0.1 the iterates do not settle: (xi, pi) cycle with period about 4.

    The reference's last iterate (59.657945, 0.488665) is one phase of that cycle, so the
    exact value depends on round-off; we check that the cycle visits that phase and
    stays in the band the reference's value belongs to.
    """
    M = gridworld(0.1)
    S, A = 49, 4
    pi = np.full((S, A), 0.25)
    xi, v, vc = np.zeros(1), np.zeros(S), np.zeros((S, 1))
    args = (M.succ_ptr, M.succ_next, M.succ_prob, M.r, M.c, M.cost_limit, M.nu0, M.gamma, 0.1,
            0.0, 10.0, 0.1)
    kp.primal_dual_kernel(*args, 9_960, 50, 1e-5, True, pi, xi, v, vc)
    rewards, costs = [], []
    for _ in range(40):
        kp.primal_dual_kernel(*args, 1, 50, 1e-5, True, pi, xi, v, vc)
        ev = evaluate(M, pi / pi.sum(axis=1, keepdims=True))
        rewards.append(ev.reward)
        costs.append(ev.cost[0])
    rewards, costs = np.array(rewards), np.array(costs)
    assert rewards.min() > 59.657 and rewards.max() < 59.7370  # never above the LP optimum
    # a phase close to the reference's last iterate is visited
    near = (np.abs(rewards - 59.657945) < 5e-4) & (np.abs(costs - 0.488665) < 5e-3)
    assert near.any()
    # and the public function's last iterate lies in the same band
    res = primal_dual(M)
    assert 59.657 < res.reward < 59.737


def test_primal_dual_eta_p_default_equals_explicit():
    M = gridworld(0.3)
    a = primal_dual(M, n_iter=300)
    b = primal_dual(M, n_iter=300, eta_p=(1 - M.gamma) / 0.1)
    np.testing.assert_allclose(a.policy, b.policy, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(a.multiplier, b.multiplier, rtol=1e-9)


def test_primal_dual_inactive_second_constraint_changes_nothing():
    M = gridworld(0.3)
    c2 = np.concatenate([M.c, np.zeros_like(M.c)], axis=2)
    M2 = M.replace(c=c2, cost_limit=[1.5, 1.0])
    a = primal_dual(M, n_iter=2_000)
    b = primal_dual(M2, n_iter=2_000)
    assert b.multiplier.shape == (2,) and b.cost.shape == (2,)
    assert b.multiplier[1] == 0.0
    np.testing.assert_array_equal(a.policy, b.policy)
    assert b.multiplier[0] == a.multiplier[0]


# ---------------------------------------------------------------------------
# primal-dual vs its dense twin
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["alternating", "simultaneous"])
def test_primal_dual_matches_twin_gridworld(mode):
    M = gridworld(0.3)
    res = primal_dual(M, n_iter=150, mode=mode)
    pi, xi, v, _ = primal_dual_dense(M.P, M.r, M.c, M.cost_limit, M.nu0, M.gamma, n_iter=150,
                                     alternating=mode == "alternating")
    np.testing.assert_allclose(res.policy, pi, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(res.multiplier, xi, rtol=1e-8)
    np.testing.assert_allclose(res.soft_value, v, rtol=1e-8)
    vr, vc, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, res.policy)
    assert res.reward == pytest.approx(vr, rel=1e-10)


@settings(max_examples=15, deadline=None)
@given(cmdps(max_states=5, max_actions=3, max_constraints=2))
def test_primal_dual_matches_twin_random(M):
    # sweep_tol = 0 fixes the sweep count, so the iteration is a smooth map and the kernel
    # and the twin agree up to round-off
    # (a damped mirror step: eta_p is half its largest value, so pi keeps an exponent 1/2)
    beta = 0.5
    kw = dict(beta=beta, eta_p=0.5 * (1 - M.gamma) / beta, eta_xi=0.05, n_iter=60,
              max_sweeps=4, sweep_tol=0.0)
    for mode in ("alternating", "simultaneous"):
        res = primal_dual(M, mode=mode, **kw)
        pi, xi, v, _ = primal_dual_dense(M.P, M.r, M.c, M.cost_limit, M.nu0, M.gamma,
                                         alternating=mode == "alternating", **kw)
        np.testing.assert_allclose(res.policy, pi, rtol=1e-8, atol=1e-13)
        np.testing.assert_allclose(res.multiplier, xi, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(res.soft_value, v, rtol=1e-8, atol=1e-10)
        assert res.lagrangian == pytest.approx(float(M.nu0 @ v + xi @ M.cost_limit), rel=1e-8,
                                               abs=1e-10)
        # sweeps stop early only on an exact fixed point (change == 0)
        assert 60 * 2 <= res.sweeps <= 60 * 8


def test_primal_dual_result_frozen():
    res = primal_dual(gridworld(0.3), n_iter=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.reward = 0.0
    for arr in (res.policy, res.multiplier, res.soft_value, res.cost):
        assert not arr.flags.writeable
    np.testing.assert_array_equal(res.slack, res.cost_limit - res.cost)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"beta": 0.0}, ValueError, "beta is 0.0; it must be > 0"),
        ({"beta": None}, TypeError, "beta must be a real number"),
        ({"eta_p": -1.0}, ValueError, "eta_p is -1.0; it must be > 0"),
        ({"eta_p": 2.0}, ValueError, r"eta_p is 2.0; it must lie in \(0, \(1-gamma\)/beta\]"),
        ({"eta_xi": -0.1}, ValueError, "eta_xi is -0.1; it must be >= 0"),
        ({"eta_xi": float("inf")}, ValueError, "eta_xi is inf; it must be finite"),
        ({"n_iter": 0}, ValueError, "n_iter is 0; it must be >= 1"),
        ({"n_iter": 1.0}, TypeError, "n_iter must be an integer"),
        ({"max_sweeps": 0}, ValueError, "max_sweeps is 0; it must be >= 1"),
        ({"sweep_tol": -1e-5}, ValueError, "sweep_tol is -1e-05; it must be >= 0"),
        ({"mode": "alt_gda"}, ValueError, "mode is 'alt_gda'; expected one of 'alternating'"),
    ],
)
def test_primal_dual_validation(grid03, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        primal_dual(grid03, **kwargs)


def test_primal_dual_model_type():
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        primal_dual("grid")


def test_primal_dual_nonfinite_raises():
    # a huge dual step makes xi overflow to inf
    P = np.zeros((1, 2, 1))
    P[0, :, 0] = 1.0
    M = CMDP(P, [[1.0, 0.0]], [[1e300, 1e300]], 0.0, 0.5, [1.0])
    from safemeta_fast.errors import SafeMetaError

    with pytest.raises(SafeMetaError, match="non-finite iterates"):
        primal_dual(M, eta_xi=1e300, n_iter=50)


# ---------------------------------------------------------------------------
# solve_mdp: policy iteration and modified policy iteration (issue 13)
# ---------------------------------------------------------------------------

from safemeta_fast.planning import (  # noqa: E402
    DEFAULT_SWEEPS,
    MDP_METHODS,
    MDPSolution,
    solve_mdp,
)
from tests.twins import modified_policy_iteration_dense, policy_iteration_dense  # noqa: E402

SOLVERS = [(m, p) for m in MDP_METHODS[1:] for p in ("sparse", "dense")]


@settings(max_examples=30, deadline=None)
@given(cmdps(max_states=6, max_actions=3))
def test_solve_mdp_every_method_matches_value_iteration(M):
    ref = value_iteration(M, tol=1e-11)
    for method, path in SOLVERS + [("auto", "auto")]:
        res = solve_mdp(M, method=method, path=path, tol=1e-10)
        np.testing.assert_allclose(res.values, ref.values, atol=1e-8, err_msg=f"{method}/{path}")
        assert res.error_bound <= 1e-10 or res.method == "policy_iteration"
        # the greedy policy attains the returned values
        vr, _ = state_values_dense(M.P, M.r, M.c, M.gamma, res.policy)
        np.testing.assert_allclose(vr, res.values, atol=1e-8)
        np.testing.assert_allclose(res.q, M.r + M.gamma * M.P @ res.values, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(cmdps(max_states=6, max_actions=3))
def test_policy_iteration_kernels_match_twin(M):
    v_twin, sigma_twin, it_twin = policy_iteration_dense(M.P, M.r, M.gamma)
    for path in ("sparse", "dense"):
        res = solve_mdp(M, method="policy_iteration", path=path, tol=1e-300)
        np.testing.assert_allclose(res.values, v_twin, atol=1e-11)
        assert res.iterations == it_twin and res.work == it_twin


@settings(max_examples=30, deadline=None)
@given(cmdps(max_states=6, max_actions=3))
def test_modified_policy_iteration_kernels_match_twin(M):
    for sweeps in (0, 3):
        v_twin, it_twin = modified_policy_iteration_dense(M.P, M.r, M.gamma, sweeps, 1e-9)
        for path in ("sparse", "dense"):
            res = solve_mdp(M, method="modified_policy_iteration", path=path, tol=1e-9,
                            n_sweeps=sweeps)
            np.testing.assert_allclose(res.values, v_twin, atol=1e-11)
            assert res.iterations == it_twin
            assert res.work == sweeps * (it_twin - 1)


@pytest.mark.parametrize("method, path", SOLVERS + [("auto", "auto")])
def test_solve_mdp_paper_check_values(method, path):
    M1, M3 = gridworld(0.1), gridworld(0.3)
    assert solve_mdp(M1, method=method, path=path).value == pytest.approx(59.762607, abs=5e-6)
    assert solve_mdp(M3, method=method, path=path).value == pytest.approx(52.857149, abs=5e-6)
    res_c = solve_mdp(M3, method=method, path=path, objective="cost")
    assert res_c.value == pytest.approx(0.7561, abs=5e-5) and res_c.objective == "cost"


@pytest.mark.parametrize("method, path", SOLVERS)
def test_solve_mdp_cost_objective_matches_brute_force(method, path):
    rng = np.random.default_rng(4)
    M = random_cmdp(rng, 4, 2, K=2, sparsity=0.5)
    best = np.full(4, np.inf)
    for pi in _all_deterministic(4, 2):
        _, vc = state_values_dense(M.P, M.r, M.c, M.gamma, pi)
        best = np.minimum(best, vc[:, 1])
    res = solve_mdp(M, method=method, path=path, objective="cost", constraint=1, tol=1e-11)
    np.testing.assert_allclose(res.values, best, atol=1e-9)


@pytest.mark.parametrize("method, path", SOLVERS + [("auto", "auto")])
def test_solve_mdp_ties_go_to_the_lowest_action(method, path):
    # actions 1 and 2 are copies of action 0's better twin: q ties exactly among them
    rng = np.random.default_rng(7)
    base = random_cmdp(rng, 5, 2)
    P = np.concatenate([base.P[:, :1], base.P[:, 1:], base.P[:, 1:]], axis=1)
    r = np.concatenate([base.r[:, :1] - 1.0, base.r[:, 1:] + 1.0, base.r[:, 1:] + 1.0], axis=1)
    c = np.zeros((5, 3, 1))
    M = CMDP(P, r, c, 1.0, base.gamma, base.nu0)
    res = solve_mdp(M, method=method, path=path)
    assert np.all(res.q[:, 1] == res.q[:, 2])
    np.testing.assert_array_equal(res.policy.argmax(axis=1), np.ones(5, dtype=int))


def test_solve_mdp_results_agree_on_larger_tasks():
    from safemeta_fast.envs import RandomCMDPFamily

    tasks = [gridworld(0.3, 20), RandomCMDPFamily(60, 4, base_seed=1, gamma=0.95).build([0.3, 0.6])]
    for M in tasks:
        ref = value_iteration(M, tol=1e-10)
        for method, path in SOLVERS + [("auto", "auto")]:
            res = solve_mdp(M, method=method, path=path)
            np.testing.assert_allclose(res.values, ref.values, atol=1e-8,
                                       err_msg=f"{method}/{path}")
            np.testing.assert_array_equal(res.policy, ref.policy)


def test_solve_mdp_auto_paths():
    from safemeta_fast.envs import RandomCMDPFamily

    dense = RandomCMDPFamily(30, 3, base_seed=0).build([0.5, 0.5])
    assert solve_mdp(dense).path == "dense"
    assert solve_mdp(gridworld(0.3)).path == "sparse"
    # value iteration has only the sparse kernel
    assert solve_mdp(dense, method="value_iteration", path="dense").path == "sparse"


def _sticky_ring(n=30, gamma=0.999, eps=1e-3):
    """Each state stays with probability 1 - eps (both actions), else moves one step on a
    ring; random rewards: the value differences between states mix very slowly, so the
    span stop of modified PI needs thousands of steps while PI needs one."""
    P = np.zeros((n, 2, n))
    for s in range(n):
        P[s, :, s] = 1.0 - eps
        P[s, :, (s + 1) % n] = eps
    r = np.random.default_rng(0).random((n, 2))
    return CMDP(P, r, np.zeros((n, 2)), 1.0, gamma, np.full(n, 1.0 / n))


def test_solve_mdp_auto_falls_back_to_policy_iteration():
    M = _sticky_ring()
    res = solve_mdp(M)
    assert res.method == "policy_iteration"
    ref = solve_mdp(M, method="policy_iteration", tol=1e-12)
    np.testing.assert_allclose(res.values, ref.values, atol=1e-8)
    np.testing.assert_array_equal(res.policy, ref.policy)
    mpi = solve_mdp(M, method="modified_policy_iteration")
    assert mpi.iterations > 10 * res.iterations
    np.testing.assert_allclose(mpi.values, ref.values, atol=1e-8)


def test_solve_mdp_result_type_and_defaults(grid03):
    res = solve_mdp(grid03, method="modified_policy_iteration")
    assert isinstance(res, MDPSolution) and res.path == "sparse"
    assert res.work == DEFAULT_SWEEPS * (res.iterations - 1)
    vi = solve_mdp(grid03, method="value_iteration")
    assert vi.work == vi.iterations == value_iteration(grid03).iterations
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.method = "x"
    for arr in (res.values, res.q, res.policy):
        assert not arr.flags.writeable


def test_solve_mdp_convergence_error(grid03):
    with pytest.raises(ConvergenceError, match=r"modified policy iteration hit max_iter=2"):
        solve_mdp(grid03, method="modified_policy_iteration", max_iter=2)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"method": "howard"}, ValueError, "method is 'howard'; expected one of 'auto'"),
        ({"path": "gpu"}, ValueError, "path is 'gpu'; expected one of 'auto'"),
        ({"n_sweeps": -1}, ValueError, "n_sweeps is -1; it must be >= 0"),
        ({"n_sweeps": 1.5}, TypeError, "n_sweeps must be an integer"),
        ({"tol": -1.0}, ValueError, r"tol is -1.0; it must be > 0"),
        ({"max_iter": 0}, ValueError, "max_iter is 0; it must be >= 1"),
        ({"objective": "utility"}, ValueError, "objective is 'utility'; expected one of"),
        ({"constraint": 3}, ValueError, r"constraint is 3; the task has 1 constraint\(s\)"),
    ],
)
def test_solve_mdp_validation(two_state, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        solve_mdp(two_state, **kwargs)


def test_solve_mdp_model_type():
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        solve_mdp(np.zeros((2, 2, 2)))


# issue 10: a tol below float64 resolution stops at the reachable floor, and the reported
# error bound is the one actually met
@pytest.mark.parametrize("method", ["value_iteration", "modified_policy_iteration",
                                    "policy_iteration"])
def test_near_one_gamma_stops_with_an_honest_error_bound(method):
    M = gridworld(0.3, gamma=1.0 - 1e-9)
    res = solve_mdp(M, method=method, tol=1e-8)
    exact = solve_mdp(M, method="policy_iteration", tol=1e-8)
    assert res.error_bound >= 0.0
    assert np.max(np.abs(res.values - exact.values)) <= res.error_bound + exact.error_bound
    assert res.error_bound <= 1e-12 * np.max(np.abs(res.values)) * 1e9  # the floor, not inf
