"""Issue 9 safety audits of the certified profile.

Default suite: the README tour's policy set, the 10 paper test tasks x 10 seeds,
K = 40,000 (about 10 s): zero violations, regret within the acceptance bound, and every
certified deployment's exact cost below its certified bound. ``slow``: the 1,000-run
audits (10 paper tasks x 100 seeds with the reference and paper rows beside it; 100
fresh tasks from D; GridworldCostFamily, a RandomCMDPFamily and a FrozenLake family
trained with the model distance).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from safemeta_fast import SafeAdapter
from safemeta_fast.envs import (
    PAPER_TEST_NOISES,
    GridworldCostFamily,
    GridworldFamily,
    RandomCMDPFamily,
    gridworld,
)
from safemeta_fast.experiments.audit import audit_profiles, format_audit
from safemeta_fast.lp import solve_lp
from safemeta_fast.training import train

K = 40_000


@pytest.fixture(scope="module")
def paper_tasks():
    tasks = [gridworld(x) for x in PAPER_TEST_NOISES]
    return tasks, [float(solve_lp(M).reward) for M in tasks]


def test_certified_paper_audit(paper_policy_set, paper_tasks):
    ps = paper_policy_set
    tasks, refs = paper_tasks
    logs = SafeAdapter(ps, n_episodes=K, seed=0).run_tasks(tasks, seeds=range(10),
                                                           regret_references=refs)
    flat = [log for row in logs for log in row]
    finals = np.array([log.final_regret for log in flat])
    b = ps.cost_limit[0]
    for log in flat:
        assert log.violations == 0
        assert log.exact_cost.max() <= b
        assert log.refuted_at == -1
        ok = log.certified_cost[:, 0] <= b
        # every certified deployment is within its bound, which is within the limit
        assert np.all(log.exact_cost[ok, 0] <= log.certified_cost[ok, 0])
        assert log.constants["control_variate"] is True
    # acceptance: <= 13K with the control variate (measured about 11.6K)
    assert finals.mean() <= 13_000
    assert np.mean([log.mean_candidate_weight for log in flat]) > 0.8


def _train(family, eps, delta=0.05, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(family, eps=eps, delta=delta, distance="model", seed=0, progress=False,
                     verify="cover", **kw)


def _fresh(family, n, seed=424242):
    return [family.build(th) for th in family.sample(n, seed=seed)]


@pytest.mark.slow
def test_paper_1000_runs(paper_policy_set, paper_tasks):
    tasks, refs = paper_tasks
    rows = audit_profiles(paper_policy_set, tasks, seeds=range(100),
                          profiles=("certified", "reference", "paper"), regret_references=refs)
    print(format_audit(rows))
    cert, ref, pap = rows
    assert cert.runs == 1000 and cert.runs_with_violation == 0 and cert.regret_mean <= 13_000
    assert pap.runs_with_violation == 0
    assert ref.runs_with_violation > 0  # the authors' constants are unsafe here (README)
    nocv = audit_profiles(paper_policy_set, tasks, seeds=range(100), profiles=("certified",),
                          regret_references=refs,
                          adapter_options={"certified": {"control_variate": False}})[0]
    print(format_audit([nocv]))
    assert nocv.runs_with_violation == 0 and nocv.regret_mean <= 20_000


@pytest.mark.slow
def test_fresh_tasks_from_D(paper_policy_set):
    rows = audit_profiles(paper_policy_set, _fresh(GridworldFamily(), 100), seeds=range(10),
                          profiles=("certified",))
    print(format_audit(rows))
    assert rows[0].runs_with_violation == 0 and rows[0].regret_mean <= 18_000


@pytest.mark.slow
@pytest.mark.parametrize("family, eps, kw", [
    (GridworldCostFamily(), 0.1, {"safe_policy": gridworld(0.4), "delta": 0.1}),
    (RandomCMDPFamily(20, 3, radius=0.1, base_seed=1), 0.025, {"delta": 0.1}),
], ids=["gridworld_cost", "random_cmdp"])
def test_other_families(family, eps, kw):
    ps = _train(family, eps, **kw)
    rows = audit_profiles(ps, _fresh(family, 100), seeds=range(10), profiles=("certified",))
    print(format_audit(rows))
    assert rows[0].runs_with_violation == 0
    assert rows[0].candidate_weight > 0.5


@pytest.mark.slow
def test_frozenlake_family():
    from safemeta_fast.envs.frozenlake import FrozenLakeFamily

    fam = FrozenLakeFamily()
    ps = _train(fam, 0.02)
    rows = audit_profiles(ps, _fresh(fam, 10), seeds=range(10),
                          profiles=("certified", "reference"))
    print(format_audit(rows))
    cert, ref = rows
    assert cert.runs_with_violation == 0 and cert.candidate_weight > 0.3
    assert ref.candidate_weight < 0.1 and cert.regret_mean < 0.5 * ref.regret_mean
