"""Reading other libraries' finite models into a :class:`~safemeta_fast.cmdp.CMDP`.

The model room (``cmdp.py``) keeps the validated class and its small, array-only
constructors; the converters that have to understand a foreign layout live here:

* gymnasium toy-text tables ``env.unwrapped.P[s][a] = [(prob, s_next, reward, terminated)]``
  (:func:`from_gymnasium`), with per-transition cost and reward functions;
* pymdptoolbox's sparse layout, a list of A scipy sparse (S, S) matrices
  (:func:`mdptoolbox_successors`);
* QuantEcon's ``DiscreteDP`` in both of its formulations, and back
  (:func:`from_quantecon`, :func:`to_quantecon`, :func:`quantecon_feasible_actions`).

The public entry points are the ``CMDP`` class methods (``CMDP.from_gymnasium``,
``CMDP.from_mdptoolbox``, ``CMDP.from_quantecon``) and ``M.to_quantecon()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .cmdp import CMDP
from .errors import ModelWarning
from .validation import as_float_array, check_finite

__all__ = [
    "ModelWarning",
    "from_gymnasium",
    "mdptoolbox_successors",
    "from_quantecon",
    "to_quantecon",
    "quantecon_feasible_actions",
    "reachable_states",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def reachable_states(M: CMDP) -> np.ndarray:
    """States reachable from the support of ``nu0`` under some policy.

    Parameters
    ----------
    M : CMDP

    Returns
    -------
    numpy.ndarray of bool, shape (S,)

    Examples
    --------
    >>> import numpy as np
    >>> P = np.zeros((3, 1, 3)); P[0, 0, 1] = 1; P[1, 0, 1] = 1; P[2, 0, 2] = 1
    >>> M = CMDP(P, r=np.zeros((3, 1)), c=np.zeros((3, 1)), cost_limit=0.0, gamma=0.5,
    ...          nu0=[1.0, 0.0, 0.0])
    >>> reachable_states(M).tolist()
    [True, True, False]
    """
    S, A = M.n_states, M.n_actions
    rows = np.repeat(np.arange(S * A) // A, np.diff(M.succ_ptr))
    adj = sp.csr_matrix((np.ones(rows.size), (M.succ_next, rows)), shape=(S, S))  # adj[s', s]
    reach = np.asarray(M.nu0) > 0
    while True:
        new = reach | (adj @ reach.astype(np.float64) > 0)
        if (new == reach).all():
            return new
        reach = new


def _transition_values(name: str, fn, args: tuple, width: int | None) -> np.ndarray:
    """Call a user's per-transition function and check its value (scalar or (K,))."""
    val = fn(*args)
    try:
        arr = np.asarray(val, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name}{args} returned {val!r}; expected a real number or a (K,) "
                        "array of real numbers") from None
    if arr.size == 0 or (width is not None and arr.size != width):
        want = "at least one value" if width is None else f"{width} value(s) like the first call"
        raise ValueError(f"{name}{args} returned {arr.size} value(s); expected {want}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}{args} returned {val!r}; every value must be finite")
    return arr


# ---------------------------------------------------------------------------
# gymnasium
# ---------------------------------------------------------------------------

def _toy_text_table(env):
    if isinstance(env, (Mapping, Sequence)) and not isinstance(env, (str, bytes)):
        return env, None
    base = getattr(env, "unwrapped", env)
    table = getattr(base, "P", None)
    if table is None or not isinstance(table, (Mapping, Sequence)):
        raise TypeError(
            f"env ({type(base).__name__}) has no transition table env.unwrapped.P; "
            "CMDP.from_gymnasium needs a tabular toy-text env (FrozenLake, CliffWalking, "
            "Taxi, or your own with P[s][a] = [(prob, next_state, reward, terminated), ...]). "
            "Non-tabular envs have no model to convert; run a policy set on them with "
            "safemeta_fast.envs.loop.run_env instead"
        )
    return table, base


