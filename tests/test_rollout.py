"""Rollouts: Monte-Carlo means against exact values, the per-step twin, determinism,
validation and edge cases.

Statistical checks use fixed seeds and a z-score bound: |mean - exact| <= Z * sd / sqrt(n)
with Z = 5 (a correct sampler fails such a check with probability below 1e-6).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import given, settings

from safemeta_fast import CMDP
from safemeta_fast.policy import Mixture
from safemeta_fast.rollout import RolloutResult, rollout
from tests.strategies import cmdp_and_policy, random_cmdp, random_policy
from tests.twins import (
    evaluate_dense,
    rollout_per_step,
    rollout_records_twin,
    value_iteration_dense,
)

Z = 5.0


def truncated_values(M: CMDP, pi: np.ndarray, horizon: int):
    """Exact E[sum_{t<H} gamma^t r] and costs (K,) by the dense forward recursion."""
    P = np.asarray(M.P)
    Ppi = np.einsum("sa,sat->st", pi, P)
    r_pi = (pi * M.r).sum(axis=1)
    c_pi = np.einsum("sa,sak->sk", pi, M.c)
    d = np.array(M.nu0)
    g = 1.0
    vr, vc = 0.0, np.zeros(M.n_constraints)
    for _ in range(horizon):
        vr += g * d @ r_pi
        vc += g * d @ c_pi
        d = d @ Ppi
        g *= M.gamma
    return vr, vc


def assert_mean_close(samples: np.ndarray, exact, what: str):
    samples = np.asarray(samples)
    n = samples.shape[0]
    mean = samples.mean(axis=0)
    sd = samples.std(axis=0, ddof=1)
    bound = Z * sd / np.sqrt(n) + 1e-9
    assert np.all(np.abs(mean - exact) <= bound), (
        f"{what}: mean {mean} vs exact {exact}, |diff| {np.abs(mean - exact)} > {bound}"
    )


def assert_two_sample_close(a: np.ndarray, b: np.ndarray, what: str):
    a, b = np.asarray(a), np.asarray(b)
    se = np.sqrt(a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0])
    diff = np.abs(a.mean(axis=0) - b.mean(axis=0))
    assert np.all(diff <= Z * se + 1e-9), f"{what}: |diff| {diff} > {Z * se}"


@pytest.fixture(scope="module")
def grid_policies(grid03):
    _, pi_opt = value_iteration_dense(np.asarray(grid03.P), np.asarray(grid03.r), grid03.gamma)
    pi_unif = np.full((grid03.n_states, grid03.n_actions), 0.25)
    return pi_opt, pi_unif


def _absorbing_start_task(K: int = 1) -> CMDP:
    """Three states; state 2 absorbing (reward 2, costs 1..K) and the start state."""
    P = np.zeros((3, 2, 3))
    P[0, 0] = [0.5, 0.5, 0.0]
    P[0, 1] = [0.0, 0.3, 0.7]
    P[1, :, 0] = 1.0
    P[2, :, 2] = 1.0
    r = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    c = np.zeros((3, 2, K))
    c[2] = np.arange(1, K + 1)
    c[0, 0] = 0.5
    return CMDP(P, r, c, cost_limit=np.ones(K), gamma=0.95, nu0=[0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------
# Monte-Carlo means against exact values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["optimal", "uniform"])
@pytest.mark.parametrize("closed_form", [True, False])
def test_gridworld_means_match_exact_values(grid03, grid_policies, which, closed_form):
    pi = grid_policies[0] if which == "optimal" else grid_policies[1]
    vr, vc, _ = evaluate_dense(np.asarray(grid03.P), grid03.r, grid03.c, grid03.nu0,
                               grid03.gamma, pi)
    # truncation at H = 600 changes the values by <= 0.9**600 * 10 / 0.1 < 1e-25
    res = rollout(grid03, pi, 20_000, 600, seed=11, closed_form=closed_form)
    assert res.reward.shape == (20_000,) and res.cost.shape == (20_000, 1)
    assert_mean_close(res.reward, vr, "reward")
    assert_mean_close(res.cost, vc, "cost")


@pytest.mark.parametrize("case", range(4))
def test_random_cmdp_means_match_truncated_values(case):
    rng = np.random.default_rng(100 + case)
    S, A, K = [(4, 2, 1), (6, 3, 2), (3, 4, 3), (8, 2, 1)][case]
    M = random_cmdp(rng, S, A, K, gamma=0.85, sparsity=0.5)
    pi = random_policy(rng, S, A, deterministic=(case == 3))
    H = 25
    vr, vc = truncated_values(M, pi, H)
    res = rollout(M, pi, 20_000, H, seed=case)
    assert_mean_close(res.reward, vr, "reward")
    assert_mean_close(res.cost, vc, "cost")


def test_long_horizon_matches_infinite_horizon_value():
    rng = np.random.default_rng(5)
    M = random_cmdp(rng, 5, 3, 2, gamma=0.7)
    pi = random_policy(rng, 5, 3)
    vr, vc, _ = evaluate_dense(np.asarray(M.P), M.r, M.c, M.nu0, M.gamma, pi)
    # gamma**H * max|r| / (1 - gamma) with H = 120 is below 1e-18
    res = rollout(M, pi, 20_000, 120, seed=3)
    assert_mean_close(res.reward, vr, "reward")
    assert_mean_close(res.cost, vc, "cost")


def test_mixture_means_and_component_frequencies(grid03, grid_policies):
    pi_opt, pi_unif = grid_policies
    pi_left = np.zeros_like(pi_unif)
    pi_left[:, 2] = 1.0
    pols = np.stack([pi_opt, pi_unif, pi_left])
    w = np.array([0.2, 0.5, 0.3])
    mix = Mixture(pols, w)
    n = 30_000
    res = rollout(grid03, mix, n, 600, seed=2)
    assert res.component is not None and res.component.dtype == np.int64
    counts = np.bincount(res.component, minlength=3)
    assert counts.sum() == n
    assert np.all(np.abs(counts - n * w) <= Z * np.sqrt(n * w * (1 - w)))
    vals = [evaluate_dense(np.asarray(grid03.P), grid03.r, grid03.c, grid03.nu0, grid03.gamma, p)
            for p in pols]
    vr = sum(wi * v[0] for wi, v in zip(w, vals))
    vc = sum(wi * v[1] for wi, v in zip(w, vals))
    assert_mean_close(res.reward, vr, "mixture reward")
    assert_mean_close(res.cost, vc, "mixture cost")
    # each component's episodes follow that component's policy for the whole episode
    for i in range(3):
        sel = res.component == i
        assert_mean_close(res.reward[sel], vals[i][0], f"reward of component {i}")


def test_mixture_on_random_cmdp_is_episode_level_not_per_step():
    # Two deterministic policies on a chain whose values are not linear under per-step
    # mixing: the episode-level mixture must match sum_i d_i V(pi_i).
    rng = np.random.default_rng(9)
    M = random_cmdp(rng, 6, 2, 2, gamma=0.8, sparsity=0.5)
    p0 = random_policy(rng, 6, 2, deterministic=True)
    p1 = 1.0 - p0
    w = np.array([0.4, 0.6])
    H = 30
    v0, c0 = truncated_values(M, p0, H)
    v1, c1 = truncated_values(M, p1, H)
    res = rollout(M, Mixture(np.stack([p0, p1]), w), 30_000, H, seed=4)
    assert_mean_close(res.reward, w[0] * v0 + w[1] * v1, "reward")
    assert_mean_close(res.cost, w[0] * c0 + w[1] * c1, "cost")
    vs, _ = truncated_values(M, w[0] * p0 + w[1] * p1, H)
    assert abs(vs - (w[0] * v0 + w[1] * v1)) > 1e-6  # the per-step mixture is a different object


def test_single_component_mixture_equals_plain_policy(grid03, grid_policies):
    pi = grid_policies[1]
    a = rollout(grid03, pi, 500, 50, seed=8)
    b = rollout(grid03, Mixture(pi[None], [1.0]), 500, 50, seed=8)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.cost, b.cost)
    assert a.component is None
    np.testing.assert_array_equal(b.component, np.zeros(500, dtype=np.int64))


# ---------------------------------------------------------------------------
# closed-form finish
# ---------------------------------------------------------------------------

def test_closed_form_on_and_off_agree_in_distribution(grid03, grid_policies):
    pi = grid_policies[1]
    on = rollout(grid03, pi, 20_000, 600, seed=21, closed_form=True)
    off = rollout(grid03, pi, 20_000, 600, seed=22, closed_form=False)
    assert on.closed_form and not off.closed_form
    assert_two_sample_close(on.reward, off.reward, "reward")
    assert_two_sample_close(on.cost, off.cost, "cost")


def test_closed_form_on_and_off_same_episodes_for_same_seed(grid03, grid_policies):
    # Both settings consume the same draws up to absorption, so episodes coincide.
    for pi in grid_policies:
        on = rollout(grid03, pi, 2_000, 600, seed=5, closed_form=True)
        off = rollout(grid03, pi, 2_000, 600, seed=5, closed_form=False)
        np.testing.assert_allclose(on.reward, off.reward, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(on.cost, off.cost, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H", [0, 1, 2, 7, 300])
def test_closed_form_exact_when_starting_absorbed(H):
    M = _absorbing_start_task(K=3)
    tail = sum(0.95**t for t in range(H))
    for cf in (True, False):
        res = rollout(M, np.full((3, 2), 0.5), 50, H, seed=1, closed_form=cf)
        np.testing.assert_allclose(res.reward, 2.0 * tail, rtol=1e-13, atol=0)
        np.testing.assert_allclose(res.cost, np.tile([1.0, 2.0, 3.0], (50, 1)) * tail,
                                   rtol=1e-13, atol=0)


def test_closed_form_mid_episode_on_two_state(two_state):
    # From state 0 with "leave" (action 1): R = sum_{t=1}^{H-1} 0.5^t * 0.5, C = 0.
    pi = np.array([[0.0, 1.0], [1.0, 0.0]])
    H = 40
    expect = sum(0.5 * 0.5**t for t in range(1, H))
    for cf in (True, False):
        res = rollout(two_state, pi, 10, H, seed=0, closed_form=cf)
        np.testing.assert_allclose(res.reward, expect, rtol=1e-13)
        np.testing.assert_array_equal(res.cost, 0.0)


# ---------------------------------------------------------------------------
# against the per-step NumPy twin
# ---------------------------------------------------------------------------

def test_kernel_agrees_with_per_step_twin_in_distribution():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(77)
    M = random_cmdp(rng, 5, 3, 2, gamma=0.8, sparsity=0.5)
    pi = random_policy(rng, 5, 3)
    H = 12
    tw_r, tw_c = rollout_per_step(np.asarray(M.P), M.r, M.c, M.nu0, M.gamma, pi, 600, H,
                                  np.random.default_rng(1))
    res = rollout(M, pi, 20_000, H, seed=1)
    assert_two_sample_close(res.reward, tw_r, "reward")
    assert_two_sample_close(res.cost, tw_c, "cost")
    assert ks_2samp(res.reward, tw_r).pvalue > 1e-4
    for k in range(2):
        assert ks_2samp(res.cost[:, k], tw_c[:, k]).pvalue > 1e-4


def test_kernel_agrees_with_twin_on_gridworld(grid03, grid_policies):
    pi = grid_policies[1]
    H = 40
    tw_r, tw_c = rollout_per_step(np.asarray(grid03.P), grid03.r, grid03.c, grid03.nu0,
                                  grid03.gamma, pi, 300, H, np.random.default_rng(3))
    res = rollout(grid03, pi, 20_000, H, seed=3)
    assert_two_sample_close(res.reward, tw_r, "reward")
    assert_two_sample_close(res.cost, tw_c, "cost")


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

def _mixture_case():
    rng = np.random.default_rng(31)
    M = random_cmdp(rng, 6, 3, 2, gamma=0.9, sparsity=0.5)
    pols = np.stack([random_policy(rng, 6, 3) for _ in range(3)])
    return M, Mixture(pols, [0.5, 0.25, 0.25])


def test_same_seed_same_results_any_thread_count(grid03, grid_policies):
    M, mix = _mixture_case()
    cases = [(grid03, grid_policies[1], True), (grid03, grid_policies[0], False), (M, mix, True)]
    original = numba.get_num_threads()
    try:
        for model, pol, cf in cases:
            ref = rollout(model, pol, 3_001, 200, seed=123, closed_form=cf, parallel=False)
            numba.set_num_threads(1)
            one = rollout(model, pol, 3_001, 200, seed=123, closed_form=cf, parallel=True)
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            full = rollout(model, pol, 3_001, 200, seed=123, closed_form=cf, parallel=True)
            for res in (one, full):
                np.testing.assert_array_equal(res.reward, ref.reward)
                np.testing.assert_array_equal(res.cost, ref.cost)
                if ref.component is not None:
                    np.testing.assert_array_equal(res.component, ref.component)
    finally:
        numba.set_num_threads(original)


def test_different_seeds_differ_and_generator_seed_is_recorded(grid03, grid_policies):
    pi = grid_policies[1]
    a = rollout(grid03, pi, 200, 100, seed=1)
    b = rollout(grid03, pi, 200, 100, seed=2)
    assert not np.array_equal(a.reward, b.reward)
    g = rollout(grid03, pi, 200, 100, seed=np.random.default_rng(0))
    again = rollout(grid03, pi, 200, 100, seed=g.seed)
    np.testing.assert_array_equal(g.reward, again.reward)
    fresh = rollout(grid03, pi, 10, 10, seed=None)
    assert isinstance(fresh.seed, int) and 0 <= fresh.seed < 2**63
    # a longer run extends a shorter one: episode e depends only on (seed, e)
    longer = rollout(grid03, pi, 400, 100, seed=1)
    np.testing.assert_array_equal(longer.reward[:200], a.reward)


_NOJIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from numba import config
    from safemeta_fast.envs import gridworld
    from safemeta_fast.kernels import rollout as kernels

    assert config.DISABLE_JIT and not hasattr(kernels.rollout_parallel, "signatures")
    from safemeta_fast.policy import Mixture
    from safemeta_fast.rollout import rollout
    from tests.strategies import random_cmdp, random_policy

    rng = np.random.default_rng(31)
    M = random_cmdp(rng, 6, 3, 2, gamma=0.9, sparsity=0.5)
    mix = Mixture(np.stack([random_policy(rng, 6, 3) for _ in range(3)]), [0.5, 0.25, 0.25])
    G = gridworld(0.3)
    pi = np.full((49, 4), 0.25)
    a = rollout(M, mix, 40, 30, seed=2**62 + 17)
    b = rollout(G, pi, 30, 60, seed=5, closed_form=True)
    c = rollout(G, pi, 30, 60, seed=5, closed_form=False, parallel=False)
    d = rollout(M, mix, 40, 30, seed=2**62 + 17, schedule="prefetch")
    f = rollout(G, pi, 30, 60, seed=5, closed_form=False, parallel=False, schedule="prefetch")
    np.savez(sys.argv[1], ar=a.reward, ac=a.cost, ak=a.component, br=b.reward, bc=b.cost,
             cr=c.reward, cc=c.cost, dr=d.reward, dc=d.cost, dk=d.component, fr=f.reward,
             fc=f.cost)
    """
)


