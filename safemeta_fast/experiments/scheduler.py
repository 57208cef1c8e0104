"""Schedulers of independent jobs: in this process, a spawn process pool, or Ray.

A scheduler knows nothing of what it runs: it is handed a :class:`Plan` (the jobs, the
preparation stages the parent runs, the warm-up jobs of each group, and the functions
that run, finish, compute, write and account a job) and runs it with
:func:`run_in_process`, :func:`run_pool` or :func:`run_ray`. The paper experiment builds
its plan from the public unit API (:mod:`safemeta_fast.experiments.units`).

Pool schedule (:func:`run_pool`): the warm-ups of every group go first (they need no
stage); the parent meanwhile runs the stages in order. A job is sent to a worker once
its group is warm and the stages it needs (:attr:`Plan.needs`) are done, after
:attr:`Plan.finish` completed it. Workers are ``spawn`` processes fed one job at a time
by a dispatcher thread, so the parent always knows which job each worker holds: a worker
that dies (``os._exit``, a signal, the OOM killer) raises :class:`WorkerError` naming
that job, instead of a hang.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_ready

from ..errors import WorkerError

__all__ = ["Plan", "Timing", "WorkerError", "WorkerPool", "run_in_process", "run_pool",
           "run_ray"]


@dataclass(frozen=True)
class Plan:
    """The jobs a scheduler runs and the functions it is handed to run them.

    Attributes
    ----------
    jobs : list of dict
        The jobs, in the order they should start.
    on_result : callable(job, result)
        Called in the parent for every finished job (accounting, progress).
    run : callable(job) -> dict, optional
        Runs one job completely (computes and stores it); process pool and in process.
        Must be a module-level function (it is pickled for ``spawn`` workers).
    compute : callable(job, ctx) -> dict, optional
        Ray: computes one job from the shipped context, storing nothing.
    write : callable(job, result) -> dict, optional
        Ray: stores a computed result in the parent; its return goes to ``on_result``.
    context : callable() -> dict, optional
        Ray: the context shipped once to every worker, built after the stages.
    stages : tuple of (str, callable())
        Preparation the parent runs in order (with a pool, while workers warm up).
    needs : callable(job) -> iterable of str
        The stages a job needs before it is submitted; default all of them.
    finish : callable(job) -> job
        Completes a job in the parent once its stages are done; default unchanged.
    group : callable(job) -> str
        The job's warm-up group; default one group for all.
    warmups : dict of str -> dict
        A warm-up job per group, run before the group's jobs (pool: once; Ray: once per
        node). A group without one starts warm.
    warm : callable(job, ctx) -> dict, optional
        Runs a warm-up job (``ctx`` is None in a pool). Module-level, like ``run``.
    describe : callable(job) -> str
        Names a job in errors.
    initializer : callable(), optional
        Run once in every worker before its first job. Module-level.
    """

    jobs: list
    on_result: object
    run: object = None
    compute: object = None
    write: object = None
    context: object = None
    stages: tuple = ()
    needs: object = None
    finish: object = None
    group: object = None
    warmups: dict = field(default_factory=dict)
    warm: object = None
    describe: object = repr
    initializer: object = None

    def job_needs(self, job) -> set:
        return {name for name, _ in self.stages} if self.needs is None else set(self.needs(job))

    def finished(self, job):
        return job if self.finish is None else self.finish(job)

    def group_of(self, job) -> str:
        return "" if self.group is None else self.group(job)


@dataclass(frozen=True)
class Timing:
    """Wall time of a scheduled run: until every stage was done, and in total (seconds)."""

    prepare: float
    total: float


def _require(plan: Plan, *names) -> None:
    missing = [n for n in names if getattr(plan, n) is None]
    if missing:
        raise ValueError(f"this scheduler needs Plan.{', Plan.'.join(missing)}")


def run_in_process(plan: Plan) -> Timing:
    """Run the stages, then every job one after the other in this process (no warm-ups)."""
    _require(plan, "run")
    t0 = time.perf_counter()
    for _, stage in plan.stages:
        stage()
    prepared = time.perf_counter() - t0
    for job in plan.jobs:
        job = plan.finished(job)
        plan.on_result(job, plan.run(job))
    return Timing(prepare=prepared, total=time.perf_counter() - t0)


# -- the process pool ---------------------------------------------------------------------


def _worker_main(conn, initializer) -> None:
    """A pool worker: run ``fn(job)`` for every ``(fn, job)`` received until None."""
    if initializer is not None:
        initializer()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, job = msg
        try:
            reply = ("ok", fn(job))
        except BaseException as exc:  # reported by the parent as a WorkerError
            reply = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result
            conn.send(("error", f"its result could not be sent back ({type(exc).__name__}: "
                                f"{exc})"))


def _exit_text(code) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Worker:
    def __init__(self, ctx, initializer):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, initializer), daemon=True)
        self.proc.start()
        child.close()


class WorkerPool:
    """``n_workers`` spawn processes, each running one job at a time.

    :meth:`submit` queues ``fn(job)``; :meth:`get` returns ``(tag, result)`` pairs as jobs
    finish and raises :class:`WorkerError` naming the job's label when a worker dies while
    holding it (or when ``fn`` raised, or the job could not be pickled). After an error the
    pool dispatches nothing more; :meth:`close` stops it.
    """

    def __init__(self, n_workers: int, *, initializer=None):
        ctx = mp.get_context("spawn")
        self._workers = [_Worker(ctx, initializer) for _ in range(n_workers)]
        self._inbox: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="safemeta-pool",
                                        daemon=True)
        self._thread.start()

    def submit(self, fn, job, *, tag=None, label: str = "a job") -> None:
        """Queue ``fn(job)``; its result comes back from :meth:`get` with ``tag``."""
        self._inbox.put((fn, job, tag, label))

    def get(self, timeout: float | None):
        """The next ``(tag, result)``; None when nothing finished within ``timeout`` (0 or
        None: do not wait). Raises :class:`WorkerError` for a failed job."""
        try:
            item = self._results.get(timeout=timeout) if timeout else self._results.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, WorkerError):
            raise item
        return item

    def _fail(self, message: str) -> None:
        self._results.put(WorkerError(message))
        self._stop.set()

    def _dispatch(self) -> None:
        idle = list(self._workers)
        busy: dict = {}  # worker -> (tag, label)
        try:
            while not self._stop.is_set():
                while idle and not self._inbox.empty():
                    w = idle.pop()
                    fn, job, tag, label = self._inbox.get_nowait()
                    if not w.proc.is_alive():
                        return self._fail(f"a worker process (pid {w.proc.pid}) died with "
                                          f"{_exit_text(w.proc.exitcode)} between jobs; "
                                          f"{label} was not started")
                    try:
                        w.conn.send((fn, job))
                    except Exception as exc:
                        return self._fail(f"could not hand {label} to a worker process "
                                          f"({type(exc).__name__}: {exc})")
                    busy[w] = (tag, label)
                if not busy:
                    self._stop.wait(0.05)
                    continue
                waitables = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
                ready = set(wait_ready(waitables, timeout=0.05))
                for w in [w for w in busy if w.conn in ready or w.proc.sentinel in ready]:
                    tag, label = busy.pop(w)
                    reply = None
                    try:
                        if w.conn.poll():
                            reply = w.conn.recv()
                    except (EOFError, OSError):
                        reply = None
                    if reply is None:  # no answer: the process is gone
                        w.proc.join(timeout=5)
                        return self._fail(
                            f"a worker process (pid {w.proc.pid}) died with "
                            f"{_exit_text(w.proc.exitcode)} while running {label}; results "
                            "finished before are kept, run again to resume")
                    status, payload = reply
                    if status != "ok":
                        return self._fail(f"a worker process failed while running {label}: "
                                          f"{payload}")
                    idle.append(w)
                    self._results.put((tag, payload))
        except BaseException as exc:  # the dispatcher itself: never leave get() waiting
            self._fail(f"the process pool's dispatcher failed ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """Stop dispatching and end every worker (finished jobs are kept by the caller)."""
        self._stop.set()
        self._thread.join(timeout=5)
        for w in self._workers:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in self._workers:
            w.proc.join(timeout=5)
            w.conn.close()


def run_pool(plan: Plan, n_workers: int) -> Timing:
    """Run the plan on a pool of ``n_workers`` spawn processes (see the module docstring).

    Raises
    ------
    WorkerError
        When a worker dies or fails outside ``plan.run`` (the message names the job);
        the other workers are stopped. Jobs finished before stay finished.
    """
    _require(plan, "run")
    t0 = time.perf_counter()
    pool = WorkerPool(n_workers, initializer=plan.initializer)
    try:
        groups: dict = {}
        for job in plan.jobs:
            groups.setdefault(plan.group_of(job), []).append(job)
        warm = {g for g in groups if g not in plan.warmups}
        for g, wjob in plan.warmups.items():
            if g in groups:
                _require(plan, "warm")
                pool.submit(plan.warm, wjob, tag=("warmup", g), label=f"the warm-up of {g!r}")
        ready: set = set()
        left = len(plan.jobs)

        def pump():
            for g in [g for g in groups if g in warm]:
                waiting = []
                for job in groups[g]:
                    if plan.job_needs(job) <= ready:
                        job = plan.finished(job)
                        pool.submit(plan.run, job, tag=("job", job), label=plan.describe(job))
                    else:
                        waiting.append(job)
                if waiting:
                    groups[g] = waiting
                else:
                    del groups[g]

        def drain(block):
            nonlocal left
            while True:
                got = pool.get(0.2 if block else None)
                if got is None:
                    return
                (kind, what), result = got
                if kind == "warmup":
                    warm.add(what)
                else:
                    plan.on_result(what, result)
                    left -= 1
                pump()
                if block:
                    return

        pump()
        for name, stage in plan.stages:
            stage()
            ready.add(name)
            drain(block=False)
            pump()
        prepared = time.perf_counter() - t0
        while left > 0:
            drain(block=True)
    finally:
        pool.close()
    return Timing(prepare=prepared, total=time.perf_counter() - t0)


# -- Ray ------------------------------------------------------------------------------------


def _ray_call(fn, initializer, job, ctx):
    """A Ray task: ``fn(job, ctx)`` after the worker's initializer."""
    if initializer is not None:
        initializer()
    return fn(job, ctx)


