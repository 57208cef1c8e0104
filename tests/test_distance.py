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


# ---------------------------------------------------------------------------
# affine families: distances from the parameters (reduced coordinates)
# ---------------------------------------------------------------------------

class _MixedAffine:
    """Test family: every entry moves along both parameters, P rows repeat, also negated."""

    def __new__(cls):
        from safemeta_fast import CMDP
        from safemeta_fast.tasks import TaskFamily, Uniform

        rng = np.random.default_rng(12)
        S, A, K = 5, 2, 2
        P0 = rng.uniform(0.5, 1.0, (S, A, S))
        P0 /= P0.sum(axis=2, keepdims=True)
        D = rng.normal(size=(2, S, A, S))
        D -= D.mean(axis=3, keepdims=True)  # rows of P stay sums of 1
        D[:, 3, 1] = D[:, 1, 0]  # a repeated row
        D[:, 4, 0] = -D[:, 1, 0]  # the same row negated (same distance term)
        D[:, 2, 1, ::-1] = D[:, 0, 1]  # a permuted row
        D *= 0.02 / np.abs(D).max()
        r0, dr = rng.random((S, A)), rng.normal(size=(2, S, A)) * 0.01
        dr[1, 0, 0] = -dr[0, 0, 0] * 2  # a column that is a negated multiple of another
        c0, dc = rng.random((S, A, K)), rng.normal(size=(2, S, A, K)) * 0.01
        nu0 = np.full(S, 1.0 / S)
        dnu = rng.normal(size=(2, S)) * 0.01
        dnu -= dnu.mean(axis=1, keepdims=True)

        class MixedAffine(TaskFamily):
            param_names = ("a", "b")

            def __init__(self):
                self.distribution = Uniform([-1.0, -1.0], [1.0, 1.0])

            def build(self, theta) -> CMDP:
                t = np.asarray(theta, dtype=np.float64).reshape(2)
                return CMDP(P0 + np.tensordot(t, D, 1), r0 + np.tensordot(t, dr, 1),
                            c0 + np.tensordot(t, dc, 1), np.full(K, 5.0), 0.9,
                            nu0 + t @ dnu)

        return MixedAffine()


def _affine_families():
    from safemeta_fast.envs.families import (
        GridworldCostCellsFamily,
        GridworldCostFamily,
        GridworldFamily,
        RandomCMDPFamily,
    )
    from safemeta_fast.tasks import Uniform

    return {
        "gridworld": GridworldFamily(),
        "gridworld_wide_5x5": GridworldFamily(Uniform([0.0], [1.0]), size=5),
        "gridworld_cost": GridworldCostFamily(Uniform([0.2, 9.8], [0.4, 10.2])),
        "cost_cells_3": GridworldCostCellsFamily(3),
        "cost_cells_8": GridworldCostCellsFamily(8),
        "random_k2": RandomCMDPFamily(12, 3, n_constraints=2, radius=0.4, base_seed=5),
        "mixed_2d": _MixedAffine(),
    }


AFFINE = _affine_families()


