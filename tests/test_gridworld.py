"""The paper's gridworld: exact construction of BASELINES.md section 1 and its generalisation."""

from __future__ import annotations

import numpy as np
import pytest

from safemeta_fast.envs import PAPER_TEST_NOISES, gridworld, paper_cost_cells, paper_goal

# BASELINES.md section 1, noise 0.3: the non-zero entries of P[s, a, :]
CHECK_ROWS = {
    (24, 0): {25: 0.775, 17: 0.075, 23: 0.075, 31: 0.075},
    (24, 3): {17: 0.775, 23: 0.075, 25: 0.075, 31: 0.075},
    (0, 0): {1: 0.85, 7: 0.15},
    (0, 2): {0: 0.8, 1: 0.1, 7: 0.1},
    (3, 3): {3: 0.775, 2: 0.075, 4: 0.075, 10: 0.075},
    (3, 1): {10: 0.8, 2: 0.1, 4: 0.1},
    (44, 0): {45: 0.8, 43: 0.1, 37: 0.1},
    (6, 0): {6: 0.8, 5: 0.1, 13: 0.1},
    (45, 0): {45: 1.0}, (45, 1): {45: 1.0}, (45, 2): {45: 1.0}, (45, 3): {45: 1.0},
}


@pytest.mark.parametrize("pair", sorted(CHECK_ROWS))
def test_reference_transition_rows(grid03, pair):
    s, a = pair
    row = grid03.P[s, a]
    nz = {int(j): float(row[j]) for j in np.flatnonzero(row)}
    assert nz.keys() == CHECK_ROWS[pair].keys()
    for j, p in CHECK_ROWS[pair].items():
        assert nz[j] == pytest.approx(p, abs=1e-15)


def test_reward_cost_start(grid03):
    M = grid03
    assert paper_goal(7) == 45
    assert paper_cost_cells(7).tolist() == [9, 11, 16, 18, 23, 25, 30, 32]
    assert np.flatnonzero(M.r.max(axis=1)).tolist() == [45] and np.all(M.r[45] == 10)
    cost_states = np.flatnonzero(M.c[:, :, 0].max(axis=1))
    assert cost_states.tolist() == [9, 11, 16, 18, 23, 25, 30, 32]
    assert np.all(M.c[cost_states, :, 0] == 10)
    assert (M.nu0 > 0).sum() == 41 and M.nu0[45] == pytest.approx(1 / 41)
    assert M.nu0[45] == pytest.approx(0.0243902, abs=1e-7)
    assert np.all(M.nu0[cost_states] == 0)
    assert M.gamma == 0.9 and M.cost_limit.tolist() == [1.5]
    assert np.flatnonzero(M.absorbing).tolist() == [45]


def test_noise_domain_rule_everywhere():
    """Every row: intended cell 1 - i + i/|D|, the rest of D gets i/|D| (brute force)."""
    i = 0.37
    M = gridworld(i)
    moves = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    for s in range(49):
        if s == 45:
            continue
        x, y = s % 7, s // 7
        nbrs = [(x + dx) + 7 * (y + dy) for dx, dy in moves if 0 <= x + dx < 7 and 0 <= y + dy < 7]
        for a, (dx, dy) in enumerate(moves):
            on = 0 <= x + dx < 7 and 0 <= y + dy < 7
            T = (x + dx) + 7 * (y + dy) if on else s
            D = nbrs + ([] if on else [s])
            want = np.zeros(49)
            want[D] = i / len(D)
            want[T] += 1 - i
            np.testing.assert_allclose(M.P[s, a], want, atol=1e-15)


def test_zero_noise_is_deterministic():
    M = gridworld(0.0)
    assert np.all(np.diff(M.succ_ptr) == 1)


def test_other_sizes_are_valid_and_sparse():
    M = gridworld(0.2, size=50)
    assert M.n_states == 2500 and not M.has_dense
    assert np.diff(M.succ_ptr).max() <= 5
    assert M.absorbing.sum() == 1 and M.absorbing[paper_goal(50)]
    big = gridworld(0.3, size=100)
    assert big.n_states == 10_000 and big.nnz < 5 * 4 * 10_000


def test_custom_layout():
    M = gridworld(0.1, size=4, goal=15, cost_cells=[5, 6], cost=2.0, goal_reward=1.0,
                  cost_limit=0.5, gamma=0.8)
    assert M.absorbing[15] and M.r[15, 0] == 1.0 and M.c[5, 0, 0] == 2.0
    assert M.nu0[5] == 0 and M.nu0.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(noise=1.5), ValueError, r"noise is 1.5; it must lie in \[0, 1\]"),
        (dict(noise=-0.1), ValueError, r"noise is -0.1"),
        (dict(noise=float("nan")), ValueError, r"noise is nan"),
        (dict(noise="0.3"), TypeError, "noise must be a real number"),
        (dict(noise=0.3, size=1), ValueError, "size >= 2"),
        (dict(noise=0.3, size=7.0), TypeError, "size must be an integer"),
        (dict(noise=0.3, goal=49), ValueError,
         r"goal is 49; states of a 7x7 grid lie in \[0, 49\)"),
        (dict(noise=0.3, cost_cells=[3, 60]), ValueError, r"cost_cells\[1\] is 60"),
        (dict(noise=0.3, size=2, cost_cells=[0, 1, 2, 3]), ValueError,
         "every state is a cost cell"),
    ],
)
def test_validation(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        gridworld(**kwargs)


def test_paper_test_noises():
    assert len(PAPER_TEST_NOISES) == 10 and PAPER_TEST_NOISES[0] == 0.33994760