def test_bit_identical_with_numba_disabled(tmp_path, grid03):
    script = tmp_path / "nojit.py"
    script.write_text(_NOJIT_SCRIPT)
    out = tmp_path / "nojit.npz"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", str(script), str(out)],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)

    M, mix = _mixture_case()
    a = rollout(M, mix, 40, 30, seed=2**62 + 17)
    pi = np.full((49, 4), 0.25)
    b = rollout(grid03, pi, 30, 60, seed=5, closed_form=True)
    c = rollout(grid03, pi, 30, 60, seed=5, closed_form=False, parallel=False)
    # the prefetch schedule (prefetch is a no-op when interpreted) gives the same episodes
    for key, arr in [("ar", a.reward), ("ac", a.cost), ("ak", a.component), ("br", b.reward),
                     ("bc", b.cost), ("cr", c.reward), ("cc", c.cost), ("dr", a.reward),
                     ("dc", a.cost), ("dk", a.component), ("fr", c.reward), ("fc", c.cost)]:
        np.testing.assert_array_equal(got[key], arr, err_msg=key)


# ---------------------------------------------------------------------------
# schedules: the pair and prefetch kernels against the sequential records twin
# ---------------------------------------------------------------------------

_ROLLOUT_MODULE = importlib.import_module("safemeta_fast.rollout")


