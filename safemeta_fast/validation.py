"""One vocabulary of argument checks for the public functions (scalar arguments).

Array checks live with the model (``cmdp.py``) and policies (``policy.py``). Messages
name the argument, the value and what was expected.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .cmdp import CMDP

__all__ = ["check_int", "check_real", "check_bool", "check_cmdp"]


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (not a bool) ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} is {v}; it must be >= {minimum}")
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
