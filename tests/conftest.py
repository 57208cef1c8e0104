"""Shared fixtures: analytic CMDPs with closed-form values and the paper gridworld."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast import CMDP
from safemeta_fast.envs import gridworld


@pytest.fixture(scope="session")
def grid03() -> CMDP:
    """The paper's 7x7 gridworld at noise 0.3."""
    return gridworld(0.3)


@pytest.fixture(scope="session")
def two_state() -> CMDP:
    """Two states, two actions; closed-form values.

    State 0: action 0 stays (reward 1, cost 1), action 1 moves to the absorbing state 1
    (reward 0, cost 0). State 1 is absorbing with reward 0.5 and cost 0. Start in 0.
    Always staying: V_r = 1/(1-g), V_c = 1/(1-g). Always leaving: V_r = g*0.5/(1-g), V_c = 0.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = 1.0
    P[0, 1, 1] = 1.0
    P[1, :, 1] = 1.0
    r = np.array([[1.0, 0.0], [0.5, 0.5]])
    c = np.array([[1.0, 0.0], [0.0, 0.0]])
    return CMDP(P, r, c, cost_limit=2.0, gamma=0.5, nu0=[1.0, 0.0])


@pytest.fixture(scope="session")
def paper_policy_set():
    """The README tour's policy set (paper Algorithm 1 on the gridworld family, LP oracle,
    pi_s = LP(noise 0.4)), calibrated for the certified profile (verification on the cover
    tasks only, which leaves the policies unchanged)."""
    import warnings

    from safemeta_fast.envs import GridworldFamily
    from safemeta_fast.training import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(GridworldFamily(), eps=0.005, delta=0.05, distance="parameter",
                     safe_policy=gridworld(0.4), verify="cover", seed=0, progress=False)