def run_ray(plan: Plan, n_workers: int, *, address: str | None = None) -> Timing:
    """Run the plan as Ray tasks (a local Ray of ``n_workers`` CPUs, or the cluster at
    ``address``).

    The parent runs every stage, ships :attr:`Plan.context` once (``ray.put``), runs each
    group's warm-up once per node, then submits every job; each task returns its result
    and the parent stores it (:attr:`Plan.write`), so workers need no shared filesystem.
    """
    _require(plan, "compute", "write", "context")
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise ImportError("executor 'ray' needs Ray: pip install -e \".[ray]\"") from None
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        kw = ({"address": address} if address else
              {"num_cpus": n_workers, "include_dashboard": False,
               "object_store_memory": 200 * 2**20})
        ray.init(log_to_driver=False, configure_logging=False, **kw)
    try:
        for _, stage in plan.stages:
            stage()
        prepared = time.perf_counter() - t0
        payload = ray.put(plan.context())
        task = ray.remote(num_cpus=1)(_ray_call)
        groups = sorted({plan.group_of(job) for job in plan.jobs} & set(plan.warmups))
        if groups:
            _require(plan, "warm")
        warmups = []
        for node in (n for n in ray.nodes() if n.get("Alive")):
            on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
            for g in groups:
                warmups.append(task.options(scheduling_strategy=on_node).remote(
                    plan.warm, plan.initializer, plan.warmups[g], payload))
        ray.get(warmups)
        pending = {}
        for job in plan.jobs:
            job = plan.finished(job)
            pending[task.remote(plan.compute, plan.initializer, job, payload)] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                plan.on_result(job, plan.write(job, ray.get(ref)))
    finally:
        if started:
            ray.shutdown()
    return Timing(prepare=prepared, total=time.perf_counter() - t0)
