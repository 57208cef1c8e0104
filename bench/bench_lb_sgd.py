"""LB-SGD (BASELINES.md section 6): gradient batches vs the NumPy twin, and a full run.

Run: ``python -m pytest bench/bench_lb_sgd.py --benchmark-min-rounds=3``.

Groups:

* ``lb_sgd gradient 7x7``: one gradient batch on the paper's gridworld at noise
  0.33994760 with the start policy pi_LB, trajectories of 600 steps. The kernel runs
  the reference batch of 3,000 trajectories (1 and 2 threads); the twin (NumPy
  sampling plus the reference's cumulative-score form, O(S A) per step) runs
  ``N_TWIN`` trajectories. Compare ``steps_per_s`` in ``extra_info``
  (the reference takes ~60 s per 3,000-trajectory batch in Python).
* ``lb_sgd full run``: the whole 40,000-episode reference schedule (15 policies, 14
  gradients of 500 / 3,000 trajectories, 15 exact evaluations), seed 0; ``extra_info``
  records the final cumulative regret against u_opt = 49.4664 (the reference's own run
  took 560 s and ended at 122,327 for its unseeded draw).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from safemeta_fast.baselines.lb_sgd import lb_sgd, lb_start_policy, policy_gradient_batch
from safemeta_fast.envs import gridworld
from tests.test_lb_sgd import twin_reference_gradient
from tests.test_trajectory import twin_episode

from ._twins import record_steps

H = 600
N_KERNEL = 3000
N_TWIN = 4
U_OPT = 49.4664


@pytest.fixture(scope="module")
def task():
    return gridworld(0.33994760), np.asarray(lb_start_policy(gridworld(0.4)))


@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_kernel(benchmark, task, threads):
    benchmark.group = "lb_sgd gradient 7x7"
    M, pi = task
    original = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        policy_gradient_batch(M, pi, 64, seed=0, horizon=H)  # warm the JIT
        est = benchmark(policy_gradient_batch, M, pi, N_KERNEL, seed=0, horizon=H)
    finally:
        numba.set_num_threads(original)
    assert est.reward_grad.shape == (49, 4)
    record_steps(benchmark, N_KERNEL * H, f"kernel, {threads} thread(s), n={N_KERNEL}")


def _twin_batch(M, pi, n):
    paths = []
    for j in range(n):
        st, ac = twin_episode(M, pi, 0, j, H, False)
        paths.append((st[:H], ac))
    return twin_reference_gradient(M, pi, paths)


def test_gradient_twin(benchmark, task):
    benchmark.group = "lb_sgd gradient 7x7"
    M, pi = task
    g_r, _, _, _ = benchmark.pedantic(_twin_batch, args=(M, pi, N_TWIN), rounds=3, iterations=1)
    assert g_r.shape == (49, 4)
    record_steps(benchmark, N_TWIN * H, f"NumPy twin (reference form), n={N_TWIN}")


def test_full_run(benchmark, task):
    benchmark.group = "lb_sgd full run"
    M, pi = task
    lb_sgd(M, pi, n_episodes=600, first_batch=100, batch=100, horizon=20, seed=0,
           regret_reference=U_OPT)  # warm the JIT
    log = benchmark.pedantic(lb_sgd, args=(M, pi), kwargs=dict(seed=0, regret_reference=U_OPT),
                             rounds=1, iterations=1)
    assert log.n_episodes == 40_000 and log.policy_starts.size == 15
    benchmark.extra_info["final_regret"] = log.final_regret
    benchmark.extra_info["max_cost"] = float(log.exact_cost.max())
    benchmark.extra_info["violations"] = log.violations
