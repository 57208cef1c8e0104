"""The paper's gridworld experiment (SPEC section 7, BASELINES.md): every method, one command.

``run_paper(PaperConfig(...), out)`` reproduces Figure 2 of the paper (and the authors'
extra-baselines plot) into a run folder:

1. **Inputs, computed once and stored** (reused on resume): the safe policy
   ``pi_s = primal_dual(gridworld(0.4), beta=0.1).policy`` (the reference's "LP(0.4)",
   BASELINES 0); the policy set of the training phase (``train(GridworldFamily(),
   eps=0.005, delta=0.05, distance="parameter", oracle="primal_dual", verify="cover")``)
   in ``policyset.npz``; per test task the regret reference ``u_opt = primal_dual(M,
   beta=0.1).reward`` (BASELINES 8.2: computed once per task, shared by every method),
   the exact LP optimum and the exact values of the start policies, in ``tasks.json``;
   LB-SGD's start policy ``pi_LB`` (GDA beta 8 on noise 0.4) in ``start_policies.npz``.
2. **Units** = (method, task, seed index); each records the hashes of the inputs it
   read and is re-run when they change or its file cannot be read. Each has its own seed
   derived from the base seed and (method, task index, seed index) by
   :func:`derive_seed`; every unit seed is recorded in ``config.json``. Units run in a
   process pool ("spawn", numba limited to one thread per worker) and each finished unit
   is written at once, atomically, to
   ``runs/<method>/task<i>_seed<j>.npz`` (:mod:`safemeta_fast.runio`). A re-run with the
   same folder skips finished units; a run whose result-affecting parameters differ from
   the stored ``config.json`` is refused (:class:`ConfigMismatchError` names the keys).
   Changing only the selection (methods, number of tasks or seeds) is allowed: unit
   results do not depend on it.
3. **Aggregation** (:func:`summarise`): ``summary.json`` / ``summary.csv`` (per method:
   runs, mean and 10%/90% quantiles of the final cumulative regret, mean and max exact
   cost, violations, wall time, the paper's published mean) and the figures
   ``figure2.png``, ``figure_more_baselines.png``, ``figure1.png``.

The rooms: :mod:`.config` (methods, parameters, seeds), :mod:`.units` (the public unit
API: prepare the folder, list units, run one unit), :mod:`.summary` (aggregation, table,
figures) and :mod:`.scheduler` (in process, process pool, Ray; handed its work functions).
This module wires them into :func:`run_paper` and re-exports their public names.

Every curve is indexed by episodes (BASELINES 0.1); regret increments are
``u_opt - V_r(pi_k)`` with exact ``V_r``, unclipped, except PCE without safety, whose
reference bookkeeping adds ``|u_opt - V_r|`` (BASELINES 3d). This module is an
orchestrator: the per-episode work happens in the methods' compiled kernels.

Examples
--------
A small run (a few seconds; the command line equivalent is ``safemeta reproduce
--methods safe_pce safe_policy --tasks 1 --episodes 200 --jobs 1 --out /tmp/run``)::

    from safemeta_fast.experiments import PaperConfig, run_paper, format_summary
    cfg = PaperConfig(methods=("safe_pce", "safe_policy"), n_tasks=1, n_episodes=200)
    run = run_paper(cfg, "/tmp/run", jobs=1, progress=False)
    print(format_summary(run.summary))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..runio import remove_stale_temporaries, run_lock
from ..validation import check_int
from . import scheduler, units
from .config import (
    METHODS,
    REFERENCE_EPISODES,
    REFERENCE_WARMUP,
    ConfigMismatchError,
    MethodSpec,
    PaperConfig,
    derive_seed,
)
from .summary import format_summary, summarise
from .units import PROGRESS_BLOCK, UNIT_ARRAYS, compute_unit, progress_table, write_unit

__all__ = [
    "METHODS",
    "EXECUTORS",
    "compute_unit",
    "write_unit",
    "progress_table",
    "MethodSpec",
    "PaperConfig",
    "PaperRun",
    "ConfigMismatchError",
    "derive_seed",
    "run_paper",
    "summarise",
    "format_summary",
    "REFERENCE_EPISODES",
    "REFERENCE_WARMUP",
    "PROGRESS_BLOCK",
    "UNIT_ARRAYS",
]

#: Where units can run (:func:`run_paper`'s ``executor``).
EXECUTORS = ("process", "ray")


@dataclass(frozen=True)
class PaperRun:
    """Outcome of :func:`run_paper`.

    Attributes
    ----------
    out : Path
    n_units : int
        Units in the selection.
    n_run, n_skipped : int
        Units computed now / found finished in the folder.
    failures : list of dict
        Units whose method raised (method, task, seed_index, error, traceback).
    summary : dict
        What :func:`summarise` wrote to ``summary.json``.
    seconds : dict
        Wall time of the preparation, the units and the aggregation.
    """

    out: Path
    n_units: int
    n_run: int
    n_skipped: int
    failures: list
    summary: dict
    seconds: dict = field(default_factory=dict)


def run_paper(config: PaperConfig, out, *, jobs: int = 2, progress: bool = True,
              figures: bool = True, echo=print, executor: str = "process",
              address: str | None = None) -> PaperRun:
    """Run (or resume) the paper experiment into the folder ``out``.

    Parameters
    ----------
    config : PaperConfig
    out : str or Path
        Run folder (created if missing). Finished units found there are skipped.
    jobs : int, default 2
        Worker processes ("spawn" start method, one numba thread each); 1 runs the units
        in this process. With a pool, the baselines start while this process trains the
        policy set, and each group of methods sharing kernels is compiled once (a short
        warm-up run) before its units start.
    progress : bool, default True
        A tqdm bar over units (and training's bars).
    figures : bool, default True
        Draw the figures after aggregation.
    echo : callable, default print
        Where status lines go.
    executor : {"process", "ray"}, default "process"
        ``"process"``: a local spawn pool of ``jobs`` workers. ``"ray"``: Ray tasks (one
        numba thread each, kernels warmed once per node, arrays returned to this process,
        which writes the folder); a local Ray with ``jobs`` CPUs unless ``address`` names
        a cluster. Results are identical bit for bit, so either executor resumes a folder.
    address : str, optional
        Ray cluster address (``ray.init(address=...)``), e.g. ``"auto"`` or
        ``"ray://head:10001"``.

    Returns
    -------
    PaperRun

    Raises
    ------
    ConfigMismatchError
        When ``out`` holds results of different result-affecting parameters.
    KeyboardInterrupt
        Re-raised after stopping the workers; finished units stay in ``out``.
    """
    if not isinstance(config, PaperConfig):
        raise TypeError(f"config must be a PaperConfig; got {type(config).__name__}")
    jobs = check_int("jobs", jobs, 1)
    if executor not in EXECUTORS:
        raise ValueError(f"executor is {executor!r}; expected one of {EXECUTORS}")
    if address is not None and executor != "ray":
        raise ValueError("address is only used with executor='ray'")
    out = Path(out)
    for m in config.methods:  # fail early on a missing baseline module
        spec = METHODS[m]
        if spec.module is not None:
            try:
                units.baseline_function(spec)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{exc}; choose other methods (--methods)") from None
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # one run per folder at a time; a dead holder's lock is taken over
        return _run_paper_locked(config, out, jobs, progress, figures, echo, executor, address)


def _run_paper_locked(config, out, jobs, progress, figures, echo, executor, address):
    from tqdm.auto import tqdm

    remove_stale_temporaries(out)
    t_start = time.perf_counter()
    doc = units.open_config(out, config)
    todo, n_skipped = units.list_units(out, config, doc, echo=echo)
    n_units = len(todo) + n_skipped
    n_workers = min(jobs, max(len(todo), 1))
    echo(f"{n_units} units ({len(config.methods)} methods x {config.n_tasks} tasks x "
         f"{config.n_seeds} seeds, K = {config.n_episodes}): {n_skipped} already finished, "
         f"{len(todo)} to run with {n_workers} job(s)"
         + (f" on Ray ({address or 'local'})" if executor == "ray" else ""))
    state = {"tasks": None, "hashes": {}}
    failures: list = []
    bars: list = []

    def references():
        state["tasks"] = units.prepare_references(out, config)
        state["hashes"] = units.input_hashes(out)

    def policy_set():
        for note in units.prepare_policy_set(out, config, progress, echo):
            echo(f"training note: {note}")
        state["hashes"] = units.input_hashes(out)

    def on_result(job, res):
        if not bars:
            bars.append(tqdm(total=len(todo), desc="units", unit="run", disable=not progress))
        if not res["ok"]:
            failures.append(res)
        bars[0].set_postfix_str(f"{res['method']} task{res['task']}", refresh=False)
        bars[0].update(1)

    by_group: dict = {}
    for jb in todo:
        by_group.setdefault(METHODS[jb["method"]].group, set()).add(jb["method"])
    # the PCE family first (its warm-up is the longest), then the heaviest groups
    order = sorted(by_group, key=lambda g: (g != "adapt", -max(
        METHODS[m].weight for m in by_group[g])))
    plan = scheduler.Plan(
        jobs=todo, on_result=on_result, run=units.run_unit, compute=units.compute_unit,
        write=units.write_unit,
        context=lambda: units.shipped_context(out, sorted({jb["method"] for jb in todo})),
        stages=(("references", references), ("policy_set", policy_set)),
        needs=lambda jb: (("references", "policy_set")
                          if "policy_set" in METHODS[jb["method"]].inputs else ("references",)),
        finish=lambda jb: units.complete_job(jb, state["tasks"], state["hashes"]),
        group=lambda jb: METHODS[jb["method"]].group,
        warmups={g: units.warmup_job(g, sorted(by_group[g], key=list(METHODS).index), config)
                 for g in order},
        warm=units.run_warmup,
        describe=lambda jb: f"unit {jb['method']} task {jb['task']} seed {jb['seed_index']} "
                            f"({jb['path']})",
        initializer=units.worker_init if executor == "process" else units.limit_threads)
    try:
        if executor == "ray" and todo:
            timing = scheduler.run_ray(plan, n_workers, address=address)
        elif n_workers == 1 or len(todo) <= 1:
            timing = scheduler.run_in_process(plan)
        else:
            timing = scheduler.run_pool(plan, n_workers)
    finally:
        for bar in bars:
            bar.close()
    for f in failures:
        echo(f"!!! UNIT FAILED: {f['method']} task {f['task']} seed {f['seed_index']}: "
             f"{f['error']}")
    t0 = time.perf_counter()
    summary = summarise(out, config, figures=figures, echo=echo)
    t_agg = time.perf_counter() - t0
    return PaperRun(out=out, n_units=n_units, n_run=len(todo) - len(failures),
                    n_skipped=n_skipped, failures=failures, summary=summary,
                    seconds={"prepare": timing.prepare, "units": timing.total - timing.prepare,
                             "aggregate": t_agg, "total": time.perf_counter() - t_start})
