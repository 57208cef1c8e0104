"""Units you can trust (issue 10): a unit that does not match its run folder (another
method's file, an edited tasks.json, a replaced start_policies.npz or policy set) or that
cannot be read is reported by path and re-run, never summarised; a dead pool worker is an
error naming its job, never a hang."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading

import numpy as np
import pytest

from safemeta_fast.experiments import scheduler, units
from safemeta_fast.experiments.paper import PaperConfig, run_paper, summarise
from safemeta_fast.policyset import PolicySet
from safemeta_fast.runio import load_npz, save_npz
from tests.damage import corrupt_member

CFG = PaperConfig(methods=("safe_pce", "safe_policy"), n_tasks=1, n_episodes=60, warmup=10)


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("units") / "run"
    run = run_paper(CFG, out, jobs=1, progress=False, figures=False, echo=_quiet)
    assert run.n_run == 2 and not run.failures
    return out


@pytest.fixture
def folder(base, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def _unit(out, method):
    return out / "runs" / method / "task0_seed0.npz"


def _rerun(out):
    notes = []
    run = run_paper(CFG, out, jobs=1, progress=False, figures=False, echo=notes.append)
    return run, notes


def test_unit_of_another_method_is_reported_and_rerun(folder):
    shutil.copy(_unit(folder, "safe_policy"), _unit(folder, "safe_pce"))
    with pytest.warns(RuntimeWarning, match="does not match the run folder") as caught:
        s = summarise(folder, figures=False)
    assert s["methods"]["safe_pce"]["n_runs"] == 0  # never summarised as safe_pce
    assert str(_unit(folder, "safe_pce")) in str(caught[0].message)
    run, notes = _rerun(folder)
    assert (run.n_run, run.n_skipped) == (1, 1)
    said = [n for n in notes if str(_unit(folder, "safe_pce")) in n]
    assert said and "method: recorded 'safe_policy', expected 'safe_pce'" in said[0]
    assert load_npz(_unit(folder, "safe_pce"))[1]["method"] == "safe_pce"
    assert run.summary["methods"]["safe_pce"]["n_runs"] == 1


def _edit_u_opt(out):
    doc = json.loads((out / "tasks.json").read_text())
    doc["tasks"][0]["u_opt"] += 1.0
    (out / "tasks.json").write_text(json.dumps(doc))
    return {"safe_pce", "safe_policy"}, "input task"


def _replace_start_policies(out):
    arrays, meta = load_npz(out / "start_policies.npz")
    pi = arrays["pi_s"]
    arrays["pi_s"] = 0.5 * pi + 0.5 / pi.shape[1]  # another valid policy
    save_npz(out / "start_policies.npz", arrays, meta)
    return {"safe_policy"}, "input pi_s"  # the PCE family reads the policy set instead


def _replace_policy_set(out):
    ps = PolicySet.load(out / "policyset.npz")
    dataclasses.replace(ps, info={**ps.info, "edited": True}).save(out / "policyset.npz")
    return {"safe_pce"}, "input policy_set"


@pytest.mark.parametrize("edit", [_edit_u_opt, _replace_start_policies, _replace_policy_set])
def test_unit_whose_input_changed_is_reported_and_rerun(folder, edit):
    stale, what = edit(folder)
    with pytest.warns(RuntimeWarning, match=what):
        s = summarise(folder, figures=False)
    assert {m for m, e in s["methods"].items() if e["n_runs"] == 0} == stale
    run, notes = _rerun(folder)
    assert (run.n_run, run.n_skipped) == (len(stale), 2 - len(stale))
    for m in stale:
        assert any(n.startswith(f"unit {_unit(folder, m)} does not match the run folder, "
                                "will be re-run") and what in n for n in notes), m
    tasks = json.loads((folder / "tasks.json").read_text())["tasks"]
    for m in ("safe_pce", "safe_policy"):
        assert load_npz(_unit(folder, m))[1]["u_opt"] == tasks[0]["u_opt"]
    again, notes = _rerun(folder)  # now consistent: nothing to do, nothing reported
    assert (again.n_run, again.n_skipped) == (0, 2) and not any("re-run" in n for n in notes)


def test_unit_with_corrupted_array_is_reported_and_rerun(folder):
    path = _unit(folder, "safe_policy")
    good, _ = load_npz(path)
    corrupt_member(path, "exact_cost.npy", "inflate")  # a raw zlib.error for np.load
    with pytest.warns(RuntimeWarning, match="unreadable unit .*left out of this summary"):
        s = summarise(folder, figures=False)
    assert s["methods"]["safe_policy"]["n_runs"] == 0
    run, notes = _rerun(folder)
    assert (run.n_run, run.n_skipped) == (1, 1)
    assert any(n.startswith(f"unreadable unit {path}, will be re-run") for n in notes)
    np.testing.assert_array_equal(load_npz(path)[0]["exact_cost"], good["exact_cost"])


def test_unit_files_are_0644(base):
    for p in base.rglob("*.npz"):
        assert oct(p.stat().st_mode & 0o777) == "0o644", p


# -- a dying worker -----------------------------------------------------------------------


def _ten_times(job):
    """Pool work: job 2 kills its worker in the way ``job`` says."""
    if job["n"] == 2:
        if job["how"] == "exit":
            os._exit(1)
        if job["how"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("boom outside any unit guard")
    return 10 * job["n"]


def _bounded(fn, seconds=240):
    """Run ``fn()`` in a thread; fail (instead of hanging CI) if it does not return."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the scheduler did not return within {seconds} s (a hang)"
    return box


@pytest.mark.parametrize("how, said", [
    ("exit", "died with exit code 1 while running unit 2"),
    ("kill", "died with signal SIGKILL while running unit 2"),
    ("raise", "failed while running unit 2: RuntimeError: boom"),
])
def test_dead_worker_is_an_error_naming_the_unit(how, said):
    done = []
    plan = scheduler.Plan(jobs=[{"n": n, "how": how} for n in range(5)],
                          on_result=lambda job, res: done.append((job["n"], res)),
                          run=_ten_times, describe=lambda job: f"unit {job['n']}")
    box = _bounded(lambda: scheduler.run_pool(plan, 2))
    assert isinstance(box.get("error"), scheduler.WorkerError), box
    assert said in str(box["error"])
    assert all(res == 10 * n for n, res in done) and 2 not in {n for n, _ in done}


def test_pool_without_deaths_returns_every_result():
    done = []
    plan = scheduler.Plan(jobs=[{"n": n, "how": "none"} for n in (0, 1, 3, 4)],
                          on_result=lambda job, res: done.append((job["n"], res)),
                          run=_ten_times)
    box = _bounded(lambda: scheduler.run_pool(plan, 2))
    assert "error" not in box, box
    assert sorted(done) == [(0, 0), (1, 10), (3, 30), (4, 40)]


def test_units_api_lists_nothing_for_a_finished_folder(base):
    from safemeta_fast.runio import read_json

    doc = read_json(base / "config.json")
    todo, n_done = units.list_units(base, CFG, doc, echo=_quiet)
    assert todo == [] and n_done == 2
