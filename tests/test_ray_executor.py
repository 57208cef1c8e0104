"""``safemeta reproduce --executor ray``: a real local Ray (2 CPUs), a 4-unit sweep compared
bit for bit with the process pool, and resume across executors."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.experiments.paper import PaperConfig, run_paper
from safemeta_fast.runio import load_npz

ray = pytest.importorskip("ray")  # in the test extra, so CI always has it

CFG = dict(methods=("ours", "safe_policy"), n_tasks=2, n_episodes=300, n_seeds=1)


def _units(out):
    found = {}
    for p in sorted(out.glob("runs/*/*.npz")):
        arrays, meta = load_npz(p, required={})
        found[(p.parent.name, p.name)] = (arrays, meta)
    return found


def test_ray_sweep_equals_process_pool_and_resumes(tmp_path):
    cfg = PaperConfig(**CFG)
    a = run_paper(cfg, tmp_path / "pool", jobs=2, progress=False, figures=False,
                  echo=lambda *_: None)
    b = run_paper(cfg, tmp_path / "ray", jobs=2, progress=False, figures=False,
                  echo=lambda *_: None, executor="ray")
    assert a.n_run == b.n_run == 4 and not a.failures and not b.failures
    ua, ub = _units(tmp_path / "pool"), _units(tmp_path / "ray")
    assert ua.keys() == ub.keys() and len(ua) == 4
    for key in ua:
        for name in ("regret", "exact_reward", "exact_cost", "policy_starts", "violations"):
            np.testing.assert_array_equal(ua[key][0][name], ub[key][0][name], err_msg=str(key))
        assert ua[key][1]["final_regret"] == ub[key][1]["final_regret"]
    sa, sb = a.summary["methods"], b.summary["methods"]
    for m in CFG["methods"]:
        assert sa[m]["final_regret_per_run"] == sb[m]["final_regret_per_run"]
    # resume across executors: a pool run on the Ray folder has nothing left to do
    c = run_paper(PaperConfig(**{**CFG, "n_tasks": 3}), tmp_path / "ray", jobs=2, progress=False,
                  figures=False, echo=lambda *_: None, executor="ray")
    assert c.n_skipped == 4 and c.n_run == 2
    d = run_paper(PaperConfig(**{**CFG, "n_tasks": 3}), tmp_path / "ray", jobs=1, progress=False,
                  figures=False, echo=lambda *_: None)
    assert d.n_skipped == 6 and d.n_run == 0


def test_executor_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="executor is 'dask'"):
        run_paper(PaperConfig(**CFG), tmp_path, executor="dask")
    with pytest.raises(ValueError, match="address is only used"):
        run_paper(PaperConfig(**CFG), tmp_path, address="auto")
