"""Run folders: atomic writes, validated loads and configuration hashing.

Every file of a run folder is written to a temporary file in the same directory and
renamed into place (``os.replace``, atomic on POSIX and Windows), so an interrupted run
never leaves a half-written file under its final name: a file either is complete or is
absent. Files are written with mode 0644 (:data:`FILE_MODE`). Temporary files carry the
writer's pid and the suffix :data:`TMP_SUFFIX`; :func:`remove_stale_temporaries` removes
those of writers that are no longer alive.

A run folder can be locked by one process at a time: :func:`acquire_lock` /
:func:`release_lock` (or the :func:`run_lock` context manager) keep a lock file
:data:`LOCK_NAME` holding the holder's pid and host; a lock whose holder has died is taken
over.

Array files are ``.npz`` without pickle: the arrays plus one JSON metadata document
stored as a 0-d unicode array under :data:`META_KEY`. :func:`load_npz` checks that the
file opens, that every member decompresses with a correct CRC (also with
``metadata_only``), that the metadata parses, and that the arrays the caller requires are
present with the expected number of dimensions, and raises :class:`RunFolderError`
otherwise. :func:`load_unit` turns that into "unreadable unit <path>, will be re-run".

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

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
import warnings
import zipfile
import zlib
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
    "load_unit",
    "acquire_lock",
    "release_lock",
    "run_lock",
    "LOCK_NAME",
    "FILE_MODE",
]

#: Key of the JSON metadata document inside every ``.npz`` written here.
META_KEY = "__metadata__"
#: Suffix of temporary files (never a final name).
TMP_SUFFIX = ".partial"
#: Name of the lock file of a run folder (JSON: ``{"pid": ..., "host": ...}``).
LOCK_NAME = ".lock"
#: Permissions of every file written here (owner read/write, others read), whatever the umask.
FILE_MODE = 0o644


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


def _temporary(path: Path):
    """A temporary file next to ``path`` named ``.<name>.<pid>.<random>.partial``, mode 0644
    (mkstemp alone would give 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=TMP_SUFFIX)
    os.chmod(tmp, FILE_MODE)
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
            # every member is decompressed (CRC-checked by zipfile) even for metadata_only:
            # a unit with a corrupted array must not pass as finished
            arrays = {k: z[k] for k in z.files}
            names = set(arrays)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise RunFolderError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); "
                             "delete it to recompute") from None
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
        if arrays[name].ndim != ndim:
            raise RunFolderError(f"{path}: array {name!r} has shape {arrays[name].shape}; "
                                 f"expected {ndim} dimension(s)")
    return ({} if metadata_only else arrays), meta


def load_unit(path, *, required: dict | None = None, metadata_only: bool = False,
              echo=None):
    """Load a finished unit of a run, or None when it is absent or must be re-run.

    The file is validated fully (:func:`load_npz`: every member decompressed and
    CRC-checked, metadata parsed, required arrays and dimensions present). An unreadable
    file is reported as ``"unreadable unit <path>, will be re-run (<reason>)"`` through
    ``echo`` (default: a :class:`RuntimeWarning`) and None is returned, so the caller
    recomputes it and the atomic write replaces the bad file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_write_bytes(d / "u.npz", b"PK\x03\x04 not really a zip")
    >>> load_unit(d / "u.npz", echo=print)  # doctest: +ELLIPSIS
    unreadable unit .../u.npz, will be re-run (...)
    >>> load_unit(d / "missing.npz") is None
    True
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_npz(path, required=required, metadata_only=metadata_only)
    except RunFolderError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        message = f"unreadable unit {path}, will be re-run ({reason})"
        if echo is None:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        else:
            echo(message)
        return None


# ---------------------------------------------------------------------------
# run-folder lock and stale temporaries
# ---------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_lock(path: Path):
    """(pid, host) recorded in a lock file, or None when it is unreadable (a torn write)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        return int(obj["pid"]), str(obj["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def acquire_lock(folder) -> Path:
    """Lock the run folder ``folder`` for this process; returns the lock file's path.

    The lock file :data:`LOCK_NAME` is created exclusively (``O_CREAT | O_EXCL``) and holds
    ``{"pid": ..., "host": ...}``. When it already exists and its holder is alive (or runs on
    another host, where liveness cannot be checked), :class:`RunFolderError` names the
    holder; when the holder has died (same host, no such pid) or the file is unreadable, the
    stale lock is removed and taken over. Re-acquiring a lock this process holds is a no-op.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> lock = acquire_lock(d)
    >>> lock.name, release_lock(d)
    ('.lock', True)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = (os.getpid(), socket.gethostname())
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            holder = _read_lock(path)
            if holder == me:
                return path
            if holder is not None and (holder[1] != me[1] or _pid_alive(holder[0])):
                raise RunFolderError(
                    f"run folder {folder} is in use by pid {holder[0]} on host {holder[1]} "
                    f"(lock file {path}); wait for it to finish, use another folder, or "
                    "delete the lock file if that process is gone"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the holder died: take the lock over
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"pid": me[0], "host": me[1]}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return path
    raise RunFolderError(f"could not lock run folder {folder}: {path} keeps reappearing")


def release_lock(folder) -> bool:
    """Remove the lock of ``folder`` if this process holds it; returns whether it did."""
    path = Path(folder) / LOCK_NAME
    if _read_lock(path) != (os.getpid(), socket.gethostname()):
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


@contextlib.contextmanager
def run_lock(folder):
    """``with run_lock(folder):`` holds :func:`acquire_lock` for the block, then releases."""
    path = acquire_lock(folder)
    try:
        yield path
    finally:
        release_lock(folder)


def _writer_pid(name: str):
    """The pid in ``.<name>.<pid>.<random>.partial`` (None for other names)."""
    parts = name[: -len(TMP_SUFFIX)].split(".")
    if len(parts) >= 4 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def remove_stale_temporaries(folder) -> int:
    """Delete temporary files of dead writers below ``folder``; return their number.

    A temporary file carries its writer's pid; it is removed only when no process with that
    pid is alive on this machine, so a concurrent writer's file in progress is never
    touched. Temporaries without a pid (older versions of this module) are removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.rglob(f".*{TMP_SUFFIX}"):
        pid = _writer_pid(p.name)
        if pid is not None and _pid_alive(pid):
            continue
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
