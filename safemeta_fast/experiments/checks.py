"""The paper's open checks as experiments (``safemeta experiment NAME``).

Each function runs one check on the paper's gridworld family into a resumable run folder
(:class:`~safemeta_fast.experiments.runfolder.RunFolder`: ``config.json``, finished
``parts/``, ``results.json``, ``results.csv``, PNG figures); :data:`EXPERIMENTS` maps
the command's names to them with their quick and full parameters.

* :func:`check_safe_policy` (``safe-policy``): exact slack of pi_s on tasks sampled from
  D for each O_s option, against the theory's ``xi - eps L`` (normalised scale);
* :func:`check_shift` (``shift``): test tasks from shifted noise distributions: violations,
  regret and refutation of the calibration per profile;
* :func:`check_alpha_schedule` (``alpha-schedule``): the paper's exponential schedule, a
  fixed small alpha, the reference constants and the certified profile on tasks spread
  over D;
* :func:`check_margin` (``margin``): the paper profile's eps swept relative to the margin
  xi, where its preconditions hold and what they cost;
* :func:`check_cover` (``cover``): model distance of held-out tasks to the nearest cover
  task against eps; covered fraction against the paper's 1 - 6 delta;
* :func:`check_oracle_noise` (``oracle-noise``): an inexact O_l (the authors'
  primal-dual solver, and a noisier temperature) against the exact LP.

Every experiment trains (when it needs to) with the README tour's recipe
``train(GridworldFamily(), eps=train_eps, delta=train_delta, distance="parameter",
safe_policy=gridworld(0.4), seed=seed)``; small ``train_eps``/``train_delta``/calibration
sizes make the tests' tiny settings.

Each experiment takes minutes even in its quick form, so the module shows its use as a
literal block rather than a doctest (``tests/test_checks.py`` runs every experiment at
tiny sizes)::

    res = run_experiment("cover", "/tmp/cover_run", quick=True, progress=False)
    res["sets"][0]["covered_fraction"]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..validation import check_int, check_real
from .check_figures import plot_histograms, plot_panels
from .profile_runs import adapter, profile_runs
from .runfolder import RunFolder

__all__ = ["Experiment", "EXPERIMENTS", "run_experiment", "check_safe_policy", "check_shift",
           "check_alpha_schedule", "check_margin", "check_cover", "check_oracle_noise",
           "quantile_noises", "nearest_cover_distance", "SAFE_POLICY_OPTIONS"]

#: Noise of the paper's pessimistic task (pi_s = its optimum).
_SAFE_NOISE = 0.4
#: The paper's noise distribution N(MEAN, STD) on [0, 0.5].
_MEAN, _STD, _LOW, _HIGH = 0.3, 0.03, 0.0, 0.5
#: O_s options of ``safe-policy``.
SAFE_POLICY_OPTIONS = ("pessimistic_lp_0.4", "robust_vi", "user_primal_dual_0.4")
_VIOLATION_TOL = 1e-9


def _sub_seed(seed: int, tag: str) -> int:
    """A seed for the named sub-stream of ``seed`` (distinct per tag)."""
    words = np.random.SeedSequence([int(seed), *tag.encode()]).generate_state(2, np.uint64)
    return int(words[0] >> np.uint64(1))


def _family(mean=_MEAN, std=_STD):
    from ..envs import GridworldFamily
    from ..tasks import TruncatedNormal

    return GridworldFamily(TruncatedNormal(mean, std, _LOW, _HIGH))


def _geometry():
    """(L, G, distance per noise): Lipschitz constant, normalisation scale, 0.75."""
    from ..envs import gridworld
    from ..envs.families import GRIDWORLD_DISTANCE_PER_NOISE
    from ..theory import lipschitz_constant, normalisation_of

    M = gridworld(0.3)
    return (lipschitz_constant(M.gamma), float(normalisation_of(M)["utility_scale"].max()),
            GRIDWORLD_DISTANCE_PER_NOISE)


def _train_config(train_eps, train_delta, n_reference, n_calibration) -> dict:
    return {"train_eps": check_real("train_eps", train_eps, 0.0, lo_open=True),
            "train_delta": check_real("train_delta", train_delta, 0.0, 1.0, lo_open=True,
                                      hi_open=True),
            "n_reference": check_int("n_reference", n_reference, 2),
            "n_calibration": check_int("n_calibration", n_calibration, 1)}


def _policy_set(rf: RunFolder, seed: int, progress: bool, *, name: str = "policyset",
                safe_policy=None, oracle: str = "lp", oracle_options=None):
    """The tour recipe's policy set of the folder (trained once, then loaded).

    ``safe_policy`` defaults to the pessimistic task gridworld(0.4) solved by ``oracle``;
    ``oracle``/``oracle_options`` choose O_l (:func:`safemeta_fast.training.train`).
    """
    import warnings

    from ..envs import gridworld
    from ..training import train

    c = rf.config

    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return train(_family(), eps=c["train_eps"], delta=c["train_delta"],
                         distance="parameter", seed=seed, progress=progress,
                         safe_policy=gridworld(_SAFE_NOISE) if safe_policy is None else safe_policy,
                         oracle=oracle, oracle_options=oracle_options,
                         calibration_options={"n_reference": c["n_reference"],
                                              "n_calibration": c["n_calibration"]})
    return rf.policy_set(make, name)


def _feasible_tasks(noises) -> tuple:
    """Gridworlds of ``noises`` with their LP optimum; infeasible ones dropped (counted)."""
    from ..envs import gridworld
    from ..errors import InfeasibleError
    from ..lp import solve_lp

    tasks, refs, kept = [], [], []
    for x in noises:
        M = gridworld(float(x))
        try:
            refs.append(float(solve_lp(M).reward))
        except InfeasibleError:
            continue
        tasks.append(M)
        kept.append(float(x))
    return tasks, refs, np.asarray(kept)


def _rates(runs: dict, n_episodes: int, mask=None) -> dict:
    """Regret and violation figures of a set of per-run records (optionally masked)."""
    m = np.ones(runs["final_regret"].size, dtype=bool) if mask is None else mask
    f, v = runs["final_regret"][m], runs["violations"][m]
    if f.size == 0:
        return {"runs": 0}
    return {"runs": int(f.size), "mean_regret": float(f.mean()),
            "q10_regret": float(np.quantile(f, 0.1)), "q90_regret": float(np.quantile(f, 0.9)),
            "runs_with_violation": int((v > 0).sum()),
            "violation_run_rate": float((v > 0).mean()),
            "unsafe_episode_rate": float(v.sum() / (f.size * n_episodes)),
            "max_cost": float(runs["max_cost"][m].max()),
            "candidate_weight": float(runs["candidate_weight"][m].mean())}


def _run_profile_part(rf, key, ps, names, tasks, refs, seeds, n_episodes, jobs, progress):
    """Part ``key``: :func:`profile_runs` of every profile name, stacked with a profile index."""
    def compute():
        cols: dict = {}
        for p, name in enumerate(tqdm(names, desc=f"{rf.name} {key}", disable=not progress,
                                      leave=False)):
            ad = adapter(ps, name, n_episodes=n_episodes, normalisation_task=tasks[0])
            runs = profile_runs(ad, tasks, refs, seeds, threads=jobs)
            runs["profile"] = np.full(runs["task"].size, p, dtype=np.int64)
            for k, a in runs.items():
                cols.setdefault(k, []).append(a)
        return {k: np.concatenate(v) for k, v in cols.items()}, {"profiles": list(names)}
    return rf.part(key, compute)[0]


# -- 1. safe-policy ----------------------------------------------------------------------


def _safe_policies(cover_tasks) -> np.ndarray:
    """The O_s options of :data:`SAFE_POLICY_OPTIONS`, stacked (3, S, A)."""
    from ..envs import gridworld
    from ..lp import solve_lp
    from ..planning import primal_dual
    from ..safe_policy import robust_safe_policy

    M = gridworld(_SAFE_NOISE)
    return np.stack([np.asarray(solve_lp(M).policy), robust_safe_policy(cover_tasks)[0],
                     np.asarray(primal_dual(M, beta=0.1).policy)])


def check_safe_policy(out, *, n_tasks: int = 10_000, seed: int = 0, train_eps: float = 0.005,
                      train_delta: float = 0.05, chunk: int = 2000, progress: bool = True,
                      jobs=None) -> dict:
    """Slack of each O_s option on tasks from D against the theory's ``xi - eps L``.

    The cover of the tour recipe (``build_cover``, parameter closeness ``train_eps``) gives
    the cover tasks; each O_s option (LP optimum of noise 0.4; robust value iteration over
    the cover; the authors' primal-dual optimum of noise 0.4 as a user policy) is verified
    on them: ``xi_hat`` = its smallest slack there. On ``n_tasks`` fresh tasks from D the
    exact slack ``b - V_c(pi_s)`` is computed (``evaluate_many``). On the normalised scale
    (slack / G, G = max |(1-gamma) b - c| = 9.85) the theory's promise for tasks within
    eps of the cover is ``slack >= xi - eps L`` (eps in model distance = 0.75 train_eps,
    L = 190). A *violation* is a task below that bound; reported over all tasks and over
    the covered ones, with the rates of infeasibility (slack < 0) and of slack below the
    verified margin xi_hat. ``bound_implies_feasibility`` says whether ``xi - eps L >= 0``
    (otherwise the bound cannot certify even feasibility). ``xi_hat`` here is the margin
    on the cover tasks only (``train`` also verifies on every sampled task).

    Parameters
    ----------
    out : str or Path
        Run folder.
    n_tasks : int
        Tasks sampled from D (full 10,000; quick 100).
    seed : int
        Base seed (cover and task sample use distinct sub-streams).
    train_eps, train_delta : float
        Cover parameters (the tour recipe's 0.005 and 0.05).
    chunk : int
        Tasks per saved part (resume granularity).
    progress : bool
    jobs : ignored (evaluation is one numba call per task).

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    from ..covering import build_cover
    from ..evaluation import evaluate_many
    from ..safe_policy import verify_safe_policy

    cfg = {"n_tasks": check_int("n_tasks", n_tasks, 1), "seed": check_int("seed", seed, 0),
           "train_eps": check_real("train_eps", train_eps, 0.0, lo_open=True),
           "train_delta": check_real("train_delta", train_delta, 0.0, 1.0, lo_open=True,
                                     hi_open=True),
           "chunk": check_int("chunk", chunk, 1)}
    rf = RunFolder(out, "safe-policy", cfg)
    t0 = time.perf_counter()
    family = _family()
    L, G, per_noise = _geometry()

    def cover_part():
        cov = build_cover(family, eps=train_eps, delta=train_delta, distance="parameter",
                          seed=_sub_seed(seed, "cover"), progress=progress)
        return {"cover_params": cov.chosen_params}, {"converged": bool(cov.converged)}
    cover_params = rf.part("cover", cover_part)[0]["cover_params"]
    cover_tasks = list(family.build_many(cover_params))

    def options_part():
        pols = _safe_policies(cover_tasks)
        xi = [verify_safe_policy(p, cover_tasks, raise_on_unsafe=False).xi_hat for p in pols]
        return {"policies": pols, "xi_hat": np.asarray(xi)}, {"options": list(SAFE_POLICY_OPTIONS)}
    opts = rf.part("options", options_part)[0]
    pols, xi_hat = opts["policies"], opts["xi_hat"]

    theta = family.sample(n_tasks, seed=_sub_seed(seed, "tasks"))[:, 0]
    slack = np.empty((n_tasks, len(pols)))
    starts = range(0, n_tasks, chunk)
    for lo in tqdm(starts, desc="safe-policy: slack on tasks from D", disable=not progress,
                   leave=False):
        def chunk_part(lo=lo):
            part = np.array([evaluate_many(M, pols).slack[:, 0]
                             for M in family.build_many(theta[lo:lo + chunk, None])])
            return {"slack": part}, {"first": lo}
        slack[lo:lo + chunk] = rf.part(f"slack_{lo:06d}", chunk_part)[0]["slack"]

    eps_model = per_noise * train_eps
    dist_cover = np.abs(theta[:, None] - cover_params[None, :, 0]).min(axis=1) * per_noise
    covered = dist_cover <= eps_model + 1e-12
    rows, panels = [], []
    for j, name in enumerate(SAFE_POLICY_OPTIONS):
        s = slack[:, j]
        xi_n = xi_hat[j] / G
        bound = xi_n - eps_model * L
        viol = s / G < bound
        qs = np.quantile(s, [0.0, 0.01, 0.1, 0.5, 0.9])
        rows.append({
            "option": name, "n_tasks": n_tasks, "xi_hat": float(xi_hat[j]),
            "xi_normalised": float(xi_n), "eps_model": eps_model, "L": L,
            "bound_normalised": float(bound), "bound_raw": float(bound * G),
            "violation_rate": float(viol.mean()),
            "covered_tasks": int(covered.sum()),
            "violation_rate_covered": float(viol[covered].mean()) if covered.any() else None,
            "infeasible_rate": float((s < 0).mean()),
            "below_xi_hat_rate": float((s < xi_hat[j]).mean()),
            "slack_min": float(qs[0]), "slack_q01": float(qs[1]), "slack_q10": float(qs[2]),
            "slack_median": float(qs[3]), "slack_q90": float(qs[4]),
            "worst_noise": float(theta[int(np.argmin(s))]),
            "bound_implies_feasibility": bool(bound >= 0),
        })
        panels.append({"values": s, "xlabel": "slack b - V_c(pi_s) on a task from D",
                       "title": f"{name}: {100 * viol.mean():.2f} % below xi - eps L, "
                                f"{100 * (s < 0).mean():.2f} % infeasible",
                       "lines": {"0 (limit)": 0.0, "xi_hat": float(xi_hat[j]),
                                 "(xi - eps L) G": float(bound * G)}})
    from ..runio import save_npz

    save_npz(rf.out / "slacks.npz", {"noise": theta, "slack": slack, "covered": covered,
                                     "xi_hat": xi_hat},
             {"options": list(SAFE_POLICY_OPTIONS), "G": G, "L": L, "eps_model": eps_model})
    plot_histograms(panels, path=rf.out / "safe_policy_slack.png",
                    title=f"Slack of pi_s on {n_tasks} tasks from D (cover: {len(cover_tasks)} "
                          f"tasks, eps {train_eps:g})")
    res = {"figures": ["safe_policy_slack.png"], "n_cover": int(len(cover_tasks)),
           "G": G, "L": L, "seconds": time.perf_counter() - t0,
           "parts_computed": rf.n_computed, "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 2. shift ----------------------------------------------------------------------------


def _shift_distributions(shifts, wide_std) -> list:
    out = [(f"mean+{k:g}std", _MEAN + k * _STD, _STD) for k in shifts]
    if wide_std is not None:
        out.append((f"std={wide_std:g}", _MEAN, float(wide_std)))
    return out


def check_shift(out, *, shifts=(0, 1, 2, 3, 4), wide_std: float | None = 0.06,
                n_tasks: int = 20, n_seeds: int = 10, n_episodes: int = 40_000,
                profiles=("certified", "reference", "paper"), seed: int = 0,
                train_eps: float = 0.005, train_delta: float = 0.05, n_reference: int = 2000,
                n_calibration: int = 2000, progress: bool = True, jobs=None) -> dict:
    """Train on D, test on shifted noise distributions: violations, regret, refutation.

    Distributions: N(0.3 + k 0.03, 0.03) for each k in ``shifts`` and N(0.3, wide_std),
    all truncated to [0, 0.5]. Per distribution ``n_tasks`` test noises are sampled;
    tasks with no feasible policy (noise above about 0.435) are dropped and counted.
    Each profile runs on every (task, seed) with the exact audit. For the certified
    profile a run is *refuted* when every calibrated reference is rejected
    (``TestLog.refuted_at >= 0``, alive set empty); it then deploys pi_s alone, which is
    only safe where pi_s itself is feasible, so violations are also reported on the tasks
    where pi_s is feasible.

    Parameters
    ----------
    out : str or Path
    shifts : sequence of float
        Mean shifts in units of the std 0.03.
    wide_std : float or None
        Std of the widened distribution (None: none).
    n_tasks, n_seeds, n_episodes : int
    profiles : sequence of str
        Names understood by :func:`~safemeta_fast.experiments.profile_runs.adapter`.
    seed : int
    train_eps, train_delta, n_reference, n_calibration
        Training recipe and calibration sizes.
    progress : bool
    jobs : int, optional
        Threads of the fused runs.

    Returns
    -------
    dict
    """
    from ..evaluation import evaluate

    cfg = {"shifts": [check_real(f"shifts[{i}]", s) for i, s in enumerate(shifts)],
           "wide_std": None if wide_std is None else check_real("wide_std", wide_std, 0.0,
                                                                lo_open=True),
           "n_tasks": check_int("n_tasks", n_tasks, 1), "n_seeds": check_int("n_seeds", n_seeds, 1),
           "n_episodes": check_int("n_episodes", n_episodes, 1), "profiles": list(profiles),
           "seed": check_int("seed", seed, 0),
           **_train_config(train_eps, train_delta, n_reference, n_calibration)}
    if not profiles:
        raise ValueError("profiles is empty; pass at least one profile name")
    rf = RunFolder(out, "shift", cfg)
    t0 = time.perf_counter()
    ps = _policy_set(rf, seed, progress)
    seeds = [_sub_seed(seed, f"run{j}") % 2**31 for j in range(n_seeds)]
    rows, per_dist, task_noises = [], [], {}
    for label, mean, std in tqdm(_shift_distributions(cfg["shifts"], cfg["wide_std"]),
                                 desc="shift: distributions", disable=not progress):
        noises = _family(mean, std).sample(n_tasks, seed=_sub_seed(seed, label))[:, 0]
        tasks, refs, kept = _feasible_tasks(noises)
        if not tasks:
            rows.append({"distribution": label, "noise_mean": mean, "noise_std": std,
                         "tasks_infeasible_dropped": n_tasks, "runs": 0})
            continue
        runs = _run_profile_part(rf, f"shift_{label}", ps, list(profiles), tasks, refs, seeds,
                                 n_episodes, jobs, progress)
        pis_cost = np.array([float(evaluate(M, ps.safe_policy).cost[0]) for M in tasks])
        pis_ok = pis_cost <= ps.cost_limit[0] + _VIOLATION_TOL
        for p, name in enumerate(profiles):
            m = runs["profile"] == p
            ok_task = pis_ok[runs["task"]]
            row = {"distribution": label, "noise_mean": mean, "noise_std": std,
                   "profile": name, "tasks": len(tasks),
                   "tasks_infeasible_dropped": int(n_tasks - len(tasks)),
                   "tasks_pi_s_infeasible": int((~pis_ok).sum()),
                   **_rates(runs, n_episodes, m),
                   "runs_with_violation_where_pi_s_feasible":
                       int(((runs["violations"] > 0) & m & ok_task).sum()),
                   "violating_task_noises": " ".join(
                       f"{x:.4f}"
                       for x in kept[np.unique(runs["task"][m & (runs["violations"] > 0)])])}
            if name == "certified":
                ref_at = runs["refuted_at"][m]
                hit = ref_at >= 0
                row.update({
                    "refuted_runs": int(hit.sum()), "refuted_rate": float(hit.mean()),
                    "refuted_at_median": float(np.median(ref_at[hit])) if hit.any() else None,
                    "refuted_at_min": int(ref_at[hit].min()) if hit.any() else None,
                    "refuted_at_max": int(ref_at[hit].max()) if hit.any() else None,
                    "refuted_alive_empty": bool(np.all(runs["alive_end"][m][hit] == 0)),
                    "refuted_fallback_only_pi_s": bool(np.all(runs["fallback_only_pi_s"][m][hit])),
                })
            rows.append(row)
        per_dist.append(label)
        task_noises[label] = kept.tolist()
    figures = []
    if per_dist:
        x = np.arange(len(per_dist))
        get = lambda name, key: [next((r.get(key) for r in rows if r["distribution"] == d  # noqa: E731
                                       and r.get("profile") == name), np.nan) for d in per_dist]
        panels = [
            {"ylabel": "runs with a violation", "series": {p: get(p, "violation_run_rate")
                                                          for p in profiles}},
            {"ylabel": "mean final regret", "series": {p: get(p, "mean_regret") for p in profiles}},
        ]
        if "certified" in profiles:
            panels.append({"ylabel": "certified: refuted runs",
                           "series": {"refuted": get("certified", "refuted_rate")}})
        plot_panels(x, panels, path=rf.out / "shift.png", xlabel="test distribution",
                    xticklabels=per_dist,
                    title=f"Trained on N(0.3, 0.03); {n_tasks} tasks x {n_seeds} seeds, "
                          f"K = {n_episodes}")
        figures.append("shift.png")
    res = {"figures": figures, "n_cover": ps.n_policies, "seeds": seeds,
           "task_noises": task_noises,
           "seconds": time.perf_counter() - t0, "parts_computed": rf.n_computed,
           "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 3. alpha-schedule -------------------------------------------------------------------


def quantile_noises(n: int) -> np.ndarray:
    """``n`` evenly spaced quantiles (i + 0.5)/n of D = N(0.3, 0.03) truncated to [0, 0.5]."""
    from scipy.special import ndtr, ndtri

    a, b = ndtr((_LOW - _MEAN) / _STD), ndtr((_HIGH - _MEAN) / _STD)
    q = (np.arange(n) + 0.5) / n
    return _MEAN + _STD * ndtri(a + q * (b - a))


def check_alpha_schedule(out, *, n_tasks: int = 20, n_seeds: int = 10, n_episodes: int = 40_000,
                         fixed_alpha: float = 0.1, seed: int = 0, train_eps: float = 0.005,
                         train_delta: float = 0.05, n_reference: int = 2000,
                         n_calibration: int = 2000, progress: bool = True, jobs=None) -> dict:
    """Weight schedules compared on tasks spread over D: regret and violation rate.

    Profiles: ``paper`` (the exponential schedule alpha_{m+1} = 3 v_s alpha_m / ((2 +
    alpha_m) v_s + (4L+9) eps), ``strict=False``), ``fixed_alpha_<a>`` (the reference
    constants' eliminations with alpha fixed at ``fixed_alpha`` from the first episode),
    ``reference`` (the authors' constants) and ``certified``. A linear increase of alpha
    is not run: :class:`~safemeta_fast.profiles.Profile` offers only alpha_1 and the
    paper's recursion (or a fixed alpha), so it cannot be expressed honestly.

    Parameters
    ----------
    out : str or Path
    n_tasks : int
        Test noises at the evenly spaced quantiles of D (:func:`quantile_noises`).
    n_seeds, n_episodes : int
    fixed_alpha : float in [0, 1]
    seed : int
    train_eps, train_delta, n_reference, n_calibration
    progress : bool
    jobs : int, optional

    Returns
    -------
    dict
    """
    cfg = {"n_tasks": check_int("n_tasks", n_tasks, 1), "n_seeds": check_int("n_seeds", n_seeds, 1),
           "n_episodes": check_int("n_episodes", n_episodes, 1),
           "fixed_alpha": check_real("fixed_alpha", fixed_alpha, 0.0, 1.0),
           "seed": check_int("seed", seed, 0),
           **_train_config(train_eps, train_delta, n_reference, n_calibration)}
    rf = RunFolder(out, "alpha-schedule", cfg)
    t0 = time.perf_counter()
    ps = _policy_set(rf, seed, progress)
    tasks, refs, noises = _feasible_tasks(quantile_noises(n_tasks))
    seeds = [_sub_seed(seed, f"run{j}") % 2**31 for j in range(n_seeds)]
    names = ["paper", f"fixed_alpha_{fixed_alpha:g}", "reference", "certified"]
    rows, per_task = [], {}
    for name in names:
        runs = _run_profile_part(rf, f"profile_{name}", ps, [name], tasks, refs, seeds,
                                 n_episodes, jobs, progress)
        rows.append({"profile": name, "tasks": len(tasks), "seeds": n_seeds,
                     **_rates(runs, n_episodes)})
        per_task[name] = (
            [runs["final_regret"][runs["task"] == i].mean() for i in range(len(tasks))],
            [float((runs["violations"][runs["task"] == i] > 0).mean())
             for i in range(len(tasks))])
    plot_panels(noises, [
        {"ylabel": "mean final regret", "series": {n: v[0] for n, v in per_task.items()}},
        {"ylabel": "runs with a violation", "series": {n: v[1] for n, v in per_task.items()}},
    ], path=rf.out / "alpha_schedule.png", xlabel="test-task noise (quantiles of D)",
        title=f"Weight schedules: {len(tasks)} tasks x {n_seeds} seeds, K = {n_episodes}")
    res = {"figures": ["alpha_schedule.png"], "noises": noises.tolist(), "seeds": seeds,
           "skipped": {"linear": "Profile has no linear schedule (only alpha_1 and the paper's "
                                 "recursion, or a fixed alpha); not run"},
           "seconds": time.perf_counter() - t0, "parts_computed": rf.n_computed,
           "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 4. margin ---------------------------------------------------------------------------


def check_margin(out, *, ratios=(0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0), n_tasks: int = 10,
                 n_seeds: int = 5, n_episodes: int = 40_000, seed: int = 0,
                 train_eps: float = 0.005, train_delta: float = 0.05, n_reference: int = 2000,
                 n_calibration: int = 2000, progress: bool = True, jobs=None) -> dict:
    """The paper profile's eps swept relative to the margin: preconditions, regret, violations.

    For each ratio rho the paper profile runs with ``eps = rho xi / (8L + 18)`` on the
    normalised scale (xi = the policy set's verified margin / G), so rho <= 1 is exactly
    where its precondition ``(8L+18) eps <= xi`` holds (the second one, ``v_s > (4L+9)
    eps``, is reported too); the policy set's own eps is added as a last point. Only the
    test-time constants change: the cover stays the one trained with ``train_eps``, so
    even where the preconditions hold the paper's guarantee also needs a cover of that
    eps, which this run does not build. ``reference`` (own eps 0.01) and ``certified``
    (no eps) do not depend on the sweep and run once; the certified profile's guarantee
    is never vacuous (it needs no margin), its regret is reported.
    ``episodes_before_first_update`` is the paper's update gate ``32 ln(4K/delta) /
    ((1-gamma)^2 v_lm^2)`` of the first window (alpha stays 0 until then).

    Parameters
    ----------
    out : str or Path
    ratios : sequence of float > 0
    n_tasks : int
        Test tasks at quantiles of D.
    n_seeds, n_episodes : int
    seed, train_eps, train_delta, n_reference, n_calibration, progress, jobs
        As in :func:`check_shift`.

    Returns
    -------
    dict
    """
    from ..adaptation import PAPER

    cfg = {"ratios": [check_real(f"ratios[{i}]", r, 0.0, lo_open=True)
                      for i, r in enumerate(ratios)],
           "n_tasks": check_int("n_tasks", n_tasks, 1), "n_seeds": check_int("n_seeds", n_seeds, 1),
           "n_episodes": check_int("n_episodes", n_episodes, 1), "seed": check_int("seed", seed, 0),
           **_train_config(train_eps, train_delta, n_reference, n_calibration)}
    if not cfg["ratios"]:
        raise ValueError("ratios is empty; pass at least one ratio")
    rf = RunFolder(out, "margin", cfg)
    t0 = time.perf_counter()
    ps = _policy_set(rf, seed, progress)
    L, G, _ = _geometry()
    xi = ps.xi_hat / G
    tasks, refs, _ = _feasible_tasks(quantile_noises(n_tasks))
    seeds = [_sub_seed(seed, f"run{j}") % 2**31 for j in range(n_seeds)]
    points = [(f"rho={r:g}", r * xi / (8 * L + 18)) for r in cfg["ratios"]]
    points.append(("policy set eps", float(ps.eps)))
    rows = []
    for label, eps in points:
        prof = replace(PAPER, eps=float(eps))
        ad = adapter(ps, "paper", n_episodes=n_episodes, normalisation_task=tasks[0], profile=prof)

        def compute(ad=ad):
            return profile_runs(ad, tasks, refs, seeds, threads=jobs), {}
        runs = rf.part(f"paper_{eps:.6e}", compute)[0]
        vs = float(np.min(ps.v_s) / G)
        c = ad.constants
        v0 = float(np.min(ps.v_s[int(np.argmax(ps.u))]) / G)  # v_lm of the first window
        gate = c["gate_offset"] + min(max(c["gate_const"] / v0 ** 2, c["gate_min"]), c["gate_max"])
        rows.append({"profile": "paper", "point": label, "eps": float(eps),
                     "ratio": (8 * L + 18) * eps / xi,
                     "precondition_margin": bool((8 * L + 18) * eps <= xi),
                     "precondition_v_s": bool(vs > (4 * L + 9) * eps),
                     "guarantee_vacuous": not ad.guarantee,
                     "episodes_before_first_update": float(gate),
                     **_rates(runs, n_episodes)})
    for name in ("reference", "certified"):
        runs = _run_profile_part(rf, f"profile_{name}", ps, [name], tasks, refs, seeds,
                                 n_episodes, jobs, progress)
        rows.append({"profile": name, "point": "independent of the sweep", "eps": None,
                     "guarantee_vacuous": name == "reference", **_rates(runs, n_episodes)})
    sweep = [r for r in rows if r["profile"] == "paper" and r["point"].startswith("rho=")]
    others = {r["profile"]: r for r in rows if r["profile"] != "paper"}
    x = [r["ratio"] for r in sweep]
    plot_panels(x, [
        {"ylabel": "mean final regret",
         "series": {"paper": [r["mean_regret"] for r in sweep],
                    **{f"{n} (no eps)": [o["mean_regret"]] * len(x) for n, o in others.items()}}},
        {"ylabel": "runs with a violation",
         "series": {"paper": [r["violation_run_rate"] for r in sweep],
                    **{n: [o["violation_run_rate"]] * len(x) for n, o in others.items()}}},
    ], path=rf.out / "margin.png", xlabel="(8L + 18) eps / xi  (paper precondition holds <= 1)",
        logx=True, title=f"Paper profile eps sweep (xi = {xi:.4g} normalised); {len(tasks)} tasks "
                         f"x {n_seeds} seeds, K = {n_episodes}")
    res = {"figures": ["margin.png"], "xi_normalised": xi, "L": L, "G": G, "seeds": seeds,
           "cover_eps": float(ps.eps), "seconds": time.perf_counter() - t0,
           "parts_computed": rf.n_computed, "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 5. cover ----------------------------------------------------------------------------


def nearest_cover_distance(cover_tasks, tasks, *, chunk: int = 500) -> np.ndarray:
    """SPEC model distance of each task to its nearest cover task, shape (len(tasks),).

    Computed with :func:`safemeta_fast.distance.pairwise_distance` on the cover tasks
    plus one chunk of tasks at a time.
    """
    from ..distance import pairwise_distance

    cover_tasks, tasks = list(cover_tasks), list(tasks)
    nc = len(cover_tasks)
    out = np.empty(len(tasks))
    for lo in range(0, len(tasks), chunk):
        part = tasks[lo:lo + chunk]
        D = pairwise_distance(cover_tasks + part)
        out[lo:lo + len(part)] = D[nc:, :nc].min(axis=1)
    return out


def _int_list(name: str, values) -> list:
    """A non-empty list of integers >= 1 (each checked, the index named)."""
    out = [check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(values)]
    if not out:
        raise ValueError(f"{name} is empty; pass at least one value")
    return out


def _eps_delta(eps, delta) -> dict:
    """Cover radius (> 0) and confidence in (0, 1), checked."""
    return {"eps": check_real("eps", eps, 0.0, lo_open=True),
            "delta": check_real("delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)}


def check_cover(out, *, n_heldout=(50, 10_000), eps: float = 0.005, delta: float = 0.05,
                seed: int = 0, chunk: int = 500, progress: bool = True, jobs=None) -> dict:
    """Held-out tasks from D: model distance to the nearest cover task against eps.

    The cover of the tour recipe (parameter closeness ``eps``, which is model distance
    0.75 eps on this family) is built once. For each held-out set size its tasks are
    sampled from D with their own seed, the SPEC model distance to the nearest cover task
    is computed (:func:`nearest_cover_distance`), and the covered fraction (distance <=
    0.75 eps) is compared with the paper's 1 - 6 delta, with a binomial standard error.

    Parameters
    ----------
    out : str or Path
    n_heldout : sequence of int
        Held-out set sizes (full: 50 and 10,000; quick: 50 and 1,000).
    eps, delta : float
        Cover parameters.
    seed : int
    chunk : int
        Tasks per distance matrix and per saved part.
    progress : bool
    jobs : ignored.

    Returns
    -------
    dict
    """
    from ..covering import build_cover

    cfg = {"n_heldout": _int_list("n_heldout", n_heldout), **_eps_delta(eps, delta),
           "seed": check_int("seed", seed, 0), "chunk": check_int("chunk", chunk, 1)}
    rf = RunFolder(out, "cover", cfg)
    t0 = time.perf_counter()
    family = _family()
    _, _, per_noise = _geometry()
    eps_model = per_noise * eps

    def cover_part():
        cov = build_cover(family, eps=eps, delta=delta, distance="parameter",
                          seed=_sub_seed(seed, "cover"), progress=progress)
        last = cov.rounds[-1]
        return {"cover_params": cov.chosen_params}, {
            "converged": bool(cov.converged), "n_train": int(last.n_tasks),
            "train_covered_fraction": 1.0 - last.n_uncovered / last.n_tasks}
    arrays, cmeta = rf.part("cover", cover_part)
    cover_tasks = list(family.build_many(arrays["cover_params"]))
    rows, panels = [], []
    target = 1.0 - 6.0 * delta
    for n in cfg["n_heldout"]:
        theta = family.sample(n, seed=_sub_seed(seed, f"heldout{n}"))
        d = np.empty(n)
        for lo in tqdm(range(0, n, chunk), desc=f"cover: {n} held-out tasks",
                       disable=not progress, leave=False):
            def compute(lo=lo):
                part = list(family.build_many(theta[lo:lo + chunk]))
                return {"distance": nearest_cover_distance(cover_tasks, part, chunk=chunk)}, {}
            d[lo:lo + chunk] = rf.part(f"heldout{n}_{lo:06d}", compute)[0]["distance"]
        from ..runio import save_npz

        save_npz(rf.out / f"distances_{n}.npz", {"noise": theta[:, 0], "distance": d},
                 {"eps_model": eps_model})
        frac = float(np.mean(d <= eps_model + 1e-12))
        rows.append({"n_heldout": n, "n_cover": len(cover_tasks), "eps_param": eps,
                     "eps_model": eps_model, "covered_fraction": frac,
                     "std_error": math.sqrt(max(frac * (1 - frac), 1e-300) / n),
                     "paper_bound_1_minus_6delta": target, "meets_paper_bound": frac >= target,
                     "train_covered_fraction": cmeta["train_covered_fraction"],
                     "distance_median": float(np.median(d)),
                     "distance_q90": float(np.quantile(d, 0.9)),
                     "distance_max": float(d.max())})
        panels.append({"values": d, "xlabel": "model distance to the nearest cover task",
                       "title": f"{n} held-out tasks: {100 * frac:.1f} % within eps "
                                f"(paper: >= {100 * target:.0f} %)",
                       "lines": {"eps (model)": eps_model}})
    plot_histograms(panels, path=rf.out / "cover_distance.png",
                    title=f"Cover of {len(cover_tasks)} tasks (eps {eps:g} in noise, "
                          f"delta {delta:g})")
    res = {"figures": ["cover_distance.png"], "n_cover": len(cover_tasks),
           "cover_params": arrays["cover_params"][:, 0].tolist(), **cmeta,
           "seconds": time.perf_counter() - t0, "parts_computed": rf.n_computed,
           "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 7. dimension ------------------------------------------------------------------------


def check_dimension(out, *, dims=(1, 2, 3, 4, 5, 6), eps: float = 0.25, delta: float = 0.1,
                    seed: int = 0, max_rounds: int = 8, progress: bool = True,
                    jobs=None) -> dict:
    """Covering number of Algorithm 1 against the task dimension d (paper Remark 4.4).

    For each d, :class:`~safemeta_fast.envs.families.GridworldCostCellsFamily` (the paper's
    gridworld whose 8 cost cells form d groups with independent costs, uniform on
    [9.5, 10.5]^d; its parameter distance is exactly the SPEC model distance) is trained
    with ``train(distance="parameter", safe_policy="robust", verify="cover")``. The result
    records the cover size |U| (the covering-number estimate C_eps(D, delta)), the final
    sample size N, the rounds, whether the stopping test passed, and the training time,
    next to |S||A| = 196 of the tabular model.

    Parameters
    ----------
    out : str or Path
    dims : sequence of int in 1..8
    eps, delta : float
        Cover radius (cost units = model distance) and confidence.
    seed : int
    max_rounds : int
        Cap on the cover loop's rounds (a d with a larger cover stops unconverged).
    progress : bool
    jobs : ignored.

    Returns
    -------
    dict
    """
    import warnings

    from ..envs.families import GridworldCostCellsFamily
    from ..training import train

    cfg = {"dims": _int_list("dims", dims), **_eps_delta(eps, delta),
           "seed": check_int("seed", seed, 0), "max_rounds": check_int("max_rounds", max_rounds, 1)}
    for i, d in enumerate(cfg["dims"]):
        if d > 8:
            raise ValueError(f"dims[{i}] is {d}; the gridworld has 8 cost cells (d <= 8)")
    rf = RunFolder(out, "dimension", cfg)
    t0 = time.perf_counter()
    rows = []
    for d in tqdm(cfg["dims"], desc="dimension", disable=not progress, leave=False):
        def compute(d=d):
            fam = GridworldCostCellsFamily(d)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ps = train(fam, eps=cfg["eps"], delta=cfg["delta"], distance="parameter",
                           verify="cover", calibration=False, max_rounds=cfg["max_rounds"],
                           seed=_sub_seed(seed, f"dimension{d}"), progress=False)
            last = ps.rounds[-1]
            return {"cover_params": ps.cover_params}, {
                "d": d, "cover_size": ps.n_policies, "n_tasks": int(last["n_tasks"]),
                "rounds": len(ps.rounds), "converged": bool(ps.info["cover_converged"]),
                "test_value": float(last["test_value"]), "xi_hat": ps.xi_hat,
                "train_seconds": time.perf_counter() - t}
        _, meta = rf.part(f"d{d}", compute)
        rows.append({**meta, "n_state_actions": 49 * 4})
    ds = np.array([r["d"] for r in rows], dtype=float)
    plot_panels(ds, [
        {"series": {"cover size |U|": np.array([r["cover_size"] for r in rows], float)},
         "ylabel": "cover size |U|", "hline": 196.0, "logy": True},
        {"series": {"training time (s)": np.array([r["train_seconds"] for r in rows])},
         "ylabel": "training seconds", "logy": True},
    ], path=rf.out / "dimension.png", xlabel="task dimension d",
        title=f"Covering number against d (eps {cfg['eps']:g}, delta {cfg['delta']:g}; "
              "dotted: |S||A| = 196)")
    res = {"figures": ["dimension.png"], "seconds": time.perf_counter() - t0,
           "parts_computed": rf.n_computed, "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- 6. oracle-noise --------------------------------------------------------------------


def _oracle_spec(text: str) -> tuple:
    """``"lp"`` or ``"primal_dual:BETA[:N_ITER]"`` -> (oracle, options)."""
    if text == "lp":
        return "lp", {}
    parts = text.split(":")
    if parts[0] != "primal_dual" or len(parts) not in (2, 3):
        raise ValueError(f"oracles entry {text!r}: expected 'lp' or 'primal_dual:BETA[:N_ITER]'")
    opts = {"beta": check_real(f"beta of {text!r}", float(parts[1]), 0.0, lo_open=True)}
    if len(parts) == 3:
        opts["n_iter"] = check_int(f"n_iter of {text!r}", int(parts[2]), 1)
    return "primal_dual", opts


def check_oracle_noise(out, *, oracles=("lp", "primal_dual:0.1", "primal_dual:1.0"),
                       n_tasks: int = 10, n_seeds: int = 5, n_episodes: int = 40_000,
                       profiles=("certified", "reference"), seed: int = 0,
                       train_eps: float = 0.005, train_delta: float = 0.05,
                       n_reference: int = 2000, n_calibration: int = 2000,
                       progress: bool = True, jobs=None) -> dict:
    """An inexact O_l: candidate quality and its effect on the test-time phase.

    The training recipe runs once per O_l option: the exact occupancy LP, and the
    entropy-regularised primal-dual solver (``"primal_dual:BETA[:N_ITER]"``; beta 0.1 is
    the authors' oracle, larger beta is a noisier one). pi_s is the same for every option
    (the LP optimum of noise 0.4), so only the candidates change. Reported per option: the
    candidates' own-task suboptimality ``LP optimum - u_i`` (max) and smallest own-task
    slack ``v_i`` (negative: only relaxed-feasible), then per profile the regret against
    the exact LP optimum and the violations on tasks at quantiles of D.

    Parameters
    ----------
    out : str or Path
    oracles : sequence of str
    n_tasks, n_seeds, n_episodes : int
    profiles : sequence of str
    seed, train_eps, train_delta, n_reference, n_calibration, progress, jobs
        As in :func:`check_shift`.

    Returns
    -------
    dict
    """
    from ..envs import gridworld
    from ..lp import solve_lp

    specs = [_oracle_spec(o) for o in oracles]
    if not specs or not profiles:
        raise ValueError("oracles and profiles must each hold at least one entry")
    cfg = {"oracles": list(oracles), "n_tasks": check_int("n_tasks", n_tasks, 1),
           "n_seeds": check_int("n_seeds", n_seeds, 1),
           "n_episodes": check_int("n_episodes", n_episodes, 1), "profiles": list(profiles),
           "seed": check_int("seed", seed, 0),
           **_train_config(train_eps, train_delta, n_reference, n_calibration)}
    rf = RunFolder(out, "oracle-noise", cfg)
    t0 = time.perf_counter()
    pi_s = np.asarray(solve_lp(gridworld(_SAFE_NOISE)).policy)
    tasks, refs, noises = _feasible_tasks(quantile_noises(n_tasks))
    seeds = [_sub_seed(seed, f"run{j}") % 2**31 for j in range(n_seeds)]
    rows, panels_r, panels_v = [], {}, {}
    for k, (text, (oracle, opts)) in enumerate(zip(oracles, specs)):
        ps = _policy_set(rf, seed, progress, name=f"policyset_{k}", safe_policy=pi_s,
                         oracle=oracle, oracle_options=opts)
        lp_own = np.array([solve_lp(gridworld(float(x))).reward for x in ps.cover_params[:, 0]])
        quality = {"oracle": text, "n_cover": ps.n_policies,
                   "max_suboptimality": float(np.max(lp_own - ps.u)),
                   "min_own_slack": float(np.min(ps.v))}
        runs = _run_profile_part(rf, f"oracle_{k}", ps, list(profiles), tasks, refs, seeds,
                                 n_episodes, jobs, progress)
        for p, name in enumerate(profiles):
            row = {**quality, "profile": name, **_rates(runs, n_episodes, runs["profile"] == p)}
            rows.append(row)
            panels_r.setdefault(name, []).append(row["mean_regret"])
            panels_v.setdefault(name, []).append(row["violation_run_rate"])
    plot_panels(np.arange(len(oracles)), [
        {"ylabel": "mean final regret (vs exact LP)", "series": panels_r},
        {"ylabel": "runs with a violation", "series": panels_v},
    ], path=rf.out / "oracle_noise.png", xlabel="O_l", xticklabels=list(oracles),
        title=f"Inexact O_l: {len(tasks)} tasks x {n_seeds} seeds, K = {n_episodes}")
    res = {"figures": ["oracle_noise.png"], "noises": noises.tolist(), "seeds": seeds,
           "seconds": time.perf_counter() - t0, "parts_computed": rf.n_computed,
           "parts_skipped": rf.n_skipped}
    rf.write_results(res, rows)
    return {**res, "rows": rows}


# -- registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One ``safemeta experiment`` entry: its function and quick / full parameters."""

    name: str
    function: object
    description: str
    quick: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)


_SHORT = {"n_episodes": 5000, "n_seeds": 3}
EXPERIMENTS = {e.name: e for e in (
    Experiment("safe-policy", check_safe_policy,
               "V_c(pi_s) on tasks from D per O_s option vs xi - eps L",
               quick={"n_tasks": 100}, full={"n_tasks": 10_000}),
    Experiment("shift", check_shift, "test on shifted noise distributions; refutation",
               quick={"n_tasks": 5, **_SHORT}, full={}),
    Experiment("alpha-schedule", check_alpha_schedule, "weight schedules on tasks across D",
               quick={"n_tasks": 6, **_SHORT}, full={}),
    Experiment("margin", check_margin, "paper eps swept relative to xi",
               quick={"n_tasks": 3, "n_seeds": 2, "n_episodes": 5000}, full={}),
    Experiment("cover", check_cover, "held-out distance to the cover vs eps",
               quick={"n_heldout": (50, 1000)}, full={}),
    Experiment("dimension", check_dimension, "covering number of Algorithm 1 against d",
               quick={"dims": (1, 2, 3)}, full={}),
    Experiment("oracle-noise", check_oracle_noise, "inexact O_l (primal-dual) vs the exact LP",
               quick={"oracles": ("lp", "primal_dual:0.1"), "n_tasks": 3, "n_seeds": 2,
                      "n_episodes": 5000, "n_reference": 500, "n_calibration": 500}, full={}),
)}


def run_experiment(name: str, out=None, *, quick: bool = False, seed: int = 0, jobs=None,
                   progress: bool = True, **overrides) -> dict:
    """Run experiment ``name`` of :data:`EXPERIMENTS` into ``out``.

    Parameters
    ----------
    name : str
    out : str or Path, optional
        Default ``safemeta_<name>`` (``_quick`` appended with ``quick``).
    quick : bool
        The experiment's quick parameters (each under 2 minutes on 2 cores, warm cache).
    seed : int
    jobs : int, optional
        Threads of the fused runs.
    progress : bool
    **overrides
        Any parameter of the experiment function (e.g. tiny sizes in tests).

    Returns
    -------
    dict
        The experiment's results (also in ``out/results.json``).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment is {name!r}; expected one of {sorted(EXPERIMENTS)}")
    if jobs is not None:
        check_int("jobs", jobs, 1)
    e = EXPERIMENTS[name]
    params = {**(e.quick if quick else e.full), **overrides}
    out = Path(out if out is not None else f"safemeta_{name.replace('-', '_')}"
               + ("_quick" if quick else ""))
    return e.function(out, seed=seed, jobs=jobs, progress=progress, **params)
