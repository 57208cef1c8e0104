"""A FrozenLake task family built from gymnasium's own toy-text tables.

Task theta = (slip,): the transition kernel mixes gymnasium's deterministic and slippery
FrozenLake tables, ``P = (1 - slip) P_det + slip P_slippery``. Reward is gymnasium's
(1 for reaching the goal); the constraint cost is 1 for *entering a hole*, charged on
the transition (a cost on the hole states themselves would never be incurred, since
holes are terminal). Terminal transitions lead to one added absorbing state (index S)
with zero reward and cost, as in :meth:`~safemeta_fast.cmdp.CMDP.from_gymnasium`.

Needs gymnasium (installed by the ``test`` extra).
"""

from __future__ import annotations

import numpy as np

from ..cmdp import CMDP
from ..tasks import ParameterDistribution, TaskFamily, TruncatedNormal

__all__ = ["FrozenLakeFamily", "frozenlake_tables"]


def frozenlake_tables(map_name: str = "4x4", *, is_slippery: bool):
    """Dense (P, r, c, nu0, holes) of gymnasium's FrozenLake with one added absorbing state.

    ``P`` (S+1, A, S+1), ``r`` (S+1, A) expected reward, ``c`` (S+1, A) probability of
    entering a hole, ``nu0`` (S+1,), ``holes`` the hole state indices.
    """
    try:
        import gymnasium as gym
    except ImportError as exc:  # pragma: no cover - gymnasium is in the test extra
        raise ImportError("FrozenLakeFamily needs gymnasium (pip install gymnasium)") from exc
    env = gym.make("FrozenLake-v1", map_name=map_name, is_slippery=is_slippery)
    u = env.unwrapped
    desc = np.asarray(u.desc).astype(str).reshape(-1)
    holes = np.flatnonzero(desc == "H")
    S, A = u.observation_space.n, u.action_space.n
    P = np.zeros((S + 1, A, S + 1))
    r = np.zeros((S + 1, A))
    c = np.zeros((S + 1, A))
    for s in range(S):
        for a in range(A):
            for prob, s2, rew, term in u.P[s][a]:
                P[s, a, S if term else s2] += prob
                r[s, a] += prob * rew
                if s2 in holes and s2 != s:
                    c[s, a] += prob
    P[S, :, S] = 1.0
    for h in np.concatenate([holes, np.flatnonzero(desc == "G")]):  # never entered: absorbing
        P[h] = 0.0
        P[h, :, S] = 1.0
        r[h] = 0.0
        c[h] = 0.0
    nu0 = np.append(np.asarray(u.initial_state_distrib, dtype=np.float64), 0.0)
    env.close()
    return P, r, c, nu0, holes


class FrozenLakeFamily(TaskFamily):
    """FrozenLake tasks indexed by their slip probability.

    Parameters
    ----------
    map_name : str, default "4x4"
    cost_limit : float, default 0.1
        Limit on the discounted probability of entering a hole.
    gamma : float, default 0.95
    distribution : ParameterDistribution, optional (dim 1)
        Default: N(0.5, 0.1) truncated to [0, 1].

    Notes
    -----
    The model distance between two tasks is ``|dslip| * max_{s,a} TV(P_det, P_slip)``
    (the rewards and costs are linear in slip too); ``parameter_scale`` states it, so
    ``distance="parameter"`` equals the exact model distance.

    Examples
    --------
    >>> fam = FrozenLakeFamily()
    >>> fam.build([0.5]).n_states
    17
    """

    param_names = ("slip",)

    def __init__(self, map_name: str = "4x4", *, cost_limit: float = 0.1, gamma: float = 0.95,
                 distribution: ParameterDistribution | None = None):
        if distribution is None:
            distribution = TruncatedNormal(0.5, 0.1, 0.0, 1.0)
        if not isinstance(distribution, ParameterDistribution) or distribution.dim != 1:
            raise TypeError("distribution must be a 1-dimensional ParameterDistribution")
        if distribution.low[0] < 0 or distribution.high[0] > 1:
            raise ValueError("the slip support must lie inside [0, 1]")
        self.distribution = distribution
        self.map_name = map_name
        self.cost_limit = float(cost_limit)
        self.gamma = float(gamma)
        det = frozenlake_tables(map_name, is_slippery=False)
        slip = frozenlake_tables(map_name, is_slippery=True)
        self._det, self._slip = det, slip
        tv = 0.5 * np.abs(det[0] - slip[0]).sum(axis=2).max()
        dr = np.abs(det[1] - slip[1]).max()
        dc = np.abs(det[2] - slip[2]).max()
        self.parameter_scale = np.array([max(tv, dr, dc)])
        self.build([distribution.low[0]])  # validate once

    def build(self, theta) -> CMDP:
        t = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        if t.shape != (1,) or not (0.0 <= t[0] <= 1.0):
            raise ValueError(f"theta must hold one slip value in [0, 1]; got {theta!r}")
        x = float(t[0])
        (P0, r0, c0, nu0, _), (P1, r1, c1, _, _) = self._det, self._slip
        return CMDP((1 - x) * P0 + x * P1, (1 - x) * r0 + x * r1, (1 - x) * c0 + x * c1,
                    self.cost_limit, self.gamma, nu0)

    def __repr__(self) -> str:
        return (f"FrozenLakeFamily({self.map_name!r}, cost_limit={self.cost_limit}, "
                f"gamma={self.gamma}, distribution={self.distribution!r})")
