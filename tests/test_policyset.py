"""PolicySet artifact: exact round trip, atomic write, clear errors on bad files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from safemeta_fast.policyset import SCHEMA_VERSION, ArtifactError, PolicySet


def _make(n=3, S=4, A=2, K=2, seed=0):
    rng = np.random.default_rng(seed)
    pols = rng.random((n, S, A))
    pols /= pols.sum(axis=2, keepdims=True)
    safe = np.full((S, A), 1.0 / A)
    return PolicySet(
        policies=pols, u=rng.random(n), v=rng.random((n, K)), u_s=rng.random(n),
        v_s=rng.random((n, K)), safe_policy=safe, cover_params=rng.random(n),
        cost_limit=np.ones(K), gamma=0.9, eps=0.005, delta=0.05, xi_hat=0.25, seed=7,
        rounds=[{"N": 3590, "n_cover": 10, "test": 0.07}], info={"distance": "parameter"},
    )


def test_round_trip_exact(tmp_path):
    ps = _make()
    path = ps.save(tmp_path / "set")
    assert path.name == "set.npz" and path.exists()
    back = PolicySet.load(path)
    for name in ("policies", "u", "v", "u_s", "v_s", "safe_policy", "cover_params", "cost_limit"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ps, name))
    assert (back.gamma, back.eps, back.delta, back.xi_hat, back.seed) == (0.9, 0.005, 0.05, 0.25, 7)
    assert back.rounds == ps.rounds and back.info == ps.info and back.version == ps.version
    assert back.cover_params.shape == (3, 1)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_arrays_read_only():
    ps = _make()
    with pytest.raises(ValueError):
        ps.u[0] = 1.0


def test_truncated_file(tmp_path):
    path = _make().save(tmp_path / "a.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="unreadable or truncated"):
        PolicySet.load(path)


def _rewrite(path, mutate):
    with np.load(path, allow_pickle=False) as d:
        payload = {k: np.array(d[k]) for k in d.files}
    mutate(payload)
    np.savez(path, **payload)


def test_tampered_array_detected(tmp_path):
    path = _make().save(tmp_path / "a.npz")
    _rewrite(path, lambda p: p["u"].__setitem__(0, 99.0))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        PolicySet.load(path)


def test_wrong_schema_version(tmp_path):
    path = _make().save(tmp_path / "a.npz")

    def bump(p):
        meta = json.loads(bytes(p["__metadata__"]).decode())
        meta["schema_version"] = SCHEMA_VERSION + 1
        p["__metadata__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    _rewrite(path, bump)
    with pytest.raises(ArtifactError, match="schema version"):
        PolicySet.load(path)


def test_not_an_artifact(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ArtifactError, match="not a PolicySet artifact"):
        PolicySet.load(p)
    with pytest.raises(FileNotFoundError):
        PolicySet.load(tmp_path / "missing.npz")
    q = tmp_path / "garbage.npz"
    q.write_bytes(b"not a zip at all")
    with pytest.raises(ArtifactError):
        PolicySet.load(q)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    ps = _make()
    target = tmp_path / "b.npz"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        ps.save(target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("u", np.zeros(2), r"u must have shape \(3,\)"),
        ("v", np.zeros((3, 3)), r"v must have shape \(3, 2\)"),
        ("safe_policy", np.full((4, 2), 0.4), r"safe_policy\[0\] sums to 0.8"),
        ("policies", np.zeros((0, 4, 2)), r"policies must have shape"),
        ("xi_hat", float("nan"), "xi_hat is nan"),
        ("u_s", np.array([0.0, np.inf, 0.0]), "u_s has non-finite entries"),
    ],
)
def test_validation(field, value, pattern):
    ps = _make()
    kw = {k: getattr(ps, k) for k in ("policies", "u", "v", "u_s", "v_s", "safe_policy",
                                      "cover_params", "cost_limit", "gamma", "eps", "delta",
                                      "xi_hat", "seed")}
    kw[field] = value
    with pytest.raises(ValueError, match=pattern):
        PolicySet(**kw)


def test_zip_is_plain_npz(tmp_path):
    path = _make().save(tmp_path / "a.npz")
    with zipfile.ZipFile(path) as z:
        assert "__metadata__.npy" in z.namelist()
