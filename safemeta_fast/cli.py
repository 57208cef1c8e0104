"""The ``safemeta`` command.

Subcommands
-----------
demo
    Solve and evaluate the paper's gridworld at a few noise levels: occupancy LP,
    exact evaluation of its policy, the entropy-regularised primal-dual solver, the
    smallest achievable cost, and Monte-Carlo rollouts of the LP policy; prints a table.
train
    Training phase (paper Algorithm 1) on the paper's gridworld family; writes a
    PolicySet artifact.
test
    Test-time phase (paper Algorithm 2) of a saved PolicySet on gridworld test tasks
    (certified profile by default); prints regret, weights, eliminations and the exact
    safety audit.
reproduce
    The paper's gridworld experiment (training, the 10 test tasks, every method,
    Figure 1 and 2, summary tables) into a resumable run folder; ``--quick`` for a
    one-minute version.
experiment
    One of the paper's open checks (safe-policy, shift, alpha-schedule, margin, cover)
    into a resumable run folder (``safemeta_fast.experiments.checks``).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .errors import SafeMetaError

__all__ = ["main"]


def _fmt(x, width=10, prec=4):
    return f"{x:{width}.{prec}f}"


def cmd_demo(args) -> int:
    from .envs import gridworld
    from .errors import InfeasibleError
    from .evaluation import evaluate
    from .lp import min_cost, solve_lp
    from .planning import primal_dual
    from .rollout import rollout

    print(f"Paper gridworld {args.size}x{args.size}, cost limit 1.5, gamma 0.9; "
          f"rollouts: {args.episodes} episodes x {args.horizon} steps, seed {args.seed}")
    head = (f"{'noise':>6} | {'LP V_r':>10} {'LP V_c':>8} {'exact V_r':>10} {'min cost':>9} | "
            f"{'GDA V_r':>10} {'GDA V_c':>8} | {'MC V_r':>10} {'+-se':>6} {'MC V_c':>8} | "
            f"{'LP ms':>7} {'GDA s':>6} {'MC Msteps/s':>11}")
    print(head)
    print("-" * len(head))
    for noise in args.noise:
        M = gridworld(noise, size=args.size)
        mc = float(min_cost(M)[0])
        t0 = time.perf_counter()
        try:
            lp = solve_lp(M)
        except InfeasibleError:
            print(f"{noise:6.3f} | {'infeasible':>10} {'':>8} {'':>10} {mc:9.4f} | "
                  f"(smallest achievable cost {mc:.4f} > limit 1.5: no feasible policy)")
            continue
        lp_ms = 1e3 * (time.perf_counter() - t0)
        ev = evaluate(M, lp.policy)
        t0 = time.perf_counter()
        pd = primal_dual(M, beta=0.1)
        pd_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ro = rollout(M, lp.policy, args.episodes, args.horizon, seed=args.seed)
        ro_s = time.perf_counter() - t0
        se = ro.reward.std(ddof=1) / np.sqrt(args.episodes)
        print(f"{noise:6.3f} | {_fmt(lp.reward)} {_fmt(lp.cost[0], 8)} {_fmt(ev.reward)} "
              f"{mc:9.4f} | "
              f"{_fmt(pd.reward)} {_fmt(pd.cost[0], 8)} | {_fmt(ro.reward.mean())} {se:6.3f} "
              f"{_fmt(ro.cost[:, 0].mean(), 8)} | {lp_ms:7.1f} {pd_s:6.2f} "
              f"{args.episodes * args.horizon / ro_s / 1e6:11.1f}")
    print("\nLP = exact occupancy LP (warm-started HiGHS); exact V_r = closed-form evaluation "
          "of the LP policy; GDA = entropy-regularised primal-dual (beta 0.1, 10^4 iterations); "
          "MC = rollouts of the LP policy (closed-form finish at the absorbing goal). Timings "
          "include numba compilation on the first row unless the cache is warm.")
    return 0


def _safe_policy_arg(text: str, size: int):
    from .envs import gridworld

    if text == "robust":
        return "robust"
    try:
        if text.startswith("noise:"):
            return gridworld(float(text.split(":", 1)[1]), size=size)
        if text.endswith(".npy"):
            return np.load(text, allow_pickle=False)
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"--safe-policy {text!r}: {exc}") from None
    raise ValueError(f"--safe-policy {text!r}: expected 'robust', 'noise:X' or a .npy policy file")


def cmd_train(args) -> int:
    import warnings

    from .envs import GridworldFamily, paper_noise_distribution
    from .training import train

    family = GridworldFamily(paper_noise_distribution(args.noise_dist), size=args.size)
    safe = _safe_policy_arg(args.safe_policy, args.size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = train(family, eps=args.eps, delta=args.delta, distance=args.distance,
                   safe_policy=safe, oracle=args.oracle, n_rule=args.n_rule,
                   max_rounds=args.max_rounds, verify=args.verify, seed=args.seed,
                   progress=not args.no_progress, calibration=not args.no_calibration,
                   calibration_options={"n_reference": args.n_reference,
                                        "n_calibration": args.n_calibration})
    path = ps.save(args.out)
    info = ps.info
    print(f"policy set written to {path}")
    print(f"cover: {ps.n_policies} tasks, noise {ps.cover_params.min():.4f} .. "
          f"{ps.cover_params.max():.4f}; rounds (N, |U|, test):")
    for r in ps.rounds:
        print(f"  N={r['n_tasks']:>7}  |U|={r['n_cover']:>3}  uncovered={r['n_uncovered']:>6}  "
              f"test={r['test_value']:.4f} {'(passed)' if r['passed'] else ''}  "
              f"exact distances={r['n_exact_distances']}")
    print(f"safe policy: {info['safe_policy_source']}; verified on "
          f"{info['n_verified_tasks']} tasks; "
          f"xi_hat = {ps.xi_hat:.4f} (worst: {info['worst_task']['label']})")
    out = info["outside_cover"]
    if out["n_tasks"]:
        print(f"outside the cover: {out['n_tasks']} sampled tasks, pi_s unsafe on "
              f"{out['n_unsafe']} "
              f"(min slack {out['min_slack']:.4f} at {out['worst']})")
    pre = info["precondition"]
    print(f"paper precondition (8L+18) eps <= xi (normalised): {pre['lhs_(8L+18)eps']:.4g} <= "
          f"{pre['rhs_xi']:.4g}: {'holds' if pre['holds'] else 'FAILS (guarantee void)'}")
    cal = ps.calibration
    if cal is not None:
        print(f"calibration (certified profile): {cal.n_kept} of {cal.n_reference} reference tasks "
              f"kept, {cal.n_calibration} calibration tasks, q = {cal.q:.4g}, delta_cal = "
              f"{cal.delta_cal:g}, control variate {'on' if cal.cv_values is not None else 'off'} "
              f"({cal.info['seconds']['total']:.1f} s)")
    else:
        print("no calibration: the certified test profile needs calibrate(ps, family)")
    print(f"time: {info['seconds']['total']:.1f} s (cover {info['seconds']['cover']:.1f} s)")
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def cmd_test(args) -> int:
    import warnings

    from .adaptation import SafeAdapter, normalisation_of
    from .envs import PAPER_TEST_NOISES, gridworld
    from .planning import primal_dual
    from .policyset import PolicySet

    ps = PolicySet.load(args.policy_set)
    side = int(round(ps.n_states ** 0.5))
    if side * side != ps.n_states:
        raise ValueError(f"the policy set has {ps.n_states} states; the gridworld test tasks "
                         "need a square number")
    noises = PAPER_TEST_NOISES if args.noise is None else args.noise
    tasks = [gridworld(x, size=side) for x in noises]
    extra = {}
    if args.profile == "paper":
        extra = normalisation_of(tasks[0])
    seeds = list(range(args.seed, args.seed + args.seeds))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.profile == "certified" and args.no_control_variate:
            extra["control_variate"] = False
        ad = SafeAdapter(ps, profile=args.profile, n_episodes=args.episodes, horizon=args.horizon,
                         seed=args.seed, strict=not args.no_strict, **extra)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    refs = None
    if args.regret_reference == "primal_dual":
        refs = [primal_dual(M, beta=0.1).reward for M in tasks]
    t0 = time.perf_counter()
    logs = ad.run_tasks(tasks, seeds=seeds, regret_references=refs,
                        stop_on_violation=args.stop_on_violation)
    seconds = time.perf_counter() - t0
    total_viol = 0
    finals = []
    for x, row in zip(noises, logs):
        for log in row:
            print(f"--- test noise {x:.8f}, seed {log.seed} ---")
            print(log.summary())
            total_viol += log.violations
            finals.append(log.final_regret)
    ref_name = "LP optimum" if refs is None else "primal-dual (beta 0.1) value"
    print(f"\n{len(finals)} runs ({len(noises)} tasks x {len(seeds)} seeds), K = {args.episodes}, "
          f"profile {args.profile}; regret reference: {ref_name}")
    if len(finals) > 1:
        q10, q90 = np.quantile(finals, [0.1, 0.9])
        print(f"final regret: mean {np.mean(finals):.1f}, 10-90% band {q10:.1f} .. {q90:.1f}")
    if total_viol:
        print(f"!!! {total_viol} deployed mixtures in total had exact cost above the limit !!!")
    else:
        print("no deployed mixture had exact cost above the limit")
    if args.profile == "certified":
        flat = [log for row in logs for log in row]
        refuted = sum(log.refuted_at >= 0 for log in flat)
        weight = np.mean([log.mean_candidate_weight for log in flat])
        print(f"certified: mean weight on candidates {weight:.4f}; "
              f"{sum(log.uncertified for log in flat)} uncertified pi_s episodes; calibration "
              f"refuted in {refuted} runs; delta_cal {ad.delta_cal:g} + "
              f"delta_test {ad.delta_test:g}")
    print(f"time: {seconds:.2f} s for the runs")
    return 0


def cmd_reproduce(args) -> int:
    from .experiments.paper import METHODS, PaperConfig, format_summary, run_paper

    methods = tuple(args.methods) if args.methods else tuple(METHODS)
    chosen = {"methods": methods, "n_tasks": args.tasks, "n_episodes": args.episodes,
              "n_seeds": args.seeds, "seed": args.seed, "warmup": args.warmup,
              "horizon": args.horizon}
    if args.quick:
        cfg = PaperConfig.quick_preset(**chosen)
    else:
        cfg = PaperConfig(**{k: v for k, v in chosen.items() if v is not None})
    out = args.out or ("safemeta_quick" if args.quick else "safemeta_paper")
    print(f"paper experiment -> {out}: methods {', '.join(cfg.methods)}; {cfg.n_tasks} tasks, "
          f"K = {cfg.n_episodes}, {cfg.n_seeds} seed(s), base seed {cfg.seed}, DOPE/DOPE+ "
          f"warm-up {cfg.resolved_warmup}{' (quick)' if cfg.quick else ''}")
    try:
        run = run_paper(cfg, out, jobs=args.jobs, progress=not args.no_progress,
                        executor=args.executor, address=args.address)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished units are kept in {out}; run the same command again "
              "to resume", file=sys.stderr)
        return 130
    print()
    print(format_summary(run.summary))
    s = run.seconds
    print(f"\nunits run now: {run.n_run}, skipped (already finished): {run.n_skipped}, failed: "
          f"{len(run.failures)}; time: prepare {s['prepare']:.1f} s, units {s['units']:.1f} s, "
          f"aggregate {s['aggregate']:.1f} s, total {s['total']:.1f} s")
    print(f"outputs in {run.out}: config.json, tasks.json, policyset.npz, runs/, summary.json, "
          f"summary.csv, {', '.join(run.summary.get('figures', []))}")
    return 1 if run.failures else 0


def cmd_experiment(args) -> int:
    from .experiments.checks import run_experiment

    t0 = time.perf_counter()
    try:
        res = run_experiment(args.name, args.out, quick=args.quick, seed=args.seed,
                             jobs=args.jobs, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("\ninterrupted: finished parts are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    for row in res["rows"]:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
    print(f"parts computed {res['parts_computed']}, skipped {res['parts_skipped']}; figures "
          f"{', '.join(res['figures'])}; {time.perf_counter() - t0:.1f} s")
    return 0


def add_experiment_parser(sub) -> None:
    """The ``experiment`` subcommand (its own function: one self-contained edit)."""
    from .experiments.checks import EXPERIMENTS

    x = sub.add_parser("experiment", help="one of the paper's open checks into a resumable "
                                          "run folder: " + ", ".join(EXPERIMENTS),
                       description="One of the paper's open checks (README, 'Findings'), written "
                                   "to a resumable run folder: config.json, results.json, "
                                   "results.csv and PNG figures.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("name", choices=list(EXPERIMENTS), help="the experiment")
    x.add_argument("--quick", action="store_true", help="small version (under 2 minutes)")
    x.add_argument("--out", default=None,
                   help="run folder (default safemeta_<name>[_quick]); finished parts are kept")
    x.add_argument("--jobs", type=int, default=None, help="threads of the fused runs")
    x.add_argument("--seed", type=int, default=0, help="base seed of the experiment")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")
    x.set_defaults(func=cmd_experiment)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="safemeta", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def parser(name, summary, description):
        return sub.add_parser(name, help=summary, description=description, formatter_class=fmt)

    d = parser("demo", "solve and evaluate the paper gridworld; print a table",
               "Solve the paper's gridworld at a few noise levels (occupancy LP, exact evaluation, "
               "the primal-dual solver, the smallest achievable cost) and check the LP policy by "
               "Monte-Carlo rollouts.")
    d.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 0.4, 0.5],
                   help="slip noise levels")
    d.add_argument("--size", type=int, default=7, help="grid side")
    d.add_argument("--episodes", type=int, default=20_000, help="rollout episodes per task")
    d.add_argument("--horizon", type=int, default=600, help="episode length H")
    d.add_argument("--seed", type=int, default=0, help="rollout seed")
    d.set_defaults(func=cmd_demo)
    t = parser("train", "training phase (Algorithm 1) on the paper's gridworld family",
               "Training phase (paper Algorithm 1) on the paper's gridworld family, then the "
               "certified profile's calibration; writes a PolicySet artifact. The defaults are the "
               "paper's recipe and differ from the library's train(): --distance parameter "
               "(train(): model) and --safe-policy noise:0.4 (train(): robust).")
    t.add_argument("--eps", type=float, default=0.005, help="closeness radius of the cover")
    t.add_argument("--delta", type=float, default=0.05, help="confidence parameter")
    t.add_argument("--distance", choices=["model", "parameter"], default="parameter",
                   help="exact model distance or the noise-level difference (the authors')")
    t.add_argument("--safe-policy", default="noise:0.4",
                   help="'robust', 'noise:X' (LP optimum of that gridworld) or a .npy (S, A) file")
    t.add_argument("--oracle", choices=["lp", "primal_dual"], default="lp",
                   help="O_l: occupancy LP or the authors' entropy-regularised GDA (beta 0.1)")
    t.add_argument("--n-rule", choices=["paper", "authors"], default="paper",
                   help="initial sample size rule (SPEC 5) or the reference code's")
    t.add_argument("--noise-dist", choices=["truncate", "clip"], default="truncate",
                   help="N(0.3, 0.03) truncated to [0, 0.5], or clipped as the authors' code")
    t.add_argument("--max-rounds", type=int, default=8, help="cap on the cover loop's rounds")
    t.add_argument("--verify", choices=["all", "cover"], default="all",
                   help="verify pi_s on every sampled task or on the cover tasks only")
    t.add_argument("--size", type=int, default=7, help="grid side")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--out", default="policyset.npz", help="artifact path")
    t.add_argument("--no-calibration", action="store_true",
                   help="skip the certified profile's calibration (add it later with calibrate())")
    t.add_argument("--n-reference", type=int, default=2000,
                   help="calibration: reference tasks sampled from D")
    t.add_argument("--n-calibration", type=int, default=2000,
                   help="calibration: conformal calibration tasks sampled from D")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    e = parser("test", "test-time phase (Algorithm 2) of a saved policy set",
               "Test-time phase (paper Algorithm 2) of a saved policy set on gridworld test tasks, "
               "every run audited exactly; prints per run and in summary.")
    e.add_argument("--policy-set", required=True, help="a PolicySet .npz written by 'train'")
    e.add_argument("--noise", type=float, nargs="+", default=None,
                   help="test-task noise levels (default: the 10 paper test tasks)")
    e.add_argument("--profile", choices=["certified", "paper", "reference", "pce"],
                   default="certified",
                   help="certified (CERTIFIED.md; needs a calibrated policy set), the paper's "
                        "constants, the authors' reference constants, or PCE without safety")
    e.add_argument("--no-control-variate", action="store_true",
                   help="certified: do not use the start-state control variate")
    e.add_argument("--episodes", type=int, default=40_000, help="episodes K per run")
    e.add_argument("--horizon", type=int, default=600, help="episode length H")
    e.add_argument("--seed", type=int, default=0, help="first seed")
    e.add_argument("--seeds", type=int, default=1, help="number of seeds per task, from --seed")
    e.add_argument("--regret-reference", choices=["lp", "primal_dual"], default="lp",
                   help="V* of the regret: exact LP optimum or the authors' primal-dual value")
    e.add_argument("--no-strict", action="store_true",
                   help="paper profile: run even when its preconditions fail (no guarantee)")
    e.add_argument("--stop-on-violation", action="store_true",
                   help="stop a run before it deploys a mixture above the limit")
    e.set_defaults(func=cmd_test)
    rp = parser("reproduce", "the paper's gridworld experiment (Figure 2): every method, run "
                             "folder, summary and figures",
                "The paper's gridworld experiment: train the policy set with the authors' recipe, "
                "run every method on the paper's test tasks in a resumable run folder, write the "
                "summary tables and Figures 1 and 2.")
    rp.add_argument("--quick", action="store_true",
                    help="3 tasks, K = 5,000, 1 seed, every method (about a minute)")
    rp.add_argument("--methods", nargs="+", default=None,
                    help="subset of: ours safe_pce safe_pce_paper pce safe_meta_rl dope_plus "
                         "lb_sgd dope safe_policy (default: all)")
    rp.add_argument("--tasks", type=int, default=None, help="first N paper test tasks (1..10)")
    rp.add_argument("--episodes", type=int, default=None, help="episodes K per run")
    rp.add_argument("--seeds", type=int, default=None, help="runs per (method, task)")
    rp.add_argument("--seed", type=int, default=None, help="base seed (default 0)")
    rp.add_argument("--warmup", type=int, default=None,
                    help="DOPE+/DOPE warm-up episodes (default 18,000/40,000 of K)")
    rp.add_argument("--horizon", type=int, default=None, help="episode length (default 600)")
    rp.add_argument("--out", default=None,
                    help="run folder (default safemeta_quick or safemeta_paper); finished units "
                         "in it are skipped")
    rp.add_argument("--jobs", type=int, default=2,
                    help="worker processes (--executor process) or local Ray CPUs")
    rp.add_argument("--executor", choices=["process", "ray"], default="process",
                    help="local spawn pool, or Ray tasks (pip install -e '.[ray]'); results are "
                         "identical, so either resumes a folder")
    rp.add_argument("--address", default=None,
                    help="Ray cluster address (with --executor ray; default: a local Ray)")
    rp.add_argument("--no-progress", action="store_true", help="no progress bars")
    rp.set_defaults(func=cmd_reproduce)
    add_experiment_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"safemeta: error: {exc}", file=sys.stderr)
        return 2
    except SafeMetaError as exc:
        print(f"safemeta: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
