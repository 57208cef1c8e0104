"""Greedy cover kernels vs the NumPy twin, and the paper-scale covering loop."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.covering import _cover_round, build_cover, greedy_cover
from safemeta_fast.envs.families import GridworldFamily


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
