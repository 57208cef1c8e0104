"""Per-run records of test-time profiles on a list of tasks (for the open-check experiments).

:func:`profile_runs` runs named profiles of :class:`~safemeta_fast.adaptation.SafeAdapter`
with the exact audit on every (task, seed) and keeps one row of numbers per run (unlike
:func:`~safemeta_fast.experiments.audit.audit_profiles`, which reduces to one row per
profile): final regret, violations, largest exact cost, weight on candidates and, for the
certified profile, the episode of refutation, the alive references at the end and
whether only pi_s ran after a refutation.

Profile names: ``"certified"``, ``"reference"``, ``"paper"`` (``strict=False`` with the
family's normalisation: its preconditions fail on the paper's setting) and
``"fixed_alpha_<a>"`` (the reference constants with alpha fixed at ``a``).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

__all__ = ["RUN_FIELDS", "adapter", "profile_runs"]

#: The per-run arrays returned by :func:`profile_runs`.
RUN_FIELDS = ("task", "seed", "final_regret", "violations", "max_cost", "candidate_weight",
              "refuted_at", "alive_end", "fallback_only_pi_s")


def adapter(ps, name: str, *, n_episodes: int, normalisation_task, profile=None):
    """The :class:`SafeAdapter` of a profile name (or of ``profile`` under that name).

    Parameters
    ----------
    ps : PolicySet
    name : str
        ``"certified"``, ``"reference"``, ``"paper"``, ``"pce"`` or ``"fixed_alpha_<a>"``.
    n_episodes : int
    normalisation_task : CMDP
        Any task of the family (the paper profile's normalisation).
    profile : Profile, optional
        Use this profile (e.g. the paper profile with another eps) instead of the name's.
    """
    from ..adaptation import REFERENCE, SafeAdapter
    from ..theory import normalisation_of

    opts = {}
    if profile is None:
        if name.startswith("fixed_alpha_"):
            try:
                a = float(name[len("fixed_alpha_"):])
            except ValueError:
                raise ValueError(f"profile name {name!r}: expected fixed_alpha_<number>") from None
            profile = replace(REFERENCE, name=name, fixed_alpha=a)
        else:
            profile = name
    pname = profile if isinstance(profile, str) else profile.name
    if pname == "paper" or getattr(profile, "normalised", False):
        opts = dict(strict=False, **normalisation_of(normalisation_task))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SafeAdapter(ps, profile=profile, n_episodes=n_episodes, seed=0, **opts)


def profile_runs(ad, tasks, refs, seeds, *, threads=None) -> dict:
    """One record per (task, seed) of adapter ``ad``; arrays of :data:`RUN_FIELDS`.

    Parameters
    ----------
    ad : SafeAdapter
    tasks : sequence of CMDP
    refs : sequence of float
        V* of each task (regret reference).
    seeds : sequence of int
    threads : int, optional
        Worker threads of :meth:`SafeAdapter.run_tasks`.

    Returns
    -------
    dict of str -> numpy.ndarray, shape (len(tasks) * len(seeds),)
        ``refuted_at`` is -1 when never refuted (and for classic profiles);
        ``alive_end`` is -1 for classic profiles; ``fallback_only_pi_s`` is 1 when every
        episode after the refutation ran pi_s alone (1 also when never refuted).
    """
    out = {k: [] for k in RUN_FIELDS}
    n = ad.policy_set.n_policies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logs = ad.run_tasks(list(tasks), seeds=list(seeds), regret_references=list(refs),
                            threads=threads)
    for i, row in enumerate(logs):
        for log in row:
            out["task"].append(i)
            out["seed"].append(log.seed)
            out["final_regret"].append(log.final_regret)
            out["violations"].append(log.violations)
            out["max_cost"].append(float(np.max(log.exact_cost)))
            out["candidate_weight"].append(log.mean_candidate_weight)
            r = -1 if log.refuted_at is None else int(log.refuted_at)
            out["refuted_at"].append(r)
            out["alive_end"].append(-1 if log.alive is None else int(log.alive[-1]))
            after = slice(r + 1, None) if r >= 0 else slice(0, 0)  # empty: vacuously true
            only_s = bool(np.all(log.drawn[after] == n) and np.all(log.alpha[after] == 0.0))
            out["fallback_only_pi_s"].append(int(only_s))
    ints = ("task", "seed", "violations", "refuted_at", "alive_end", "fallback_only_pi_s")
    return {k: np.asarray(v, dtype=np.int64 if k in ints else np.float64) for k, v in out.items()}
