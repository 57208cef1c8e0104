"""The training recipe on the paper's gridworld (cover + O_l + O_s + verification), warm JIT.

Paper settings: delta 0.05, the paper's rule (N = 3,590 doubling to 57,440), pi_s = LP
optimum of noise 0.4, verification of pi_s on every sampled task, no calibration
(``calibrate`` is benched on its own). Three variants:

- ``parameter``: the authors' noise closeness 0.005;
- ``model``: the exact model distance at eps 0.00375 (= noise 0.005 on the gridworld),
  computed from the parameters (the family is affine: reduced coordinates, no task built);
- ``model, built tasks``: the same with the cover building and stacking every sampled
  task (the path before the reduced coordinates, and the one of non-affine families).

Each variant also runs once in a fresh subprocess (warm numba cache, a small warm-up
recipe first) to record its memory in ``extra_info``: ``rss_before_gib`` (after imports
and the warm-up) and ``peak_rss_gib`` (the peak resident set during the recipe).
The two model variants give the same policy set bit for bit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ._twins import cover_builds_tasks, peak_memory

RECIPES = {"parameter": dict(eps=0.005, distance="parameter"),
           "model": dict(eps=0.00375, distance="model")}
_RESULTS: dict = {}


def run_recipe(name: str, built_tasks: bool = False, *, eps=None, delta: float = 0.05):
    """The paper's training recipe ``name`` ("parameter" or "model"); returns the PolicySet."""
    from safemeta_fast.envs import GridworldFamily, gridworld
    from safemeta_fast.training import train

    kw = dict(RECIPES[name])
    if eps is not None:
        kw["eps"] = eps
    with cover_builds_tasks(built_tasks), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the precondition and tail warnings of the recipe
        return train(GridworldFamily(), delta=delta, safe_policy=gridworld(0.4), seed=0,
                     progress=False, calibration=False, **kw)


def warm_up() -> None:
    for name in RECIPES:
        run_recipe(name, eps=0.02, delta=0.3)


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up()


def _bench(benchmark, name, built_tasks, rounds):
    ps = benchmark.pedantic(run_recipe, args=(name, built_tasks), rounds=rounds, iterations=1)
    key = name + (" built" if built_tasks else "")
    _RESULTS[key] = (benchmark.stats.stats.min, ps)
    benchmark.extra_info.update(
        n_cover=ps.n_policies, n_verified=ps.info["n_verified_tasks"],
        rounds=[r["n_tasks"] for r in ps.rounds],
        n_exact_distances=sum(r["n_exact_distances"] for r in ps.rounds),
        **peak_memory("from bench.bench_training import run_recipe, warm_up\nwarm_up()",
                      f"run_recipe({name!r}, {built_tasks!r})"))
    return ps


@pytest.mark.benchmark(group="train-paper-parameter")
def test_bench_train_paper_parameter(benchmark):
    ps = _bench(benchmark, "parameter", False, rounds=3)
    assert ps.info["n_verified_tasks"] == 57440 + ps.n_policies


@pytest.mark.benchmark(group="train-paper-model")
def test_bench_train_paper_model(benchmark):
    ps = _bench(benchmark, "model", False, rounds=3)
    if "parameter" in _RESULTS:  # d = 0.75 |dnoise|: the noise check's cover
        np.testing.assert_array_equal(ps.cover_params, _RESULTS["parameter"][1].cover_params)
        benchmark.extra_info["vs_parameter_recipe"] = (
            benchmark.stats.stats.min / _RESULTS["parameter"][0])


@pytest.mark.benchmark(group="train-paper-model")
def test_bench_train_paper_model_built_tasks(benchmark):
    """Twin: the cover builds and stacks all 111,000 sampled tasks (5 rounds)."""
    ps = _bench(benchmark, "model", True, rounds=1)
    if "model" in _RESULTS:
        t_fast, fast = _RESULTS["model"]
        for field in ("policies", "u", "v", "safe_policy", "cover_params"):
            np.testing.assert_array_equal(getattr(ps, field), getattr(fast, field))
        assert ps.xi_hat == fast.xi_hat
        benchmark.extra_info["slowdown_vs_reduced"] = benchmark.stats.stats.min / t_fast
