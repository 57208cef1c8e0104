"""DOPE+ and [inferred] DOPE (BASELINES.md sections 5 and 7c): counting kernel vs a NumPy
twin, estimation vs hand computation, the LP back ends vs scipy linprog, gridworld runs."""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import pytest
from safemeta_fast.kernels.dope import count_episodes
from safemeta_fast.kernels.rng import fill_uniforms
from safemeta_fast.kernels.trajectory import csr_cdf, policy_cdf
from scipy.optimize import linprog

from safemeta_fast import evaluate, primal_dual
from safemeta_fast.baselines.dope import DOPE_LABEL, dope
from safemeta_fast.baselines.dope_plus import (
    REFERENCE_REWARD_CAP,
    OptimisticLP,
    dope_plus,
    dope_plus_cost_bonus,
    estimate_model,
    lp_data,
    optimistic_reward,
    policy_from_occupancy,
    reward_cap_value,
)
from safemeta_fast.envs import gridworld

from .strategies import random_cmdp, random_policy

NOISE = 0.33994760


@pytest.fixture(scope="module")
def pi_s():
    return np.array(primal_dual(gridworld(0.4), beta=0.1).policy)


@pytest.fixture(scope="module")
def task():
    return gridworld(NOISE)


def run_counts(M, pi, seed, first, n, horizon=600):
    n_sa = np.zeros(M.n_states * M.n_actions, np.int64)
    n_succ = np.zeros(M.succ_next.size, np.int64)
    st = np.empty(horizon + 1, np.int64)
    ac = np.empty(horizon + 1, np.int64)
    steps = count_episodes(seed, first, n, policy_cdf(np.ascontiguousarray(pi)),
                           policy_cdf(np.asarray(M.nu0)[None, :])[0], M.succ_ptr, M.succ_next,
                           csr_cdf(M.succ_ptr, M.succ_prob), horizon, M.absorbing, n_sa, n_succ,
                           st, ac)
    return steps, n_sa, n_succ


def dense_counts(M, n_sa, n_succ):
    S, A = M.n_states, M.n_actions
    N = np.zeros((S * A, S))
    N[np.repeat(np.arange(S * A), np.diff(M.succ_ptr)), M.succ_next] = n_succ
    return n_sa.reshape(S, A).astype(float), N.reshape(S, A, S)


# ---------------------------------------------------------------------------
# counting kernel vs NumPy twin
# ---------------------------------------------------------------------------

def twin_counts(M, pi, seed, first, n, horizon):
    """Straight NumPy: the same uniforms, searchsorted sampling, dense counts + absorbing extras."""
    S, A = M.n_states, M.n_actions
    P = M.P
    n_sa = np.zeros((S, A))
    N = np.zeros((S, A, S))
    steps = 0
    u = np.empty(1 + 2 * horizon)
    for e in range(first, first + n):
        fill_uniforms(seed, e, u)
        s = min(int(np.searchsorted(np.cumsum(M.nu0), u[0], side="right")), S - 1)
        for t in range(horizon):
            a = min(int(np.searchsorted(np.cumsum(pi[s]), u[1 + 2 * t], side="right")), A - 1)
            nxt = np.flatnonzero(P[s, a] > 0)
            cum = np.cumsum(P[s, a, nxt])
            s2 = int(nxt[min(int(np.searchsorted(cum, u[2 + 2 * t], side="right")), nxt.size - 1)])
            n_sa[s, a] += 1
            N[s, a, s2] += 1
            steps += 1
            s = s2
            if M.absorbing[s]:
                n_sa[s, :] += 1
                N[s, :, s] += 1
                break
    return steps, n_sa, N


@pytest.mark.parametrize("case", ["grid", "random", "two_state"])
def test_counting_kernel_matches_twin(case, two_state):
    rng = np.random.default_rng(3)
    if case == "grid":
        M = gridworld(0.3)
        pi = rng.dirichlet(np.ones(4), size=M.n_states)
        H, n = 40, 60
    elif case == "random":
        M = random_cmdp(rng, 5, 3, 2, sparsity=0.5)
        pi = random_policy(rng, 5, 3)
        H, n = 15, 40
    else:
        M = two_state
        pi = np.array([[0.7, 0.3], [0.5, 0.5]])
        H, n = 10, 50
    steps, n_sa, n_succ = run_counts(M, pi, 11, 5, n, H)
    t_steps, t_sa, t_N = twin_counts(M, pi, 11, 5, n, H)
    got_sa, got_N = dense_counts(M, n_sa, n_succ)
    assert steps == t_steps
    np.testing.assert_array_equal(got_sa, t_sa)
    np.testing.assert_array_equal(got_N, t_N)
    np.testing.assert_array_equal(got_N.sum(axis=2), got_sa)


