"""Distance kernels (SPEC section 3) against a dense NumPy twin; pivot-pruned range search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safemeta_fast.kernels.distance import pair_distance_sparse

from safemeta_fast.distance import (
    distance,
    neighbours_within,
    pairwise_distance,
    stack_tasks,
)
from safemeta_fast.envs import gridworld
from tests.strategies import random_cmdp


def distance_twin(M1, M2) -> float:
    """SPEC section 3, straight from the formula on dense arrays."""
    return max(
        np.abs(M1.r - M2.r).max(),
        np.abs(M1.c - M2.c).max(),
        0.5 * np.abs(M1.nu0 - M2.nu0).sum(),
        (0.5 * np.abs(M1.P - M2.P).sum(axis=2)).max(),
    )


def pairwise_twin(tasks) -> np.ndarray:
    n = len(tasks)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            D[i, j] = distance_twin(tasks[i], tasks[j])
    return D


@st.composite
def task_pairs(draw, n=3):
    S = draw(st.integers(1, 6))
    A = draw(st.integers(1, 3))
    K = draw(st.integers(1, 2))
    out = []
    for _ in range(n):
        sp = draw(st.sampled_from([0.0, 0.5, 0.8]))
        seed = draw(st.integers(0, 2**32 - 1))
        out.append(random_cmdp(np.random.default_rng(seed), S, A, K, sparsity=sp))
    return out


@settings(max_examples=60, deadline=None)
@given(task_pairs(3))
def test_distance_matches_twin_symmetric_triangle(tasks):
    M1, M2, M3 = tasks
    d12 = distance(M1, M2)
    assert d12 == pytest.approx(distance_twin(M1, M2), abs=1e-12)
    assert d12 == distance(M2, M1)
    assert distance(M1, M1) == 0.0
    assert distance(M1, M3) <= distance(M1, M2) + distance(M2, M3) + 1e-12


def test_identical_structure_and_merged_paths_agree():
    rng = np.random.default_rng(1)
    dense = [random_cmdp(rng, 5, 3, 2, sparsity=0.0) for _ in range(3)]
    sparse = [random_cmdp(rng, 5, 3, 2, sparsity=0.7) for _ in range(4)]
    tasks = dense + sparse
    st_ = stack_tasks(tasks)
    assert st_.lptr.shape[0] == 1 + 4  # the dense ones share one structure
    D = pairwise_distance(tasks)
    np.testing.assert_allclose(D, pairwise_twin(tasks), atol=1e-12, rtol=0)
    np.testing.assert_array_equal(D, D.T)
    assert not D.flags.writeable
    Dd = pairwise_distance(tasks, method="dense")
    np.testing.assert_allclose(Dd, D, atol=1e-14, rtol=0)


def test_early_exit_is_exact_below_bound_and_above_otherwise():
    rng = np.random.default_rng(2)
    tasks = [random_cmdp(rng, 6, 2, 1, sparsity=0.5) for _ in range(6)]
    st_ = stack_tasks(tasks)
    D = pairwise_twin(tasks)
    for i in range(6):
        for j in range(6):
            for bound in (0.05, 0.3, D[i, j], 0.9):
                v = pair_distance_sparse(i, j, *st_.kernel_args, bound)
                if D[i, j] <= bound:
                    assert v == pytest.approx(D[i, j], abs=1e-12)
                else:
                    assert v > bound and v <= D[i, j] + 1e-12


def test_gridworld_distance_is_three_quarters_of_noise_difference():
    noises = [0.0, 0.1, 0.25, 0.3, 0.31, 0.5]
    tasks = [gridworld(x) for x in noises]
    D = pairwise_distance(tasks)
    dn = np.abs(np.subtract.outer(noises, noises))
    np.testing.assert_allclose(D, 0.75 * dn, atol=1e-12)
    # grows with the noise difference, also on a larger grid
    base = gridworld(0.3, size=10)
    d = [distance(base, gridworld(0.3 + k * 0.02, size=10)) for k in range(5)]
    assert all(np.diff(d) > 0)
    np.testing.assert_allclose(d, 0.75 * 0.02 * np.arange(5), atol=1e-12)


def test_distance_validation():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match=r"tasks\[1\] has \(S, A, K\) = \(3, 2, 1\)"):
        distance(random_cmdp(rng, 4, 2), random_cmdp(rng, 3, 2))
    with pytest.raises(TypeError, match="M2 must be a CMDP"):
        distance(gridworld(0.1), np.zeros(3))
    with pytest.raises(ValueError, match="method"):
        pairwise_distance([gridworld(0.1)], method="fast")
    with pytest.raises(ValueError, match="tasks is empty"):
        pairwise_distance([])
    with pytest.raises(ValueError, match="eps"):
        neighbours_within([gridworld(0.1)], eps=-1.0)


def _brute_sets(D, eps):
    return [set(np.flatnonzero(D[i] <= eps).tolist()) for i in range(D.shape[0])]


@pytest.mark.parametrize("n_pivots", [1, 3, 6])
def test_neighbours_within_equals_brute_force_random(n_pivots):
    rng = np.random.default_rng(4)
    tasks = [random_cmdp(rng, 4, 2, 1, sparsity=0.5) for _ in range(40)]
    D = pairwise_twin(tasks)
    for eps in (0.0, np.quantile(D, 0.2), np.quantile(D, 0.5), 1.0):
        nb = neighbours_within(tasks, eps, n_pivots=n_pivots)
        got = [set(nb.idx[nb.ptr[i]:nb.ptr[i + 1]].tolist()) for i in range(40)]
        assert got == _brute_sets(D, eps)
        for i in range(40):  # rows sorted
            row = nb.idx[nb.ptr[i]:nb.ptr[i + 1]]
            assert np.all(np.diff(row) > 0)


def test_neighbours_within_gridworld_prunes_and_is_exact():
    rng = np.random.default_rng(5)
    noises = np.round(rng.uniform(0.2, 0.4, 300), 3)  # rounding creates exact ties at eps
    tasks = [gridworld(x) for x in noises]
    eps = 0.75 * 0.01
    D = pairwise_distance(tasks)
    nb = neighbours_within(tasks, eps, n_pivots=3, block_entries=500)
    got = [set(nb.idx[nb.ptr[i]:nb.ptr[i + 1]].tolist()) for i in range(300)]
    assert got == _brute_sets(D, eps)
    assert nb.n_exact < nb.n_pairs / 4
    assert nb.n_pairs == 300 * 299 // 2
