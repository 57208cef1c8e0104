"""The paper's theory constants, in one place (SPEC sections 2 and 3).

* :func:`lipschitz_constant`: L = 1/(1-gamma) + 2 gamma/(1-gamma)^2;
* :func:`normalisation_of`: the scales of the paper's normalised copy of a task family;
* :func:`normalised_margin`: a slack read on that normalised scale.
"""

from __future__ import annotations

import numpy as np

from .cmdp import CMDP
from .validation import check_cmdp

__all__ = ["lipschitz_constant", "normalisation_of", "normalised_margin"]


def lipschitz_constant(gamma: float) -> float:
    """L = 1/(1-gamma) + 2 gamma/(1-gamma)^2 (SPEC section 3; 190 at gamma = 0.9)."""
    return 1.0 / (1.0 - gamma) + 2.0 * gamma / (1.0 - gamma) ** 2


def normalisation_of(M: CMDP) -> dict:
    """Scales of the paper profile's normalised copy of a task family (SPEC section 2).

    Returns
    ``{"reward_range": max r - min r, "utility_scale": max_{s,a} |(1-gamma) b_k - c[s, a, k]|}``
    (shape (K,)); pass them to :class:`SafeAdapter` as keywords. Any task of the family
    with the same r, c, b and gamma gives the same numbers; the test model is not needed.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> normalisation_of(gridworld(0.3))["reward_range"]
    10.0
    """
    check_cmdp(M)
    r = np.asarray(M.r)
    util = (1.0 - M.gamma) * np.asarray(M.cost_limit)[None, None, :] - np.asarray(M.c)
    return {
        "reward_range": float(r.max() - r.min()),
        "utility_scale": np.abs(util).reshape(-1, M.n_constraints).max(axis=0),
    }


def normalised_margin(slack: np.ndarray, tasks) -> float:
    """Smallest slack on the paper's normalised scale (SPEC section 2).

    Each constraint k is the utility ``(1-gamma) b_k - c_k`` divided by its largest
    absolute value ``G_k`` over the tasks; the slack ``b_k - V_c^k`` becomes ``slack / G_k``.
    """
    G = None
    for M in tasks:
        g = np.abs((1.0 - M.gamma) * M.cost_limit[None, None, :] - M.c).max(axis=(0, 1))
        G = g if G is None else np.maximum(G, g)
    G = np.where(G > 0, G, 1.0)
    return float(np.min(np.asarray(slack) / G))
