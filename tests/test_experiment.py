"""The paper experiment: `safemeta reproduce`, run folders, resume, summary and figures."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil

import numpy as np
import pytest

from safemeta_fast.cli import main
from safemeta_fast.experiments import summary as paper_summary
from safemeta_fast.experiments import units
from safemeta_fast.experiments.paper import (
    METHODS,
    ConfigMismatchError,
    PaperConfig,
    derive_seed,
    format_summary,
    run_paper,
    summarise,
)
from safemeta_fast.runio import (
    META_KEY,
    TMP_SUFFIX,
    RunFolderError,
    config_diff,
    config_hash,
    load_npz,
    save_npz,
)

K = 400
N_TASKS = 2
ARGS = ["reproduce", "--tasks", str(N_TASKS), "--episodes", str(K), "--jobs", "1",
        "--warmup", "150", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One reduced CLI run with every method (2 tasks, K = 400, jobs = 1)."""
    out = tmp_path_factory.mktemp("paper") / "run"
    code, text, err = _cli(ARGS + ["--out", str(out)])
    assert code == 0, err
    return out, text


def _unit_files(out):
    return sorted(out.glob("runs/*/*.npz"))


def test_cli_writes_every_output(folder):
    out, text = folder
    for name in ("config.json", "tasks.json", "policyset.npz", "start_policies.npz",
                 "summary.json", "summary.csv", "figure2.png", "figure_more_baselines.png",
                 "figure1.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for m in METHODS:
        for t in range(N_TASKS):
            assert (out / "runs" / m / f"task{t}_seed0.npz").is_file(), (m, t)
    assert len(_unit_files(out)) == len(METHODS) * N_TASKS
    assert f"units run now: {len(METHODS) * N_TASKS}" in text
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))


