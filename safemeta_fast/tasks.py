"""Task families and parameter distributions (the task distribution D of the paper).

A :class:`TaskFamily` maps a parameter vector ``theta`` (shape (d,)) to a CMDP and holds
a :class:`ParameterDistribution` to sample parameters from. Families that are also used
as an environment follow the learn2learn / RLlib meta-env naming: ``sample_tasks(n)``,
``set_task(task)``, ``get_task()``.

A family may declare a cheap parameter-space closeness through ``parameter_scale``: the
parameter distance is then the weighted Chebyshev distance
``max_k scale[k] * |theta_i[k] - theta_j[k]|`` (the paper's experiment compares noise
levels: scale = [1]).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .cmdp import CMDP
from .seeding import resolve_seed
from .validation import check_finite, check_size

__all__ = [
    "ParameterDistribution",
    "TruncatedNormal",
    "Uniform",
    "Empirical",
    "TaskFamily",
    "AffineModel",
]


def _vector(name: str, x, d: int | None = None) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a 1-D array of numbers; got {x!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D; got shape {arr.shape}")
    if d is not None:
        if arr.size == 1 and d > 1:
            arr = np.full(d, arr[0])
        if arr.size != d:
            raise ValueError(f"{name} must have {d} entries (one per parameter); got {arr.size}")
    check_finite(name, arr)
    return arr


def _check_n(n, dim: int) -> int:
    """A sample count whose (n, dim) draws (and as much scratch) fit the allocation limit."""
    return check_size("n", n, item_bytes=16 * max(int(dim), 1), what="the samples")


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(resolve_seed(seed))


class ParameterDistribution(ABC):
    """A distribution over parameter vectors of dimension ``dim``."""

    dim: int

    @abstractmethod
    def sample(self, n: int, *, seed=None) -> np.ndarray:
        """Draw ``n`` parameter vectors; returns shape (n, dim)."""

    @property
    def low(self) -> np.ndarray:
        """Smallest value of each coordinate, shape (dim,)."""
        return self._low

    @property
    def high(self) -> np.ndarray:
        """Largest value of each coordinate, shape (dim,)."""
        return self._high


class TruncatedNormal(ParameterDistribution):
    """Independent normal coordinates restricted to a box, by truncation (default) or clipping.

    Parameters
    ----------
    mean, std : float or array_like, shape (d,)
        Location and scale of each coordinate (std > 0).
    low, high : float or array_like, shape (d,)
        The box [low, high] (low < high).
    mode : {"truncate", "clip"}, default "truncate"
        "truncate" samples the normal conditioned on the box (inverse CDF, exact).
        "clip" samples the normal and clips values into the box, as the authors' code did
        (``np.clip``), which puts point masses on the box edges.

    Examples
    --------
    >>> D = TruncatedNormal(0.3, 0.03, 0.0, 0.5)      # the paper's noise distribution
    >>> D.sample(3, seed=0).shape
    (3, 1)
    """

    def __init__(self, mean, std, low, high, *, mode: str = "truncate"):
        m = _vector("mean", mean)
        d = m.size
        self.mean = m
        self.std = _vector("std", std, d)
        self._low = _vector("low", low, d)
        self._high = _vector("high", high, d)
        self.dim = d
        if (self.std <= 0).any():
            i = int(np.argmax(self.std <= 0))
            raise ValueError(f"std[{i}] is {self.std[i]}; it must be > 0")
        if (self._low >= self._high).any():
            i = int(np.argmax(self._low >= self._high))
            raise ValueError(f"low[{i}] = {self._low[i]} must be < high[{i}] = {self._high[i]}")
        if mode not in ("truncate", "clip"):
            raise ValueError(f"mode is {mode!r}; expected 'truncate' or 'clip'")
        self.mode = mode

    def sample(self, n: int, *, seed=None) -> np.ndarray:
        n = _check_n(n, self.dim)
        rng = _rng(seed)
        if self.mode == "clip":
            x = rng.normal(self.mean, self.std, size=(n, self.dim))
            return np.clip(x, self._low, self._high)
        a = ndtr((self._low - self.mean) / self.std)
        b = ndtr((self._high - self.mean) / self.std)
        u = rng.random((n, self.dim))
        x = self.mean + self.std * ndtri(a + u * (b - a))
        return np.clip(x, self._low, self._high)  # guards the last ulp only

    def __repr__(self) -> str:
        return (f"TruncatedNormal(mean={self.mean.tolist()}, std={self.std.tolist()}, "
                f"low={self._low.tolist()}, high={self._high.tolist()}, mode={self.mode!r})")


class Uniform(ParameterDistribution):
    """Uniform on the box [low, high] (d-dimensional).

    Examples
    --------
    >>> Uniform([0.0, 1.0], [0.5, 2.0]).sample(4, seed=1).shape
    (4, 2)
    """

    def __init__(self, low, high):
        lo = _vector("low", low)
        self._low = lo
        self._high = _vector("high", high, lo.size)
        self.dim = lo.size
        if (self._low >= self._high).any():
            i = int(np.argmax(self._low >= self._high))
            raise ValueError(f"low[{i}] = {self._low[i]} must be < high[{i}] = {self._high[i]}")

    def sample(self, n: int, *, seed=None) -> np.ndarray:
        n = _check_n(n, self.dim)
        return _rng(seed).uniform(self._low, self._high, size=(n, self.dim))

    def __repr__(self) -> str:
        return f"Uniform(low={self._low.tolist()}, high={self._high.tolist()})"


class Empirical(ParameterDistribution):
    """Uniform draws (with replacement) from a fixed list of parameter vectors.

    Parameters
    ----------
    values : array_like, shape (m,) or (m, d)
        The support (m >= 1).

    Examples
    --------
    >>> Empirical([0.1, 0.2, 0.3]).sample(2, seed=0).ravel().tolist()
    [0.3, 0.2]
    """

    def __init__(self, values):
        try:
            v = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError("values must be an array of numbers") from None
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
            raise ValueError(f"values must have shape (m,) or (m, d) with m, d >= 1; got {v.shape}")
        bad = ~np.isfinite(v)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise ValueError(f"values[{i}, {j}] is {v[i, j]}; it must be finite")
        self.values = v
        v.setflags(write=False)
        self.dim = v.shape[1]
        self._low = v.min(axis=0)
        self._high = v.max(axis=0)

    def sample(self, n: int, *, seed=None) -> np.ndarray:
        n = _check_n(n, self.dim)
        k = _rng(seed).integers(0, self.values.shape[0], size=n)
        return self.values[k].copy()

    def __repr__(self) -> str:
        return f"Empirical(m={self.values.shape[0]}, dim={self.dim})"


class TaskFamily(ABC):
    """A parametric family of CMDPs with a task distribution.

    Subclasses set ``distribution`` (a :class:`ParameterDistribution`), ``param_names``
    and implement :meth:`build`. ``parameter_scale`` (shape (d,)) enables the cheap
    parameter closeness ``max_k scale[k] |theta_i[k] - theta_j[k]|``; ``None`` means the
    family has none (use the model distance).

    Meta-env naming (learn2learn / RLlib): :meth:`sample_tasks`, :meth:`set_task`,
    :meth:`get_task`; the current task's CMDP is :attr:`task_cmdp`.
    """

    distribution: ParameterDistribution
    param_names: tuple[str, ...] = ()
    parameter_scale: np.ndarray | None = None

    # -- the protocol --------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        return self.distribution.dim

    def sample(self, n: int, *, seed=None) -> np.ndarray:
        """Sample ``n`` task parameters, shape (n, d)."""
        return self.distribution.sample(n, seed=seed)

    @abstractmethod
    def build(self, theta) -> CMDP:
        """The CMDP of one parameter vector (shape (d,) or a scalar when d = 1)."""

    def build_many(self, thetas):
        """Yield the CMDPs of parameter vectors ``thetas`` (n, d), one at a time."""
        for t in self.check_params(thetas):
            yield self.build(t)

    def check_params(self, thetas) -> np.ndarray:
        """Validate parameters: returns a float64 (n, d) array."""
        arr = np.asarray(thetas, dtype=np.float64)
        if arr.ndim == 1 and self.dim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"thetas must have shape (n, d) = (n, {self.dim}); got {arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise ValueError(f"thetas[{i}, {j}] is {arr[i, j]}; it must be finite")
        return np.ascontiguousarray(arr)

    def affine_model(self):
        """The family's data as an affine function of theta on one support, or None.

        Built once (cached) from the tasks at the centre of the distribution's box and one
        step along each coordinate, then checked on the box's corners (up to 8) and two
        inner points: every task there must lie on the same successor support and match
        the affine reconstruction to 1e-12. Families that are not affine (or not on one
        support) return None and are evaluated task by task.
        """
        if "_affine_model" in self.__dict__:
            return self.__dict__["_affine_model"]
        model = AffineModel.fit(self)
        self.__dict__["_affine_model"] = model
        return model

    def affine_model_on(self, thetas):
        """:meth:`affine_model` when every row of ``thetas`` (n, d) lies in the distribution's
        box (the region where the model was checked), else None."""
        model = self.affine_model()
        if model is None:
            return None
        th = np.asarray(thetas, dtype=np.float64)
        lo, hi = self.distribution.low, self.distribution.high
        return model if bool(np.all((th >= lo) & (th <= hi))) else None

    @property
    def has_parameter_distance(self) -> bool:
        return self.parameter_scale is not None

    def parameter_distance(self, theta_i, theta_j) -> np.ndarray:
        """Parameter-space distance ``max_k scale[k] |theta_i[k] - theta_j[k]|`` (vectorised).

        ``theta_i`` and ``theta_j`` broadcast over leading axes; the last axis is the
        parameter (length d). Returns the distances with the last axis reduced.
        """
        if self.parameter_scale is None:
            raise TypeError(
                f"{type(self).__name__} has no parameter-space distance; use distance='model'"
            )
        a = np.asarray(theta_i, dtype=np.float64)
        b = np.asarray(theta_j, dtype=np.float64)
        if self.dim == 1:
            if a.ndim == 0 or a.shape[-1] != 1:
                a = a[..., None]
            if b.ndim == 0 or b.shape[-1] != 1:
                b = b[..., None]
        return np.max(np.abs(a - b) * np.asarray(self.parameter_scale), axis=-1)

    # -- meta-env naming -----------------------------------------------------------

    def sample_tasks(self, num_tasks: int, *, seed=None) -> list[np.ndarray]:
        """learn2learn-style: a list of ``num_tasks`` parameter vectors (each shape (d,))."""
        return list(self.sample(num_tasks, seed=seed))

    def set_task(self, task) -> None:
        """Make ``task`` (a parameter vector) the current task; builds its CMDP."""
        theta = self.check_params(np.atleast_1d(np.asarray(task, dtype=np.float64))[None])[0]
        self._task = theta
        self._task_cmdp = self.build(theta)

    def get_task(self) -> np.ndarray:
        """The current task's parameter vector (set by :meth:`set_task`)."""
        if getattr(self, "_task", None) is None:
            raise ValueError("no task set; call set_task(task) first")
        return self._task.copy()

    @property
    def task_cmdp(self) -> CMDP:
        """The current task's CMDP."""
        self.get_task()
        return self._task_cmdp




