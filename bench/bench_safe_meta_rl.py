"""Safe Meta-RL (BASELINES.md section 4): one adaptation step vs its NumPy twin, and a full run.

Run: ``python -m pytest bench/bench_safe_meta_rl.py --benchmark-min-rounds=3``.

Groups:

* ``safe_meta_rl step 7x7``: one adaptation step on the paper gridworld (test noise
  0.33994760, start pi_s = GDA(beta=0.1) on noise 0.4): 50 padded episodes of 600 steps,
  every-visit advantages, 30 dual iterations resampling 30,000 buffer states each; the
  kernels (``dual_sampling`` "resample" and "exact") next to the NumPy twin of
  ``tests/test_safe_meta_rl.py``;
* ``safe_meta_rl run 40k``: the whole 40,000-episode run (800 steps plus 800 exact
  evaluations), one round; the reference notebook takes ~5.5 min per run
  (BASELINES.md 4d), recorded as ``extra_info["reference_s"]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast import primal_dual
from safemeta_fast.baselines.safe_meta_rl import safe_meta_rl, safe_meta_rl_step
from safemeta_fast.envs import gridworld
from tests.test_safe_meta_rl import twin_step

TEST_NOISE = 0.33994760
REFERENCE_RUN_S = 5.5 * 60


@pytest.fixture(scope="module")
def setup():
    pi_s = np.ascontiguousarray(primal_dual(gridworld(0.4), beta=0.1).policy)
    M = gridworld(TEST_NOISE)
    return M, pi_s, primal_dual(M, beta=0.1).reward


@pytest.mark.parametrize("dual_sampling", ["resample", "exact"])
@pytest.mark.benchmark(group="safe_meta_rl step 7x7")
def test_step_kernel(benchmark, setup, dual_sampling):
    M, pi_s, _ = setup
    safe_meta_rl_step(M, pi_s, seed=10, dual_sampling=dual_sampling)  # warm the JIT
    res = benchmark(safe_meta_rl_step, M, pi_s, seed=10, step=1, dual_sampling=dual_sampling)
    benchmark.extra_info["mode"] = dual_sampling
    assert res.policy.shape == pi_s.shape


@pytest.mark.benchmark(group="safe_meta_rl step 7x7")
def test_step_twin(benchmark, setup):
    M, pi_s, _ = setup
    res = benchmark.pedantic(twin_step, args=(M, pi_s, 10), kwargs=dict(step=1), rounds=3,
                             iterations=1)
    benchmark.extra_info["mode"] = "numpy twin (resample)"
    assert res["policy"].shape == pi_s.shape


@pytest.mark.benchmark(group="safe_meta_rl run 40k")
def test_full_run(benchmark, setup):
    M, pi_s, u_opt = setup
    safe_meta_rl(M, pi_s, n_episodes=100, seed=10, regret_reference=u_opt)  # warm the JIT
    log = benchmark.pedantic(safe_meta_rl, args=(M, pi_s),
                             kwargs=dict(n_episodes=40_000, seed=10, regret_reference=u_opt),
                             rounds=1, iterations=1)
    benchmark.extra_info["reference_s"] = REFERENCE_RUN_S
    benchmark.extra_info["final_regret"] = log.final_regret
    assert log.n_episodes == 40_000 and log.violations == 0
