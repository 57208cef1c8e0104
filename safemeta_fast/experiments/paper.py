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
2. **Units** = (method, task, seed index). Each has its own seed derived from the base
   seed and (method, task index, seed index) by :func:`derive_seed`; every unit seed is
   recorded in ``config.json``. Units run in a process pool ("spawn", numba limited to one
   thread per worker) and each finished unit is written at once, atomically, to
   ``runs/<method>/task<i>_seed<j>.npz`` (:mod:`safemeta_fast.runio`). A re-run with the
   same folder skips finished units; a run whose result-affecting parameters differ from
   the stored ``config.json`` is refused (:class:`ConfigMismatchError` names the keys).
   Changing only the selection (methods, number of tasks or seeds) is allowed: unit
   results do not depend on it.
3. **Aggregation** (:func:`summarise`): ``summary.json`` / ``summary.csv`` (per method:
   runs, mean and 10%/90% quantiles of the final cumulative regret, mean and max exact
   cost, violations, wall time, the paper's published mean) and the figures
   ``figure2.png``, ``figure_more_baselines.png``, ``figure1.png``.

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

import importlib
import inspect
import math
import multiprocessing as mp
import signal
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..runio import (
    RunFolderError,
    atomic_write_bytes,
    config_diff,
    config_hash,
    load_npz,
    read_json,
    remove_stale_temporaries,
    run_lock,
    save_npz,
    write_json,
)
from ..validation import check_int, check_real

__all__ = [
    "METHODS",
    "EXECUTORS",
    "compute_unit",
    "write_unit",
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
]

#: Episodes per task in the paper's Figure 2.
REFERENCE_EPISODES = 40_000
#: DOPE+ warm-up of the reference notebook (episodes with pi_s before learning).
REFERENCE_WARMUP = 18_000
#: Layout version of the run folder.
SCHEMA = 1
#: Violation tolerance: exact cost > limit + this.
VIOLATION_TOL = 1e-9
_SAFE_NOISE = 0.4
_GDA_BETA = 0.1
_LB_BETA = 8.0


class ConfigMismatchError(RunFolderError):
    """The run folder holds results of a different configuration."""


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison.

    Attributes
    ----------
    name : str
        File and table name.
    label : str
        Legend label.
    module, function : str or None
        Where the baseline lives (imported lazily); None for methods run here.
    paper_mean : float or None
        Published mean final cumulative regret at K = 40,000 (Figure 2, BASELINES 8.11).
    figure : {"figure2", "more"}
        Panel the method is drawn in.
    inferred : bool
        A reconstruction (labelled as such in every output).
    weight : float
        Rough relative run time, used to start long units first.
    group : str
        Methods sharing compiled kernels; with a process pool, one warm-up per group
        compiles them (numba's on-disk cache) before the group's units start, so workers
        never compile the same kernels twice at once.
    """

    name: str
    label: str
    module: str | None
    function: str | None
    paper_mean: float | None
    figure: str
    inferred: bool = False
    weight: float = 1.0
    description: str = ""
    group: str = ""

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", self.name)


METHODS = {
    m.name: m
    for m in (
        MethodSpec("ours", "Certified Safe-PCE (ours)", None, None, None, "figure2",
                   group="adapt",
                   description="SafeAdapter, profile 'certified' (CERTIFIED.md: calibrated "
                               "prior, confidence sequences, certified pairs; start-state "
                               "control variate on)"),
        MethodSpec("safe_pce", "Safe-PCE, reference constants", None, None, 40_000.0, "figure2",
                   group="adapt",
                   description="SafeAdapter, profile 'reference' (the authors' constants)"),
        MethodSpec("safe_pce_paper", "Safe-PCE, paper constants", None, None, None, "more",
                   group="adapt",
                   description="SafeAdapter, profile 'paper' with strict=False: its "
                               "preconditions fail here, the guarantee does not hold"),
        MethodSpec("pce", "PCE (no safety)", None, None, None, "more", group="adapt",
                   description="SafeAdapter, profile 'pce' (BASELINES 3); regret adds |u_opt - V_r|"),
        MethodSpec("safe_meta_rl", "Safe Meta-RL", "safemeta_fast.baselines.safe_meta_rl",
                   "safe_meta_rl", 92_000.0, "figure2", weight=4.0,
                   description="BASELINES 4"),
        MethodSpec("dope_plus", "DOPE+", "safemeta_fast.baselines.dope_plus", "dope_plus",
                   105_000.0, "figure2", weight=8.0, group="dope", description="BASELINES 5"),
        MethodSpec("lb_sgd", "LB-SGD", "safemeta_fast.baselines.lb_sgd", "lb_sgd", 155_000.0,
                   "figure2", weight=4.0, description="BASELINES 6, start policy pi_LB"),
        MethodSpec("dope", "DOPE [inferred]", "safemeta_fast.baselines.dope", "dope", None,
                   "more", inferred=True, weight=8.0, group="dope",
                   description="BASELINES 7: [inferred] discounted translation of DOPE"),
        MethodSpec("safe_policy", "pi_s alone", None, None, 95_500.0, "figure2", weight=0.1,
                   description="the safe policy for every episode (exact values, no sampling)"),
    )
}


def _check_int(name, value, minimum, maximum=None):
    """:func:`~safemeta_fast.validation.check_int` plus an optional upper bound."""
    v = check_int(name, value, minimum)
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} is {v}; it must be <= {maximum}")
    return v


@dataclass(frozen=True)
class PaperConfig:
    """Parameters of the paper experiment.

    Parameters
    ----------
    methods : tuple of str, default every method in :data:`METHODS`
    n_tasks : int, default 10
        The first ``n_tasks`` of the paper's test noises (``PAPER_TEST_NOISES``), 1..10.
    n_episodes : int, default 40,000
        Episodes K per run.
    n_seeds : int, default 1
        Runs per (method, task).
    seed : int, default 0
        Base seed; unit seeds come from :func:`derive_seed`.
    warmup : int or None
        DOPE+/DOPE warm-up episodes; None: the reference fraction 18,000/40,000 of K.
    horizon : int, default 600
    train_eps, train_delta : float, default 0.005, 0.05
        Training phase settings (noise-space closeness, confidence).
    train_seed : int, default 0
    quick : bool
        Only recorded (the quick preset is :meth:`quick_preset`).

    Examples
    --------
    >>> PaperConfig(n_episodes=5000).resolved_warmup
    2250
    """

    methods: tuple = tuple(METHODS)
    n_tasks: int = 10
    n_episodes: int = REFERENCE_EPISODES
    n_seeds: int = 1
    seed: int = 0
    warmup: int | None = None
    horizon: int = 600
    train_eps: float = 0.005
    train_delta: float = 0.05
    train_seed: int = 0
    quick: bool = False

    def __post_init__(self):
        methods = self.methods
        if isinstance(methods, str):
            methods = (methods,)
        methods = tuple(methods)
        if not methods:
            raise ValueError("methods is empty; choose from " + ", ".join(METHODS))
        for i, m in enumerate(methods):
            if m not in METHODS:
                raise ValueError(f"methods[{i}] is {m!r}; expected one of {', '.join(METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods {list(methods)} lists a method twice")
        object.__setattr__(self, "methods", methods)
        from ..envs import PAPER_TEST_NOISES

        _check_int("n_tasks", self.n_tasks, 1, len(PAPER_TEST_NOISES))
        _check_int("n_episodes", self.n_episodes, 1)
        _check_int("n_seeds", self.n_seeds, 1)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("horizon", self.horizon, 1)
        _check_int("train_seed", self.train_seed, 0, 2**63 - 1)
        if self.warmup is not None:
            _check_int("warmup", self.warmup, 0, self.n_episodes)
        check_real("train_eps", self.train_eps, 0.0, lo_open=True)
        check_real("train_delta", self.train_delta, 0.0, 1.0, lo_open=True, hi_open=True)

    @classmethod
    def quick_preset(cls, **overrides) -> "PaperConfig":
        """3 tasks (the first three test noises), K = 5,000, 1 seed, every method."""
        base = {"n_tasks": 3, "n_episodes": 5_000, "n_seeds": 1, "quick": True}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def resolved_warmup(self) -> int:
        """DOPE+/DOPE warm-up: ``warmup`` or ``round(18,000 K / 40,000)``."""
        if self.warmup is not None:
            return int(self.warmup)
        return int(round(REFERENCE_WARMUP * self.n_episodes / REFERENCE_EPISODES))

    @property
    def test_noises(self) -> tuple:
        from ..envs import PAPER_TEST_NOISES

        return tuple(PAPER_TEST_NOISES[: self.n_tasks])

    def result_config(self) -> dict:
        """Every parameter that changes a unit's result (compared on resume)."""
        return {
            "schema": SCHEMA,
            "n_episodes": self.n_episodes,
            "seed": self.seed,
            "horizon": self.horizon,
            "warmup": self.resolved_warmup,
            "train_eps": self.train_eps,
            "train_delta": self.train_delta,
            "train_seed": self.train_seed,
            "train_setup": "GridworldFamily(), distance=parameter, oracle=primal_dual, "
                           "verify=cover, safe_policy=pi_s",
            "safe_policy": f"primal_dual(gridworld({_SAFE_NOISE}), beta={_GDA_BETA})",
            "regret_reference": f"primal_dual(M_test, beta={_GDA_BETA}).reward",
            "lb_start_policy": f"lb_start_policy(gridworld({_SAFE_NOISE})) (GDA beta {_LB_BETA})",
            "paper_profile_normalisation": "normalisation_of(gridworld(0.3))",
            "seed_derivation": "SeedSequence(seed, spawn_key=(crc32(method), task, seed_index))",
        }

    def selection(self) -> dict:
        """What is run (may change between runs in one folder)."""
        return {"methods": list(self.methods), "n_tasks": self.n_tasks, "n_seeds": self.n_seeds}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["methods"] = list(self.methods)
        d["resolved_warmup"] = self.resolved_warmup
        return d


def derive_seed(base_seed: int, method: str, task: int, seed_index: int) -> int:
    """Seed of one unit: ``SeedSequence(base_seed, spawn_key=(crc32(method), task, seed_index))``.

    Deterministic, independent of the selection and of the order units run in, and
    below 2**63.

    Examples
    --------
    >>> derive_seed(0, "safe_pce", 0, 0) == derive_seed(0, "safe_pce", 0, 0)
    True
    >>> derive_seed(0, "safe_pce", 0, 0) != derive_seed(0, "safe_pce", 1, 0)
    True
    """
    _check_int("base_seed", base_seed, 0, 2**63 - 1)
    _check_int("task", task, 0)
    _check_int("seed_index", seed_index, 0)
    if not isinstance(method, str):
        raise TypeError(f"method must be a str; got {type(method).__name__}")
    code = zlib.crc32(method.encode("utf-8"))
    ss = np.random.SeedSequence(int(base_seed), spawn_key=(code, int(task), int(seed_index)))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _unit_name(task: int, seed_index: int) -> str:
    return f"task{task}_seed{seed_index}"


def _unit_path(out: Path, method: str, task: int, seed_index: int) -> Path:
    return out / "runs" / method / f"{_unit_name(task, seed_index)}.npz"


# -- the run folder's inputs -----------------------------------------------------------


def _open_config(out: Path, cfg: PaperConfig) -> dict:
    """Check config.json against ``cfg`` (refuse a mismatch); write the updated document."""
    from .. import __version__

    result = cfg.result_config()
    rhash = config_hash(result)
    path = out / "config.json"
    unit_seeds = {}
    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    if path.exists():
        stored = read_json(path)
        diff = config_diff(stored.get("result", {}), result)
        if diff:
            details = "; ".join(
                f"{k}: stored {stored.get('result', {}).get(k)!r}, now {result.get(k)!r}"
                for k in diff)
            raise ConfigMismatchError(
                f"{out} holds runs of a different configuration (differing keys: "
                f"{', '.join(diff)}; {details}). Use another --out, or restore the stored "
                "parameters to resume; runs are never mixed.")
        unit_seeds = stored.get("unit_seeds", {})
        created = stored.get("created", created)
    for m in cfg.methods:
        per = unit_seeds.setdefault(m, {})
        for t in range(cfg.n_tasks):
            for j in range(cfg.n_seeds):
                per[_unit_name(t, j)] = derive_seed(cfg.seed, m, t, j)
    doc = {
        "schema": SCHEMA,
        "package_version": __version__,
        "created": created,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "result": result,
        "result_hash": rhash,
        "selection": cfg.selection(),
        "parameters": cfg.to_dict(),
        "test_noises": list(cfg.test_noises),
        "methods": {m: {"label": METHODS[m].label, "inferred": METHODS[m].inferred,
                        "description": METHODS[m].description} for m in cfg.methods},
        "unit_seeds": unit_seeds,
    }
    write_json(path, doc)
    return doc


def _train_policy_set(cfg: PaperConfig, pi_s: np.ndarray, progress: bool):
    from ..envs import GridworldFamily
    from ..training import train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = train(GridworldFamily(), eps=cfg.train_eps, delta=cfg.train_delta,
                   distance="parameter", safe_policy=np.asarray(pi_s), oracle="primal_dual",
                   verify="cover", seed=cfg.train_seed, progress=progress)
    return ps, [str(w.message) for w in caught]


def _prepare_references(out: Path, cfg: PaperConfig) -> list:
    """Start policies (start_policies.npz) and per-task references (tasks.json): load or compute.

    Returns the task records of the selection (index, noise, u_opt, lp_optimum, exact
    values of pi_s and, when LB-SGD is selected, of pi_LB).
    """
    from ..envs import gridworld
    from ..evaluation import evaluate
    from ..lp import solve_lp
    from ..planning import primal_dual

    sp_path = out / "start_policies.npz"
    starts = load_npz(sp_path, required={"pi_s": 2})[0] if sp_path.exists() else {}
    need_lb = "lb_sgd" in cfg.methods and "pi_lb" not in starts
    if need_lb or "pi_s" not in starts:
        starts = dict(starts)
        if "pi_s" not in starts:
            starts["pi_s"] = np.asarray(
                primal_dual(gridworld(_SAFE_NOISE), beta=_GDA_BETA).policy, dtype=np.float64)
        if need_lb:
            from ..baselines.lb_sgd import lb_start_policy

            starts["pi_lb"] = np.asarray(lb_start_policy(gridworld(_SAFE_NOISE)), dtype=np.float64)
        save_npz(sp_path, starts, {
            "pi_s": f"primal_dual(gridworld({_SAFE_NOISE}), beta={_GDA_BETA}).policy",
            "pi_lb": f"lb_start_policy(gridworld({_SAFE_NOISE})) (GDA beta {_LB_BETA})"})
    pi_s, pi_lb = starts["pi_s"], starts.get("pi_lb")
    tasks_path = out / "tasks.json"
    doc = read_json(tasks_path) if tasks_path.exists() else {"tasks": []}
    by_index = {int(t["index"]): t for t in doc["tasks"]}
    changed = not tasks_path.exists()
    for i, noise in enumerate(cfg.test_noises):
        t = by_index.get(i)
        if t is not None and abs(float(t["noise"]) - noise) > 1e-15:
            raise RunFolderError(f"{tasks_path}: task {i} has noise {t['noise']}, expected {noise}")
        if t is not None and (pi_lb is None or "lb_start" in t):
            continue
        M = gridworld(noise)
        if t is None:
            ev_s = evaluate(M, pi_s)
            t = {"index": i, "noise": noise,
                 "u_opt": float(primal_dual(M, beta=_GDA_BETA).reward),
                 "lp_optimum": float(solve_lp(M).reward),
                 "safe_policy": {"reward": float(ev_s.reward), "cost": ev_s.cost.tolist()}}
        if pi_lb is not None:
            ev_lb = evaluate(M, pi_lb)
            t["lb_start"] = {"reward": float(ev_lb.reward), "cost": ev_lb.cost.tolist()}
        by_index[i] = t
        changed = True
    if changed:
        write_json(tasks_path, {
            "description": "per test task: slip noise, u_opt = primal_dual(M, beta=0.1).reward "
                           "(the regret reference of every method), the exact LP optimum, and "
                           "the exact values of the start policies pi_s and pi_LB",
            "tasks": [by_index[i] for i in sorted(by_index)]})
    return [by_index[i] for i in range(cfg.n_tasks)]


def _prepare_policy_set(out: Path, cfg: PaperConfig, progress: bool, echo) -> list:
    """Train the policy set (safe policy = the stored pi_s) unless policyset.npz exists."""
    from ..policyset import PolicySet

    ps_path = out / "policyset.npz"
    if ps_path.exists():
        ps = PolicySet.load(ps_path)
        if (ps.eps, ps.delta, ps.seed) != (cfg.train_eps, cfg.train_delta, cfg.train_seed):
            raise ConfigMismatchError(
                f"{ps_path} was trained with eps={ps.eps}, delta={ps.delta}, seed={ps.seed}; "
                f"this run asks for eps={cfg.train_eps}, delta={cfg.train_delta}, "
                f"seed={cfg.train_seed}")
        return []
    echo("training the policy set (cover of the noise range, primal-dual oracle) ...")
    pi_s = load_npz(out / "start_policies.npz", required={"pi_s": 2})[0]["pi_s"]
    ps, notes = _train_policy_set(cfg, pi_s, progress)
    ps.save(ps_path)
    return notes


# -- units -----------------------------------------------------------------------------

_CONTEXT: dict = {}


def _worker_init() -> None:
    """Pool initializer: the parent handles Ctrl-C; one numba thread per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numba

    numba.set_num_threads(1)


def _context(out: str) -> dict:
    """Start policies of a run folder (loaded once per process); the policy set on demand."""
    p = Path(out)
    key = (str(p.resolve()), (p / "start_policies.npz").stat().st_mtime_ns)
    ctx = _CONTEXT.get(key)
    if ctx is None:
        starts, _ = load_npz(p / "start_policies.npz", required={"pi_s": 2})
        ctx = _LazyContext(p, starts["pi_s"], starts.get("pi_lb"))
        _CONTEXT.clear()
        _CONTEXT[key] = ctx
    return ctx


class _LazyContext(dict):
    """``ctx["ps"]`` loads policyset.npz at first use (baselines never need it)."""

    def __init__(self, folder: Path, pi_s, pi_lb):
        super().__init__(pi_s=pi_s, pi_lb=pi_lb)
        self._folder = folder

    def __missing__(self, key):
        if key != "ps":
            raise KeyError(key)
        from ..policyset import PolicySet

        self["ps"] = PolicySet.load(self._folder / "policyset.npz")
        return self["ps"]


def _from_testlog(log, regret) -> dict:
    info = {
        "profile": log.profile.name,
        "guarantee": bool(log.guarantee),
        "notes": list(log.notes),
        "eliminated": log.eliminated.tolist(),
        "eliminated_at": log.eliminated_at.tolist(),
        "final_alpha": log.final_alpha,
        "final_candidate": int(log.candidate[-1]) if log.n_episodes else -1,
        "constants": {k: v for k, v in log.constants.items()},
    }
    if log.delta_cal is not None:  # certified: the deployment is the pair and its weight
        info.update(delta_cal=log.delta_cal, delta_test=log.delta_test,
                    uncertified=int(log.uncertified), refuted_at=int(log.refuted_at),
                    mean_candidate_weight=log.mean_candidate_weight,
                    final_alive=int(log.alive[-1]) if log.n_episodes else 0)
        moved = (np.any(np.diff(log.pair, axis=0) != 0, axis=1)) | (np.diff(log.weight) != 0)
        changes = np.flatnonzero(moved) + 1
    else:
        changes = np.flatnonzero(np.diff(log.candidate) != 0) + 1
    return {"exact_reward": log.exact_reward, "exact_cost": log.exact_cost, "regret": regret,
            "stopped_on_violation": bool(log.stopped_on_violation),
            "policy_starts": np.concatenate([[0], changes]).astype(np.int64), "info": info,
            "observed_reward": log.reward, "observed_cost": log.cost}


def _run_ours(profile: str):
    def run(ctx, M, job):
        from ..adaptation import SafeAdapter, normalisation_of
        from ..envs import gridworld

        kw = {}
        if profile == "paper":
            kw = dict(strict=False, **normalisation_of(gridworld(0.3)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ad = SafeAdapter(ctx["ps"], profile=profile, n_episodes=job["n_episodes"],
                             seed=job["seed"], horizon=job["horizon"], **kw)
            log = ad.run(M, regret_reference=job["u_opt"])
        regret = log.regret  # cumulative u_opt - V_r, computed by the run
        if profile == "pce":
            regret = np.cumsum(np.abs(job["u_opt"] - np.asarray(log.exact_reward)))
        rec = _from_testlog(log, regret)
        rec["info"]["warnings"] = [str(w.message) for w in caught]
        if profile == "pce":
            rec["info"]["regret_convention"] = "cumulative |u_opt - V_r| (BASELINES 3d)"
        return rec
    return run


def _run_safe_policy(ctx, M, job):
    from ..evaluation import evaluate

    ev = evaluate(M, ctx["pi_s"])
    K = job["n_episodes"]
    reward = np.full(K, float(ev.reward))
    cost = np.tile(np.asarray(ev.cost, dtype=np.float64), (K, 1))
    return {"exact_reward": reward, "exact_cost": cost, "regret": np.cumsum(job["u_opt"] - reward),
            "stopped_on_violation": False, "policy_starts": np.zeros(1, dtype=np.int64),
            "info": {"note": "pi_s deployed for every episode; exact values, nothing sampled"}}


def _baseline_function(spec: MethodSpec):
    try:
        mod = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ImportError(f"method {spec.name!r} needs {spec.module}, which cannot be imported "
                          f"({exc})") from None
    return getattr(mod, spec.function)


def _run_baseline(name: str):
    def run(ctx, M, job):
        spec = METHODS[name]
        fn = _baseline_function(spec)
        params = inspect.signature(fn).parameters
        kw = {"n_episodes": job["n_episodes"], "regret_reference": job["u_opt"],
              "seed": job["seed"]}
        if "horizon" in params:
            kw["horizon"] = job["horizon"]
        if name in ("dope_plus", "dope"):
            if "warmup" not in params:
                raise TypeError(f"{spec.module}.{spec.function} takes no 'warmup' argument")
            kw["warmup"] = job["warmup"]
        pi_start = ctx["pi_lb"] if name == "lb_sgd" else ctx["pi_s"]
        if pi_start is None:
            raise RunFolderError("start_policies.npz lacks pi_lb (needed by lb_sgd)")
        log = fn(M, np.array(pi_start), **kw)
        info = dict(log.info)
        info["n_budget"] = int(log.n_budget)
        info["n_policies"] = int(log.policy_starts.size)
        if spec.inferred:
            info["inferred"] = spec.description
        return {"exact_reward": log.exact_reward, "exact_cost": log.exact_cost, "regret": log.regret,
                "stopped_on_violation": bool(log.stopped_on_violation),
                "policy_starts": log.policy_starts, "info": info}
    return run


_RUNNERS = {
    "ours": _run_ours("certified"),
    "safe_pce": _run_ours("reference"),
    "safe_pce_paper": _run_ours("paper"),
    "pce": _run_ours("pce"),
    "safe_meta_rl": _run_baseline("safe_meta_rl"),
    "dope_plus": _run_baseline("dope_plus"),
    "lb_sgd": _run_baseline("lb_sgd"),
    "dope": _run_baseline("dope"),
    "safe_policy": _run_safe_policy,
}


def compute_unit(job: dict, ctx=None) -> dict:
    """Run one unit and return its record without writing anything.

    Returns ``{"ok": True, "arrays": {...}, "meta": {...}, ...}`` (the content of the unit
    file) or ``{"ok": False, "error": ..., "traceback": ...}``: a method failure never
    raises, so other units go on. ``ctx`` holds ``pi_s``, ``pi_lb`` and ``ps`` (the policy
    set); by default it is read from the job's run folder (``_context``). A remote
    executor ships it instead, so its workers need no shared filesystem.
    """
    from .. import __version__
    from ..envs import gridworld

    head = {k: job[k] for k in ("method", "task", "seed_index", "seed")}
    head["kind"] = "unit"
    try:
        if ctx is None:
            ctx = _context(job["out"])
        M = gridworld(job["noise"])
        t0 = time.perf_counter()
        rec = _RUNNERS[job["method"]](ctx, M, job)
        wall = time.perf_counter() - t0
        reward = np.ascontiguousarray(rec["exact_reward"], dtype=np.float64)
        cost = np.ascontiguousarray(rec["exact_cost"], dtype=np.float64).reshape(reward.size, -1)
        regret = np.ascontiguousarray(rec["regret"], dtype=np.float64)
        limit = np.asarray(M.cost_limit, dtype=np.float64)
        over = np.any(cost > limit[None, :] + VIOLATION_TOL, axis=1)
        violations = int(np.count_nonzero(over))
        spec = METHODS[job["method"]]
        meta = dict(head, label=spec.label, inferred=spec.inferred, noise=job["noise"],
                    u_opt=job["u_opt"], n_budget=job["n_episodes"], n_episodes=int(reward.size),
                    horizon=job["horizon"], warmup=job["warmup"], result_hash=job["result_hash"],
                    wall_time=wall, violations=violations,
                    first_violation=int(np.argmax(over)) if violations else None,
                    stopped_on_violation=rec["stopped_on_violation"],
                    final_regret=float(regret[-1]) if regret.size else 0.0,
                    cost_limit=limit.tolist(), package_version=__version__, info=rec["info"])
        arrays = {"regret": regret, "exact_reward": reward, "exact_cost": cost,
                  "violations": np.int64(violations), "wall_time": np.float64(wall),
                  "policy_starts": np.asarray(rec["policy_starts"], dtype=np.int64)}
        if "observed_reward" in rec:  # sampled returns (test-time methods)
            arrays["observed_reward"] = np.ascontiguousarray(rec["observed_reward"], dtype=np.float64)
            arrays["observed_cost"] = np.ascontiguousarray(
                rec["observed_cost"], dtype=np.float64).reshape(reward.size, -1)
        return dict(head, ok=True, wall_time=wall, violations=violations,
                    final_regret=meta["final_regret"], arrays=arrays, meta=meta)
    except Exception as exc:  # reported by the parent; other units go on
        return dict(head, ok=False, error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc())


#: Episodes per row of a unit's progress.csv.
PROGRESS_BLOCK = 1000


def progress_table(arrays: dict, limit, block: int = PROGRESS_BLOCK) -> str:
    """A unit's ``progress.csv`` in OmniSafe's metric names, one row per block of episodes.

    Columns: ``Episode`` (episodes done at the row's end), ``Metrics/EpRet`` and
    ``Metrics/EpCost`` (mean *observed* discounted returns over the block; empty for methods
    that record no sampled returns), ``Exact/EpRet``, ``Exact/EpCost`` (mean exact values of
    the deployed policies), ``Exact/MaxCost``, ``Violations`` (episodes above the limit in
    the block) and ``Regret`` (cumulative, at the row's end). The first cost constraint is
    reported (the gridworld has one).
    """
    er = np.asarray(arrays["exact_reward"])
    ec = np.asarray(arrays["exact_cost"]).reshape(er.size, -1)
    reg = np.asarray(arrays["regret"])
    obs_r = arrays.get("observed_reward")
    obs_c = arrays.get("observed_cost")
    lim = float(np.min(limit))
    rows = ["Episode,Metrics/EpRet,Metrics/EpCost,Exact/EpRet,Exact/EpCost,Exact/MaxCost,"
            "Violations,Regret"]
    for lo in range(0, er.size, block):
        hi = min(lo + block, er.size)
        obs = ("", "")
        if obs_r is not None:
            obs = (f"{np.mean(obs_r[lo:hi]):.10g}",
                   f"{np.mean(np.asarray(obs_c).reshape(er.size, -1)[lo:hi, 0]):.10g}")
        viol = int(np.count_nonzero(np.any(ec[lo:hi] > lim + VIOLATION_TOL, axis=1)))
        rows.append(f"{hi},{obs[0]},{obs[1]},{np.mean(er[lo:hi]):.10g},"
                    f"{np.mean(ec[lo:hi, 0]):.10g},{np.max(ec[lo:hi]):.10g},{viol},"
                    f"{reg[hi - 1]:.10g}")
    return "\n".join(rows) + "\n"


def write_unit(job: dict, res: dict) -> dict:
    """Write a successful :func:`compute_unit` record to the job's unit file and its
    ``progress.csv`` (atomically); returns the short record the scheduler accounts."""
    if res["ok"]:
        path = Path(job["path"])
        atomic_write_bytes(path.with_suffix(".progress.csv"),
                           progress_table(res["arrays"], res["meta"]["cost_limit"]).encode())
        save_npz(path, res["arrays"], res["meta"])
    return {k: v for k, v in res.items() if k not in ("arrays", "meta")}


def _execute_unit(job: dict) -> dict:
    """Compute one unit and write its file (process-pool and in-process path)."""
    return write_unit(job, compute_unit(job))


def _unit_is_done(path: Path, rhash: str, echo) -> bool:
    if not path.exists():
        return False
    try:
        _, meta = load_npz(path, required=_UNIT_ARRAYS, metadata_only=True)
    except RunFolderError as exc:
        echo(f"warning: {exc}; recomputing this unit")
        return False
    if meta.get("result_hash") != rhash:
        raise ConfigMismatchError(
            f"{path} was produced with configuration {meta.get('result_hash')!r}, not the "
            f"folder's {rhash!r}; delete it or use another --out (runs are never mixed)")
    return True


_UNIT_ARRAYS = {"regret": 1, "exact_reward": 1, "exact_cost": 2, "violations": 0, "wall_time": 0}


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
    jobs = _check_int("jobs", jobs, 1)
    if executor not in EXECUTORS:
        raise ValueError(f"executor is {executor!r}; expected one of {EXECUTORS}")
    if address is not None and executor != "ray":
        raise ValueError("address is only used with executor='ray'")
    out = Path(out)
    for m in config.methods:  # fail early on a missing baseline module
        spec = METHODS[m]
        if spec.module is not None:
            try:
                _baseline_function(spec)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{exc}; choose other methods (--methods)") from None
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # one run per folder at a time; a dead holder's lock is taken over
        return _run_paper_locked(config, out, jobs, progress, figures, echo, executor, address)


def _run_paper_locked(config, out, jobs, progress, figures, echo, executor, address):
    remove_stale_temporaries(out)
    t_start = time.perf_counter()
    doc = _open_config(out, config)
    rhash = doc["result_hash"]
    todo, n_skipped = [], 0
    for m in config.methods:
        for t in range(config.n_tasks):
            for j in range(config.n_seeds):
                path = _unit_path(out, m, t, j)
                if _unit_is_done(path, rhash, echo):
                    n_skipped += 1
                    continue
                todo.append({
                    "kind": "unit", "out": str(out), "path": str(path), "method": m, "task": t,
                    "seed_index": j, "seed": doc["unit_seeds"][m][_unit_name(t, j)],
                    "n_episodes": config.n_episodes, "horizon": config.horizon,
                    "warmup": config.resolved_warmup, "result_hash": rhash})
    todo.sort(key=lambda jb: -METHODS[jb["method"]].weight)
    n_units = len(todo) + n_skipped
    n_workers = min(jobs, max(len(todo), 1))
    echo(f"{n_units} units ({len(config.methods)} methods x {config.n_tasks} tasks x "
         f"{config.n_seeds} seeds, K = {config.n_episodes}): {n_skipped} already finished, "
         f"{len(todo)} to run with {n_workers} job(s)"
         + (f" on Ray ({address or 'local'})" if executor == "ray" else ""))
    if executor == "ray" and todo:
        runner = _RayRunner(out, config, todo, n_workers, progress, echo, address=address)
    else:
        runner = _Runner(out, config, todo, n_workers, progress, echo)
    try:
        runner.run()
    finally:
        runner.close()
    for f in runner.failures:
        echo(f"!!! UNIT FAILED: {f['method']} task {f['task']} seed {f['seed_index']}: "
             f"{f['error']}")
    t0 = time.perf_counter()
    summary = summarise(out, config, figures=figures)
    t_agg = time.perf_counter() - t0
    return PaperRun(out=out, n_units=n_units, n_run=len(todo) - len(runner.failures),
                    n_skipped=n_skipped, failures=runner.failures, summary=summary,
                    seconds={"prepare": runner.seconds_prepare,
                             "units": runner.seconds_total - runner.seconds_prepare,
                             "aggregate": t_agg, "total": time.perf_counter() - t_start})


#: Warm-up length per group (LB-SGD's 3,000-episode batches take another code path).
_WARMUP_EPISODES = {"lb_sgd": 4000}


def _warmup_job(group: str, methods: list, config: PaperConfig) -> dict:
    n = min(config.n_episodes, _WARMUP_EPISODES.get(group, 400))
    return {"kind": "warmup", "group": group, "methods": methods,
            "n_episodes": n, "horizon": config.horizon,
            "warmup": min(config.resolved_warmup, 100)}


def _execute_warmup(job: dict) -> dict:
    """Compile a group's kernels (numba's on-disk cache) with a short run on stand-in data.

    Types, not values, decide what numba compiles, so the stand-ins (gridworld 0.3, the
    LP optimum of noise 0.4 mixed with 10% uniform, a two-policy set) compile exactly what
    the units use; nothing is written. Failures are ignored: the units report their own.
    """
    from ..envs import gridworld
    from ..lp import solve_lp
    from ..policyset import PolicySet

    t0 = time.perf_counter()
    try:
        M = gridworld(0.3)
        pi = 0.9 * np.asarray(solve_lp(gridworld(_SAFE_NOISE)).policy) + 0.1 / M.n_actions
        ps = PolicySet(policies=np.stack([pi, pi]), u=[45.0, 44.0], v=[[0.2], [0.2]],
                       u_s=[44.0, 44.0], v_s=[[0.4], [0.4]], safe_policy=pi,
                       cover_params=[[0.3], [0.31]], cost_limit=[1.5], gamma=0.9, eps=0.005,
                       delta=0.05, xi_hat=0.4, seed=0)
        ctx = {"ps": ps, "pi_s": pi, "pi_lb": pi}
        unit = {"n_episodes": job["n_episodes"], "horizon": job["horizon"], "u_opt": 50.0,
                "seed": 1, "warmup": job["warmup"]}
        for m in job["methods"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _RUNNERS[m](ctx, M, unit)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {"kind": "warmup", "group": job["group"], "seconds": time.perf_counter() - t0,
            "error": error}


def _work(job: dict) -> dict:
    """Pool entry point: a unit or a warm-up."""
    return _execute_warmup(job) if job["kind"] == "warmup" else _execute_unit(job)


class _Runner:
    """Prepares the inputs and runs the units (in process, or in a spawn pool).

    Pool schedule: warm-ups of every method group go first (they need no inputs); the
    parent meanwhile computes the references (pi_s, pi_LB, u_opt), then trains the policy
    set. A unit is submitted once its group is warm and its inputs exist (the PCE family
    needs the policy set, the baselines only the references).
    """

    def __init__(self, out, config, todo, n_workers, progress, echo):
        self.out, self.config, self.todo = out, config, todo
        self.n_workers, self.progress, self.echo = n_workers, progress, echo
        self.failures: list = []
        self.pool = None
        self.bar = None
        self.seconds_prepare = 0.0
        self.seconds_total = 0.0

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        if self.bar is not None:
            self.bar.close()

    def _account(self, res):
        if not res["ok"]:
            self.failures.append(res)
        self.bar.set_postfix_str(f"{res['method']} task{res['task']}", refresh=False)
        self.bar.update(1)

    def _fill(self, tasks):
        for jb in self.todo:
            t = tasks[jb["task"]]
            jb["noise"], jb["u_opt"] = float(t["noise"]), float(t["u_opt"])

    def _prepare_all(self):
        tasks = _prepare_references(self.out, self.config)
        for note in _prepare_policy_set(self.out, self.config, self.progress, self.echo):
            self.echo(f"training note: {note}")
        self._fill(tasks)

    def run(self):
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        if self.n_workers == 1 or len(self.todo) <= 1:
            self._prepare_all()
            self.seconds_prepare = time.perf_counter() - t0
            self.bar = tqdm(total=len(self.todo), desc="units", unit="run",
                            disable=not self.progress)
            for jb in self.todo:
                self._account(_execute_unit(jb))
        else:
            self._run_pool(tqdm)
        self.seconds_total = time.perf_counter() - t0

    def _run_pool(self, tqdm):
        import queue

        t0 = time.perf_counter()
        results: queue.Queue = queue.Queue()
        ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(processes=self.n_workers, initializer=_worker_init)

        def submit(job):
            self.pool.apply_async(_work, (job,), callback=results.put,
                                  error_callback=lambda e: results.put(
                                      {"kind": "crash", "error": f"{type(e).__name__}: {e}"}))

        groups: dict = {}
        for jb in self.todo:
            groups.setdefault(METHODS[jb["method"]].group, []).append(jb)
        order = sorted(groups, key=lambda g: (g != "adapt", -max(
            METHODS[jb["method"]].weight for jb in groups[g])))
        for g in order:
            submit(_warmup_job(g, sorted({jb["method"] for jb in groups[g]},
                                         key=list(METHODS).index), self.config))
        warm: set = set()
        state = {"refs": False, "ps": False}

        def pump():
            for g in list(groups):
                if g in warm and state["refs"] and (g != "adapt" or state["ps"]):
                    for jb in groups.pop(g):
                        submit(jb)

        def drain(block):
            while True:
                try:
                    res = results.get(timeout=0.2) if block else results.get_nowait()
                except queue.Empty:
                    return False
                if res["kind"] == "warmup":
                    warm.add(res["group"])
                elif res["kind"] == "crash":
                    raise RuntimeError(f"a worker process failed: {res['error']}")
                else:
                    self._account(res)
                    self.left -= 1
                pump()
                if block:
                    return True

        self.left = len(self.todo)
        self._fill(_prepare_references(self.out, self.config))
        state["refs"] = True
        self.bar = tqdm(total=len(self.todo), desc="units", unit="run", disable=not self.progress)
        drain(block=False)
        pump()
        for note in _prepare_policy_set(self.out, self.config, self.progress, self.echo):
            self.echo(f"training note: {note}")
        state["ps"] = True
        self.seconds_prepare = time.perf_counter() - t0
        pump()
        while self.left > 0:
            drain(block=True)
        self.pool.close()
        self.pool.join()
        self.pool = None


def _ray_work(job: dict, ctx: dict) -> dict:
    """Ray task: a warm-up or one unit computed from the shipped context (nothing written)."""
    import numba

    numba.set_num_threads(1)
    if job["kind"] == "warmup":
        return _execute_warmup(job)
    return compute_unit(job, ctx)


class _RayRunner(_Runner):
    """Units as Ray tasks (a local Ray by default, a cluster by ``address``).

    The driver prepares the references and the policy set, ships them to the workers once
    (``ray.put``), warms every method group's kernels once per node, then submits every
    unit. Each task returns its arrays; the driver writes the unit files, so the workers
    need no shared filesystem, and a folder can be resumed by either executor.
    """

    def __init__(self, out, config, todo, n_workers, progress, echo, address=None):
        super().__init__(out, config, todo, n_workers, progress, echo)
        self.address = address

    def run(self):
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError:
            raise ImportError("executor 'ray' needs Ray: pip install -e \".[ray]\"") from None
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        started = not ray.is_initialized()
        if started:
            kw = ({"address": self.address} if self.address else
                  {"num_cpus": self.n_workers, "include_dashboard": False,
                   "object_store_memory": 200 * 2**20})
            ray.init(log_to_driver=False, configure_logging=False, **kw)
        try:
            self._prepare_all()
            self.seconds_prepare = time.perf_counter() - t0
            starts, _ = load_npz(self.out / "start_policies.npz", required={"pi_s": 2})
            ctx = {"pi_s": starts["pi_s"], "pi_lb": starts.get("pi_lb")}
            if any(METHODS[jb["method"]].group == "adapt" for jb in self.todo):
                from ..policyset import PolicySet

                ctx["ps"] = PolicySet.load(self.out / "policyset.npz")
            payload = ray.put(ctx)
            task = ray.remote(num_cpus=1)(_ray_work)
            groups = sorted({METHODS[jb["method"]].group for jb in self.todo})
            warm = []
            for node in (n for n in ray.nodes() if n.get("Alive")):
                on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                for g in groups:
                    methods = sorted({jb["method"] for jb in self.todo
                                      if METHODS[jb["method"]].group == g},
                                     key=list(METHODS).index)
                    warm.append(task.options(scheduling_strategy=on_node).remote(
                        _warmup_job(g, methods, self.config), payload))
            ray.get(warm)
            self.bar = tqdm(total=len(self.todo), desc="units (ray)", unit="run",
                            disable=not self.progress)
            pending = {task.remote(jb, payload): jb for jb in self.todo}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    jb = pending.pop(ref)
                    self._account(write_unit(jb, ray.get(ref)))
        finally:
            if started:
                ray.shutdown()
        self.seconds_total = time.perf_counter() - t0


EXECUTORS = ("process", "ray")


# -- aggregation -----------------------------------------------------------------------


def _stack(rows: list, width: int) -> np.ndarray:
    """Rows of possibly different lengths -> (n, width), NaN-padded."""
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


def _load_method(out: Path, method: str, n_tasks: int, n_seeds: int) -> dict | None:
    regrets, costs, metas = [], [], []
    for t in range(n_tasks):
        for j in range(n_seeds):
            path = _unit_path(out, method, t, j)
            if not path.exists():
                continue
            arrays, meta = load_npz(path, required=_UNIT_ARRAYS)
            regrets.append(arrays["regret"])
            costs.append(arrays["exact_cost"].max(axis=1))
            metas.append(meta)
    if not metas:
        return None
    return {"regret": regrets, "cost": costs, "meta": metas}


def _bands(name: str, X: np.ndarray) -> dict:
    """Mean and 10% / 90% quantiles over runs (axis 0); NaN entries (stopped runs) ignored."""
    if not np.isnan(X).any():
        q10, q90 = np.quantile(X, [0.1, 0.9], axis=0)
        return {f"{name}_mean": X.mean(axis=0), f"{name}_q10": q10, f"{name}_q90": q90}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        q10, q90 = np.nanquantile(X, [0.1, 0.9], axis=0)
        return {f"{name}_mean": np.nanmean(X, axis=0), f"{name}_q10": q10, f"{name}_q90": q90}


def summarise(out, config: PaperConfig | None = None, *, figures: bool = True) -> dict:
    """Aggregate the unit files of ``out`` into summary.json / summary.csv and the figures.

    Parameters
    ----------
    out : str or Path
        A run folder written by :func:`run_paper`.
    config : PaperConfig, optional
        Selection to summarise; default the folder's stored selection. Methods of other
        selections whose units are in the folder are summarised too.
    figures : bool, default True

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
        data = _load_method(out, m, n_tasks, n_seeds)
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
                     **_bands("regret", R), **_bands("cost", C)}
    write_json(out / "summary.json", summary)
    _write_csv(out / "summary.csv", summary)
    if figures:
        summary["figures"] = _draw_figures(out, curves, summary)
        write_json(out / "summary.json", summary)
    return summary


_CSV_COLUMNS = ("method", "label", "n_runs", "n_expected", "mean_final_regret", "q10_final_regret",
                "q90_final_regret", "paper_mean_final_regret", "mean_exact_cost", "max_exact_cost",
                "total_violations", "runs_with_violations", "wall_time_s", "inferred")


def _write_csv(path: Path, summary: dict) -> None:
    from ..runio import atomic_write_bytes, csv_text

    rows = [{col: m if col == "method" else e.get(col) for col in _CSV_COLUMNS}
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
