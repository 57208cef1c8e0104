"""What the bench suites share: the size limit above which the dense NumPy twins are not run."""

from __future__ import annotations

#: Dense twins allocate P as (S, A, S) float64; above this they are skipped.
TWIN_MAX_BYTES = 2 * 1024**3


def dense_twin_too_big(M) -> str | None:
    """A reason to skip the dense twin on ``M``, or None when it fits."""
    need = M.n_states * M.n_actions * M.n_states * 8
    if need > TWIN_MAX_BYTES:
        return f"dense P needs {need / 1024**3:.1f} GB > {TWIN_MAX_BYTES / 1024**3:.0f} GB"
    return None
