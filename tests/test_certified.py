"""Certified test-time profile (CERTIFIED.md): calibration, kernels against their twins,
ask/tell == fused, determinism, honest flags, artifacts, input checks."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest
from safemeta_fast.kernels import certified as KC
from safemeta_fast.kernels.adaptation import mixture_table
from safemeta_fast.kernels.rollout import start_draws

from safemeta_fast import CalibrationRefutedWarning, SafeAdapter, calibrate
from safemeta_fast.calibration import conformal_quantile
from safemeta_fast.certified import certified_model, fresh_state
from safemeta_fast.envs import PAPER_TEST_NOISES, GridworldFamily, gridworld
from safemeta_fast.evaluation import evaluate_mixture
from safemeta_fast.policyset import ArtifactError, PolicySet
from safemeta_fast.profiles import CERTIFIED
from safemeta_fast.rollout import alias_table

from .twins import certified_pair_twin, certified_reject_twin, conformal_scores_twin


@pytest.fixture(scope="module")
def ps(paper_policy_set):
    return paper_policy_set


# -- calibration ------------------------------------------------------------------------

def test_conformal_scores_match_twin():
    rng = np.random.default_rng(0)
    xA, xB = rng.normal(size=(300, 7)), rng.normal(size=(120, 7))
    inv_s = 1.0 / rng.uniform(0.5, 2.0, 7)
    out = np.empty(120)
    KC.conformal_scores(xB, xA, inv_s, out)
    np.testing.assert_allclose(out, conformal_scores_twin(xB, xA, inv_s), rtol=0, atol=1e-15)


def test_conformal_quantile_rank():
    s = np.arange(1.0, 40.0)  # 39 scores: rank ceil(40 * 0.95) = 38
    assert conformal_quantile(s, 0.05) == 38.0
    with pytest.raises(ValueError, match="n_calibration = 10 is too small"):
        conformal_quantile(np.ones(10), 0.05)


def test_calibration_contents(ps):
    cal = ps.calibration
    m, T = ps.n_policies + 1, ps.n_constraints + 1
    assert cal.values.shape == (cal.n_kept, m, T)
    assert cal.n_reference == 2000 and cal.n_calibration == 2000
    assert cal.delta_cal == pytest.approx(0.025) and cal.delta == pytest.approx(0.05)
    # A' keeps exactly the reference tasks where pi_s is feasible
    assert np.all(cal.values[:, -1, 1:] <= ps.cost_limit)
    assert cal.n_kept <= cal.n_reference
    # the values are exact: recompute one reference task
    k = 17
    M = GridworldFamily().build(cal.params[k])
    comps = np.concatenate([ps.policies, ps.safe_policy[None]])
    for j in (0, m - 1):
        ev = evaluate_mixture(M, comps, np.eye(m)[j])
        assert ev.reward == pytest.approx(cal.values[k, j, 0], abs=1e-9)
    np.testing.assert_array_equal(cal.reward_range, [0.0, 10.0])
    np.testing.assert_array_equal(cal.cost_range, [[0.0, 10.0]])
    assert cal.cv_values is not None and cal.cv_values.shape == (m, ps.n_states, T)


def test_calibration_covers_fresh_tasks(ps):
    """Split conformal: a fresh task's value vector lies in the union of boxes with
    probability >= 1 - delta_cal (0.975); 400 fresh tasks, a loose binomial bound."""
    from safemeta_fast.calibration import value_vectors

    cal = ps.calibration
    fam = GridworldFamily()
    th = fam.sample(400, seed=987654)
    x, *_ = value_vectors(ps, fam.build_many(th))
    d = np.abs(x[:, None] - cal.values[None]) / cal.scale
    covered = (d.reshape(400, cal.n_kept, -1).max(axis=2) <= cal.q).any(axis=1)
    assert covered.mean() >= 0.95


def test_calibrate_checks_its_inputs(ps):
    with pytest.raises(TypeError, match="family must be a TaskFamily"):
        calibrate(ps, "gridworld")
    with pytest.raises(ValueError, match="delta_cal"):
        calibrate(ps, GridworldFamily(), delta=0.05, delta_cal=0.05, progress=False)
    with pytest.raises(ValueError, match="too small"):
        calibrate(ps, GridworldFamily(), n_reference=20, n_calibration=10, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"\(S, A, K\)"):
        calibrate(ps, GridworldFamily(size=5), n_reference=20, n_calibration=60, progress=False)


# -- kernels against their twins ------------------------------------------------------------

def _model_and_state(ps, use_cv=False):
    model, _ = certified_model(ps, horizon=600, delta_test=0.025, use_cv=use_cv, check_min=50,
                               check_frac=0.02, eb_grid=24)
    state = fresh_state(ps.calibration.n_kept, ps.n_policies + 1, ps.n_constraints + 1)
    KC.init_certified(state, model)
    return model, state


def test_rejection_and_selection_match_twins(ps):
    """Feed synthetic returns drawn around one reference task; after every check the alive
    set equals the twin's and the deployment's value equals the brute-force optimum."""
    model, state = _model_and_state(ps)
    muc, mu2, Rref, U, b, radius, eb_a, eb_b = model[:8]
    rng = np.random.default_rng(3)
    truth = ps.calibration.values[123]
    m = ps.n_policies + 1
    X = np.empty(2)
    checks = 0
    for ep in range(3000):
        ist = state[0]
        j = int(ist[KC.C_A]) if rng.random() < state[1][KC.CF_W] else int(ist[KC.C_B])
        hr = min(15.0, truth[j, 0], 100.0 - truth[j, 0])   # unbiased, inside the range
        hc = min(2.0, truth[j, 1])
        R = truth[j, 0] + rng.uniform(-hr, hr)
        C = np.array([truth[j, 1] + rng.uniform(-hc, hc)])
        before = state[5][:ist[KC.C_NALIVE]].copy()
        cnt, S, Q = state[2].copy(), state[3].copy(), state[4].copy()
        KC.adjust_returns(R, C, j, 0, model, X)
        cnt[j] += 1
        S[:, j] += X
        Q[:, j] += X * X
        due = ep + 1 >= ist[KC.C_NEXT]
        KC.observe_certified(state, model, j, X)
        if due:
            checks += 1
            twin = certified_reject_twin(before, muc, cnt, S, Q, radius, eb_a, eb_b)
            alive = state[5][:state[0][KC.C_NALIVE]]
            np.testing.assert_array_equal(alive, twin)
            best = certified_pair_twin(alive, Rref, U, b)
            a, c, w = int(state[0][KC.C_A]), int(state[0][KC.C_B]), float(state[1][KC.CF_W])
            rbar = Rref[alive].mean(axis=0)
            assert w * rbar[a] + (1 - w) * rbar[c] == pytest.approx(best, abs=1e-8)
            assert np.all(state[6] <= b + 1e-12)  # certified bound of the deployment
    assert checks >= 10
    assert 123 in state[5][:state[0][KC.C_NALIVE]]  # the truth's own box is never rejected
    assert state[0][KC.C_NALIVE] < ps.calibration.n_kept
    assert m == ps.n_policies + 1


def test_no_certified_mixture_falls_back_to_pi_s():
    """Two components whose certified costs exceed the limit everywhere: pi_s alone, flagged."""
    U = np.full((3, 1, 2), 2.0)
    Rref = np.array([[5.0, 1.0], [5.0, 1.0], [5.0, 1.0]])
    z = np.zeros((3, 2, 2))
    model = (z, z, Rref, U, np.array([1.5]), np.zeros((2, 2)), np.ones((1, 2)), np.ones((1, 2)),
             np.array([50.0, 0.02, 0.0]), np.zeros((2, 1, 2)), np.zeros((2, 2)))
    state = fresh_state(3, 2, 2)
    KC.init_certified(state, model)
    assert (state[0][KC.C_A], state[0][KC.C_B], state[1][KC.CF_W]) == (1, 1, 1.0)
    assert state[0][KC.C_CERT] == 0 and state[6][0] == 2.0


# -- the adapter ----------------------------------------------------------------------------

def _s0(seed, k, w, M):
    thr, al = alias_table(np.asarray(M.nu0))
    t_i, a_i = np.empty(2, dtype=np.int64), np.empty(2, dtype=np.int64)
    mixture_table(w, t_i, a_i)
    return int(start_draws(k, seed, t_i, a_i, thr, al)[5])


@pytest.mark.parametrize("cv", [False, True])
def test_ask_tell_equals_fused(ps, cv):
    M, N = gridworld(0.31), 4000
    log = SafeAdapter(ps, n_episodes=N, seed=5, control_variate=cv).run(M, regret_reference=52.0)
    ad = SafeAdapter(ps, n_episodes=N, seed=5, control_variate=cv)
    for k in range(N):
        st = ad.ask()
        assert st.pair == tuple(log.pair[k]) and st.weight == log.weight[k]
        assert st.component == log.component[k] and st.index in st.pair
        kw = {"start_state": _s0(ad.seed, k, st.weight, M)} if cv else {}
        ad.tell(log.reward[k], log.cost[k], **kw)
    l2 = ad.log(M, regret_reference=52.0)
    for name in ("pair", "weight", "drawn", "alive", "certified_cost", "exact_cost", "regret",
                 "event", "alpha", "candidate", "component"):
        np.testing.assert_array_equal(getattr(l2, name), getattr(log, name), err_msg=name)
    assert l2.constants["control_variate"] is cv
    assert np.count_nonzero(log.event == KC.EV_REJECTED) > 0


def test_thread_count_and_repeat_determinism(ps):
    import numba

    tasks = [gridworld(x) for x in (0.27, 0.33)]
    ad = SafeAdapter(ps, n_episodes=3000, seed=0)
    one = ad.run_tasks(tasks, seeds=[1, 2, 1], regret_references=[52.0, 50.0], threads=1)
    two = ad.run_tasks(tasks, seeds=[1, 2, 1], regret_references=[52.0, 50.0], threads=2)
    assert numba.get_num_threads() >= 1
    for r1, r2 in zip(one, two):
        for a, b in zip(r1, r2):
            np.testing.assert_array_equal(a.reward, b.reward)
            np.testing.assert_array_equal(a.pair, b.pair)
            np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(one[0][0].reward, one[0][2].reward)  # repeated seed
    single = SafeAdapter(ps, n_episodes=3000, seed=2).run(tasks[1], regret_reference=50.0)
    np.testing.assert_array_equal(single.exact_cost, one[1][1].exact_cost)


def test_refuted_calibration_falls_back_and_warns(ps):
    """A test task far outside D (noise 0.02): every reference is rejected, pi_s runs alone
    afterwards, and the log, the summary and a warning say so."""
    M = gridworld(0.02)
    ad = SafeAdapter(ps, n_episodes=6000, seed=0)
    with pytest.warns(CalibrationRefutedWarning, match="refuted"):
        log = ad.run(M)
    assert log.refuted_at >= 0
    after = log.pair[log.refuted_at + 1:]
    assert np.all(after == ps.n_policies) and np.all(log.weight[log.refuted_at + 1:] == 1.0)
    assert log.alive[-1] == 0
    assert "CALIBRATION REFUTED" in log.summary()


def test_certified_profile_needs_calibration(ps):
    bare = dataclasses.replace(ps, calibration=None)
    with pytest.raises(ValueError, match="calibrate"):
        SafeAdapter(bare, n_episodes=10)
    with pytest.raises(ValueError, match="delta_cal"):
        SafeAdapter(ps, n_episodes=10, delta=0.02)


def test_tell_checks(ps):
    ad = SafeAdapter(ps, n_episodes=10, seed=0)
    ad.ask()
    with pytest.raises(ValueError, match="outside the calibrated return range"):
        ad.tell(150.0, [1.0])
    with pytest.raises(ValueError, match=r"cost_returns\[0\]"):
        ad.tell(50.0, [-3.0])
    with pytest.raises(ValueError, match="start_state is 9"):
        ad.tell(50.0, [1.0], start_state=9)  # a cost cell: nu0 = 0 there
    ad.tell(50.0, [1.0], start_state=0)
    ad.ask()
    with pytest.raises(ValueError, match="start_state is required"):
        ad.tell(50.0, [1.0])
    with pytest.raises(ValueError, match="rewards span"):
        SafeAdapter(ps, n_episodes=10).run(gridworld(0.3, goal_reward=20.0))


def test_policy_set_with_calibration_round_trips(ps, tmp_path):
    path = ps.save(tmp_path / "ps.npz")
    back = PolicySet.load(path)
    cal, c2 = ps.calibration, back.calibration
    for name in cal.ARRAYS:
        np.testing.assert_array_equal(getattr(cal, name), getattr(c2, name))
    assert (c2.q, c2.delta_cal, c2.seed) == (cal.q, cal.delta_cal, cal.seed)
    a = SafeAdapter(ps, n_episodes=500, seed=3).run(gridworld(0.3), regret_reference=52.0)
    b = SafeAdapter(back, n_episodes=500, seed=3).run(gridworld(0.3), regret_reference=52.0)
    np.testing.assert_array_equal(a.exact_cost, b.exact_cost)
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def _rewrite(src, dst, edit):
    with np.load(src) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(bytes(arrays["__metadata__"]).decode())
    edit(arrays, meta)
    arrays["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


@pytest.mark.parametrize("edit", [
    lambda a, m: m.__setitem__("xi_hat", 10.0),
    lambda a, m: m["calibration"].__setitem__("q", 0.0),
    lambda a, m: a.__setitem__("cal_values", a["cal_values"] * 0.5),
])
def test_tampered_metadata_or_calibration_is_refused(ps, tmp_path, edit):
    src = ps.save(tmp_path / "ps.npz")
    _rewrite(src, tmp_path / "bad.npz", edit)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        PolicySet.load(tmp_path / "bad.npz")


def test_schema_1_file_loads_with_advice(ps, tmp_path):
    from safemeta_fast.policyset import ARRAY_NAMES
    from safemeta_fast.runio import npz_digest

    src = ps.save(tmp_path / "ps.npz")

    def to_v1(arrays, meta):
        for k in [k for k in arrays if k.startswith("cal_")]:
            del arrays[k]
        meta.pop("calibration")
        meta["schema_version"] = 1
        meta["sha256"] = npz_digest(arrays, names=ARRAY_NAMES)

    _rewrite(src, tmp_path / "v1.npz", to_v1)
    with pytest.warns(UserWarning, match=r"calibrate\(ps, family\)"):
        old = PolicySet.load(tmp_path / "v1.npz")
    assert old.calibration is None
    with zipfile.ZipFile(tmp_path / "v1.npz") as z:
        assert not any(n.startswith("cal_") for n in z.namelist())


def test_profile_validation():
    with pytest.raises(ValueError, match="profile.check_frac"):
        dataclasses.replace(CERTIFIED, check_frac=1.5)
    with pytest.raises(ValueError, match="profile.cost_radius"):
        dataclasses.replace(CERTIFIED, cost_radius=-1.0)
    with pytest.raises(TypeError, match="profile.min_window"):
        dataclasses.replace(CERTIFIED, min_window=2.5)


def test_default_profile_is_certified(ps):
    ad = SafeAdapter(ps, n_episodes=100, seed=0)
    assert ad.profile is CERTIFIED and ad.guarantee
    assert ad.delta_test == pytest.approx(0.025)
    assert PAPER_TEST_NOISES[0] == pytest.approx(0.3399476)


def test_two_constraints_ask_tell_equals_fused_and_safe():
    """K = 2 on a small random family: calibration, certified bounds per constraint, and
    the ask/tell path against the fused kernel (control variate on)."""
    from safemeta_fast import solve_lp
    from safemeta_fast.envs import RandomCMDPFamily
    from safemeta_fast.evaluation import evaluate_many

    fam = RandomCMDPFamily(6, 3, n_constraints=2, radius=0.3, base_seed=4)
    covers = [[0.2, 0.5], [0.5, 0.5], [0.8, 0.5]]
    tasks = [fam.build(t) for t in covers]
    pols = np.stack([solve_lp(T).policy for T in tasks])
    tight = fam.build([0.5, 0.5]).replace(cost_limit=0.8 * np.asarray(tasks[0].cost_limit))
    safe = solve_lp(tight).policy
    ev = [evaluate_many(T, np.concatenate([pols, safe[None]])) for T in tasks]
    b = np.asarray(tasks[0].cost_limit)
    ps = PolicySet(policies=pols, u=[e.reward[i] for i, e in enumerate(ev)],
                   v=[b - e.cost[i] for i, e in enumerate(ev)], u_s=[e.reward[3] for e in ev],
                   v_s=[b - e.cost[3] for e in ev], safe_policy=safe, cover_params=covers,
                   cost_limit=b, gamma=0.9, eps=0.1, delta=0.05,
                   xi_hat=float(min((b - e.cost[3]).min() for e in ev)), seed=0)
    ps = calibrate(ps, fam, n_reference=300, n_calibration=300, seed=2, progress=False)
    assert ps.calibration.values.shape[1:] == (4, 3)
    M = fam.build([0.4, 0.6])
    N = 3000
    log = SafeAdapter(ps, n_episodes=N, seed=1).run(M)
    assert log.violations == 0 and log.certified_cost.shape == (N, 2)
    ok = np.all(log.certified_cost <= b, axis=1)
    assert np.all(log.exact_cost[ok] <= log.certified_cost[ok] + 1e-12)
    ad = SafeAdapter(ps, n_episodes=N, seed=1)
    for k in range(N):
        st = ad.ask()
        ad.tell(log.reward[k], log.cost[k], start_state=_s0(ad.seed, k, st.weight, M))
    l2 = ad.log(M)
    for name in ("pair", "weight", "alive", "exact_cost", "drawn"):
        np.testing.assert_array_equal(getattr(l2, name), getattr(log, name), err_msg=name)
