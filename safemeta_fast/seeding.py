"""Seed handling shared by every public function that draws random numbers.

Public functions take ``seed: int | numpy.random.Generator | None`` (keyword-only),
resolve it once with :func:`resolve_seed` into a 64-bit integer, record that integer
in their result, and hand it to the kernels, which derive one independent stream per
unit of parallel work (episode, task) from it. Global random state is never touched.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["resolve_seed", "SeedLike"]

SeedLike = "int | numpy.random.Generator | None"

_MASK64 = (1 << 64) - 1


def resolve_seed(seed) -> int:
    """Turn a user seed into a non-negative integer below 2**63.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        An int is used as is (must be >= 0). A Generator is advanced by one draw. None
        draws fresh OS entropy; the value is returned so the caller can record it.

    Returns
    -------
    int
        The seed actually used, in [0, 2**63).

    Examples
    --------
    >>> resolve_seed(7)
    7
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy) & ((1 << 63) - 1)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1, dtype=np.int64))
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, a numpy.random.Generator or None; got bool {seed!r}")
    if isinstance(seed, numbers.Integral):
        s = int(seed)
        if s < 0 or s >= 2**63:
            raise ValueError(f"seed must be in [0, 2**63); got {s}")
        return s
    raise TypeError(
        f"seed must be an int, a numpy.random.Generator or None; got {type(seed).__name__}"
    )
