"""Test-time phase: fused kernel vs the per-episode Python twin, and ask/tell overhead.

Run: ``python -m pytest bench/bench_adaptation.py --benchmark-min-rounds=3``.

Groups (``extra_info["per_episode_s"]`` makes the kernel and the twin comparable):

* ``adaptation 7x7 fused``: the paper gridworld (test noise 0.31), reference profile,
  K = 40,000 episodes, H = 600, 1 thread, warm JIT, exact audit included (the twin:
  the pure-Python decision twin of the tests driving the per-step NumPy rollout twin,
  a few episodes only). Target < 0.5 s per task.
* ``adaptation ask/tell``: ``ask()`` + ``tell()`` per episode with returns given (no
  rollout), against the pure-Python decision twin alone.
* ``adaptation certified vs reference``: one fused run (K = 40,000, H = 600, 1 thread,
  exact audit) of the certified profile (control variate on) and of the reference profile
  on the same calibrated policy set and test task. Target: certified within 2x.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from safemeta_fast.adaptation import SafeAdapter
from safemeta_fast.envs import gridworld
from tests.test_adaptation import TwinAdapter, _policy_set, _twin_of
from tests.twins import rollout_per_step

K_EP = 40_000
H = 600
N_TWIN = 10
N_ASK = 5_000


@pytest.fixture(scope="module")
def setup():
    ps = _policy_set()
    M = gridworld(0.31)
    return ps, M


def _per_episode(benchmark, n):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["per_episode_s"] = stats.stats.mean / n
    benchmark.extra_info["episodes"] = n


def test_fused_kernel(benchmark, setup):
    benchmark.group = "adaptation 7x7 fused"
    ps, M = setup
    ad = SafeAdapter(ps, profile="reference", n_episodes=K_EP, horizon=H, seed=0)
    vstar = 51.35
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        ad.run(M, regret_reference=vstar)  # warm the JIT
        log = benchmark(ad.run, M, regret_reference=vstar)
    finally:
        numba.set_num_threads(before)
    assert log.n_episodes == K_EP
    _per_episode(benchmark, K_EP)


def _twin_run(ps, M, ad, n, rng):
    twin = _twin_of(ad)
    P, r, c, nu0 = np.asarray(M.P), np.asarray(M.r), np.asarray(M.c), np.asarray(M.nu0)
    for _ in range(n):
        a = twin.alpha if twin.l >= 0 else 0.0
        pi = ps.policies[twin.l] if (twin.l >= 0 and rng.random() < a) else ps.safe_policy
        R, C = rollout_per_step(P, r, c, nu0, M.gamma, pi, 1, H, rng)
        twin.tell(float(R[0]), C[0])
    return twin


def test_fused_twin(benchmark, setup):
    benchmark.group = "adaptation 7x7 fused"
    ps, M = setup
    ad = SafeAdapter(ps, profile="reference", n_episodes=K_EP, horizon=H, seed=0)
    twin = benchmark.pedantic(_twin_run, args=(ps, M, ad, N_TWIN, np.random.default_rng(0)),
                              rounds=3, iterations=1)
    assert isinstance(twin, TwinAdapter)
    _per_episode(benchmark, N_TWIN)


def _ask_tell(ad, R, C):
    for k in range(R.size):
        ad.ask()
        ad.tell(R[k], C[k])
    return ad


def test_ask_tell(benchmark, setup):
    benchmark.group = "adaptation ask/tell"
    ps, M = setup
    log = SafeAdapter(ps, profile="reference", n_episodes=N_ASK, seed=0).run(M, exact=False)
    R, C = np.array(log.reward), np.array(log.cost)
    _ask_tell(SafeAdapter(ps, profile="reference", n_episodes=N_ASK, seed=0), R, C)  # warm
    ad = benchmark.pedantic(
        lambda: _ask_tell(SafeAdapter(ps, profile="reference", n_episodes=N_ASK, seed=0), R, C),
        rounds=3, iterations=1)
    assert ad.episode == N_ASK
    _per_episode(benchmark, N_ASK)


def test_ask_tell_twin(benchmark, setup):
    benchmark.group = "adaptation ask/tell"
    ps, M = setup
    ad = SafeAdapter(ps, profile="reference", n_episodes=N_ASK, seed=0)
    log = ad.run(M, exact=False)
    R, C = np.array(log.reward), np.array(log.cost)

    def go():
        twin = _twin_of(ad)
        for k in range(N_ASK):
            twin.tell(R[k], C[k])
        return twin

    twin = benchmark.pedantic(go, rounds=3, iterations=1)
    assert twin.k == N_ASK
    _per_episode(benchmark, N_ASK)


@pytest.fixture(scope="module")
def paper_tasks():
    from safemeta_fast.envs import PAPER_TEST_NOISES

    return [gridworld(x) for x in PAPER_TEST_NOISES]


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_ten_paper_tasks(benchmark, setup, paper_tasks, threads):
    """The 10 paper test tasks, K = 40,000, one seed each, through ``run_tasks``
    (tables, exact values and LP optimum per task included). Target < 5 s on 2 cores."""
    benchmark.group = "adaptation 10 paper tasks"
    ps, _ = setup
    ad = SafeAdapter(ps, profile="reference", n_episodes=K_EP, horizon=H, seed=0)
    refs = [50.0] * len(paper_tasks)  # V* does not change the work; skip the 10 LPs
    ad.run_tasks(paper_tasks[:2], regret_references=refs[:2], threads=threads)  # warm
    benchmark.extra_info["threads"] = threads
    benchmark(ad.run_tasks, paper_tasks, regret_references=refs, threads=threads)


@pytest.fixture(scope="module")
def calibrated(setup):
    from safemeta_fast.calibration import calibrate
    from safemeta_fast.envs import GridworldFamily

    ps, M = setup
    return calibrate(ps, GridworldFamily(), seed=1, progress=False), M


@pytest.mark.parametrize("profile", ["certified", "reference"])
def test_fused_certified_vs_reference(benchmark, calibrated, profile):
    benchmark.group = "adaptation certified vs reference"
    ps, M = calibrated
    ad = SafeAdapter(ps, profile=profile, n_episodes=K_EP, horizon=H, seed=0)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        ad.run(M, regret_reference=51.35)  # warm the JIT
        log = benchmark(ad.run, M, regret_reference=51.35)
    finally:
        numba.set_num_threads(before)
    assert log.n_episodes == K_EP
    benchmark.extra_info["profile"] = profile
    _per_episode(benchmark, K_EP)
