"""LB-SGD baseline (BASELINES.md section 6): estimator vs the reference form, unbiasedness,
the update by hand, the gridworld check values, block accounting, determinism, validation."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from safemeta_fast.kernels.trajectory import csr_cdf, policy_cdf, sample_episode

from safemeta_fast import evaluate
from safemeta_fast.baselines.common import BaselineLog
from safemeta_fast.baselines.lb_sgd import (
    THETA_ZERO_PROB,
    _adaptive_step,
    _barrier_gradient,
    _softmax,
    _theta_from_policy,
    default_smoothness,
    lb_sgd,
    lb_sgd_schedule,
    lb_start_policy,
    policy_gradient_batch,
)
from safemeta_fast.envs import gridworld
from tests.strategies import random_cmdp, random_policy

NOISE_TEST = 0.33994760
U_OPT = 49.4664  # GDA (beta = 0.1) value of the test noise, BASELINES.md 2d


# ---------------------------------------------------------------------------
# NumPy twin of the reference estimator (cumulative score vector z)
# ---------------------------------------------------------------------------


def sampled_paths(M, pi, seed, first, n, horizon):
    """The exact paths the kernel uses: episode first + j of ``seed``, no early stop."""
    pc = policy_cdf(np.ascontiguousarray(pi))
    nc = policy_cdf(np.asarray(M.nu0)[None, :])[0]
    sc = csr_cdf(M.succ_ptr, M.succ_prob)
    out = []
    for j in range(n):
        st = np.empty(horizon + 1, np.int64)
        ac = np.empty(horizon + 1, np.int64)
        T = sample_episode(seed, first + j, pc, nc, M.succ_ptr, M.succ_next, sc, horizon, False,
                           M.absorbing, st, ac)
        assert T == horizon
        out.append((st[:horizon].copy(), ac[:horizon].copy()))
    return out


def twin_reference_gradient(M, pi, paths):
    """BASELINES.md 6b step 3 literally: z += e_a - pi(.|s); g_r += gamma^t r_t z; g_c likewise."""
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    r, c, g = np.asarray(M.r), np.asarray(M.c), M.gamma
    g_r = np.zeros((S, A))
    g_c = np.zeros((K, S, A))
    j_c = np.zeros(K)
    j_r = 0.0
    for states, actions in paths:
        z = np.zeros((S, A))
        for t, (s, a) in enumerate(zip(states, actions)):
            z[s] -= pi[s]
            z[s, a] += 1.0
            d = g ** t
            g_r += d * r[s, a] * z
            for k in range(K):
                g_c[k] += d * c[s, a, k] * z
            j_c += d * c[s, a]
            j_r += d * r[s, a]
    n = len(paths)
    return g_r / n, g_c / n, j_r / n, j_c / n


def exact_policy_gradient(M, pi, values):
    """Policy gradient theorem for softmax: dV/dtheta[s, a] = d(s) pi(a|s) A(s, a) / (1 - gamma)."""
    P, g, nu0 = np.asarray(M.P), M.gamma, np.asarray(M.nu0)
    S = M.n_states
    P_pi = np.einsum("sa,sat->st", pi, P)
    inv = np.linalg.inv(np.eye(S) - g * P_pi)
    d = (1 - g) * nu0 @ inv
    v = inv @ np.sum(pi * values, axis=1)
    q = values + g * P @ v
    return d[:, None] * pi * (q - v[:, None]) / (1 - g), float(nu0 @ v)


@pytest.fixture(scope="module")
def pi_lb():
    return lb_start_policy(gridworld(0.4))


@pytest.fixture(scope="module")
def grid_test():
    return gridworld(NOISE_TEST)


# ---------------------------------------------------------------------------
# estimator
# ---------------------------------------------------------------------------


def _assert_close(x, y, rel=1e-10):
    scale = max(1.0, float(np.max(np.abs(y))))
    np.testing.assert_allclose(x, y, rtol=rel, atol=rel * scale)


def test_estimator_matches_reference_form_gridworld(grid_test, pi_lb):
    M = grid_test
    est = policy_gradient_batch(M, pi_lb, 12, seed=3, horizon=600, first_episode=40)
    paths = sampled_paths(M, np.asarray(pi_lb), 3, 40, 12, 600)
    g_r, g_c, j_r, j_c = twin_reference_gradient(M, np.asarray(pi_lb), paths)
    assert np.max(np.abs(g_r)) > 1.0  # a non-trivial gradient
    _assert_close(est.reward_grad, g_r)
    _assert_close(est.cost_grad, g_c)
    _assert_close(est.cost_estimate, j_c)
    _assert_close(est.reward_estimate, j_r)
    assert est.seed == 3 and est.first_episode == 40 and est.n_trajectories == 12


def test_estimator_matches_reference_form_two_constraints():
    """K = 2, sparse random CMDP, more trajectories than one chunk (several partials)."""
    rng = np.random.default_rng(5)
    M = random_cmdp(rng, 5, 3, K=2, gamma=0.8, sparsity=0.5)
    pi = random_policy(rng, 5, 3)
    n, H = 70, 40
    est = policy_gradient_batch(M, pi, n, seed=11, horizon=H)
    g_r, g_c, j_r, j_c = twin_reference_gradient(M, pi, sampled_paths(M, pi, 11, 0, n, H))
    _assert_close(est.reward_grad, g_r)
    _assert_close(est.cost_grad, g_c)
    _assert_close(est.cost_estimate, j_c)
    _assert_close(est.reward_estimate, j_r)


def test_estimator_is_unbiased_on_tiny_cmdp():
    """Batch means over 20 independent batches vs the exact policy gradient (5 standard errors).

    gamma = 0.8 and H = 200 make the truncation bias < 1e-18, so the only error is Monte
    Carlo; each entry is checked against 5 standard errors of the batch means.
    """
    rng = np.random.default_rng(1)
    M = random_cmdp(rng, 3, 2, K=1, gamma=0.8, sparsity=0.7)
    pi = random_policy(rng, 3, 2)
    pi = 0.8 * pi + 0.1  # keep every action probable (rows of 2 actions still sum to 1)
    B, n, H = 20, 5000, 200
    ests = [policy_gradient_batch(M, pi, n, seed=7, horizon=H, first_episode=b * n)
            for b in range(B)]
    gr = np.array([e.reward_grad for e in ests])
    gc = np.array([e.cost_grad[0] for e in ests])
    jc = np.array([e.cost_estimate[0] for e in ests])
    exact_r, v_r = exact_policy_gradient(M, pi, np.asarray(M.r))
    exact_c, v_c = exact_policy_gradient(M, pi, np.asarray(M.c)[:, :, 0])
    assert np.isclose(v_r, evaluate(M, pi).reward) and np.isclose(v_c, evaluate(M, pi).cost[0])
    assert np.max(np.abs(exact_r)) > 0.2 and np.max(np.abs(exact_c)) > 0.1  # the check can fail
    for samples, exact in ((gr, exact_r), (gc, exact_c), (jc, v_c)):
        se = samples.std(axis=0, ddof=1) / math.sqrt(B)
        err = np.abs(samples.mean(axis=0) - exact)
        assert np.all(err <= 5 * se + 1e-12), (err, se)
    # and the estimate is precise enough to be meaningful
    assert np.max(gr.std(axis=0, ddof=1) / math.sqrt(B)) < 0.1 * np.max(np.abs(exact_r))


# ---------------------------------------------------------------------------
# softmax, barrier, update by hand
# ---------------------------------------------------------------------------


def test_softmax_and_theta_init_by_hand():
    theta = np.array([[0.0, math.log(3.0)], [2.0, 2.0], [THETA_ZERO_PROB, 0.0]])
    np.testing.assert_allclose(_softmax(theta), [[0.25, 0.75], [0.5, 0.5], [0.0, 1.0]], rtol=0,
                               atol=1e-15)
    pi = np.array([[0.2, 0.8], [1.0, 0.0]])
    th = _theta_from_policy(pi)
    np.testing.assert_allclose(th[0], np.log([0.2, 0.8]))
    assert th[1, 0] == 0.0 and th[1, 1] == THETA_ZERO_PROB
    np.testing.assert_allclose(_softmax(th), pi, atol=1e-15)


def test_barrier_gradient_by_hand():
    g_r = np.array([[1.0, -1.0]])
    g_c = np.array([[[2.0, 0.0]], [[0.0, 4.0]]])  # K = 2
    j_c = np.array([1.0, 1.49])
    b = np.array([1.5, 1.5])
    g, s_hat = _barrier_gradient(g_r, g_c, j_c, b, eta=0.1, slack_clip=0.05)
    np.testing.assert_allclose(s_hat, [0.5, 0.05])  # second slack 0.01 is clipped to 0.05
    expected = g_r - 0.1 * g_c[0] / (0.5 + 1e-8) - 0.1 * g_c[1] / (0.05 + 1e-8)
    np.testing.assert_allclose(g, expected, rtol=1e-15)
    np.testing.assert_allclose(g, [[1.0 - 0.4, -1.0 - 8.0]], rtol=1e-6)
    # negative estimated slack (J_c above the limit) is clipped as well
    _, s2 = _barrier_gradient(g_r, g_c[:1], np.array([1.7]), b[:1], 0.1, 0.05)
    assert s2[0] == 0.05


def test_adaptive_step_by_hand():
    g = np.array([[3.0, 4.0]])  # ||g|| = 5
    g_c = np.array([[[1.0, 1.0]]])  # <g_c, g> = 7
    s, eta, m0, m1 = 0.2, 0.1, 10.0, 2.0
    first = s / (2 * 7 / 5 + math.sqrt(s * m1))
    m2 = m0 + 4 * eta * m1 / s + 4 * eta * 49 / (25 * s * s)
    assert _adaptive_step(g, g_c, np.array([s]), eta, m0, m1) == pytest.approx(min(first, 1 / m2),
                                                                               rel=1e-14)
    assert _adaptive_step(np.zeros((1, 2)), g_c, np.array([s]), eta, m0, m1) == 0.0


def test_default_smoothness():
    assert default_smoothness(gridworld(0.3)) == pytest.approx((80_000.0, 80_000.0))


def _hand_update(M, pi0, seed, n, H, step_rule, eta=0.1, step=4.0, clip=0.05, smooth=None):
    """One LB-SGD update from the twin's gradient, written out (section 6b; adaptive: K = 1)."""
    g_r, g_c, _, j_c = twin_reference_gradient(M, pi0, sampled_paths(M, pi0, seed, 0, n, H))
    g = g_r.copy()
    for k in range(M.n_constraints):  # one log barrier per constraint
        g -= eta * g_c[k] / (max(float(M.cost_limit[k] - j_c[k]), clip) + 1e-8)
    s_hat = max(float(M.cost_limit[0] - j_c[0]), clip)
    theta = np.log(pi0)
    if step_rule == "fixed":
        theta = theta + step * g
    else:
        m0, m1 = smooth
        norm = np.linalg.norm(g)
        p = float(np.sum(g_c[0] * g)) / norm
        m2 = m0 + 4 * eta * m1 / s_hat + 4 * eta * p * p / s_hat**2
        gam = min(s_hat / (2 * abs(p) + math.sqrt(s_hat * m1)), 1 / m2)
        theta = theta + gam * g / norm
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("rule,smooth,K", [("fixed", None, 1), ("adaptive", (1.0, 2.0), 1),
                                           ("fixed", None, 2)])