def _on_support(M: CMDP, ptr: np.ndarray, nxt: np.ndarray):
    """M's transition probabilities laid on the support (ptr, nxt), or None if M has a
    successor with positive probability outside it."""
    S = M.n_states
    rows = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
    base = rows * S + nxt
    order = np.argsort(base, kind="stable")
    mrows = np.repeat(np.arange(M.succ_ptr.size - 1), np.diff(M.succ_ptr))
    keys = mrows * S + np.asarray(M.succ_next)
    pos = np.searchsorted(base[order], keys)
    pos = np.minimum(pos, base.size - 1)
    hit = base[order][pos] == keys
    probs = np.asarray(M.succ_prob)
    if np.any(~hit & (probs > 0)):
        return None
    out = np.zeros(base.size)
    out[order[pos[hit]]] = probs[hit]
    return out


@dataclass(frozen=True, eq=False)
class AffineModel:
    """CMDP data affine in theta: ``x(theta) = x(theta0) + sum_k (theta_k - theta0_k) slope_k``.

    ``base`` is the task at ``theta0``; ``dprob`` (d, nnz) are slopes of its successor
    probabilities (on its support), ``dr`` (d, S, A), ``dc`` (d, S, A, K), ``dnu0`` (d, S).
    Used by :func:`safemeta_fast.evaluation.evaluate_affine` to evaluate policies on many
    tasks without building a CMDP per task.
    """

    base: CMDP
    theta0: np.ndarray
    prob0: np.ndarray
    dprob: np.ndarray
    dr: np.ndarray
    dc: np.ndarray
    dnu0: np.ndarray

    @property
    def dim(self) -> int:
        return self.theta0.size

    @classmethod
    def fit(cls, family: "TaskFamily"):
        lo = np.asarray(family.distribution.low, dtype=np.float64)
        hi = np.asarray(family.distribution.high, dtype=np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        theta0 = (lo + hi) / 2.0
        h = (hi - lo) / 4.0
        M0 = family.build(theta0)
        ptr, nxt = np.asarray(M0.succ_ptr), np.asarray(M0.succ_next)
        d = theta0.size
        slopes = []
        for k in range(d):
            step = np.zeros(d)
            step[k] = h[k]
            Mk = family.build(theta0 + step)
            pk = _on_support(Mk, ptr, nxt)
            if pk is None or not _same_frame(M0, Mk):
                return None
            slopes.append(((pk - M0.succ_prob) / h[k], (np.asarray(Mk.r) - M0.r) / h[k],
                           (np.asarray(Mk.c) - M0.c) / h[k], (np.asarray(Mk.nu0) - M0.nu0) / h[k]))
        model = cls(base=M0, theta0=theta0, prob0=np.ascontiguousarray(M0.succ_prob),
                    dprob=np.ascontiguousarray([x[0] for x in slopes]),
                    dr=np.ascontiguousarray([x[1] for x in slopes]),
                    dc=np.ascontiguousarray([x[2] for x in slopes]),
                    dnu0=np.ascontiguousarray([x[3] for x in slopes]))
        corners = np.array(np.meshgrid(*[[a, b] for a, b in zip(lo, hi)])).reshape(d, -1).T[:8]
        inner = theta0 + h * np.array([[0.3] * d, [-0.7] * d])
        for th in np.concatenate([corners, inner]):
            if not model.matches(family.build(th), th):
                return None
        return model

    def at(self, theta):
        """(prob on the base support, r, c, nu0) reconstructed at theta."""
        x = np.asarray(theta, dtype=np.float64).reshape(-1) - self.theta0
        return (self.prob0 + x @ self.dprob, self.base.r + np.tensordot(x, self.dr, 1),
                self.base.c + np.tensordot(x, self.dc, 1), self.base.nu0 + x @ self.dnu0)

    def matches(self, M: CMDP, theta, tol: float = 1e-12) -> bool:
        """Whether the built task M equals the reconstruction at theta (to ``tol``)."""
        p = _on_support(M, self.base.succ_ptr, self.base.succ_next)
        if p is None or not _same_frame(self.base, M):
            return False
        prob, r, c, nu0 = self.at(theta)
        return all(np.max(np.abs(a - b)) <= tol * (1.0 + np.max(np.abs(b)))
                   for a, b in ((prob, p), (r, M.r), (c, M.c), (nu0, M.nu0)))

    def ranges(self, thetas):
        """Per-step reward range (2,), cost ranges (K, 2) over the tasks, and whether they
        share nu0."""
        x = np.asarray(thetas, dtype=np.float64).reshape(-1, self.dim) - self.theta0
        S, A, K = self.base.n_states, self.base.n_actions, self.base.n_constraints
        r = np.asarray(self.base.r).reshape(1, -1) + x @ self.dr.reshape(self.dim, -1)
        c = (np.asarray(self.base.c).reshape(1, -1) + x @ self.dc.reshape(self.dim, -1)
             ).reshape(-1, S * A, K)
        same_nu0 = bool(np.all(self.dnu0 == 0.0))
        return (np.array([r.min(), r.max()]),
                np.stack([c.min(axis=(0, 1)), c.max(axis=(0, 1))], axis=1), same_nu0)


def _same_frame(M0: CMDP, M: CMDP) -> bool:
    return ((M.n_states, M.n_actions, M.n_constraints) == (M0.n_states, M0.n_actions,
                                                          M0.n_constraints)
            and M.gamma == M0.gamma and np.array_equal(M.cost_limit, M0.cost_limit))
