"""The kernels' random streams: reference values, stream independence, uniformity."""

from __future__ import annotations

import numpy as np
import pytest
from safemeta_fast.kernels.rng import fill_uniforms, mix64, splitmix64_next, xoshiro256pp_next

from tests.twins import splitmix_ref, stream_words

MASK = (1 << 64) - 1


def _ref_uniforms(seed: int, index: int, n: int) -> list[float]:
    """Independent pure-Python statement of the stream layout documented in rng.py."""
    words = stream_words(seed, index)
    return [(next(words) >> 11) * 2.0**-53 for _ in range(n)]


def test_splitmix64_matches_published_sequence():
    # SplitMix64 from seed 1234567 (the sequence published with the algorithm's
    # reference implementation, e.g. Rosetta Code "Pseudo-random numbers/Splitmix64").
    st = np.uint64(1234567)
    got = []
    for _ in range(5):
        out, st = splitmix64_next(st)
        got.append(int(out))
        st = np.uint64(st)
    assert got == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                   4593380528125082431, 16408922859458223821]


def test_xoshiro256pp_matches_reference_vector():
    # Outputs of the reference xoshiro256plusplus.c from the state {1, 2, 3, 4}.
    st = tuple(np.uint64(v) for v in (1, 2, 3, 4))
    got = []
    for _ in range(10):
        out, *st = xoshiro256pp_next(*st)
        got.append(int(out))
        st = tuple(np.uint64(v) for v in st)
    assert got == [41943041, 58720359, 3588806011781223, 3591011842654386,
                   9228616714210784205, 9973669472204895162, 14011001112246962877,
                   12406186145184390807, 15849039046786891736, 10450023813501588000]


def test_mix64_is_the_splitmix_finaliser():
    for z in (0, 1, 2**63, MASK, 0x0123456789ABCDEF):
        ref, _ = splitmix_ref((z - 0x9E3779B97F4A7C15) & MASK)
        assert int(mix64(np.uint64(z))) == ref


@pytest.mark.parametrize("seed,index", [(0, 0), (7, 3), (2**63 - 1, 12345), (123456789, 2**40)])
def test_stream_matches_pure_python_reference(seed, index):
    got = np.empty(50)
    fill_uniforms(seed, index, got)
    assert got.tolist() == _ref_uniforms(seed, index, 50)


def test_streams_differ_between_units_and_seeds():
    a = np.empty(8)
    b = np.empty(8)
    c = np.empty(8)
    fill_uniforms(5, 0, a)
    fill_uniforms(5, 1, b)
    fill_uniforms(6, 0, c)
    assert not np.any(a == b) and not np.any(a == c)


def test_uniforms_are_uniform():
    n = 200_000
    u = np.empty(n)
    fill_uniforms(2024, 9, u)
    assert u.min() >= 0.0 and u.max() < 1.0
    # mean 1/2, variance 1/12: within 5 standard errors
    assert abs(u.mean() - 0.5) <= 5 * np.sqrt(1 / 12 / n)
    counts = np.bincount((u * 16).astype(int), minlength=16)
    chi2 = ((counts - n / 16) ** 2 / (n / 16)).sum()
    assert chi2 < 50.0  # chi-square with 15 dof: P(> 50) is about 1e-5
    # lag-1 correlation of consecutive draws of one stream
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) <= 5 / np.sqrt(n)
