"""Run folders: atomic writes, validated loads and configuration hashing.

Every file of a run folder is written to a temporary file in the same directory and
renamed into place (``os.replace``, atomic on POSIX and Windows), so an interrupted run
never leaves a half-written file under its final name: a file either is complete or is
absent. Temporary files carry the suffix :data:`TMP_SUFFIX` and can be removed with
:func:`remove_stale_temporaries`.

Array files are ``.npz`` without pickle: the arrays plus one JSON metadata document
stored as a 0-d unicode array under :data:`META_KEY`. :func:`load_npz` checks that the
file opens, that the metadata parses, and that the arrays the caller requires are present
with the expected number of dimensions, and raises :class:`RunFolderError` otherwise.

Examples
--------
>>> import tempfile, pathlib, numpy as np
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = save_npz(d / "a.npz", {"x": np.arange(3.0)}, {"note": "hi"})
>>> arrays, meta = load_npz(d / "a.npz", required={"x": 1})
>>> arrays["x"].tolist(), meta["note"]
([0.0, 1.0, 2.0], 'hi')
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import SafeMetaError

__all__ = [
    "RunFolderError",
    "META_KEY",
    "TMP_SUFFIX",
    "atomic_write_bytes",
    "write_json",
    "read_json",
    "save_npz",
    "load_npz",
    "canonical_json",
    "config_hash",
    "config_diff",
    "remove_stale_temporaries",
    "csv_text",
]

#: Key of the JSON metadata document inside every ``.npz`` written here.
META_KEY = "__metadata__"
#: Suffix of temporary files (never a final name).
TMP_SUFFIX = ".partial"


class RunFolderError(SafeMetaError):
    """A run folder holds a file that is unreadable, incomplete, or from another configuration."""


def _jsonable(obj):
    """Convert numpy scalars/arrays and tuples to plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # "nan", "inf": strict JSON has no such numbers
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def canonical_json(obj) -> str:
    """Deterministic JSON text of ``obj`` (sorted keys, no whitespace, numpy converted)."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict) -> str:
    """SHA-256 (hex, first 16 characters) of the canonical JSON of ``config``.

    Examples
    --------
    >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    True
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def config_diff(stored: dict, current: dict) -> list:
    """Keys whose values differ between two configurations (missing keys count), sorted.

    Values are compared through their canonical JSON, so ``(1, 2)`` equals ``[1, 2]``.

    Examples
    --------
    >>> config_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0})
    ['b', 'c']
    """
    keys = set(stored) | set(current)
    missing = object()
    out = []
    for k in sorted(keys, key=str):
        a, b = stored.get(k, missing), current.get(k, missing)
        if a is missing or b is missing or canonical_json(a) != canonical_json(b):
            out.append(k)
    return out


def _file_mode() -> int:
    """Permissions of an ordinary new file (0666 minus the umask; mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temporary(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.chmod(tmp, _file_mode())
    return fd, tmp


def _atomic_write(path, write) -> Path:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync, rename to ``path``."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    return _atomic_write(path, lambda fh: fh.write(data))


def write_json(path, obj) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy values converted, NaN as a string)."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path) -> dict:
    """Read a JSON object; :class:`RunFolderError` names the file when it is unreadable."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def save_npz(path, arrays: dict, metadata: dict, *, compress: bool = True) -> Path:
    """Atomically write ``arrays`` plus a JSON ``metadata`` document to one ``.npz`` file.

    Parameters
    ----------
    path : str or Path
    arrays : dict of str -> array_like
        Numeric arrays (object arrays are refused: files load without pickle).
    metadata : dict
        JSON-serialisable (numpy scalars are converted).
    compress : bool, default True
    """
    if META_KEY in arrays:
        raise ValueError(f"arrays must not use the reserved key {META_KEY!r}")
    payload = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"arrays[{name!r}] has dtype object; store numeric arrays only")
        payload[name] = a
    payload[META_KEY] = np.array(canonical_json(metadata))
    save = np.savez_compressed if compress else np.savez
    return _atomic_write(path, lambda fh: save(fh, **payload))


def load_npz(path, *, required: dict | None = None, metadata_only: bool = False) -> tuple:
    """Load a file written by :func:`save_npz` and validate it.

    Parameters
    ----------
    path : str or Path
    required : dict of str -> int, optional
        Array names that must be present, with their number of dimensions.
    metadata_only : bool, default False
        Check the required names against the archive's listing and read only the
        metadata (the arrays dict is then empty; dimensions are not checked).

    Returns
    -------
    (dict of str -> numpy.ndarray, dict)
        The arrays (loaded into memory) and the metadata.

    Raises
    ------
    RunFolderError
        When the file is truncated, not an npz, lacks metadata or a required array, or
        an array has the wrong number of dimensions.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if metadata_only:
                names = set(z.files)
                arrays = {META_KEY: z[META_KEY]} if META_KEY in names else {}
            else:
                arrays = {k: z[k] for k in z.files}
                names = set(arrays)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise RunFolderError(f"{path}: not a readable .npz file ({exc}); delete it to recompute") \
            from None
    if META_KEY not in arrays:
        raise RunFolderError(f"{path}: no {META_KEY!r} entry; not written by safemeta_fast.runio")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)[()]))
    except ValueError as exc:
        raise RunFolderError(f"{path}: metadata is not valid JSON ({exc})") from None
    for name, ndim in (required or {}).items():
        if name not in names:
            raise RunFolderError(f"{path}: array {name!r} is missing; present: "
                                 f"{sorted(names - {META_KEY})}")
        if not metadata_only and arrays[name].ndim != ndim:
            raise RunFolderError(f"{path}: array {name!r} has shape {arrays[name].shape}; "
                                 f"expected {ndim} dimension(s)")
    return arrays, meta


def remove_stale_temporaries(folder) -> int:
    """Delete temporary files left by interrupted writes below ``folder``; return their number."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.rglob(f".*{TMP_SUFFIX}"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


def csv_text(rows: list) -> str:
    """CSV text of a list of flat dicts (columns: union of keys in first-seen order).

    ``None`` is an empty cell, floats use ``.10g``, strings are quoted.

    Examples
    --------
    >>> csv_text([{"a": 1, "b": 0.5}, {"a": 2, "c": "x"}]).splitlines()
    ['a,b,c', '1,0.5,', '2,,"x"']
    """
    cols: list = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    out = [",".join(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.10g}")
            elif isinstance(v, str):
                cells.append('"' + v.replace('"', '""') + '"')
            else:
                cells.append(str(v))
        out.append(",".join(cells))
    return "\n".join(out) + "\n"
