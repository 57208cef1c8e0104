"""The paper's slippery gridworld (SPEC section 7, BASELINES.md section 1), any size.

State index ``s = size * y + x`` (``y = 0`` is the bottom row); actions 0 right, 1 up,
2 left, 3 down. An intended move off the grid means staying. With slip noise ``i``
the intended cell T gets ``1 - i + i/|D|`` and every other cell of the noise domain
D (the in-grid 4-neighbours, plus the current cell when the intended move was off
the grid) gets ``i/|D|``. The goal is absorbing with reward ``goal_reward`` for every
action; every action taken in a cost cell costs ``cost``.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..cmdp import CMDP

__all__ = [
    "gridworld",
    "paper_goal",
    "paper_cost_cells",
    "PAPER_TEST_NOISES",
    "PAPER_SAFE_NOISE",
    "ACTIONS",
]

#: (dx, dy) of actions 0..3: right, up, left, down (the reference's column order).
ACTIONS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)

#: The 10 test tasks of the paper's experiment (SPEC section 7), in the reference order.
PAPER_TEST_NOISES = (
    0.33994760, 0.25363799, 0.31864008, 0.30796535, 0.33609112,
    0.33084822, 0.31335413, 0.30405411, 0.34453611, 0.26760585,
)

#: Noise of the pessimistic task whose optimum is the paper's safe policy.
PAPER_SAFE_NOISE = 0.4


def paper_goal(size: int) -> int:
    """Default goal: top row, middle column (state 45 for size 7)."""
    return size * (size - 1) + size // 2


def paper_cost_cells(size: int) -> np.ndarray:
    """Default cost cells: the two columns beside the goal column, rows 1..size-3.

    For size 7 these are states 9, 16, 23, 30 (x = 2) and 11, 18, 25, 32 (x = 4).
    """
    g = size // 2
    cells = [size * y + x for x in (g - 1, g + 1) if 0 <= x < size for y in range(1, size - 2)]
    return np.array(sorted(cells), dtype=np.int64)


def _check_cell(name: str, s, size: int) -> int:
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
        raise TypeError(f"{name} must be an integer state index; got {s!r}")
    if not 0 <= int(s) < size * size:
        raise ValueError(f"{name} is {s}; states of a {size}x{size} grid lie in [0, {size * size})")
    return int(s)


def gridworld(
    noise: float,
    size: int = 7,
    *,
    goal: int | None = None,
    cost_cells=None,
    nu0=None,
    cost: float = 10.0,
    goal_reward: float = 10.0,
    cost_limit: float = 1.5,
    gamma: float = 0.9,
) -> CMDP:
    """Build the paper's gridworld task for one slip noise.

    Parameters
    ----------
    noise : float
        Slip noise ``i`` in [0, 1] (the paper's family lives in [0, 0.5]).
    size : int, default 7
        Side of the square grid (>= 2); S = size**2 states, A = 4 actions.
    goal : int, optional
        Absorbing goal state; default :func:`paper_goal` (45 for size 7).
    cost_cells : sequence of int, optional
        States where every action costs ``cost``; default :func:`paper_cost_cells`.
    nu0 : array_like, shape (S,), optional
        Initial distribution; default uniform over the states that are not cost cells
        (the goal included), as in the paper.
    cost, goal_reward, cost_limit, gamma : float
        Paper defaults 10, 10, 1.5 and 0.9.

    Returns
    -------
    CMDP
        Built from successor lists (at most 5 successors per pair), so large grids
        (100x100 = 10^4 states) never need the dense tensor.

    Examples
    --------
    >>> M = gridworld(0.3)
    >>> round(float(M.P[24, 0, 25]), 6), M.n_states
    (0.775, 49)
    """
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an integer; got {size!r}")
    if size < 2:
        raise ValueError(f"size is {size}; the grid needs size >= 2")
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a real number; got {noise!r}")
    noise = float(noise)
    if not (0.0 <= noise <= 1.0):
        raise ValueError(f"noise is {noise!r}; it must lie in [0, 1]")
    n = int(size)
    S = n * n
    goal = paper_goal(n) if goal is None else _check_cell("goal", goal, n)
    if cost_cells is None:
        cells = paper_cost_cells(n)
    else:
        cells = np.array([_check_cell(f"cost_cells[{j}]", s, n) for j, s in enumerate(cost_cells)],
                         dtype=np.int64)

    s_all = np.arange(S, dtype=np.int64)
    x, y = s_all % n, s_all // n
    # the 4 in-grid neighbours of every state, in action order
    nx = x[:, None] + ACTIONS[None, :, 0]
    ny = y[:, None] + ACTIONS[None, :, 1]
    valid = (nx >= 0) & (nx < n) & (ny >= 0) & (ny < n)          # (S, 4)
    nbr = np.where(valid, ny * n + nx, s_all[:, None])            # (S, 4)
    n_valid = valid.sum(axis=1)                                   # (S,)

    # successor slots per (s, a): the 4 neighbour slots, then a "stay" slot
    next_states = np.empty((S, 4, 5), dtype=np.int64)
    probs = np.zeros((S, 4, 5), dtype=np.float64)
    for a in range(4):
        off = ~valid[:, a]                                        # intended move leaves the grid
        dsize = n_valid + off                                     # |D|
        share = noise / dsize
        next_states[:, a, :4] = nbr
        probs[:, a, :4] = np.where(valid, share[:, None], 0.0)
        probs[:, a, a] += np.where(off, 0.0, 1.0 - noise)         # intended on-grid target
        next_states[:, a, 4] = s_all
        probs[:, a, 4] = np.where(off, share + 1.0 - noise, 0.0)  # intended "stay"
    next_states[goal] = goal
    probs[goal] = 0.0
    probs[goal, :, 4] = 1.0

    r = np.zeros((S, 4))
    r[goal] = goal_reward
    c = np.zeros((S, 4))
    c[cells] = cost
    if nu0 is None:
        start = np.ones(S)
        start[cells] = 0.0
        if start.sum() == 0:
            raise ValueError("every state is a cost cell; give nu0 explicitly")
        nu0 = start / start.sum()
    return CMDP.from_successors(next_states, probs, r, c, cost_limit, gamma, nu0)
