"""O_s: robust value iteration (vs a NumPy twin), the robust safe policy, exact verification."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.errors import SafetyAssumptionError
from safemeta_fast.safe_policy import robust_safe_policy, union_successors, verify_safe_policy

from .strategies import random_cmdp
from .twins import evaluate_dense


def robust_vi_twin(Ps, w, gamma, tol=1e-12):
    """Dense worst-case value iteration: v = min_a [w + gamma max_m P_m v]."""
    v = np.zeros(w.shape[0])
    while True:
        q = w + gamma * np.max(np.einsum("msat,t->msa", Ps, v), axis=0)
        v_new = q.min(axis=1)
        if np.max(np.abs(v_new - v)) * gamma / (1 - gamma) <= tol:
            return v_new, q.argmin(axis=1)
        v = v_new


def test_union_successors_reproduces_each_task():
    rng = np.random.default_rng(1)
    tasks = [random_cmdp(rng, 5, 2, sparsity=0.6) for _ in range(3)]
    ptr, nxt, Pst = union_successors(tasks)
    for m, M in enumerate(tasks):
        dense = np.zeros((10, 5))
        rows = np.repeat(np.arange(10), np.diff(ptr))
        dense[rows, nxt] = Pst[m]
        np.testing.assert_array_equal(dense.reshape(5, 2, 5), M.P)


def test_robust_vi_matches_twin():
    from safemeta_fast.kernels.robust import robust_value_iteration

    rng = np.random.default_rng(2)
    tasks = [random_cmdp(rng, 6, 3, sparsity=0.5) for _ in range(4)]
    ptr, nxt, Pst = union_successors(tasks)
    w = rng.random((6, 3))
    v = np.empty(6)
    act = np.empty(6, dtype=np.int64)
    it, res = robust_value_iteration(Pst, ptr, nxt, w, 0.9, 1e-12, 100_000, v, act)
    v_ref, a_ref = robust_vi_twin(np.stack([M.P for M in tasks]), w, 0.9)
    np.testing.assert_allclose(v, v_ref, atol=1e-10)
    np.testing.assert_array_equal(act, a_ref)
    assert res <= 1e-12


def test_robust_values_bound_every_task():
    """The worst-case cost of the greedy robust policy bounds its cost on every task."""
    tasks = [gridworld(x) for x in (0.25, 0.3, 0.35)]
    pi, info = robust_safe_policy(tasks, margin=0.0)
    for M in tasks:
        _, cost, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
        assert cost[0] <= 1.5 + 1e-12
    assert info["min_slack"] >= 0.0


def test_robust_safe_policy_keeps_margin_and_gains_reward():
    tasks = [gridworld(x) for x in (0.26, 0.3, 0.34)]
    pi0, info0 = robust_safe_policy(tasks, margin=10.0)  # unreachable margin
    assert info0["lam"] == 0.0  # falls back to the safest policy
    pi, info = robust_safe_policy(tasks)
    assert info["margin"] == pytest.approx(0.5 * info["safest_slack"])
    chk = verify_safe_policy(pi, tasks)
    assert chk.xi_hat >= info["margin"] - 1e-12
    chk0 = verify_safe_policy(pi0, tasks)
    assert chk.reward.min() >= chk0.reward.min()  # trading slack for reward
    assert chk.xi_hat > 0


def test_verify_matches_twin_and_names_worst_task():
    tasks = [gridworld(x) for x in (0.1, 0.3, 0.4)]
    pi = np.full((49, 4), 0.25)
    chk = verify_safe_policy(pi, tasks, raise_on_unsafe=False)
    for i, M in enumerate(tasks):
        rew, cost, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)
        assert chk.reward[i] == pytest.approx(rew, rel=1e-10)
        assert chk.slack[i, 0] == pytest.approx(1.5 - cost[0], rel=1e-10)
    assert chk.xi_hat == chk.slack.min() and not chk.safe
    with pytest.raises(SafetyAssumptionError, match=r"on noise=0.4 constraint 0 its slack is -"):
        verify_safe_policy(pi, tasks, names=["noise=0.1", "noise=0.3", "noise=0.4"])


def test_validation():
    with pytest.raises(ValueError, match="at least one CMDP"):
        verify_safe_policy(np.full((49, 4), 0.25), [])
    with pytest.raises(TypeError, match=r"tasks\[1\] is a str"):
        verify_safe_policy(np.full((49, 4), 0.25), [gridworld(0.1), "x"])
    with pytest.raises(ValueError, match=r"tasks\[1\] has \(S, A, K\)"):
        robust_safe_policy([gridworld(0.1), gridworld(0.1, size=5)])
    with pytest.raises(ValueError, match="different gamma"):
        robust_safe_policy([gridworld(0.1), gridworld(0.1, gamma=0.8)])


def test_robust_value_iteration_with_a_tol_below_float64_resolution_stops_honestly():
    # issue 10: a tol below float64 resolution of the values (1e-12 on values of size 1e3
    # at gamma = 0.999) stops before max_iter with a bound that holds (this chain reaches
    # an exact float fixed point, so it guards the floor rather than isolating it)
    from safemeta_fast.kernels.robust import robust_value_iteration

    g = 0.999
    ptr = np.array([0, 2, 4], dtype=np.int64)
    nxt = np.array([0, 1, 0, 1], dtype=np.int64)   # two states that swap half the time
    P = np.full((2, 4), 0.5)
    w = np.array([[1.0], [0.25]])
    v, act = np.empty(2), np.empty(2, dtype=np.int64)
    it, bound = robust_value_iteration(P, ptr, nxt, w, g, 1e-12, 100_000, v, act)
    assert it < 100_000
    exact = np.linalg.solve(np.eye(2) - g * np.full((2, 2), 0.5), w[:, 0])
    # the bound holds up to the round-off of the LU reference (cond ~ 1/(1-gamma))
    assert np.max(np.abs(v - exact)) <= bound + 1e3 * np.finfo(float).eps * np.max(np.abs(v))
    assert bound <= 32 * np.finfo(float).eps * g / (1 - g) * np.max(np.abs(v))
