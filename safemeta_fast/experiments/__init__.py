"""The paper's experiments: the gridworld comparison of Figure 2 (``paper``) and the
paper's open checks (``checks``: ``safemeta experiment NAME``)."""

from .checks import EXPERIMENTS, run_experiment
from .paper import (
    METHODS,
    MethodSpec,
    PaperConfig,
    PaperRun,
    derive_seed,
    format_summary,
    run_paper,
    summarise,
)

__all__ = [
    "EXPERIMENTS",
    "run_experiment",
    "METHODS",
    "MethodSpec",
    "PaperConfig",
    "PaperRun",
    "derive_seed",
    "format_summary",
    "run_paper",
    "summarise",
]
