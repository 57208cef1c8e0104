"""Task constructors (the paper's gridworld, any size), task families, and gymnasium adapters.

The gymnasium names (``CMDPEnv``, ``SafeCMDPEnv``, ``TaskFamilyEnv`` from
:mod:`safemeta_fast.envs.gym`, ``run_env`` from :mod:`safemeta_fast.envs.loop`) are loaded
on first use, so importing this package never needs gymnasium.
"""

from .gridworld import PAPER_SAFE_NOISE, PAPER_TEST_NOISES, gridworld, paper_cost_cells, paper_goal

__all__ = ["gridworld", "paper_goal", "paper_cost_cells", "PAPER_TEST_NOISES", "PAPER_SAFE_NOISE"]
from .families import (
    GridworldCostFamily,
    GridworldFamily,
    RandomCMDPFamily,
    paper_noise_distribution,
)

__all__ += ["GridworldFamily", "GridworldCostFamily", "RandomCMDPFamily",
            "paper_noise_distribution"]

_LAZY = {"CMDPEnv": "gym", "SafeCMDPEnv": "gym", "TaskFamilyEnv": "gym", "run_env": "loop"}
__all__ += list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
