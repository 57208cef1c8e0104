"""Aggregation of a paper run folder: summary.json, summary.csv, the figures, the table.

:func:`summarise` reads every unit of a run folder through
:func:`~safemeta_fast.experiments.units.check_unit`, so a unit that is unreadable or
does not match the folder's inputs is reported by path and left out (the table then says
how many runs are missing), never summarised silently.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ..runio import atomic_write_bytes, csv_text, notify, read_json, write_json
from .config import METHODS, REFERENCE_EPISODES, PaperConfig
from .units import check_unit, expected_unit, input_hashes, unit_path

__all__ = ["summarise", "format_summary", "bands", "CSV_COLUMNS"]


def _stack(rows: list, width: int) -> np.ndarray:
    """Rows of possibly different lengths -> (n, width), NaN-padded."""
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


def _load_method(out: Path, doc: dict, hashes: dict, method: str, n_tasks: int,
                 n_seeds: int, echo) -> dict | None:
    regrets, costs, metas = [], [], []
    for t in range(n_tasks):
        for j in range(n_seeds):
            expect = expected_unit(doc, method, t, j, hashes)
            loaded = check_unit(unit_path(out, method, t, j), expect, echo=echo)
            if loaded is None:
                continue
            arrays, meta = loaded
            regrets.append(arrays["regret"])
            costs.append(arrays["exact_cost"].max(axis=1))
            metas.append(meta)
    if not metas:
        return None
    return {"regret": regrets, "cost": costs, "meta": metas}


def bands(name: str, X: np.ndarray) -> dict:
    """Mean and 10% / 90% quantiles over runs (axis 0); NaN entries (stopped runs) ignored."""
    if not np.isnan(X).any():
        q10, q90 = np.quantile(X, [0.1, 0.9], axis=0)
        return {f"{name}_mean": X.mean(axis=0), f"{name}_q10": q10, f"{name}_q90": q90}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        q10, q90 = np.nanquantile(X, [0.1, 0.9], axis=0)
        return {f"{name}_mean": np.nanmean(X, axis=0), f"{name}_q10": q10, f"{name}_q90": q90}


def summarise(out, config: PaperConfig | None = None, *, figures: bool = True,
              echo=None) -> dict:
    """Aggregate the unit files of ``out`` into summary.json / summary.csv and the figures.

    Parameters
    ----------
    out : str or Path
        A run folder written by :func:`run_paper`.
    config : PaperConfig, optional
        Selection to summarise; default the folder's stored selection. Methods of other
        selections whose units are in the folder are summarised too.
    figures : bool, default True
    echo : callable, optional
        Where a unit left out is reported (unreadable, or not matching the folder's
        method, task, seed or inputs: :func:`~safemeta_fast.experiments.units.check_unit`);
        default a :class:`RuntimeWarning`.

    Returns
    -------
    dict
        The content of ``summary.json``: per method ``n_runs``, ``n_expected``,
        ``mean_final_regret``, ``q10_final_regret``, ``q90_final_regret`` (10% / 90%
        empirical quantiles over runs, as ``numpy.quantile``), ``paper_mean_final_regret``
        (published, at K = 40,000), ``mean_exact_cost`` and ``max_exact_cost`` (over every
        episode of every run; the largest constraint), ``mean_final_cost``,
        ``total_violations`` (episodes with exact cost above the limit), ``runs_with_violations``,
        ``stopped_runs``, ``wall_time_s`` (summed over runs).
    """
    out = Path(out)
    doc = read_json(out / "config.json")
    if config is None:
        sel = doc["selection"]
        methods, n_tasks, n_seeds = sel["methods"], sel["n_tasks"], sel["n_seeds"]
    else:
        methods, n_tasks, n_seeds = list(config.methods), config.n_tasks, config.n_seeds
    on_disk = [m for m in METHODS if (out / "runs" / m).is_dir() and m not in methods]
    methods = list(methods) + on_disk  # every method with units in the folder is summarised
    K = int(doc["result"]["n_episodes"])
    tasks = read_json(out / "tasks.json")["tasks"][:n_tasks]
    hashes = input_hashes(out)

    def left_out(message):
        notify(f"{message}; left out of this summary", echo, stacklevel=4)

    summary = {
        "n_episodes": K, "n_tasks": n_tasks, "n_seeds": n_seeds, "cost_limit": None,
        "paper_reference_episodes": REFERENCE_EPISODES,
        "note": "paper_mean_final_regret is the published mean at K = 40,000 (Figure 2); "
                "compare only when n_episodes = 40,000",
        "warmup": doc["result"]["warmup"],
        "test_noises": [t["noise"] for t in tasks],
        "u_opt": [t["u_opt"] for t in tasks],
        "methods": {},
    }
    curves = {}
    for m in methods:
        spec = METHODS[m]
        data = _load_method(out, doc, hashes, m, n_tasks, n_seeds, left_out)
        entry = {"label": spec.label, "inferred": spec.inferred, "n_expected": n_tasks * n_seeds,
                 "paper_mean_final_regret": spec.paper_mean}
        if data is None:
            entry["n_runs"] = 0
            summary["methods"][m] = entry
            continue
        metas = data["meta"]
        final = np.array([r[-1] if r.size else 0.0 for r in data["regret"]])
        q10, q90 = np.quantile(final, [0.1, 0.9])
        all_cost = np.concatenate(data["cost"])
        viol = np.array([int(mt["violations"]) for mt in metas])
        summary["cost_limit"] = float(min(metas[0]["cost_limit"]))
        entry.update({
            "n_runs": len(metas),
            "mean_final_regret": float(final.mean()),
            "q10_final_regret": float(q10),
            "q90_final_regret": float(q90),
            "final_regret_per_run": final.tolist(),
            "mean_exact_cost": float(all_cost.mean()) if all_cost.size else math.nan,
            "max_exact_cost": float(all_cost.max()) if all_cost.size else math.nan,
            "mean_final_cost": float(np.mean([c[-1] for c in data["cost"] if c.size])),
            "total_violations": int(viol.sum()),
            "runs_with_violations": int(np.count_nonzero(viol)),
            "stopped_runs": int(sum(bool(mt["stopped_on_violation"]) for mt in metas)),
            "wall_time_s": float(sum(float(mt["wall_time"]) for mt in metas)),
            "runs": [{"task": mt["task"], "seed_index": mt["seed_index"], "seed": mt["seed"],
                      "final_regret": mt["final_regret"], "violations": mt["violations"],
                      "wall_time": mt["wall_time"]} for mt in metas],
        })
        summary["methods"][m] = entry
        idx = np.arange(K)  # full resolution: the plot decimates, keeping every spike
        R = _stack(data["regret"], K)
        C = _stack(data["cost"], K)
        curves[m] = {"label": spec.label, "figure": spec.figure, "episodes": idx,
                     **bands("regret", R), **bands("cost", C)}
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", summary)
    if figures:
        summary["figures"] = _draw_figures(out, curves, summary)
        write_json(out / "summary.json", summary)
    return summary


CSV_COLUMNS = ("method", "label", "n_runs", "n_expected", "mean_final_regret", "q10_final_regret",
                "q90_final_regret", "paper_mean_final_regret", "mean_exact_cost", "max_exact_cost",
                "total_violations", "runs_with_violations", "wall_time_s", "inferred")


def _write_csv(path: Path, summary: dict) -> None:
    rows = [{col: m if col == "method" else e.get(col) for col in CSV_COLUMNS}
            for m, e in summary["methods"].items()]
    atomic_write_bytes(path, csv_text(rows).encode())


def _draw_figures(out: Path, curves: dict, summary: dict) -> list:
    from .. import plotting
    from ..envs import gridworld
    from ..lp import solve_lp

    written = []
    limit = summary["cost_limit"] if summary["cost_limit"] is not None else 1.5
    K = summary["n_episodes"]
    sub = f"{summary['n_tasks']} tasks x {summary['n_seeds']} seed(s), K = {K}"
    fig2 = [m for m in ("ours", "safe_pce", "safe_meta_rl", "dope_plus", "lb_sgd", "safe_policy")
            if m in curves]
    if fig2:
        plotting.plot_regret_cost({m: curves[m] for m in fig2}, cost_limit=limit,
                                  path=out / "figure2.png",
                                  title=f"Figure 2: gridworld test tasks ({sub})")
        written.append("figure2.png")
    more = [m for m in ("safe_pce", "safe_pce_paper", "pce", "dope", "safe_policy") if m in curves]
    if any(METHODS[m].figure == "more" for m in more):
        plotting.plot_regret_cost({m: curves[m] for m in more}, cost_limit=limit,
                                  path=out / "figure_more_baselines.png",
                                  title=f"More baselines ({sub}); DOPE is an [inferred] "
                                        "discounted translation")
        written.append("figure_more_baselines.png")
    panels = []
    for noise in (0.1, 0.3):
        M = gridworld(noise)
        lp = solve_lp(M)
        panels.append((M, np.asarray(lp.policy),
                       f"noise {noise}: LP optimum V_r = {lp.reward:.3f}, "
                       f"V_c = {float(lp.cost[0]):.3f}"))
    plotting.plot_gridworld_policies(panels, path=out / "figure1.png")
    written.append("figure1.png")
    return written


def format_summary(summary: dict) -> str:
    """The summary as a text table; one loud line per method with violations."""
    K = summary["n_episodes"]
    head = (f"{'method':<16} {'runs':>5} {'mean regret':>12} {'10%':>10} {'90%':>10} "
            f"{'paper@40K':>10} {'mean cost':>9} {'max cost':>9} {'viol.':>6} {'time s':>8}")
    lines = [f"K = {K} episodes, {summary['n_tasks']} tasks x {summary['n_seeds']} seed(s); "
             f"cost limit {summary['cost_limit']}", head, "-" * len(head)]
    loud = []
    fmt = lambda v, w, p=0: (f"{v:{w}.{p}f}" if isinstance(v, (int, float)) and v is not None  # noqa: E731
                             and not (isinstance(v, float) and math.isnan(v)) else f"{'-':>{w}}")
    for m, e in summary["methods"].items():
        name = m + (" *" if e.get("inferred") else "")
        if not e.get("n_runs"):
            lines.append(f"{name:<16} {0:>5}   (no finished runs)")
            continue
        lines.append(
            f"{name:<16} {e['n_runs']:>5} {fmt(e['mean_final_regret'], 12)} "
            f"{fmt(e['q10_final_regret'], 10)} {fmt(e['q90_final_regret'], 10)} "
            f"{fmt(e['paper_mean_final_regret'], 10)} {fmt(e['mean_exact_cost'], 9, 4)} "
            f"{fmt(e['max_exact_cost'], 9, 4)} {e['total_violations']:>6} "
            f"{fmt(e['wall_time_s'], 8, 1)}")
        if e["total_violations"]:
            loud.append(f"!!! SAFETY VIOLATIONS: {m}: {e['total_violations']} episodes in "
                        f"{e['runs_with_violations']} of {e['n_runs']} runs deployed a policy "
                        f"with exact cost above the limit (max {e['max_exact_cost']:.4f}) !!!")
        if e.get("stopped_runs"):
            loud.append(f"!!! {m}: {e['stopped_runs']} runs stopped on a violation !!!")
        if e["n_runs"] < e["n_expected"]:
            loud.append(f"!!! {m}: only {e['n_runs']} of {e['n_expected']} runs finished !!!")
    if any(e.get("inferred") for e in summary["methods"].values()):
        lines.append("* [inferred]: DOPE is a discounted translation (BASELINES 7), not the "
                     "authors' code")
    if K != REFERENCE_EPISODES:
        lines.append(f"paper@40K is the published mean at K = {REFERENCE_EPISODES}; this run has "
                     f"K = {K}, so it is not comparable")
    return "\n".join(lines + loud)
