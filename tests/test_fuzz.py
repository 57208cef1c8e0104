"""Fuzz test of the public constructors (issue 10): junk in, a clear error or a valid object out.

Every constructor below is fed a mix of plausible and hostile values (None, bools, strings,
NaN, infinities, huge and negative integers, ragged lists, arrays of the wrong shape or
dtype). The only outcomes allowed are success or a ``TypeError`` / ``ValueError`` /
:class:`~safemeta_fast.errors.SafeMetaError` whose message names something; anything else
(``IndexError``, ``ZeroDivisionError``, ``MemoryError``, ``OverflowError``, a numba error,
...) fails, and so does an example that runs longer than ``TIME_LIMIT`` seconds (a SIGALRM
interrupts it: a hang becomes a failure instead of a stuck CI job). The example count is
bounded so the whole file takes a few seconds.
"""

from __future__ import annotations

import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemeta_fast import CMDP, Mixture, Profile, SafeAdapter, SafeMetaError, rollout
from safemeta_fast.envs import gridworld
from safemeta_fast.envs.families import GridworldFamily, RandomCMDPFamily
from safemeta_fast.experiments.paper import PaperConfig
from safemeta_fast.tasks import Empirical, TruncatedNormal, Uniform

TIME_LIMIT = 20.0
EXAMPLES = 60
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

CLEAR = (TypeError, ValueError, SafeMetaError)


class Hang(Exception):
    """Raised by the alarm when one example runs too long."""


@contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"example ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn, *args, **kwargs):
    """Call ``fn``; return the object, or the clear error it raised (anything else fails)."""
    with time_limit(TIME_LIMIT), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except CLEAR as exc:
            assert str(exc).strip(), f"{type(exc).__name__} without a message"
            return exc


# --- hostile values -------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0),
    st.text(max_size=4), st.just(1e300), st.just(-0.0), st.just(1 - 1e-12),
)


def arrays(shape_hint):
    """Arrays near ``shape_hint`` (sometimes off by one axis), any float content, or junk."""
    def build(draw):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            return draw(scalars)
        if kind == 1:   # ragged nested list
            return [[0.5, 0.5], [1.0]]
        shape = list(shape_hint)
        if kind == 2 and shape:
            shape[draw(st.integers(0, len(shape) - 1))] += draw(st.sampled_from([-1, 1]))
        if kind == 3:
            shape = shape[:-1] if shape else [2]
        shape = [max(0, s) for s in shape]
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x = rng.random(shape)
        if kind == 4:    # a stochastic array, sometimes poisoned
            x = x / np.maximum(x.sum(axis=-1, keepdims=True), 1e-300) if x.ndim else x
            poison = draw(st.sampled_from([None, np.nan, np.inf, -0.1, 2.0]))
            if poison is not None and x.size:
                x.flat[draw(st.integers(0, x.size - 1))] = poison
        if kind == 5 and draw(st.booleans()):
            return x.astype(draw(st.sampled_from([np.int8, np.complex128, object, np.bool_])))
        return x
    return st.composite(lambda draw: build(draw))()


def valid_or(value, junk):
    return st.one_of(st.just(value), junk)


# --- the constructors -----------------------------------------------------------------

S, A, K = 3, 2, 1


def _stochastic(shape, seed):
    x = np.random.default_rng(seed).random(shape) + 0.1
    return x / x.sum(axis=-1, keepdims=True)


GOOD = dict(P=_stochastic((S, A, S), 0), r=np.ones((S, A)), c=np.zeros((S, A, K)),
            cost_limit=np.ones(K), gamma=0.9, nu0=_stochastic((S,), 1))


@FUZZ
@given(P=valid_or(GOOD["P"], arrays((S, A, S))), r=valid_or(GOOD["r"], arrays((S, A))),
       c=valid_or(GOOD["c"], arrays((S, A, K))), b=valid_or(GOOD["cost_limit"], arrays((K,))),
       gamma=valid_or(0.9, scalars), nu0=valid_or(GOOD["nu0"], arrays((S,))))
def test_cmdp_constructor(P, r, c, b, gamma, nu0):
    M = outcome(CMDP, P, r, c, b, gamma, nu0)
    if isinstance(M, CMDP):
        assert np.isfinite(M.r).all() and 0 <= M.gamma < 1
        np.testing.assert_allclose(M.P.sum(axis=2), 1.0, atol=1e-9)


@FUZZ
@given(nxt=valid_or(np.array([[[0, 1], [1, 2]], [[2, 0], [0, 0]], [[1, 1], [2, 2]]]),
                    arrays((S, A, 2))),
       probs=valid_or(np.full((S, A, 2), 0.5), arrays((S, A, 2))),
       gamma=valid_or(0.9, scalars))
def test_cmdp_from_successors(nxt, probs, gamma):
    M = outcome(CMDP.from_successors, nxt, probs, GOOD["r"], GOOD["c"], GOOD["cost_limit"],
                gamma, GOOD["nu0"])
    if isinstance(M, CMDP):
        assert M.n_states == S and (np.asarray(M.succ_next) < S).all()


@FUZZ
@given(policies=valid_or(np.stack([_stochastic((S, A), 2), _stochastic((S, A), 3)]),
                         arrays((2, S, A))),
       weights=valid_or(np.array([0.25, 0.75]), arrays((2,))))