def test_first_update_by_hand(rule, smooth, K):
    rng = np.random.default_rng(8)
    M = random_cmdp(rng, 4, 3, K=K, gamma=0.7, cost_limit=[2.0] * K)
    pi0 = 0.7 * random_policy(rng, 4, 3) + 0.1
    fb, H = 40, 30
    log = lb_sgd(M, pi0, n_episodes=fb + 5, first_batch=fb, batch=10, horizon=H, seed=4,
                 regret_reference=1.0, step_rule=rule, smoothness=smooth)
    pi1 = _hand_update(M, pi0, 4, fb, H, rule, smooth=smooth)
    assert not np.allclose(pi1, pi0, atol=1e-3)  # the update moved the policy
    ev0, ev1 = evaluate(M, pi0), evaluate(M, pi1)
    assert log.policy_starts.tolist() == [0, fb]
    np.testing.assert_allclose(log.exact_reward[:fb], ev0.reward, rtol=1e-12)
    np.testing.assert_allclose(log.exact_reward[fb:], ev1.reward, rtol=1e-9)
    np.testing.assert_allclose(log.exact_cost[fb:, 0], ev1.cost[0], rtol=1e-9)
    assert log.info["trajectories_simulated"] == fb
    slack = log.info["slack_estimates"][0]
    assert (isinstance(slack, float) if K == 1 else len(slack) == K)


