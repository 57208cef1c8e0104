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
stored as UTF-8 bytes under :data:`META_KEY`, holding a SHA-256 checksum of the arrays
*and* the metadata (:func:`npz_digest`, key :data:`DIGEST_KEY`). :func:`save_npz` is the
one writer and :func:`read_npz` the one reader, for run-folder units and for
:class:`~safemeta_fast.policyset.PolicySet` artifacts alike. :func:`read_npz` checks that
the file opens, that every member decompresses with a correct CRC (also with
``metadata_only``), that the metadata parses, that the checksum matches, and that the
arrays the caller requires are present with the expected number of dimensions, and raises
:class:`RunFolderError` otherwise. :func:`load_unit` turns that into "unreadable unit
<path>, will be re-run".

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NpzReadError, RunFolderError

__all__ = [
    "RunFolderError",
    "NpzReadError",
    "META_KEY",
    "TMP_SUFFIX",
    "atomic_write_bytes",
    "write_json",
    "read_json",
    "save_npz",
    "read_npz",
    "load_npz",
    "NpzContent",
    "npz_digest",
    "DIGEST_KEY",
    "canonical_json",
    "config_hash",
    "config_diff",
    "remove_stale_temporaries",
    "csv_text",
    "load_unit",
    "notify",
    "acquire_lock",
    "release_lock",
    "run_lock",
    "LOCK_NAME",
    "FILE_MODE",
]

#: Key of the JSON metadata document inside every ``.npz`` written here.
META_KEY = "__metadata__"
#: Metadata key of the checksum :func:`save_npz` adds (see :func:`npz_digest`).
DIGEST_KEY = "sha256"
#: Suffix of temporary files (never a final name).
TMP_SUFFIX = ".partial"
#: Name of the lock file of a run folder (JSON: ``{"pid": ..., "host": ...}``).
LOCK_NAME = ".lock"
#: Permissions of every file written here (owner read/write, others read), whatever the umask.
FILE_MODE = 0o644


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


def npz_digest(arrays: dict, metadata: dict | None = None, *, names=None) -> str:
    """SHA-256 (hex) over arrays and, when given, a JSON metadata document.

    Each array contributes its name, dtype, shape and bytes, in sorted name order (or in
    the order of ``names``); the metadata contributes ``json.dumps(..., sort_keys=True)``
    of every key except :data:`DIGEST_KEY`. This is the checksum :func:`save_npz` stores
    and :func:`read_npz` verifies, for run-folder units and policy sets alike.

    Examples
    --------
    >>> a = {"x": np.arange(3.0)}
    >>> npz_digest(a, {"k": 1}) == npz_digest(a, {"k": 1, DIGEST_KEY: "ignored"})
    True
    >>> npz_digest(a, {"k": 1}) != npz_digest(a, {"k": 2})
    True
    """
    h = hashlib.sha256()
    for name in (sorted(arrays) if names is None else names):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    if metadata is not None:
        body = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
        h.update(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8"))
    return h.hexdigest()


def save_npz(path, arrays: dict, metadata: dict, *, compress: bool = True) -> Path:
    """Atomically write ``arrays`` plus a JSON ``metadata`` document to one ``.npz`` file.

    The metadata is stored as UTF-8 bytes under :data:`META_KEY`, with the checksum
    :func:`npz_digest` of the arrays and the metadata added under :data:`DIGEST_KEY`.

    Parameters
    ----------
    path : str or Path
    arrays : dict of str -> array_like
        Numeric arrays (object arrays are refused: files load without pickle).
    metadata : dict
        JSON-serialisable (numpy scalars are converted, NaN and infinities become strings).
    compress : bool, default True
    """
    if META_KEY in arrays:
        raise ValueError(f"arrays must not use the reserved key {META_KEY!r}")
    if DIGEST_KEY in metadata:
        raise ValueError(f"metadata must not use the reserved key {DIGEST_KEY!r}")
    payload = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"arrays[{name!r}] has dtype object; store numeric arrays only")
        payload[name] = a
    meta = _jsonable(metadata)
    meta[DIGEST_KEY] = npz_digest(payload, meta)
    payload[META_KEY] = np.frombuffer(canonical_json(meta).encode("utf-8"), dtype=np.uint8)
    save = np.savez_compressed if compress else np.savez
    return _atomic_write(path, lambda fh: save(fh, **payload))


