"""Units of the paper experiment: the public unit API over a run folder.

A *unit* is one (method, task, seed index) run, stored as
``runs/<method>/task<i>_seed<j>.npz`` (:func:`unit_path`). The API, used by
:func:`~safemeta_fast.experiments.paper.run_paper` with either executor and open to any
other scheduler:

* :func:`open_config` checks and writes ``config.json`` (unit seeds included);
  :func:`prepare_references` and :func:`prepare_policy_set` compute the folder's inputs
  once (``start_policies.npz``, ``tasks.json``, ``policyset.npz``);
  :func:`prepare_folder` does all three in order;
* :func:`list_units` gives the jobs still to run, checking every unit already in the
  folder (:func:`check_unit`); :func:`complete_job` fills a job's task and input hashes
  once the inputs exist;
* :func:`compute_unit` runs one job and returns its record (nothing written; a remote
  worker calls this), :func:`write_unit` writes it, :func:`run_unit` does both;
  :func:`warmup_job` / :func:`run_warmup` compile a group's kernels.

Every unit records its method, task, seed and the hashes of the inputs it read
(:func:`input_hashes`: its task's noise and ``u_opt`` in tasks.json, the start policy
arrays it used, the content digest of the policy set); :func:`check_unit` compares them
with the folder, so a unit copied from another method, or computed before tasks.json or
start_policies.npz or policyset.npz changed, is reported by path and re-run, as is a unit
that cannot be read. A unit of another configuration (``result_hash``) is refused: runs of
different configurations are never mixed.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from ..runio import (
    RunFolderError,
    atomic_write_bytes,
    config_diff,
    config_hash,
    load_npz,
    load_unit,
    notify,
    npz_digest,
    read_json,
    read_npz,
    save_npz,
    write_json,
)
from .config import (
    GDA_BETA,
    LB_BETA,
    METHODS,
    SAFE_NOISE,
    SCHEMA,
    VIOLATION_TOL,
    ConfigMismatchError,
    MethodSpec,
    PaperConfig,
    derive_seed,
)

__all__ = [
    "UNIT_ARRAYS",
    "PROGRESS_BLOCK",
    "RUNNERS",
    "unit_name",
    "unit_path",
    "open_config",
    "prepare_references",
    "prepare_policy_set",
    "prepare_folder",
    "input_hashes",
    "unit_inputs",
    "list_units",
    "complete_job",
    "expected_unit",
    "check_unit",
    "shipped_context",
    "load_context",
    "compute_unit",
    "write_unit",
    "run_unit",
    "progress_table",
    "baseline_function",
    "warmup_job",
    "run_warmup",
    "worker_init",
    "limit_threads",
]

#: Arrays every unit file holds, with their number of dimensions.
UNIT_ARRAYS = {"regret": 1, "exact_reward": 1, "exact_cost": 2, "violations": 0, "wall_time": 0}


def unit_name(task: int, seed_index: int) -> str:
    return f"task{task}_seed{seed_index}"


def unit_path(out: Path, method: str, task: int, seed_index: int) -> Path:
    return out / "runs" / method / f"{unit_name(task, seed_index)}.npz"


# -- the run folder's inputs -----------------------------------------------------------


def open_config(out: Path, cfg: PaperConfig) -> dict:
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
                per[unit_name(t, j)] = derive_seed(cfg.seed, m, t, j)
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


def prepare_references(out: Path, cfg: PaperConfig) -> list:
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
                primal_dual(gridworld(SAFE_NOISE), beta=GDA_BETA).policy, dtype=np.float64)
        if need_lb:
            from ..baselines.lb_sgd import lb_start_policy

            starts["pi_lb"] = np.asarray(lb_start_policy(gridworld(SAFE_NOISE)), dtype=np.float64)
        save_npz(sp_path, starts, {
            "pi_s": f"primal_dual(gridworld({SAFE_NOISE}), beta={GDA_BETA}).policy",
            "pi_lb": f"lb_start_policy(gridworld({SAFE_NOISE})) (GDA beta {LB_BETA})"})
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
                 "u_opt": float(primal_dual(M, beta=GDA_BETA).reward),
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


def prepare_policy_set(out: Path, cfg: PaperConfig, progress: bool, echo) -> list:
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


def limit_threads() -> None:
    """One numba thread in this worker (units run side by side, one per core)."""
    import numba

    numba.set_num_threads(1)


def worker_init() -> None:
    """Process-pool initializer: the parent handles Ctrl-C; one numba thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()


