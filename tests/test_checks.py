"""The open-check experiments (safemeta_fast.experiments.checks) on tiny settings.

Each experiment runs through :func:`run_experiment` with small sizes passed as
parameters; the results files are checked against recounts from the stored arrays.
Experiments that need a policy set share one run folder's trained set: the tiny
recipe (eps 0.02, delta 0.2, 200 + 200 calibration tasks) is trained once per module and
copied into each folder as ``policyset.npz``, which the run folder then loads.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from safemeta_fast.experiments.checks import (
    EXPERIMENTS,
    SAFE_POLICY_OPTIONS,
    quantile_noises,
    run_experiment,
)
from safemeta_fast.experiments.paper import ConfigMismatchError
from safemeta_fast.runio import load_npz

TINY_TRAIN = {"train_eps": 0.02, "train_delta": 0.2, "n_reference": 200, "n_calibration": 200}


def _results(folder):
    doc = json.loads((folder / "results.json").read_text())
    assert (folder / "results.csv").read_text().count("\n") == len(doc["rows"]) + 1
    for fig in doc["figures"]:
        assert (folder / fig).stat().st_size > 1000
    return doc


@pytest.fixture(scope="module")
def tiny_policy_set(tmp_path_factory):
    """policyset.npz of the tiny recipe, trained once (by the shift experiment's helper)."""
    from safemeta_fast.experiments.checks import _policy_set
    from safemeta_fast.experiments.runfolder import RunFolder

    d = tmp_path_factory.mktemp("ps")
    rf = RunFolder(d, "shift", dict(TINY_TRAIN))
    _policy_set(rf, 0, False)
    return d / "policyset.npz"


def _seeded(tmp_path, name, policy_set):
    out = tmp_path / name
    out.mkdir()
    shutil.copy(policy_set, out / "policyset.npz")
    return out


def test_registry_and_unknown_name():
    assert set(EXPERIMENTS) == {"safe-policy", "shift", "alpha-schedule", "margin", "cover",
                                "oracle-noise", "dimension"}
    with pytest.raises(ValueError, match="experiment is 'nope'"):
        run_experiment("nope", "/tmp/x")


def test_safe_policy_rates_recount_from_slacks(tmp_path):
    out = tmp_path / "sp"
    res = run_experiment("safe-policy", out, progress=False, n_tasks=60, chunk=25, **{
        "train_eps": 0.02, "train_delta": 0.2})
    doc = _results(out)
    arrays, meta = load_npz(out / "slacks.npz")
    slack, covered, G, L = arrays["slack"], arrays["covered"], meta["G"], meta["L"]
    assert slack.shape == (60, len(SAFE_POLICY_OPTIONS))
    assert [r["option"] for r in doc["rows"]] == list(SAFE_POLICY_OPTIONS)
    for j, row in enumerate(doc["rows"]):
        assert 0.0 <= row["violation_rate"] <= 1.0
        bound = row["xi_hat"] / G - meta["eps_model"] * L
        assert row["bound_normalised"] == pytest.approx(bound)
        assert row["violation_rate"] == pytest.approx(np.mean(slack[:, j] / G < bound))
        assert row["infeasible_rate"] == pytest.approx(np.mean(slack[:, j] < 0))
        assert row["below_xi_hat_rate"] == pytest.approx(np.mean(slack[:, j] < row["xi_hat"]))
        assert row["covered_tasks"] == int(covered.sum())
        assert row["slack_min"] == pytest.approx(slack[:, j].min())
        assert row["bound_implies_feasibility"] == (bound >= 0)
    # pi_s = LP optimum of noise 0.4: exact slack on noise 0.4 is 0, slack on D is positive
    assert doc["rows"][0]["slack_min"] > 0
    # resume: nothing recomputed, same numbers; changed parameters refused, keys named
    again = run_experiment("safe-policy", out, progress=False, n_tasks=60, chunk=25,
                           train_eps=0.02, train_delta=0.2)
    assert again["parts_computed"] == 0 and again["parts_skipped"] == res["parts_computed"]
    assert again["rows"] == doc["rows"]
    with pytest.raises(ConfigMismatchError, match="n_tasks"):
        run_experiment("safe-policy", out, progress=False, n_tasks=61, chunk=25,
                       train_eps=0.02, train_delta=0.2)
    with pytest.raises(ValueError, match="n_tasks"):
        run_experiment("safe-policy", tmp_path / "bad", progress=False, n_tasks=0)


def test_shift_certified_refutes_far_shift(tmp_path, tiny_policy_set):
    out = _seeded(tmp_path, "shift", tiny_policy_set)
    run_experiment("shift", out, progress=False, shifts=(0, 4.2), wide_std=None, n_tasks=8,
                   n_seeds=2, n_episodes=3000, **TINY_TRAIN)
    doc = _results(out)
    rows = {(r["distribution"], r["profile"]): r for r in doc["rows"]}
    assert set(rows) == {(d, p) for d in ("mean+0std", "mean+4.2std")
                         for p in ("certified", "reference", "paper")}
    arrays, meta = load_npz(out / "parts" / "shift_mean+4.2std.npz")
    cert = arrays["profile"] == meta["profiles"].index("certified")
    far = rows[("mean+4.2std", "certified")]
    assert far["refuted_runs"] == int((arrays["refuted_at"][cert] >= 0).sum()) > 0
    assert 0 < far["refuted_rate"] <= 1
    assert 0 <= far["refuted_at_min"] <= far["refuted_at_median"] < 3000
    assert far["refuted_alive_empty"] and far["refuted_fallback_only_pi_s"]
    assert np.all(arrays["alive_end"][cert][arrays["refuted_at"][cert] >= 0] == 0)
    near = rows[("mean+0std", "certified")]
    # on D itself: no violation; refutations allowed only at the tiny calibration's
    # delta (0.1 + 0.1) and far rarer than on the far shift
    assert near["runs_with_violation"] == 0
    assert near["refuted_rate"] <= 0.2 < far["refuted_rate"]
    # far shift: pi_s itself is infeasible on those tasks, so the fallback cannot be safe
    assert far["tasks_pi_s_infeasible"] > 0
    for r in doc["rows"]:
        assert 0 <= r["violation_run_rate"] <= 1
        assert r["runs"] == 2 * r["tasks"] and r["tasks"] + r["tasks_infeasible_dropped"] == 8


def test_alpha_schedule_rows(tmp_path, tiny_policy_set):
    out = _seeded(tmp_path, "alpha", tiny_policy_set)
    run_experiment("alpha-schedule", out, progress=False, n_tasks=3, n_seeds=2, n_episodes=2000,
                   **TINY_TRAIN)
    doc = _results(out)
    assert [r["profile"] for r in doc["rows"]] == ["paper", "fixed_alpha_0.1", "reference",
                                                   "certified"]
    assert "linear" in doc["skipped"]
    assert doc["noises"] == pytest.approx(quantile_noises(3).tolist())
    for r in doc["rows"]:
        arrays, _ = load_npz(out / "parts" / f"profile_{r['profile']}.npz")
        assert r["runs"] == 6 == arrays["final_regret"].size
        assert r["mean_regret"] == pytest.approx(arrays["final_regret"].mean())
        assert r["runs_with_violation"] == int((arrays["violations"] > 0).sum())
        assert 0 <= r["unsafe_episode_rate"] <= 1
    fixed = load_npz(out / "parts" / "profile_fixed_alpha_0.1.npz")[0]
    # alpha is 0.1 until every candidate is eliminated (then pi_s alone): never above 0.1
    w = fixed["candidate_weight"]
    assert np.all(w <= 0.1 + 1e-12) and np.isclose(w, 0.1).any()
    assert doc["rows"][-1]["runs_with_violation"] == 0  # certified


def test_margin_preconditions_follow_ratio(tmp_path, tiny_policy_set):
    out = _seeded(tmp_path, "margin", tiny_policy_set)
    run_experiment("margin", out, progress=False, ratios=(0.5, 4.0), n_tasks=2, n_seeds=1,
                   n_episodes=1000, **TINY_TRAIN)
    doc = _results(out)
    paper = [r for r in doc["rows"] if r["profile"] == "paper"]
    assert [r["point"] for r in paper] == ["rho=0.5", "rho=4", "policy set eps"]
    assert paper[0]["ratio"] == pytest.approx(0.5) and paper[0]["precondition_margin"]
    assert paper[1]["ratio"] == pytest.approx(4.0) and not paper[1]["precondition_margin"]
    assert paper[1]["guarantee_vacuous"]
    for r in paper:
        assert r["guarantee_vacuous"] == (not (r["precondition_margin"] and r["precondition_v_s"]))
    cert = next(r for r in doc["rows"] if r["profile"] == "certified")
    assert not cert["guarantee_vacuous"] and cert["runs_with_violation"] == 0


def test_cover_fraction_recount(tmp_path):
    out = tmp_path / "cover"
    run_experiment("cover", out, progress=False, n_heldout=(20, 70), eps=0.02, delta=0.2,
                   chunk=30)
    doc = _results(out)
    for row in doc["rows"]:
        n = row["n_heldout"]
        arrays, meta = load_npz(out / f"distances_{n}.npz")
        d = arrays["distance"]
        assert d.shape == (n,) and np.all(d >= 0)
        assert row["eps_model"] == pytest.approx(0.75 * 0.02)
        assert row["covered_fraction"] == pytest.approx(np.mean(d <= row["eps_model"] + 1e-12))
        assert row["meets_paper_bound"] == (row["covered_fraction"] >= 1 - 6 * 0.2)
        # gridworld: the model distance is 0.75 x the noise gap to the nearest cover noise
        gaps = np.abs(arrays["noise"][:, None] - np.asarray(doc["cover_params"])[None]).min(1)
        assert d == pytest.approx(0.75 * gaps, abs=1e-12)


def test_cli_experiment_runs_and_resumes(tmp_path, capsys):
    from safemeta_fast.cli import build_parser, main

    args = build_parser().parse_args(["experiment", "shift", "--quick", "--jobs", "2",
                                      "--no-progress"])
    assert (args.name, args.quick, args.jobs, args.out) == ("shift", True, 2, None)
    out = tmp_path / "cov"
    run_experiment("cover", out, progress=False, n_heldout=(10,), eps=0.02, delta=0.2)
    # the command on a folder of other parameters is refused, naming the key
    assert main(["experiment", "cover", "--quick", "--out", str(out), "--no-progress"]) == 1
    assert "n_heldout" in capsys.readouterr().err


def test_oracle_noise_quality_and_recount(tmp_path):
    out = tmp_path / "oracle"
    run_experiment("oracle-noise", out, progress=False, oracles=("lp", "primal_dual:1.0:300"),
                   n_tasks=2, n_seeds=1, n_episodes=1000, **TINY_TRAIN)
    doc = _results(out)
    assert [(r["oracle"], r["profile"]) for r in doc["rows"]] == [
        (o, p) for o in ("lp", "primal_dual:1.0:300") for p in ("certified", "reference")]
    lp, pd = doc["rows"][0], doc["rows"][2]
    assert abs(lp["max_suboptimality"]) < 1e-6          # the LP is O_l's exact optimum
    assert pd["max_suboptimality"] > 1e-3               # entropy at beta 1 costs reward
    for k, o in enumerate(("lp", "primal_dual:1.0:300")):
        arrays, meta = load_npz(out / "parts" / f"oracle_{k}.npz")
        for p, name in enumerate(meta["profiles"]):
            row = next(r for r in doc["rows"] if r["oracle"] == o and r["profile"] == name)
            m = arrays["profile"] == p
            assert row["runs_with_violation"] == int((arrays["violations"][m] > 0).sum())
            assert row["mean_regret"] == pytest.approx(arrays["final_regret"][m].mean())
    assert (out / "policyset_0.npz").exists() and (out / "policyset_1.npz").exists()
    with pytest.raises(ValueError, match="oracles entry 'simplex'"):
        run_experiment("oracle-noise", tmp_path / "bad", progress=False, oracles=("simplex",))


def test_dimension_cover_grows_with_d(tmp_path):
    """Covering number against d on the cost-cells family: the stored covers have |U| rows
    of dimension d, |U| does not shrink with d, the family's parameter distance is its model
    distance, and a re-run skips every part."""
    from safemeta_fast.envs.families import GridworldCostCellsFamily

    out = tmp_path / "dim"
    res = run_experiment("dimension", out, dims=(1, 3), eps=0.3, delta=0.2, progress=False)
    doc = _results(out)
    rows = {r["d"]: r for r in doc["rows"]}
    assert set(rows) == {1, 3}
    assert rows[3]["cover_size"] >= rows[1]["cover_size"] >= 1
    for d in (1, 3):
        arrays, meta = load_npz(out / "parts" / f"d{d}.npz", required={})
        cover = arrays["cover_params"]
        assert cover.shape == (rows[d]["cover_size"], d)
        fam = GridworldCostCellsFamily(d)
        # the family's model distance equals its parameter distance (max |dcost|)
        from safemeta_fast.distance import distance
        a, b = fam.build(cover[0]), fam.build(np.clip(cover[0] + 0.1, 9.5, 10.5))
        shifted = np.clip(cover[0] + 0.1, 9.5, 10.5)
        assert distance(a, b) == pytest.approx(np.max(np.abs(cover[0] - shifted)))
        assert rows[d]["n_state_actions"] == 196 and rows[d]["xi_hat"] > 0
    again = run_experiment("dimension", out, dims=(1, 3), eps=0.3, delta=0.2, progress=False)
    assert again["parts_skipped"] == 2 and again["rows"] == res["rows"]
