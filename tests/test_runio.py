"""Run-folder hardening (issue 10): full validation of units, the folder lock, stale
temporaries of dead writers only, and file modes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from safemeta_fast.runio import (
    FILE_MODE,
    LOCK_NAME,
    TMP_SUFFIX,
    RunFolderError,
    acquire_lock,
    load_npz,
    load_unit,
    release_lock,
    remove_stale_temporaries,
    run_lock,
    save_npz,
)
from tests.damage import corrupt_member

_REQUIRED = {"regret": 1, "exact_cost": 2}


def _unit(path):
    rng = np.random.default_rng(0)
    save_npz(path, {"regret": rng.normal(size=5000), "exact_cost": rng.normal(size=(5000, 2))},
             {"result_hash": "abc"})
    return path


@pytest.mark.parametrize("how", ["crc", "inflate"])
@pytest.mark.parametrize("metadata_only", [False, True])
def test_corrupted_compressed_array_is_an_unreadable_unit_not_a_finished_one(tmp_path,
                                                                             metadata_only, how):
    import zlib

    path = _unit(tmp_path / "task0_seed0.npz")
    assert load_npz(path, required=_REQUIRED, metadata_only=metadata_only)[1]["result_hash"]
    corrupt_member(path, "exact_cost.npy", how)
    with np.load(path) as z, pytest.raises(zipfile.BadZipFile if how == "crc" else zlib.error):
        z["exact_cost"]  # what a plain reader hits
    with pytest.raises(RunFolderError, match="not a readable .npz"):
        load_npz(path, required=_REQUIRED, metadata_only=metadata_only)
    said = []
    assert load_unit(path, required=_REQUIRED, metadata_only=metadata_only,
                     echo=said.append) is None
    assert len(said) == 1 and said[0].startswith(
        f"unreadable unit {path}, will be re-run (")
    with pytest.warns(RuntimeWarning, match="will be re-run"):
        assert load_unit(path, required=_REQUIRED) is None
    # the re-run's atomic write replaces the bad file
    _unit(path)
    arrays, meta = load_unit(path, required=_REQUIRED)
    assert arrays["exact_cost"].shape == (5000, 2) and meta["result_hash"] == "abc"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path):
    folder = tmp_path / "run"
    with run_lock(folder) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert acquire_lock(folder) == lock  # re-entrant for its holder
        code = ("import sys; from safemeta_fast.runio import acquire_lock, RunFolderError\n"
                "try:\n    acquire_lock(sys.argv[1])\nexcept RunFolderError as e:\n"
                "    print(e); sys.exit(3)\n")
        child = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                               text=True)
        assert child.returncode == 3
        assert f"in use by pid {os.getpid()}" in child.stdout
    assert not (folder / LOCK_NAME).exists()
    # a lock left by a dead process is taken over
    (folder / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(),
                                                "host": socket.gethostname()}))
    acquire_lock(folder)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert release_lock(folder) and not release_lock(folder)


def test_stale_temporaries_of_dead_writers_only_are_removed(tmp_path):
    live = tmp_path / f".unit.npz.{os.getpid()}.abcd1234{TMP_SUFFIX}"
    dead = tmp_path / f".unit.npz.{_dead_pid()}.efgh5678{TMP_SUFFIX}"
    legacy = tmp_path / f".unit.npz.xyz{TMP_SUFFIX}"
    for p in (live, dead, legacy):
        p.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == 2
    assert live.exists() and not dead.exists() and not legacy.exists()


def test_files_are_written_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        path = _unit(tmp_path / "u.npz")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == FILE_MODE == 0o644
