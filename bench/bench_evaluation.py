"""Exact evaluation vs the dense NumPy twin (pytest-benchmark).

Run: ``python -m pytest bench/bench_evaluation.py --benchmark-min-rounds=3``.

Groups put the public function (warm JIT) next to ``tests.twins.evaluate_dense``:

* ``evaluate 7x7``, ``evaluate 50x50``, ``evaluate 100x100``: paper gridworld at noise 0.3,
  a random stochastic policy; the kernel with each solver ("auto" picks dense on 7x7 and
  iterative above; "span" runs its Jacobi budget and falls back to the LU on these slowly
  mixing grids, so it shows its worst case here) and the twin (dense ``np.linalg.solve``
  of the S x S system, with the dense tensor prebuilt). The twin is skipped at 100x100:
  the dense tensor alone needs S*A*S*8 bytes = 3.2 GB (recorded in ``extra_info``).
* ``evaluate_many 7x7 x64``: 64 policies in parallel vs a loop of the twin.

Targets: 50x50 exact evaluation < 10 ms (twin: ~133 ms on a quiet machine).
"""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.evaluation import evaluate, evaluate_many, occupancy
from tests.strategies import random_policy
from tests.twins import evaluate_dense

from ._twins import dense_twin_too_big

SIZES = (7, 50, 100)


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}x{n}")
def task(request):
    n = request.param
    M = gridworld(0.3, n)
    pi = random_policy(np.random.default_rng(n), M.n_states, M.n_actions)
    return n, M, pi


@pytest.mark.parametrize("method", ["auto", "dense", "iterative", "sparse", "span"])
def test_evaluate_kernel(benchmark, task, method):
    n, M, pi = task
    benchmark.group = f"evaluate {n}x{n}"
    if method in ("dense", "span") and n > 50:
        pytest.skip("dense LU of a 10^4 x 10^4 system (0.8 GB, minutes): "
                    "not a sensible solver here")
    ev = evaluate(M, pi, method=method)  # warm the JIT
    res = benchmark(evaluate, M, pi, method=method)
    assert res.reward == ev.reward
    benchmark.extra_info["solver"] = res.method
    benchmark.extra_info["states"] = M.n_states
    if dense_twin_too_big(M):
        benchmark.extra_info["twin"] = f"skipped: {dense_twin_too_big(M)}"


def test_evaluate_twin(benchmark, task):
    n, M, pi = task
    benchmark.group = f"evaluate {n}x{n}"
    if dense_twin_too_big(M):
        pytest.skip(dense_twin_too_big(M))
    P, r, c, nu0 = np.asarray(M.P), np.asarray(M.r), np.asarray(M.c), np.asarray(M.nu0)
    rounds = 3 if n > 10 else 20
    vr, _, _ = benchmark.pedantic(evaluate_dense, args=(P, r, c, nu0, M.gamma, pi),
                                  rounds=rounds, iterations=1)
    assert vr == pytest.approx(evaluate(M, pi).reward, rel=1e-9)
    benchmark.extra_info["solver"] = "dense NumPy twin"


def test_occupancy_kernel(benchmark, task):
    n, M, pi = task
    benchmark.group = f"occupancy {n}x{n}"
    occupancy(M, pi)
    mu = benchmark(occupancy, M, pi)
    assert mu.sum() == pytest.approx(1.0)


N_MANY = 64


@pytest.fixture(scope="module")
def many():
    M = gridworld(0.3)
    rng = np.random.default_rng(0)
    pis = np.stack([random_policy(rng, 49, 4) for _ in range(N_MANY)])
    return M, pis


def test_evaluate_many_kernel(benchmark, many):
    M, pis = many
    benchmark.group = f"evaluate_many 7x7 x{N_MANY}"
    evaluate_many(M, pis)
    res = benchmark(evaluate_many, M, pis)
    assert res.reward.shape == (N_MANY,)


def test_evaluate_many_twin(benchmark, many):
    M, pis = many
    benchmark.group = f"evaluate_many 7x7 x{N_MANY}"
    P, r, c, nu0 = np.asarray(M.P), np.asarray(M.r), np.asarray(M.c), np.asarray(M.nu0)

    def loop():
        return [evaluate_dense(P, r, c, nu0, M.gamma, pi)[0] for pi in pis]

    out = benchmark.pedantic(loop, rounds=5, iterations=1)
    assert len(out) == N_MANY


N_TASKS = 4000


@pytest.fixture(scope="module")
def affine_tasks():
    from safemeta_fast.envs import GridworldFamily

    fam = GridworldFamily()
    rng = np.random.default_rng(1)
    pis = np.stack([random_policy(rng, 49, 4) for _ in range(10)])
    return fam, fam.check_params(fam.sample(N_TASKS, seed=2)), pis


def test_evaluate_affine_batch(benchmark, affine_tasks):
    """10 policies on 4,000 gridworld tasks in one kernel (the calibration's workload)."""
    from safemeta_fast.evaluation import evaluate_affine

    fam, th, pis = affine_tasks
    benchmark.group = f"10 policies on {N_TASKS} tasks"
    model = fam.affine_model()
    evaluate_affine(model, th[:10], pis)
    out = benchmark(evaluate_affine, model, th, pis)
    assert out.shape == (N_TASKS, 10, 2)


def test_evaluate_affine_task_by_task(benchmark, affine_tasks):
    """The same by building every task and calling evaluate_many (the previous path)."""
    fam, th, pis = affine_tasks
    benchmark.group = f"10 policies on {N_TASKS} tasks"
    out = benchmark.pedantic(lambda: [evaluate_many(M, pis).reward for M in fam.build_many(th)],
                             rounds=2, iterations=1)
    assert len(out) == N_TASKS