def test_figures_are_png(folder):
    out, _ = folder
    for name in ("figure2.png", "figure_more_baselines.png", "figure1.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name


def test_unit_files_hold_consistent_arrays(folder):
    out, _ = folder
    cfg = json.loads((out / "config.json").read_text())
    tasks = json.loads((out / "tasks.json").read_text())["tasks"]
    for path in _unit_files(out):
        arrays, meta = load_npz(path, required=units.UNIT_ARRAYS)
        m, t = meta["method"], meta["task"]
        assert path.parent.name == m and path.name == f"task{t}_seed{meta['seed_index']}.npz"
        r, c, reg = arrays["exact_reward"], arrays["exact_cost"], arrays["regret"]
        assert r.shape == (K,) and c.shape == (K, 1) and reg.shape == (K,)
        u_opt = tasks[t]["u_opt"]
        assert meta["u_opt"] == u_opt
        gap = u_opt - r
        want = np.cumsum(np.abs(gap) if m == "pce" else gap)
        np.testing.assert_allclose(reg, want, rtol=0, atol=1e-9)
        assert int(arrays["violations"]) == meta["violations"] == int(np.sum(c[:, 0] > 1.5 + 1e-9))
        assert float(arrays["wall_time"]) == meta["wall_time"] >= 0
        assert meta["seed"] == cfg["unit_seeds"][m][f"task{t}_seed0"] == derive_seed(0, m, t, 0)
        assert meta["result_hash"] == cfg["result_hash"]
        if m == "safe_policy":  # exact values of pi_s, repeated
            np.testing.assert_allclose(r, tasks[t]["safe_policy"]["reward"], rtol=0, atol=1e-12)
        if m == "dope":
            assert meta["inferred"] and "[inferred]" in meta["label"]
    assert cfg["parameters"]["resolved_warmup"] == 150


def test_summary_equals_recomputation(folder):
    out, _ = folder
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["method"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    assert set(summary["methods"]) == set(METHODS) == set(rows)
    for m in METHODS:
        finals, costs, viol, wall = [], [], [], 0.0
        for t in range(N_TASKS):
            arrays, meta = load_npz(out / "runs" / m / f"task{t}_seed0.npz")
            finals.append(arrays["regret"][-1])
            costs.append(arrays["exact_cost"][:, 0])
            viol.append(int(arrays["violations"]))
            wall += float(arrays["wall_time"])
        e = summary["methods"][m]
        q10, q90 = np.quantile(finals, [0.1, 0.9])
        allc = np.concatenate(costs)
        assert e["n_runs"] == N_TASKS
        assert e["mean_final_regret"] == pytest.approx(np.mean(finals), rel=1e-12)
        assert e["q10_final_regret"] == pytest.approx(q10, rel=1e-12)
        assert e["q90_final_regret"] == pytest.approx(q90, rel=1e-12)
        assert e["mean_exact_cost"] == pytest.approx(allc.mean(), rel=1e-12)
        assert e["max_exact_cost"] == pytest.approx(allc.max(), rel=1e-12)
        assert e["total_violations"] == sum(viol)
        assert e["runs_with_violations"] == sum(v > 0 for v in viol)
        assert e["wall_time_s"] == pytest.approx(wall, rel=1e-12)
        assert e["paper_mean_final_regret"] == METHODS[m].paper_mean
        assert float(rows[m]["mean_final_regret"]) == pytest.approx(e["mean_final_regret"],
                                                                     rel=1e-9)
        assert int(rows[m]["total_violations"]) == e["total_violations"]
    assert summary["methods"]["safe_pce"]["paper_mean_final_regret"] == 40_000
    assert summary["methods"]["safe_policy"]["paper_mean_final_regret"] == 95_500


def test_table_flags_violations_loudly(folder):
    _, text = folder
    summary = json.loads((folder[0] / "summary.json").read_text())
    for m, e in summary["methods"].items():
        loud = f"!!! SAFETY VIOLATIONS: {m}:"
        assert (loud in text) == (e["total_violations"] > 0), m
    assert summary["methods"]["pce"]["total_violations"] > 0  # PCE deploys unsafe candidates
    for m in ("safe_pce", "safe_policy"):
        assert summary["methods"][m]["total_violations"] == 0


def test_u_opt_and_start_values_match_baselines_2d(folder):
    out, _ = folder
    tasks = json.loads((out / "tasks.json").read_text())["tasks"]
    # BASELINES.md 2d: noise, exact LP, u_opt, V_r(pi_s), V_c(pi_s), V_r(pi_LB), V_c(pi_LB)
    table = [(0.33994760, 49.4706, 49.4664, 47.5976, 1.1315, 37.2281, 1.1230),
             (0.25363799, 54.3792, 54.3663, 51.1343, 0.7153, 39.8622, 0.6994)]
    for t, (noise, lp, u, vr, vc, lr, lc) in zip(tasks, table):
        assert t["noise"] == noise
        assert round(t["lp_optimum"], 4) == lp
        assert round(t["u_opt"], 4) == u
        assert round(t["safe_policy"]["reward"], 4) == vr
        assert round(t["safe_policy"]["cost"][0], 4) == vc
        assert round(t["lb_start"]["reward"], 4) == lr
        assert round(t["lb_start"]["cost"][0], 4) == lc


def test_second_run_skips_every_unit(folder):
    out, _ = folder
    before = {p: p.stat().st_mtime_ns for p in _unit_files(out)}
    ps_before = (out / "policyset.npz").stat().st_mtime_ns
    code, text, err = _cli(ARGS + ["--out", str(out)])
    assert code == 0, err
    assert f"units run now: 0, skipped (already finished): {len(METHODS) * N_TASKS}" in text
    assert {p: p.stat().st_mtime_ns for p in _unit_files(out)} == before
    assert (out / "policyset.npz").stat().st_mtime_ns == ps_before


def test_changed_parameter_is_refused(folder):
    out, _ = folder
    before = {p: p.stat().st_mtime_ns for p in _unit_files(out)}
    config_before = (out / "config.json").read_bytes()
    argv = [a if a != str(K) else "300" for a in ARGS] + ["--seed", "5", "--out", str(out)]
    code, _, err = _cli(argv)
    assert code == 1
    assert "ConfigMismatchError" in err and "n_episodes" in err and "seed" in err
    assert "warmup" not in err.split("differing keys:")[1].split(";")[0]  # --warmup unchanged
    with pytest.raises(ConfigMismatchError, match="horizon"):
        run_paper(PaperConfig(n_tasks=N_TASKS, n_episodes=K, warmup=150, horizon=500), out,
                  jobs=1, progress=False, echo=lambda *a: None)
    assert {p: p.stat().st_mtime_ns for p in _unit_files(out)} == before
    assert (out / "config.json").read_bytes() == config_before


def test_extending_the_selection_reuses_finished_units(folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder[0], out)
    cfg = PaperConfig(methods=("safe_policy", "safe_pce"), n_tasks=3, n_episodes=K, warmup=150)
    run = run_paper(cfg, out, jobs=1, progress=False, figures=False, echo=lambda *a: None)
    assert (run.n_run, run.n_skipped, run.n_units) == (2, 4, 6)
    tasks = json.loads((out / "tasks.json").read_text())["tasks"]
    assert len(tasks) == 3 and round(tasks[2]["u_opt"], 4) == 50.8193  # BASELINES 2d row 3
    assert run.summary["methods"]["safe_policy"]["n_runs"] == 3


def test_unit_from_another_configuration_is_refused(folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder[0], out)
    path = out / "runs" / "safe_policy" / "task0_seed0.npz"
    arrays, meta = load_npz(path)
    meta["result_hash"] = "0" * 16
    save_npz(path, arrays, meta)
    with pytest.raises(ConfigMismatchError, match="task0_seed0"):
        run_paper(PaperConfig(methods=("safe_policy",), n_tasks=N_TASKS, n_episodes=K,
                              warmup=150), out, jobs=1, progress=False, echo=lambda *a: None)


def test_damaged_unit_and_stale_temporary_are_recomputed(folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder[0], out)
    path = out / "runs" / "safe_policy" / "task1_seed0.npz"
    good, _ = load_npz(path)
    path.write_bytes(path.read_bytes()[:100])  # truncated by hand
    stale = out / "runs" / "safe_pce" / f".task0_seed0.npz.xyz{TMP_SUFFIX}"
    stale.write_bytes(b"half")
    notes = []
    run = run_paper(PaperConfig(methods=("safe_policy",), n_tasks=N_TASKS, n_episodes=K,
                                warmup=150), out, jobs=1, progress=False, figures=False,
                    echo=notes.append)
    assert run.n_run == 1 and run.n_skipped == 1
    assert any(n.startswith(f"unreadable unit {path}, will be re-run") for n in notes)
    assert not stale.exists()
    again, _ = load_npz(path)
    np.testing.assert_array_equal(again["regret"], good["regret"])


def test_interrupt_keeps_finished_units(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = PaperConfig(methods=("safe_policy",), n_tasks=2, n_episodes=50)
    calls = []
    original = units.RUNNERS["safe_policy"]

    def flaky(ctx, M, job):
        calls.append(job["task"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(ctx, M, job)

    monkeypatch.setitem(units.RUNNERS, "safe_policy", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_paper(cfg, out, jobs=1, progress=False, figures=False, echo=lambda *a: None)
    done = _unit_files(out)
    assert len(done) == 1
    load_npz(done[0], required=units.UNIT_ARRAYS)  # complete, readable
    monkeypatch.setitem(units.RUNNERS, "safe_policy", original)
    run = run_paper(cfg, out, jobs=1, progress=False, figures=False, echo=lambda *a: None)
    assert (run.n_run, run.n_skipped) == (1, 1)


def test_process_pool_matches_in_process(tmp_path):
    cfg = PaperConfig(methods=("safe_pce", "pce", "safe_policy"), n_tasks=1, n_episodes=300)
    a = run_paper(cfg, tmp_path / "a", jobs=2, progress=False, figures=False, echo=lambda *x: None)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "policyset.npz", tmp_path / "b" / "policyset.npz")  # same inputs
    b = run_paper(cfg, tmp_path / "b", jobs=1, progress=False, figures=False, echo=lambda *x: None)
    assert a.n_run == b.n_run == 3 and not a.failures
    for m in cfg.methods:
        x, mx = load_npz(tmp_path / "a" / "runs" / m / "task0_seed0.npz")
        y, my = load_npz(tmp_path / "b" / "runs" / m / "task0_seed0.npz")
        for key in ("regret", "exact_reward", "exact_cost", "violations", "policy_starts"):
            np.testing.assert_array_equal(x[key], y[key])
        assert mx["seed"] == my["seed"]


def test_seed_derivation_is_deterministic_and_distinct():
    seeds = [derive_seed(0, m, t, j) for m in METHODS for t in range(10) for j in range(5)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [derive_seed(0, m, t, j) for m in METHODS for t in range(10) for j in range(5)]
    assert derive_seed(1, "safe_pce", 0, 0) != derive_seed(0, "safe_pce", 0, 0)
    # 32-bit views stay distinct too (numba's np.random keeps 32 bits of a seed)
    assert len({s & 0xFFFFFFFF for s in seeds}) == len(seeds)
    with pytest.raises(ValueError, match="task"):
        derive_seed(0, "safe_pce", -1, 0)
    with pytest.raises(TypeError, match="method"):
        derive_seed(0, 3, 0, 0)


def test_quick_preset_and_warmup_fraction():
    q = PaperConfig.quick_preset()
    assert (q.n_tasks, q.n_episodes, q.n_seeds, q.quick) == (3, 5000, 1, True)
    assert q.methods == tuple(METHODS)
    assert q.resolved_warmup == 2250 == round(18_000 * 5000 / 40_000)
    assert PaperConfig().resolved_warmup == 18_000
    assert PaperConfig.quick_preset(n_episodes=800, warmup=10).resolved_warmup == 10
    assert q.test_noises == (0.33994760, 0.25363799, 0.31864008)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"methods": ("safe_pce", "nope")}, ValueError, r"methods\[1\] is 'nope'"),
    ({"methods": ("safe_pce", "safe_pce")}, ValueError, "twice"),
    ({"methods": ()}, ValueError, "empty"),
    ({"n_tasks": 11}, ValueError, "n_tasks is 11"),
    ({"n_episodes": 0}, ValueError, "n_episodes is 0"),
    ({"n_seeds": 1.5}, TypeError, "n_seeds"),
    ({"warmup": 50_000}, ValueError, "warmup is 50000"),
    ({"train_delta": 1.0}, ValueError, "train_delta"),
])
def test_config_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PaperConfig(**kwargs)


def test_run_paper_validation(tmp_path):
    with pytest.raises(TypeError, match="PaperConfig"):
        run_paper({"n_tasks": 1}, tmp_path)
    with pytest.raises(ValueError, match="jobs is 0"):
        run_paper(PaperConfig(n_tasks=1), tmp_path, jobs=0)
    code, _, err = _cli(["reproduce", "--methods", "bogus", "--out", str(tmp_path / "x")])
    assert code == 2 and "bogus" in err


def test_summarise_reads_a_folder_alone(folder):
    s = summarise(folder[0], figures=False)
    assert s["methods"]["safe_pce"]["n_runs"] == N_TASKS and s["n_episodes"] == K


# -- runio -------------------------------------------------------------------------------


def test_runio_roundtrip_and_damage(tmp_path):
    p = save_npz(tmp_path / "x.npz", {"a": np.arange(4.0), "b": np.int64(3)},
                 {"k": np.float64(1.5), "t": (1, 2)})
    arrays, meta = load_npz(p, required={"a": 1, "b": 0})
    assert arrays["a"].tolist() == [0, 1, 2, 3] and meta == {"k": 1.5, "t": [1, 2]}
    assert oct(os.stat(p).st_mode & 0o077) != "0o0"  # an ordinary file mode, not mkstemp's 0600
    with pytest.raises(RunFolderError, match="dimension"):
        load_npz(p, required={"a": 2})
    with pytest.raises(RunFolderError, match="'c' is missing"):
        load_npz(p, required={"c": 1})
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(RunFolderError, match="not a readable"):
        load_npz(p)
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(RunFolderError, match=META_KEY):
        load_npz(tmp_path / "plain.npz")
    with pytest.raises(TypeError, match="object"):
        save_npz(tmp_path / "o.npz", {"a": np.array([None])}, {})
    assert not list(tmp_path.glob(f".*{TMP_SUFFIX}"))


def test_config_hash_and_diff():
    assert config_hash({"a": 1, "b": (1, 2)}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}) == ["b", "c"]
    assert config_diff({"x": 0.1}, {"x": 0.1}) == []


# -- plotting and bands --------------------------------------------------------------------


def test_bands_ignore_stopped_runs():
    X = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, np.nan], [5.0, 6.0, np.nan]])
    b = paper_summary.bands("regret", X)
    np.testing.assert_allclose(b["regret_mean"], [3.0, 4.0, 3.0])
    np.testing.assert_allclose(b["regret_q10"], np.nanquantile(X, 0.1, axis=0))
    full = paper_summary.bands("cost", X[:, :2])
    np.testing.assert_allclose(full["cost_q90"], np.quantile(X[:, :2], 0.9, axis=0))