@dataclass(frozen=True)
class NpzContent:
    """What :func:`read_npz` read from one file.

    Attributes
    ----------
    arrays : dict of str -> numpy.ndarray
        Every array (empty when read with ``metadata_only``).
    metadata : dict
        The JSON metadata without the stored checksum.
    digest : str
        :func:`npz_digest` of the arrays and metadata as read (equal to the stored
        checksum when it was verified): the content hash of the file.
    stored_digest : str or None
        The checksum recorded in the file (None for files written before it existed).
    """

    arrays: dict
    metadata: dict
    digest: str
    stored_digest: str | None


def read_npz(path, *, required: dict | None = None, metadata_only: bool = False,
             verify: bool = True) -> NpzContent:
    """Read and validate a file written by :func:`save_npz` (the one ``.npz`` reader).

    Parameters
    ----------
    path : str or Path
    required : dict of str -> int, optional
        Array names that must be present, with their number of dimensions.
    metadata_only : bool, default False
        Return no arrays (every member is still decompressed and CRC-checked, and the
        checksum verified: a file with a corrupted array never passes as readable).
    verify : bool, default True
        Compare the stored checksum (when the file has one) with the content.

    Returns
    -------
    NpzContent

    Raises
    ------
    NpzReadError
        (a :class:`RunFolderError`) when the file is truncated, not an npz, its compressed
        data is corrupt, it lacks metadata or a required array, an array has the wrong
        number of dimensions, or the checksum does not match the content.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error,
            NotImplementedError) as exc:
        raise NpzReadError(path, f"not a readable .npz file ({type(exc).__name__}: {exc}); "
                                 "delete it to recompute", damaged=True) from None
    if META_KEY not in arrays:
        raise NpzReadError(path, f"no {META_KEY!r} entry; not written by safemeta_fast.runio",
                           damaged=False)
    raw = arrays.pop(META_KEY)
    try:
        # UTF-8 bytes; files written before the checksum existed hold a 0-d unicode array
        text = bytes(raw).decode("utf-8") if raw.dtype == np.uint8 else str(raw[()])
        meta = json.loads(text)
    except (ValueError, TypeError, IndexError) as exc:
        raise NpzReadError(path, f"metadata is not valid JSON ({exc})", damaged=False) from None
    if not isinstance(meta, dict):
        raise NpzReadError(path, f"metadata is a {type(meta).__name__}, not a JSON object",
                           damaged=False)
    stored = meta.pop(DIGEST_KEY, None)
    digest = npz_digest(arrays, meta)
    if verify and stored is not None and stored != digest:
        raise NpzReadError(path, "checksum mismatch, the arrays or the metadata were modified "
                                 "after saving", damaged=False)
    for name, ndim in (required or {}).items():
        if name not in arrays:
            raise NpzReadError(path, f"array {name!r} is missing; present: {sorted(arrays)}",
                               damaged=False)
        if arrays[name].ndim != ndim:
            raise NpzReadError(path, f"array {name!r} has shape {arrays[name].shape}; expected "
                                     f"{ndim} dimension(s)", damaged=False)
    return NpzContent(arrays={} if metadata_only else arrays, metadata=meta, digest=digest,
                      stored_digest=stored)


def load_npz(path, *, required: dict | None = None, metadata_only: bool = False) -> tuple:
    """``(arrays, metadata)`` of :func:`read_npz` (checksum verified).

    Returns
    -------
    (dict of str -> numpy.ndarray, dict)
        The arrays (loaded into memory) and the metadata.
    """
    content = read_npz(path, required=required, metadata_only=metadata_only)
    return content.arrays, content.metadata


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
    except NpzReadError as exc:
        notify(f"unreadable unit {path}, will be re-run ({exc.reason})", echo, stacklevel=3)
        return None


def notify(message: str, echo=None, *, stacklevel: int = 2) -> None:
    """Report ``message`` through ``echo`` (a callable taking a str), or as a
    :class:`RuntimeWarning` when ``echo`` is None."""
    if echo is None:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
    else:
        echo(message)


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