def _capture(monkeypatch, name):
    """Wrap the kernel ``name`` that rollout() calls; returns the list of argument tuples."""
    calls = []
    kernel = getattr(_ROLLOUT_MODULE, name)

    def spy(*args):
        calls.append(args)
        return kernel(*args)

    monkeypatch.setattr(_ROLLOUT_MODULE, name, spy)
    return calls


def _twin_of(M, args, n, schedule):
    """The records twin on the tables rollout() built (from the captured kernel arguments)."""
    if schedule == "pairs":
        (seed, ct, ca, nt, na, si, rec, bs, _, _, r_abs, c_abs, gamma, H, tail, cf) = args[:16]
    else:
        (seed, ct, ca, nt, na, si, rec, bs, _, r_abs, c_abs, gamma, H, tail, cf) = args[:15]
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    return rollout_records_twin(seed, ct, ca, nt, na, si, rec, bs, np.asarray(M.r).reshape(-1),
                                np.asarray(M.c).reshape(S * A, K), r_abs, c_abs, gamma, H, tail,
                                cf, n)


def _schedule_cases(grid03, grid_policies):
    M, mix = _mixture_case()
    pi_opt, pi_unif = grid_policies
    return {
        # optimal policy with the closed form: episodes end at many different times,
        # 700 episodes span three blocks, so lanes are refilled and blocks split
        # name: (model, policy, n, H, closed form, whether the returns must vary)
        "grid optimal, closed form": (grid03, pi_opt, 700, 200, True, True),
        "grid uniform, closed form": (grid03, pi_unif, 300, 60, True, True),
        "grid uniform, per step": (grid03, pi_unif, 300, 60, False, True),
        "mixture K=2": (M, mix, 301, 30, True, True),
        "absorbing start K=3": (_absorbing_start_task(K=3), np.full((3, 2), 0.5), 40, 7, True,
                                False),
        "H=1": (grid03, pi_unif, 400, 1, True, True),
        "H=0": (grid03, pi_unif, 5, 0, True, False),
        "one episode": (grid03, pi_opt, 1, 50, False, False),
    }


