"""What the bench suites share: the size limit above which the dense NumPy twins are not run,
how a steps-per-second rate is recorded next to the timings, and how peak memory is measured."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Dense twins allocate P as (S, A, S) float64; above this they are skipped.
TWIN_MAX_BYTES = 2 * 1024**3


def dense_twin_too_big(M) -> str | None:
    """A reason to skip the dense twin on ``M``, or None when it fits."""
    need = M.n_states * M.n_actions * M.n_states * 8
    if need > TWIN_MAX_BYTES:
        return f"dense P needs {need / 1024**3:.1f} GB > {TWIN_MAX_BYTES / 1024**3:.0f} GB"
    return None


def record_steps(benchmark, steps: int, mode: str) -> None:
    """Store ``steps``, ``mode`` and (after the run) ``steps_per_s`` (mean round) and
    ``steps_per_s_best`` (fastest round) in ``extra_info``."""
    benchmark.extra_info["steps"] = steps
    benchmark.extra_info["mode"] = mode
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["steps_per_s"] = steps / stats.stats.mean
        # the best round: the least disturbed by other work on a shared machine
        benchmark.extra_info["steps_per_s_best"] = steps / stats.stats.min


_MEMORY_SCRIPT = """
import json, time

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20  # kB -> GiB

{setup}
before = status("VmRSS")
try:  # reset the peak (VmHWM) to the current RSS: Linux >= 4.0
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
{run}
t = time.perf_counter() - t
print(json.dumps({{"rss_before_gib": before, "peak_rss_gib": status("VmHWM"),
                   "peak_is_of_run": reset, "subprocess_seconds": t}}))
"""


def peak_memory(setup: str, run: str) -> dict:
    """Run ``setup`` (imports, warm-up) then ``run`` in a fresh Python process.

    Returns ``rss_before_gib`` (resident set after ``setup``), ``peak_rss_gib`` (the peak
    resident set during ``run``: VmHWM, reset after ``setup``; the whole process's peak
    when the kernel refuses the reset, flagged by ``peak_is_of_run``) and
    ``subprocess_seconds``. ``ru_maxrss`` is not used: Linux carries it over from the
    parent across fork and exec, so in a bench session it reports the session's peak.
    The repository root is on the path (``from bench.x import ...`` works).
    """
    code = _MEMORY_SCRIPT.format(setup=setup, run=run)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def cover_builds_tasks(enabled: bool = True):
    """Within the block, the cover builds and stacks every task (``stack_family(...,
    affine=False)``): the path before the reduced coordinates, and that of non-affine
    families."""
    from safemeta_fast import covering
    from safemeta_fast.distance import stack_family

    if enabled:
        covering.stack_family = functools.partial(stack_family, affine=False)
    try:
        yield
    finally:
        covering.stack_family = stack_family
