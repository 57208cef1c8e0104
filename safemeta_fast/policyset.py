"""The policy set produced by training (SPEC section 5 step 6): an artifact on disk.

A :class:`PolicySet` holds, per cover task i, the near-optimal policy ``pi_i`` with its
predicted reward ``u[i]`` and slacks ``v[i, k] = b[k] - V_c^k(pi_i)``, the exact values
``u_s[i]``, ``v_s[i, k]`` of the safe policy on that task, the safe policy itself, the
cover tasks' parameters and the training record.

On disk it is one ``.npz`` file (no pickle), written and read by the package's one npz
writer and reader (:func:`safemeta_fast.runio.save_npz` / :func:`~safemeta_fast.runio.read_npz`,
shared with run-folder units): the arrays plus a JSON metadata document (schema version,
scalars, training rounds, package version, and a SHA-256 checksum of the arrays and the
metadata). ``save`` writes a temporary file next to the target and renames it, so an
interrupted save never leaves a half-written artifact; ``load`` validates the schema,
the checksum, and every shape and value, and raises :class:`ArtifactError` with a clear
message for a truncated or tampered file.

Schema 2 adds the optional joint conformal prior of the certified test-time phase
(:class:`~safemeta_fast.calibration.Calibration`, arrays stored under ``cal_*`` names) and
a checksum over the arrays *and* the metadata. Schema 1 files still load (without a
calibration, with a warning saying how to add one).
"""

from __future__ import annotations

import json
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError
from .runio import NpzReadError, npz_digest, read_npz, save_npz
from .validation import check_stochastic, readonly

__all__ = ["PolicySet", "ArtifactError", "SCHEMA_VERSION", "ARRAY_NAMES"]

#: Version of the on-disk layout; bumped on any incompatible change.
SCHEMA_VERSION = 2
#: Older layouts that still load.
_READABLE = (1, 2)
_CAL_PREFIX = "cal_"

#: The arrays every policy set file holds (schema 1 checksums them in this order).
ARRAY_NAMES = ("policies", "u", "v", "u_s", "v_s", "safe_policy", "cover_params",
               "cost_limit")