@pytest.mark.parametrize("schedule, kernel", [("pairs", "rollout_serial"),
                                              ("prefetch", "rollout_prefetch_serial")])
def test_schedules_equal_the_records_twin_bit_for_bit(monkeypatch, grid03, grid_policies,
                                                      schedule, kernel):
    for what, (M, pol, n, H, cf, varied) in _schedule_cases(grid03, grid_policies).items():
        calls = _capture(monkeypatch, kernel)
        res = rollout(M, pol, n, H, seed=2**62 + 5, closed_form=cf, parallel=False,
                      schedule=schedule)
        assert len(calls) == 1, what
        tw_r, tw_c, tw_k = _twin_of(M, calls[0], n, schedule)
        np.testing.assert_array_equal(res.reward, tw_r, err_msg=what)
        np.testing.assert_array_equal(res.cost, tw_c, err_msg=what)
        if res.component is not None:
            np.testing.assert_array_equal(res.component, tw_k, err_msg=what)
        if varied:  # the case is not degenerate
            assert np.unique(res.reward).size > 1, what


def test_prefetch_kernel_is_the_same_for_any_lanes_and_block(monkeypatch, grid03, grid_policies):
    from safemeta_fast.kernels.rollout import rollout_prefetch_parallel, rollout_prefetch_serial

    M, mix = _mixture_case()
    for model, pol, cf in [(grid03, grid_policies[0], True), (M, mix, False)]:
        calls = _capture(monkeypatch, "rollout_prefetch_serial")
        ref = rollout(model, pol, 301, 80, seed=9, closed_form=cf, parallel=False,
                      schedule="prefetch")
        head = calls[0][:15]
        K = model.n_constraints
        for lanes, block in [(1, 301), (2, 1), (3, 7), (16, 256), (64, 50), (500, 1000)]:
            for kernel in (rollout_prefetch_serial, rollout_prefetch_parallel):
                out_r, out_c, out_k = np.zeros(301), np.zeros((301, K)), np.zeros(301, np.int64)
                kernel(*head, lanes, block, out_r, out_c, out_k)
                np.testing.assert_array_equal(out_r, ref.reward, err_msg=f"{lanes}, {block}")
                np.testing.assert_array_equal(out_c, ref.cost, err_msg=f"{lanes}, {block}")


