"""Test-time phase (SPEC section 6): decision logic vs a pure-Python twin, weight schedule
closed forms, an adversarial candidate, ask/tell == fused, thread-count determinism."""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
import pytest
from safemeta_fast.kernels import adaptation as K

from safemeta_fast.adaptation import (
    PAPER,
    PCE,
    REFERENCE,
    Profile,
    SafeAdapter,
    lipschitz_constant,
    normalisation_of,
)
from safemeta_fast.envs import gridworld
from safemeta_fast.errors import SafetyAssumptionError, SafetyPreconditionWarning
from safemeta_fast.evaluation import evaluate, evaluate_many, evaluate_mixture
from safemeta_fast.lp import solve_lp
from safemeta_fast.policy import Mixture
from safemeta_fast.policyset import PolicySet
from safemeta_fast.rollout import rollout

NOISES = (0.26, 0.28, 0.30, 0.32, 0.34)


def _policy_set(noises=NOISES, eps=0.005, xi_hat=0.2):
    tasks = [gridworld(x) for x in noises]
    pols = np.stack([solve_lp(M).policy for M in tasks])
    safe = solve_lp(gridworld(0.4)).policy
    n = len(noises)
    ev = [evaluate_many(M, np.concatenate([pols, safe[None]])) for M in tasks]
    return PolicySet(
        policies=pols, u=[e.reward[i] for i, e in enumerate(ev)],
        v=[1.5 - e.cost[i, 0] for i, e in enumerate(ev)], u_s=[e.reward[n] for e in ev],
        v_s=[1.5 - e.cost[n, 0] for e in ev], safe_policy=safe, cover_params=list(noises),
        cost_limit=[1.5], gamma=0.9, eps=eps, delta=0.05, xi_hat=xi_hat, seed=0,
    )


@pytest.fixture(scope="module")
def pset():
    return _policy_set()


def _synthetic_set(rng, n=4, K=2):
    pols = rng.random((n, 3, 2)) + 0.1
    pols /= pols.sum(axis=2, keepdims=True)
    safe = np.full((3, 2), 0.5)
    return PolicySet(
        policies=pols, u=rng.uniform(5, 10, n), v=rng.uniform(-0.2, 1.0, (n, K)),
        u_s=rng.uniform(3, 6, n), v_s=rng.uniform(0.3, 1.0, (n, K)), safe_policy=safe,
        cover_params=np.arange(n, dtype=float), cost_limit=np.full(K, 2.0), gamma=0.9,
        eps=0.01, delta=0.05, xi_hat=0.3, seed=0,
    )


# ---------------------------------------------------------------------------
# slow pure-Python twin, written straight from SPEC section 6
# ---------------------------------------------------------------------------

