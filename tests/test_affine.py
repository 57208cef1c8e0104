"""Affine task families: the batched evaluation equals building and evaluating each task."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast import CMDP
from safemeta_fast.envs import GridworldCostFamily, GridworldFamily, RandomCMDPFamily, gridworld
from safemeta_fast.evaluation import evaluate_affine, evaluate_many
from safemeta_fast.tasks import TaskFamily, Uniform


@pytest.mark.parametrize("family", [
    GridworldFamily(), GridworldCostFamily(), RandomCMDPFamily(12, 3, n_constraints=2, base_seed=5),
], ids=["gridworld", "gridworld_cost", "random_k2"])
def test_affine_evaluation_equals_per_task(family):
    model = family.affine_model()
    assert model is not None
    th = family.sample(40, seed=7)
    rng = np.random.default_rng(0)
    S, A = model.base.n_states, model.base.n_actions
    pols = rng.random((3, S, A)) + 0.05
    pols /= pols.sum(axis=2, keepdims=True)
    got = evaluate_affine(model, th, pols)
    for t, theta in enumerate(th):
        ev = evaluate_many(family.build(theta), pols)
        np.testing.assert_allclose(got[t, :, 0], ev.reward, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[t, :, 1:], ev.cost, rtol=1e-10, atol=1e-10)


class _Squared(TaskFamily):
    """Noise enters squared: not affine, so no affine model."""

    param_names = ("x",)

    def __init__(self):
        self.distribution = Uniform([0.1], [0.5])

    def build(self, theta) -> CMDP:
        return gridworld(float(np.asarray(theta).reshape(-1)[0]) ** 2)


def test_non_affine_family_has_no_model():
    assert _Squared().affine_model() is None


def test_training_verification_same_with_and_without_the_batch(monkeypatch):
    from safemeta_fast import training

    fam = GridworldFamily()
    params = fam.check_params(fam.sample(300, seed=1))
    pi_s = np.full((49, 4), 0.25)
    fast = training._sampled_slack(fam, params, pi_s, progress=False)
    monkeypatch.setattr(type(fam), "affine_model", lambda self: None)
    slow = training._sampled_slack(fam, params, pi_s, progress=False)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)
