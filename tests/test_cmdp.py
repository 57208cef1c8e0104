"""The CMDP model: validation (one test per error), freezing, successor form, converters."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings

from safemeta_fast import CMDP
from safemeta_fast.policy import Mixture, as_policies, as_policy, as_weights

from .strategies import cmdps, random_cmdp


def _valid(S=3, A=2, K=1):
    rng = np.random.default_rng(0)
    P = rng.random((S, A, S))
    P /= P.sum(axis=2, keepdims=True)
    return dict(P=P, r=rng.random((S, A)), c=rng.random((S, A, K)), cost_limit=np.ones(K),
                gamma=0.9, nu0=np.full(S, 1.0 / S))


def _build(**over):
    kw = _valid()
    kw.update(over)
    return CMDP(**kw)


# -- validation: one test per error ------------------------------------------------

def test_valid_model_attributes():
    M = _build()
    assert (M.n_states, M.n_actions, M.n_constraints) == (3, 2, 1)
    for name in ("P", "r", "c", "cost_limit", "nu0"):
        arr = getattr(M, name)
        assert arr.dtype == np.float64 and arr.flags.c_contiguous and not arr.flags.writeable
    assert M.c.shape == (3, 2, 1) and M.cost_limit.shape == (1,)


def test_two_dimensional_cost_means_one_constraint():
    kw = _valid()
    kw["c"] = kw["c"][:, :, 0]
    kw["cost_limit"] = 1.0
    M = CMDP(**kw)
    assert M.c.shape == (3, 2, 1) and M.cost_limit.tolist() == [1.0]


@pytest.mark.parametrize(
    "field, value, exc, pattern",
    [
        ("P", np.ones((3, 2)), ValueError, r"P must have 3 dimensions"),
        ("P", np.full((3, 2, 4), 0.25), ValueError, r"P must have shape \(S, A, S\)"),
        ("P", np.zeros((0, 2, 0)), ValueError, r"at least one state"),
        ("P", "abc", TypeError, r"P must be an array"),
        ("r", np.ones((3, 3)), ValueError, r"r must have shape \(S, A\)"),
        ("r", np.array([[1.0, np.nan], [0, 0], [0, 0]]), ValueError, r"r\[0, 1\] is nan"),
        ("c", np.ones((3, 2, 0)), ValueError, r"at least one constraint"),
        ("c", np.ones((2, 2, 1)), ValueError, r"c must have shape"),
        ("c", np.full((3, 2, 1), np.inf), ValueError, r"c\[0, 0, 0\] is inf"),
        ("cost_limit", np.ones(2), ValueError, r"cost_limit must have shape \(K,\)"),
        ("cost_limit", np.array([np.nan]), ValueError, r"cost_limit\[0\] is nan"),
        ("gamma", 1.0, ValueError, r"gamma is 1.0; it must lie in \[0, 1\)"),
        ("gamma", -0.1, ValueError, r"gamma is -0.1"),
        ("gamma", float("nan"), ValueError, r"gamma is nan"),
        ("gamma", "0.9", TypeError, r"gamma must be a real scalar"),
        ("gamma", True, TypeError, r"gamma must be a real scalar"),
        ("nu0", np.ones(4) / 4, ValueError, r"nu0 must have shape \(S,\)"),
        ("nu0", np.array([0.5, 0.6, -0.1]), ValueError, r"nu0\[2\] is -0.1.*>= 0"),
        ("nu0", np.array([0.5, 0.5, 0.5]), ValueError, r"nu0 sums to 1.5"),
        ("r", np.array([["a", "b"]] * 3), TypeError, r"r must be an array of real numbers"),
    ],
)
def test_validation_errors(field, value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _build(**{field: value})


def test_negative_probability_named_with_index():
    kw = _valid()
    P = kw["P"].copy()
    P[1, 0, 0] -= 1.0
    P[1, 0, 1] += 1.0
    with pytest.raises(ValueError, match=r"P\[1, 0, 0\] is .*probabilities must be >= 0"):
        _build(P=P)


def test_row_sum_error_names_pair_and_tolerance():
    kw = _valid()
    P = kw["P"].copy()
    P[2, 1] *= 0.97
    with pytest.raises(ValueError,
                       match=r"P\[2, 1\] sums to 0.97.*must sum to 1 \(tolerance 1e-09\)"):
        _build(P=P)


def test_nonfinite_probability():
    kw = _valid()
    P = kw["P"].copy()
    P[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"P\[0, 0, 0\] is nan"):
        _build(P=P)


def test_row_sum_within_tolerance_accepted():
    kw = _valid()
    P = kw["P"].copy()
    P[0, 0, 0] += 5e-10
    _build(P=P)


def test_frozen():
    M = _build()
    with pytest.raises(AttributeError, match="frozen"):
        M.gamma = 0.5
    with pytest.raises(ValueError):
        M.r[0, 0] = 1.0
    with pytest.raises(AttributeError):
        del M.r


def test_input_not_aliased():
    kw = _valid()
    M = CMDP(**kw)
    kw["r"][0, 0] = 123.0
    assert M.r[0, 0] != 123.0


# -- successor form ------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(cmdps())
def test_successor_rows_reproduce_dense(M):
    S, A = M.n_states, M.n_actions
    dense = np.array(M.P).reshape(S * A, S)
    for i in range(S * A):
        lo, hi = M.succ_ptr[i], M.succ_ptr[i + 1]
        row = np.zeros(S)
        row[M.succ_next[lo:hi]] = M.succ_prob[lo:hi]
        np.testing.assert_array_equal(row, dense[i])
        assert np.all(np.diff(M.succ_next[lo:hi]) > 0)  # sorted, no duplicates
        assert np.all(M.succ_prob[lo:hi] > 0)


def test_from_successors_merges_duplicates_and_matches_dense():
    # pair (0, 0) lists state 1 twice: merged
    nxt = [[[1, 1, 0]], [[1]]]
    prb = [[[0.25, 0.25, 0.5]], [[1.0]]]
    M = CMDP.from_successors(nxt, prb, r=[[0.0], [1.0]], c=[[1.0], [0.0]], cost_limit=1.0,
                             gamma=0.5, nu0=[1.0, 0.0])
    assert not M.has_dense
    np.testing.assert_array_equal(M.P[0, 0], [0.5, 0.5])
    assert M.has_dense
    assert M.succ_next.tolist() == [0, 1, 1] and M.succ_prob.tolist() == [0.5, 0.5, 1.0]


def test_from_successors_padded_arrays_equal_dense_constructor():
    M = random_cmdp(np.random.default_rng(3), 5, 3, 2, sparsity=0.6)
    S, A = 5, 3
    width = int(np.diff(M.succ_ptr).max())
    nxt = np.zeros((S, A, width), dtype=np.int64)
    prb = np.zeros((S, A, width))
    for i in range(S * A):
        lo, hi = M.succ_ptr[i], M.succ_ptr[i + 1]
        nxt[i // A, i % A, : hi - lo] = M.succ_next[lo:hi]
        prb[i // A, i % A, : hi - lo] = M.succ_prob[lo:hi]
    M2 = CMDP.from_successors(nxt, prb, M.r, M.c, M.cost_limit, M.gamma, M.nu0)
    np.testing.assert_array_equal(M2.P, M.P)
    np.testing.assert_array_equal(M2.succ_ptr, M.succ_ptr)


@pytest.mark.parametrize(
    "nxt, prb, exc, pattern",
    [
        ([[[5]], [[1]]], [[[1.0]], [[1.0]]], ValueError,
         r"next_states\[0, 0, 0\] is 5; state indices must lie in \[0, 2\)"),
        ([[[1]], [[1]]], [[[0.9]], [[1.0]]], ValueError, r"probs\[0, 0\] sums to 0.9"),
        ([[[1]], [[1]]], [[[-1.0]], [[1.0]]], ValueError, r"probs\[0, 0, 0\] is -1.0"),
        ([[[1, 0]], [[1]]], [[[1.0]], [[1.0]]], ValueError, r"has 2 states but .* 1 probabilities"),
        ([[[1]]], [[[1.0]]], ValueError, r"next_states must have shape \(S, A, m\) = \(2, 1, m\)"),
        ([[[1]], [[1, 0]]], [[[1.0]]], ValueError, r"one entry per state \(2\)"),
        (np.array([[[0.5]], [[1.0]]]), np.array([[[1.0]], [[1.0]]]), TypeError,
         r"integer state indices"),
    ],
)
def test_from_successors_validation(nxt, prb, exc, pattern):
    with pytest.raises(exc, match=pattern):
        CMDP.from_successors(nxt, prb, r=[[0.0], [1.0]], c=[[1.0], [0.0]], cost_limit=1.0,
                             gamma=0.5, nu0=[1.0, 0.0])


def test_absorbing_detection(two_state, grid03):
    assert two_state.absorbing.tolist() == [False, True]
    assert np.flatnonzero(grid03.absorbing).tolist() == [45]
    # action-dependent reward at a self-loop state: not absorbing in the closed-form sense
    r = np.array(two_state.r)
    r[1, 1] = 0.7
    assert not two_state.replace(r=r).absorbing[1]


def test_replace_revalidates_and_shares_transitions(two_state):
    M2 = two_state.replace(cost_limit=[3.0])
    assert M2.cost_limit.tolist() == [3.0] and M2.succ_next is two_state.succ_next
    with pytest.raises(ValueError, match="gamma"):
        two_state.replace(gamma=1.5)


def test_pickle_round_trip(grid03):
    M2 = pickle.loads(pickle.dumps(grid03))
    np.testing.assert_array_equal(M2.P, grid03.P)
    np.testing.assert_array_equal(M2.nu0, grid03.nu0)
    assert M2.gamma == grid03.gamma


def test_repr(two_state):
    assert "n_states=2" in repr(two_state) and "nnz=4" in repr(two_state)


# -- converters ---------------------------------------------------------------------

def test_from_mdptoolbox_layouts():
    kw = _valid()
    P_ass = kw["P"].transpose(1, 0, 2)
    M = CMDP.from_mdptoolbox(P_ass, kw["r"], kw["c"], 1.0, 0.9, kw["nu0"])
    np.testing.assert_array_equal(M.P, kw["P"])
    # per-state reward
    M1 = CMDP.from_mdptoolbox(P_ass, np.array([1.0, 2.0, 3.0]), kw["c"], 1.0, 0.9, kw["nu0"])
    np.testing.assert_array_equal(M1.r, [[1, 1], [2, 2], [3, 3]])
    # per-transition reward R[a, s, s'] -> expected reward
    R3 = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    M3 = CMDP.from_mdptoolbox(P_ass, R3, kw["c"], 1.0, 0.9, kw["nu0"])
    np.testing.assert_allclose(M3.r, np.einsum("ast,ast->sa", P_ass, R3))
    with pytest.raises(ValueError, match=r"\(A, S, S\)"):
        CMDP.from_mdptoolbox(np.ones((2, 3, 4)) / 4, kw["r"], kw["c"], 1.0, 0.9, kw["nu0"])


def test_from_gymnasium_table_with_termination():
    # 2 states, 1 action: state 0 moves to 1 (reward 1, terminated); state 1 stays.
    table = {0: {0: [(1.0, 1, 1.0, True)]}, 1: {0: [(0.5, 1, 0.0, False), (0.5, 0, 2.0, False)]}}
    M = CMDP.from_gymnasium(table, c=[[1.0], [0.0]], cost_limit=1.0, gamma=0.9, nu0=[1.0, 0.0])
    assert M.n_states == 3  # one extra absorbing terminal state
    np.testing.assert_allclose(M.P[0, 0], [0, 0, 1])
    np.testing.assert_allclose(M.P[1, 0], [0.5, 0.5, 0])
    np.testing.assert_allclose(M.r[:, 0], [1.0, 1.0, 0.0])
    assert M.absorbing.tolist() == [False, False, True]


def test_from_gymnasium_frozenlake():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("FrozenLake-v1", is_slippery=True)
    S = env.observation_space.n
    A = env.action_space.n
    M = CMDP.from_gymnasium(env, c=np.zeros((S, A)), cost_limit=0.0, gamma=0.95)
    assert M.n_actions == A and M.n_states in (S, S + 1)
    np.testing.assert_allclose(M.nu0[:S], env.unwrapped.initial_state_distrib)
    # the slippery lake moves with prob 1/3 to each of three directions
    assert np.isclose(M.P[0, 1].max(), 1 / 3) or np.isclose(M.P[0, 1].max(), 2 / 3)
    with pytest.raises(ValueError, match="c must have shape"):
        CMDP.from_gymnasium(env, c=np.zeros((S + 1, A)), cost_limit=0.0, gamma=0.95)


# -- policies and mixtures ------------------------------------------------------------

def test_policy_validation():
    with pytest.raises(ValueError, match=r"pi must have shape \(S, A\) = \(3, 2\)"):
        as_policy(np.full((2, 2), 0.5), 3, 2)
    with pytest.raises(ValueError, match=r"pi\[1\] sums to 0.8"):
        as_policy([[0.5, 0.5], [0.4, 0.4], [1, 0]], 3, 2)
    with pytest.raises(ValueError, match=r"pi\[0, 1\] is -0.5"):
        as_policy([[1.5, -0.5], [0.5, 0.5], [1, 0]], 3, 2)
    with pytest.raises(ValueError, match=r"policies must have shape \(n, S, A\)"):
        as_policies(np.full((2, 3, 3), 1 / 3), 3, 2)
    assert as_policies(np.full((3, 2), 0.5), 3, 2).shape == (1, 3, 2)
    with pytest.raises(ValueError, match=r"weights must have shape \(n,\) = \(2,\)"):
        as_weights([1.0], 2)


def test_mixture_validation():
    mix = Mixture(np.full((2, 3, 2), 0.5), [0.25, 0.75])
    assert mix.n_components == 2 and not mix.weights.flags.writeable
    np.testing.assert_allclose(mix.step_policy(), 0.5)
    with pytest.raises(ValueError, match=r"weights\[0\] is -0.25"):
        Mixture(np.full((2, 3, 2), 0.5), [-0.25, 1.25])
    with pytest.raises(ValueError, match="mixture policies must have shape"):
        mix.check_shape(4, 2)


class _Tampered:
    """Pickles as a CMDP whose reduce arguments were edited (what a tampered file holds)."""

    def __init__(self, M, index, value):
        fn, args = M.__reduce__()
        args = list(args)
        args[index] = value
        self.reduced = (fn, tuple(args))

    def __reduce__(self):
        return self.reduced


@pytest.mark.parametrize("index, edit, match", [
    (3, lambda a: np.where(np.arange(a.size) == 5, 10**6, a), r"succ_next\[5\] is 1000000"),
    (3, lambda a: np.where(np.arange(a.size) == 0, -3, a), r"succ_next\[0\] is -3"),
    (2, lambda a: a[:-1], r"succ_ptr has shape"),
    (2, lambda a: a * 2, r"succ_ptr must rise from 0"),
    (4, lambda a: a * 0.5, r"succ_prob of pair \(\d+, \d+\) sums to 0\.5"),
    (4, lambda a: -a, r"succ_prob\[0\] is -"),
])
def test_tampered_pickle_is_refused_like_bad_constructor_input(grid03, index, edit, match):
    args = grid03.__reduce__()[1]
    blob = pickle.dumps(_Tampered(grid03, index, edit(np.array(args[index]))))
    with pytest.raises(ValueError, match=match):
        pickle.loads(blob)
