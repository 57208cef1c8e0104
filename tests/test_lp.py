"""Tests of the occupancy-measure LP oracle O_l (safemeta_fast.lp)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from scipy.optimize import linprog

from safemeta_fast import CMDP, InfeasibleError, OracleError
from safemeta_fast import lp as lpmod
from safemeta_fast.envs import gridworld
from safemeta_fast.lp import (
    HighsOccupancyLP,
    LPResult,
    OccupancyLP,
    clear_lp_cache,
    min_cost,
    solve_lp,
)
from safemeta_fast.lp import oracle as lporacle
from tests.strategies import cmdps, random_cmdp
from tests.twins import evaluate_dense

SOLVERS = ["HIGHS", "CLARABEL"]
# HiGHS is a simplex (vertex, ~1e-9); Clarabel an interior point (~1e-7 relative gaps).
TOL = {"HIGHS": 1e-7, "CLARABEL": 2e-5}


# ---------------------------------------------------------------------------
# helpers: an independent LP (scipy) and certificates
# ---------------------------------------------------------------------------

def linprog_twin(M: CMDP, b=None):
    """Dense occupancy LP through scipy.optimize.linprog (HiGHS): (status, value, mu)."""
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    g = M.gamma
    P = M.P.reshape(S * A, S)
    E = np.kron(np.eye(S), np.ones((1, A)))
    A_eq = E - g * P.T
    A_ub = M.c.reshape(S * A, K).T / (1 - g)
    b_ub = M.cost_limit if b is None else b
    res = linprog(-M.r.ravel() / (1 - g), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq,
                  b_eq=(1 - g) * M.nu0, bounds=(0, None), method="highs")
    return res.status, (-res.fun if res.status == 0 else None), res.x


def flow_residual(M: CMDP, mu: np.ndarray) -> np.ndarray:
    inflow = M.gamma * np.einsum("sat,sa->t", M.P, mu)
    return mu.sum(axis=1) - inflow - (1 - M.gamma) * M.nu0


def check_certificates(M: CMDP, res: LPResult, tol: float, margin=0.0):
    mu = res.occupancy
    scale = max(1.0, np.abs(M.r).max(), np.abs(M.c).max()) / (1 - M.gamma)
    # flow conservation and normalisation
    assert np.abs(flow_residual(M, mu)).max() <= tol
    assert abs(mu.sum() - 1.0) <= tol * M.n_states
    assert (mu >= 0).all()
    # cost feasibility
    b = M.cost_limit - margin
    assert np.all(res.cost <= b + tol * scale)
    # duals >= 0 and complementary slackness
    assert np.all(res.duals >= -tol * scale)
    slack = b - res.cost
    assert np.all(np.abs(res.duals * slack) <= tol * scale * max(1.0, res.duals.max()))
    # policy: rows on the simplex
    np.testing.assert_allclose(res.policy.sum(axis=1), 1.0, atol=1e-12)
    # LP value = exact value of the extracted policy, and same occupancy
    v_r, v_c, mu_pi = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, res.policy)
    assert v_r == pytest.approx(res.reward, abs=tol * scale * 10)
    np.testing.assert_allclose(v_c, res.cost, atol=tol * scale * 10)
    np.testing.assert_allclose(mu_pi, mu, atol=tol * 10)


# ---------------------------------------------------------------------------
# check values (BASELINES.md section 1)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("noise, value", [(0.1, 59.736929), (0.3, 51.962821), (0.4, 44.915449)])
def test_gridworld_lp_optimum(noise, value, solver):
    M = gridworld(noise)
    res = solve_lp(M, solver=solver)
    assert res.reward == pytest.approx(value, abs=1e-5)
    assert res.status == "optimal" and res.solver == solver
    check_certificates(M, res, TOL[solver])
    # the constraint binds at these noises
    assert res.cost[0] == pytest.approx(1.5, abs=1e-5)
    assert res.duals[0] > 0.01


@pytest.mark.parametrize("noise, value", [
    (0.1, 0.1655), (0.3, 0.7561), (0.4, 1.2656), (0.43, 1.4594), (0.44, 1.5289), (0.5, 2.0042),
])
def test_gridworld_min_cost(noise, value):
    M = gridworld(noise)
    got = min_cost(M, 0)
    assert isinstance(got, float)
    assert got == pytest.approx(value, abs=1e-4)
    np.testing.assert_allclose(min_cost(M, solver="CLARABEL"), [value], atol=1e-4)
    # the returned policy achieves it exactly
    res = solve_lp(M, objective="cost", k=0)
    _, v_c, _ = evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, res.policy)
    assert v_c[0] == pytest.approx(got, abs=1e-8)
    assert res.objective == "cost" and res.cost_index == 0
    np.testing.assert_array_equal(res.duals, [0.0])


def test_gridworld_unconstrained_optimum():
    M = gridworld(0.1).replace(cost_limit=[1e6])
    res = solve_lp(M)
    assert res.reward == pytest.approx(59.762607, abs=1e-5)
    assert res.cost[0] == pytest.approx(3.304, abs=1e-3)
    assert res.duals[0] == pytest.approx(0.0, abs=1e-9)


def test_two_state_closed_form(two_state):
    # staying with probability p in state 0: V_c = p/(1-p/2), V_r = (1+p)/(2-p); with limit
    # b in [0, 2] the optimum is V_r = 0.5 + 0.75 b, so the multiplier is 0.75.
    for b in (0.4, 1.0, 1.9):
        M = two_state.replace(cost_limit=[b])
        for solver in SOLVERS:
            res = solve_lp(M, solver=solver)
            assert res.reward == pytest.approx(0.5 + 0.75 * b, abs=1e-6)
            assert res.duals[0] == pytest.approx(0.75, abs=1e-5)
            p = b / (1 + b / 2)
            np.testing.assert_allclose(res.policy[0], [p, 1 - p], atol=1e-5)
            check_certificates(M, res, TOL[solver])
    # limit 2 does not bind at the unconstrained optimum (stay forever: V_r = V_c = 2)
    res = solve_lp(two_state)
    assert res.reward == pytest.approx(2.0, abs=1e-9)
    # state 1 is never reached: uniform policy there
    np.testing.assert_array_equal(res.policy[1], [0.5, 0.5])


# ---------------------------------------------------------------------------
# against scipy's linprog and brute force
# ---------------------------------------------------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=cmdps(max_states=6, max_actions=3, max_constraints=2))
def test_against_linprog(M):
    status, value, _ = linprog_twin(M)
    if status == 2:
        with pytest.raises(InfeasibleError) as info:
            solve_lp(M, solver="HIGHS")
        assert np.any(info.value.min_cost > M.cost_limit - 1e-7) or M.n_constraints > 1
        return
    assert status == 0
    res = solve_lp(M, solver="HIGHS")
    assert res.reward == pytest.approx(value, abs=1e-7 * max(1.0, abs(value)))
    check_certificates(M, res, 1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_against_linprog_clarabel_and_cvxpy_highs(seed):
    rng = np.random.default_rng(seed)
    M = random_cmdp(rng, 5, 3, K=2, gamma=0.8, sparsity=0.5)
    status, value, _ = linprog_twin(M)
    assert status == 0
    for solver, backend in (("CLARABEL", "cvxpy"), ("HIGHS", "cvxpy"), ("HIGHS", "highspy")):
        res = solve_lp(M, solver=solver, backend=backend)
        assert res.backend == backend
        assert res.reward == pytest.approx(value, abs=TOL[solver] * 10)
        check_certificates(M, res, TOL[solver])


@pytest.mark.parametrize("seed", range(8))
def test_unconstrained_against_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    S, A = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    M = random_cmdp(rng, S, A, K=1, gamma=float(rng.uniform(0, 0.95)),
                    sparsity=0.5, cost_limit=[1e9])
    best = -np.inf
    for acts in itertools.product(range(A), repeat=S):
        pi = np.zeros((S, A))
        pi[np.arange(S), acts] = 1.0
        best = max(best, evaluate_dense(M.P, M.r, M.c, M.nu0, M.gamma, pi)[0])
    for solver in SOLVERS:
        assert solve_lp(M, solver=solver).reward == pytest.approx(best, abs=TOL[solver] * 10)


# ---------------------------------------------------------------------------
# margin, duals as sensitivities, K = 2
# ---------------------------------------------------------------------------

def test_margin_tightens_and_relaxes(grid03):
    base = solve_lp(grid03)
    values = []
    for m in (-0.5, -0.1, 0.0, 0.1, 0.5):
        res = solve_lp(grid03, margin=m)
        np.testing.assert_allclose(res.cost_limit, [1.5 - m])
        assert res.cost[0] <= 1.5 - m + 1e-9
        assert res.cost[0] == pytest.approx(1.5 - m, abs=1e-7)   # binds throughout
        check_certificates(grid03, res, 1e-7, margin=m)
        values.append(res.reward)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[2] == pytest.approx(base.reward, abs=1e-12)
    # a margin per constraint is accepted too
    assert solve_lp(grid03, margin=np.array([0.1])).reward == pytest.approx(values[3], abs=1e-9)


def test_dual_is_the_sensitivity_of_the_optimum(grid03):
    h = 1e-4
    res = solve_lp(grid03)
    up = solve_lp(grid03, margin=-h).reward
    down = solve_lp(grid03, margin=h).reward
    assert (up - down) / (2 * h) == pytest.approx(res.duals[0], rel=1e-4)


def _two_constraint_grid(noise: float, b2: float) -> CMDP:
    M = gridworld(noise)
    S = M.n_states
    c2 = np.zeros((S, 4))
    c2[np.arange(S) % 7 == 0] = 1.0      # a second, soft cost on the left column
    c = np.concatenate([np.array(M.c), c2[:, :, None]], axis=2)
    return M.replace(c=c, cost_limit=[1.5, b2])


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_constraints(solver):
    M = _two_constraint_grid(0.2, 0.35)
    status, value, _ = linprog_twin(M)
    assert status == 0
    res = solve_lp(M, solver=solver)
    assert res.cost.shape == (2,) and res.duals.shape == (2,)
    assert res.reward == pytest.approx(value, abs=TOL[solver] * 10)
    check_certificates(M, res, TOL[solver])
    # relaxing the second limit cannot hurt, and its dual is its sensitivity
    loose = solve_lp(M.replace(cost_limit=[1.5, 10.0]), solver=solver)
    assert loose.reward >= res.reward - 1e-7
    np.testing.assert_allclose(min_cost(M), [min_cost(M, 0), min_cost(M, 1)])


def test_highs_and_clarabel_agree():
    for M in (gridworld(0.25), _two_constraint_grid(0.15, 0.35)):
        a = solve_lp(M, solver="HIGHS")
        b = solve_lp(M, solver="CLARABEL")
        assert a.reward == pytest.approx(b.reward, rel=1e-6)
        np.testing.assert_allclose(a.cost, b.cost, atol=1e-5)
        np.testing.assert_allclose(a.duals, b.duals, rtol=1e-3, atol=1e-5)
        # the optimal occupancy need not be unique (ties between paths), but both
        # extracted policies are exactly optimal and feasible
        for res, tol in ((a, TOL["HIGHS"]), (b, TOL["CLARABEL"])):
            check_certificates(M, res, tol)


# ---------------------------------------------------------------------------
# compiled-once behaviour: cache, warm starts, changing supports
# ---------------------------------------------------------------------------

def test_repeated_resolves_match_fresh_builds():
    clear_lp_cache()
    rng = np.random.default_rng(3)
    noises = rng.uniform(0.02, 0.43, size=40)
    for j, noise in enumerate(noises):
        M = gridworld(float(noise))
        res = solve_lp(M, solver="HIGHS", reuse_basis=True)
        assert res.cache_hit == (j > 0)
        assert res.warm_started == (j > 0)
        fresh = HighsOccupancyLP(M).solve(M, warm_start=False)
        assert not fresh.warm_started
        assert res.reward == pytest.approx(fresh.reward, abs=1e-9)
        np.testing.assert_allclose(res.cost, fresh.cost, atol=1e-9)
        np.testing.assert_allclose(res.duals, fresh.duals, rtol=1e-6, atol=1e-9)
        assert res.cost[0] <= 1.5 + 1e-9
    # the last answer is a true optimum, not an artefact of the warm basis
    status, value, _ = linprog_twin(M)
    assert value == pytest.approx(res.reward, abs=1e-8)


def test_repeated_resolves_cvxpy_backend():
    clear_lp_cache()
    for j, noise in enumerate(np.linspace(0.05, 0.42, 12)):
        M = gridworld(float(noise))
        for solver in SOLVERS:
            res = solve_lp(M, solver=solver, backend="cvxpy", reuse_basis=True)
            assert res.cache_hit == (j > 0 or solver == "CLARABEL")
            fresh = OccupancyLP(M).solve(M, solver=solver, warm_start=False)
            assert res.reward == pytest.approx(fresh.reward, abs=TOL[solver])


def test_different_support_is_never_mixed_up():
    clear_lp_cache()
    noisy = gridworld(0.2)
    exact = gridworld(0.0)           # deterministic moves: a smaller support
    assert noisy.nnz != exact.nnz
    for backend, solver in (("highspy", "HIGHS"), ("cvxpy", "CLARABEL")):
        r1 = solve_lp(noisy, solver=solver, backend=backend)
        r2 = solve_lp(exact, solver=solver, backend=backend)
        r3 = solve_lp(noisy, solver=solver, backend=backend)
        assert not r2.cache_hit and r3.cache_hit
        assert r1.reward == pytest.approx(r3.reward, abs=TOL[solver])
        for M, res in ((noisy, r1), (exact, r2)):
            assert res.reward == pytest.approx(linprog_twin(M)[1], abs=TOL[solver] * 10)
    # a compiled LP refuses a task with another support
    with pytest.raises(ValueError, match="support"):
        HighsOccupancyLP(noisy).solve(exact)
    with pytest.raises(ValueError, match="support"):
        OccupancyLP(noisy).solve(exact)


def test_cache_is_bounded():
    clear_lp_cache()
    for size in range(2, 2 + lporacle._CACHE_SIZE + 3):
        solve_lp(gridworld(0.1, size), solver="HIGHS")
    assert len(lporacle._CACHE) == lporacle._CACHE_SIZE


def test_failed_warm_start_is_retried_cold(grid03, monkeypatch):
    clear_lp_cache()
    expected = solve_lp(grid03, solver="HIGHS", reuse_basis=True)
    real_run = HighsOccupancyLP._run
    calls = []

    def flaky(self, lp, basis):
        calls.append(basis is not None)
        return "kSolveError" if basis is not None else real_run(self, lp, basis)

    monkeypatch.setattr(HighsOccupancyLP, "_run", flaky)
    res = solve_lp(grid03, solver="HIGHS", reuse_basis=True)
    assert calls == [True, False]
    assert not res.warm_started
    assert res.reward == pytest.approx(expected.reward, abs=1e-9)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_infeasible_task_reports_min_cost():
    M = gridworld(0.5)
    for solver in SOLVERS:
        with pytest.raises(InfeasibleError, match=r"2\.004") as info:
            solve_lp(M, solver=solver)
        assert info.value.min_cost[0] == pytest.approx(2.0042, abs=1e-4)
        np.testing.assert_array_equal(info.value.cost_limit, [1.5])


def test_margin_can_make_a_task_infeasible(grid03):
    with pytest.raises(InfeasibleError, match="margin 1") as info:
        solve_lp(grid03, margin=1.0)
    np.testing.assert_allclose(info.value.cost_limit, [0.5])
    assert info.value.min_cost[0] == pytest.approx(0.7561, abs=1e-4)


def test_jointly_infeasible_limits():
    M = _two_constraint_grid(0.2, 0.35)
    m0, m1 = min_cost(M)
    # each limit reachable alone, both not: ask for the first cost near its minimum too
    tight = M.replace(cost_limit=[m0 + 1e-3, m1 + 1e-3])
    status, _, _ = linprog_twin(tight)
    assert status == 2
    with pytest.raises(InfeasibleError, match="not all of them at once") as info:
        solve_lp(tight)
    np.testing.assert_allclose(info.value.min_cost, [m0, m1], atol=1e-8)


@pytest.mark.parametrize("backend, solver, cls, status", [
    ("highspy", "HIGHS", HighsOccupancyLP, "kIterationLimit"),
    ("cvxpy", "CLARABEL", OccupancyLP, "user_limit"),
])
def test_solver_failure_raises_oracle_error(grid03, monkeypatch, backend, solver, cls, status):
    monkeypatch.setattr(cls, "_run", lambda self, *a: status)
    with pytest.raises(OracleError, match=status) as info:
        solve_lp(grid03, solver=solver, backend=backend)
    assert info.value.status == status


def test_validation(grid03):
    with pytest.raises(TypeError, match="CMDP"):
        solve_lp(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="margin"):
        solve_lp(grid03, margin=True)
    with pytest.raises(TypeError, match="margin"):
        solve_lp(grid03, margin="0.1")
    with pytest.raises(ValueError, match="margin is nan"):
        solve_lp(grid03, margin=float("nan"))
    with pytest.raises(ValueError, match=r"margin\[0\] is inf"):
        solve_lp(grid03, margin=np.array([np.inf]))
    with pytest.raises(ValueError, match=r"shape \(K,\) = \(1,\)"):
        solve_lp(grid03, margin=[0.1, 0.2])
    with pytest.raises(ValueError, match="'GUROBI'"):
        solve_lp(grid03, solver="GUROBI")
    with pytest.raises(TypeError, match="solver"):
        solve_lp(grid03, solver=3)
    with pytest.raises(ValueError, match="objective"):
        solve_lp(grid03, objective="regret")
    with pytest.raises(ValueError, match=r"k is 1; constraint indices lie in \[0, 1\)"):
        solve_lp(grid03, objective="cost", k=1)
    with pytest.raises(TypeError, match="k must be an integer"):
        min_cost(grid03, 0.5)
    with pytest.raises(ValueError, match="backend"):
        solve_lp(grid03, backend="gurobipy")
    with pytest.raises(ValueError, match="runs only solver 'HIGHS'"):
        solve_lp(grid03, solver="CLARABEL", backend="highspy")
    with pytest.raises(TypeError, match="warm_start"):
        solve_lp(grid03, warm_start="yes")
    with pytest.raises(TypeError, match="CMDP"):
        HighsOccupancyLP(grid03).solve("grid")


def test_solver_name_is_case_insensitive_and_default_by_start(grid03):
    clear_lp_cache()
    assert solve_lp(grid03, solver="clarabel").solver == "CLARABEL"
    assert solve_lp(grid03).solver == "HIGHS"          # 196 pairs
    big = gridworld(0.2, size=13)                      # 676 pairs
    assert big.n_states * big.n_actions > lpmod.AUTO_SIMPLEX_MAX_PAIRS
    first, again = solve_lp(big), solve_lp(big, reuse_basis=True)
    # HiGHS from a basis at any size: the task's crash basis by default, the previous
    # optimum on request
    assert (first.solver, first.start, again.start) == ("HIGHS", "crash", "warm")
    assert again.warm_started and not first.warm_started
    assert solve_lp(big).start == "crash"
    # a cold start above the size limit goes to the interior-point solver
    cold = solve_lp(big, warm_start=False)
    assert (cold.solver, cold.start) == ("CLARABEL", "cold")
    assert first.reward == pytest.approx(cold.reward, rel=1e-6)


@pytest.mark.parametrize("objective", ["reward", "cost"])
def test_crash_basis_start_matches_cold_solve(objective):
    from safemeta_fast.envs import RandomCMDPFamily

    tasks = [gridworld(0.3, 10), gridworld(0.4),
             RandomCMDPFamily(40, 3, base_seed=2, gamma=0.95).build([0.2, 0.7])]
    for M in tasks:
        clear_lp_cache()
        crash = solve_lp(M, objective=objective)
        assert crash.start == "crash"
        cold = HighsOccupancyLP(M).solve(M, warm_start=False, objective=objective)
        assert cold.start == "cold"
        assert crash.reward == pytest.approx(cold.reward, abs=1e-8)
        np.testing.assert_allclose(crash.cost, cold.cost, atol=1e-8)
        check_certificates(M, crash, TOL["HIGHS"])


def test_crash_basis_of_an_optimal_unconstrained_policy_needs_no_pivot(grid03):
    from safemeta_fast.planning import solve_mdp

    lp = HighsOccupancyLP(grid03)
    sigma = solve_mdp(grid03, objective="cost").policy.argmax(axis=1)
    lp._h.setOptionValue("simplex_iteration_limit", 0)   # 0 pivots allowed
    status, mu, _, start = lp.solve_raw(grid03, -grid03.c[:, :, 0].ravel() / (1 - grid03.gamma),
                                        np.full(1, np.inf), crash_policy=lambda: sigma)
    assert (status, start) == ("optimal", "crash")
    assert mu.reshape(49, 4).sum(axis=1) @ np.ones(49) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"sigma must hold S = 49 action indices in \[0, 4\)"):
        lp.crash_basis(np.full(49, 4))


def test_result_is_frozen(grid03):
    res = solve_lp(grid03)
    with pytest.raises(AttributeError):
        res.reward = 0.0
    for name in ("policy", "occupancy", "cost", "duals", "cost_limit"):
        arr = getattr(res, name)
        assert not arr.flags.writeable
    assert res.policy.shape == (49, 4) and res.occupancy.shape == (49, 4)
    assert res.solve_time > 0


@pytest.mark.slow
def test_large_grid_repeated_resolves():
    """40 re-solves at 2,500 states: warm HiGHS and Clarabel agree with each other."""
    clear_lp_cache()
    rng = np.random.default_rng(11)
    for noise in rng.uniform(0.05, 0.4, size=40):
        M = gridworld(float(noise), size=50)
        a = solve_lp(M, solver="HIGHS")
        b = solve_lp(M, solver="CLARABEL")
        assert a.reward == pytest.approx(b.reward, rel=1e-5)
        assert a.cost[0] <= 1.5 + 1e-7


# ---------------------------------------------------------------------------
# issue 10: answers are checked by exact evaluation and do not depend on history
# ---------------------------------------------------------------------------

def test_same_task_same_answer_whatever_was_solved_before():
    target = gridworld(0.3)
    histories = [[], [0.1], [0.4], [0.2, 0.05], [0.38, 0.35, 0.01], [0.0], [0.31]]
    answers = set()
    for history in histories:
        clear_lp_cache()
        for noise in history:
            solve_lp(gridworld(noise))
        res = solve_lp(target)
        assert res.start == "crash"
        answers.add((res.reward, res.policy.tobytes(), res.cost.tobytes()))
    assert len(answers) == 1


def test_reported_values_are_the_exact_values_of_the_returned_policy():
    from safemeta_fast.evaluation import evaluate

    for solver in SOLVERS:
        M = gridworld(0.2, 10, gamma=0.99)
        res = solve_lp(M, solver=solver)
        ev = evaluate(M, res.policy, method="dense")
        assert res.reward == pytest.approx(ev.reward, rel=1e-12)
        np.testing.assert_allclose(res.cost, ev.cost, rtol=1e-12)


@pytest.mark.parametrize("gamma, match", [
    (1 - 1e-7, r"exact evaluation of that policy gives .*gamma = 0\.9999999"),
    (1 - 1e-10, r"status .*gamma = 0\.9999999999"),
])
def test_untrustworthy_lp_answers_raise_and_name_the_scale(gamma, match):
    clear_lp_cache()
    with pytest.raises(OracleError, match=match):
        solve_lp(gridworld(0.3, gamma=gamma))


def test_extreme_reward_scale_is_named():
    M = gridworld(0.3)
    with pytest.raises(OracleError, match=r"max \|reward\| = 1e\+26.*rescale"):
        solve_lp(M.replace(r=M.r * 1e25))
