"""Gymnasium environments over a tabular CMDP (needs ``gymnasium``).

* :class:`CMDPEnv`: a ``gymnasium.Env`` with ``Discrete(S)`` observations and
  ``Discrete(A)`` actions; the step's cost vector is ``info["cost"]`` (shape (K,)).
* :class:`SafeCMDPEnv`: the same env with the Safety-Gymnasium step API,
  ``obs, reward, cost, terminated, truncated, info``.
* :class:`TaskFamilyEnv`: a ``CMDPEnv`` over a :class:`~safemeta_fast.tasks.TaskFamily`
  whose task is changed with ``set_task`` / ``get_task`` / ``sample_tasks`` (dict tasks
  keyed by the family's ``param_names``: the RLlib ``TaskSettableEnv`` and learn2learn
  ``MetaEnv`` conventions).

Semantics shared by all three (the model's, SPEC section 2):

* ``reset(seed=...)`` seeds ``self.np_random`` (gymnasium seeding) and draws
  ``s_0 ~ nu0``; every later draw (next states) comes from that generator.
* A step in state s with action a pays the model's ``r[s, a]`` and ``c[s, a, :]`` (the
  expected reward and cost of the pair: a CMDP has no per-transition reward) and moves to
  ``s' ~ P[s, a, :]``.
* ``terminated`` is True when ``s'`` is absorbing with zero reward and zero cost
  (``M.absorbing``; e.g. the terminal state that ``CMDP.from_gymnasium`` adds): nothing
  more can happen, so the discounted return of the episode equals the model's value.
  Any other absorbing state (a rewarded goal that loops) does not terminate.
* ``truncated`` is True once ``max_episode_steps`` steps were taken (gymnasium's
  ``TimeLimit`` semantics; both flags may be True together). The model's values are
  infinite-horizon: keep ``max_episode_steps`` well above ``1 / (1 - gamma)``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..cmdp import CMDP
from ..tasks import TaskFamily
from ..validation import check_cmdp, check_int

__all__ = ["CMDPEnv", "SafeCMDPEnv", "TaskFamilyEnv"]


class CMDPEnv(gym.Env):
    """A gymnasium environment that samples a tabular CMDP.

    Parameters
    ----------
    M : CMDP
    max_episode_steps : int, optional
        Truncate episodes after this many steps (``truncated=True``); None: no limit.

    Attributes
    ----------
    observation_space : gymnasium.spaces.Discrete(S)
    action_space : gymnasium.spaces.Discrete(A)
    cmdp : CMDP
        The model being sampled.
    gamma : float
        The model's discount (gymnasium envs have none; loops such as
        :func:`safemeta_fast.envs.loop.run_env` use the agent's).

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> env = CMDPEnv(gridworld(0.3), max_episode_steps=50)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> info["cost"].shape
    (1,)
    """

    metadata = {"render_modes": []}

    def __init__(self, M: CMDP, *, max_episode_steps: int | None = None):
        super().__init__()
        if max_episode_steps is not None:
            max_episode_steps = check_int("max_episode_steps", max_episode_steps, 1)
        self.max_episode_steps = max_episode_steps
        self._set_model(check_cmdp(M))
        self.observation_space = spaces.Discrete(M.n_states)
        self.action_space = spaces.Discrete(M.n_actions)
        self._state: int | None = None
        self._elapsed = 0

    def _set_model(self, M: CMDP) -> None:
        self._M = M
        self._A = M.n_actions
        self._ptr = np.asarray(M.succ_ptr)
        self._next = np.asarray(M.succ_next)
        self._prob = np.asarray(M.succ_prob)
        r, c = np.asarray(M.r), np.asarray(M.c)
        self._r = r
        self._c = c
        self._ends = (np.asarray(M.absorbing) & (r[:, 0] == 0.0)
                      & np.all(c[:, 0, :] == 0.0, axis=1))
        self._nu0_cum = np.cumsum(M.nu0)

    @property
    def cmdp(self) -> CMDP:
        """The model being sampled."""
        return self._M

    @property
    def gamma(self) -> float:
        return self._M.gamma

    @property
    def state(self) -> int | None:
        """The current state (None before the first reset)."""
        return self._state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode at ``s_0 ~ nu0``.

        Parameters
        ----------
        seed : int, optional
            Reseeds ``self.np_random`` (gymnasium seeding).
        options : dict, optional
            Unused (accepted for the gymnasium API).

        Returns
        -------
        obs : int
        info : dict
            Empty.
        """
        super().reset(seed=seed)
        u = self.np_random.random() * self._nu0_cum[-1]
        s0 = int(np.searchsorted(self._nu0_cum, u, side="right"))
        self._state = min(s0, self._M.n_states - 1)
        self._elapsed = 0
        return self._state, {}

    def _transition(self, action):
        """One step of the model: (s', r, c (K,), terminated, truncated)."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action is {action!r}; expected an integer in "
                             f"[0, {self._A})")
        s, a = self._state, int(action)
        i = s * self._A + a
        lo, hi = self._ptr[i], self._ptr[i + 1]
        cum = np.cumsum(self._prob[lo:hi])  # a few entries: exact per row, no global sum
        j = min(int(np.searchsorted(cum, self.np_random.random() * cum[-1], side="right")),
                hi - lo - 1)
        s_next = int(self._next[lo + j])
        self._state = s_next
        self._elapsed += 1
        terminated = bool(self._ends[s_next])
        truncated = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        return s_next, float(self._r[s, a]), self._c[s, a].copy(), terminated, truncated

    def step(self, action):
        """Take ``action``: returns ``obs, reward, terminated, truncated, info``.

        ``info["cost"]`` is the cost vector ``c[s, a, :]``, shape (K,).
        """
        s_next, reward, cost, terminated, truncated = self._transition(action)
        return s_next, reward, terminated, truncated, {"cost": cost}


class SafeCMDPEnv(CMDPEnv):
    """A :class:`CMDPEnv` with the Safety-Gymnasium step API.

    ``step`` returns the 6-tuple ``obs, reward, cost, terminated, truncated, info``
    (Safety-Gymnasium / OmniSafe). ``cost`` is a float when the model has one constraint
    (K = 1, Safety-Gymnasium's case) and the cost vector, shape (K,), when K > 1
    (Safety-Gymnasium has no multi-constraint API). ``info["cost"]`` always holds the
    vector, shape (K,).

    Notes
    -----
    ``gymnasium.utils.env_checker.check_env`` accepts only 4- or 5-tuple steps, so it
    rejects this class by design; the 5-tuple :class:`CMDPEnv` over the same model passes
    it, and the tests check this class's 6-tuple contract directly.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> env = SafeCMDPEnv(gridworld(0.3))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, cost, terminated, truncated, info = env.step(1)
    >>> type(cost).__name__
    'float'
    """

    def step(self, action):
        s_next, reward, cost, terminated, truncated = self._transition(action)
        scalar = float(cost[0]) if cost.size == 1 else cost.copy()
        return s_next, reward, scalar, terminated, truncated, {"cost": cost}


class TaskFamilyEnv(CMDPEnv):
    """A :class:`CMDPEnv` over one task of a family, with settable tasks.

    Tasks are dicts keyed by the family's ``param_names``, e.g. ``{"noise": 0.3}``
    (RLlib ``TaskSettableEnv``: ``sample_tasks(n_tasks)``, ``set_task(task)``,
    ``get_task()``; learn2learn ``MetaEnv`` uses the same names). The env keeps its own
    task; the family object is not changed.

    Parameters
    ----------
    family : TaskFamily
        Every task must have the same (S, A, K) (the spaces are fixed).
    task : dict, optional
        The initial task; default one task sampled with ``seed``.
    max_episode_steps : int, optional
        As in :class:`CMDPEnv`.
    seed : int, numpy.random.Generator or None
        Only used to sample the initial task when ``task`` is not given.

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily
    >>> env = TaskFamilyEnv(GridworldFamily(), task={"noise": 0.3})
    >>> tasks = env.sample_tasks(2, seed=0)
    >>> env.set_task(tasks[1]); env.get_task() == tasks[1]
    True
    >>> obs, info = env.reset(seed=0)
    """

    def __init__(self, family: TaskFamily, *, task: dict | None = None,
                 max_episode_steps: int | None = None, seed=None):
        if not isinstance(family, TaskFamily):
            raise TypeError(f"family must be a TaskFamily; got {type(family).__name__}")
        names = tuple(family.param_names)
        if len(names) != family.dim:
            raise ValueError(f"family.param_names is {names!r}; TaskFamilyEnv needs one name per "
                             f"parameter ({family.dim})")
        self.family = family
        self.param_names = names
        if task is None:
            task = self.sample_tasks(1, seed=seed)[0]
        theta = self._theta(task)
        super().__init__(family.build(theta), max_episode_steps=max_episode_steps)
        self._task = theta

    def _theta(self, task) -> np.ndarray:
        if not isinstance(task, dict):
            raise TypeError(f"task must be a dict keyed by {self.param_names}; "
                            f"got {type(task).__name__}")
        missing = [n for n in self.param_names if n not in task]
        extra = [k for k in task if k not in self.param_names]
        if missing or extra:
            raise ValueError(f"task has keys {sorted(task)}; expected exactly "
                             f"{list(self.param_names)} (missing {missing}, unknown {extra})")
        return self.family.check_params([[task[n] for n in self.param_names]])[0]

    def _as_task(self, theta) -> dict:
        return {n: float(v) for n, v in zip(self.param_names, theta)}

    def sample_tasks(self, n_tasks: int, *, seed=None) -> list[dict]:
        """``n_tasks`` tasks drawn from the family's distribution (dicts)."""
        return [self._as_task(t) for t in self.family.sample(n_tasks, seed=seed)]

    def set_task(self, task: dict) -> None:
        """Switch to ``task``; the next episode (after ``reset``) runs on its CMDP."""
        theta = self._theta(task)
        M = self.family.build(theta)
        old = self._M
        if (M.n_states, M.n_actions, M.n_constraints) != (old.n_states, old.n_actions,
                                                          old.n_constraints):
            raise ValueError(f"task {task} has (S, A, K) = "
                             f"{(M.n_states, M.n_actions, M.n_constraints)}; this env's spaces "
                             f"are {(old.n_states, old.n_actions, old.n_constraints)}")
        self._set_model(M)
        self._task = theta
        self._state = None

    def get_task(self) -> dict:
        """The current task (a new dict)."""
        return self._as_task(self._task)
