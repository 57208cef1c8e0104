"""Joint conformal prior for the certified test-time phase (CERTIFIED.md, idea 1).

Training can simulate as many tasks of the family as it likes. :func:`calibrate` uses
that to state, before test time, where the *value vector* of a test task drawn from D
lies. For a task M the value vector ``x(M)`` (shape (m, T)) holds the exact values of
every component (the n candidates, then pi_s) for every stream (t = 0 reward,
t = 1 + k cost k).

Two fresh task sets are drawn from the family with their own seeds: a reference set A
and a calibration set B. Scales ``s`` are the per-coordinate standard deviations over
A; the reference set kept is ``A' = {i in A : pi_s is feasible on task i}``. A task of
B scores ``min_{i in A'} max_{j,t} |x_B - x_i|_{jt} / s_jt`` and
``q = the ceil((|B| + 1)(1 - delta_cal))``-th smallest score (split conformal). Then for
a test task M_test ~ D, independent of A and B,

    P( x(M_test) lies in the union over i in A' of the boxes x_i +- q s ) >= 1 - delta_cal.

The artifact also keeps the family's per-step reward and cost ranges (the returns'
bounds) and, when every sampled task shares one initial distribution nu0, the state
values of every component on one central reference task (the start-state control
variate of the test-time phase).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .evaluation import evaluate_many, state_values
from .kernels.certified import conformal_scores
from .seeding import resolve_seed
from .tasks import TaskFamily
from .validation import check_bool, check_int, check_real, readonly

__all__ = ["Calibration", "calibrate", "value_vectors", "family_value_vectors"]


@dataclass(frozen=True, eq=False)
class Calibration:
    """The joint conformal prior stored in a :class:`~safemeta_fast.policyset.PolicySet`.

    Attributes
    ----------
    values : ndarray, shape (n_kept, m, T)
        Exact value vectors of the kept reference tasks A' (m = n + 1 components with
        pi_s last; T = 1 + K streams, reward first).
    params : ndarray, shape (n_kept, d)
        Their task parameters.
    scale : ndarray, shape (m, T)
        Per-coordinate standard deviation over the whole reference set A (floored).
    q : float
        The conformal radius in units of ``scale``.
    delta_cal : float
        Miscoverage of the prior.
    delta : float
        Total failure probability the test phase uses by default
        (``delta_test = delta - delta_cal``).
    n_reference, n_calibration : int
        |A| and |B|.
    seed : int
        Seed actually used (A and B use independent streams derived from it).
    reward_range : ndarray, shape (2,)
        Smallest and largest per-step reward over every sampled task.
    cost_range : ndarray, shape (K, 2)
        The same per constraint.
    nu0 : ndarray or None, shape (S,)
        The initial distribution shared by every sampled task (None when it varies).
    cv_values : ndarray or None, shape (m, S, T)
        State values of every component on the control-variate task (None when nu0 varies).
    cv_params : ndarray or None, shape (d,)
        Parameters of that task (the kept reference task nearest the coordinate-wise
        median value vector).
    info : dict
        Score quantiles, counts, timings.
    """

    values: np.ndarray
    params: np.ndarray
    scale: np.ndarray
    q: float
    delta_cal: float
    delta: float
    n_reference: int
    n_calibration: int
    seed: int
    reward_range: np.ndarray
    cost_range: np.ndarray
    nu0: np.ndarray | None = None
    cv_values: np.ndarray | None = None
    cv_params: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    #: Array fields, in the order the artifact stores them.
    ARRAYS = ("values", "params", "scale", "reward_range", "cost_range", "nu0", "cv_values",
              "cv_params")
    #: Scalar fields stored in the artifact's metadata.
    SCALARS = ("q", "delta_cal", "delta", "n_reference", "n_calibration", "seed")

    def __post_init__(self):
        vals = np.array(self.values, dtype=np.float64)
        if vals.ndim != 3 or vals.shape[0] == 0:
            raise ValueError(f"calibration values must have shape (n_kept >= 1, m, T); "
                             f"got {vals.shape}")
        nk, m, T = vals.shape
        K = T - 1
        if K < 1 or m < 2:
            raise ValueError(f"calibration values have m = {m}, T = {T}; need m >= 2, T >= 2")
        want = {"params": (nk, None), "scale": (m, T), "reward_range": (2,), "cost_range": (K, 2)}
        for name, shape in want.items():
            a = np.array(getattr(self, name), dtype=np.float64)
            if a.ndim != len(shape) or any(w is not None and w != g
                                           for w, g in zip(shape, a.shape)):
                raise ValueError(f"calibration {name} must have shape {shape}; got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"calibration {name} has non-finite entries")
            object.__setattr__(self, name, readonly(a))
        if not np.all(np.isfinite(vals)):
            raise ValueError("calibration values have non-finite entries")
        object.__setattr__(self, "values", readonly(vals))
        if np.any(self.scale <= 0):
            raise ValueError("calibration scale must be > 0 everywhere")
        if (self.reward_range[0] > self.reward_range[1]
                or np.any(self.cost_range[:, 0] > self.cost_range[:, 1])):
            raise ValueError("calibration reward_range / cost_range must be (low, high) with "
                             "low <= high")
        q = check_real("calibration q", self.q, 0.0)
        dc = check_real("calibration delta_cal", self.delta_cal, 0.0, 1.0, lo_open=True,
                        hi_open=True)
        d = check_real("calibration delta", self.delta, dc, 1.0, lo_open=True, hi_open=True)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "delta_cal", dc)
        object.__setattr__(self, "delta", d)
        for name in ("n_reference", "n_calibration", "seed"):
            object.__setattr__(self, name,
                               check_int(f"calibration {name}", int(getattr(self, name)), 0))
        if self.nu0 is not None:
            nu = np.array(self.nu0, dtype=np.float64)
            object.__setattr__(self, "nu0", readonly(nu))
        if (self.cv_values is None) != (self.nu0 is None):
            raise ValueError("calibration cv_values and nu0 must be given together")
        if self.cv_values is not None:
            g = np.array(self.cv_values, dtype=np.float64)
            S = self.nu0.size
            if g.shape != (m, S, T) or not np.all(np.isfinite(g)):
                raise ValueError(f"calibration cv_values must be finite with shape {(m, S, T)}; "
                                 f"got {g.shape}")
            object.__setattr__(self, "cv_values", readonly(g))
            cp = np.array(self.cv_params if self.cv_params is not None else [], dtype=np.float64)
            object.__setattr__(self, "cv_params", readonly(cp.reshape(-1)))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def n_kept(self) -> int:
        """|A'|: reference tasks on which pi_s is feasible."""
        return self.values.shape[0]

    @property
    def delta_test(self) -> float:
        """Default failure probability of the test-time confidence sequences."""
        return self.delta - self.delta_cal

    def __repr__(self) -> str:
        return (f"Calibration(n_kept={self.n_kept}/{self.n_reference}, "
                f"n_calibration={self.n_calibration}, q={self.q:.4g}, "
                f"delta_cal={self.delta_cal:g}, control_variate={self.cv_values is not None})")


