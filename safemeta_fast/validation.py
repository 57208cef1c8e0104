"""One vocabulary of argument checks for the public functions (scalar arguments).

Array checks live with the model (``cmdp.py``) and policies (``policy.py``). Messages
name the argument, the value and what was expected.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .cmdp import CMDP

__all__ = ["check_int", "check_size", "check_real", "check_bool", "check_cmdp", "MAX_ARRAY_BYTES"]

#: Largest array (bytes) a public function allocates from a size its caller gives: a size
#: beyond this is refused with a ValueError before any allocation, instead of a raw
#: MemoryError (or an allocation the machine cannot back) deep inside.
MAX_ARRAY_BYTES = 4 * 2**30


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (not a bool) ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} is {v}; it must be >= {minimum}")
    return v


def check_size(name: str, value, *, item_bytes: int, minimum: int = 0,
               what: str = "the outputs", max_bytes: int | None = None) -> int:
    """An integer count ``>= minimum`` whose arrays (``item_bytes`` per unit) fit the limit.

    ``value * item_bytes`` must be at most ``max_bytes`` (default :data:`MAX_ARRAY_BYTES`),
    computed in exact integers, so a huge size is refused before anything is allocated.

    Examples
    --------
    >>> check_size("n_episodes", 1000, item_bytes=16)
    1000
    >>> check_size("n_episodes", 10**13, item_bytes=16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: n_episodes is 10000000000000; the outputs would need 1.49e+05 GiB ...
    """
    v = check_int(name, value, minimum)
    limit = MAX_ARRAY_BYTES if max_bytes is None else int(max_bytes)
    need = v * int(item_bytes)
    if need > limit:
        raise ValueError(
            f"{name} is {v}; {what} would need {need / 2**30:.4g} GiB ({item_bytes} bytes per "
            f"unit), more than the limit of {limit / 2**30:g} GiB (validation.MAX_ARRAY_BYTES); "
            f"use a smaller {name}"
        )
    return v


def check_real(name: str, value, lo=None, hi=None, lo_open: bool = False,
               hi_open: bool = False) -> float:
    """A finite real number (not a bool) within the given, optionally open, bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} is {x}; it must be finite")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ValueError(f"{name} is {x!r}; it must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (x >= hi if hi_open else x > hi):
        raise ValueError(f"{name} is {x!r}; it must be {'<' if hi_open else '<='} {hi}")
    return x


def check_bool(name: str, value) -> bool:
    """A bool (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def check_cmdp(M, name: str = "M") -> CMDP:
    """A :class:`~safemeta_fast.cmdp.CMDP`."""
    if not isinstance(M, CMDP):
        raise TypeError(f"{name} must be a safemeta_fast.CMDP; got {type(M).__name__}")
    return M