def from_gymnasium(env, c=None, cost_limit=None, gamma=None, nu0=None, *, cost_fn=None,
                   reward_fn=None) -> CMDP:
    """See :meth:`safemeta_fast.cmdp.CMDP.from_gymnasium` (the documented entry point)."""
    if cost_limit is None or gamma is None:
        raise TypeError("from_gymnasium needs cost_limit and gamma")
    if (c is None) == (cost_fn is None):
        raise TypeError("pass exactly one of c (costs per state or pair) and cost_fn "
                        "(cost per transition)")
    if cost_fn is not None and not callable(cost_fn):
        raise TypeError(f"cost_fn must be callable; got {type(cost_fn).__name__}")
    if reward_fn is not None and not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable; got {type(reward_fn).__name__}")
    table, base = _toy_text_table(env)
    S = len(table)
    if S == 0:
        raise ValueError("the gymnasium table has no states")
    A = len(table[0])
    terminal_used = any(bool(t[3]) for s in range(S) for a in range(A) for t in table[s][a])
    T = S if terminal_used else None  # index of the added absorbing state
    S_out = S + 1 if terminal_used else S
    nxt_lists, prob_lists = [], []
    r = np.zeros((S_out, A))
    c_fn = None  # (S_out, A, K) once K is known
    terminal_targets = set()
    for s in range(S):
        if len(table[s]) != A:
            raise ValueError(f"P[{s}] has {len(table[s])} actions; state 0 has {A}")
        ns_row, p_row = [], []
        for a in range(A):
            ns, ps = [], []
            for prob, s_next, rew, term in table[s][a]:
                prob, s_next, rew, term = float(prob), int(s_next), float(rew), bool(term)
                if term:
                    terminal_targets.add(s_next)
                ns.append(T if term else s_next)
                ps.append(prob)
                args = (s, a, s_next, rew, term)
                if reward_fn is not None:
                    rew = _transition_values("reward_fn", reward_fn, args, 1)[0]
                r[s, a] += prob * rew
                if cost_fn is not None:
                    val = _transition_values("cost_fn", cost_fn, args,
                                             None if c_fn is None else c_fn.shape[2])
                    if c_fn is None:
                        c_fn = np.zeros((S_out, A, val.size))
                    c_fn[s, a] += prob * val
            ns_row.append(ns)
            p_row.append(ps)
        nxt_lists.append(ns_row)
        prob_lists.append(p_row)
    if cost_fn is not None:
        c_arr = c_fn
    else:
        c_arr = as_float_array("c", c, (1, 2, 3))
        if c_arr.ndim == 1:
            if c_arr.shape != (S,):
                raise ValueError(f"c must have shape (S,), (S, A) or (S, A, K) with (S, A) = "
                                 f"({S}, {A}); got {c_arr.shape}")
            c_arr = np.repeat(c_arr[:, None], A, axis=1)
        if c_arr.shape[:2] != (S, A):
            raise ValueError(f"c must have shape (S, A[, K]) = ({S}, {A}[, K]); got {c_arr.shape}")
        if c_arr.ndim == 2:
            c_arr = c_arr[:, :, None]
        if terminal_used:
            c_arr = np.concatenate([c_arr, np.zeros((1, A, c_arr.shape[2]))], axis=0)
    if nu0 is None:
        nu0 = getattr(base, "initial_state_distrib", None)
        if nu0 is None:
            raise ValueError("nu0 not given and the env has no initial_state_distrib")
    nu0_arr = as_float_array("nu0", nu0, 1)
    if nu0_arr.shape != (S,):
        raise ValueError(f"nu0 must have shape (S,) = ({S},); got {nu0_arr.shape}")
    if terminal_used:
        nxt_lists.append([[T] for _ in range(A)])
        prob_lists.append([[1.0] for _ in range(A)])
        nu0_arr = np.concatenate([nu0_arr, [0.0]])
    M = CMDP.from_successors(nxt_lists, prob_lists, r, c_arr, cost_limit, gamma, nu0_arr,
                             terminal_state=T)
    if cost_fn is None and terminal_targets:
        _warn_unreachable_cost(M, sorted(terminal_targets))
    return M


def _warn_unreachable_cost(M: CMDP, terminal_targets: list[int]) -> None:
    """Warn for each constraint whose state costs sit only on states that only
    terminating transitions enter (so the constraint is identically zero)."""
    reach = reachable_states(M)
    targets = np.zeros(M.n_states, dtype=bool)
    targets[terminal_targets] = True
    for k in range(M.n_constraints):
        charged = np.any(np.asarray(M.c[:, :, k]) != 0.0, axis=1)
        lost = charged & targets & ~reach
        if not lost.any() or (charged & reach).any():
            continue
        states = np.flatnonzero(lost).tolist()
        shown = ", ".join(str(s) for s in states[:8]) + (", ..." if len(states) > 8 else "")
        warnings.warn(
            f"c[..., {k}] puts cost only on state(s) {shown}, which are entered only by "
            f"terminating transitions; those go to the added absorbing state {M.terminal_state} "
            "(zero cost), so this cost is never incurred and constraint "
            f"{k} holds for every policy. To charge entering those states, pass a per-transition "
            "cost instead, e.g. for FrozenLake holes "
            "cost_fn=lambda s, a, s_next, reward, terminated: float(terminated and reward == 0)",
            ModelWarning,
            stacklevel=4,
        )


# ---------------------------------------------------------------------------
# pymdptoolbox
# ---------------------------------------------------------------------------