def _components(ps) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([ps.policies, ps.safe_policy[None]]))


def value_vectors(ps, tasks, *, progress: bool = False, desc: str = "value vectors"):
    """Exact value vectors of the policy set's components on each task.

    Returns ``(x, r_range, c_range, nu0)``: x of shape (n_tasks, m, T) (reward, then
    each cost), the smallest/largest per-step reward (2,) and costs (K, 2) seen, and the
    shared initial distribution (None when it differs between tasks).
    """
    comps = _components(ps)
    m, K = comps.shape[0], ps.n_constraints
    tasks = list(tasks)
    x = np.empty((len(tasks), m, 1 + K))
    r_lo, r_hi = math.inf, -math.inf
    c_lo, c_hi = np.full(K, math.inf), np.full(K, -math.inf)
    nu0 = None
    same_nu0 = True
    for i, M in enumerate(tqdm(tasks, desc=desc, disable=not progress, leave=False)):
        _check_compatible(ps, M, i)
        ev = evaluate_many(M, comps)
        x[i, :, 0] = ev.reward
        x[i, :, 1:] = ev.cost
        r = np.asarray(M.r)
        c = np.asarray(M.c).reshape(-1, K)
        r_lo, r_hi = min(r_lo, float(r.min())), max(r_hi, float(r.max()))
        c_lo, c_hi = np.minimum(c_lo, c.min(axis=0)), np.maximum(c_hi, c.max(axis=0))
        if nu0 is None:
            nu0 = np.array(M.nu0)
        elif same_nu0 and not np.array_equal(nu0, M.nu0):
            same_nu0 = False
    return (x, np.array([r_lo, r_hi]), np.stack([c_lo, c_hi], axis=1),
            nu0 if same_nu0 else None)


