"""A resumable run folder for the open-check experiments (``safemeta experiment``).

One folder holds one experiment:

* ``config.json``: the experiment name and every parameter that affects results. A
  re-run with the same folder and different parameters is refused with
  :class:`~safemeta_fast.experiments.config.ConfigMismatchError` naming the keys;
* ``parts/<key>.npz``: finished parts (arrays plus a JSON summary, written atomically by
  :func:`safemeta_fast.runio.save_npz`). :meth:`RunFolder.part` loads a finished part
  instead of recomputing it, so an interrupted run resumes where it stopped;
* ``policyset.npz`` (or ``<name>.npz``): trained policy sets, when the experiment needs them;
* ``results.json``, ``results.csv`` and the PNG figures, rewritten from the parts.

Examples
--------
>>> import tempfile
>>> rf = RunFolder(tempfile.mkdtemp(), "demo", {"n": 3})
>>> arrays, meta = rf.part("a", lambda: ({"x": [1.0, 2.0]}, {"total": 3.0}))
>>> rf.is_done("a"), meta["total"]
(True, 3.0)
"""

from __future__ import annotations

import time
from pathlib import Path

from ..runio import (
    atomic_write_bytes,
    config_diff,
    csv_text,
    load_npz,
    read_json,
    remove_stale_temporaries,
    save_npz,
    write_json,
)
from .config import ConfigMismatchError

__all__ = ["RunFolder"]

#: Layout version of an experiment run folder.
SCHEMA = 1


class RunFolder:
    """Open (or create) the run folder of one experiment and check its configuration.

    Parameters
    ----------
    out : str or Path
        The folder.
    name : str
        Experiment name (stored; a folder of another experiment is refused).
    config : dict
        Every result-affecting parameter (JSON-serialisable).

    Raises
    ------
    ConfigMismatchError
        When ``out`` holds another experiment or different parameters.
    """

    def __init__(self, out, name: str, config: dict):
        from .. import __version__

        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        self.name = name
        self.config = dict(config)
        path = self.out / "config.json"
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        if path.exists():
            stored = read_json(path)
            if stored.get("experiment") != name:
                raise ConfigMismatchError(
                    f"{self.out} holds the experiment {stored.get('experiment')!r}, not {name!r}; "
                    "use another --out")
            old = stored.get("parameters", {})
            diff = config_diff(old, self.config)
            if diff:
                details = "; ".join(f"{k}: stored {old.get(k)!r}, now {self.config.get(k)!r}"
                                    for k in diff)
                raise ConfigMismatchError(
                    f"{self.out} holds a run of {name!r} with different parameters (differing "
                    f"keys: {', '.join(diff)}; {details}). Use another --out, or restore the "
                    "stored parameters to resume.")
            created = stored.get("created", created)
        write_json(path, {"schema": SCHEMA, "experiment": name, "package_version": __version__,
                          "created": created, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "parameters": self.config})
        self.n_computed = 0
        self.n_skipped = 0

    def _part_path(self, key: str) -> Path:
        return self.out / "parts" / f"{key}.npz"

    def is_done(self, key: str) -> bool:
        """Whether part ``key`` is finished."""
        return self._part_path(key).exists()

    def part(self, key: str, compute) -> tuple:
        """The part ``key``: loaded when finished, else ``compute()`` -> (arrays, meta), saved.

        Returns
        -------
        (dict of str -> numpy.ndarray, dict)
        """
        path = self._part_path(key)
        if path.exists():
            self.n_skipped += 1
            return load_npz(path)
        arrays, meta = compute()
        save_npz(path, arrays, meta)
        self.n_computed += 1
        return load_npz(path)

    def policy_set(self, make, name: str = "policyset"):
        """The folder's ``<name>.npz`` policy set, trained by ``make()`` and saved on first use."""
        from ..policyset import PolicySet

        path = self.out / f"{name}.npz"
        if path.exists():
            self.n_skipped += 1
            return PolicySet.load(path)
        ps = make()
        ps.save(path)
        self.n_computed += 1
        return PolicySet.load(path)

    def write_results(self, results: dict, rows: list) -> None:
        """Write ``results.json`` (``results`` plus the rows) and ``results.csv`` (the rows)."""
        write_json(self.out / "results.json", {"experiment": self.name, "parameters": self.config,
                                               **results, "rows": rows})
        atomic_write_bytes(self.out / "results.csv", csv_text(rows).encode())
