"""Task families: the paper's gridworld by noise, and two multi-parameter families.

- :class:`GridworldFamily` (the paper): theta = (noise,), noise ~ N(0.3, 0.03) on [0, 0.5];
  parameter closeness |noise_i - noise_j| (the authors' check). The model distance
  (SPEC section 3) is exactly 0.75 |noise_i - noise_j| for every grid size >= 3.
- :class:`GridworldCostFamily`: theta = (noise, cost); the model distance is exactly
  max(0.75 |dnoise|, |dcost|), which is also its parameter distance.
- :class:`RandomCMDPFamily`: a base random CMDP perturbed along fixed random directions:
  theta in [0, 1]^2, P = (1 - radius theta_0) P0 + radius theta_0 P1 and
  r = r0 + radius theta_1 dr (dr in [0, 1]); its model distance is at most
  radius * max(|dtheta_0|, |dtheta_1|) (no parameter closeness declared).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..cmdp import CMDP
from ..seeding import resolve_seed
from ..tasks import ParameterDistribution, TaskFamily, TruncatedNormal, Uniform
from .gridworld import gridworld

__all__ = ["GridworldFamily", "GridworldCostFamily", "GridworldCostCellsFamily", "RandomCMDPFamily",
           "paper_noise_distribution"]

#: Model distance per unit of noise difference in the paper's gridworld.
GRIDWORLD_DISTANCE_PER_NOISE = 0.75


def paper_noise_distribution(mode: str = "truncate") -> TruncatedNormal:
    """The paper's noise distribution N(0.3, 0.03) on [0, 0.5] (``mode="clip"``: the authors'
    code)."""
    return TruncatedNormal(0.3, 0.03, 0.0, 0.5, mode=mode)


def _check_dist(distribution, dim: int, default) -> ParameterDistribution:
    if distribution is None:
        return default
    if not isinstance(distribution, ParameterDistribution):
        raise TypeError(
            f"distribution must be a ParameterDistribution; got {type(distribution).__name__}"
        )
    if distribution.dim != dim:
        raise ValueError(f"distribution has dim {distribution.dim}; this family needs {dim}")
    return distribution


class GridworldFamily(TaskFamily):
    """The paper's slippery gridworld indexed by its slip noise.

    Parameters
    ----------
    distribution : ParameterDistribution, optional (dim 1)
        Default: N(0.3, 0.03) truncated to [0, 0.5] (pass
        ``paper_noise_distribution("clip")`` to reproduce the authors' clipping).
    size : int, default 7
    **grid_kwargs
        Passed to :func:`safemeta_fast.envs.gridworld` (goal, cost_cells, cost, ...).

    Examples
    --------
    >>> fam = GridworldFamily()
    >>> theta = fam.sample(2, seed=0)
    >>> fam.build(theta[0]).n_states
    49
    """

    param_names = ("noise",)

    def __init__(self, distribution: ParameterDistribution | None = None, size: int = 7,
                 **grid_kwargs):
        self.distribution = _check_dist(distribution, 1, paper_noise_distribution())
        lo, hi = self.distribution.low[0], self.distribution.high[0]
        if lo < 0 or hi > 1:
            raise ValueError(f"noise support [{lo}, {hi}] must lie inside [0, 1]")
        self.size = size
        self.grid_kwargs = dict(grid_kwargs)
        self.parameter_scale = np.array([1.0])
        gridworld(0.0, size, **self.grid_kwargs)  # validate the layout once

    def build(self, theta) -> CMDP:
        t = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        if t.shape != (1,):
            raise ValueError(f"theta must hold one value (noise); got shape {t.shape}")
        return gridworld(float(t[0]), self.size, **self.grid_kwargs)

    def __repr__(self) -> str:
        return f"GridworldFamily(distribution={self.distribution!r}, size={self.size})"


class GridworldCostFamily(TaskFamily):
    """Gridworld varying slip noise and the cost of the cost cells: theta = (noise, cost).

    Parameters
    ----------
    distribution : ParameterDistribution, optional (dim 2)
        Default: uniform on [0.25, 0.35] x [9.5, 10.5].
    size : int, default 7
    **grid_kwargs
        Other :func:`gridworld` options (not ``cost``).

    Notes
    -----
    The model distance equals max(0.75 |dnoise|, |dcost|), so the declared parameter
    closeness (scale (0.75, 1)) coincides with it.

    Examples
    --------
    >>> fam = GridworldCostFamily()
    >>> float(fam.build([0.3, 10.0]).c.max())
    10.0
    """

    param_names = ("noise", "cost")

    def __init__(self, distribution: ParameterDistribution | None = None, size: int = 7,
                 **grid_kwargs):
        if "cost" in grid_kwargs:
            raise ValueError("cost is a parameter of this family; do not pass it in grid_kwargs")
        self.distribution = _check_dist(distribution, 2, Uniform([0.25, 9.5], [0.35, 10.5]))
        lo, hi = self.distribution.low, self.distribution.high
        if lo[0] < 0 or hi[0] > 1:
            raise ValueError(f"noise support [{lo[0]}, {hi[0]}] must lie inside [0, 1]")
        self.size = size
        self.grid_kwargs = dict(grid_kwargs)
        self.parameter_scale = np.array([GRIDWORLD_DISTANCE_PER_NOISE, 1.0])
        gridworld(0.0, size, **self.grid_kwargs)

    def build(self, theta) -> CMDP:
        t = np.asarray(theta, dtype=np.float64).reshape(-1)
        if t.shape != (2,):
            raise ValueError(f"theta must hold (noise, cost); got shape {t.shape}")
        return gridworld(float(t[0]), self.size, cost=float(t[1]), **self.grid_kwargs)

    def __repr__(self) -> str:
        return f"GridworldCostFamily(distribution={self.distribution!r}, size={self.size})"


class RandomCMDPFamily(TaskFamily):
    """A random base CMDP perturbed in transitions and rewards: theta = (t_P, t_r) in [0, 1]^2.

    ``P = (1 - radius t_P) P0 + radius t_P P1`` and ``r = r0 + radius t_r dr`` where P0, P1
    are random kernels, r0, dr random in [0, 1), drawn from ``base_seed``. Costs, limits
    and nu0 are shared. The model distance is at most ``radius * max(|dt_P|, |dt_r|)``.

    Parameters
    ----------
    n_states, n_actions, n_constraints : int
    radius : float in (0, 1]
    base_seed : int
    gamma : float, default 0.9
    distribution : ParameterDistribution, optional (dim 2); default uniform on [0, 1]^2.

    Examples
    --------
    >>> fam = RandomCMDPFamily(5, 2, radius=0.1, base_seed=3)
    >>> fam.build([0.5, 0.5]).n_states
    5
    """

    param_names = ("t_P", "t_r")

    def __init__(self, n_states: int, n_actions: int, n_constraints: int = 1, *,
                 radius: float = 0.1, base_seed: int = 0, gamma: float = 0.9,
                 distribution: ParameterDistribution | None = None):
        for name, v in (("n_states", n_states), ("n_actions", n_actions),
                        ("n_constraints", n_constraints)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} is {v!r}; expected an integer >= 1")
        radius = float(radius)
        if not (0.0 < radius <= 1.0):
            raise ValueError(f"radius is {radius!r}; it must lie in (0, 1]")
        self.distribution = _check_dist(distribution, 2, Uniform([0.0, 0.0], [1.0, 1.0]))
        lo, hi = self.distribution.low, self.distribution.high
        if (lo < 0).any() or (hi > 1).any():
            raise ValueError(
                f"parameter support {lo.tolist()}..{hi.tolist()} must lie inside [0, 1]^2")
        self.radius = radius
        self.base_seed = resolve_seed(base_seed)
        rng = np.random.default_rng(self.base_seed)
        S, A, K = int(n_states), int(n_actions), int(n_constraints)
        P0 = rng.exponential(size=(S, A, S))
        P1 = rng.exponential(size=(S, A, S))
        self._P0 = P0 / P0.sum(axis=2, keepdims=True)
        self._P1 = P1 / P1.sum(axis=2, keepdims=True)
        self._r0 = rng.random((S, A))
        self._dr = rng.random((S, A))
        self._c = rng.random((S, A, K))
        nu = rng.exponential(size=S)
        self._nu0 = nu / nu.sum()
        self._b = np.full(K, 0.5 / (1.0 - gamma))
        self.gamma = gamma
        self.parameter_scale = None

    def build(self, theta) -> CMDP:
        t = np.asarray(theta, dtype=np.float64).reshape(-1)
        if t.shape != (2,):
            raise ValueError(f"theta must hold (t_P, t_r); got shape {t.shape}")
        w = self.radius * t[0]
        P = (1.0 - w) * self._P0 + w * self._P1
        P = P / P.sum(axis=2, keepdims=True)
        return CMDP(P, self._r0 + self.radius * t[1] * self._dr, self._c, self._b, self.gamma,
                    self._nu0)

    def __repr__(self) -> str:
        S, A = self._r0.shape
        return f"RandomCMDPFamily({S}, {A}, radius={self.radius}, base_seed={self.base_seed})"


class GridworldCostCellsFamily(TaskFamily):
    """The paper's gridworld with the costs of its cost cells in d independent groups.

    theta (d,) holds the cost of each group; the 8 cost cells are dealt to the groups in
    turn (cell i to group i mod d), so 1 <= d <= 8. Noise, goal, limit and nu0 are the
    paper's (noise fixed, default 0.3). The model distance between two tasks is exactly
    ``max_k |dtheta_k|``, which is also the declared parameter distance. Used by the
    ``dimension`` experiment (the paper's Remark 4.4: covering number against d).

    Parameters
    ----------
    d : int in 1..8
    noise : float, default 0.3
    distribution : ParameterDistribution, optional (dim d); default uniform on [9.5, 10.5]^d.

    Examples
    --------
    >>> fam = GridworldCostCellsFamily(2)
    >>> float(fam.build([9.5, 10.5]).c[:, 0, 0].max())
    10.5
    """

    def __init__(self, d: int, noise: float = 0.3,
                 distribution: ParameterDistribution | None = None):
        from .gridworld import paper_cost_cells

        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= d <= 8:
            raise ValueError(f"d is {d!r}; expected an integer in 1..8 (the gridworld has 8 "
                             "cost cells)")
        self.d = int(d)
        self.param_names = tuple(f"cost{k}" for k in range(self.d))
        self.distribution = _check_dist(distribution, self.d,
                                        Uniform([9.5] * self.d, [10.5] * self.d))
        self.noise = float(noise)
        self._base = gridworld(self.noise)
        cells = np.asarray(paper_cost_cells(7))
        self._groups = [cells[k::self.d] for k in range(self.d)]
        self.parameter_scale = np.ones(self.d)

    def build(self, theta) -> CMDP:
        t = np.asarray(theta, dtype=np.float64).reshape(-1)
        if t.shape != (self.d,):
            raise ValueError(f"theta must hold {self.d} costs; got shape {t.shape}")
        c = np.array(self._base.c)
        for k, cells in enumerate(self._groups):
            c[cells, :, 0] = t[k]
        return self._base.replace(c=c)

    def __repr__(self) -> str:
        return f"GridworldCostCellsFamily(d={self.d}, noise={self.noise})"