def family_value_vectors(ps, family, thetas, *, progress: bool = False,
                         desc: str = "value vectors"):
    """:func:`value_vectors` of the family's tasks at ``thetas`` (n, d).

    For an affine family (:meth:`~safemeta_fast.tasks.TaskFamily.affine_model`) whose
    parameters lie in the distribution's box, one parallel kernel evaluates every task
    without building it; otherwise the tasks are built and evaluated one by one.
    """
    from .evaluation import evaluate_affine

    th = family.check_params(thetas)
    model = family.affine_model_on(th)
    if model is None:
        return value_vectors(ps, family.build_many(th), progress=progress, desc=desc)
    _check_compatible(ps, model.base, 0)
    x = evaluate_affine(model, th, _components(ps))
    r_range, c_range, same_nu0 = model.ranges(th)
    return x, r_range, c_range, (np.array(model.base.nu0) if same_nu0 else None)


def _check_compatible(ps, M, i):
    if (M.n_states, M.n_actions, M.n_constraints) != (ps.n_states, ps.n_actions, ps.n_constraints):
        raise ValueError(
            f"task {i} of the family has (S, A, K) = {(M.n_states, M.n_actions, M.n_constraints)}; "
            f"the policy set has {(ps.n_states, ps.n_actions, ps.n_constraints)}")
    if abs(M.gamma - ps.gamma) > 1e-12:
        raise ValueError(f"task {i} of the family has gamma {M.gamma}; "
                         f"the policy set has {ps.gamma}")
    if not np.allclose(M.cost_limit, ps.cost_limit, rtol=0, atol=1e-12):
        raise ValueError(f"task {i} of the family has cost_limit {M.cost_limit}; the policy set "
                         f"has {ps.cost_limit}")


def conformal_quantile(scores: np.ndarray, delta_cal: float) -> float:
    """The ``ceil((n + 1)(1 - delta_cal))``-th smallest score (split conformal).

    Raises ValueError when n is too small for that rank to exist.
    """
    n = scores.size
    rank = math.ceil((n + 1) * (1.0 - delta_cal))
    if rank > n:
        raise ValueError(
            f"n_calibration = {n} is too small for delta_cal = {delta_cal:g}: the conformal rank "
            f"ceil((n+1)(1-delta_cal)) = {rank} exceeds n; use n_calibration >= "
            f"{math.ceil(1.0 / delta_cal) - 1}")
    return float(np.sort(scores)[rank - 1])