@dataclass(frozen=True, eq=False)
class PolicySet:
    """Candidate policies with predicted values, plus the simultaneously safe policy.

    Attributes
    ----------
    policies : ndarray, shape (n, S, A)
        ``pi_i`` = O_l(M_i) for the n cover tasks.
    u : ndarray, shape (n,)
        Predicted reward ``V_r(pi_i; M_i)``.
    v : ndarray, shape (n, K)
        Predicted slack ``b - V_c(pi_i; M_i)`` per constraint (the paper's utility).
    u_s, v_s : ndarray, shapes (n,), (n, K)
        Exact reward and slack of the safe policy on each cover task.
    safe_policy : ndarray, shape (S, A)
        ``pi_s`` = O_s(U), verified on every cover and sampled training task.
    cover_params : ndarray, shape (n, d)
        Parameters of the cover tasks.
    cost_limit : ndarray, shape (K,)
        The limits ``b`` the slacks refer to.
    gamma, eps, delta, xi_hat : float
        Discount, closeness radius, confidence, and the verified margin of ``pi_s``
        (minimum slack over every verified task and constraint).
    seed : int
        The seed actually used by training.
    rounds : list of dict
        Training rounds: N, |U|, uncovered count, test value, exact distances, seconds.
    info : dict
        Anything else worth keeping (oracle names, distance mode, worst task, ...).
    version : str
        Package version that wrote it.
    calibration : Calibration or None
        The joint conformal prior of the certified test-time phase
        (:func:`safemeta_fast.calibration.calibrate`); None when not calibrated.
    """

    policies: np.ndarray
    u: np.ndarray
    v: np.ndarray
    u_s: np.ndarray
    v_s: np.ndarray
    safe_policy: np.ndarray
    cover_params: np.ndarray
    cost_limit: np.ndarray
    gamma: float
    eps: float
    delta: float
    xi_hat: float
    seed: int
    rounds: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    version: str = ""
    calibration: object = None

    def __post_init__(self):
        pols = np.array(self.policies, dtype=np.float64)
        if pols.ndim != 3 or pols.shape[0] == 0:
            raise ValueError(f"policies must have shape (n >= 1, S, A); got {pols.shape}")
        n, S, A = pols.shape
        check_stochastic("policies", pols)
        b = np.array(self.cost_limit, dtype=np.float64).reshape(-1)
        K = b.size
        if K == 0:
            raise ValueError("cost_limit must have at least one entry")
        want = {
            "u": (n,), "v": (n, K), "u_s": (n,), "v_s": (n, K), "safe_policy": (S, A),
        }
        arrays = {"policies": pols, "cost_limit": b}
        for name, shape in want.items():
            a = np.array(getattr(self, name), dtype=np.float64)
            if name in ("v", "v_s") and a.ndim == 1 and K == 1:
                a = a[:, None]
            if a.shape != shape:
                raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} has non-finite entries")
            arrays[name] = a
        check_stochastic("safe_policy", arrays["safe_policy"])
        cp = np.array(self.cover_params, dtype=np.float64)
        if cp.ndim == 1:
            cp = cp[:, None]
        if cp.ndim != 2 or cp.shape[0] != n:
            raise ValueError(f"cover_params must have shape (n, d) = ({n}, d); got {cp.shape}")
        arrays["cover_params"] = cp
        for name, a in arrays.items():
            object.__setattr__(self, name, readonly(a))
        if not np.all(np.isfinite(cp)):
            i, j = (int(k) for k in np.argwhere(~np.isfinite(cp))[0])
            raise ValueError(f"cover_params[{i}, {j}] is {cp[i, j]}; it must be finite")
        if not np.all(np.isfinite(b)):
            raise ValueError(f"cost_limit is {b.tolist()}; every entry must be finite")
        bounds = {"gamma": (0.0, 1.0, False, True), "eps": (0.0, None, True, False),
                  "delta": (0.0, 1.0, True, True), "xi_hat": (0.0, None, True, False)}
        for name, (lo, hi, lo_open, hi_open) in bounds.items():
            val = getattr(self, name)
            real = isinstance(val, (numbers.Real, np.floating))
            if isinstance(val, (bool, np.bool_)) or not real:
                raise TypeError(f"{name} must be a real number; got {type(val).__name__} {val!r}")
            val = float(val)
            ok = np.isfinite(val) and (val > lo if lo_open else val >= lo)
            if hi is not None:
                ok = ok and (val < hi if hi_open else val <= hi)
            if not ok:
                left = "(" if lo_open else "["
                right = ")" if hi_open or hi is None else "]"
                rng = f"{left}{lo}, {hi if hi is not None else 'inf'}{right}"
                raise ValueError(f"{name} is {val!r}; it must be finite and in {rng}")
            object.__setattr__(self, name, val)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "rounds", [dict(r) for r in self.rounds])
        object.__setattr__(self, "info", dict(self.info))
        if not self.version:
            from . import __version__

            object.__setattr__(self, "version", __version__)
        if self.calibration is not None:
            from .calibration import Calibration

            cal = self.calibration
            if not isinstance(cal, Calibration):
                raise TypeError("calibration must be a Calibration or None; got "
                                f"{type(cal).__name__}")
            if cal.values.shape[1:] != (n + 1, K + 1):
                raise ValueError(f"calibration values are for (m, T) = {cal.values.shape[1:]}; "
                                 f"this policy set needs {(n + 1, K + 1)}")
            if cal.nu0 is not None and cal.cv_values.shape[1] != S:
                raise ValueError("calibration control variate has "
                                 f"{cal.cv_values.shape[1]} states; the policies have {S}")

    # -- shape helpers --------------------------------------------------------------

    @property
    def n_policies(self) -> int:
        return self.policies.shape[0]

    @property
    def n_states(self) -> int:
        return self.policies.shape[1]

    @property
    def n_actions(self) -> int:
        return self.policies.shape[2]

    @property
    def n_constraints(self) -> int:
        return self.cost_limit.size

    # -- persistence ------------------------------------------------------------------

    def _payload(self) -> tuple[dict, dict]:
        """(arrays, metadata) exactly as stored; the writer's checksum covers both."""
        arrays = {name: np.asarray(getattr(self, name)) for name in ARRAY_NAMES}
        meta = {
            "schema_version": SCHEMA_VERSION,
            "kind": "safemeta_fast.PolicySet",
            "package_version": self.version,
            "gamma": self.gamma,
            "eps": self.eps,
            "delta": self.delta,
            "xi_hat": self.xi_hat,
            "seed": self.seed,
            "rounds": self.rounds,
            "info": self.info,
            "calibration": None,
        }
        cal = self.calibration
        if cal is not None:
            present = []
            for name in cal.ARRAYS:
                a = getattr(cal, name)
                if a is not None:
                    arrays[_CAL_PREFIX + name] = np.asarray(a)
                    present.append(name)
            meta["calibration"] = {
                "arrays": present, "info": cal.info,
                **{name: getattr(cal, name) for name in cal.SCALARS},
            }
        return arrays, meta

    def save(self, path) -> Path:
        """Write the artifact atomically (temporary file in the same folder, then rename).

        Returns the final path (``.npz`` is appended when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        try:
            arrays, meta = self._payload()
            json.dumps(meta, allow_nan=False)  # plain JSON only: nothing converted silently
        except (TypeError, ValueError) as exc:
            raise ValueError(f"PolicySet metadata is not JSON-serialisable: {exc}") from None
        return save_npz(path, arrays, meta, compress=False)

    @classmethod
    def load(cls, path) -> "PolicySet":
        """Read and validate an artifact written by :meth:`save` (never unpickles).

        Schema 1 files (before calibration existed) load without a calibration and warn;
        add one with :func:`safemeta_fast.calibration.calibrate`.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no policy set at {path}")
        try:
            content = read_npz(path, verify=False)  # the checksum depends on the schema
        except NpzReadError as exc:
            what = "unreadable or truncated artifact" if exc.damaged else "not a PolicySet artifact"
            raise ArtifactError(f"{path}: {what} ({exc.reason})") from None
        arrays, meta = content.arrays, content.metadata
        missing = [k for k in ARRAY_NAMES if k not in arrays]
        if missing:
            raise ArtifactError(f"{path}: not a PolicySet artifact (missing {missing})")
        if meta.get("kind") != "safemeta_fast.PolicySet":
            raise ArtifactError(f"{path}: metadata kind is {meta.get('kind')!r}, not a PolicySet")
        version = meta.get("schema_version")
        if version not in _READABLE:
            raise ArtifactError(f"{path}: schema version {version!r}; this package reads "
                                f"versions {list(_READABLE)}")
        if version == 1:  # arrays only, in their fixed order
            ok = npz_digest(arrays, names=ARRAY_NAMES) == content.stored_digest
        else:
            ok = content.digest == content.stored_digest
        if not ok:
            raise ArtifactError(f"{path}: checksum mismatch, the arrays or the metadata were "
                                "modified after saving")
        try:
            cal = None
            if version == 1:
                warnings.warn(
                    f"{path}: schema-1 policy set (no calibration); the certified test-time "
                    "profile needs one: ps = safemeta_fast.calibrate(ps, family) and save again",
                    UserWarning, stacklevel=2)
            elif meta.get("calibration") is not None:
                from .calibration import Calibration

                cm = meta["calibration"]
                cal = Calibration(
                    **{name: arrays.get(_CAL_PREFIX + name) for name in Calibration.ARRAYS},
                    **{name: cm[name] for name in Calibration.SCALARS}, info=cm["info"])
            return cls(
                **{k: arrays[k] for k in ARRAY_NAMES},
                gamma=meta["gamma"], eps=meta["eps"], delta=meta["delta"],
                xi_hat=meta["xi_hat"], seed=meta["seed"], rounds=meta["rounds"],
                info=meta["info"], version=meta["package_version"], calibration=cal,
            )
        except KeyError as exc:
            raise ArtifactError(f"{path}: metadata lacks {exc}") from None
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{path}: invalid content ({exc})") from None

    def __repr__(self) -> str:
        return (
            f"PolicySet(n_policies={self.n_policies}, n_states={self.n_states}, "
            f"n_actions={self.n_actions}, n_constraints={self.n_constraints}, "
            f"xi_hat={self.xi_hat:.6g}, eps={self.eps:g}, delta={self.delta:g}, "
            f"calibrated={self.calibration is not None})"
        )
