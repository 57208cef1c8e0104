"""The safemeta command: demo table and training artifact."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast import SafeAdapter, evaluate
from safemeta_fast.cli import main
from safemeta_fast.envs import gridworld
from safemeta_fast.policyset import PolicySet


def test_demo_prints_check_values(capsys):
    assert main(["demo", "--noise", "0.3", "0.5", "--episodes", "500"]) == 0
    out = capsys.readouterr().out
    assert "51.9628" in out  # LP optimum at noise 0.3
    assert "infeasible" in out and "2.0042" in out


def test_train_writes_policy_set(tmp_path, capsys):
    out = tmp_path / "ps.npz"
    code = main(["train", "--eps", "0.03", "--delta", "0.3", "--seed", "3", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "policy set written" in text and "xi_hat" in text and "precondition" in text
    ps = PolicySet.load(out)
    assert np.all(ps.cover_params > 0.1)
    # the saved numbers are the exact ones: each candidate's and pi_s's values on its cover
    # task, and xi_hat no larger than pi_s's smallest slack over the cover
    for i, theta in enumerate(ps.cover_params):
        M = gridworld(float(np.ravel(theta)[0]))
        e, es = evaluate(M, ps.policies[i]), evaluate(M, ps.safe_policy)
        assert e.reward == pytest.approx(ps.u[i], abs=1e-8)
        np.testing.assert_allclose(e.slack, ps.v[i], atol=1e-8)
        np.testing.assert_allclose(es.slack, ps.v_s[i], atol=1e-8)
    assert 0 < ps.xi_hat <= ps.v_s.min() + 1e-12
    assert f"{ps.xi_hat:.4g}"[:4] in text


def test_bad_arguments_exit_cleanly(tmp_path, capsys):
    assert main(["train", "--safe-policy", "nonsense", "--out", str(tmp_path / "x")]) == 2
    assert "--safe-policy 'nonsense'" in capsys.readouterr().err
    for bad in ("noise:abc", "noise:7", str(tmp_path / "missing.npy")):
        assert main(["train", "--safe-policy", bad, "--out", str(tmp_path / "x")]) == 2
        assert f"--safe-policy {bad!r}: " in capsys.readouterr().err
    assert main(["train", "--eps", "-1", "--no-progress", "--out", str(tmp_path / "y")]) == 2


def test_test_command_runs_the_test_phase(tmp_path, capsys):
    out = tmp_path / "ps.npz"
    assert main(["train", "--eps", "0.03", "--delta", "0.3", "--seed", "3", "--no-progress",
                 "--verify", "cover", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["test", "--policy-set", str(out), "--noise", "0.3", "0.34", "--profile",
                 "reference", "--episodes", "3000", "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("--- test noise") == 4
    assert "cumulative regret" in text and "final alpha" in text and "eliminations" in text
    assert "4 runs (2 tasks x 2 seeds)" in text
    # the verdict is the one the API gives for the same runs
    ps = PolicySet.load(out)
    logs = SafeAdapter(ps, profile="reference", n_episodes=3000, seed=0).run_tasks(
        [gridworld(0.3), gridworld(0.34)], seeds=[0, 1])
    total = sum(log.violations for row in logs for log in row)
    if total:
        assert f"!!! {total} deployed mixtures in total had exact cost above the limit" in text
    else:
        assert "no deployed mixture had exact cost above the limit" in text
    assert f"{np.mean([log.final_regret for row in logs for log in row]):.1f}" in text
    # the paper profile refuses to run when its preconditions fail, unless told otherwise
    assert main(["test", "--policy-set", str(out), "--noise", "0.3", "--profile", "paper",
                 "--episodes", "500"]) == 1
    assert "SafetyAssumptionError" in capsys.readouterr().err
    assert main(["test", "--policy-set", str(out), "--noise", "0.3", "--profile", "paper",
                 "--episodes", "500", "--no-strict"]) == 0
    assert "guarantee does not apply" in capsys.readouterr().out
    assert main(["test", "--policy-set", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    # the default profile is certified: train calibrated the policy set
    assert main(["test", "--policy-set", str(out), "--noise", "0.3", "--episodes", "3000"]) == 0
    text = capsys.readouterr().out
    assert "profile certified" in text and "certified: mean weight on candidates" in text
    assert "calibration refuted in 0 runs" in text
    bare = tmp_path / "bare.npz"
    assert main(["train", "--eps", "0.03", "--delta", "0.3", "--seed", "3", "--no-progress",
                 "--verify", "cover", "--no-calibration", "--out", str(bare)]) == 0
    assert "no calibration" in capsys.readouterr().out
    assert main(["test", "--policy-set", str(bare), "--noise", "0.3", "--episodes", "100"]) == 2
    assert "calibrate(ps, family)" in capsys.readouterr().err
