"""Greedy cover against a NumPy twin; the covering loop (SPEC section 5 steps 1-4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safemeta_fast.kernels.cover import fenwick_add, fenwick_build, fenwick_range, pair_box_counts

from safemeta_fast.covering import (
    _cover_round,
    build_cover,
    greedy_cover,
    initial_n,
    stopping_value,
)
from safemeta_fast.distance import (
    all_pivot_windows,
    neighbours_within,
    pairwise_distance,
    stack_family,
)
from safemeta_fast.envs.families import GridworldCostFamily, GridworldFamily, RandomCMDPFamily
from safemeta_fast.tasks import Empirical, Uniform


def greedy_twin(close: np.ndarray, max_uncovered: float):
    """SPEC 5 step 3 literally: close[j, i] = j covers i; ties -> smallest index."""
    n = close.shape[0]
    uncovered = np.ones(n, dtype=bool)
    chosen = []
    while uncovered.sum() > max_uncovered:
        counts = (close & uncovered[None, :]).sum(axis=1)
        counts[chosen] = -1
        j = int(np.argmax(counts))
        if counts[j] <= 0:
            break
        chosen.append(j)
        uncovered &= ~close[j]
    return chosen, n - int(uncovered.sum())


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.floats(0.02, 0.6), st.booleans(), st.booleans(),
       st.floats(0.0, 0.5), st.integers(0, 2**32 - 1))
def test_greedy_dense_matches_twin(n, density, symmetric, reflexive, frac, seed):
    rng = np.random.default_rng(seed)
    A = rng.random((n, n)) < density
    if symmetric:
        A = A | A.T
    if reflexive:
        A[np.arange(n), np.arange(n)] = True
    max_unc = frac * n
    chosen, ncov = greedy_twin(A, max_unc)
    res = greedy_cover(A, max_uncovered=max_unc)
    assert res.chosen.tolist() == chosen
    assert res.n_covered == ncov == int(res.covered.sum())
    if reflexive:
        assert res.complete and n - ncov <= max_unc


def test_greedy_ties_choose_smallest_index():
    A = np.eye(6, dtype=bool)
    assert greedy_cover(A).chosen.tolist() == [0, 1, 2, 3, 4, 5]
    A[4, 5] = A[5, 4] = A[1, 2] = A[2, 1] = True
    assert greedy_cover(A).chosen.tolist() == [1, 4, 0, 3]
    assert greedy_cover(A, max_uncovered=2).chosen.tolist() == [1, 4]


def test_greedy_csr_matches_dense_on_neighbour_lists():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 0.05, 150)
    fam = GridworldFamily(Empirical(np.clip(x, 0, 0.5)))
    tasks = [fam.build([v]) for v in np.clip(x, 0, 0.5)]
    D = pairwise_distance(tasks)
    for eps in (0.002, 0.01, 0.05):
        nb = neighbours_within(tasks, eps)
        for mu in (0.0, 7.5):
            a = greedy_cover(nb, max_uncovered=mu)
            chosen, ncov = greedy_twin(D <= eps, mu)
            assert a.chosen.tolist() == chosen and a.n_covered == ncov


@pytest.mark.parametrize("distance", ["model", "parameter"])
def test_lazy_cover_round_matches_twin(distance):
    fam = GridworldCostFamily(Uniform([0.2, 9.8], [0.4, 10.2]))
    th = fam.sample(120, seed=3)
    D = pairwise_distance([fam.build(t) for t in th])  # equals the parameter distance here
    for eps in (0.02, 0.06, 0.15):
        for mu in (0.0, 12.0):
            chosen, covered, ncov, status, n_exact, n_eval = _cover_round(fam, th, eps, mu,
                                                                          distance, 3)
            tw, tw_cov = greedy_twin(D <= eps, mu)
            assert chosen.tolist() == tw and ncov == tw_cov and status == 0
            # every covered task lies within eps of a chosen task, and only those
            near = (D[chosen] <= eps).any(axis=0)
            np.testing.assert_array_equal(covered, near)
            if distance == "model":
                assert 0 < n_exact < 120 * 119 // 2 + 120 * 5


def test_fenwick_range_counts_match_cumsum():
    rng = np.random.default_rng(7)
    for n in (1, 2, 7, 64, 257):
        bits = (rng.random(n) < 0.6).astype(np.int64)
        fw = fenwick_build(bits)
        for _ in range(3):
            for i in rng.choice(n, size=min(n, 5), replace=False):
                if bits[i]:
                    fenwick_add(fw, i, -1)
                    bits[i] = 0
            for _ in range(30):
                lo, hi = sorted(rng.integers(0, n + 1, 2).tolist())
                assert fenwick_range(fw, lo, hi) == int(bits[lo:hi].sum())


def test_pair_box_counts_match_twin():
    rng = np.random.default_rng(8)
    for n in (1, 5, 200):
        keys = np.round(rng.random((n, 3)), 2)  # ties in the keys
        for eps in (0.0, 0.05, 0.3):
            order, pos, lo, hi = all_pivot_windows(keys, eps)
            near = [np.abs(keys[:, None, p] - keys[None, :, p]) <= eps + 1e-9 for p in range(3)]
            for p, q in ((0, 1), (0, 2), (2, 1)):
                out = np.empty(n, dtype=np.int64)
                pair_box_counts(order[p], pos[p], lo[p], hi[p], pos[q], lo[q], hi[q], out)
                np.testing.assert_array_equal(out, (near[p] & near[q]).sum(axis=1))


def _built_only(monkeypatch, fam):
    """Make the cover build every task of ``fam`` (no affine reduced coordinates)."""
    monkeypatch.setattr(fam, "affine_model_on", lambda thetas: None)
    return fam


def _lazy_vs_brute(fam, th, eps_list, mu_list, n_pivots=4):
    # the brute force uses the distances the cover uses (reduced coordinates for an affine
    # family, else the built tasks): with ties at eps the two differ by rounding only
    D = pairwise_distance(stack_family(fam, th))
    for eps in eps_list:
        close = D <= eps
        for mu in mu_list:
            chosen, covered, ncov, status, n_exact, n_eval = _cover_round(
                fam, th, eps, mu, "model", n_pivots)
            ref = greedy_cover(close, max_uncovered=mu)
            assert chosen.tolist() == ref.chosen.tolist()
            assert ncov == ref.n_covered and status == 0
            np.testing.assert_array_equal(covered, ref.covered)
            np.testing.assert_array_equal(covered, close[chosen].any(axis=0))
            assert N_pairs(th) > n_exact - len(th) * (n_pivots + 1) >= 0
    return D


def N_pairs(th):
    return len(th) * (len(th) - 1) // 2


@pytest.mark.parametrize("affine", [True, False], ids=["reduced", "built"])
def test_lazy_cover_equals_brute_force_greedy_gridworld_1500(affine, monkeypatch):
    # rounded noises: many exact distance ties at eps and many count ties (smallest index wins)
    fam = GridworldFamily() if affine else _built_only(monkeypatch, GridworldFamily())
    th = np.round(fam.sample(1500, seed=11), 3)
    assert stack_family(fam, th[:2]).reduced == affine
    D = _lazy_vs_brute(fam, th, [0.75 * 0.002, 0.75 * 0.005, 0.75 * 0.02], [0.0, 0.15 * 1500])
    # the twin (SPEC step 3 verbatim) on one setting
    chosen = _cover_round(fam, th, 0.75 * 0.005, 225.0, "model", 4)[0]
    assert chosen.tolist() == greedy_twin(D <= 0.75 * 0.005, 225.0)[0]


@pytest.mark.parametrize("affine", [True, False], ids=["reduced", "built"])
def test_lazy_cover_equals_brute_force_greedy_random_family(affine, monkeypatch):
    # a 2-parameter family whose pivot windows are loose: many exact counts, batched
    fam = RandomCMDPFamily(6, 3, radius=0.3, base_seed=4)
    if not affine:
        _built_only(monkeypatch, fam)
    th = fam.sample(800, seed=5)
    assert stack_family(fam, th[:2]).reduced == affine
    D = _lazy_vs_brute(fam, th, [0.01, 0.03, 0.08], [0.0, 0.15 * 800], n_pivots=2)
    assert (D <= 0.03).sum() > 5 * 800  # non-trivial neighbourhoods


def test_initial_n_and_stopping_value():
    assert initial_n(0.05) == math.ceil(math.log(0.05) ** 2 / 0.05 ** 2) == 3590
    assert initial_n(0.05, "authors") == 1198
    assert stopping_value(10, 100, 0.1) == pytest.approx(math.sqrt(10 * math.log(2000) / 90))
    assert stopping_value(5, 5, 0.1) == math.inf
    assert stopping_value(6, 5, 0.1) == math.inf
    with pytest.raises(ValueError, match="n_rule"):
        initial_n(0.05, "mine")
    with pytest.raises(ValueError, match=r"delta is 1.0"):
        initial_n(1.0)


def test_build_cover_paper_rule_doubles_with_fresh_samples():
    fam = GridworldFamily()
    res = build_cover(fam, eps=0.01, delta=0.15, distance="parameter", seed=1, progress=False)
    n0 = initial_n(0.15)
    Ns = [r.n_tasks for r in res.rounds]
    assert Ns == [n0 * 2 ** k for k in range(len(Ns))]
    for r in res.rounds:
        assert r.n_uncovered <= 3 * 0.15 * r.n_tasks
        assert r.test_value == pytest.approx(stopping_value(r.n_chosen, r.n_tasks, 0.15))
        assert r.passed == (r.test_value <= 0.15)
    assert [r.passed for r in res.rounds] == [False] * (len(Ns) - 1) + [True]
    assert res.converged and res.params.shape == (Ns[-1], 1)
    # every covered task is within eps of a chosen task; the rest are few
    d = np.abs(res.params[:, None, 0] - res.chosen_params[None, :, 0]).min(axis=1)
    np.testing.assert_array_equal(res.covered, d <= 0.01)
    np.testing.assert_array_equal(res.chosen_params, res.params[res.chosen_indices])
    # same seed, same result; fresh samples each round
    res2 = build_cover(fam, eps=0.01, delta=0.15, distance="parameter", seed=1, progress=False)
    np.testing.assert_array_equal(res.params, res2.params)
    assert res.seed == 1


def test_build_cover_authors_rule_appends():
    fam = GridworldFamily()
    with pytest.warns(RuntimeWarning, match="max_rounds=3"):
        res = build_cover(fam, eps=0.004, delta=0.1, distance="parameter", n_rule="authors",
                          seed=2, progress=False, max_rounds=3)
    n0 = initial_n(0.1, "authors")
    assert [r.n_tasks for r in res.rounds] == [n0 * (k + 1) for k in range(len(res.rounds))]


def test_build_cover_gives_up_with_warning_when_test_cannot_pass():
    fam = GridworldFamily(Uniform(0.0, 0.5))
    with pytest.warns(RuntimeWarning, match="did not pass within max_rounds=2"):
        res = build_cover(fam, eps=0.0, delta=0.2, distance="parameter", seed=0, progress=False,
                          max_rounds=2)
    assert not res.converged and len(res.rounds) == 2
    n0 = initial_n(0.2)
    assert [r.n_tasks for r in res.rounds] == [n0, 2 * n0]
    r = res.rounds[0]  # eps = 0: each task covers itself only
    assert r.n_chosen == n0 - math.floor(3 * 0.2 * n0) and not r.passed


def test_build_cover_model_distance_small():
    fam = GridworldFamily()
    res = build_cover(fam, eps=0.75 * 0.02, delta=0.2, distance="model", seed=3, progress=False)
    assert res.converged
    assert all(r.n_exact_distances > 0 for r in res.rounds)
    # model eps 0.015 is noise eps 0.02: the same cover as the parameter closeness
    res_p = build_cover(fam, eps=0.02, delta=0.2, distance="parameter", seed=3, progress=False)
    np.testing.assert_array_equal(res.chosen_indices, res_p.chosen_indices)


def test_build_cover_validation():
    fam = GridworldFamily()
    with pytest.raises(ValueError, match="distance is 'l2'"):
        build_cover(fam, eps=0.01, delta=0.1, distance="l2", progress=False)
    with pytest.raises(ValueError, match="delta is 0.0"):
        build_cover(fam, eps=0.01, delta=0.0, progress=False)
    with pytest.raises(ValueError, match="n_pivots is 0"):
        build_cover(fam, eps=0.01, delta=0.1, n_pivots=0, progress=False)
    with pytest.raises(TypeError, match="family must be a TaskFamily"):
        build_cover(object(), eps=0.01, delta=0.1, progress=False)
    from safemeta_fast.envs.families import RandomCMDPFamily
    with pytest.raises(ValueError, match="no parameter closeness"):
        build_cover(RandomCMDPFamily(3, 2), eps=0.01, delta=0.1, distance="parameter",
                    progress=False)


@pytest.mark.slow
def test_paper_check_parameter_closeness():
    res = build_cover(GridworldFamily(), eps=0.005, delta=0.05, distance="parameter", seed=0,
                      progress=False)
    assert res.converged
    assert 7 <= res.n_cover <= 13
    assert res.chosen_params.min() >= 0.25 and res.chosen_params.max() <= 0.35
    assert res.rounds[0].n_tasks == 3590


@pytest.mark.slow
def test_paper_rule_model_distance_equals_noise_check():
    """The paper's rule at full scale (N up to 57,440) with the exact model distance.

    d = 0.75 |dnoise| on the gridworld, so model eps 0.00375 must give exactly the cover
    of the authors' noise check 0.005, round by round.
    """
    fam = GridworldFamily()
    res = build_cover(fam, eps=0.00375, delta=0.05, distance="model", seed=0, progress=False)
    res_p = build_cover(fam, eps=0.005, delta=0.05, distance="parameter", seed=0, progress=False)
    assert res.converged
    assert [(r.n_tasks, r.n_chosen, r.n_uncovered) for r in res.rounds] == \
        [(r.n_tasks, r.n_chosen, r.n_uncovered) for r in res_p.rounds]
    np.testing.assert_array_equal(res.chosen_indices, res_p.chosen_indices)
    np.testing.assert_array_equal(res.covered, res_p.covered)
    N = res.rounds[-1].n_tasks
    assert res.rounds[-1].n_exact_distances < 20 * N  # far below N^2 / 2


def test_lazy_cover_same_result_for_any_batching_and_thread_count():
    import numba

    fam = RandomCMDPFamily(5, 2, radius=0.3, base_seed=1)
    th = fam.sample(400, seed=2)
    ref = _cover_round(fam, th, 0.03, 0.0, "model", 2, 1, 10**9)  # serial, one at a time
    n0 = numba.get_num_threads()
    try:
        for threads in sorted({1, n0}):
            numba.set_num_threads(threads)
            for batch_size, par_min in ((1, 1), (8, 1), (8, 2048), (64, 1)):
                out = _cover_round(fam, th, 0.03, 0.0, "model", 2, batch_size, par_min)
                assert out[0].tolist() == ref[0].tolist()
                np.testing.assert_array_equal(out[1], ref[1])
                assert out[2:4] == ref[2:4]
    finally:
        numba.set_num_threads(n0)


@pytest.mark.slow
def test_paper_rule_model_distance_same_cover_from_parameters_and_built_tasks(monkeypatch):
    """The paper's rule at full scale (N up to 57,440, seed 0): the reduced coordinates of
    the affine gridworld family give the cover of the built tasks, round by round."""
    fam = GridworldFamily()
    kw = dict(eps=0.00375, delta=0.05, distance="model", seed=0, progress=False)
    fast = build_cover(fam, **kw)
    slow = build_cover(_built_only(monkeypatch, GridworldFamily()), **kw)
    assert fast.converged and len(fast.rounds) == 5
    assert [(r.n_tasks, r.n_chosen, r.n_uncovered, r.test_value) for r in fast.rounds] == \
        [(r.n_tasks, r.n_chosen, r.n_uncovered, r.test_value) for r in slow.rounds]
    np.testing.assert_array_equal(fast.chosen_indices, slow.chosen_indices)
    np.testing.assert_array_equal(fast.chosen_params, slow.chosen_params)
    np.testing.assert_array_equal(fast.covered, slow.covered)