def calibrate(ps, family: TaskFamily, *, n_reference: int = 2000, n_calibration: int = 2000,
              delta: float | None = None, delta_cal: float | None = None, seed=None,
              progress: bool = True):
    """Attach the joint conformal prior of the certified profile to a policy set.

    Parameters
    ----------
    ps : PolicySet
        A trained policy set (candidates and pi_s).
    family : TaskFamily
        The task family and its distribution D (the one the test task is drawn from).
    n_reference, n_calibration : int, default 2000
        Sizes of the reference set A and the calibration set B, sampled fresh from D.
    delta : float, optional
        Total failure probability of the certified test phase; default the policy set's
        delta (0.05 in the paper).
    delta_cal : float, optional
        Share of delta spent on the prior; default ``delta / 2``.
    seed : int, Generator or None
        Seed of the two samples (recorded). Use one that training did not use.
    progress : bool
        Progress bar over the task evaluations.

    Returns
    -------
    PolicySet
        A copy of ``ps`` with ``calibration`` set.

    Raises
    ------
    ValueError
        On incompatible tasks, too small a calibration set for ``delta_cal``, or when
        pi_s is infeasible on every reference task.

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily, gridworld
    >>> from safemeta_fast.training import train
    >>> ps = train(GridworldFamily(), eps=0.02, delta=0.2, distance="parameter",
    ...            safe_policy=gridworld(0.4), seed=0, progress=False,
    ...            calibration=False)
    >>> ps = calibrate(ps, GridworldFamily(), seed=1, progress=False)
    >>> ps.calibration is not None
    True
    """
    from dataclasses import replace

    from .policyset import PolicySet

    if not isinstance(ps, PolicySet):
        raise TypeError(f"ps must be a PolicySet; got {type(ps).__name__}")
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily; got {type(family).__name__}")
    nA = check_int("n_reference", n_reference, 2)
    nB = check_int("n_calibration", n_calibration, 1)
    d = check_real("delta", ps.delta if delta is None else delta, 0.0, 1.0, lo_open=True,
                   hi_open=True)
    dc = check_real("delta_cal", d / 2.0 if delta_cal is None else delta_cal, 0.0, d,
                    lo_open=True, hi_open=True)
    check_bool("progress", progress)
    used = resolve_seed(seed)
    t0 = time.perf_counter()
    ss = np.random.SeedSequence(used)
    gA, gB = (np.random.default_rng(s) for s in ss.spawn(2))
    thA = family.check_params(family.sample(nA, seed=gA))
    thB = family.check_params(family.sample(nB, seed=gB))
    xA, rrA, crA, nuA = family_value_vectors(ps, family, thA, progress=progress,
                                             desc="calibration: reference tasks")
    xB, rrB, crB, nuB = family_value_vectors(ps, family, thB, progress=progress,
                                             desc="calibration: calibration tasks")
    t_eval = time.perf_counter() - t0
    m, T = xA.shape[1], xA.shape[2]
    b = np.asarray(ps.cost_limit)
    kept = np.all(xA[:, m - 1, 1:] <= b[None, :], axis=1)
    if not kept.any():
        raise ValueError(f"pi_s is infeasible on all {nA} reference tasks; no prior can be formed")
    std = xA.reshape(nA, -1).std(axis=0)
    floor = 1e-12 * np.maximum(1.0, np.abs(xA.reshape(nA, -1)).max(axis=0))
    scale = np.maximum(std, floor)
    xk = np.ascontiguousarray(xA[kept].reshape(int(kept.sum()), -1))
    scores = np.empty(nB)
    conformal_scores(np.ascontiguousarray(xB.reshape(nB, -1)), xk, 1.0 / scale, scores)
    q = conformal_quantile(scores, dc)
    nu0 = nuA if (nuA is not None and nuB is not None and np.array_equal(nuA, nuB)) else None
    cv_values = cv_params = None
    values_kept = xA[kept]
    params_kept = thA[kept]
    if nu0 is not None:
        med = np.median(values_kept.reshape(values_kept.shape[0], -1), axis=0)
        dist = np.max(np.abs(values_kept.reshape(values_kept.shape[0], -1) - med) / scale, axis=1)
        ic = int(np.argmin(dist))
        cv_params = params_kept[ic]
        Mc = family.build(cv_params)
        comps = _components(ps)
        cv_values = np.empty((m, ps.n_states, T))
        for j in range(m):
            sv = state_values(Mc, comps[j])
            cv_values[j, :, 0] = sv.reward
            cv_values[j, :, 1:] = sv.cost
    qs = np.quantile(scores, [0.5, 0.9, 0.99, 1.0])
    info = {
        "score_quantiles": {"50%": float(qs[0]), "90%": float(qs[1]), "99%": float(qs[2]),
                            "max": float(qs[3])},
        "n_dropped_pi_s_infeasible": int((~kept).sum()),
        "family": type(family).__name__,
        "control_variate": nu0 is not None,
        "seconds": {"evaluation": t_eval, "total": time.perf_counter() - t0},
    }
    cal = Calibration(
        values=values_kept, params=params_kept, scale=scale.reshape(m, T), q=q, delta_cal=dc,
        delta=d, n_reference=nA, n_calibration=nB, seed=used,
        reward_range=np.array([min(rrA[0], rrB[0]), max(rrA[1], rrB[1])]),
        cost_range=np.stack([np.minimum(crA[:, 0], crB[:, 0]), np.maximum(crA[:, 1], crB[:, 1])],
                            axis=1),
        nu0=nu0, cv_values=cv_values, cv_params=cv_params, info=info,
    )
    return replace(ps, calibration=cal)
