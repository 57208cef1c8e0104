"""Task distributions and families."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from safemeta_fast.distance import distance, pairwise_distance
from safemeta_fast.envs import gridworld
from safemeta_fast.envs.families import (
    GridworldCostFamily,
    GridworldFamily,
    RandomCMDPFamily,
    paper_noise_distribution,
)
from safemeta_fast.tasks import Empirical, TruncatedNormal, Uniform


def test_truncated_normal_matches_scipy_truncnorm():
    D = TruncatedNormal(0.3, 0.1, 0.25, 0.4)
    x = D.sample(40_000, seed=0)
    assert x.shape == (40_000, 1)
    assert x.min() >= 0.25 and x.max() <= 0.4
    ref = stats.truncnorm((0.25 - 0.3) / 0.1, (0.4 - 0.3) / 0.1, loc=0.3, scale=0.1)
    assert stats.kstest(x[:, 0], ref.cdf).pvalue > 1e-3
    assert np.mean(x == 0.25) == 0.0  # no point mass at the edge


def test_clip_mode_puts_mass_on_edges():
    D = TruncatedNormal(0.3, 0.1, 0.25, 0.4, mode="clip")
    x = D.sample(40_000, seed=0)[:, 0]
    p_low = stats.norm.cdf(-0.5)
    assert np.mean(x == 0.25) == pytest.approx(p_low, abs=0.01)
    assert np.mean(x == 0.4) == pytest.approx(1 - stats.norm.cdf(1.0), abs=0.01)


def test_paper_distribution_and_seeds():
    D = paper_noise_distribution()
    a = D.sample(1000, seed=7)
    np.testing.assert_array_equal(a, D.sample(1000, seed=7))
    assert not np.array_equal(a, D.sample(1000, seed=8))
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(D.sample(5, seed=g1), D.sample(5, seed=g2))
    assert abs(a.mean() - 0.3) < 0.005 and 0.0 <= a.min() and a.max() <= 0.5


def test_multidimensional_distributions():
    T = TruncatedNormal([0.3, 10.0], [0.03, 1.0], [0.0, 9.0], [0.5, 11.0])
    x = T.sample(500, seed=1)
    assert x.shape == (500, 2)
    assert (x >= [0.0, 9.0]).all() and (x <= [0.5, 11.0]).all()
    U = Uniform([0.0, -1.0, 2.0], [1.0, 1.0, 3.0])
    u = U.sample(1000, seed=2)
    assert u.shape == (1000, 3) and (u >= U.low).all() and (u <= U.high).all()
    E = Empirical([[0.1, 1.0], [0.2, 2.0]])
    e = E.sample(200, seed=3)
    assert set(map(tuple, e.tolist())) == {(0.1, 1.0), (0.2, 2.0)}
    assert E.sample(0, seed=0).shape == (0, 2)


def test_distribution_validation():
    with pytest.raises(ValueError, match=r"std\[0\] is 0.0"):
        TruncatedNormal(0.3, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match=r"low\[0\] = 0.5 must be < high\[0\] = 0.1"):
        Uniform(0.5, 0.1)
    with pytest.raises(ValueError, match="mode"):
        TruncatedNormal(0.3, 0.1, 0.0, 0.5, mode="fold")
    with pytest.raises(ValueError, match="must have 2 entries"):
        TruncatedNormal([0.3, 1.0], [0.1, 0.1, 0.1], 0.0, 2.0)
    with pytest.raises(ValueError, match=r"values\[1, 0\] is nan"):
        Empirical([0.1, np.nan])
    with pytest.raises(ValueError, match="n is -1"):
        Uniform(0, 1).sample(-1, seed=0)
    with pytest.raises(TypeError, match="seed"):
        Uniform(0, 1).sample(2, seed="x")


def test_gridworld_family_builds_paper_tasks_and_meta_env_api():
    fam = GridworldFamily()
    th = fam.sample(3, seed=0)
    M = fam.build(th[1])
    np.testing.assert_array_equal(M.P, gridworld(float(th[1, 0])).P)
    tasks = fam.sample_tasks(4, seed=1)
    assert len(tasks) == 4 and tasks[0].shape == (1,)
    fam.set_task(tasks[2])
    np.testing.assert_array_equal(fam.get_task(), tasks[2])
    assert fam.task_cmdp.n_states == 49
    d = fam.parameter_distance(np.array([0.3]), th)
    np.testing.assert_allclose(d, np.abs(th[:, 0] - 0.3))
    with pytest.raises(ValueError, match="no task set"):
        GridworldFamily().get_task()
    with pytest.raises(ValueError, match=r"thetas must have shape \(n, d\) = \(n, 1\)"):
        fam.check_params(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="dim 2"):
        GridworldFamily(Uniform([0, 0], [0.5, 0.5]))


def test_gridworld_cost_family_parameter_distance_equals_model_distance():
    fam = GridworldCostFamily()
    th = fam.sample(12, seed=4)
    D = pairwise_distance([fam.build(t) for t in th])
    Dp = fam.parameter_distance(th[:, None, :], th[None, :, :])
    np.testing.assert_allclose(D, Dp, atol=1e-12)


def test_random_cmdp_family_distance_bounded_by_radius():
    fam = RandomCMDPFamily(6, 3, 2, radius=0.2, base_seed=5)
    th = fam.sample(8, seed=6)
    D = pairwise_distance([fam.build(t) for t in th])
    bound = 0.2 * np.max(np.abs(th[:, None, :] - th[None, :, :]), axis=-1)
    assert (D <= bound + 1e-12).all()
    assert (D[~np.eye(8, dtype=bool)] > 0).all()
    assert distance(fam.build([0.1, 0.1]), fam.build([0.1, 0.1])) == 0.0
    with pytest.raises(TypeError, match="no parameter-space distance"):
        fam.parameter_distance(th[0], th[1])
    with pytest.raises(ValueError, match="radius"):
        RandomCMDPFamily(3, 2, radius=0.0)
