"""Rollout kernel vs the per-step NumPy twin (pytest-benchmark).

Run: ``python -m pytest bench/bench_rollout.py --benchmark-min-rounds=3``.

Every case records ``extra_info``: ``steps`` (n_episodes * horizon, counting the steps an
episode with the closed-form finish skips as done), ``steps_per_s`` and the ``mode``
(threads, closed form on/off). Groups put the kernel next to its twin:

* ``rollout 7x7 optimal``: paper gridworld, noise 0.3, greedy optimal policy, H = 600;
* ``rollout 7x7 uniform``: same task, uniform policy;
* ``rollout 50x50 uniform``: 2,500-state gridworld (sparse, no dense tensor), H = 600.
* ``rollout states S`` for S = 49, 2,500, 10^4, 99,856 (grid sides 7, 50, 100, 316):
  steps/s against the state count, uniform policy, H = 600, closed form off, for both
  schedules (``pairs``: two episodes in lockstep per thread, the only schedule before
  issue 13; ``prefetch``: 16 lanes per thread with prefetched tables) on 1 and 2
  threads, next to the sequential records twin (tests/twins.py, pure Python, the same
  streams). ``extra_info`` adds ``n_states``, ``schedule`` and ``table_mb`` (the bucket
  records, 32 bytes per outcome).

Targets (quiet machine): >= 200 M steps/s on 2 threads on 7x7 with the closed form off,
>= 2000x the twin, >= 100 M steps/s on 50x50, >= 60 M steps/s at 10^4 states.
"""

from __future__ import annotations

import importlib

import numba
import numpy as np
import pytest

from safemeta_fast.envs import gridworld
from safemeta_fast.rollout import rollout
from tests.twins import rollout_per_step, rollout_records_twin, value_iteration_dense

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


def _bench_kernel(benchmark, M, pi, n, threads: int, closed_form: bool, schedule="auto"):
    original = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rollout(M, pi, 64, H, seed=0, closed_form=closed_form, schedule=schedule)  # warm the JIT
        res = benchmark(rollout, M, pi, n, H, seed=0, closed_form=closed_form, schedule=schedule)
    finally:
        numba.set_num_threads(original)
    assert res.reward.shape == (n,)
    record_steps(benchmark, n * H, f"kernel, {threads} thread(s), closed_form={closed_form}, "
                                   f"schedule={schedule}")


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


# --- steps/s against the state count (issue 13) ----------------------------------------

SIDES = [7, 50, 100, 316]
N_TWIN_RECORDS = 10


@pytest.fixture(scope="module")
def grids():
    cache = {}

    def get(side):
        if side not in cache:
            M = gridworld(0.3, size=side)
            cache[side] = M, np.full((M.n_states, M.n_actions), 0.25)
        return cache[side]

    return get


def _table_mb(M, pi) -> float:
    from safemeta_fast.kernels.rollout import table_size

    return 32 * table_size(pi[None], np.ascontiguousarray(M.succ_ptr)) / 1e6


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("schedule", ["pairs", "prefetch"])
@pytest.mark.parametrize("threads", [1, 2])
def test_rollout_states_kernel(benchmark, grids, side, schedule, threads):
    M, pi = grids(side)
    benchmark.group = f"rollout states {M.n_states}"
    benchmark.extra_info.update(n_states=M.n_states, schedule=schedule,
                                table_mb=round(_table_mb(M, pi), 2))
    _bench_kernel(benchmark, M, pi, N_KERNEL, threads, False, schedule)


@pytest.mark.parametrize("side", SIDES)
def test_rollout_states_twin(benchmark, grids, monkeypatch, side):
    """The sequential records twin on the tables rollout() builds (same streams)."""
    M, pi = grids(side)
    benchmark.group = f"rollout states {M.n_states}"
    front = importlib.import_module("safemeta_fast.rollout")
    calls = []
    kernel = front.rollout_serial
    monkeypatch.setattr(front, "rollout_serial", lambda *a: calls.append(a) or kernel(*a))
    ref = rollout(M, pi, N_TWIN_RECORDS, H, seed=0, closed_form=False, parallel=False,
                  schedule="pairs")
    args = calls[0]
    S, A = M.n_states, M.n_actions
    r, c = np.asarray(M.r).reshape(-1), np.asarray(M.c).reshape(S * A, -1)
    res = benchmark.pedantic(rollout_records_twin,
                             args=(*args[:8], r, c, *args[10:16], N_TWIN_RECORDS),
                             rounds=3, iterations=1)
    np.testing.assert_array_equal(res[0], ref.reward)
    benchmark.extra_info.update(n_states=M.n_states, schedule="records twin")
    record_steps(benchmark, N_TWIN_RECORDS * H, "sequential records twin (pure Python)")
