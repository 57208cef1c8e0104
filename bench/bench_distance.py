"""Distance kernels: N = 2,000 tasks of the 7x7 gridworld, sparse and dense paths, vs a NumPy twin.

GB/s = bytes of task data read / time, where an all-pairs pass reads both operands of
every pair (N (N - 1) / 2 pairs x 2 tasks). The reference figure is a plain numpy copy of
a 1 GiB array (read + write bytes / time).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from safemeta_fast.kernels.distance import pairwise_dense, pairwise_sparse

from safemeta_fast.distance import stack_tasks
from safemeta_fast.envs import gridworld

N = 2000


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(0)
    return stack_tasks(gridworld(x) for x in np.clip(rng.normal(0.3, 0.03, N), 0, 0.5))


def _copy_bandwidth() -> float:
    a = np.ones(2**27)  # 1 GiB
    b = np.empty_like(a)
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def _twin_rows(r, c, nu, P, rows):
    """NumPy twin (dense), for the first ``rows`` rows of the matrix."""
    out = np.empty((rows, r.shape[0]))
    for i in range(rows):
        out[i] = np.maximum.reduce([
            np.abs(r - r[i]).max(axis=1), np.abs(c - c[i]).max(axis=1),
            0.5 * np.abs(nu - nu[i]).sum(axis=1),
            (0.5 * np.abs(P - P[i]).sum(axis=2)).max(axis=1)])
    return out


@pytest.mark.benchmark(group="pairwise-2000-gridworld")
def test_bench_pairwise_sparse(benchmark, stack):
    out = np.empty((N, N))
    pairwise_sparse(*stack.kernel_args, out)  # warm
    benchmark.pedantic(pairwise_sparse, args=(*stack.kernel_args, out), rounds=3, iterations=1)
    per_task = stack.nbytes / N
    gbs = N * (N - 1) * per_task / benchmark.stats.stats.min / 1e9
    benchmark.extra_info.update(gb_per_s=gbs, copy_gb_per_s=_copy_bandwidth())


@pytest.mark.benchmark(group="pairwise-2000-gridworld")
def test_bench_pairwise_dense(benchmark, stack):
    r, c, nu, P = stack.dense()
    out = np.empty((N, N))
    pairwise_dense(r[:4], c[:4], nu[:4], P[:4], out[:4, :4])  # warm
    benchmark.pedantic(pairwise_dense, args=(r, c, nu, P, out), rounds=3, iterations=1)
    per_task = r[0].nbytes + c[0].nbytes + nu[0].nbytes + P[0].nbytes
    gbs = N * (N - 1) * per_task / benchmark.stats.stats.min / 1e9
    bw = _copy_bandwidth()
    benchmark.extra_info.update(gb_per_s=gbs, copy_gb_per_s=bw, fraction_of_copy=gbs / bw)


@pytest.mark.benchmark(group="pairwise-2000-gridworld")
def test_bench_pairwise_twin_50_rows(benchmark, stack):
    """The twin on 50 of the 2000 rows (x 40 for the full matrix, x 2 for symmetry)."""
    r, c, nu, P = stack.dense()
    benchmark.pedantic(_twin_rows, args=(r, c, nu, P, 50), rounds=3, iterations=1)
    benchmark.extra_info.update(full_matrix_estimate_s=benchmark.stats.stats.min * N / 50)


@pytest.fixture(scope="module")
def affine_inputs():
    rng = np.random.default_rng(1)
    return rng.normal(size=(57440, 2)), rng.normal(size=(40, 2))


@pytest.mark.benchmark(group="affine-coordinates-57440")
def test_bench_affine_coordinates(benchmark, affine_inputs):
    from safemeta_fast.kernels.distance import affine_coordinates

    x, V = affine_inputs
    out = np.empty((x.shape[0], V.shape[0]))
    affine_coordinates(x, V, out)
    benchmark.pedantic(affine_coordinates, args=(x, V, out), rounds=20, iterations=1)
    np.testing.assert_allclose(out, np.einsum("tk,ek->te", x, V), rtol=1e-14, atol=1e-14)


@pytest.mark.benchmark(group="affine-coordinates-57440")
def test_bench_affine_coordinates_twin(benchmark, affine_inputs):
    x, V = affine_inputs
    benchmark.pedantic(np.einsum, args=("tk,ek->te", x, V), rounds=20, iterations=1)


@pytest.mark.benchmark(group="stack-gridworld-14360")
def test_bench_stack_family_reduced(benchmark):
    """Stacking 14,360 gridworld tasks for the distance kernels: reduced coordinates."""
    from safemeta_fast.distance import stack_family
    from safemeta_fast.envs import GridworldFamily

    fam = GridworldFamily()
    th = fam.sample(14360, seed=0)
    stack_family(fam, th[:2])
    st = benchmark.pedantic(stack_family, args=(fam, th), rounds=5, iterations=1)
    benchmark.extra_info["mib"] = st.nbytes / 2**20


@pytest.mark.benchmark(group="stack-gridworld-14360")
def test_bench_stack_family_built(benchmark):
    """Twin: build every task and stack its arrays."""
    from safemeta_fast.distance import stack_family
    from safemeta_fast.envs import GridworldFamily

    fam = GridworldFamily()
    th = fam.sample(14360, seed=0)
    st = benchmark.pedantic(stack_family, args=(fam, th), kwargs=dict(affine=False), rounds=1,
                            iterations=1)
    benchmark.extra_info["mib"] = st.nbytes / 2**20