class TwinAdapter:
    """Pure-Python Algorithm 2 decisions (no numba, lists and floats only)."""

    def __init__(self, u, v, u_s, v_s, b, c, inv_r=1.0, inv_c=None):
        self.u, self.v, self.us, self.vs = list(u), [list(x) for x in v], list(u_s), \
            [list(x) for x in v_s]
        self.b, self.c = list(b), c
        self.inv_r = inv_r
        self.inv_c = list(inv_c) if inv_c is not None else [1.0] * len(b)
        self.alive = [True] * len(self.u)
        self.elim_at = [-1] * len(self.u)
        self.fixed = not math.isnan(c["fixed_alpha"])
        self.cand = self._best()
        self.m = 0
        self.alpha = c["fixed_alpha"] if self.fixed else 0.0
        self.win_r, self.win_g = [], []
        self.pool_r, self.pool_g = [], []
        self.n_elim = 0
        self.k = 0

    def _best(self):
        cands = [i for i in range(len(self.u)) if self.alive[i]]
        if not cands:
            return -1
        return max(cands, key=lambda i: (self.u[i], -i))

    def _alpha_next(self):
        cand, a = self.cand, self.alpha
        outs = []
        for vs in self.vs[cand]:
            if self.m == 0:
                num = vs - self.c["alpha1_shift"]
                x = num / (num + self.c["alpha1_denom"]) if num > 0 else 0.0
            else:
                x = 3 * vs * a / ((2 + a) * vs + self.c["recursion_add"]) if vs > 0 else 0.0
            outs.append(min(max(x, 0.0), 1.0))
        return min(outs)

    def _mmax(self):
        vals = []
        for vs in self.vs[self.cand]:
            C = (2 * vs + self.c["mmax_add"]) / (3 * vs) if vs > 0 else 2.0
            vals.append(math.log(self.c["eps"]) / math.log(C) if 0 < C < 1 else 0.0)
        return min(vals)

    def tell(self, R, C):
        k = self.k
        self.k += 1
        if self.cand < 0:
            return 0
        a, cand = self.alpha, self.cand
        r_obs = R * self.inv_r
        g_obs = [(self.b[j] - C[j]) * self.inv_c[j] for j in range(len(self.b))]
        self.win_r.append(r_obs)
        self.win_g.append(g_obs)
        safe_only = (not self.fixed) and self.m == 0
        if safe_only:
            self.pool_r.append(r_obs)
            self.pool_g.append(g_obs)
        u_lm = a * self.u[cand] + (1 - a) * self.us[cand]
        v_lm = [a * self.v[cand][j] + (1 - a) * self.vs[cand][j] for j in range(len(self.b))]
        if safe_only and self.c["pooled_cost_radius"] >= 0 and self.n_elim >= 1:
            rs, gs, crad = self.pool_r, self.pool_g, self.c["pooled_cost_radius"]
        else:
            rs, gs, crad = self.win_r, self.win_g, self.c["cost_radius"]
        n = len(rs)
        ge = (lambda d, r: d >= r) if self.c["inclusive"] else (lambda d, r: d > r)
        fail = False
        if n >= self.c["min_window"]:
            mean_r = sum(rs) / n
            if ge(abs(mean_r - u_lm), math.sqrt(self.c["reward_radius"] / n)
                  + self.c["reward_model_error"]):
                fail = True
            for j in range(len(self.b)):
                mean_g = sum(g[j] for g in gs) / n
                if ge(abs(mean_g - v_lm[j]), math.sqrt(crad / n) + self.c["cost_model_error"]):
                    fail = True
        if fail:
            self.alive[cand] = False
            self.elim_at[cand] = k
            self.n_elim += 1
            self.cand = self._best()
            self.m = 0
            self.alpha = self.c["fixed_alpha"] if self.fixed else 0.0
            self.win_r, self.win_g = [], []
            return 1
        if self.fixed:
            return 0
        gate = 0.0
        for vj in v_lm:
            x = self.c["gate_const"] / vj ** 2 if vj > 0 else math.inf
            gate = max(gate, min(max(x, self.c["gate_min"]), self.c["gate_max"]))
        if n - self.c["gate_offset"] >= gate and self.m <= self._mmax():
            self.alpha = self._alpha_next()
            self.m += 1
            self.win_r, self.win_g = [], []
            return 2
        return 0


def _twin_of(ad: SafeAdapter) -> TwinAdapter:
    return TwinAdapter(ad._u, ad._v, ad._u_s, ad._v_s, ad._b, ad.constants,
                       inv_r=1.0 / ad.reward_scale, inv_c=1.0 / np.asarray(ad.utility_scale))


def _drive(ad, twin, returns):
    """Feed the same returns to ask/tell and the twin; compare every decision."""
    for R, C in returns:
        st = ad.ask()
        assert st.candidate == twin.cand
        assert st.alpha == pytest.approx(twin.alpha if twin.cand >= 0 else 0.0, abs=1e-15)
        ad.tell(R, C)
        ev_t = twin.tell(R, C)
        assert ad.log().event[-1] == ev_t
    assert list(ad._elim) == twin.elim_at


