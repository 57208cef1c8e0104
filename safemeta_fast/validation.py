"""One vocabulary of argument checks for every public function (issue 10).

Arrays (conversion, shape, finiteness, probabilities, read-only storage) and scalars
(integers, sizes with a memory bound checked before any allocation, reals in a range,
bools, choices, models). Every message names the argument, the value and what was
expected: "P[3, 1] sums to 0.97; each row must sum to 1 (tolerance 1e-09)".
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "MAX_ARRAY_BYTES", "PROB_ATOL", "as_float_array", "check_bool", "check_choice", "check_cmdp",
    "check_finite", "check_gamma", "check_int", "check_nonneg", "check_real", "check_row_sums",
    "check_shape", "check_size", "check_stochastic", "readonly",
]

#: Absolute tolerance on the sum of a probability row (rows of P, nu0 and policies).
PROB_ATOL = 1e-9

#: Largest array (bytes) a public function allocates from a size its caller gives: a size
#: beyond this is refused with a ValueError before any allocation, instead of a raw
#: MemoryError (or an allocation the machine cannot back) deep inside.
MAX_ARRAY_BYTES = 4 * 2**30


# ---------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------

def as_float_array(name: str, x, ndim: int | tuple[int, ...]) -> np.ndarray:
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers; got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of numbers; could not convert: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must be an array of real numbers; got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real; got complex dtype {arr.dtype}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        want = " or ".join(str(d) for d in ndims)
        raise ValueError(f"{name} must have {want} dimensions; got shape {arr.shape}")
    return np.array(arr, dtype=np.float64, order="C", copy=True)


def check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...], meaning: str) -> None:
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {meaning} = {shape}; got {arr.shape}")


def check_finite(name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(idx)} is {float(arr[idx])}; every entry must be finite")


def check_nonneg(name: str, arr: np.ndarray) -> None:
    bad = arr < 0
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(idx)} is {float(arr[idx])!r}; probabilities must be >= 0")


def check_row_sums(name: str, sums: np.ndarray, index_of) -> None:
    dev = np.abs(sums - 1.0)
    if (dev > PROB_ATOL).any():
        i = int(np.argmax(dev))
        raise ValueError(
            f"{name}{index_of(i)} sums to {float(sums[i]):.12g}; each row must sum to 1 "
            f"(tolerance {PROB_ATOL:g})"
        )


def readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def check_gamma(gamma) -> float:
    if isinstance(gamma, (bool, np.bool_)) or not isinstance(
            gamma, (int, float, np.integer, np.floating)):
        if not (isinstance(gamma, np.ndarray) and gamma.ndim == 0):
            raise TypeError(f"gamma must be a real scalar; got {type(gamma).__name__}")
    g = float(gamma)
    if not math.isfinite(g) or g < 0.0 or g >= 1.0:
        raise ValueError(f"gamma is {g!r}; it must lie in [0, 1)")
    return g


def check_stochastic(name: str, arr: np.ndarray) -> None:
    """Finite, non-negative entries whose last axis sums to 1 (within :data:`PROB_ATOL`)."""
    check_finite(name, arr)
    check_nonneg(name, arr)
    sums = arr.sum(axis=-1)
    dev = np.abs(sums - 1.0)
    if (dev > PROB_ATOL).any():
        idx = tuple(int(i) for i in np.argwhere(dev > PROB_ATOL)[0])
        raise ValueError(
            f"{name}{list(idx)} sums to {float(sums[idx]):.12g}; each row must sum to 1 "
            f"(tolerance {PROB_ATOL:g})"
        )


# ---------------------------------------------------------------------------
# scalars
# ---------------------------------------------------------------------------

def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool) ``>= minimum`` and ``<= maximum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} is {v}; it must be >= {minimum}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} is {v}; it must be <= {maximum}")
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
    below = lo is not None and (x <= lo if lo_open else x < lo)
    above = hi is not None and (x >= hi if hi_open else x > hi)
    if (below or above) and lo is not None and hi is not None:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} is {x!r}; it must lie in {interval}")
    if below:
        raise ValueError(f"{name} is {x!r}; it must be {'>' if lo_open else '>='} {lo}")
    if above:
        raise ValueError(f"{name} is {x!r}; it must be {'<' if hi_open else '<='} {hi}")
    return x


def check_bool(name: str, value) -> bool:
    """A bool (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(name: str, value, choices, *, case_insensitive: bool = False):
    """One of ``choices`` (strings); returns it (upper-cased choices match any case if asked).

    Examples
    --------
    >>> check_choice("method", "auto", ("auto", "dense"))
    'auto'
    >>> check_choice("method", "lu", ("auto", "dense"))
    Traceback (most recent call last):
    ...
    ValueError: method is 'lu'; expected one of 'auto', 'dense'
    """
    options = ", ".join(map(repr, choices))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {options}; got {type(value).__name__} {value!r}")
    key = value.upper() if case_insensitive else value
    if key not in choices:
        extra = " (case-insensitive)" if case_insensitive else ""
        raise ValueError(f"{name} is {value!r}; expected one of {options}{extra}")
    return key


def check_cmdp(M, name: str = "M"):
    """A :class:`~safemeta_fast.cmdp.CMDP`."""
    from .cmdp import CMDP  # cmdp.py builds on this module's array checks

    if not isinstance(M, CMDP):
        raise TypeError(f"{name} must be a safemeta_fast.CMDP; got {type(M).__name__}")
    return M
