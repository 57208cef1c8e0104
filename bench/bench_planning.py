"""Value iteration and the primal-dual solver vs their dense NumPy twins (pytest-benchmark).

Run: ``python -m pytest bench/bench_planning.py --benchmark-min-rounds=3``.

* ``value_iteration 7x7`` / ``50x50`` / ``100x100``: paper gridworld at noise 0.3, tol 1e-8,
  the jitted Gauss-Seidel kernel next to ``tests.twins.value_iteration_dense`` (dense
  Jacobi sweeps; its tensor prebuilt). The twin is skipped at 100x100: the dense tensor
  needs 3.2 GB > 2 GB (recorded in ``extra_info``). Target: 50x50 < 20 ms (twin ~560 ms).
* ``solve_mdp <method> 7x7`` / ``50x50``: policy iteration and modified policy iteration
  (sparse path, tol 1e-8) next to ``tests.twins.policy_iteration_dense`` and
  ``modified_policy_iteration_dense``; the twins are skipped where the dense tensor is
  too big, PI at 50x50 (a 2,500 x 2,500 LU per step) runs one round.
* ``primal_dual 7x7 noise 0.4``: the reference's GDA (beta 0.1, 10^4 iterations, <= 50 + 50
  warm-started sweeps) next to ``tests.twins.primal_dual_dense`` (the reference itself
  takes 2-10 s per task).
"""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.planning import DEFAULT_SWEEPS, primal_dual, solve_mdp, value_iteration
from tests.twins import (
    modified_policy_iteration_dense,
    policy_iteration_dense,
    primal_dual_dense,
    value_iteration_dense,
)

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


@pytest.mark.parametrize("method", ["policy_iteration", "modified_policy_iteration"])
def test_solve_mdp_kernel(benchmark, task, method):
    n, M = task
    benchmark.group = f"solve_mdp {method} {n}x{n}"
    if n > 50:
        pytest.skip("covered by value_iteration at this size")
    res = solve_mdp(M, method=method, path="sparse")  # warm the JIT
    rounds = 1 if (method == "policy_iteration" and n > 10) else 10
    benchmark.pedantic(solve_mdp, args=(M,), kwargs={"method": method, "path": "sparse"},
                       rounds=rounds, iterations=1)
    benchmark.extra_info["iterations"] = res.iterations


@pytest.mark.parametrize("method", ["policy_iteration", "modified_policy_iteration"])
def test_solve_mdp_twin(benchmark, task, method):
    n, M = task
    benchmark.group = f"solve_mdp {method} {n}x{n}"
    if n > 50 or dense_twin_too_big(M):
        pytest.skip("dense twin too big or size not benchmarked")
    P, r = np.asarray(M.P), np.asarray(M.r)
    if method == "policy_iteration":
        fn, args = policy_iteration_dense, (P, r, M.gamma)
    else:
        fn, args = modified_policy_iteration_dense, (P, r, M.gamma, DEFAULT_SWEEPS, 1e-8)
    out = benchmark.pedantic(fn, args=args, rounds=1 if n > 10 else 10, iterations=1)
    np.testing.assert_allclose(out[0], value_iteration(M, tol=1e-10).values, atol=2e-8)


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
