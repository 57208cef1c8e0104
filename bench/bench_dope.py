"""Benchmarks of DOPE+ (safemeta_fast.baselines.dope_plus, kernels/dope.py).

Run: ``pytest bench/bench_dope.py --benchmark-min-rounds=3``.

Group ``dope-lp-49``: the per-episode LP re-solve on the 7x7 gridworld (noise 0.33994760)
after the reference warm-up of 18,000 episodes. Every call alternates between the LP
data of two consecutive episodes (one more episode of counts), like the run does:

* ``OptimisticLP`` back ends ``highs`` (persistent model, in-place coefficient updates,
  HiGHS's own basis), ``cvxpy`` (compiled DPP problem) and ``linprog`` (the twin: the
  reference's cold scipy call);
* direct highspy: the whole model passed again with the previous optimal basis
  (``direct-warm``, the 2x target) and from scratch (``direct-cold``).

Group ``dope-count``: the counting kernel vs its NumPy twin (200 episodes of pi_s).
Group ``dope-run``: one full 40,000-episode DOPE+ run (the reference took 359 s/run).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from safemeta_fast.kernels.dope import count_episodes
from safemeta_fast.kernels.trajectory import csr_cdf, policy_cdf

from safemeta_fast import primal_dual
from safemeta_fast.baselines.dope_plus import (
    OptimisticLP,
    dope_plus,
    dope_plus_cost_bonus,
    estimate_model,
    lp_data,
    optimistic_reward,
    reward_cap_value,
)
from safemeta_fast.envs import gridworld
from safemeta_fast.lp import quiet_highs

NOISE = 0.33994760


def _setup():
    M = gridworld(NOISE)
    pi_s = np.array(primal_dual(gridworld(0.4), beta=0.1).policy)
    S, A = M.n_states, M.n_actions
    n_sa = np.zeros(S * A, np.int64)
    n_succ = np.zeros(M.succ_next.size, np.int64)
    st = np.empty(601, np.int64)
    ac = np.empty(601, np.int64)
    nu_cdf = policy_cdf(np.asarray(M.nu0)[None, :])[0]
    succ_cdf = csr_cdf(M.succ_ptr, M.succ_prob)
    pairs = np.repeat(np.arange(S * A), np.diff(M.succ_ptr))
    datas = []
    for first, n in ((0, 18_000), (18_000, 1)):
        count_episodes(10, first, n, policy_cdf(pi_s), nu_cdf, M.succ_ptr, M.succ_next, succ_cdf,
                       600, M.absorbing, n_sa, n_succ, st, ac)
        N = np.zeros((S * A, S))
        N[pairs, M.succ_next] = n_succ
        est = estimate_model(n_sa.reshape(S, A), N.reshape(S, A, S), 1e-4, 1e-8)
        conf = dope_plus_cost_bonus(est, M.gamma, 1e-4, 40_000)
        rt = optimistic_reward(M.r, conf, 100.0, reward_cap_value("reference", M.r))
        datas.append(lp_data(M, est, conf, rt))
    return M, pi_s, datas


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _alternate(datas):
    return itertools.cycle(datas)


@pytest.mark.benchmark(group="dope-lp-49")
@pytest.mark.parametrize("backend", ["highs", "cvxpy", "linprog"])
def test_lp_backend(benchmark, setup, backend):
    _, _, datas = setup
    lp = OptimisticLP(49, 4, 1, backend)
    it = _alternate(datas)
    lp.solve(next(it))
    x = benchmark(lambda: lp.solve(next(it)))
    assert x is not None


def _highs_lp(hp, d):
    V = np.vstack([d.G, d.F])
    cols, rows = np.nonzero(V.T)
    start = np.zeros(V.shape[1] + 1, dtype=np.int32)
    np.cumsum(np.bincount(cols, minlength=V.shape[1]), out=start[1:])
    lp = hp.HighsLp()
    lp.num_col_, lp.num_row_ = V.shape[1], V.shape[0]
    lp.sense_ = hp.ObjSense.kMaximize
    lp.col_cost_ = d.obj
    lp.col_lower_ = np.zeros(V.shape[1])
    lp.col_upper_ = np.full(V.shape[1], hp.kHighsInf)
    lp.row_lower_ = np.concatenate([np.full(d.b.size, -hp.kHighsInf), d.lo])
    lp.row_upper_ = np.concatenate([d.b, d.hi])
    lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start
    lp.a_matrix_.index_ = rows.astype(np.int32)
    lp.a_matrix_.value_ = V.T[cols, rows]
    return lp


@pytest.mark.benchmark(group="dope-lp-49")
@pytest.mark.parametrize("warm", [True, False], ids=["direct-warm", "direct-cold"])
def test_lp_direct_highs(benchmark, setup, warm):
    import highspy as hp

    _, _, datas = setup
    h = quiet_highs(hp)
    h.setOptionValue("output_flag", False)
    it = _alternate(datas)
    state = {"basis": None}

    def solve():
        h.clearSolver()
        h.passModel(_highs_lp(hp, next(it)))
        if warm and state["basis"] is not None:
            h.setBasis(state["basis"])
        h.run()
        if warm:
            state["basis"] = h.getBasis()
        return h.getModelStatus().name

    solve()
    assert benchmark(solve) == "kOptimal"


def _count_twin(M, pi, seed, n):
    """NumPy twin of the counting kernel (the one in tests/test_dope.py)."""
    from tests.test_dope import twin_counts

    return twin_counts(M, pi, seed, 0, n, 600)


@pytest.mark.benchmark(group="dope-count")
@pytest.mark.parametrize("impl", ["kernel", "twin"])
def test_count(benchmark, setup, impl):
    M, pi_s, _ = setup
    if impl == "twin":
        benchmark.pedantic(_count_twin, args=(M, pi_s, 3, 200), rounds=3)
        return
    S, A = M.n_states, M.n_actions
    pc, nc, sc = (policy_cdf(pi_s), policy_cdf(np.asarray(M.nu0)[None, :])[0],
                  csr_cdf(M.succ_ptr, M.succ_prob))
    st = np.empty(601, np.int64)
    ac = np.empty(601, np.int64)

    def run():
        n_sa = np.zeros(S * A, np.int64)
        n_succ = np.zeros(M.succ_next.size, np.int64)
        return count_episodes(3, 0, 200, pc, nc, M.succ_ptr, M.succ_next, sc, 600, M.absorbing,
                              n_sa, n_succ, st, ac)

    run()
    benchmark(run)


@pytest.mark.benchmark(group="dope-run")
def test_full_run(benchmark, setup):
    M, pi_s, _ = setup
    dope_plus(M, pi_s, n_episodes=110, warmup=100, seed=0)   # warm JIT and caches
    log = benchmark.pedantic(dope_plus, args=(M, pi_s), kwargs=dict(seed=10), rounds=1,
                             iterations=1)
    assert log.n_episodes == 40_000