def test_schedules_agree_on_a_large_grid_for_any_thread_count():
    from safemeta_fast.envs import gridworld

    M = gridworld(0.2, size=100)
    pi = np.full((M.n_states, 4), 0.25)
    original = numba.get_num_threads()
    try:
        for cf in (True, False):
            ref = rollout(M, pi, 1_001, 150, seed=4, closed_form=cf, schedule="pairs",
                          parallel=False)
            for threads in (1, numba.config.NUMBA_NUM_THREADS):
                numba.set_num_threads(threads)
                for schedule in ("auto", "prefetch", "pairs"):
                    res = rollout(M, pi, 1_001, 150, seed=4, closed_form=cf, schedule=schedule)
                    np.testing.assert_array_equal(res.reward, ref.reward)
                    np.testing.assert_array_equal(res.cost, ref.cost)
    finally:
        numba.set_num_threads(original)


def test_auto_schedule_prefetches_only_for_tables_beyond_the_cache(monkeypatch, grid03):
    from safemeta_fast.envs import gridworld

    big = gridworld(0.3, size=100)  # about 1.6e5 outcomes * 32 bytes = 5 MB of records
    for M, expect in [(grid03, "rollout_parallel"), (big, "rollout_prefetch_parallel")]:
        calls = {k: _capture(monkeypatch, k) for k in ("rollout_parallel",
                                                       "rollout_prefetch_parallel")}
        rollout(M, np.full((M.n_states, 4), 0.25), 10, 10, seed=0)
        assert {k: len(v) for k, v in calls.items()} == {
            k: int(k == expect) for k in calls}, M.n_states