def _is_sparse_stack(P) -> bool:
    """Whether ``P`` is a sequence (or object array) of scipy sparse matrices."""
    if sp.issparse(P):
        return False
    if isinstance(P, np.ndarray) and P.dtype != object:
        return False
    try:
        return len(P) > 0 and all(sp.issparse(m) for m in P)
    except TypeError:
        return False


def mdptoolbox_successors(P):
    """Padded successor arrays from pymdptoolbox's sparse layout.

    Parameters
    ----------
    P : sequence of A scipy sparse matrices, each (S, S)
        ``P[a][s, s']``.

    Returns
    -------
    next_states, probs : numpy.ndarray, shape (S, A, m)
        Padded successor lists for :meth:`CMDP.from_successors` (m = the largest row
        count; padding has probability 0).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> idx, pr = mdptoolbox_successors([sp.csr_matrix([[0.0, 1.0], [0.5, 0.5]])])
    >>> idx.shape, pr[1, 0].tolist()
    ((2, 1, 2), [0.5, 0.5])
    """
    mats = [sp.csr_matrix(m, dtype=np.float64) for m in P]
    A = len(mats)
    S = mats[0].shape[0]
    for a, m in enumerate(mats):
        if m.shape != (S, S):
            raise ValueError(f"P[{a}] has shape {m.shape}; each action's matrix must be "
                             f"(S, S) = ({S}, {S})")
    # rows of the stack are a * S + s; the model's pairs are s * A + a
    order = (np.arange(A)[None, :] * S + np.arange(S)[:, None]).ravel()
    idx, pr = _padded_rows(sp.vstack(mats, format="csr")[order])
    return idx.reshape(S, A, -1), pr.reshape(S, A, -1)


def _padded_rows(Q) -> tuple[np.ndarray, np.ndarray]:
    """A sparse (n, S) matrix as padded (n, m) column-index and value arrays."""
    Q = sp.csr_matrix(Q)
    Q.sum_duplicates()
    Q.sort_indices()
    counts = np.diff(Q.indptr)
    width = max(1, int(counts.max(initial=0)))
    n = Q.shape[0]
    idx = np.zeros((n, width), dtype=np.int64)
    pr = np.zeros((n, width))
    rows = np.repeat(np.arange(n), counts)
    pos = np.arange(Q.indices.size) - np.repeat(Q.indptr[:-1], counts)
    idx[rows, pos] = Q.indices
    pr[rows, pos] = Q.data
    return idx, pr


def _sparse_expected_reward(P, R) -> np.ndarray:
    """``r[s, a] = sum_s' P[a][s, s'] R[a][s, s']`` for sparse ``P`` (and sparse or dense R)."""
    A = len(P)
    S = P[0].shape[0]
    r = np.empty((S, A))
    for a in range(A):
        Ra = R[a] if sp.issparse(R[a]) else np.asarray(R[a], dtype=np.float64)
        if Ra.shape != (S, S):
            raise ValueError(f"R[{a}] has shape {Ra.shape}; a per-transition reward must be "
                             f"(A, S, S) = ({A}, {S}, {S})")
        r[:, a] = np.asarray(sp.csr_matrix(P[a]).multiply(Ra).sum(axis=1)).ravel()
    return r


# ---------------------------------------------------------------------------
# QuantEcon DiscreteDP
# ---------------------------------------------------------------------------

def _ddp_layout(ddp):
    """(S, A, s_idx, a_idx, R (L,), Q (L, S) csr) of a DiscreteDP, feasible pairs only."""
    for attr in ("R", "Q", "beta"):
        if not hasattr(ddp, attr):
            raise TypeError(f"ddp must be a quantecon.markov.DiscreteDP; got "
                            f"{type(ddp).__name__} without .{attr}")
    R = np.asarray(ddp.R, dtype=np.float64)
    if getattr(ddp, "_sa_pair", False):
        s_idx = np.asarray(ddp.s_indices, dtype=np.int64)
        a_idx = np.asarray(ddp.a_indices, dtype=np.int64)
        Q = sp.csr_matrix(ddp.Q, dtype=np.float64)
        S = int(ddp.num_states)
        A = int(a_idx.max()) + 1
    else:
        S, A = R.shape
        s_idx, a_idx = (x.ravel() for x in np.indices((S, A)))
        Q = sp.csr_matrix(np.asarray(ddp.Q, dtype=np.float64).reshape(S * A, S))
        R = R.ravel()
    feasible = R > -np.inf
    if not feasible.all():
        keep = np.flatnonzero(feasible)
        s_idx, a_idx, R, Q = s_idx[keep], a_idx[keep], R[keep], Q[keep]
    return S, A, s_idx, a_idx, R, Q


