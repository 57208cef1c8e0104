"""Safety audit of test-time profiles: many fused runs, one table row per profile.

:func:`audit_profiles` runs each profile of the test-time phase on every (task, seed)
with the exact audit and reduces the logs to the figures the README reports: mean final
regret with its 10-90 % band, runs with a violation, the fraction of unsafe episodes,
the largest exact cost, and the mean deployed weight on candidates. Runs are processed
task by task, so memory stays at one task's logs.

Examples
--------
>>> from safemeta_fast.envs import GridworldFamily, gridworld
>>> from safemeta_fast.training import train
>>> ps = train(GridworldFamily(), eps=0.02, delta=0.2, distance="parameter",
...            safe_policy=gridworld(0.4), seed=0, progress=False)
>>> rows = audit_profiles(ps, [gridworld(0.3)], seeds=range(2),
...                       profiles=("certified",), n_episodes=1000)
>>> [(row.profile, row.runs, row.runs_with_violation) for row in rows]
[('certified', 2, 0)]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

__all__ = ["AuditRow", "audit_profiles", "format_audit"]


@dataclass(frozen=True)
class AuditRow:
    """One profile's audit over every run.

    ``regret_mean``/``regret_q10``/``regret_q90`` are over final regrets;
    ``runs_with_violation`` counts runs with at least one deployed mixture above the
    limit; ``unsafe_fraction`` is over all episodes; ``max_cost`` is the largest exact
    cost of any deployed mixture; ``candidate_weight`` the mean deployed weight on
    candidates; ``refuted`` the certified runs whose calibration was refuted.
    """

    profile: str
    runs: int
    regret_mean: float
    regret_q10: float
    regret_q90: float
    runs_with_violation: int
    unsafe_fraction: float
    max_cost: float
    candidate_weight: float
    refuted: int
    uncertified_episodes: int


def audit_profiles(ps, tasks, *, seeds, profiles=("certified", "reference", "paper"),
                   n_episodes=40_000, regret_references=None, adapter_options=None,
                   progress=False, threads=None) -> list:
    """Audit each profile on every (task, seed); returns one :class:`AuditRow` per profile.

    ``adapter_options`` maps a profile name to extra :class:`SafeAdapter` keywords (the
    paper profile defaults to ``strict=False`` with the normalisation of ``tasks[0]``).
    """
    from ..adaptation import SafeAdapter
    from ..lp import solve_lp
    from ..theory import normalisation_of

    tasks = list(tasks)
    seeds = list(seeds)
    refs = (list(regret_references) if regret_references is not None
            else [float(solve_lp(M).reward) for M in tasks])
    opts = {"paper": dict(strict=False, **normalisation_of(tasks[0]))}
    opts.update(adapter_options or {})
    rows = []
    for name in profiles:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ad = SafeAdapter(ps, profile=name, n_episodes=n_episodes, seed=0, **opts.get(name, {}))
        finals, viol_runs, unsafe, max_cost, weight, refuted, unc = [], 0, 0, -np.inf, [], 0, 0
        for M, ref in tqdm(list(zip(tasks, refs)), desc=f"audit {name}", disable=not progress,
                           leave=False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logs = ad.run_tasks([M], seeds=seeds, regret_references=[ref], threads=threads)[0]
            for log in logs:
                finals.append(log.final_regret)
                viol_runs += log.violations > 0
                unsafe += log.violations
                max_cost = max(max_cost, float(np.max(log.exact_cost)))
                weight.append(log.mean_candidate_weight)
                if log.refuted_at is not None:
                    refuted += log.refuted_at >= 0
                    unc += log.uncertified
        f = np.asarray(finals)
        rows.append(AuditRow(
            profile=name, runs=f.size, regret_mean=float(f.mean()),
            regret_q10=float(np.quantile(f, 0.1)), regret_q90=float(np.quantile(f, 0.9)),
            runs_with_violation=int(viol_runs), unsafe_fraction=unsafe / (f.size * n_episodes),
            max_cost=max_cost, candidate_weight=float(np.mean(weight)), refuted=int(refuted),
            uncertified_episodes=int(unc)))
    return rows


def format_audit(rows) -> str:
    """A Markdown table of audit rows."""
    out = ["| profile | runs | mean regret (10-90%) | runs with a violation | unsafe episodes | "
           "max exact cost | weight on candidates |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.profile} | {r.runs} | {r.regret_mean / 1e3:.1f}K "
                   f"({r.regret_q10 / 1e3:.1f}-{r.regret_q90 / 1e3:.1f}K) | "
                   f"{r.runs_with_violation} | {100 * r.unsafe_fraction:.2f} % | "
                   f"{r.max_cost:.3f} | {r.candidate_weight:.3f} |")
    return "\n".join(out)