def test_affine_coordinates_kernel_matches_twin():
    from safemeta_fast.kernels.distance import affine_coordinates

    from tests.twins import affine_coordinates_twin

    rng = np.random.default_rng(0)
    for n, e, d in ((1, 1, 1), (50, 7, 3), (300, 40, 8), (5, 0, 2)):
        x, V = rng.normal(size=(n, d)), rng.normal(size=(e, d))
        out = np.empty((n, e))
        affine_coordinates(x, V, out)
        np.testing.assert_allclose(out, affine_coordinates_twin(x, V), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", list(AFFINE))
def test_affine_stack_distance_equals_built_tasks(name):
    """The reduced coordinates give the model distance of the built tasks (random pairs)."""
    from safemeta_fast.distance import stack_family
    from tests.twins import affine_distance_twin

    fam = AFFINE[name]
    model = fam.affine_model()
    assert model is not None
    th = fam.sample(150, seed=3)
    fast = stack_family(fam, th)
    slow = stack_family(fam, th, affine=False)
    assert fast.reduced and not slow.reduced
    assert fast.nbytes < slow.nbytes
    D_fast, D_slow = pairwise_distance(fast), pairwise_distance(slow)
    assert D_slow.max() > 0
    np.testing.assert_allclose(D_fast, D_slow, rtol=0, atol=1e-12)
    rng = np.random.default_rng(1)
    for i, j in rng.integers(0, 150, size=(40, 2)):
        want = distance_twin(fam.build(th[i]), fam.build(th[j]))
        assert D_fast[i, j] == pytest.approx(want, abs=1e-12)
        assert affine_distance_twin(model, th[i], th[j]) == pytest.approx(want, abs=1e-12)
        # early exit: exact at or below the bound, a value above it otherwise
        assert pair_distance_sparse(int(i), int(j), *fast.kernel_args, 2 * want) == D_fast[i, j]
        if want > 0:
            assert pair_distance_sparse(int(i), int(j), *fast.kernel_args, 0.5 * want) > 0.5 * want


def test_affine_stack_known_distances():
    """Closed forms: 0.75 |dnoise| (gridworld); max(0.75 |dnoise|, |dcost|) (noise, cost);
    max_k |dcost_k| (cost cells)."""
    from safemeta_fast.distance import stack_family

    for name, scale in (("gridworld", [0.75]), ("gridworld_cost", [0.75, 1.0]),
                        ("cost_cells_3", [1.0, 1.0, 1.0])):
        fam = AFFINE[name]
        th = fam.sample(60, seed=8)
        D = pairwise_distance(stack_family(fam, th))
        want = np.max(np.abs(th[:, None, :] - th[None, :, :]) * np.array(scale), axis=2)
        np.testing.assert_allclose(D, want, rtol=0, atol=1e-13)


def test_affine_slopes_are_reduced():
    from safemeta_fast.distance import affine_distance_slopes

    point, nu, row_ptr, rows = affine_distance_slopes(AFFINE["gridworld"].affine_model())
    # noise moves no reward, cost or start state; 196 rows collapse to a few distinct ones
    assert point.shape == (0, 1) and nu.shape == (0, 1)
    assert 1 <= row_ptr.size - 1 <= 8 and rows.shape[0] == row_ptr[-1]
    assert np.all(rows != 0)
    point, nu, row_ptr, rows = affine_distance_slopes(AFFINE["cost_cells_3"].affine_model())
    # three cost groups: one slope each (e_k, shared by every cell and action of a group)
    np.testing.assert_array_equal(point, np.eye(3)[::-1])
    assert row_ptr.size == 1 and rows.shape == (0, 3)


def test_neighbours_within_on_affine_stack_equals_brute_force():
    from safemeta_fast.distance import stack_family

    fam = AFFINE["gridworld_cost"]
    th = fam.sample(200, seed=4)
    D = pairwise_twin([fam.build(t) for t in th])
    for eps in (0.01, 0.05):
        nb = neighbours_within(stack_family(fam, th), eps, n_pivots=3)
        got = [set(nb.idx[nb.ptr[i]:nb.ptr[i + 1]].tolist()) for i in range(200)]
        assert got == _brute_sets(D, eps)


def test_stack_family_falls_back_to_built_tasks():
    from safemeta_fast import CMDP
    from safemeta_fast.distance import stack_family
    from safemeta_fast.tasks import TaskFamily, Uniform

    class Squared(TaskFamily):  # noise enters squared: no affine model
        param_names = ("x",)

        def __init__(self):
            self.distribution = Uniform([0.1], [0.5])

        def build(self, theta) -> CMDP:
            return gridworld(float(np.asarray(theta).reshape(-1)[0]) ** 2)

    th = np.array([[0.2], [0.3]])
    st_ = stack_family(Squared(), th)
    assert not st_.reduced
    assert pairwise_distance(st_)[0, 1] == pytest.approx(0.75 * (0.09 - 0.04), abs=1e-12)
    # outside the distribution's box the affine model was never checked: build
    fam = AFFINE["gridworld"]
    assert stack_family(fam, [[0.2], [0.3]]).reduced
    assert not stack_family(fam, [[0.2], [0.6]]).reduced


def test_affine_stack_validation():
    from safemeta_fast.distance import stack_affine, stack_family

    fam = AFFINE["gridworld_cost"]
    model = fam.affine_model()
    with pytest.raises(TypeError, match="model must be an AffineModel"):
        stack_affine(fam, [[0.3, 10.0]])
    with pytest.raises(ValueError, match=r"params must have shape \(N, 2\)"):
        stack_affine(model, [[0.3]])
    with pytest.raises(ValueError, match=r"params must have shape \(N, 2\) with N >= 1"):
        stack_affine(model, np.empty((0, 2)))
    with pytest.raises(ValueError, match=r"params\[1, 0\] is nan"):
        stack_affine(model, [[0.3, 10.0], [np.nan, 10.0]])
    with pytest.raises(TypeError, match="family must be a TaskFamily"):
        stack_family(model, [[0.3, 10.0]])
    with pytest.raises(ValueError, match="params is empty"):
        stack_family(fam, np.empty((0, 2)))
    with pytest.raises(ValueError, match="reduced coordinates"):
        stack_affine(model, [[0.3, 10.0]]).dense()
    with pytest.raises(ValueError, match="reduced coordinates"):
        pairwise_distance(stack_family(fam, [[0.3, 10.0]]), method="dense")