# ---------------------------------------------------------------------------
# gridworld check values and a short run
# ---------------------------------------------------------------------------


def test_start_policy_check_values(pi_lb):
    ev = evaluate(gridworld(0.4), pi_lb)
    assert ev.reward == pytest.approx(35.2742, abs=5e-5)
    assert ev.cost[0] == pytest.approx(1.500140, abs=5e-7)


def test_gridworld_short_run(grid_test, pi_lb):
    log = lb_sgd(grid_test, pi_lb, n_episodes=3500, first_batch=500, batch=1000, seed=0,
                 regret_reference=U_OPT)
    assert isinstance(log, BaselineLog) and log.method == "lb_sgd"
    assert log.policy_starts.tolist() == [0, 500, 1500, 2500]
    assert log.n_episodes == 3500 and not log.stopped_on_violation
    assert log.exact_reward[0] == pytest.approx(37.2281, abs=5e-5)
    assert log.exact_cost[0, 0] == pytest.approx(1.1230, abs=5e-5)
    assert log.regret[499] == pytest.approx(500 * (U_OPT - 37.2281079), rel=1e-6)
    assert log.violations == 0 and np.all(log.exact_cost <= 1.5)
    # the barrier ascent improves the reward while staying feasible
    assert log.exact_reward[-1] > log.exact_reward[0] + 2.0
    assert log.info["n_updates"] == 3 and log.info["trajectories_simulated"] == 2500
    assert log.info["reference_trajectories"] == 3500
    assert all(s >= 0.05 for s in log.info["slack_estimates"])


