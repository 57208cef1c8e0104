"""Rollout kernel vs the per-step NumPy twin (pytest-benchmark).

Run: ``python -m pytest bench/bench_rollout.py --benchmark-min-rounds=3``.

Every case records ``extra_info``: ``steps`` (n_episodes * horizon, counting the steps an
episode with the closed-form finish skips as done), ``steps_per_s`` and the ``mode``
(threads, closed form on/off). Groups put the kernel next to its twin:

* ``rollout 7x7 optimal``: paper gridworld, noise 0.3, greedy optimal policy, H = 600;
* ``rollout 7x7 uniform``: same task, uniform policy;
* ``rollout 50x50 uniform``: 2,500-state gridworld (sparse, no dense tensor), H = 600.

Targets (quiet machine): >= 200 M steps/s on 2 threads on 7x7 with the closed form off,
>= 2000x the twin, >= 100 M steps/s on 50x50.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.rollout import rollout
from tests.twins import rollout_per_step, value_iteration_dense

from ._twins import record_steps

H = 600
N_KERNEL = 20_000
N_TWIN = 20


@pytest.fixture(scope="module")
def grid7():
    M = gridworld(0.3)
    _, pi_opt = value_iteration_dense(np.asarray(M.P), np.asarray(M.r), M.gamma)
    pi_unif = np.full((M.n_states, M.n_actions), 0.25)
    return M, {"optimal": pi_opt, "uniform": pi_unif}


@pytest.fixture(scope="module")
def grid50():
    M = gridworld(0.3, size=50)
    return M, np.full((M.n_states, M.n_actions), 0.25)


def _bench_kernel(benchmark, M, pi, n, threads: int, closed_form: bool):
    original = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rollout(M, pi, 64, H, seed=0, closed_form=closed_form)  # warm the JIT
        res = benchmark(rollout, M, pi, n, H, seed=0, closed_form=closed_form)
    finally:
        numba.set_num_threads(original)
    assert res.reward.shape == (n,)
    record_steps(benchmark, n * H, f"kernel, {threads} thread(s), closed_form={closed_form}")


KERNEL_MODES = [(1, False), (2, False), (1, True), (2, True)]


@pytest.mark.parametrize("which", ["optimal", "uniform"])
@pytest.mark.parametrize("threads,closed_form", KERNEL_MODES)
def test_rollout_7x7_kernel(benchmark, grid7, which, threads, closed_form):
    benchmark.group = f"rollout 7x7 {which}"
    M, pols = grid7
    _bench_kernel(benchmark, M, pols[which], N_KERNEL, threads, closed_form)


@pytest.mark.parametrize("which", ["optimal", "uniform"])
def test_rollout_7x7_twin(benchmark, grid7, which):
    benchmark.group = f"rollout 7x7 {which}"
    M, pols = grid7
    P, r, c, nu0 = np.asarray(M.P), np.asarray(M.r), np.asarray(M.c), np.asarray(M.nu0)
    res = benchmark.pedantic(
        rollout_per_step, args=(P, r, c, nu0, M.gamma, pols[which], N_TWIN, H,
                                np.random.default_rng(0)),
        rounds=3, iterations=1,
    )
    assert res[0].shape == (N_TWIN,)
    record_steps(benchmark, N_TWIN * H, "per-step NumPy twin")


@pytest.mark.parametrize("threads,closed_form", KERNEL_MODES)
def test_rollout_50x50_kernel(benchmark, grid50, threads, closed_form):
    benchmark.group = "rollout 50x50 uniform"
    M, pi = grid50
    _bench_kernel(benchmark, M, pi, N_KERNEL, threads, closed_form)
