"""Value iteration and the primal-dual solver vs their dense NumPy twins (pytest-benchmark).

Run: ``python -m pytest bench/bench_planning.py --benchmark-min-rounds=3``.

* ``value_iteration 7x7`` / ``50x50`` / ``100x100``: paper gridworld at noise 0.3, tol 1e-8,
  the jitted Gauss-Seidel kernel next to ``tests.twins.value_iteration_dense`` (dense
  Jacobi sweeps; its tensor prebuilt). The twin is skipped at 100x100: the dense tensor
  needs 3.2 GB > 2 GB (recorded in ``extra_info``). Target: 50x50 < 20 ms (twin ~560 ms).
* ``primal_dual 7x7 noise 0.4``: the reference's GDA (beta 0.1, 10^4 iterations, <= 50 + 50
  warm-started sweeps) next to ``tests.twins.primal_dual_dense`` (the reference itself
  takes 2-10 s per task).
"""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.planning import primal_dual, value_iteration
from tests.twins import primal_dual_dense, value_iteration_dense

from ._twins import dense_twin_too_big



@pytest.fixture(scope="module", params=(7, 50, 100), ids=lambda n: f"{n}x{n}")
def task(request):
    n = request.param
    return n, gridworld(0.3, n)


def test_value_iteration_kernel(benchmark, task):
    n, M = task
    benchmark.group = f"value_iteration {n}x{n}"
    value_iteration(M)  # warm the JIT
    res = benchmark(value_iteration, M, tol=1e-8)
    benchmark.extra_info["iterations"] = res.iterations
    benchmark.extra_info["error_bound"] = res.error_bound
    if dense_twin_too_big(M):
        benchmark.extra_info["twin"] = f"skipped: {dense_twin_too_big(M)}"


def test_value_iteration_twin(benchmark, task):
    n, M = task
    benchmark.group = f"value_iteration {n}x{n}"
    if dense_twin_too_big(M):
        pytest.skip(dense_twin_too_big(M))
    P, r = np.asarray(M.P), np.asarray(M.r)
    rounds = 1 if n > 10 else 10
    v, _ = benchmark.pedantic(value_iteration_dense, args=(P, r, M.gamma),
                              kwargs={"tol": 1e-8}, rounds=rounds, iterations=1)
    np.testing.assert_allclose(v, value_iteration(M, tol=1e-8).values, atol=3e-8)


@pytest.fixture(scope="module")
def grid04():
    return gridworld(0.4)


def test_primal_dual_kernel(benchmark, grid04):
    benchmark.group = "primal_dual 7x7 noise 0.4"
    primal_dual(grid04, n_iter=2)  # warm the JIT
    res = benchmark.pedantic(primal_dual, args=(grid04,), rounds=3, iterations=1)
    assert res.reward == pytest.approx(44.915306, abs=5e-7)
    benchmark.extra_info["sweeps"] = res.sweeps


def test_primal_dual_twin(benchmark, grid04):
    benchmark.group = "primal_dual 7x7 noise 0.4"
    M = grid04
    P, r, c, b, nu0 = (np.asarray(x) for x in (M.P, M.r, M.c, M.cost_limit, M.nu0))
    pi, xi, _, _ = benchmark.pedantic(primal_dual_dense, args=(P, r, c, b, nu0, M.gamma),
                                      rounds=1, iterations=1)
    assert xi[0] > 0