@pytest.mark.parametrize("bad", ["fast", "Pairs", None, 1, ("pairs",)])
def test_rejects_unknown_schedule(grid03, grid_policies, bad):
    with pytest.raises(ValueError, match=r"schedule is .*; expected 'auto', 'pairs' or 'prefetch'"):
        rollout(grid03, grid_policies[1], 10, 10, seed=0, schedule=bad)


@settings(max_examples=25, deadline=None)
@given(cmdp_and_policy())
def test_prefetch_equals_pairs_on_random_cmdps(case):
    M, pi = case
    for cf in (True, False):
        a = rollout(M, pi, 70, 25, seed=3, closed_form=cf, schedule="pairs")
        b = rollout(M, pi, 70, 25, seed=3, closed_form=cf, schedule="prefetch")
        np.testing.assert_array_equal(a.reward, b.reward)
        np.testing.assert_array_equal(a.cost, b.cost)


# ---------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------

def test_zero_episodes(grid03, grid_policies):
    res = rollout(grid03, grid_policies[1], 0, 600, seed=0)
    assert res.reward.shape == (0,) and res.cost.shape == (0, 1) and res.n_episodes == 0
    mix = rollout(grid03, Mixture(np.stack(grid_policies), [0.5, 0.5]), 0, 10, seed=0)
    assert mix.component.shape == (0,)


def test_zero_horizon(grid03, grid_policies):
    mix = Mixture(np.stack(grid_policies), [0.5, 0.5])
    res = rollout(grid03, mix, 1_000, 0, seed=0)
    np.testing.assert_array_equal(res.reward, 0.0)
    np.testing.assert_array_equal(res.cost, 0.0)
    assert res.horizon == 0
    # the component is still drawn per episode
    assert 0 < res.component.sum() < 1_000


def test_horizon_one_is_one_step_reward():
    rng = np.random.default_rng(3)
    M = random_cmdp(rng, 5, 3, 2, gamma=0.9)
    pi = random_policy(rng, 5, 3)
    res = rollout(M, pi, 20_000, 1, seed=6)
    # every return is one r(s, a) of a pair with nu0(s) pi(a|s) > 0
    pairs = (M.nu0[:, None] * pi) > 0
    assert np.all(np.isin(res.reward, M.r[pairs]))
    assert_mean_close(res.reward, float(M.nu0 @ (pi * M.r).sum(axis=1)), "reward")
    assert_mean_close(res.cost, np.einsum("s,sa,sak->k", M.nu0, pi, M.c), "cost")


