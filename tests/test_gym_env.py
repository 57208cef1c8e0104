"""Gymnasium adapters (CMDPEnv, SafeCMDPEnv, TaskFamilyEnv) and the run_env ask/tell loop."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import env_checker

from safemeta_fast import CMDP, SafeAdapter, evaluate_many, solve_lp
from safemeta_fast.envs import GridworldCostFamily, GridworldFamily, gridworld
from safemeta_fast.envs.gym import CMDPEnv, SafeCMDPEnv, TaskFamilyEnv
from safemeta_fast.envs.loop import episode_seeds, run_env
from safemeta_fast.policyset import PolicySet
from safemeta_fast.tasks import TaskFamily, Uniform

from .strategies import random_cmdp

#: Monte-Carlo checks: |mean - exact| <= Z * (sample std / sqrt(n)) + truncation bias.
#: Z = 4 is a two-sided false-alarm probability of about 6e-5 per check under the CLT
#: (and the seeds are fixed, so the outcome is deterministic).
Z = 4.0


def hole_cost(s, a, s_next, reward, terminated):
    return float(terminated and reward == 0)


def _trajectory(env, seed, actions):
    out = [env.reset(seed=seed)[0]]
    for a in actions:
        res = env.step(a)
        out.append((res[0], res[1], tuple(res[-1]["cost"]), res[-3], res[-2]))
    return out


# -- CMDPEnv ------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 7])
def test_cmdp_env_passes_check_env(grid03, limit):
    env = CMDPEnv(grid03, max_episode_steps=limit)
    env_checker.check_env(env, skip_render_check=True)
    assert env.observation_space == gym.spaces.Discrete(49)
    assert env.action_space == gym.spaces.Discrete(grid03.n_actions)


def test_cmdp_env_seeding_reproducible(grid03):
    env = CMDPEnv(grid03)
    actions = np.random.default_rng(0).integers(0, 4, size=60)
    a, b = _trajectory(env, 11, actions), _trajectory(CMDPEnv(grid03), 11, actions)
    assert a == b
    assert _trajectory(env, 12, actions) != a
    # an unseeded reset continues the generator instead of restarting it
    env.reset(seed=11)
    first = [env.step(int(x))[0] for x in actions[:20]]
    env.reset()
    assert [env.step(int(x))[0] for x in actions[:20]] != first


def test_cmdp_env_samples_nu0_and_P():
    M = random_cmdp(np.random.default_rng(4), S=4, A=2, K=2)
    env = CMDPEnv(M)
    n = 20000
    counts = np.zeros((4, 4))
    for i in range(n):
        s0, _ = env.reset(seed=i)
        s1, reward, terminated, truncated, info = env.step(1)
        counts[s0, s1] += 1
        assert reward == M.r[s0, 1] and np.array_equal(info["cost"], M.c[s0, 1])
    expected = np.asarray(M.nu0)[:, None] * M.P[:, 1, :]
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) <= Z * se + 1e-12)


def test_terminated_only_at_zero_absorbing_and_truncated_at_limit(two_state):
    # two_state's absorbing state 1 pays 0.5 per step: it must not terminate
    env = CMDPEnv(two_state, max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(1)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    # from_gymnasium's added terminal state does terminate, with zero reward after
    table = {0: {0: [(1.0, 1, 1.0, True)]}, 1: {0: [(1.0, 1, 0.0, False)]}}
    M = CMDP.from_gymnasium(table, c=[[1.0], [0.0]], cost_limit=1.0, gamma=0.9, nu0=[1.0, 0.0])
    env = CMDPEnv(M, max_episode_steps=1)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert (obs, reward, terminated, truncated) == (M.terminal_state, 1.0, True, True)
    assert info["cost"].tolist() == [1.0]


def test_cmdp_env_errors(grid03):
    env = CMDPEnv(grid03)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action is 4; expected an integer in \[0, 4\)"):
        env.step(4)
    with pytest.raises(TypeError, match="M must be a safemeta_fast.CMDP"):
        CMDPEnv("grid")
    with pytest.raises(ValueError, match="max_episode_steps is 0"):
        CMDPEnv(grid03, max_episode_steps=0)


# -- SafeCMDPEnv ----------------------------------------------------------------------------

def test_safe_env_six_tuple_contract(grid03):
    safe, plain = SafeCMDPEnv(grid03, max_episode_steps=30), CMDPEnv(grid03, max_episode_steps=30)
    # check_env only knows 4- and 5-tuple steps; the reset half of it applies as is
    with pytest.raises(gym.error.Error, match="four or five element tuple"):
        env_checker.check_env(safe, skip_render_check=True)
    env_checker.check_reset_return_type(safe)
    env_checker.check_reset_seed_determinism(safe)
    env_checker.check_reset_options(safe)
    actions = np.random.default_rng(1).integers(0, 4, size=30)
    safe.reset(seed=5)
    plain.reset(seed=5)
    for a in actions:
        obs, reward, cost, terminated, truncated, info = safe.step(int(a))
        obs2, reward2, terminated2, truncated2, info2 = plain.step(int(a))
        assert safe.observation_space.contains(obs)
        assert isinstance(reward, float) and isinstance(cost, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert (obs, reward, terminated, truncated) == (obs2, reward2, terminated2, truncated2)
        assert cost == info2["cost"][0] and np.array_equal(info["cost"], info2["cost"])
    assert truncated


def test_safe_env_vector_cost_when_several_constraints():
    M = random_cmdp(np.random.default_rng(2), S=5, A=3, K=2)
    env = SafeCMDPEnv(M)
    s, _ = env.reset(seed=0)
    _, _, cost, _, _, info = env.step(2)
    assert isinstance(cost, np.ndarray) and cost.shape == (2,)
    np.testing.assert_array_equal(cost, M.c[s, 2])
    cost[0] = 99.0  # the 6-tuple's vector and info["cost"] are separate copies
    assert info["cost"][0] == M.c[s, 2, 0]


# -- TaskFamilyEnv -------------------------------------------------------------------------

def test_task_family_env_set_get_sample():
    fam = GridworldCostFamily()
    env = TaskFamilyEnv(fam, task={"noise": 0.3, "cost": 10.0})
    env_checker.check_env(env, skip_render_check=True)
    tasks = env.sample_tasks(3, seed=0)
    assert tasks == env.sample_tasks(3, seed=0)
    assert all(set(t) == {"noise", "cost"} for t in tasks)
    np.testing.assert_allclose([[t["noise"], t["cost"]] for t in tasks], fam.sample(3, seed=0))
    env.set_task(tasks[1])
    assert env.get_task() == tasks[1]
    want = fam.build([tasks[1]["noise"], tasks[1]["cost"]])
    np.testing.assert_array_equal(env.cmdp.P, want.P)
    np.testing.assert_array_equal(env.cmdp.c, want.c)
    with pytest.raises(RuntimeError, match="reset"):  # a new task starts with reset()
        env.step(0)
    env.reset(seed=0)
    env.step(0)


def test_task_family_env_changes_dynamics_and_leaves_family_alone():
    fam = GridworldFamily()
    env = TaskFamilyEnv(fam, seed=3)
    assert env.get_task() == {"noise": pytest.approx(fam.sample(1, seed=3)[0, 0])}
    actions = np.zeros(40, dtype=int)
    env.set_task({"noise": 0.0})
    still = _trajectory(env, 1, actions)
    env.set_task({"noise": 0.5})
    assert _trajectory(env, 1, actions) != still
    with pytest.raises(ValueError, match="no task set"):
        fam.get_task()  # the env keeps its own task


def test_task_family_env_errors():
    env = TaskFamilyEnv(GridworldFamily(), task={"noise": 0.3})
    with pytest.raises(ValueError, match=r"missing \['noise'\], unknown \['slip'\]"):
        env.set_task({"slip": 0.3})
    with pytest.raises(TypeError, match="task must be a dict keyed by"):
        env.set_task(0.3)
    with pytest.raises(ValueError, match="it must be finite"):
        env.set_task({"noise": float("nan")})
    with pytest.raises(TypeError, match="family must be a TaskFamily"):
        TaskFamilyEnv(gridworld(0.3))

    class SizeFamily(TaskFamily):
        param_names = ("size",)
        distribution = Uniform([5.0], [7.0])

        def build(self, theta):
            return gridworld(0.1, int(theta[0]))

    env2 = TaskFamilyEnv(SizeFamily(), task={"size": 7})
    with pytest.raises(ValueError, match=r"has \(S, A, K\) = \(25, 4, 1\); this env's spaces are "
                                         r"\(49, 4, 1\)"):
        env2.set_task({"size": 5})


# -- run_env --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lake():
    """FrozenLake 8x8 (slippery) at gamma 0.97, cost = falling in a hole, limit 0.1,
    and a hand-built policy set: LP policies at limits 0.1 and 0.05, safe = LP at 0.02."""
    gamma = 0.97
    env = gym.make("FrozenLake-v1", map_name="8x8", is_slippery=True)
    M = CMDP.from_gymnasium(env, cost_fn=hole_cost, cost_limit=0.1, gamma=gamma)
    pols = np.stack([solve_lp(M.replace(cost_limit=b)).policy for b in (0.1, 0.05)])
    safe = solve_lp(M.replace(cost_limit=0.02)).policy
    ev = evaluate_many(M, np.concatenate([pols, safe[None]]))
    ps = PolicySet(policies=pols, u=ev.reward[:2], v=0.1 - ev.cost[:2],
                   u_s=ev.reward[[2, 2]], v_s=0.1 - ev.cost[[2, 2]], safe_policy=safe,
                   cover_params=[0.0, 1.0], cost_limit=[0.1], gamma=gamma, eps=0.01,
                   delta=0.05, xi_hat=0.08, seed=0)
    return M, ps, ev


def _lake_env(steps=1000):
    return gym.make("FrozenLake-v1", map_name="8x8", is_slippery=True, max_episode_steps=steps)


@pytest.mark.parametrize("profile, policy", [("pce", 0), ("reference", 2)])
def test_run_env_frozenlake_returns_match_exact_values(lake, profile, policy):
    M, ps, ev = lake
    n = 400
    ad = SafeAdapter(ps, profile=profile, n_episodes=n, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 1000-step limit is long enough at gamma 0.97
        log = run_env(ad, _lake_env(), n, cost_fn=hole_cost, seed=3, progress=False)
    assert log.n_episodes == n
    # pce deploys candidate 0 alone; reference runs the safe policy in its first window
    assert np.all(log.component == (0 if policy == 0 else 1))
    # truncation at min(1000, H = 600) steps drops at most gamma^600 / (1 - gamma) per unit
    bias = ps.gamma ** 600 / (1 - ps.gamma)
    for obs, exact in ((log.reward, ev.reward[policy]), (log.cost[:, 0], ev.cost[policy, 0])):
        se = obs.std(ddof=1) / np.sqrt(n)
        assert abs(obs.mean() - exact) <= Z * se + bias
        assert se < 0.01  # the check has teeth: the two costs differ by 0.04


def test_run_env_reproducible_and_same_on_5_and_6_tuple_envs(lake):
    M, ps, _ = lake

    def go(env, seed, **kw):
        ad = SafeAdapter(ps, profile="pce", n_episodes=30, seed=1)
        return run_env(ad, env, 30, seed=seed, progress=False, **kw)

    a = go(CMDPEnv(M, max_episode_steps=1000), 5)
    b = go(SafeCMDPEnv(M, max_episode_steps=1000), 5)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.cost, b.cost)
    c = go(CMDPEnv(M), 6)
    assert not np.array_equal(a.reward, c.reward) or not np.array_equal(a.cost, c.cost)
    # cost_fn replaces info["cost"]: the model's cost vector, doubled
    d = go(CMDPEnv(M, max_episode_steps=1000), 5,
           cost_fn=lambda s, a_, s2, r, t: 2 * M.c[s, a_])
    np.testing.assert_allclose(d.cost, 2 * a.cost)
    # the gymnasium env itself, fed the same cost by cost_fn, is also reproducible
    e1 = go(_lake_env(), 9, cost_fn=hole_cost)
    e2 = go(_lake_env(), 9, cost_fn=hole_cost)
    np.testing.assert_array_equal(e1.reward, e2.reward)


def test_run_env_resumes_with_episode_indexed_seeds(lake):
    M, ps, _ = lake
    whole = run_env(SafeAdapter(ps, profile="pce", n_episodes=20, seed=1), CMDPEnv(M), 20,
                    seed=4, progress=False)
    ad = SafeAdapter(ps, profile="pce", n_episodes=20, seed=1)
    run_env(ad, CMDPEnv(M), 8, seed=4, progress=False)
    parts = run_env(ad, CMDPEnv(M), 12, seed=4, progress=False)
    np.testing.assert_array_equal(parts.reward, whole.reward)
    assert episode_seeds(4, 3)[0] != episode_seeds(4, 4)[0]


def test_run_env_passes_start_state_when_tell_accepts_it(lake):
    M, ps, _ = lake

    class StartAware(SafeAdapter):
        starts: list

        def tell(self, reward_return, cost_returns, start_state=None):
            self.starts.append(start_state)
            super().tell(reward_return, cost_returns)

    ad = StartAware(ps, profile="pce", n_episodes=5, seed=1)
    ad.starts = []
    run_env(ad, _lake_env(), 5, cost_fn=hole_cost, seed=0, progress=False)
    assert ad.starts == [0] * 5  # FrozenLake starts in the corner


def test_run_env_warns_on_short_time_limit(lake):
    M, ps, _ = lake
    ad = SafeAdapter(ps, profile="pce", n_episodes=3, seed=1)
    with pytest.warns(RuntimeWarning, match=r"max_episode_steps = 100 is short.*gamma\*\*100"):
        run_env(ad, _lake_env(100), 3, cost_fn=hole_cost, seed=0, progress=False)


def test_run_env_errors(lake, grid03):
    M, ps, _ = lake
    ad = SafeAdapter(ps, profile="pce", n_episodes=3, seed=1)
    with pytest.raises(ValueError, match="gives no cost.*pass cost_fn"):
        run_env(ad, _lake_env(), 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="n_episodes is 4; the adapter has 3 episode"):
        run_env(ad, _lake_env(), 4, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"Discrete\(49\) observations.*\(65, 4\)"):
        run_env(ad, CMDPEnv(grid03), 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="has 2 value"):
        run_env(ad, _lake_env(), 1, seed=0, progress=False, cost_fn=lambda *t: [0.0, 0.0])
    with pytest.raises(TypeError, match="adapter must be a SafeAdapter"):
        run_env(ps, _lake_env(), 1, seed=0)
    with pytest.raises(TypeError, match="Discrete space"):
        run_env(ad, gym.make("CartPole-v1"), 1, seed=0, progress=False)


def test_envs_package_loads_gymnasium_names_lazily():
    import subprocess
    import sys

    import safemeta_fast.envs as envs

    assert envs.CMDPEnv is CMDPEnv and envs.run_env is run_env
    code = "import sys, safemeta_fast.envs; print('gymnasium' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_env_frozenlake_8x8_certified_matches_exact_model():
    """Issue 11 acceptance: gymnasium's own FrozenLake-v1 8x8 driven through run_env with
    the certified profile (start-state control variate on); the TestLog's exact audit
    (log(M)) is checked against the exact model of that env."""
    import gymnasium as gym

    from safemeta_fast import calibrate, solve_lp
    from safemeta_fast.envs.frozenlake import FrozenLakeFamily
    from safemeta_fast.evaluation import evaluate_many
    from safemeta_fast.policyset import PolicySet
    from safemeta_fast.tasks import TruncatedNormal

    fam = FrozenLakeFamily("8x8", cost_limit=0.05,
                           distribution=TruncatedNormal(0.95, 0.03, 0.85, 1.0))
    M = fam.build([1.0])  # is_slippery=True is slip 1
    covers = [0.9, 0.95, 1.0]
    tasks = [fam.build([x]) for x in covers]
    pols = np.stack([solve_lp(T).policy for T in tasks])
    safe = solve_lp(fam.build([1.0]).replace(cost_limit=[0.02])).policy
    ev = [evaluate_many(T, np.concatenate([pols, safe[None]])) for T in tasks]
    ps = PolicySet(policies=pols, u=[e.reward[i] for i, e in enumerate(ev)],
                   v=[0.05 - e.cost[i, 0] for i, e in enumerate(ev)],
                   u_s=[e.reward[3] for e in ev], v_s=[0.05 - e.cost[3, 0] for e in ev],
                   safe_policy=safe, cover_params=covers, cost_limit=[0.05], gamma=0.95,
                   eps=0.03, delta=0.05, xi_hat=float(min(0.05 - e.cost[3, 0] for e in ev)), seed=0)
    ps = calibrate(ps, fam, n_reference=200, n_calibration=200, seed=1, progress=False)
    n = 1500
    env = gym.make("FrozenLake-v1", map_name="8x8", is_slippery=True)
    ad = SafeAdapter(ps, n_episodes=n, seed=2)
    log = run_env(ad, env, n, cost_fn=hole_cost, seed=3, progress=False)
    assert log.constants["control_variate"] is True  # run_env passed the start states
    audit = ad.log(M)
    assert audit.violations == 0 and audit.refuted_at == -1
    np.testing.assert_array_equal(audit.pair, log.pair)
    # the exact audit: each deployed mixture's values from the exact model of the env
    exact = evaluate_many(M, np.concatenate([ps.policies, ps.safe_policy[None]]))
    a, c, w = audit.pair[:, 0], audit.pair[:, 1], audit.weight
    np.testing.assert_allclose(audit.exact_reward, w * exact.reward[a] + (1 - w) * exact.reward[c],
                               rtol=0, atol=1e-12)
    # observed returns of the components agree with their exact values (Monte Carlo)
    drawn = log.drawn
    for j in np.unique(drawn):
        sel = drawn == j
        if sel.sum() < 200:
            continue
        se = log.reward[sel].std(ddof=1) / np.sqrt(sel.sum())
        assert abs(log.reward[sel].mean() - exact.reward[j]) <= Z * se + 1e-6
    assert audit.mean_candidate_weight > 0.0