def test_mixture(policies, weights):
    mix = outcome(Mixture, policies, weights)
    if isinstance(mix, Mixture):
        assert abs(float(np.sum(mix.weights)) - 1.0) < 1e-9


PROFILE_FIELDS = ["eps", "lipschitz", "L_r", "L_c", "reward_radius", "cost_radius",
                  "pooled_cost_radius", "min_window", "gate_const", "gate_min", "gate_max",
                  "gate_offset", "fixed_alpha", "horizon", "check_min", "check_frac",
                  "eb_grid", "normalised", "certified"]


@FUZZ
@given(st.dictionaries(st.sampled_from(PROFILE_FIELDS), scalars, max_size=4))
def test_profile(fields):
    outcome(Profile, **fields)


@FUZZ
@given(noise=valid_or(0.3, scalars), size=valid_or(7, scalars), goal=valid_or(None, scalars),
       nu0=valid_or(None, arrays((49,))))
def test_gridworld(noise, size, goal, nu0):
    if isinstance(size, int) and not isinstance(size, bool) and size > 60:
        size = 60   # a valid size beyond this is merely big; the check is of the input
    M = outcome(gridworld, noise, size, goal=goal, nu0=nu0)
    if isinstance(M, CMDP):
        assert M.n_states == size * size


@FUZZ
@given(mean=valid_or(0.3, scalars), std=valid_or(0.03, scalars), low=valid_or(0.0, scalars),
       high=valid_or(0.5, scalars), mode=valid_or("truncate", scalars))
def test_truncated_normal(mean, std, low, high, mode):
    D = outcome(TruncatedNormal, mean, std, low, high, mode=mode)
    if isinstance(D, TruncatedNormal):
        x = D.sample(5, seed=0)
        assert np.isfinite(x).all() and (x >= D.low - 1e-12).all() and (x <= D.high + 1e-12).all()


@FUZZ
@given(low=valid_or([0.0, 1.0], arrays((2,))), high=valid_or([0.5, 2.0], arrays((2,))),
       values=valid_or([0.1, 0.2], arrays((3,))))
def test_uniform_and_empirical(low, high, values):
    U = outcome(Uniform, low, high)
    if isinstance(U, Uniform):
        assert np.isfinite(U.sample(3, seed=0)).all()
    E = outcome(Empirical, values)
    if isinstance(E, Empirical):
        assert np.isfinite(E.sample(3, seed=0)).all()


@FUZZ
@given(size=valid_or(7, scalars), n_states=valid_or(4, scalars), n_actions=valid_or(2, scalars),
       radius=valid_or(0.1, scalars))
def test_families(size, n_states, n_actions, radius):
    if isinstance(size, int) and not isinstance(size, bool) and size > 30:
        size = 30
    if isinstance(n_states, int) and not isinstance(n_states, bool) and n_states > 30:
        n_states = 30
    if isinstance(n_actions, int) and not isinstance(n_actions, bool) and n_actions > 6:
        n_actions = 6
    fam = outcome(GridworldFamily, size=size)
    if isinstance(fam, GridworldFamily):
        assert fam.build(fam.sample(1, seed=0)[0]).n_states == size * size
    fam = outcome(RandomCMDPFamily, n_states, n_actions, radius=radius)
    if isinstance(fam, RandomCMDPFamily):
        assert fam.build(fam.sample(1, seed=0)[0]).n_states == n_states


PAPER_FIELDS = ["n_tasks", "n_episodes", "n_seeds", "seed", "warmup", "horizon", "train_eps",
                "train_delta", "train_seed", "quick", "methods"]


@FUZZ
@given(st.dictionaries(st.sampled_from(PAPER_FIELDS), scalars, max_size=3))
def test_paper_config(fields):
    outcome(PaperConfig, **fields)


@FUZZ
@given(n_episodes=valid_or(20, scalars), horizon=valid_or(10, scalars), seed=valid_or(0, scalars),
       pi=valid_or(np.full((49, 4), 0.25), arrays((49, 4))))
def test_rollout_arguments(grid03, n_episodes, horizon, seed, pi):
    res = outcome(rollout, grid03, pi, n_episodes, horizon, seed=seed)
    if not isinstance(res, Exception):
        assert res.reward.shape == (n_episodes,) and np.isfinite(res.reward).all()


@FUZZ
@given(n_episodes=valid_or(100, scalars), delta=valid_or(None, scalars),
       horizon=valid_or(None, scalars), seed=valid_or(0, scalars),
       profile=st.sampled_from(["certified", "paper", "reference", "nonsense", 3]),
       strict=valid_or(False, scalars))
def test_safe_adapter(paper_policy_set, n_episodes, delta, horizon, seed, profile, strict):
    ad = outcome(SafeAdapter, paper_policy_set, profile=profile, n_episodes=n_episodes,
                 delta=delta, horizon=horizon, seed=seed, strict=strict)
    if isinstance(ad, SafeAdapter):
        step = ad.ask()
        assert 0 <= step.index


def test_alarm_turns_a_hang_into_a_failure():
    """The guard this file relies on: a stuck call fails instead of blocking the suite."""
    import time

    with pytest.raises(Hang):
        with time_limit(0.2):
            time.sleep(5)
