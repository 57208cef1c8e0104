"""Small counter-free random streams for the kernels: SplitMix64 seeding, xoshiro256++.

Every unit of parallel work (an episode, a task) owns one stream. Its xoshiro256++
state is four consecutive outputs of a SplitMix64 sequence started at
``mix64(seed)`` and advanced to position ``4 * index``::

    words(seed, index) = mix64(mix64(seed) + (4 * index + j) * GOLDEN),  j = 1..4

so streams of different units never share a seeding word (``mix64`` is a bijection
of the 64-bit integers) and a unit's numbers do not depend on which thread runs it
or in what order. Every bit of a xoshiro256++ output is of full quality, so a
kernel may split one 64-bit output into independent parts (the rollout kernel uses
the high 32 bits for an alias bucket and the low 32 bits for its threshold).
Uniform doubles use the top 53 bits (``(x >> 11) * 2**-53``, in [0, 1)).

Bit-identical under ``NUMBA_DISABLE_JIT=1``: all 64-bit words are ``uint64`` in
compiled code and plain Python ``int`` in interpreted code; every operation that
can exceed 64 bits is masked with ``MASK64`` (a no-op on ``uint64``, the wrap-around
for Python ints). The only mode-dependent lines are :func:`to_u64`, which turns a
non-negative integer into such a word, and :func:`to_i64`, its inverse for words
below 2**63. Constants above 2**63 are typed ``uint64``
by numba, so no mixed signed/unsigned arithmetic (which numba turns into float64)
ever happens; shift counts are small signed literals, which numba allows.
Words must enter these functions as ``uint64`` (from :func:`to_u64` inside compiled
code, or ``numpy.uint64`` from Python): a plain Python int argument would make numba
compile a signed int64 version with arithmetic right shifts.

References: D. Blackman and S. Vigna, "Scrambled linear pseudorandom number
generators" (xoshiro256++), and G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom number
generators" (SplitMix64).
"""

from __future__ import annotations

import numpy as np
from numba import config, njit

__all__ = [
    "MASK64",
    "GOLDEN",
    "to_u64",
    "mix64",
    "splitmix64_next",
    "stream_state",
    "xoshiro256pp_next",
    "to_i64",
    "u64_to_unit",
    "fill_uniforms",
]

#: 2**64 - 1: masks Python ints to 64 bits (a no-op on numba uint64).
MASK64 = 0xFFFFFFFFFFFFFFFF
#: SplitMix64 increment (2**64 / golden ratio, odd).
GOLDEN = 0x9E3779B97F4A7C15
#: 2**-53, the spacing of the uniform doubles.
TWO_M53 = 1.0 / 9007199254740992.0

if config.DISABLE_JIT:  # interpreted: 64-bit words are Python ints

    def to_u64(x):
        """A non-negative integer as a 64-bit word (Python int here)."""
        return int(x) & MASK64

    def to_i64(x):
        """A word below 2**63 as a signed integer (Python int here)."""
        return int(x)

else:

    @njit(cache=True)
    def to_u64(x):
        """A non-negative integer as a 64-bit word (numba uint64)."""
        return np.uint64(x)

    @njit(cache=True)
    def to_i64(x):
        """A word below 2**63 as a signed integer (numba int64)."""
        return np.int64(x)


@njit(cache=True)
def mix64(z):
    """SplitMix64 finaliser (a bijection of 64-bit words)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


@njit(cache=True)
def splitmix64_next(state):
    """One SplitMix64 step: returns (output, new_state)."""
    state = (state + GOLDEN) & MASK64
    return mix64(state), state


@njit(cache=True)
def stream_state(seed, index):
    """xoshiro256++ state (s0, s1, s2, s3) of stream ``index`` of the user seed.

    ``seed`` and ``index`` are non-negative integers below 2**63 (``index`` below 2**61).
    """
    st = (mix64(to_u64(seed)) + ((to_u64(4 * index) * GOLDEN) & MASK64)) & MASK64
    s0, st = splitmix64_next(st)
    s1, st = splitmix64_next(st)
    s2, st = splitmix64_next(st)
    s3, st = splitmix64_next(st)
    return s0, s1, s2, s3


@njit(cache=True)
def xoshiro256pp_next(s0, s1, s2, s3):
    """One xoshiro256++ step: returns (output, s0, s1, s2, s3)."""
    z = (s0 + s3) & MASK64
    result = ((((z << 23) & MASK64) | (z >> 41)) + s0) & MASK64
    t = (s1 << 17) & MASK64
    s2 = s2 ^ s0
    s3 = s3 ^ s1
    s1 = s1 ^ s2
    s0 = s0 ^ s3
    s2 = s2 ^ t
    s3 = ((s3 << 45) & MASK64) | (s3 >> 19)
    return result, s0, s1, s2, s3


@njit(cache=True)
def u64_to_unit(x):
    """Top 53 bits of a word as a double in [0, 1)."""
    return (x >> 11) * TWO_M53


@njit(cache=True)
def fill_uniforms(seed, index, out):
    """Write the first ``out.size`` uniforms of stream ``index`` into ``out`` (float64)."""
    s0, s1, s2, s3 = stream_state(seed, index)
    for i in range(out.size):
        x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
        out[i] = u64_to_unit(x)
