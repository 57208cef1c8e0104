"""The paper's experiments: the gridworld comparison of Figure 2 (``paper``)."""

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
    "METHODS",
    "MethodSpec",
    "PaperConfig",
    "PaperRun",
    "derive_seed",
    "format_summary",
    "run_paper",
    "summarise",
]