def test_plot_validation(tmp_path):
    from safemeta_fast import plotting
    from safemeta_fast.envs import gridworld

    k = np.arange(5.0)
    cv = {"label": "A", "episodes": np.arange(4), **{f"{n}_{s}": k for n in ("regret", "cost")
                                                       for s in ("mean", "q10", "q90")}}
    with pytest.raises(ValueError, match="episodes"):
        plotting.plot_regret_cost({"a": cv}, cost_limit=1.5, path=tmp_path / "f.png")
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_regret_cost({}, cost_limit=1.5, path=tmp_path / "f.png")
    with pytest.raises(ValueError, match="policy has shape"):
        plotting.plot_gridworld_policies([(gridworld(0.3), np.ones((49, 3)) / 3, "t")],
                                         path=tmp_path / "g.png")
    assert plotting.thin_indices(10).tolist() == list(range(10))
    idx = plotting.thin_indices(40_000)
    assert idx[0] == 0 and idx[-1] == 39_999 and idx.size <= plotting.MAX_POINTS
    # min/max-preserving decimation keeps isolated spikes (27 of 65 were lost before)
    y = np.ones(40_000)
    spikes = np.random.default_rng(0).choice(40_000, 65, replace=False)
    y[spikes] = 3.0
    y[123] = -1.0
    kept = plotting.thin_indices(40_000, y)
    width = 40_000 / (plotting.MAX_POINTS // 3) + 1  # one bucket
    hits = kept[y[kept] == 3.0]
    assert all(np.min(np.abs(hits - s)) < width for s in spikes) and 123 in kept
    assert kept.size <= plotting.MAX_POINTS + 2
    assert not list(tmp_path.iterdir())


def test_runio_metadata_only(tmp_path):
    p = save_npz(tmp_path / "m.npz", {"a": np.zeros((2, 2))}, {"k": 1})
    arrays, meta = load_npz(p, required={"a": 2}, metadata_only=True)
    assert arrays == {} and meta == {"k": 1}
    with pytest.raises(RunFolderError, match="'b' is missing"):
        load_npz(p, required={"b": 1}, metadata_only=True)


def test_cli_quick_preset_with_overrides(tmp_path):
    out = tmp_path / "q"
    code, text, err = _cli(["reproduce", "--quick", "--methods", "safe_policy", "--tasks", "1",
                            "--episodes", "100", "--jobs", "1", "--no-progress", "--out", str(out)])
    assert code == 0, err
    params = json.loads((out / "config.json").read_text())["parameters"]
    assert params["quick"] is True and params["n_seeds"] == 1 and params["n_tasks"] == 1
    assert params["resolved_warmup"] == 45 == round(18_000 * 100 / 40_000)
    assert "(quick)" in text and "units run now: 1" in text
    assert (out / "figure2.png").is_file() and not (out / "figure_more_baselines.png").exists()


def test_failing_unit_is_reported_and_others_go_on(tmp_path, monkeypatch):
    original = units.RUNNERS["safe_policy"]

    def broken(ctx, M, job):
        if job["task"] == 0:
            raise ValueError("boom in task 0")
        return original(ctx, M, job)

    monkeypatch.setitem(units.RUNNERS, "safe_policy", broken)
    notes = []
    run = run_paper(PaperConfig(methods=("safe_policy",), n_tasks=2, n_episodes=50), tmp_path,
                    jobs=1, progress=False, figures=False, echo=notes.append)
    assert run.n_run == 1 and len(run.failures) == 1
    assert run.failures[0]["task"] == 0 and "boom in task 0" in run.failures[0]["error"]
    assert any(n.startswith("!!! UNIT FAILED: safe_policy task 0") for n in notes)
    assert not (tmp_path / "runs" / "safe_policy" / "task0_seed0.npz").exists()
    e = run.summary["methods"]["safe_policy"]
    assert (e["n_runs"], e["n_expected"]) == (1, 2)
    assert "only 1 of 2 runs finished" in format_summary(run.summary)


def test_summary_covers_every_method_on_disk(folder, tmp_path):
    """A later run with fewer methods still summarises the units of the others."""
    import shutil

    out, _ = folder
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    code, text, err = _cli(ARGS + ["--out", str(copy), "--methods", "safe_policy"])
    assert code == 0, err
    summary = json.loads((copy / "summary.json").read_text())
    assert set(summary["methods"]) == set(METHODS)
    assert summary["methods"]["ours"]["n_runs"] == N_TASKS


def test_progress_csv_per_unit(folder):
    """OmniSafe-style progress.csv next to every unit: observed and exact side by side."""
    import csv

    from safemeta_fast.experiments.paper import PROGRESS_BLOCK

    out, _ = folder
    for unit in _unit_files(out):
        rows = list(csv.DictReader(unit.with_suffix(".progress.csv").open()))
        arrays, _ = load_npz(unit, required={})
        er = arrays["exact_reward"]
        assert len(rows) == -(-er.size // PROGRESS_BLOCK)
        assert int(rows[-1]["Episode"]) == er.size
        assert float(rows[0]["Exact/EpRet"]) == pytest.approx(er[:PROGRESS_BLOCK].mean(), rel=1e-9)
        assert float(rows[-1]["Regret"]) == pytest.approx(arrays["regret"][-1], rel=1e-9)
        assert sum(int(r["Violations"]) for r in rows) == int(arrays["violations"])
        sampled = unit.parent.name in ("ours", "safe_pce", "safe_pce_paper", "pce")
        assert (rows[0]["Metrics/EpRet"] != "") == sampled
        if sampled:
            obs = arrays["observed_reward"][:PROGRESS_BLOCK].mean()
            assert float(rows[0]["Metrics/EpRet"]) == pytest.approx(obs, rel=1e-9)
