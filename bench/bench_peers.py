"""safemeta_fast next to its peers on the same MDPs (pytest-benchmark).

Run: ``python -m pytest bench/bench_peers.py --benchmark-json=peers.json`` (the peers are the
optional ``bench`` extra: ``pip install -e ".[bench]"``; a missing peer is skipped).

Tasks (unconstrained solve of the reward, tol 1e-8 in max-norm):

* ``dense500``: ``RandomCMDPFamily(500, 5, base_seed=0, gamma=0.95).build([0.3, 0.3])``
  (every transition entry non-zero);
* ``grid7``: the paper's 7x7 gridworld, ``gridworld(0.3)`` (49 states, gamma 0.9);
* ``grid50``: ``gridworld(0.3, 50)`` (2,500 states, about 5 successors per pair).

Groups:

* ``mdp <task>``: :func:`safemeta_fast.solve_mdp` (auto and each method) next to
  QuantEcon's ``DiscreteDP.solve`` (value iteration, policy iteration, modified PI with
  ``epsilon = 2e-8``, i.e. values within 1e-8 like ours) and pymdptoolbox's
  ``PolicyIteration`` and ``ValueIteration``. Peers get the layout they are fastest with:
  dense arrays on ``dense500`` and ``grid7``, scipy sparse matrices on ``grid50``
  (QuantEcon's state-action-pair form; a list of per-action CSR matrices for pymdptoolbox).
  Building a peer's model is not timed (nor is building our CMDP).
* ``evaluate <task>``: exact evaluation of a random stochastic policy from nu0:
  :func:`safemeta_fast.evaluate` next to a NumPy dense solve, both with ``P_pi`` prebuilt
  (``np.linalg.solve(I - gamma P_pi, r_pi)``, the floor of a dense evaluation) and built
  from the dense tensor (``matmul``), and QuantEcon's ``evaluate_policy`` (deterministic
  policy, so the group ``evaluate-det <task>`` times ours on the same policy).
* ``lp-49``, ``lp-2500``, ``lp-500dense``: the occupancy LP re-solved on two nearby tasks
  in alternation (noise 0.30/0.31, or family parameters (0.30, 0.30)/(0.31, 0.31)):
  :func:`safemeta_fast.solve_lp` with its default choice, with Clarabel, and a fresh
  ``scipy.optimize.linprog(method="highs")``; ``lp-first-*`` times the first solve of a
  shape (empty cache: the crash basis for the default, compilation for Clarabel).

Before any timing each peer's answer is checked against ours (values to 1e-7; for
pymdptoolbox's ``ValueIteration``, whose span stop returns values without the final
correction, the returned policy must be optimal and its value error is recorded in
``extra_info``).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from safemeta_fast.envs import RandomCMDPFamily, gridworld
from safemeta_fast.evaluation import evaluate, state_values
from safemeta_fast.lp import clear_lp_cache, solve_lp
from safemeta_fast.planning import solve_mdp
from tests.strategies import random_policy

from .bench_lp import linprog_fresh

TOL = 1e-8
#: QuantEcon's epsilon-optimality: its VI and MPI values are within epsilon/2 of v*.
QE_EPSILON = 2 * TOL
_FAMILY = dict(n_states=500, n_actions=5, base_seed=0, gamma=0.95)


def _dense500(theta=(0.3, 0.3)):
    return RandomCMDPFamily(**_FAMILY).build(list(theta))


def _build(name):
    if name == "dense500":
        return _dense500()
    return gridworld(0.3, 7 if name == "grid7" else 50)


TASKS = ("dense500", "grid7", "grid50")
ROUNDS = {"dense500": 5, "grid7": 50, "grid50": 3}


@pytest.fixture(scope="module", params=TASKS)
def task(request):
    name = request.param
    M = _build(name)
    ref = solve_mdp(M, tol=1e-11, method="policy_iteration" if M.n_states <= 500 else "auto")
    return name, M, ref


def _pair_matrix(M):
    """P as a scipy CSR matrix of shape (S*A, S) (row i = s*A + a)."""
    S, A = M.n_states, M.n_actions
    return sp.csr_matrix((M.succ_prob, M.succ_next, M.succ_ptr), shape=(S * A, S))


def _sparse(name):
    return name == "grid50"


def _time(benchmark, name, fn, rounds=None):
    benchmark.pedantic(fn, rounds=rounds or ROUNDS[name], iterations=1, warmup_rounds=0)


# ---------------------------------------------------------------------------
# unconstrained solve
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["auto", "policy_iteration", "modified_policy_iteration",
                                    "value_iteration"])
def test_ours(benchmark, task, method):
    name, M, ref = task
    benchmark.group = f"mdp {name}"
    if method == "policy_iteration" and M.n_states > 500:
        pytest.skip("policy iteration's dense LU of 2,500 x 2,500 per step (about 0.3 s each)")
    res = solve_mdp(M, method=method, tol=TOL)   # warm JIT and check
    np.testing.assert_allclose(res.values, ref.values, atol=2 * TOL)
    benchmark.extra_info.update(method=res.method, path=res.path, iterations=res.iterations)
    _time(benchmark, name, lambda: solve_mdp(M, method=method, tol=TOL),
          rounds=1 if method == "value_iteration" and name == "dense500" else None)


def _quantecon_ddp(name, M):
    qe = pytest.importorskip("quantecon")
    S, A = M.n_states, M.n_actions
    if _sparse(name):
        pairs = np.arange(S * A)
        return qe.markov.DiscreteDP(M.r.ravel(), _pair_matrix(M), M.gamma,
                                    pairs // A, pairs % A)
    return qe.markov.DiscreteDP(np.asarray(M.r), np.asarray(M.P), M.gamma)


@pytest.mark.parametrize("method", ["value_iteration", "policy_iteration",
                                    "modified_policy_iteration"])
def test_quantecon(benchmark, task, method):
    name, M, ref = task
    benchmark.group = f"mdp {name}"
    ddp = _quantecon_ddp(name, M)
    # QuantEcon's default cap is 250 iterations: too few for value iteration to 2e-8
    kw = {"max_iter": 100_000}
    if method != "policy_iteration":
        kw["epsilon"] = QE_EPSILON
    res = ddp.solve(method=method, **kw)
    np.testing.assert_allclose(res.v, ref.values, atol=1e-7)
    benchmark.extra_info.update(iterations=int(res.num_iter))
    slow = name != "grid7" and method != "modified_policy_iteration"
    _time(benchmark, name, lambda: ddp.solve(method=method, **kw), rounds=1 if slow else None)


def _mdptoolbox_model(name, M):
    mdp = pytest.importorskip("mdptoolbox.mdp")
    A = M.n_actions
    if _sparse(name):
        Q = _pair_matrix(M)
        P = [sp.csr_matrix(Q[a::A]) for a in range(A)]
    else:
        P = np.ascontiguousarray(np.asarray(M.P).transpose(1, 0, 2))
    return mdp, P, np.asarray(M.r)


def _run_mdptoolbox(cls, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # sparse ">= 0" efficiency warnings in its checks
        solver = cls(*args, **kw)
        solver.run()
    return solver


@pytest.mark.parametrize("method", ["PolicyIteration", "ValueIteration"])
def test_mdptoolbox(benchmark, task, method):
    name, M, ref = task
    benchmark.group = f"mdp {name}"
    mdp, P, R = _mdptoolbox_model(name, M)
    kw = {"epsilon": TOL} if method == "ValueIteration" else {}
    cls = getattr(mdp, method)
    res = _run_mdptoolbox(cls, P, R, M.gamma, **kw)
    v = np.asarray(res.V)
    if method == "PolicyIteration":
        np.testing.assert_allclose(v, ref.values, atol=1e-7)
    else:
        # span stop without the McQueen-Porteus correction: the policy is optimal, the
        # values are not within tol; check the policy exactly and record the value error
        pi = np.zeros((M.n_states, M.n_actions))
        pi[np.arange(M.n_states), np.asarray(res.policy)] = 1.0
        np.testing.assert_allclose(state_values(M, pi).reward, ref.values, atol=1e-7)
        benchmark.extra_info["value_error"] = float(np.abs(v - ref.values).max())
    benchmark.extra_info["iterations"] = int(res.iter)
    _time(benchmark, name, lambda: _run_mdptoolbox(cls, P, R, M.gamma, **kw),
          rounds=1 if name != "grid7" else None)


# ---------------------------------------------------------------------------
# exact evaluation
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluation_task(task):
    name, M, ref = task
    pi = random_policy(np.random.default_rng(0), M.n_states, M.n_actions)
    return name, M, pi


def test_evaluate_ours(benchmark, evaluation_task):
    name, M, pi = evaluation_task
    benchmark.group = f"evaluate {name}"
    ev = evaluate(M, pi)
    benchmark.extra_info["solver"] = ev.method
    _time(benchmark, name, lambda: evaluate(M, pi), rounds=20 if name != "grid7" else 200)


@pytest.mark.parametrize("build", ["prebuilt P_pi", "matmul"])
def test_evaluate_numpy(benchmark, evaluation_task, build):
    name, M, pi = evaluation_task
    benchmark.group = f"evaluate {name}"
    if _sparse(name):
        pytest.skip("the dense tensor of the 50x50 gridworld is 200 MB; a dense solve of "
                    "2,500 states is not the NumPy way to evaluate it")
    S, g = M.n_states, M.gamma
    P, r, nu0 = np.asarray(M.P), np.asarray(M.r), np.asarray(M.nu0)
    Ppi, rpi = np.einsum("sa,sat->st", pi, P), (pi * r).sum(axis=1)
    eye = np.eye(S)
    if build == "prebuilt P_pi":
        def fn():
            return nu0 @ np.linalg.solve(eye - g * Ppi, rpi)
    else:
        def fn():
            return nu0 @ np.linalg.solve(eye - g * np.matmul(pi[:, None, :], P)[:, 0],
                                         (pi * r).sum(axis=1))
    assert fn() == pytest.approx(evaluate(M, pi).reward, rel=1e-10)
    _time(benchmark, name, fn, rounds=20 if name != "grid7" else 200)


def test_evaluate_det_ours(benchmark, task):
    name, M, ref = task
    benchmark.group = f"evaluate-det {name}"
    evaluate(M, ref.policy)
    _time(benchmark, name, lambda: state_values(M, ref.policy),
          rounds=20 if name != "grid7" else 200)


def test_evaluate_det_quantecon(benchmark, task):
    name, M, ref = task
    benchmark.group = f"evaluate-det {name}"
    ddp = _quantecon_ddp(name, M)
    sigma = ref.policy.argmax(axis=1)
    np.testing.assert_allclose(ddp.evaluate_policy(sigma), ref.values, atol=1e-7)
    _time(benchmark, name, lambda: ddp.evaluate_policy(sigma),
          rounds=20 if name != "grid7" else 200)


# ---------------------------------------------------------------------------
# occupancy LP: the default choice next to the other back ends
# ---------------------------------------------------------------------------

LP_GROUPS = {"lp-49": "grid7", "lp-2500": "grid50", "lp-500dense": "dense500"}


def _lp_pair(group):
    name = LP_GROUPS[group]
    if name == "dense500":
        return [_dense500((0.30, 0.30)), _dense500((0.31, 0.31))]
    size = 7 if name == "grid7" else 50
    return [gridworld(0.30, size), gridworld(0.31, size)]


_LP_PATHS = {
    "default": lambda M: solve_lp(M).reward,
    "CLARABEL": lambda M: solve_lp(M, solver="CLARABEL").reward,
    "linprog": linprog_fresh,
}
_LP_ROUNDS = {"lp-49": 30, "lp-2500": 4, "lp-500dense": 2}


@pytest.fixture(scope="module")
def lp_reference():
    """Optimal values of every LP task (by the default path), checked against linprog."""
    out = {}
    for group in LP_GROUPS:
        clear_lp_cache()
        tasks = _lp_pair(group)
        out[group] = (tasks, [solve_lp(M).reward for M in tasks])
    return out


@pytest.mark.parametrize("path", list(_LP_PATHS))
@pytest.mark.parametrize("group", list(LP_GROUPS))
def test_lp_resolve(benchmark, lp_reference, group, path):
    benchmark.group = group
    if path == "linprog" and group == "lp-500dense":
        pytest.skip("a cold simplex on the dense S=500 LP takes over a minute per solve "
                    "(65 s measured for HiGHS cold); see setup_notes.md")
    tasks, values = lp_reference[group]
    fn = _LP_PATHS[path]
    clear_lp_cache()
    for M, v in zip(tasks, values):   # check (and compile / find the first basis)
        assert fn(M) == pytest.approx(v, rel=1e-6)
    if path == "default":
        benchmark.extra_info["solver"] = solve_lp(tasks[0]).solver
    cycle = itertools.cycle(tasks)
    benchmark.pedantic(lambda: fn(next(cycle)), rounds=_LP_ROUNDS[group], iterations=1)


@pytest.mark.parametrize("path", ["default", "CLARABEL"])
@pytest.mark.parametrize("group", list(LP_GROUPS))
def test_lp_first_solve(benchmark, lp_reference, group, path):
    benchmark.group = f"lp-first-{group[3:]}"
    tasks, values = lp_reference[group]
    fn = _LP_PATHS[path]

    def first():
        clear_lp_cache()
        return fn(tasks[0])

    assert first() == pytest.approx(values[0], rel=1e-6)
    benchmark.pedantic(first, rounds=2 if group != "lp-49" else 5, iterations=1)
