"""Benchmarks of the occupancy LP oracle O_l (safemeta_fast.lp).

Run: ``pytest bench/bench_lp.py --benchmark-min-rounds=3``.

Every benchmark solves the same re-solve sequence: two nearby tasks of one family
(gridworld noise 0.30 and 0.31) in alternation, so each call changes the data like a
training loop does. Groups ``lp-49`` (7x7 gridworld, 196 pairs) and ``lp-2500`` (50x50,
10,000 pairs) put side by side:

* ``solve_lp`` default path (persistent HiGHS model filled from the successor rows,
  started from the task's own crash basis, so history-independent; includes the exact
  evaluation that checks every answer), the same with ``reuse_basis=True`` (the previous
  optimal basis: the cost of history independence is the ratio of the two) and
  ``solve_lp`` with Clarabel (compiled cvxpy problem);
* the compiled cvxpy problem re-solved with HiGHS (``backend="cvxpy"``);
* a direct ``highspy`` call on the same data, built from scratch each time (cold);
* a fresh ``scipy.optimize.linprog(method="highs")`` (the twin).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from safemeta_fast.envs import gridworld
from safemeta_fast.lp import clear_lp_cache, solve_lp

SIZES = {"lp-49": 7, "lp-2500": 50}
NOISES = (0.30, 0.31)


def _tasks(size):
    return [gridworld(n, size) for n in NOISES]


def _sparse_lp(M):
    """Sparse (A_eq, b_eq, A_ub, b_ub, c) of the occupancy LP from the successor rows."""
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    n, g = S * A, M.gamma
    pairs = np.repeat(np.arange(n), np.diff(M.succ_ptr))
    A_eq = (sp.csr_array((np.ones(n), (np.repeat(np.arange(S), A), np.arange(n))), shape=(S, n))
            - sp.csr_array((g * M.succ_prob, (M.succ_next, pairs)), shape=(S, n)))
    A_ub = M.c.reshape(n, K).T / (1 - g)
    return A_eq.tocsr(), (1 - g) * M.nu0, A_ub, M.cost_limit, -M.r.ravel() / (1 - g)


def linprog_fresh(M):
    A_eq, b_eq, A_ub, b_ub, c = _sparse_lp(M)
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    return -res.fun


def highspy_cold(M):
    import highspy as hp

    A_eq, b_eq, A_ub, b_ub, c = _sparse_lp(M)
    Am = sp.vstack([A_eq, sp.csr_array(A_ub)]).tocsc()
    lp = hp.HighsLp()
    lp.num_col_, lp.num_row_ = Am.shape[1], Am.shape[0]
    lp.col_cost_ = c
    lp.col_lower_ = np.zeros(Am.shape[1])
    lp.col_upper_ = np.full(Am.shape[1], hp.kHighsInf)
    lp.row_lower_ = np.concatenate([b_eq, np.full(len(b_ub), -hp.kHighsInf)])
    lp.row_upper_ = np.concatenate([b_eq, b_ub])
    lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
    lp.a_matrix_.start_ = Am.indptr
    lp.a_matrix_.index_ = Am.indices
    lp.a_matrix_.value_ = Am.data
    h = hp.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(lp)
    h.run()
    return -h.getInfo().objective_function_value


def _run(benchmark, group, fn, rounds=None):
    benchmark.group = group
    tasks = itertools.cycle(_tasks(SIZES[group]))
    fn(next(tasks))                                 # warm: compile / first basis
    fn(next(tasks))
    if rounds is None:
        benchmark(lambda: fn(next(tasks)))
    else:
        benchmark.pedantic(lambda: fn(next(tasks)), rounds=rounds, iterations=1)


@pytest.mark.parametrize("group", list(SIZES))
def test_solve_lp_highs_crash(benchmark, group):
    clear_lp_cache()
    _run(benchmark, group, lambda M: solve_lp(M, solver="HIGHS").reward)


@pytest.mark.parametrize("group", list(SIZES))
def test_solve_lp_highs_reuse_basis(benchmark, group):
    clear_lp_cache()
    _run(benchmark, group, lambda M: solve_lp(M, solver="HIGHS", reuse_basis=True).reward)


@pytest.mark.parametrize("group", list(SIZES))
def test_solve_lp_clarabel(benchmark, group):
    clear_lp_cache()
    _run(benchmark, group, lambda M: solve_lp(M, solver="CLARABEL").reward,
         rounds=None if group == "lp-49" else 5)


@pytest.mark.parametrize("group", ["lp-49"])
def test_cvxpy_highs_resolve(benchmark, group):
    clear_lp_cache()
    _run(benchmark, group,
         lambda M: solve_lp(M, solver="HIGHS", backend="cvxpy").reward)


@pytest.mark.parametrize("group", list(SIZES))
def test_highspy_direct_cold(benchmark, group):
    _run(benchmark, group, highspy_cold, rounds=None if group == "lp-49" else 3)


@pytest.mark.parametrize("group", list(SIZES))
def test_linprog_fresh_twin(benchmark, group):
    _run(benchmark, group, linprog_fresh, rounds=None if group == "lp-49" else 3)


@pytest.mark.parametrize("group", list(SIZES))
def test_paths_agree(group):
    """Not timed: every benchmarked path returns the same optimum."""
    clear_lp_cache()
    for M in _tasks(SIZES[group]):
        ref = linprog_fresh(M)
        assert solve_lp(M, solver="HIGHS").reward == pytest.approx(ref, rel=1e-7)
        assert solve_lp(M, solver="CLARABEL").reward == pytest.approx(ref, rel=1e-5)
        assert highspy_cold(M) == pytest.approx(ref, rel=1e-7)
