"""What the bench suites share: the size limit above which the dense NumPy twins are not run,
and how a steps-per-second rate is recorded next to the timings."""

from __future__ import annotations

#: Dense twins allocate P as (S, A, S) float64; above this they are skipped.
TWIN_MAX_BYTES = 2 * 1024**3


def dense_twin_too_big(M) -> str | None:
    """A reason to skip the dense twin on ``M``, or None when it fits."""
    need = M.n_states * M.n_actions * M.n_states * 8
    if need > TWIN_MAX_BYTES:
        return f"dense P needs {need / 1024**3:.1f} GB > {TWIN_MAX_BYTES / 1024**3:.0f} GB"
    return None


def record_steps(benchmark, steps: int, mode: str) -> None:
    """Store ``steps``, ``mode`` and (after the run) ``steps_per_s`` (mean round) and
    ``steps_per_s_best`` (fastest round) in ``extra_info``."""
    benchmark.extra_info["steps"] = steps
    benchmark.extra_info["mode"] = mode
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["steps_per_s"] = steps / stats.stats.mean
        # the best round: the least disturbed by other work on a shared machine
        benchmark.extra_info["steps_per_s_best"] = steps / stats.stats.min