def test_absorbing_extra_counts_two_state(two_state):
    """Leaving state 0 (action 1) lands in absorbing state 1: both of its actions get a
    self-loop."""
    pi = np.array([[0.0, 1.0], [0.5, 0.5]])
    steps, n_sa, n_succ = run_counts(two_state, pi, 0, 0, 7, 5)
    sa, N = dense_counts(two_state, n_sa, n_succ)
    assert steps == 7
    np.testing.assert_array_equal(sa, [[0, 7], [7, 7]])
    np.testing.assert_array_equal(N[1, :, 1], [7, 7])


# ---------------------------------------------------------------------------
# estimation vs hand computation
# ---------------------------------------------------------------------------

def test_estimation_by_hand():
    L, Lp, g, K = 0.01, 0.001, 0.5, 100.0
    n_sa = np.array([[3.0, 0.0], [1.0, 2.0]])
    n_sas = np.array([[[2.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    est = estimate_model(n_sa, n_sas, L, Lp)
    # P_hat: counts / n, uniform 1/2 for the unvisited (0, 1)
    np.testing.assert_allclose(est.P_hat, [[[2 / 3, 1 / 3], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    # n' = max(1, n - 1)
    np.testing.assert_array_equal(est.n1, [[2.0, 1.0], [1.0, 1.0]])
    e2 = math.sqrt(4 * L * 2 / 2) + 14 * L * 2 / (3 * 2)
    e1 = math.sqrt(4 * L * 2 / 1) + 14 * L * 2 / (3 * 1)
    np.testing.assert_allclose(est.eps, [[e2, e1], [e1, e1]])
    conf = dope_plus_cost_bonus(est, g, L, K)
    t2 = 2 * L * math.sqrt(K / ((1 - g) * 2))
    np.testing.assert_allclose(conf,
                               [[8 * e2 / math.sqrt(0.5) + t2 / 2, 8 * e1 / math.sqrt(0.5) + t2],
                                [8 * e1 / math.sqrt(0.5) + t2, 8 * e1 / math.sqrt(0.5) + t2]])

    def cp(p, n1):
        return math.sqrt(4 * Lp * p / n1) + 14 * Lp / (3 * n1)

    np.testing.assert_allclose(est.conf_p[0, 0], [cp(2 / 3, 2), cp(1 / 3, 2)])
    np.testing.assert_allclose(est.conf_p[1, 0], [cp(0.0, 1), cp(1.0, 1)])
    w0 = cp(2 / 3, 2) + cp(1 / 3, 2) + 2 * cp(0.5, 1)
    w1 = cp(0.0, 1) + cp(1.0, 1) + 2 * cp(0.5, 1)
    np.testing.assert_allclose(est.w, [w0, w1])


def test_reward_caps():
    r = np.array([[0.0, 10.0]])
    conf = np.array([[0.5, 0.001]])
    assert reward_cap_value("reference", r) == pytest.approx(1.0223606797749979)
    assert reward_cap_value("corrected", r) == pytest.approx(10 * (1 + math.sqrt(5e-4)))
    assert reward_cap_value(None, r) is None
    np.testing.assert_allclose(optimistic_reward(r, conf, 100.0, REFERENCE_REWARD_CAP),
                               [[REFERENCE_REWARD_CAP, REFERENCE_REWARD_CAP]])
    np.testing.assert_allclose(optimistic_reward(r, conf, 100.0, reward_cap_value("corrected", r)),
                               [[10 * (1 + math.sqrt(5e-4)), 10.1]])
    np.testing.assert_allclose(optimistic_reward(r, conf, 100.0, None), [[50.0, 10.1]])


# ---------------------------------------------------------------------------
# the LP vs scipy linprog
# ---------------------------------------------------------------------------

def linprog_twin(d):
    """Optimal value of a cold linprog on the reference form, or None when not optimal."""
    c, A_ub, b_ub = d.reference_form()
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    return -res.fun if res.success else None


def assert_feasible(d, x, tol=1e-7):
    c, A_ub, b_ub = d.reference_form()
    assert np.all(x >= -1e-9)
    assert np.all(A_ub @ x <= b_ub + tol)


def data_from_counts(M, n_sa, n_succ, cap="reference", L=1e-4, Lp=1e-8):
    sa, N = dense_counts(M, n_sa, n_succ)
    est = estimate_model(sa, N, L, Lp)
    conf = dope_plus_cost_bonus(est, M.gamma, L, 40_000)
    rt = optimistic_reward(M.r, conf, 1 / (0.1 * (1 - M.gamma)), reward_cap_value(cap, M.r))
    return lp_data(M, est, conf, rt), est, conf, rt


@pytest.mark.parametrize("cap", ["reference", "corrected"])
def test_lp_backends_match_linprog_along_a_run(task, pi_s, cap):
    """One persistent LP per back end re-solved on growing counts (columns of newly visited
    pairs turn from dense uniform to sparse): same optimal value as a cold linprog, feasible x."""
    lps = {b: OptimisticLP(49, 4, 1, b) for b in ("highs", "cvxpy", "linprog")}
    n_sa = np.zeros(196, np.int64)
    n_succ = np.zeros(task.succ_next.size, np.int64)
    st = np.empty(601, np.int64)
    ac = np.empty(601, np.int64)
    args = (policy_cdf(np.asarray(task.nu0)[None, :])[0], task.succ_ptr, task.succ_next,
            csr_cdf(task.succ_ptr, task.succ_prob), 600, task.absorbing, n_sa, n_succ, st, ac)
    count_episodes(1, 0, 2000, policy_cdf(pi_s), *args)
    rng = np.random.default_rng(0)
    explore = rng.dirichlet(np.ones(4), size=49)
    visited_before = np.count_nonzero(n_sa)
    n_optimal = 0
    for step in range(6):
        d, *_ = data_from_counts(task, n_sa, n_succ, cap)
        ref = linprog_twin(d)
        for name, lp in lps.items():
            x = lp.solve(d)
            if ref is None:
                assert x is None, name
                continue
            assert x is not None, name
            assert d.obj @ x == pytest.approx(ref, rel=1e-7, abs=1e-8), name
            assert_feasible(d, x)
        n_optimal += ref is not None
        # a few exploring episodes visit new pairs
        count_episodes(1, 2000 + 5 * step, 5, policy_cdf(explore), *args)
    assert np.count_nonzero(n_sa) > visited_before
    assert n_optimal >= 4


def test_lp_random_cmdp_two_constraints():
    rng = np.random.default_rng(5)
    M = random_cmdp(rng, 6, 3, 2, gamma=0.8, sparsity=0.5, cost_limit=np.array([4.0, 4.0]))
    _, n_sa, n_succ = run_counts(M, random_policy(rng, 6, 3), 2, 0, 30, 20)
    d, *_ = data_from_counts(M, n_sa, n_succ, cap=None, L=1e-3, Lp=1e-4)
    assert d.G.shape == (2, 18)
    ref = linprog_twin(d)
    assert ref is not None
    for b in ("highs", "cvxpy"):
        x = OptimisticLP(6, 3, 2, b).solve(d)
        assert d.obj @ x == pytest.approx(ref, rel=1e-7)
        assert_feasible(d, x)


def test_lp_without_counts_and_infeasible(task):
    d, *_ = data_from_counts(task, np.zeros(196, np.int64), np.zeros(task.succ_next.size, np.int64))
    # nothing visited: w(s) ~ 0.0056 > (1 - gamma) nu0(s) ~ 0.0024, so x = 0 satisfies the
    # relaxed rows; the conf = 4.18 cost row then caps the total mass at 1.5 * 0.1 / 4.18
    assert np.all(d.lo < 0)
    ref = linprog_twin(d)
    assert 0 <= ref <= REFERENCE_REWARD_CAP / 0.1 * 1.5 * 0.1 / 4.18 + 1e-9
    for b in ("highs", "cvxpy", "linprog"):
        x = OptimisticLP(49, 4, 1, b).solve(d)
        assert d.obj @ x == pytest.approx(ref, abs=1e-8)
    # a negative cost limit is infeasible: every back end reports failure (None)
    bad = dataclasses.replace(d, b=np.array([-1.0]))
    for b in ("highs", "cvxpy", "linprog"):
        assert OptimisticLP(49, 4, 1, b).solve(bad) is None


def test_policy_from_occupancy():
    x = np.array([0.2, 0.6, 0.0, 0.0, -1e-13, 3e-10, 5e-11, 4e-11])
    pi = policy_from_occupancy(x, 4, 2)
    np.testing.assert_allclose(pi, [[0.25, 0.75], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])


# ---------------------------------------------------------------------------
# gridworld runs
# ---------------------------------------------------------------------------

def test_pi_start_values(task, pi_s):
    ev = evaluate(task, pi_s)
    assert ev.reward == pytest.approx(47.5976, abs=5e-5)
    assert ev.cost[0] == pytest.approx(1.1315, abs=5e-5)


def test_short_warmup_run(task, pi_s):
    log = dope_plus(task, pi_s, n_episodes=400, warmup=300, seed=3)
    assert log.method == "dope_plus" and log.n_episodes == 400 and not log.stopped_on_violation
    # warm-up: pi_s deployed, its exact values
    np.testing.assert_allclose(log.exact_reward[:300], 47.597639409342044, rtol=1e-12)
    np.testing.assert_allclose(log.exact_cost[:300, 0], 1.1314592115299127, rtol=1e-12)
    assert log.policy_starts[0] == 0 and log.policy_starts[1] == 300
    # afterwards: one LP per episode, LP policies (not pi_s) deployed
    assert log.info["n_lp"] == 100
    assert log.info["n_lp_fallbacks"] < 100
    assert np.any(log.exact_reward[300:] != log.exact_reward[0])
    # (a warm-up this short yields unsafe LP policies, as the notebook's comment warns, 5f)
    assert log.violation_episodes.min() >= 300
    # every episode ends at the goal
    assert log.info["warmup_counts"] == log.info["warmup_steps"] + 4 * 300
    # regret bookkeeping: exact, unclipped increments
    np.testing.assert_allclose(log.regret, np.cumsum(log.regret_reference - log.exact_reward))


def test_reference_warmup_facts(task, pi_s):
    """Section 5d after 18,000 warm-up episodes: counts, visited pairs, conf range, saturation."""
    steps, n_sa, n_succ = run_counts(task, pi_s, 10, 0, 18_000)
    assert abs(n_sa.sum() - 227_161) < 0.02 * 227_161
    assert 50 <= np.count_nonzero(n_sa) <= 62            # reference: 56 of 196
    assert n_sa.argmax() // 4 == 45 and 18_000 <= n_sa.max() <= 18_300   # reference 18,111
    d, est, conf, rt = data_from_counts(task, n_sa, n_succ)
    assert conf.min() == pytest.approx(0.0264, abs=3e-4)
    assert conf.max() == pytest.approx(4.18, abs=5e-3)
    assert np.all(rt == REFERENCE_REWARD_CAP)             # saturated everywhere, the goal included
    assert 6e-6 * 0.9 < est.w.min() and est.w.max() < 4.3e-3


def test_first_lp_after_reference_warmup(task, pi_s):
    """The reference's first LP (linprog): V_r 47.2828, V_c 1.3698, the same with our HiGHS
    model."""
    for backend in ("linprog", "highs"):
        log = dope_plus(task, pi_s, n_episodes=18_001, warmup=18_000, seed=10, backend=backend,
                        regret_reference=49.4706)
        assert log.info["first_lp_reward_saturated"]
        assert log.info["first_lp_reward"] == pytest.approx(47.2828, abs=1e-4)
        assert log.info["first_lp_cost"][0] == pytest.approx(1.3698, abs=1e-4)
        assert log.regret_reference == 49.4706


def test_determinism_across_threads(task, pi_s):
    logs = []
    old = numba.get_num_threads()
    try:
        for nt in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(nt)
            logs.append(dope_plus(task, pi_s, n_episodes=330, warmup=300, seed=7))
    finally:
        numba.set_num_threads(old)
    logs.append(dope_plus(task, pi_s, n_episodes=330, warmup=300, seed=7))
    for other in logs[1:]:
        np.testing.assert_array_equal(other.exact_reward, logs[0].exact_reward)
        np.testing.assert_array_equal(other.exact_cost, logs[0].exact_cost)
        np.testing.assert_array_equal(other.policy_starts, logs[0].policy_starts)
        assert other.info["final_counts"] == logs[0].info["final_counts"]


def test_stop_on_violation_with_unsafe_start(task):
    uniform = np.full((49, 4), 0.25)
    log = dope_plus(task, uniform, n_episodes=50, warmup=10, seed=0, stop_on_violation=True)
    assert log.stopped_on_violation and log.n_episodes == 0
    log = dope_plus(task, uniform, n_episodes=12, warmup=10, seed=0)
    assert not log.stopped_on_violation and log.violations >= 10


def test_stop_on_violation_after_warmup(task, pi_s):
    # DOPE with the corrected cap deploys an unsafe LP policy right after the warm-up
    kw = dict(n_episodes=18_050, warmup=18_000, seed=10, reward_cap="corrected")
    log = dope(task, pi_s, **kw)
    assert log.violations > 0
    first = int(log.violation_episodes[0])
    stopped = dope(task, pi_s, stop_on_violation=True, **kw)
    assert stopped.stopped_on_violation and stopped.n_episodes == first
    assert stopped.violations == 0
    np.testing.assert_array_equal(stopped.exact_reward, log.exact_reward[:first])


def test_dope_bonuses(task, pi_s):
    log = dope(task, pi_s, n_episodes=301, warmup=300, seed=1)
    assert log.method == "dope" and log.info["label"] == DOPE_LABEL
    slack = 1.5 - 1.1314592115299127
    assert log.info["start_slack"] == pytest.approx(slack)
    assert log.info["reward_bonus_scale"] == pytest.approx(1 / (0.1 * slack))
    # unvisited pairs: conf_DOPE = eps / (1 - gamma) with n' = 1
    eps1 = math.sqrt(4e-4 * 49) + 14e-4 * 49 / 3
    assert log.info["first_lp_conf_max"] == pytest.approx(eps1 / 0.1)
    with pytest.raises(ValueError, match="strictly safe start policy"):
        dope(task, np.full((49, 4), 0.25), n_episodes=10)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, exc, msg", [
    (dict(n_episodes=0), ValueError, "n_episodes"),
    (dict(n_episodes=2.5), TypeError, "n_episodes"),
    (dict(horizon=0), ValueError, "horizon"),
    (dict(warmup=-1), ValueError, "warmup"),
    (dict(L=0.0), ValueError, "L is"),
    (dict(L_p=-1.0), ValueError, "L_p"),
    (dict(L=float("nan")), ValueError, "L is"),
    (dict(conf_K=0), ValueError, "conf_K"),
    (dict(reward_bonus_scale=-1.0), ValueError, "reward_bonus_scale"),
    (dict(reward_cap="fixed"), ValueError, "reward_cap"),
    (dict(backend="gurobi"), ValueError, "backend"),
    (dict(stop_on_violation=1), TypeError, "stop_on_violation"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(violation_tol=-1e-9), ValueError, "violation_tol"),
    (dict(regret_reference="49"), TypeError, "regret_reference"),
    (dict(regret_reference=float("inf")), ValueError, "regret_reference"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_validation(task, pi_s, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        dope_plus(task, pi_s, **{"n_episodes": 5, "warmup": 5, **kw})


def test_validation_model_and_policy(task, pi_s):
    with pytest.raises(TypeError, match="M_test"):
        dope_plus("grid", pi_s)
    with pytest.raises(ValueError, match="pi_start"):
        dope_plus(task, pi_s[:10])
    bad = pi_s.copy()
    bad[3, 0] += 0.1
    with pytest.raises(ValueError, match="pi_start"):
        dope(task, bad)
    with pytest.raises(ValueError, match="backend"):
        dope(task, pi_s, backend="highspy")
    with pytest.raises(ValueError, match="backend"):
        OptimisticLP(2, 2, 1, "glpk")
