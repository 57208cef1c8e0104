"""Greedy cover kernels vs the NumPy twin, and the paper-scale covering loop."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.covering import _cover_round, build_cover, greedy_cover
from safemeta_fast.envs.families import GridworldFamily

from ._twins import cover_builds_tasks, peak_memory


def _twin(close, max_unc):
    n = close.shape[0]
    unc = np.ones(n, dtype=bool)
    chosen = []
    while unc.sum() > max_unc:
        cnt = (close & unc[None, :]).sum(axis=1)
        cnt[chosen] = -1
        j = int(np.argmax(cnt))
        if cnt[j] <= 0:
            break
        chosen.append(j)
        unc &= ~close[j]
    return chosen


@pytest.fixture(scope="module")
def close():
    x = np.random.default_rng(0).normal(0.3, 0.03, 3000)
    return np.abs(x[:, None] - x[None, :]) <= 0.001


@pytest.mark.benchmark(group="greedy-dense-3000")
def test_bench_greedy_dense(benchmark, close):
    greedy_cover(close[:10, :10])
    res = benchmark.pedantic(greedy_cover, args=(close,), rounds=3, iterations=1)
    assert res.chosen.tolist() == _twin(close, 0.0)


@pytest.mark.benchmark(group="greedy-dense-3000")
def test_bench_greedy_twin(benchmark, close):
    benchmark.pedantic(_twin, args=(close, 0.0), rounds=1, iterations=1)


@pytest.mark.benchmark(group="cover-paper-parameter")
def test_bench_paper_rule_parameter(benchmark):
    fam = GridworldFamily()
    build_cover(fam, eps=0.02, delta=0.3, distance="parameter", seed=0, progress=False)  # warm
    res = benchmark.pedantic(build_cover, args=(fam,),
                             kwargs=dict(eps=0.005, delta=0.05, distance="parameter", seed=0,
                                         progress=False), rounds=1, iterations=1)
    benchmark.extra_info.update(n_cover=res.n_cover, rounds=[r.n_tasks for r in res.rounds])


@pytest.mark.benchmark(group="cover-round-model-14360")
def test_bench_model_round(benchmark):
    """One round of the paper rule (N = 14,360) with the exact model distance."""
    fam = GridworldFamily()
    th = fam.sample(14360, seed=0)
    _cover_round(fam, th[:50], 0.00375, 0.0, "model", 4)  # warm
    out = benchmark.pedantic(_cover_round, args=(fam, th, 0.00375, 3 * 0.05 * 14360, "model", 4),
                             rounds=1, iterations=1)
    benchmark.extra_info.update(n_cover=len(out[0]), n_exact=out[4],
                                n_pairs=14360 * 14359 // 2)


@pytest.mark.benchmark(group="cover-round-model-14360")
def test_bench_model_round_built_tasks(benchmark):
    """Twin of the round above: every task built and stacked (no reduced coordinates)."""
    fam = GridworldFamily()
    th = fam.sample(14360, seed=0)
    args = (fam, th, 0.00375, 3 * 0.05 * 14360, "model", 4)
    with cover_builds_tasks():
        out = benchmark.pedantic(_cover_round, args=args, rounds=1, iterations=1)
    assert out[0].tolist() == _cover_round(*args)[0].tolist()


@pytest.fixture(scope="module")
def grid2000():
    fam = GridworldFamily()
    return fam, fam.sample(2000, seed=0)


@pytest.mark.benchmark(group="cover-round-model-2000")
def test_bench_model_round_2000(benchmark, grid2000):
    """Lazy greedy with window bounds vs the brute force below (same picks)."""
    fam, th = grid2000
    _cover_round(fam, th[:50], 0.00375, 0.0, "model", 4)  # warm
    out = benchmark.pedantic(_cover_round, args=(fam, th, 0.00375, 300.0, "model", 4),
                             rounds=3, iterations=1)
    benchmark.extra_info.update(n_cover=len(out[0]), n_exact=out[4], n_evaluations=out[5])


@pytest.mark.benchmark(group="cover-round-model-2000")
def test_bench_model_round_2000_twin(benchmark, grid2000):
    """Twin: all-pairs distance matrix, then the greedy of SPEC 5 step 3 in NumPy."""
    from safemeta_fast.distance import pairwise_distance

    fam, th = grid2000

    def brute():
        D = pairwise_distance([fam.build(t) for t in th])
        return _twin(D <= 0.00375, 300.0)

    chosen = benchmark.pedantic(brute, rounds=1, iterations=1)
    assert chosen == _cover_round(fam, th, 0.00375, 300.0, "model", 4)[0].tolist()


@pytest.mark.benchmark(group="cover-paper-model")
def test_bench_paper_rule_model(benchmark):
    """The paper's rule (N = 3,590 doubling with fresh samples) with the exact model distance.

    eps = 0.00375 is noise closeness 0.005 (d = 0.75 |dnoise| on the gridworld).
    """
    fam = GridworldFamily()
    _cover_round(fam, fam.sample(50, seed=1), 0.00375, 0.0, "model", 4)  # warm
    kw = dict(eps=0.00375, delta=0.05, distance="model", seed=0, progress=False)
    res = benchmark.pedantic(build_cover, args=(fam,), kwargs=kw, rounds=3, iterations=1)
    assert res.converged
    benchmark.extra_info.update(
        n_cover=res.n_cover,
        rounds=[(r.n_tasks, r.n_chosen, round(r.test_value, 5), r.n_exact_distances,
                 round(r.seconds, 2)) for r in res.rounds],
        n_exact_total=sum(r.n_exact_distances for r in res.rounds),
        **peak_memory(_COVER_SETUP, f"build_cover(GridworldFamily(), **{kw!r})"))


_COVER_SETUP = """
from safemeta_fast.covering import _cover_round, build_cover
from safemeta_fast.envs.families import GridworldFamily
fam = GridworldFamily()
_cover_round(fam, fam.sample(50, seed=1), 0.00375, 0.0, "model", 4)
"""


@pytest.mark.benchmark(group="cover-round-model-2d-14360")
def test_bench_model_round_2d(benchmark):
    """One round (N = 14,360) on a two-parameter family (noise, cost): looser windows."""
    from safemeta_fast.envs.families import GridworldCostFamily
    from safemeta_fast.tasks import Uniform

    fam = GridworldCostFamily(Uniform([0.2, 9.8], [0.4, 10.2]))
    th = fam.sample(14360, seed=0)
    _cover_round(fam, th[:50], 0.02, 0.0, "model", 8)  # warm
    out = benchmark.pedantic(_cover_round, args=(fam, th, 0.02, 3 * 0.05 * 14360, "model", 8),
                             rounds=1, iterations=1)
    benchmark.extra_info.update(n_cover=len(out[0]), n_exact=out[4], n_evaluations=out[5],
                                n_pairs=14360 * 14359 // 2)


@pytest.fixture(scope="module")
def keys5000():
    from safemeta_fast.distance import all_pivot_windows

    keys = np.random.default_rng(0).random((5000, 2))
    return keys, all_pivot_windows(keys, 0.02)


@pytest.mark.benchmark(group="pair-box-5000")
def test_bench_pair_box_counts(benchmark, keys5000):
    from safemeta_fast.kernels.cover import pair_box_counts

    keys, (order, pos, lo, hi) = keys5000
    out = np.empty(5000, dtype=np.int64)
    args = (order[0], pos[0], lo[0], hi[0], pos[1], lo[1], hi[1], out)
    pair_box_counts(*args)
    benchmark(pair_box_counts, *args)


@pytest.mark.benchmark(group="pair-box-5000")
def test_bench_pair_box_twin(benchmark, keys5000):
    keys, _ = keys5000

    def twin():
        near = [np.abs(keys[:, None, p] - keys[None, :, p]) <= 0.02 + 1e-9 for p in range(2)]
        return (near[0] & near[1]).sum(axis=1)

    benchmark.pedantic(twin, rounds=3, iterations=1)
