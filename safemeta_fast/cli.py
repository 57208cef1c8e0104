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
        print(f"{noise:6.3f} | {_fmt(lp.reward)} {_fmt(lp.cost[0], 8)} {_fmt(ev.reward)} {mc:9.4f} | "
              f"{_fmt(pd.reward)} {_fmt(pd.cost[0], 8)} | {_fmt(ro.reward.mean())} {se:6.3f} "
              f"{_fmt(ro.cost[:, 0].mean(), 8)} | {lp_ms:7.1f} {pd_s:6.2f} "
              f"{args.episodes * args.horizon / ro_s / 1e6:11.1f}")
    print("\nLP = exact occupancy LP (warm-started HiGHS); exact V_r = closed-form evaluation of the "
          "LP policy; GDA = entropy-regularised primal-dual (beta 0.1, 10^4 iterations); MC = "
          "rollouts of the LP policy (closed-form finish at the absorbing goal). Timings include "
          "numba compilation on the first row unless the cache is warm.")
    return 0


def _safe_policy_arg(text: str, size: int):
    from .envs import gridworld

    if text == "robust":
        return "robust"
    if text.startswith("noise:"):
        return gridworld(float(text.split(":", 1)[1]), size=size)
    if text.endswith(".npy"):
        return np.load(text, allow_pickle=False)
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
                   progress=not args.no_progress)
    path = ps.save(args.out)
    info = ps.info
    print(f"policy set written to {path}")
    print(f"cover: {ps.n_policies} tasks, noise {ps.cover_params.min():.4f} .. "
          f"{ps.cover_params.max():.4f}; rounds (N, |U|, test):")
    for r in ps.rounds:
        print(f"  N={r['n_tasks']:>7}  |U|={r['n_cover']:>3}  uncovered={r['n_uncovered']:>6}  "
              f"test={r['test_value']:.4f} {'(passed)' if r['passed'] else ''}  "
              f"exact distances={r['n_exact_distances']}")
    print(f"safe policy: {info['safe_policy_source']}; verified on {info['n_verified_tasks']} tasks; "
          f"xi_hat = {ps.xi_hat:.4f} (worst: {info['worst_task']['label']})")
    out = info["outside_cover"]
    if out["n_tasks"]:
        print(f"outside the cover: {out['n_tasks']} sampled tasks, pi_s unsafe on {out['n_unsafe']} "
              f"(min slack {out['min_slack']:.4f} at {out['worst']})")
    pre = info["precondition"]
    print(f"paper precondition (8L+18) eps <= xi (normalised): {pre['lhs_(8L+18)eps']:.4g} <= "
          f"{pre['rhs_xi']:.4g}: {'holds' if pre['holds'] else 'FAILS (guarantee void)'}")
    print(f"time: {info['seconds']['total']:.1f} s (cover {info['seconds']['cover']:.1f} s)")
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="safemeta", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="solve and evaluate the paper gridworld; print a table")
    d.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 0.4, 0.5])
    d.add_argument("--size", type=int, default=7)
    d.add_argument("--episodes", type=int, default=20_000)
    d.add_argument("--horizon", type=int, default=600)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="training phase (Algorithm 1) on the paper's gridworld family")
    t.add_argument("--eps", type=float, default=0.005)
    t.add_argument("--delta", type=float, default=0.05)
    t.add_argument("--distance", choices=["model", "parameter"], default="parameter")
    t.add_argument("--safe-policy", default="noise:0.4",
                   help="'robust', 'noise:X' (LP optimum of that gridworld) or a .npy (S, A) file")
    t.add_argument("--oracle", choices=["lp", "primal_dual"], default="lp")
    t.add_argument("--n-rule", choices=["paper", "authors"], default="paper")
    t.add_argument("--noise-dist", choices=["truncate", "clip"], default="truncate")
    t.add_argument("--max-rounds", type=int, default=8)
    t.add_argument("--verify", choices=["all", "cover"], default="all")
    t.add_argument("--size", type=int, default=7)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="policyset.npz")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)
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
