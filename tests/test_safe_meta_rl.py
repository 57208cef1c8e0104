"""Safe Meta-RL baseline (BASELINES.md section 4): kernels against slow NumPy twins written from
section 4b, the closed-form update by hand, the gridworld check of section 4d, determinism,
validation."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from safemeta_fast.kernels.rng import fill_uniforms
from safemeta_fast.kernels.safe_meta_rl import RESAMPLE_STREAM_BASE, dual_policy, mc_advantages

from safemeta_fast import CMDP, evaluate, primal_dual, solve_lp
from safemeta_fast.baselines.safe_meta_rl import SafeMetaRLStep, safe_meta_rl, safe_meta_rl_step
from safemeta_fast.envs import gridworld

TEST_NOISE = 0.33994760


# ---------------------------------------------------------------------------
# slow NumPy twins, written from BASELINES.md 4b
# ---------------------------------------------------------------------------

def twin_padded_paths(M, pi, seed, first_index, n_traj, horizon):
    """Episodes from the same uniforms as the kernel (stream = episode index), padded at the
    goal."""
    P = M.P
    states = np.empty((n_traj, horizon), np.int64)
    actions = np.empty((n_traj, horizon), np.int64)
    lengths = np.empty(n_traj, np.int64)
    for j in range(n_traj):
        u = np.empty(1 + 2 * horizon)
        fill_uniforms(seed, first_index + j, u)
        s = min(int(np.searchsorted(np.cumsum(M.nu0), u[0], side="right")), M.n_states - 1)
        T = horizon
        for t in range(horizon):
            a = min(int(np.searchsorted(np.cumsum(pi[s]), u[1 + 2 * t], side="right")),
                    M.n_actions - 1)
            nxt = np.flatnonzero(P[s, a] > 0)
            cum = np.cumsum(P[s, a, nxt])
            s_next = int(nxt[min(int(np.searchsorted(cum, u[2 + 2 * t], side="right")),
                                 nxt.size - 1)])
            states[j, t], actions[j, t] = s, a
            s = s_next
            if M.absorbing[s]:
                T = t + 1
                states[j, T:], actions[j, T:] = s, 0  # pad with (goal, action 0)
                break
        lengths[j] = T
    return states, actions, lengths


def twin_estimate(M, states, actions):
    """Every-visit MC: backward discounted returns, np.add.at scatter, A = Q - V, 0 if unvisited."""
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    N, H = states.shape
    rt = np.asarray(M.r)[states, actions]
    ct = np.asarray(M.c)[states, actions]  # (N, H, K)
    Gr = np.zeros((N, H))
    Gc = np.zeros((N, H, K))
    nr, nc = np.zeros(N), np.zeros((N, K))
    for t in range(H - 1, -1, -1):
        nr = rt[:, t] + M.gamma * nr
        nc = ct[:, t] + M.gamma * nc
        Gr[:, t], Gc[:, t] = nr, nc
    s, a = states.ravel(), actions.ravel()
    q_r, n_sa = np.zeros((S, A)), np.zeros((S, A))
    q_c = np.zeros((S, A, K))
    np.add.at(q_r, (s, a), Gr.ravel())
    np.add.at(q_c, (s, a), Gc.reshape(-1, K))
    np.add.at(n_sa, (s, a), 1.0)
    v_r, n_s, v_c = np.zeros(S), np.zeros(S), np.zeros((S, K))
    np.add.at(v_r, s, Gr.ravel())
    np.add.at(v_c, s, Gc.reshape(-1, K))
    np.add.at(n_s, s, 1.0)
    vis = n_sa > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        adv_r = np.where(vis, q_r / n_sa - (v_r / n_s)[:, None], 0.0)
        adv_c = np.where(vis[..., None],
                         q_c / n_sa[..., None] - (v_c / n_s[:, None])[:, None, :], 0.0)
    return adv_r, adv_c, Gc[:, 0].mean(axis=0), s


def twin_dual(pi, adv_r, adv_c, j_c, buffer, b, gamma, lam=0.2, lam_c=0.2, beta=1.0, iters=30,
              delta=0.0, clip=1e-10, draws=None):
    """Dual loop of 4b steps 2-5; ``draws`` (iters, n) buffer indices, or None for the histogram."""
    S = pi.shape[0]
    K = adv_c.shape[2]
    d_prime = (1 - gamma) * (np.asarray(b) + delta - j_c)
    log_pi = np.log(np.maximum(pi, clip))
    u = np.zeros(K)
    for i in range(iters):
        eta = lam + (1 - gamma) * u.sum() * lam_c
        logits = log_pi + (adv_r - np.einsum("sak,k->sa", adv_c, u)) / eta
        logits -= logits.max(axis=1, keepdims=True)
        pi_u = np.exp(logits)
        pi_u /= pi_u.sum(axis=1, keepdims=True)
        kl = (pi_u * (np.log(np.maximum(pi_u, clip)) - log_pi)).sum(axis=1)
        f = np.einsum("sa,sak->sk", pi_u, adv_c) + (1 - gamma) * lam_c * kl[:, None]
        if draws is None:
            hist = np.bincount(buffer, minlength=S)
            mean = hist @ f / buffer.size
        else:
            mean = f[buffer[draws[i]]].mean(axis=0)
        u_used = u.copy()
        u = np.maximum(0.0, u - beta * (d_prime - mean))
    return pi_u, u_used, u


def twin_draws(seed, step, iters, n):
    x = np.empty(iters * n)
    fill_uniforms(seed, RESAMPLE_STREAM_BASE + step, x)
    return np.minimum((x * n).astype(np.int64), n - 1).reshape(iters, n)


def twin_step(M, pi, seed, step=0, n_traj=50, horizon=600, exact=False, **kw):
    """A whole adaptation step in NumPy (also the bench's twin)."""
    st, ac, ln = twin_padded_paths(M, pi, seed, step * n_traj, n_traj, horizon)
    adv_r, adv_c, j_c, buf = twin_estimate(M, st, ac)
    iters = kw.get("iters", 30)
    draws = None if exact else twin_draws(seed, step, iters, buf.size)
    pi_u, u_used, u_last = twin_dual(pi, adv_r, adv_c, j_c, buf, M.cost_limit, M.gamma,
                                     draws=draws, **kw)
    return dict(states=st, actions=ac, lengths=ln, adv_r=adv_r, adv_c=adv_c, j_c=j_c, policy=pi_u,
                u=u_used, u_last=u_last)


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

def tiny_cmdp(K=1):
    """States 0, 1 transient, 2 an absorbing goal (reward 2, cost 0); start anywhere."""
    P = np.zeros((3, 2, 3))
    P[0, 0] = [0.5, 0.3, 0.2]
    P[0, 1] = [0.1, 0.8, 0.1]
    P[1, 0] = [0.6, 0.3, 0.1]
    P[1, 1] = [0.2, 0.2, 0.6]
    P[2, :, 2] = 1.0
    r = np.array([[1.0, 0.2], [0.5, 1.5], [2.0, 2.0]])
    c = np.zeros((3, 2, K))
    c[:2, :, 0] = [[0.3, 1.0], [0.8, 0.1]]
    if K > 1:
        c[:2, :, 1] = [[0.9, 0.2], [0.1, 0.7]]
    return CMDP(P, r, c, cost_limit=np.full(K, 0.8), gamma=0.8, nu0=[0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def pi_s():
    return np.ascontiguousarray(primal_dual(gridworld(0.4), beta=0.1).policy)


@pytest.fixture(scope="module")
def grid_test():
    return gridworld(TEST_NOISE)


# ---------------------------------------------------------------------------
# (1) one adaptation step against the twin
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("dual_sampling", ["resample", "exact"])
def test_step_matches_twin(K, dual_sampling):
    M = tiny_cmdp(K)
    pi = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    for step in (0, 3):
        got = safe_meta_rl_step(M, pi, seed=11, step=step, n_trajectories=20, horizon=15,
                                dual_sampling=dual_sampling)
        want = twin_step(M, pi, 11, step=step, n_traj=20, horizon=15,
                         exact=dual_sampling == "exact")
        np.testing.assert_array_equal(got.states, want["states"])
        np.testing.assert_array_equal(got.actions, want["actions"])
        np.testing.assert_array_equal(got.lengths, want["lengths"])
        assert np.any(got.lengths < 15)  # some episodes were padded
        if step == 0:
            assert np.all(got.u_last > 0)  # the dual variable moved
        for key in ("adv_r", "adv_c", "j_c", "policy", "u", "u_last"):
            np.testing.assert_allclose(getattr(got, key), want[key], rtol=1e-10, atol=1e-12,
                                       err_msg=key)


def test_step_on_gridworld_matches_twin(pi_s, grid_test):
    """The full-size step (50 episodes of 600 padded steps, 30 resampled dual iterations)."""
    got = safe_meta_rl_step(grid_test, pi_s, seed=10, step=2)
    want = twin_step(grid_test, pi_s, 10, step=2)
    np.testing.assert_array_equal(got.states, want["states"])
    for key in ("adv_r", "adv_c", "j_c", "policy", "u", "u_last"):
        np.testing.assert_allclose(getattr(got, key), want[key], rtol=1e-9, atol=1e-12, err_msg=key)
    # about 99% of the buffer is the padded goal state (BASELINES.md 4f)
    assert np.mean(got.states == 45) > 0.95


def test_estimator_on_hand_path(two_state):
    """Path (0,a0) -> (0,a1) -> (1 padded, a0), gamma 0.5: returns and advantages by hand."""
    states = np.array([[0, 0, 1]], np.int64)
    actions = np.array([[0, 1, 0]], np.int64)
    adv_r, adv_c = np.empty((2, 2)), np.empty((2, 2, 1))
    j_c, hist = np.empty(1), np.empty(2, np.int64)
    mc_advantages(states, actions, two_state.r, two_state.c, two_state.gamma, adv_r, adv_c, j_c,
                  hist)
    # G_r = (1 + 0.5 * 0.25, 0 + 0.5 * 0.5, 0.5) = (1.125, 0.25, 0.5); V(0) = 0.6875
    np.testing.assert_allclose(adv_r, [[0.4375, -0.4375], [0.0, 0.0]])
    # G_c = (1, 0, 0); V_c(0) = 0.5
    np.testing.assert_allclose(adv_c[..., 0], [[0.5, -0.5], [0.0, 0.0]])
    np.testing.assert_allclose(j_c, [1.0])
    np.testing.assert_array_equal(hist, [2, 1])


def test_driver_step_equals_single_step(pi_s, grid_test):
    """Block i of the driver deploys the policy that safe_meta_rl_step(step=i-1) produces."""
    pi = pi_s
    for i in range(3):
        pi = safe_meta_rl_step(grid_test, pi, seed=5, step=i).policy
    log = safe_meta_rl(grid_test, pi_s, n_episodes=200, seed=5, regret_reference=0.0)
    ev = evaluate(grid_test, pi)
    assert log.exact_reward[150] == ev.reward
    np.testing.assert_array_equal(log.exact_cost[150], ev.cost)
    assert log.info["n_steps"] == 3


# ---------------------------------------------------------------------------
# (2) the closed-form update, by hand
# ---------------------------------------------------------------------------

def _dual(pi, adv_r, adv_c, d_prime, lam, lam_c, gamma, beta, iters, clip=1e-10):
    S, A = pi.shape
    out, u_used, u_last = np.empty((S, A)), np.empty(1), np.empty(1)
    buffer = np.zeros(10, np.int64)
    hist = np.array([10] + [0] * (S - 1), np.int64)
    dual_policy(np.ascontiguousarray(pi), adv_r, adv_c, np.array([d_prime]), lam, lam_c, gamma,
                beta, iters, clip, buffer, hist, True, 0, 0, out, u_used, u_last)
    return out, u_used[0], u_last[0]


def test_closed_form_update_by_hand():
    """One state, two actions: pi_u ∝ pi exp((A_r - u A_c)/eta), eta = lam + (1-gamma) u lam_c."""
    pi = np.array([[0.8, 0.2]])
    adv_r = np.array([[1.0, -1.0]])
    adv_c = np.array([[[2.0], [-2.0]]])
    lam, lam_c, gamma, beta, d_prime = 0.5, 0.4, 0.5, 1.0, -1.0
    # pass 1: u = 0, eta = 0.5: weights 0.8 e^2, 0.2 e^-2
    w = np.array([0.8 * np.exp(2.0), 0.2 * np.exp(-2.0)])
    p1 = w / w.sum()
    out, u_used, u_last = _dual(pi, adv_r, adv_c, d_prime, lam, lam_c, gamma, beta, 1)
    np.testing.assert_allclose(out[0], p1, rtol=1e-14)
    kl = np.sum(p1 * np.log(p1 / pi[0]))
    f = 2 * p1[0] - 2 * p1[1] + (1 - gamma) * lam_c * kl
    u1 = max(0.0, -beta * (d_prime - f))
    assert u_used == 0.0 and u_last == pytest.approx(u1, rel=1e-14)
    # pass 2 uses u1: eta = 0.5 + 0.5 * u1 * 0.4; logits (1 - 2 u1)/eta and (-1 + 2 u1)/eta
    eta = lam + (1 - gamma) * u1 * lam_c
    w = np.array([0.8 * np.exp((1 - 2 * u1) / eta), 0.2 * np.exp((-1 + 2 * u1) / eta)])
    out, u_used, _ = _dual(pi, adv_r, adv_c, d_prime, lam, lam_c, gamma, beta, 2)
    np.testing.assert_allclose(out[0], w / w.sum(), rtol=1e-12)
    assert u_used == pytest.approx(u1, rel=1e-14)


def test_update_uses_clipped_log():
    """A zero-probability action keeps weight log_clip (the logits use ln max(pi, log_clip))."""
    out, _, _ = _dual(np.array([[1.0, 0.0]]), np.zeros((1, 2)), np.zeros((1, 2, 1)), 1.0,
                      0.2, 0.2, 0.9, 1.0, 1, clip=1e-10)
    np.testing.assert_allclose(out[0], [1 / (1 + 1e-10), 1e-10 / (1 + 1e-10)], rtol=1e-14)


# ---------------------------------------------------------------------------
# (3) the gridworld check of BASELINES.md 4d
# ---------------------------------------------------------------------------

def test_gridworld_reference_facts(pi_s, grid_test):
    u_opt = primal_dual(grid_test, beta=0.1).reward
    log = safe_meta_rl(grid_test, pi_s, n_episodes=2000, seed=10, regret_reference=u_opt)
    # the first block deploys pi_s itself
    assert round(log.exact_reward[0], 4) == 47.5976
    assert round(log.exact_cost[0, 0], 4) == 1.1315
    np.testing.assert_array_equal(log.exact_reward[:50], log.exact_reward[0])
    assert round(u_opt - log.exact_reward[0], 4) == 1.8688
    np.testing.assert_array_equal(log.policy_starts, np.arange(0, 2000, 50))
    # barely moves, stays feasible
    assert log.violations == 0 and not log.stopped_on_violation
    assert np.all(np.abs(log.exact_reward - log.exact_reward[0]) < 0.2)
    assert np.all(log.exact_cost <= 1.2)
    # a few steps in, the increment sits near the reference's 1.7216 (seed 10 of our streams)
    inc = u_opt - log.exact_reward
    assert np.all(np.abs(inc[500:] - 1.72) < 0.05)
    # the dual variable does move (the reference's "u stays 0" comment is wrong)
    assert log.info["u_max"] > 0.5
    assert log.regret[-1] == pytest.approx(inc.sum())


# ---------------------------------------------------------------------------
# (4) determinism, bookkeeping
# ---------------------------------------------------------------------------

def test_same_seed_same_log_on_1_and_2_threads(pi_s, grid_test):
    original = numba.get_num_threads()
    logs = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            logs.append(safe_meta_rl(grid_test, pi_s, n_episodes=600, seed=3, regret_reference=0.0))
    finally:
        numba.set_num_threads(original)
    np.testing.assert_array_equal(logs[0].exact_reward, logs[1].exact_reward)
    np.testing.assert_array_equal(logs[0].exact_cost, logs[1].exact_cost)
    assert logs[0].info == logs[1].info
    other = safe_meta_rl(grid_test, pi_s, n_episodes=600, seed=4, regret_reference=0.0)
    assert other.info["u_used"] != logs[0].info["u_used"]


def test_partial_last_block_and_default_reference():
    M = tiny_cmdp()
    pi = np.full((3, 2), 0.5)
    log = safe_meta_rl(M, pi, n_episodes=120, seed=0, horizon=20)
    assert log.n_episodes == 120 and log.n_budget == 120
    np.testing.assert_array_equal(log.policy_starts, [0, 50, 100])
    assert log.info["n_steps"] == 2
    assert log.regret_reference == solve_lp(M).reward
    assert log.exact_reward[0] == evaluate(M, pi).reward
    assert log.method == "safe_meta_rl" and log.seed == 0


def test_violation_recorded_or_stopped(grid_test):
    unif = np.full((49, 4), 0.25)  # infeasible on the gridworld
    log = safe_meta_rl(grid_test, unif, n_episodes=100, seed=0, regret_reference=0.0)
    assert log.violations > 0 and log.violation_episodes[0] == 0 and not log.stopped_on_violation
    stopped = safe_meta_rl(grid_test, unif, n_episodes=100, seed=0, regret_reference=0.0,
                           stop_on_violation=True)
    assert stopped.stopped_on_violation and stopped.n_episodes == 0 and stopped.n_budget == 100
    assert "STOPPED" in stopped.summary()


def test_step_result_is_frozen(grid_test):
    st = safe_meta_rl_step(grid_test, np.full((49, 4), 0.25), seed=0, n_trajectories=3, horizon=30)
    assert isinstance(st, SafeMetaRLStep)
    with pytest.raises(ValueError):
        st.policy[0, 0] = 1.0
    np.testing.assert_allclose(st.policy.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------
# (5) validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_episodes=0), ValueError, "n_episodes"),
    (dict(n_episodes=10.0), TypeError, "n_episodes"),
    (dict(horizon=0), ValueError, "horizon"),
    (dict(episodes_per_step=0), ValueError, "episodes_per_step"),
    (dict(lam=0.0), ValueError, "lam"),
    (dict(lam_c=-0.1), ValueError, "lam_c"),
    (dict(dual_step=0.0), ValueError, "dual_step"),
    (dict(dual_iters=0), ValueError, "dual_iters"),
    (dict(delta=float("nan")), ValueError, "delta"),
    (dict(log_clip=0.0), ValueError, "log_clip"),
    (dict(log_clip=1.0), ValueError, "log_clip"),
    (dict(dual_sampling="histogram"), ValueError, "dual_sampling"),
    (dict(stop_on_violation=1), TypeError, "stop_on_violation"),
    (dict(violation_tol=-1e-3), ValueError, "violation_tol"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(regret_reference=float("inf")), ValueError, "regret_reference"),
    (dict(regret_reference="1"), TypeError, "regret_reference"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_validation(kwargs, exc, match):
    M = tiny_cmdp()
    with pytest.raises(exc, match=match):
        safe_meta_rl(M, np.full((3, 2), 0.5), **{"regret_reference": 0.0, **kwargs})


def test_validation_model_and_policy():
    M = tiny_cmdp()
    with pytest.raises(TypeError, match="M_test"):
        safe_meta_rl(np.zeros((3, 2, 3)), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="pi_start"):
        safe_meta_rl(M, np.full((3, 3), 1 / 3), regret_reference=0.0)
    with pytest.raises(ValueError, match="pi_start"):
        safe_meta_rl(M, np.array([[0.5, 0.6], [0.5, 0.5], [0.5, 0.5]]), regret_reference=0.0)
    with pytest.raises(TypeError, match="seed"):
        safe_meta_rl_step(M, np.full((3, 2), 0.5), seed=None)
    with pytest.raises(ValueError, match="step"):
        safe_meta_rl_step(M, np.full((3, 2), 0.5), seed=0, step=-1)
    with pytest.raises(ValueError, match="n_trajectories"):
        safe_meta_rl_step(M, np.full((3, 2), 0.5), seed=0, n_trajectories=0)
