"""Hypothesis strategies that build valid random CMDPs and policies."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from safemeta_fast import CMDP


def _simplex(rng: np.random.Generator, shape, sparsity: float) -> np.ndarray:
    x = rng.exponential(size=shape)
    if sparsity > 0:
        x = np.where(rng.random(shape) < sparsity, 0.0, x)
        # keep at least one entry per row
        flat = x.reshape(-1, shape[-1])
        empty = flat.sum(axis=1) == 0
        flat[empty, rng.integers(0, shape[-1], size=empty.sum())] = 1.0
        x = flat.reshape(shape)
    return x / x.sum(axis=-1, keepdims=True)


def random_cmdp(rng: np.random.Generator, S: int, A: int, K: int = 1, gamma: float = 0.9,
                sparsity: float = 0.0, cost_limit=None) -> CMDP:
    """A random valid CMDP (dense input)."""
    P = _simplex(rng, (S, A, S), sparsity)
    r = rng.random((S, A))
    c = rng.random((S, A, K))
    nu0 = _simplex(rng, (S,), 0.0)
    b = np.full(K, 0.5 / (1 - gamma)) if cost_limit is None else cost_limit
    return CMDP(P, r, c, b, gamma, nu0)


def random_policy(rng: np.random.Generator, S: int, A: int,
                  deterministic: bool = False) -> np.ndarray:
    if deterministic:
        pi = np.zeros((S, A))
        pi[np.arange(S), rng.integers(0, A, size=S)] = 1.0
        return pi
    return _simplex(rng, (S, A), 0.3)


@st.composite
def cmdps(draw, max_states: int = 6, max_actions: int = 3, max_constraints: int = 2,
          gammas=st.floats(0.0, 0.95)):
    """Strategy: a random valid CMDP with up to the given sizes (sparse rows allowed)."""
    S = draw(st.integers(1, max_states))
    A = draw(st.integers(1, max_actions))
    K = draw(st.integers(1, max_constraints))
    gamma = draw(gammas)
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.8]))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_cmdp(np.random.default_rng(seed), S, A, K, gamma, sparsity)


@st.composite
def cmdp_and_policy(draw, **kw):
    M = draw(cmdps(**kw))
    seed = draw(st.integers(0, 2**32 - 1))
    det = draw(st.booleans())
    return M, random_policy(np.random.default_rng(seed), M.n_states, M.n_actions, det)