def load_context(out: str) -> dict:
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


def shipped_context(out, methods) -> dict:
    """:func:`load_context` as a plain dict, the policy set loaded when one of ``methods``
    reads it: what a remote executor ships to workers that have no access to the folder."""
    ctx = dict(load_context(out))
    if any("policy_set" in METHODS[m].inputs for m in methods):
        from ..policyset import PolicySet

        ctx["ps"] = PolicySet.load(Path(out) / "policyset.npz")
    return ctx


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


def baseline_function(spec: MethodSpec):
    try:
        mod = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ImportError(f"method {spec.name!r} needs {spec.module}, which cannot be imported "
                          f"({exc})") from None
    return getattr(mod, spec.function)


def _run_baseline(name: str):
    def run(ctx, M, job):
        spec = METHODS[name]
        fn = baseline_function(spec)
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
        return {"exact_reward": log.exact_reward, "exact_cost": log.exact_cost,
                "regret": log.regret,
                "stopped_on_violation": bool(log.stopped_on_violation),
                "policy_starts": log.policy_starts, "info": info}
    return run


RUNNERS = {
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
    set); by default it is read from the job's run folder (:func:`load_context`). A remote
    executor ships it instead (:func:`shipped_context`), so its workers need no shared
    filesystem. The job must be complete (:func:`complete_job`).
    """
    from .. import __version__
    from ..envs import gridworld

    head = {k: job[k] for k in ("method", "task", "seed_index", "seed")}
    head["kind"] = "unit"
    try:
        if ctx is None:
            ctx = load_context(job["out"])
        M = gridworld(job["noise"])
        t0 = time.perf_counter()
        rec = RUNNERS[job["method"]](ctx, M, job)
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
                    inputs=job["inputs"], wall_time=wall, violations=violations,
                    first_violation=int(np.argmax(over)) if violations else None,
                    stopped_on_violation=rec["stopped_on_violation"],
                    final_regret=float(regret[-1]) if regret.size else 0.0,
                    cost_limit=limit.tolist(), package_version=__version__, info=rec["info"])
        arrays = {"regret": regret, "exact_reward": reward, "exact_cost": cost,
                  "violations": np.int64(violations), "wall_time": np.float64(wall),
                  "policy_starts": np.asarray(rec["policy_starts"], dtype=np.int64)}
        if "observed_reward" in rec:  # sampled returns (test-time methods)
            arrays["observed_reward"] = np.ascontiguousarray(rec["observed_reward"],
                                                             dtype=np.float64)
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


def run_unit(job: dict) -> dict:
    """Compute one unit and write its file (process-pool and in-process path)."""
    return write_unit(job, compute_unit(job))


# -- inputs and checks -----------------------------------------------------------------


def input_hashes(out) -> dict:
    """Hashes of the run folder's inputs as they are now; absent inputs are left out.

    Keys: ``"task<i>"`` (:func:`~safemeta_fast.runio.config_hash` of task i's noise and
    ``u_opt`` in tasks.json), ``"pi_s"`` and ``"pi_lb"`` (:func:`~safemeta_fast.runio.npz_digest`
    of that array of start_policies.npz) and ``"policy_set"`` (content digest of
    policyset.npz). Only what a unit reads is hashed, so extending the selection (new task
    records, pi_LB added) leaves the hashes of finished units' inputs unchanged.

    Raises
    ------
    RunFolderError
        When an input file exists but cannot be read (the message names it).
    """
    out = Path(out)
    hashes = {}
    tasks_path = out / "tasks.json"
    if tasks_path.exists():
        for t in read_json(tasks_path).get("tasks", []):
            hashes[f"task{int(t['index'])}"] = config_hash(
                {"noise": t["noise"], "u_opt": t["u_opt"]})
    sp_path = out / "start_policies.npz"
    if sp_path.exists():
        starts, _ = load_npz(sp_path, required={"pi_s": 2})
        for name in ("pi_s", "pi_lb"):
            if name in starts:
                hashes[name] = npz_digest({name: starts[name]})
    ps_path = out / "policyset.npz"
    if ps_path.exists():  # a schema-1 file's stored checksum covers the arrays only
        hashes["policy_set"] = read_npz(ps_path, verify=False).digest
    return hashes


def unit_inputs(method: str, task: int, hashes: dict) -> dict | None:
    """The input record of a unit of ``method`` on ``task``: its task's hash and those of
    :attr:`MethodSpec.inputs`, from :func:`input_hashes`; None when one is absent."""
    keys = {"task": f"task{task}", **{name: name for name in METHODS[method].inputs}}
    if any(key not in hashes for key in keys.values()):
        return None
    return {name: hashes[key] for name, key in keys.items()}


def expected_unit(doc: dict, method: str, task: int, seed_index: int, hashes: dict) -> dict:
    """What the unit file of (method, task, seed index) must record to count as finished.

    ``doc`` is the folder's config.json document; ``hashes`` :func:`input_hashes`.
    """
    return {"method": method, "task": task, "seed_index": seed_index,
            "seed": derive_seed(int(doc["result"]["seed"]), method, task, seed_index),
            "result_hash": doc["result_hash"],
            "inputs": unit_inputs(method, task, hashes)}


def check_unit(path, expect: dict, *, metadata_only: bool = False, echo=None):
    """Load a finished unit, or None when it is absent or must be re-run (reported).

    The file must be readable (:func:`~safemeta_fast.runio.load_unit`: every member
    decompressed and CRC-checked, the checksum verified) and record exactly the method,
    task, seed index, seed and input hashes of ``expect`` (:func:`expected_unit`); otherwise
    ``"unit <path> does not match the run folder, will be re-run (<what differs>)"`` goes to
    ``echo`` (default: a :class:`RuntimeWarning`) and None is returned.

    Raises
    ------
    ConfigMismatchError
        When the unit was produced with another configuration (``result_hash``): runs of
        different configurations are never mixed.
    """
    path = Path(path)
    loaded = load_unit(path, required=UNIT_ARRAYS, metadata_only=metadata_only, echo=echo)
    if loaded is None:
        return None
    meta = loaded[1]
    rhash = expect["result_hash"]
    if meta.get("result_hash") != rhash:
        raise ConfigMismatchError(
            f"{path} was produced with configuration {meta.get('result_hash')!r}, not the "
            f"folder's {rhash!r}; delete it or use another --out (runs are never mixed)")
    wrong = [f"{key}: recorded {meta.get(key)!r}, expected {want!r}"
             for key, want in expect.items() if key not in ("result_hash", "inputs")
             and meta.get(key) != want]
    recorded = meta.get("inputs")
    if expect["inputs"] is None:
        wrong.append("some of its inputs are missing from the folder")
    elif not isinstance(recorded, dict):
        wrong.append("it records no input hashes (written by an older version)")
    else:
        wrong += [f"input {name}: recorded hash {recorded.get(name)!r}, the folder's is {h!r}"
                  for name, h in expect["inputs"].items() if recorded.get(name) != h]
    if wrong:
        notify(f"unit {path} does not match the run folder, will be re-run "
               f"({'; '.join(wrong)})", echo)
        return None
    return loaded


def list_units(out, cfg: PaperConfig, doc: dict, *, echo=None) -> tuple:
    """The jobs of ``cfg``'s selection still to run, and the number already finished.

    Every unit file present is checked (:func:`check_unit`); one that is unreadable or
    does not match the folder is reported through ``echo`` and listed again. Jobs come
    longest first and lack their task and inputs until :func:`complete_job`.

    Returns
    -------
    (list of dict, int)
    """
    out = Path(out)
    hashes = input_hashes(out)
    todo, n_done = [], 0
    for m in cfg.methods:
        for t in range(cfg.n_tasks):
            for j in range(cfg.n_seeds):
                path = unit_path(out, m, t, j)
                expect = expected_unit(doc, m, t, j, hashes)
                if check_unit(path, expect, metadata_only=True, echo=echo) is not None:
                    n_done += 1
                    continue
                todo.append({
                    "kind": "unit", "out": str(out), "path": str(path), "method": m, "task": t,
                    "seed_index": j, "seed": expect["seed"], "n_episodes": cfg.n_episodes,
                    "horizon": cfg.horizon, "warmup": cfg.resolved_warmup,
                    "result_hash": doc["result_hash"]})
    todo.sort(key=lambda jb: -METHODS[jb["method"]].weight)
    return todo, n_done


def complete_job(job: dict, tasks: list, hashes: dict) -> dict:
    """Fill a job's task (noise, u_opt) and input hashes once the folder's inputs exist.

    ``tasks`` is :func:`prepare_references`' list, ``hashes`` :func:`input_hashes`.
    """
    inputs = unit_inputs(job["method"], job["task"], hashes)
    if inputs is None:
        raise RunFolderError(
            f"{job['out']}: an input of unit {job['method']} task {job['task']} is missing "
            f"(needs the task record and {', '.join(METHODS[job['method']].inputs)})")
    t = tasks[job["task"]]
    job.update(noise=float(t["noise"]), u_opt=float(t["u_opt"]), inputs=inputs)
    return job


def prepare_folder(out, cfg: PaperConfig, *, progress: bool = True, echo=print) -> list:
    """Compute the folder's missing inputs in order: start policies and task references,
    then the policy set (training notes go to ``echo``). Returns the task records."""
    tasks = prepare_references(out, cfg)
    for note in prepare_policy_set(out, cfg, progress, echo):
        echo(f"training note: {note}")
    return tasks


#: Warm-up length per group (LB-SGD's 3,000-episode batches take another code path).
WARMUP_EPISODES = {"lb_sgd": 4000}


def warmup_job(group: str, methods: list, config: PaperConfig) -> dict:
    """A warm-up job for :func:`run_warmup`: a short run of ``methods`` (one kernel group)."""
    n = min(config.n_episodes, WARMUP_EPISODES.get(group, 400))
    return {"kind": "warmup", "group": group, "methods": methods,
            "n_episodes": n, "horizon": config.horizon,
            "warmup": min(config.resolved_warmup, 100)}


def run_warmup(job: dict, ctx=None) -> dict:
    """Compile a group's kernels (numba's on-disk cache) with a short run on stand-in data.

    Types, not values, decide what numba compiles, so the stand-ins (gridworld 0.3, the
    LP optimum of noise 0.4 mixed with 10% uniform, a two-policy set) compile exactly what
    the units use; nothing is written. Failures are ignored: the units report their own.
    ``ctx`` is not used (it keeps the signature of :func:`compute_unit`).
    """
    from ..envs import gridworld
    from ..lp import solve_lp
    from ..policyset import PolicySet

    t0 = time.perf_counter()
    try:
        M = gridworld(0.3)
        pi = 0.9 * np.asarray(solve_lp(gridworld(SAFE_NOISE)).policy) + 0.1 / M.n_actions
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
                RUNNERS[m](ctx, M, unit)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {"kind": "warmup", "group": job["group"], "seconds": time.perf_counter() - t0,
            "error": error}

