"""Task constructors: the paper's gridworld (any size)."""

from .gridworld import PAPER_SAFE_NOISE, PAPER_TEST_NOISES, gridworld, paper_cost_cells, paper_goal

__all__ = ["gridworld", "paper_goal", "paper_cost_cells", "PAPER_TEST_NOISES", "PAPER_SAFE_NOISE"]
from .families import GridworldCostFamily, GridworldFamily, RandomCMDPFamily, paper_noise_distribution

__all__ += ["GridworldFamily", "GridworldCostFamily", "RandomCMDPFamily", "paper_noise_distribution"]
