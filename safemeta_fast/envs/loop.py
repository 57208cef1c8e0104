"""Drive a :class:`~safemeta_fast.adaptation.SafeAdapter` over a gymnasium environment.

:func:`run_env` is the ask/tell loop of the test-time phase (SPEC section 6) for an env the
user runs: per episode it asks the adapter for a policy, follows it for the whole episode
(an episode-level mixture component), discounts the observed rewards and costs with the
policy set's gamma, and tells the adapter the returns. It works with any env with
``Discrete`` observation and action spaces: gymnasium's 5-tuple step (cost from
``info["cost"]`` or a ``cost_fn``) and the Safety-Gymnasium 6-tuple step
``obs, reward, cost, terminated, truncated, info`` (told apart by the length of the
step's return). It does not need gymnasium itself, only that API.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
from tqdm.auto import tqdm

from ..seeding import resolve_seed
from ..validation import check_bool, check_int

__all__ = ["run_env", "episode_seeds"]

#: Warn when a time limit T leaves more than this share of the discounted weight,
#: gamma**T, beyond the end of the episode.
TAIL_WARN = 0.01


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """The env reset seed and the action generator of one episode.

    Both come from ``numpy.random.SeedSequence(seed, spawn_key=(episode, j))`` (j = 0 for
    the env, 1 for actions), so episodes are independent streams and episode k of a run
    does not depend on how many episodes earlier calls ran.

    Parameters
    ----------
    seed : int
        A resolved seed (:func:`safemeta_fast.seeding.resolve_seed`).
    episode : int
        The adapter's episode index.

    Returns
    -------
    env_seed : int
        In [0, 2**63).
    rng : numpy.random.Generator

    Examples
    --------
    >>> s, rng = episode_seeds(7, 0)
    >>> s == episode_seeds(7, 0)[0] != episode_seeds(7, 1)[0]
    True
    """
    env_ss = np.random.SeedSequence(seed, spawn_key=(episode, 0))
    env_seed = int(env_ss.generate_state(1, dtype=np.uint64)[0]) >> 1
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(episode, 1)))
    return env_seed, rng


def _discrete_n(space, name: str) -> int:
    n = getattr(space, "n", None)
    if n is None or int(getattr(space, "start", 0)) != 0:
        raise TypeError(f"env.{name} must be a Discrete space starting at 0; got {space!r}")
    return int(n)


def _check_time_limit(env, gamma: float) -> None:
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None)
    if limit is None or gamma == 0.0:
        return
    tail = gamma ** int(limit)
    if tail > TAIL_WARN:
        enough = math.ceil(math.log(TAIL_WARN) / math.log(gamma))
        warnings.warn(
            f"env's time limit max_episode_steps = {limit} is short for gamma = {gamma} "
            f"(effective horizon 1/(1-gamma) = {1.0 / (1.0 - gamma):.4g}): truncation drops "
            f"up to gamma**{limit} = {tail:.3g} of the discounted weight, so observed returns "
            "are biased against the policy set's (infinite-horizon) predictions. Raise it, "
            f"e.g. gymnasium.make(..., max_episode_steps={enough})",
            RuntimeWarning,
            stacklevel=3,
        )


def _cost_vector(cost, K: int, where: str) -> np.ndarray:
    arr = np.asarray(cost, dtype=np.float64).reshape(-1)
    if arr.size != K:
        raise ValueError(f"{where} has {arr.size} value(s); the policy set has K = {K} "
                         "constraint(s)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} is {cost!r}; every value must be finite")
    return arr


def run_env(adapter, env, n_episodes: int, *, cost_fn=None, seed=None, progress: bool = True):
    """Run ``n_episodes`` test-time episodes of ``adapter`` on ``env`` (ask/tell).

    Per episode k (the adapter's episode index): ``step = adapter.ask()``;
    ``env.reset(seed=env_seed_k)``; actions ``a_t ~ step.policy[s_t]`` from the episode's
    own generator; returns ``R = sum_t gamma^t r_t`` and ``C = sum_t gamma^t c_t`` with
    gamma = ``adapter.policy_set.gamma``; ``adapter.tell(R, C)``. An episode ends when the
    env reports ``terminated`` or ``truncated``, or after ``adapter.horizon`` steps (the
    SPEC's H), whichever comes first.

    Parameters
    ----------
    adapter : SafeAdapter
        Anything with ``ask()``, ``tell(R, C)``, ``log()``, ``policy_set`` and
        ``horizon``. When ``adapter.tell`` accepts ``start_state``, the episode's initial
        observation is passed as ``tell(R, C, start_state=s_0)``.
    env : gymnasium.Env-like
        ``Discrete`` observation space of size S (or S - 1 when the policies have one
        extra row, the absorbing terminal state that ``CMDP.from_gymnasium`` adds and the
        env never reports) and ``Discrete(A)`` actions; ``step`` returns 5 values
        (gymnasium) or 6 (Safety-Gymnasium: ``obs, reward, cost, terminated, truncated,
        info``).
    n_episodes : int
        At most the adapter's remaining episodes.
    cost_fn : callable, optional
        ``cost_fn(s, a, s_next, reward, terminated) -> float or (K,)``; when given it is
        the cost of every step (it wins over the env's). Otherwise the cost is the 6-tuple's
        cost or ``info["cost"]`` (a ``ValueError`` if the env gives neither).
    seed : int, numpy.random.Generator or None
        Resolved once; episode k uses :func:`episode_seeds` (seed, k) for its env reset
        and its actions. The adapter's own seed draws the mixture components.
    progress : bool, default True
        Show a tqdm bar.

    Returns
    -------
    TestLog
        ``adapter.log()``: every finished episode. Interrupting (Ctrl-C) loses only the
        running episode; call ``run_env`` again to go on (the adapter re-offers the
        pending step).

    Warns
    -----
    RuntimeWarning
        When ``env.spec.max_episode_steps`` = T leaves ``gamma**T > 0.01`` of the
        discounted weight after the time limit.

    Examples
    --------
    A one-policy set (the LP optimum of the task itself) run on a CMDPEnv:

    >>> from safemeta_fast import SafeAdapter, evaluate, solve_lp
    >>> from safemeta_fast.envs import gridworld
    >>> from safemeta_fast.envs.gym import CMDPEnv
    >>> from safemeta_fast.policyset import PolicySet
    >>> M = gridworld(0.3)
    >>> pi = solve_lp(M).policy; e = evaluate(M, pi)
    >>> ps = PolicySet(policies=pi[None], u=[e.reward], v=[e.slack], u_s=[e.reward],
    ...     v_s=[e.slack], safe_policy=pi, cover_params=[0.3], cost_limit=M.cost_limit,
    ...     gamma=M.gamma, eps=0.01, delta=0.05, xi_hat=0.01, seed=0)
    >>> adapter = SafeAdapter(ps, profile="pce", n_episodes=20, seed=0)
    >>> log = run_env(adapter, CMDPEnv(M), 20, seed=0, progress=False)
    >>> log.n_episodes, log.reward.shape, log.cost.shape
    (20, (20,), (20, 1))
    """
    for attr in ("ask", "tell", "log", "policy_set", "horizon", "n_episodes", "episode"):
        if not hasattr(adapter, attr):
            raise TypeError(f"adapter must be a SafeAdapter (ask, tell, log, policy_set, horizon, "
                            "n_episodes, episode); "
                            f"{type(adapter).__name__} has no {attr!r}")
    n_episodes = check_int("n_episodes", n_episodes, 1)
    left = adapter.n_episodes - adapter.episode
    if n_episodes > left:
        raise ValueError(f"n_episodes is {n_episodes}; the adapter has {left} episode(s) left "
                         f"of its n_episodes = {adapter.n_episodes}")
    if cost_fn is not None and not callable(cost_fn):
        raise TypeError(f"cost_fn must be callable; got {type(cost_fn).__name__}")
    progress = check_bool("progress", progress)
    seed = resolve_seed(seed)
    ps = adapter.policy_set
    S_obs = _discrete_n(env.observation_space, "observation_space")
    A = _discrete_n(env.action_space, "action_space")
    if ps.n_states not in (S_obs, S_obs + 1) or ps.n_actions != A:
        raise ValueError(f"env has Discrete({S_obs}) observations and Discrete({A}) actions; the "
                         f"policy set has (S, A) = ({ps.n_states}, {ps.n_actions}) (S may be one "
                         "more than the env's: the added terminal state)")
    gamma, K, H = float(ps.gamma), ps.n_constraints, int(adapter.horizon)
    _check_time_limit(env, gamma)
    pass_start = "start_state" in inspect.signature(adapter.tell).parameters
    bar = tqdm(total=n_episodes, disable=not progress, desc="episodes", unit="ep")
    try:
        for _ in range(n_episodes):
            step = adapter.ask()
            cdf = np.cumsum(step.policy, axis=1)
            env_seed, rng = episode_seeds(seed, step.episode)
            obs, _ = env.reset(seed=env_seed)
            s = s0 = int(obs)
            R, C, disc = 0.0, np.zeros(K), 1.0
            for _t in range(H):
                a = min(int(np.searchsorted(cdf[s], rng.random() * cdf[s, -1], side="right")),
                        A - 1)
                out = env.step(a)
                if len(out) == 6:
                    obs, reward, cost, terminated, truncated, info = out
                elif len(out) == 5:
                    obs, reward, terminated, truncated, info = out
                    cost = info.get("cost") if cost_fn is None else None
                else:
                    raise ValueError(f"env.step returned {len(out)} values; expected 5 "
                                     "(gymnasium) or 6 (Safety-Gymnasium)")
                s_next = int(obs)
                if cost_fn is not None:
                    cost = cost_fn(s, a, s_next, reward, terminated)
                elif cost is None:
                    raise ValueError("env.step gives no cost (no 6th value, no info['cost']); "
                                     "pass cost_fn(s, a, s_next, reward, terminated)")
                R += disc * float(reward)
                C += disc * _cost_vector(cost, K, f"the cost of step {_t} of episode "
                                                  f"{step.episode}")
                disc *= gamma
                s = s_next
                if terminated or truncated:
                    break
            if pass_start:
                adapter.tell(R, C, start_state=s0)
            else:
                adapter.tell(R, C)
            bar.update(1)
    finally:
        bar.close()
    return adapter.log()