def test_gamma_zero_counts_only_first_step():
    rng = np.random.default_rng(4)
    M = random_cmdp(rng, 4, 2, 1, gamma=0.0)
    pi = random_policy(rng, 4, 2)
    for cf in (True, False):
        short = rollout(M, pi, 5_000, 1, seed=9, closed_form=cf)
        long = rollout(M, pi, 5_000, 50, seed=9, closed_form=cf)
        np.testing.assert_array_equal(short.reward, long.reward)
        np.testing.assert_array_equal(short.cost, long.cost)


def test_several_constraints_are_tracked_separately(grid03, grid_policies):
    S, A = grid03.n_states, grid03.n_actions
    c2 = np.concatenate([np.asarray(grid03.c), np.ones((S, A, 1)), -2 * np.asarray(grid03.c)],
                        axis=2)
    M = grid03.replace(c=c2, cost_limit=[1.5, 10.0, 0.0])
    pi = grid_policies[1]
    res = rollout(M, pi, 4_000, 80, seed=12)
    assert res.cost.shape == (4_000, 3)
    # constraint 1 costs 1 per step: C = sum_{t<80} 0.9^t for every episode
    np.testing.assert_allclose(res.cost[:, 1], (1 - 0.9**80) / 0.1, rtol=1e-12)
    np.testing.assert_allclose(res.cost[:, 2], -2 * res.cost[:, 0], rtol=1e-12, atol=1e-12)
    # and constraint 0 matches the single-constraint run of the same seed
    single = rollout(grid03, pi, 4_000, 80, seed=12)
    np.testing.assert_allclose(res.cost[:, 0], single.cost[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(res.reward, single.reward)


@settings(max_examples=25, deadline=None)
@given(cmdp_and_policy())
def test_returns_are_bounded_and_finite(case):
    M, pi = case
    H = 20
    res = rollout(M, pi, 50, H, seed=0)
    bound = sum(M.gamma**t for t in range(H)) * np.abs(M.r).max()
    assert np.all(np.isfinite(res.reward)) and np.all(np.abs(res.reward) <= bound + 1e-9)
    cbound = sum(M.gamma**t for t in range(H)) * np.abs(M.c).max(axis=(0, 1))
    assert np.all(np.abs(res.cost) <= cbound + 1e-9)


def test_result_is_frozen_and_read_only(grid03, grid_policies):
    res = rollout(grid03, grid_policies[1], 10, 10, seed=0)
    assert isinstance(res, RolloutResult)
    with pytest.raises(AttributeError):
        res.seed = 3
    with pytest.raises(ValueError):
        res.reward[0] = 1.0
    with pytest.raises(ValueError):
        res.cost[0, 0] = 1.0


# ---------------------------------------------------------------------------
# validation: one test per error
# ---------------------------------------------------------------------------

def test_rejects_non_cmdp(grid_policies):
    with pytest.raises(TypeError, match="M must be a CMDP"):
        rollout("grid", grid_policies[1], 10, 10, seed=0)


def test_rejects_bad_policy_shape(grid03):
    with pytest.raises(ValueError, match=r"policy must have shape \(S, A\) = \(49, 4\)"):
        rollout(grid03, np.full((49, 3), 1 / 3), 10, 10, seed=0)
    with pytest.raises(ValueError, match="policy must have 2 dimensions"):
        rollout(grid03, np.full((2, 49, 4), 0.25), 10, 10, seed=0)


def test_rejects_negative_probability(grid03):
    pi = np.full((49, 4), 0.25)
    pi[3] = [0.75, 0.5, -0.25, 0.0]
    with pytest.raises(ValueError, match=r"policy\[3, 2\] is -0.25; probabilities must be >= 0"):
        rollout(grid03, pi, 10, 10, seed=0)


def test_rejects_nan_probability(grid03):
    pi = np.full((49, 4), 0.25)
    pi[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"policy\[5, 1\] is nan; every entry must be finite"):
        rollout(grid03, pi, 10, 10, seed=0)


def test_rejects_rows_not_summing_to_one(grid03):
    pi = np.full((49, 4), 0.25)
    pi[7, 0] = 0.3
    with pytest.raises(ValueError, match=r"policy\[7\] sums to 1.05"):
        rollout(grid03, pi, 10, 10, seed=0)


def test_rejects_mixture_shape_mismatch(grid03):
    mix = Mixture(np.full((2, 10, 4), 0.25), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"mixture policies must have shape \(m, S, A\)"):
        rollout(grid03, mix, 10, 10, seed=0)


@pytest.mark.parametrize("name,kw", [("n_episodes", dict(n_episodes=-1)),
                                     ("horizon", dict(horizon=-5))])
def test_rejects_negative_counts(grid03, grid_policies, name, kw):
    args = dict(n_episodes=10, horizon=10) | kw
    with pytest.raises(ValueError, match=f"{name} is -"):
        rollout(grid03, grid_policies[1], args["n_episodes"], args["horizon"], seed=0)


@pytest.mark.parametrize("bad", [2.0, 2.5, "3", True, None])
def test_rejects_non_integer_counts(grid03, grid_policies, bad):
    with pytest.raises(TypeError, match="n_episodes must be an integer"):
        rollout(grid03, grid_policies[1], bad, 10, seed=0)
    with pytest.raises(TypeError, match="horizon must be an integer"):
        rollout(grid03, grid_policies[1], 10, bad, seed=0)


def test_accepts_numpy_integer_counts(grid03, grid_policies):
    res = rollout(grid03, grid_policies[1], np.int32(5), np.int64(3), seed=np.uint8(1))
    assert res.reward.shape == (5,) and res.horizon == 3 and res.seed == 1


@pytest.mark.parametrize("bad,exc", [(1.5, TypeError), ("7", TypeError), (True, TypeError),
                                     (-1, ValueError), (2**63, ValueError)])
def test_rejects_bad_seed(grid03, grid_policies, bad, exc):
    with pytest.raises(exc, match="seed"):
        rollout(grid03, grid_policies[1], 10, 10, seed=bad)


def test_seed_is_keyword_only_and_required(grid03, grid_policies):
    with pytest.raises(TypeError):
        rollout(grid03, grid_policies[1], 10, 10, 0)
    with pytest.raises(TypeError):
        rollout(grid03, grid_policies[1], 10, 10)


@pytest.mark.parametrize("flag", ["closed_form", "parallel"])
def test_rejects_non_bool_flags(grid03, grid_policies, flag):
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        rollout(grid03, grid_policies[1], 10, 10, seed=0, **{flag: 1})


# issue 10: huge sizes are refused before any allocation, naming the argument and the limit
@pytest.mark.parametrize("kwargs, name", [
    (dict(n_episodes=10**13, horizon=10), "n_episodes"),
    (dict(n_episodes=10, horizon=10**13), "horizon"),
])
def test_huge_sizes_are_refused_before_allocating(grid03, kwargs, name):
    from safemeta_fast.rollout import rollout
    from safemeta_fast.validation import MAX_ARRAY_BYTES

    pi = np.full((49, 4), 0.25)
    with pytest.raises(ValueError, match=rf"^{name} is 10000000000000; .* GiB .*limit of "
                                         rf"{MAX_ARRAY_BYTES / 2**30:g} GiB"):
        rollout(grid03, pi, seed=0, **kwargs)


def test_public_allocators_share_the_size_check(grid03):
    from safemeta_fast.baselines.lb_sgd import lb_sgd
    from safemeta_fast.baselines.safe_meta_rl import safe_meta_rl_step
    from safemeta_fast.tasks import Uniform

    pi = np.full((49, 4), 0.25)
    calls = {
        "n": lambda: Uniform([0.0], [1.0]).sample(10**13, seed=0),
        "n_trajectories": lambda: safe_meta_rl_step(grid03, pi, seed=0, n_trajectories=10**7,
                                                    horizon=10**6),
        "n_episodes": lambda: lb_sgd(grid03, pi, n_episodes=10**13, seed=0,
                                     regret_reference=1.0),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name} is \d+; .*MAX_ARRAY_BYTES"):
            call()