def quantecon_feasible_actions(ddp) -> np.ndarray:
    """The feasible state-action pairs of a DiscreteDP, shape (S, A) bool.

    A pair is infeasible when it is absent (state-action-pair formulation) or its reward
    is ``-inf`` (product formulation), QuantEcon's two ways of forbidding an action.

    Examples
    --------
    >>> import numpy as np, quantecon as qe
    >>> ddp = qe.markov.DiscreteDP([[1.0, -np.inf]], [[[1.0], [1.0]]], 0.9)
    >>> quantecon_feasible_actions(ddp).tolist()
    [[True, False]]
    """
    S, A, s_idx, a_idx, _, _ = _ddp_layout(ddp)
    return _pair_mask(S, A, s_idx, a_idx)


def _pair_mask(S: int, A: int, s_idx, a_idx) -> np.ndarray:
    mask = np.zeros((S, A), dtype=bool)
    mask[s_idx, a_idx] = True
    return mask


def from_quantecon(ddp, c, cost_limit, nu0, *, infeasible="error") -> CMDP:
    """See :meth:`safemeta_fast.cmdp.CMDP.from_quantecon` (the documented entry point)."""
    if infeasible not in ("error", "copy"):
        raise ValueError(f"infeasible is {infeasible!r}; expected 'error' or 'copy'")
    S, A, s_idx, a_idx, R, Q = _ddp_layout(ddp)
    mask = _pair_mask(S, A, s_idx, a_idx)
    if not mask.any(axis=1).all():
        s = int(np.flatnonzero(~mask.any(axis=1))[0])
        raise ValueError(f"ddp has no feasible action in state {s}")
    pair_of = np.full((S, A), -1, dtype=np.int64)
    pair_of[s_idx, a_idx] = np.arange(s_idx.size)
    # src_a[s, a]: the action whose model the pair (s, a) uses (itself when feasible)
    src_a = np.broadcast_to(np.arange(A), (S, A)).copy()
    if not mask.all():
        s, a = (int(i) for i in np.argwhere(~mask)[0])
        if infeasible == "error":
            raise ValueError(
                f"ddp forbids action {a} in state {s} (reward -inf or no state-action pair) "
                f"and {int((~mask).sum())} pair(s) in all; a CMDP has every action in every "
                "state. Pass infeasible='copy' to give each forbidden action the model of the "
                "state's first feasible action (values and LP optimum unchanged)"
            )
        src_a = np.where(mask, src_a, np.argmax(mask, axis=1)[:, None])
    rows = np.arange(S)[:, None]
    src = pair_of[rows, src_a].ravel()
    idx, pr = _padded_rows(Q[src])
    c_arr = as_float_array("c", c, (2, 3))
    if c_arr.shape[:2] != (S, A):
        raise ValueError(f"c must have shape (S, A[, K]) = ({S}, {A}[, K]); got {c_arr.shape}")
    c_arr = c_arr[rows, src_a]  # forbidden pairs take their source's cost (their own is ignored)
    check_finite("c", c_arr)
    return CMDP.from_successors(idx.reshape(S, A, -1), pr.reshape(S, A, -1),
                                R[src].reshape(S, A), c_arr, cost_limit, float(ddp.beta), nu0)


def to_quantecon(M: CMDP, *, feasible=None, multiplier=None):
    """See :meth:`safemeta_fast.cmdp.CMDP.to_quantecon` (the documented entry point)."""
    try:
        from quantecon.markov import DiscreteDP
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("M.to_quantecon() needs quantecon (pip install quantecon)") from None
    S, A = M.n_states, M.n_actions
    r = np.array(M.r)
    if multiplier is not None:
        lam = as_float_array("multiplier", multiplier, (0, 1)).reshape(-1)
        if lam.shape != (M.n_constraints,):
            raise ValueError(f"multiplier must have shape (K,) = ({M.n_constraints},); "
                             f"got {lam.shape}")
        r = r - np.asarray(M.c) @ lam
    keep = np.ones(S * A, dtype=bool)
    if feasible is not None:
        f = np.asarray(feasible)
        if f.shape != (S, A) or f.dtype != bool:
            raise ValueError(f"feasible must be a bool array of shape (S, A) = ({S}, {A}); "
                             f"got {f.dtype} {f.shape}")
        if not f.any(axis=1).all():
            s = int(np.flatnonzero(~f.any(axis=1))[0])
            raise ValueError(f"feasible[{s}] has no True entry; every state needs an action")
        keep = f.ravel()
    Q = sp.csr_matrix((np.array(M.succ_prob), np.array(M.succ_next), np.array(M.succ_ptr)),
                      shape=(S * A, S))[keep]
    s_idx, a_idx = (x.ravel()[keep] for x in np.indices((S, A)))
    return DiscreteDP(r.ravel()[keep], Q, M.gamma, s_idx, a_idx)