# ---------------------------------------------------------------------------
# block accounting
# ---------------------------------------------------------------------------


def test_default_schedule():
    starts = lb_sgd_schedule()
    assert starts.tolist() == [0] + list(range(500, 40_000, 3000))
    assert starts.size == 15 and starts[-1] == 39_500
    assert np.diff(np.append(starts, 40_000)).tolist() == [500] + [3000] * 13 + [500]
    assert lb_sgd_schedule(300, 500, 3000).tolist() == [0]
    assert lb_sgd_schedule(501, 500, 3000).tolist() == [0, 500]
    assert lb_sgd_schedule(3501, 500, 3000).tolist() == [0, 500, 3500]


def test_run_follows_schedule_and_blocks():
    rng = np.random.default_rng(1)
    M = random_cmdp(rng, 3, 2, gamma=0.5, cost_limit=[5.0])
    pi0 = random_policy(rng, 3, 2) * 0.8 + 0.1
    log = lb_sgd(M, pi0, n_episodes=95, first_batch=10, batch=30, horizon=10, seed=2,
                 regret_reference=2.0)
    assert log.policy_starts.tolist() == lb_sgd_schedule(95, 10, 30).tolist() == [0, 10, 40, 70]
    assert log.n_episodes == 95 and log.n_budget == 95
    for lo, hi in [(0, 10), (10, 40), (40, 70), (70, 95)]:
        assert np.all(log.exact_reward[lo:hi] == log.exact_reward[lo])
    assert log.info["trajectories_simulated"] == 10 + 30 + 30  # the last gradient is skipped
    assert log.info["reference_trajectories"] == 10 + 3 * 30


# ---------------------------------------------------------------------------
# violations
# ---------------------------------------------------------------------------


def test_unsafe_start_recorded_or_stopped(grid_test):
    pi_u = np.full((49, 4), 0.25)
    assert not evaluate(grid_test, pi_u).feasible
    kw = dict(n_episodes=60, first_batch=20, batch=20, horizon=20, seed=0, regret_reference=U_OPT)
    stopped = lb_sgd(grid_test, pi_u, stop_on_violation=True, **kw)
    assert stopped.stopped_on_violation and stopped.n_episodes == 0
    assert stopped.policy_starts.size == 0 and stopped.exact_cost.shape == (0, 1)
    kept = lb_sgd(grid_test, pi_u, **kw)
    assert not kept.stopped_on_violation and kept.n_episodes == 60
    assert kept.violations >= 20 and kept.violation_episodes[0] == 0


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------


