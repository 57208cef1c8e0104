"""Training phase (Algorithm 1): the paper check, O_s options, verification, artifact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from safemeta_fast.envs import GridworldCostFamily, GridworldFamily, gridworld
from safemeta_fast.errors import SafetyAssumptionError
from safemeta_fast.evaluation import evaluate
from safemeta_fast.lp import solve_lp
from safemeta_fast.policyset import PolicySet
from safemeta_fast.training import (
    SafetyPreconditionWarning,
    UncoveredUnsafeWarning,
    lipschitz_constant,
    normalised_margin,
    train,
)


def test_lipschitz_and_normalisation():
    assert lipschitz_constant(0.9) == pytest.approx(190.0)
    M = gridworld(0.3)
    # utility (1-gamma) b - c in {0.15, -9.85}: G = 9.85
    assert normalised_margin(np.array([[0.985]]), [M]) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def paper_set():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = train(GridworldFamily(), eps=0.005, delta=0.05, distance="parameter",
                   safe_policy=gridworld(0.4), seed=0, progress=False)
    return ps, [w.category for w in caught]


def test_paper_check(paper_set, tmp_path):
    """Issue 3: roughly 10 cover tasks in noise 0.25-0.35, positive margin, exact round trip."""
    ps, categories = paper_set
    assert 8 <= ps.n_policies <= 12
    noises = ps.cover_params[:, 0]
    assert noises.min() >= 0.25 and noises.max() <= 0.35
    assert ps.xi_hat > 0
    assert ps.rounds[-1]["passed"] and ps.rounds[0]["n_tasks"] == 3590
    assert all(b["n_tasks"] == 2 * a["n_tasks"] for a, b in zip(ps.rounds, ps.rounds[1:]))
    # the paper's settings violate its own precondition by orders of magnitude: warned
    assert SafetyPreconditionWarning in categories
    assert not ps.info["precondition"]["holds"]
    # tail samples above noise 0.4 are unsafe for pi_s = LP(0.4) and lie outside the cover
    out = ps.info["outside_cover"]
    assert out["n_unsafe"] > 0 and UncoveredUnsafeWarning in categories
    assert ps.info["n_verified_tasks"] == ps.rounds[-1]["n_tasks"] + ps.n_policies
    back = PolicySet.load(ps.save(tmp_path / "paper"))
    for name in ("policies", "u", "v", "u_s", "v_s", "safe_policy", "cover_params"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ps, name))
    assert back.info == ps.info and back.rounds == ps.rounds and back.xi_hat == ps.xi_hat


def test_predictions_are_exact_values(paper_set):
    ps, _ = paper_set
    pi_s = ps.safe_policy
    for i, theta in enumerate(ps.cover_params):
        M = gridworld(float(theta[0]))
        ev = evaluate(M, ps.policies[i])
        assert ps.u[i] == pytest.approx(ev.reward, rel=1e-8)
        np.testing.assert_allclose(ps.v[i], M.cost_limit - ev.cost, atol=1e-8)
        ev_s = evaluate(M, pi_s)
        assert ps.u_s[i] == pytest.approx(ev_s.reward, rel=1e-10)
        np.testing.assert_allclose(ps.v_s[i], M.cost_limit - ev_s.cost, atol=1e-10)
    lp04 = solve_lp(gridworld(0.4))
    np.testing.assert_allclose(pi_s, lp04.policy)


def _small(**kw):
    base = dict(eps=0.03, delta=0.3, distance="parameter", seed=1, progress=False)
    base.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(GridworldFamily(), **base)


def test_robust_default_needs_no_task():
    ps = _small()
    assert ps.xi_hat > 0 and "robust" in ps.info["safe_policy_source"]
    assert np.all(ps.v_s >= ps.xi_hat - 1e-12)


def test_primal_dual_oracle_close_to_lp():
    ps = _small(oracle="primal_dual")
    for i, theta in enumerate(ps.cover_params):
        lp = solve_lp(gridworld(float(theta[0])))
        assert ps.u[i] <= lp.reward + 1e-6 and ps.u[i] >= lp.reward - 0.05
    assert ps.info["oracle"] == "primal_dual" and ps.info["oracle_options"]["beta"] == 0.1


def test_unsafe_user_policy_raises_with_worst_task():
    with pytest.raises(SafetyAssumptionError,
                       match=r"on the (cover|sampled) task \(noise=0\.\d+\).*slack is -"):
        _small(safe_policy=np.full((49, 4), 0.25))


def test_model_distance_multi_parameter_family():
    fam = GridworldCostFamily()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = train(fam, eps=0.3, delta=0.3, distance="model", seed=2, progress=False,
                   max_rounds=2)
    assert ps.cover_params.shape[1] == 2 and ps.xi_hat > 0
    assert ps.info["param_names"] == list(fam.param_names)


@pytest.mark.parametrize(
    "kw, exc, pattern",
    [
        (dict(oracle="gda"), ValueError, "oracle is 'gda'"),
        (dict(verify="some"), ValueError, "verify is 'some'"),
        (dict(safe_policy="pessimistic"), ValueError, "safe_policy is 'pessimistic'"),
    ],
)
def test_validation(kw, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _small(**kw)
    with pytest.raises(TypeError, match="family must be a TaskFamily"):
        train("gridworld", eps=0.1, delta=0.1)


def test_model_distance_recipe_builds_no_sampled_task_and_matches_the_built_path(monkeypatch):
    """train(distance="model") on the paper's gridworld: the cover's distances come from the
    parameters (the affine family's reduced coordinates) and the policy set is bit for bit
    the one of the cover on the built tasks, round by round."""
    import functools

    from safemeta_fast import covering
    from safemeta_fast.distance import stack_family

    n_built = []
    build = GridworldFamily.build
    monkeypatch.setattr(GridworldFamily, "build",
                        lambda self, theta: n_built.append(1) or build(self, theta))
    kw = dict(eps=0.0075, delta=0.15, distance="model", safe_policy=gridworld(0.4), seed=0,
              progress=False, calibration=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = train(GridworldFamily(), **kw)
        n_fast = len(n_built)
        monkeypatch.setattr(covering, "stack_family", functools.partial(stack_family, affine=False))
        slow = train(GridworldFamily(), **kw)
    n_sampled = sum(r["n_tasks"] for r in fast.rounds)
    assert n_sampled > 4000 and len(fast.rounds) >= 3
    # the affine fit (12 tasks) and the cover tasks only; the built path builds every sample
    print("BUILT", n_fast, fast.n_policies)
    assert n_fast <= 12 + fast.n_policies + 1
    assert len(n_built) - n_fast >= n_sampled
    for name in ("policies", "u", "v", "u_s", "v_s", "safe_policy", "cover_params"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.xi_hat == slow.xi_hat
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in fast.rounds]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in slow.rounds]