SMALL_REF = Profile(
    name="small-ref", eps=0.01, lipschitz=0.0, L_r=8.0, L_c=1.0, reward_radius=40.0,
    cost_radius=3.0, pooled_cost_radius=1.5, min_window=10, gate_const=1.0, gate_min=10.0,
    gate_max=52.0, gate_offset=2.0, alpha1_shift=0.02, alpha1_denom=2.0, recursion_add=0.03,
    mmax_add=0.0, inclusive=True,
)


@pytest.mark.parametrize("profile", [SMALL_REF, REFERENCE, PCE,
                                     Profile(name="theory-raw", eps=1e-4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_decisions_match_python_twin(profile, seed):
    rng = np.random.default_rng(seed)
    ps = _synthetic_set(rng)
    n_ep = 3000
    ad = SafeAdapter(ps, profile=profile, n_episodes=n_ep, seed=seed)
    twin = _twin_of(ad)
    # returns near the predictions of some candidates and far from others
    truth = rng.integers(0, ps.n_policies)
    rets = []
    for _ in range(n_ep):
        R = float(ps.u_s[truth] + rng.normal(0, 2.0) + rng.normal(0, 1.0))
        C = ps.cost_limit - ps.v_s[truth] + rng.normal(0, 0.3, ps.n_constraints)
        rets.append((R, C))
    _drive(ad, twin, rets)
    assert ad.episode == n_ep


def test_twin_match_exercises_every_branch():
    """The twin comparison above really meets eliminations, updates and pooled tests."""
    rng = np.random.default_rng(3)
    ps = _synthetic_set(rng, n=5, K=1)
    ad = SafeAdapter(ps, profile=SMALL_REF, n_episodes=4000, seed=0)
    twin = _twin_of(ad)
    rets = [(float(ps.u_s[0] + rng.normal(0, 1)), ps.cost_limit - ps.v_s[0]
             + rng.normal(0, 0.2, 1)) for _ in range(4000)]
    _drive(ad, twin, rets)
    ev = ad.log().event
    assert np.count_nonzero(ev == K.EV_ELIMINATED) >= 2
    assert np.count_nonzero(ev == K.EV_UPDATED) >= 2


# ---------------------------------------------------------------------------
# weight schedule
# ---------------------------------------------------------------------------

def _exact_returns_adapter(ps, profile, n_ep, **kw):
    """Feed returns equal to the predictions: no elimination, updates whenever gated."""
    ad = SafeAdapter(ps, profile=profile, n_episodes=n_ep, seed=0, **kw)
    for _ in range(n_ep):
        st = ad.ask()
        cand = st.candidate
        a = st.alpha
        R = (a * ps.u[cand] + (1 - a) * ps.u_s[cand])
        C = ps.cost_limit - (a * ps.v[cand] + (1 - a) * ps.v_s[cand])
        ad.tell(R, C)
    return ad.log()


def test_reference_schedule_closed_forms(pset):
    log = _exact_returns_adapter(pset, REFERENCE, 80_000)
    cand = int(np.argmax(pset.u))
    assert np.all(log.candidate == cand) and log.eliminated.size == 0
    s = pset.v_s[cand, 0]
    eps, Lc = 0.01, 1.0
    alphas = [0.0, (s - 2 * eps * Lc) / (s - 2 * eps * Lc + 2)]
    mmax = math.log(eps) / math.log(2 / 3)
    while len(alphas) - 1 <= mmax:
        a = alphas[-1]
        alphas.append(min(max(3 * s * a / ((a + 2) * s + (2 * Lc + 1) * eps), 0), 1))
    distinct = log.alpha[np.r_[0, np.flatnonzero(np.diff(log.alpha)) + 1]]
    np.testing.assert_allclose(distinct, alphas, rtol=1e-14)
    assert np.all(np.diff(distinct) > 0)
    assert log.stage.max() == math.floor(mmax) + 1  # stops: m <= m_max gates the last update
    # first window: n - 2 >= 1000 (safe policy alone, v_lm = v_s): the update follows the
    # 1002nd episode (0-based index 1001)
    assert np.flatnonzero(log.event == K.EV_UPDATED)[0] == 1001


def test_paper_schedule_and_limit():
    """Paper formulas on a synthetic set whose preconditions hold (tiny eps)."""
    rng = np.random.default_rng(0)
    ps = _synthetic_set(rng, n=2, K=1)
    ps = PolicySet(policies=ps.policies, u=ps.u, v=ps.v, u_s=ps.u_s, v_s=[[0.9], [0.8]],
                   safe_policy=ps.safe_policy, cover_params=ps.cover_params, cost_limit=[2.0],
                   gamma=0.9, eps=1e-6, delta=0.05, xi_hat=0.5, seed=0)
    kw = dict(reward_range=1.0, utility_scale=[1.0])
    ad = SafeAdapter(ps, profile="paper", n_episodes=1000, **kw)
    assert ad.guarantee
    L = lipschitz_constant(0.9)
    eps = 1e-6
    cand = int(np.argmax(ps.u))
    vs = ps.v_s[cand, 0]
    p = ad._params
    a1 = (vs - 2 * eps * (L + 2)) / (vs - 2 * eps * (L + 2) + 2 / 0.1)
    assert K.next_alpha(ad._v_s, cand, 0.0, 0, p) == pytest.approx(a1, rel=1e-14)
    a, alphas = a1, [a1]
    for m in range(1, 400):
        a_next = K.next_alpha(ad._v_s, cand, a, m, p)
        assert a_next == pytest.approx(3 * vs * a / ((2 + a) * vs + (4 * L + 9) * eps), rel=1e-14)
        assert a_next >= a
        a = a_next
        alphas.append(a)
    assert a == pytest.approx(1 - (4 * L + 9) * eps / vs, rel=1e-10)
    C = (2 * vs + (4 * L + 9) * eps) / (3 * vs)
    assert K.m_max(ad._v_s, cand, p) == pytest.approx(math.log(eps) / math.log(C), rel=1e-14)
    # gate: 32 ln(4K/delta) / ((1-gamma)^2 v^2)
    v_lm = np.array([0.4])
    assert K.update_gate(v_lm, p) == pytest.approx(32 * math.log(4000 / 0.05) / (0.01 * 0.16))
    # the radius and model error of the paper
    assert ad.constants["reward_radius"] == pytest.approx(2 * math.log(4000 / 0.05) / 0.01)
    assert ad.constants["reward_model_error"] == pytest.approx(eps * (L + 1))


def test_several_constraints_take_most_conservative():
    rng = np.random.default_rng(1)
    ps = _synthetic_set(rng, n=3, K=2)
    ad = SafeAdapter(ps, profile=REFERENCE, n_episodes=10)
    p = ad._params
    for cand in range(3):
        per_k = [(s - 0.02) / (s - 0.02 + 2) for s in ps.v_s[cand]]
        assert K.next_alpha(ad._v_s, cand, 0.0, 0, p) == pytest.approx(min(per_k), rel=1e-14)
    v_lm = np.array([0.5, 0.1])
    assert K.update_gate(v_lm, p) == pytest.approx(min(max(100 / 0.01, 1000), 5200))
    assert K.update_gate(np.array([-0.1, 1.0]), p) == 5200.0


# ---------------------------------------------------------------------------
# fused kernel: same decisions as ask/tell, rollouts, audit, determinism
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["reference", "pce"])
def test_ask_tell_equals_fused(pset, profile):
    M = gridworld(0.31)
    ad = SafeAdapter(pset, profile=profile, n_episodes=12_000, seed=5)
    log = ad.run(M)
    assert log.n_episodes == 12_000
    for k in range(log.n_episodes):
        st = ad.ask()
        assert (st.candidate, st.component, st.stage) == (log.candidate[k], log.component[k],
                                                         log.stage[k])
        assert st.alpha == log.alpha[k]
        want = pset.safe_policy if st.component == 1 else pset.policies[st.candidate]
        assert np.array_equal(st.policy, want)
        ad.tell(log.reward[k], log.cost[k])
    at = ad.log()
    for name in ("candidate", "alpha", "component", "stage", "event"):
        assert np.array_equal(getattr(at, name), getattr(log, name)), name
    assert np.array_equal(at.eliminated_at, log.eliminated_at)
    if profile == "pce":  # alpha fixed at 1: the candidate alone, eliminations only
        assert np.all(log.component == 0) and np.all(log.alpha == 1.0)
        assert np.count_nonzero(log.event == K.EV_UPDATED) == 0
        assert log.eliminated.size >= 1
    else:
        assert np.count_nonzero(log.event == K.EV_UPDATED) >= 3


def test_fused_episodes_are_rollouts_of_the_mixture(pset):
    """Episode k of the fused run is episode k of rollout() of the same mixture and seed."""
    M = gridworld(0.31)
    ad = SafeAdapter(pset, profile="reference", n_episodes=6000, seed=11)
    log = ad.run(M)
    # the first window with alpha > 0: constant candidate and weight on [k0, k1)
    k0 = int(np.flatnonzero(log.alpha > 0)[0])
    cand, a = int(log.candidate[k0]), float(log.alpha[k0])
    k1 = k0 + int(np.flatnonzero(log.event[k0:])[0]) + 1
    assert np.all(log.alpha[k0:k1] == a) and np.all(log.candidate[k0:k1] == cand)
    assert k1 - k0 >= 1000
    mix = Mixture(np.stack([pset.policies[cand], pset.safe_policy]), [a, 1 - a])
    ro = rollout(M, mix, k1, 600, seed=11, parallel=False)
    np.testing.assert_array_equal(ro.reward[k0:k1], log.reward[k0:k1])
    np.testing.assert_array_equal(ro.cost[k0:k1], log.cost[k0:k1])
    np.testing.assert_array_equal(ro.component[k0:k1], log.component[k0:k1])
    # the drawn component frequency follows alpha
    frac = np.mean(log.component[k0:k1] == 0)
    n = k1 - k0
    assert abs(frac - a) < 5 * math.sqrt(a * (1 - a) / n)


def test_exact_audit(pset):
    M = gridworld(0.29)
    ad = SafeAdapter(pset, profile="reference", n_episodes=8000, seed=2)
    log = ad.run(M)
    vstar = solve_lp(M).reward
    assert log.regret_reference == pytest.approx(vstar, rel=1e-12)
    for k in (0, 2500, 7999):
        cand, a = int(log.candidate[k]), float(log.alpha[k])
        ev = evaluate_mixture(M, np.stack([pset.policies[cand], pset.safe_policy]), [a, 1 - a])
        assert log.exact_reward[k] == pytest.approx(ev.reward, rel=1e-10)
        assert log.exact_cost[k, 0] == pytest.approx(ev.cost[0], rel=1e-10)
    np.testing.assert_allclose(log.regret, np.cumsum(vstar - log.exact_reward), rtol=1e-12)
    assert log.violations == int(np.sum(log.exact_cost[:, 0] > 1.5 + 1e-9))
    # pi_out: weights are the average of the deployed mixtures; its occupancy policy has
    # the mixture's exact values
    assert log.pi_out_weights.sum() == pytest.approx(1.0)
    assert log.pi_out_weights[-1] == pytest.approx(np.mean(1 - log.alpha))
    mix_val = evaluate_mixture(M, log.pi_out)
    pol_val = evaluate(M, log.pi_out_policy)
    assert pol_val.reward == pytest.approx(mix_val.reward, rel=1e-9)
    assert np.mean(log.exact_reward) == pytest.approx(mix_val.reward, rel=1e-9)
    own = ad.run(M, regret_reference=60.0)
    np.testing.assert_allclose(own.regret, np.cumsum(60.0 - own.exact_reward), rtol=1e-12)


def test_adversarial_candidate_is_eliminated_and_mixtures_stay_feasible():
    """A candidate claiming slack 1.0 (cost 0.5) whose true cost on the test task is 2.3.

    Its reward prediction is honest (and the largest, so it is deployed first); only the
    cost is wrong. The reference profile must raise its weight only while the observed
    slack is compatible, eliminate it, and keep every deployed mixture feasible.
    """
    M = gridworld(0.3)
    bad = solve_lp(M, margin=-0.8).policy  # optimal for cost limit 2.3: infeasible at 1.5
    ev_bad = evaluate(M, bad)
    assert ev_bad.cost[0] == pytest.approx(2.3, abs=1e-6)
    base = _policy_set(noises=(0.30, 0.32))
    ps = PolicySet(policies=np.concatenate([bad[None], base.policies]),
                   u=np.r_[ev_bad.reward, base.u], v=np.r_[[[1.0]], base.v],
                   u_s=np.r_[base.u_s[0], base.u_s], v_s=np.r_[base.v_s[:1], base.v_s],
                   safe_policy=base.safe_policy, cover_params=[0.3, 0.30, 0.32],
                   cost_limit=[1.5], gamma=0.9, eps=0.005, delta=0.05, xi_hat=0.2, seed=0)
    assert ev_bad.reward > base.u.max()
    for seed in (3, 4):
        log = SafeAdapter(ps, profile="reference", n_episodes=12_000, seed=seed).run(M)
        assert list(log.eliminated[:1]) == [0]
        k_elim = int(log.eliminated_at[0])
        assert np.all(log.candidate[:k_elim + 1] == 0)
        assert log.alpha[:k_elim + 1].max() > 0  # it was really deployed with weight > 0
        assert np.all(log.exact_cost[:k_elim + 1, 0] <= 1.5)
        assert log.violations == int(np.sum(log.exact_cost[:, 0] > 1.5 + 1e-9))


def test_stop_on_violation_records_and_stops():
    M = gridworld(0.3)
    bad = solve_lp(gridworld(0.1), margin=-10.0).policy
    base = _policy_set(noises=(0.30,))
    ps = PolicySet(policies=bad[None], u=[70.0], v=[[1.0]], u_s=base.u_s, v_s=base.v_s,
                   safe_policy=base.safe_policy, cover_params=[0.1], cost_limit=[1.5],
                   gamma=0.9, eps=0.005, delta=0.05, xi_hat=0.2, seed=0)
    prof = Profile(name="blind", fixed_alpha=1.0, eps=0.0, reward_radius=1e12, cost_radius=1e12)
    log = SafeAdapter(ps, profile=prof, n_episodes=50, seed=0).run(M)
    assert log.violations == 50 and log.n_episodes == 50
    assert "SAFETY VIOLATIONS: 50" in log.summary().splitlines()[0]
    stopped = SafeAdapter(ps, profile=prof, n_episodes=50, seed=0).run(M, stop_on_violation=True)
    assert stopped.stopped_on_violation and stopped.n_episodes == 0


def test_run_seeds_deterministic_across_threads(pset):
    M = gridworld(0.33)
    ad = SafeAdapter(pset, profile="reference", n_episodes=4000, seed=0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ad.run_seeds(M, [3, 4, 5])
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = ad.run_seeds(M, [3, 4, 5])
    finally:
        numba.set_num_threads(before)
    for a, b, s in zip(one, many, (3, 4, 5)):
        c = SafeAdapter(pset, profile="reference", n_episodes=4000, seed=s).run(M)
        for x in (b, c):
            for name in ("reward", "cost", "candidate", "alpha", "component", "exact_cost"):
                assert np.array_equal(getattr(a, name), getattr(x, name)), name
        assert a.seed == s


def test_run_tasks_equals_single_runs_for_any_thread_count(pset):
    tasks = [gridworld(x) for x in (0.27, 0.33)]
    ad = SafeAdapter(pset, profile="reference", n_episodes=3000, seed=0)
    refs = [50.0, 49.0]
    one = ad.run_tasks(tasks, seeds=[1, 2, 1], regret_references=refs, threads=1)
    two = ad.run_tasks(tasks, seeds=[1, 2, 1], regret_references=refs, threads=2)
    for i, M in enumerate(tasks):
        for j, s in enumerate((1, 2, 1)):
            c = SafeAdapter(pset, profile="reference", n_episodes=3000, seed=s).run(
                M, regret_reference=refs[i])
            for x in (two[i][j], c):
                for name in ("reward", "cost", "candidate", "alpha", "exact_cost", "regret"):
                    assert np.array_equal(getattr(one[i][j], name), getattr(x, name)), name
            assert one[i][j].seed == s
    with pytest.raises(ValueError, match="regret_references has 1 entries for 2 tasks"):
        ad.run_tasks(tasks, regret_references=[1.0])
    with pytest.raises(TypeError, match=r"tasks\[1\]"):
        ad.run_tasks([tasks[0], "grid"])
    with pytest.raises(ValueError, match="tasks is empty"):
        ad.run_tasks([])


# ---------------------------------------------------------------------------
# paper profile preconditions and validation
# ---------------------------------------------------------------------------

def test_paper_preconditions_fail_on_the_gridworld(pset):
    norm = normalisation_of(gridworld(0.3))
    assert norm["reward_range"] == 10.0 and norm["utility_scale"][0] == pytest.approx(9.85)
    with pytest.raises(SafetyAssumptionError, match=r"\(8L\+18\) eps = 7\.69.*eps <="):
        SafeAdapter(pset, profile="paper", n_episodes=100, **norm)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ad = SafeAdapter(pset, profile=PAPER, n_episodes=100, strict=False, seed=0, **norm)
    assert any(issubclass(x.category, SafetyPreconditionWarning)
               and "preconditions fail" in str(x.message) for x in w)
    log = ad.run(gridworld(0.3))
    assert not log.guarantee and "does not apply" in log.summary()
    # alpha_1 is negative on this scale: clipped, the safe policy runs alone
    assert np.all(log.alpha == 0.0) and log.violations == 0


def test_validation_errors(pset):
    with pytest.raises(TypeError, match="policy_set"):
        SafeAdapter("x", n_episodes=10)
    with pytest.raises(ValueError, match="profile is 'nope'"):
        SafeAdapter(pset, profile="nope", n_episodes=10)
    with pytest.raises(ValueError, match="n_episodes is 0"):
        SafeAdapter(pset, profile="reference", n_episodes=0)
    with pytest.raises(ValueError, match="reward_range and utility_scale"):
        SafeAdapter(pset, profile="paper", n_episodes=10)
    with pytest.raises(ValueError, match="delta is 1.5"):
        SafeAdapter(pset, profile="reference", n_episodes=10, delta=1.5)
    ad = SafeAdapter(pset, profile="reference", n_episodes=2, seed=0)
    with pytest.raises(RuntimeError, match="without a pending ask"):
        ad.tell(1.0, [0.0])
    st = ad.ask()
    assert ad.ask() is st
    with pytest.raises(ValueError, match=r"cost_returns must have shape \(1,\)"):
        ad.tell(1.0, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"cost_returns\[0\] is nan"):
        ad.tell(1.0, [np.nan])
    ad.tell(1.0, [0.0])
    ad.ask()
    ad.tell(1.0, [0.0])
    with pytest.raises(RuntimeError, match="all n_episodes = 2"):
        ad.ask()
    with pytest.raises(ValueError, match="M_test has"):
        ad.run(gridworld(0.3, size=5))
    with pytest.raises(ValueError, match="cost_limit"):
        ad.run(gridworld(0.3, cost_limit=2.0))