def test_bit_identical_on_1_and_2_threads(grid_test, pi_lb):
    original = numba.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            est = policy_gradient_batch(grid_test, pi_lb, 300, seed=9, horizon=200)
            log = lb_sgd(grid_test, pi_lb, n_episodes=400, first_batch=100, batch=150,
                         horizon=100, seed=9, regret_reference=U_OPT)
            results.append((est, log))
    finally:
        numba.set_num_threads(original)
    (e1, l1), (e2, l2) = results
    assert np.array_equal(e1.reward_grad, e2.reward_grad)
    assert np.array_equal(e1.cost_grad, e2.cost_grad)
    assert np.array_equal(e1.cost_estimate, e2.cost_estimate)
    assert np.array_equal(l1.exact_reward, l2.exact_reward)
    assert np.array_equal(l1.exact_cost, l2.exact_cost)
    assert l1.info["grad_norms"] == l2.info["grad_norms"]


def test_seed_recorded_and_reproducible(grid_test, pi_lb):
    kw = dict(n_episodes=300, first_batch=100, batch=100, horizon=50, regret_reference=U_OPT)
    a = lb_sgd(grid_test, pi_lb, seed=np.random.default_rng(0), **kw)
    b = lb_sgd(grid_test, pi_lb, seed=a.seed, **kw)
    assert np.array_equal(a.exact_reward, b.exact_reward)
    c = lb_sgd(grid_test, pi_lb, seed=a.seed + 1, **kw)
    assert not np.array_equal(a.exact_reward, c.exact_reward)


def test_progress_bar_does_not_change_results(grid_test, pi_lb, capsys):
    kw = dict(n_episodes=200, first_batch=100, batch=100, horizon=30, seed=1,
              regret_reference=U_OPT)
    quiet = lb_sgd(grid_test, pi_lb, **kw)
    loud = lb_sgd(grid_test, pi_lb, progress=True, **kw)
    assert np.array_equal(quiet.exact_reward, loud.exact_reward)
    assert "lb_sgd" in capsys.readouterr().err


def test_default_regret_reference_is_lp(two_state):
    pi = np.array([[0.5, 0.5], [0.5, 0.5]])
    log = lb_sgd(two_state, pi, n_episodes=5, first_batch=5, horizon=5, seed=0)
    from safemeta_fast import solve_lp
    assert log.regret_reference == pytest.approx(solve_lp(two_state).reward)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(n_episodes=0), ValueError, "n_episodes"),
    (dict(n_episodes=2.5), TypeError, "n_episodes"),
    (dict(horizon=0), ValueError, "horizon"),
    (dict(eta=-0.1), ValueError, "eta"),
    (dict(eta=float("nan")), ValueError, "eta"),
    (dict(step=0.0), ValueError, "step"),
    (dict(step="4"), TypeError, "step"),
    (dict(step_rule="normalised"), ValueError, "step_rule"),
    (dict(first_batch=0), ValueError, "first_batch"),
    (dict(batch=-3), ValueError, "batch"),
    (dict(slack_clip=0.0), ValueError, "slack_clip"),
    (dict(smoothness=(1.0, 1.0)), ValueError, "smoothness only applies"),
    (dict(step_rule="adaptive", smoothness=(1.0,)), ValueError, "pair"),
    (dict(step_rule="adaptive", smoothness=(1.0, -2.0)), ValueError, r"smoothness\[1\]"),
    (dict(stop_on_violation=1), TypeError, "stop_on_violation"),
    (dict(violation_tol=-1e-9), ValueError, "violation_tol"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(regret_reference=float("inf")), ValueError, "regret_reference"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_validation_errors(two_state, kwargs, exc, match):
    pi = np.full((2, 2), 0.5)
    base = dict(n_episodes=5, first_batch=5, horizon=5, seed=0, regret_reference=1.0)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        lb_sgd(two_state, pi, **base)


def test_validation_model_and_policy(two_state):
    with pytest.raises(TypeError, match="M_test"):
        lb_sgd("grid", np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="pi_start"):
        lb_sgd(two_state, np.full((3, 2), 0.5), regret_reference=1.0)
    with pytest.raises(ValueError, match="pi_start"):
        lb_sgd(two_state, np.array([[0.5, 0.6], [0.5, 0.5]]), regret_reference=1.0)
    with pytest.raises(ValueError, match="n_trajectories"):
        policy_gradient_batch(two_state, np.full((2, 2), 0.5), 0, seed=0)
    with pytest.raises(ValueError, match="first_episode"):
        policy_gradient_batch(two_state, np.full((2, 2), 0.5), 1, seed=0, first_episode=-1)
    with pytest.raises(TypeError, match="M_start"):
        lb_start_policy(None)
