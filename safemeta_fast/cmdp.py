"""The validated tabular constrained MDP.

A :class:`CMDP` is frozen: its arrays are float64, C-contiguous and read-only, and it
is validated once at construction. Inside it keeps a compact successor form of the
transition kernel (compressed sparse rows over the S*A state-action pairs), which the
kernels use for rollouts and iterative evaluation, so a large sparse task never needs
the dense (S, A, S) tensor. ``M.P`` materialises the dense tensor on demand.

Conventions (SPEC section 2): ``P[s, a, s']``, ``r[s, a]``, ``c[s, a, k]``, cost limits
``cost_limit[k]``, values are discounted sums from ``s_0 ~ nu0``; a policy is feasible
when ``V_c^k(pi) <= cost_limit[k]`` for every k.
"""

from __future__ import annotations

import numpy as np

from .validation import (
    PROB_ATOL,
    as_float_array,
    check_finite,
    check_gamma,
    check_nonneg,
    check_row_sums,
    check_shape,
    readonly,
)

__all__ = ["CMDP", "PROB_ATOL"]

# ---------------------------------------------------------------------------
# compact successor representation
# ---------------------------------------------------------------------------

def _csr_from_triplets(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int):
    """Sort (row, col) pairs, merge duplicates by summing, drop zero entries."""
    keep = vals != 0.0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    if rows.size:
        new = np.empty(rows.size, dtype=bool)
        new[0] = True
        new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        starts = np.flatnonzero(new)
        vals = np.add.reduceat(vals, starts)
        rows, cols = rows[starts], cols[starts]
    counts = np.bincount(rows, minlength=n_rows)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, cols.astype(np.int64), vals.astype(np.float64)


def _pad_successor_lists(name_s: str, name_p: str, next_states, probs, n_states: int,
                         n_actions: int):
    """Nested lists [s][a] -> padded (S, A, m) arrays (padding has probability 0)."""
    if len(next_states) != n_states or len(probs) != n_states:
        raise ValueError(
            f"{name_s} and {name_p} must have one entry per state ({n_states}); "
            f"got {len(next_states)} and {len(probs)}"
        )
    width = 1
    for s in range(n_states):
        if len(next_states[s]) != n_actions or len(probs[s]) != n_actions:
            raise ValueError(
                f"{name_s}[{s}] and {name_p}[{s}] must have one entry per action ({n_actions}); "
                f"got {len(next_states[s])} and {len(probs[s])}"
            )
        for a in range(n_actions):
            ns, ps = next_states[s][a], probs[s][a]
            if len(ns) != len(ps):
                raise ValueError(
                    f"{name_s}[{s}][{a}] has {len(ns)} states but {name_p}[{s}][{a}] has "
                    f"{len(ps)} probabilities; they must match"
                )
            width = max(width, len(ns))
    idx = np.zeros((n_states, n_actions, width), dtype=np.int64)
    pr = np.zeros((n_states, n_actions, width), dtype=np.float64)
    for s in range(n_states):
        for a in range(n_actions):
            ns, ps = next_states[s][a], probs[s][a]
            idx[s, a, : len(ns)] = np.asarray(ns, dtype=np.int64) if len(ns) else 0
            pr[s, a, : len(ps)] = np.asarray(ps, dtype=np.float64) if len(ps) else 0.0
    return idx, pr


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------

class CMDP:
    """A validated, frozen tabular constrained MDP.

    Parameters
    ----------
    P : array_like, shape (S, A, S)
        Transition probabilities ``P[s, a, s']``; each row ``P[s, a, :]`` sums to 1
        (absolute tolerance ``PROB_ATOL`` = 1e-9) and has no negative entry.
    r : array_like, shape (S, A)
        Reward per state-action pair.
    c : array_like, shape (S, A, K) or (S, A)
        Constraint costs; a 2-D array means a single constraint (K = 1).
    cost_limit : array_like, shape (K,) or scalar
        Limits ``b[k]``; a policy is feasible when ``V_c^k(pi) <= b[k]`` for all k.
    gamma : float
        Discount factor in [0, 1).
    nu0 : array_like, shape (S,)
        Initial state distribution (sums to 1 within 1e-9, no negative entry).

    Attributes
    ----------
    P, r, c, cost_limit, gamma, nu0
        The validated inputs (float64, C-contiguous, read-only); ``c`` is always 3-D.
    succ_ptr, succ_next, succ_prob : numpy.ndarray
        Compressed successor rows: for the pair ``i = s * A + a`` the successors are
        ``succ_next[succ_ptr[i]:succ_ptr[i+1]]`` with probabilities ``succ_prob[...]``
        (zero entries dropped, duplicates merged, sorted by state).
    absorbing : numpy.ndarray of bool, shape (S,)
        States that every action maps to themselves with probability 1 and whose reward
        and costs do not depend on the action (episodes can be finished in closed form).
    terminal_state : int or None
        Index of the absorbing state a converter added for terminated episodes
        (:meth:`from_gymnasium`), else None. It survives :meth:`replace` and pickling.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.zeros((2, 1, 2)); P[0, 0, 1] = 1.0; P[1, 0, 1] = 1.0
    >>> M = CMDP(P, r=[[0.0], [1.0]], c=[[1.0], [0.0]], cost_limit=1.0, gamma=0.5, nu0=[1.0, 0.0])
    >>> M.n_states, M.n_actions, M.n_constraints
    (2, 1, 1)
    """

    __slots__ = (
        "_P", "r", "c", "cost_limit", "gamma", "nu0",
        "succ_ptr", "succ_next", "succ_prob", "absorbing", "terminal_state", "_frozen",
    )

    def __init__(self, P, r, c, cost_limit, gamma, nu0):
        P = as_float_array("P", P, 3)
        S, A = P.shape[0], P.shape[1]
        if S == 0 or A == 0:
            raise ValueError(f"P has shape {P.shape}; it needs at least one state and one action")
        check_shape("P", P, (S, A, S), "(S, A, S)")
        check_finite("P", P)
        check_nonneg("P", P)
        sums = P.sum(axis=2).ravel()
        check_row_sums("P", sums, lambda i: f"[{i // A}, {i % A}]")
        rows, cols = np.nonzero(P.reshape(S * A, S))
        ptr, nxt, prob = _csr_from_triplets(
            rows.astype(np.int64), cols.astype(np.int64), P.reshape(S * A, S)[rows, cols], S * A
        )
        self._init_common(S, A, ptr, nxt, prob, r, c, cost_limit, gamma, nu0, dense=readonly(P))

    # -- alternative constructors ------------------------------------------------

    @classmethod
    def from_successors(cls, next_states, probs, r, c, cost_limit, gamma, nu0, *,
                        terminal_state=None) -> "CMDP":
        """Build a CMDP from successor lists, without a dense transition tensor.

        Parameters
        ----------
        next_states : array_like of int, shape (S, A, m), or nested sequences [s][a]
            Successor states of each pair. Padded arrays may repeat states or use any
            valid index where the probability is 0; repeated states are merged.
        probs : array_like of float, same layout as ``next_states``
            Their probabilities; each (s, a) list sums to 1 (tolerance 1e-9).
        r, c, cost_limit, gamma, nu0
            As in :class:`CMDP`; ``r`` fixes S and A.
        terminal_state : int, optional
            Mark this absorbing state as the model's added terminal state
            (:attr:`terminal_state`); a converter's business, rarely a user's.

        Examples
        --------
        >>> M = CMDP.from_successors([[[1]], [[1]]], [[[1.0]], [[1.0]]], r=[[0.0], [1.0]],
        ...                          c=[[1.0], [0.0]], cost_limit=1.0, gamma=0.5, nu0=[1.0, 0.0])
        >>> M.P[0, 0].tolist()
        [0.0, 1.0]
        """
        r_arr = as_float_array("r", r, 2)
        S, A = r_arr.shape
        if S == 0 or A == 0:
            raise ValueError(
                f"r has shape {r_arr.shape}; it needs at least one state and one action")
        try:
            idx = np.asarray(next_states)
            regular = idx.dtype != object and idx.ndim == 3
        except ValueError:  # ragged nested lists
            regular = False
        if regular:
            pr = as_float_array("probs", probs, 3)
        else:
            idx, pr = _pad_successor_lists("next_states", "probs", next_states, probs, S, A)
        if idx.ndim != 3 or idx.shape[:2] != (S, A):
            raise ValueError(
                f"next_states must have shape (S, A, m) = ({S}, {A}, m); got {idx.shape}")
        if pr.shape != idx.shape:
            raise ValueError(
                f"probs must have the shape of next_states {idx.shape}; got {pr.shape}")
        if not np.issubdtype(idx.dtype, np.integer):
            whole = np.all(np.isfinite(idx)) and np.all(idx == np.round(idx))
            if np.issubdtype(idx.dtype, np.floating) and whole:
                idx = idx.astype(np.int64)
            else:
                raise TypeError(
                    f"next_states must hold integer state indices; got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        check_finite("probs", pr)
        check_nonneg("probs", pr)
        bad = (pr > 0) & ((idx < 0) | (idx >= S))
        if bad.any():
            j = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"next_states{list(j)} is {idx[j]}; state indices must lie in [0, {S})")
        sums = pr.sum(axis=2).ravel()
        check_row_sums("probs", sums, lambda i: f"[{i // A}, {i % A}]")
        m = idx.shape[2]
        rows = np.repeat(np.arange(S * A, dtype=np.int64), m)
        ptr, nxt, prob = _csr_from_triplets(rows, idx.ravel(), pr.ravel(), S * A)
        obj = cls.__new__(cls)
        obj._init_common(S, A, ptr, nxt, prob, r_arr, c, cost_limit, gamma, nu0, dense=None,
                         terminal_state=terminal_state)
        return obj

    @classmethod
    def from_mdptoolbox(cls, P, R, c, cost_limit, gamma, nu0) -> "CMDP":
        """Build a CMDP from pymdptoolbox's layout (dense or sparse).

        Parameters
        ----------
        P : array_like, shape (A, S, S), or a sequence of A scipy sparse (S, S) matrices
            ``P[a, s, s']`` (pymdptoolbox order: action first). The sparse form (what
            pymdptoolbox's own examples build for large models) is read row by row and
            never densified.
        R : array_like, shape (S, A), (S,) or (A, S, S), or A sparse (S, S) matrices
            Reward per pair, per state (same for every action) or per transition
            ``R[a, s, s']`` (then the expected reward ``sum_s' P R`` is used).
        c, cost_limit, gamma, nu0
            As in :class:`CMDP`.

        Examples
        --------
        >>> import scipy.sparse as sp
        >>> P = [sp.csr_matrix([[0.0, 1.0], [0.0, 1.0]])]
        >>> M = CMDP.from_mdptoolbox(P, [0.0, 1.0], c=[[1.0], [0.0]], cost_limit=1.0,
        ...                          gamma=0.5, nu0=[1.0, 0.0])
        >>> M.P[0, 0].tolist()
        [0.0, 1.0]
        """
        from . import converters as _cv

        if _cv._is_sparse_stack(P):
            idx, pr = _cv.mdptoolbox_successors(P)
            S, A = idx.shape[0], idx.shape[1]
            P_sas = None
        else:
            P_arr = as_float_array("P", P, 3)
            if P_arr.shape[1] != P_arr.shape[2]:
                raise ValueError(
                    f"P must have shape (A, S, S) in pymdptoolbox layout; got {P_arr.shape}")
            P_sas = np.ascontiguousarray(P_arr.transpose(1, 0, 2))
            S, A = P_sas.shape[0], P_sas.shape[1]
        if _cv._is_sparse_stack(R) or (P_sas is None and np.ndim(R) == 3):
            if len(R) != A:
                raise ValueError(f"R has {len(R)} per-action matrices; P has A = {A}")
            per_action = P if P_sas is None else list(P_sas.transpose(1, 0, 2))
            r = _cv._sparse_expected_reward(per_action, R)
        else:
            R_arr = as_float_array("R", R, (1, 2, 3))
            if R_arr.ndim == 1:
                check_shape("R", R_arr, (S,), "(S,)")
                r = np.repeat(R_arr[:, None], A, axis=1)
            elif R_arr.ndim == 2:
                check_shape("R", R_arr, (S, A), "(S, A)")
                r = R_arr
            else:
                check_shape("R", R_arr, (A, S, S), "(A, S, S)")
                r = np.einsum("sat,ast->sa", P_sas, R_arr)
        if P_sas is None:
            return cls.from_successors(idx, pr, r, c, cost_limit, gamma, nu0)
        return cls(P_sas, r, c, cost_limit, gamma, nu0)

    @classmethod
    def from_gymnasium(cls, env, c=None, cost_limit=None, gamma=None, nu0=None, *,
                       cost_fn=None, reward_fn=None) -> "CMDP":
        """Build a CMDP from a gymnasium toy-text transition table.

        Parameters
        ----------
        env : gymnasium.Env or dict
            An environment whose ``env.unwrapped.P`` is the toy-text table
            ``P[s][a] = [(prob, next_state, reward, terminated), ...]``, or that table.
            An env without such a table (Box spaces, MuJoCo, Blackjack, ...) raises
            ``TypeError``.
        c : array_like, shape (S,), (S, A) or (S, A, K), optional
            Costs of the original states (charged when acting there); give this or
            ``cost_fn``. A cost on a state that only terminating transitions enter is
            never incurred (see Notes); a :class:`~safemeta_fast.converters.ModelWarning`
            says so.
        cost_limit : array_like, shape (K,) or scalar
            As in :class:`CMDP` (required).
        gamma : float
            As in :class:`CMDP` (required).
        nu0 : array_like, shape (S,), optional
            Initial distribution; defaults to ``env.unwrapped.initial_state_distrib``.
        cost_fn : callable, optional
            ``cost_fn(s, a, s_next, reward, terminated) -> float or (K,)``: the cost of one
            transition of the table (``s_next`` is the table's own next state, before the
            redirection described below; ``reward`` is the table's reward). The pair's
            cost is the expectation ``c[s, a] = sum_j prob_j cost_fn(...)``.
        reward_fn : callable, optional
            ``reward_fn(s, a, s_next, reward, terminated) -> float``: a new reward per
            transition (default: the table's), e.g. to move a penalty into a cost.

        Returns
        -------
        CMDP
            With ``M.terminal_state`` = S (the added absorbing state) when some transition
            terminates, else None.

        Notes
        -----
        The reward of a pair is the expected transition reward. A transition flagged
        ``terminated`` leads to one extra absorbing state (index S) with zero reward
        and zero cost, so the discounted values equal the episodic returns. The extra
        state is added only when some transition terminates. The table's own terminal
        states (FrozenLake's holes and goal) are then never occupied: a per-state cost
        ``c`` on a hole is lost, while
        ``cost_fn=lambda s, a, s_next, reward, terminated: float(terminated and reward == 0)``
        charges the step that falls in.

        Time limits: gymnasium's ``TimeLimit`` (``max_episode_steps``, 100 for
        FrozenLake-v1) truncates episodes; truncation is not termination and is not part
        of the model. The CMDP's values are infinite-horizon discounted sums; an episode
        truncated after T steps misses at most ``gamma**T / (1 - gamma)`` times the
        largest per-step reward (or cost), so choose ``max_episode_steps`` well above
        ``1 / (1 - gamma)`` when you compare observed returns with the model
        (:func:`safemeta_fast.envs.loop.run_env` warns otherwise).

        Examples
        --------
        >>> import gymnasium as gym
        >>> env = gym.make("FrozenLake-v1", is_slippery=True)
        >>> hole = lambda s, a, s_next, reward, terminated: float(terminated and reward == 0)
        >>> M = CMDP.from_gymnasium(env, cost_fn=hole, cost_limit=0.1, gamma=0.95)
        >>> M.n_states, M.terminal_state
        (17, 16)

        CliffWalking: move the -100 of the cliff out of the reward into a cost.

        >>> env = gym.make("CliffWalking-v1")
        >>> M = CMDP.from_gymnasium(env, cost_limit=0.5, gamma=0.95,
        ...     reward_fn=lambda s, a, s2, r, term: -1.0,
        ...     cost_fn=lambda s, a, s2, r, term: float(r == -100))
        >>> float(M.r.min()), float(M.c.max())
        (-1.0, 1.0)
        """
        from .converters import from_gymnasium

        return from_gymnasium(env, c, cost_limit, gamma, nu0, cost_fn=cost_fn,
                              reward_fn=reward_fn)

    @classmethod
    def from_quantecon(cls, ddp, c, cost_limit, nu0, *, infeasible="error") -> "CMDP":
        """Build a CMDP from a QuantEcon ``DiscreteDP`` (either formulation).

        Parameters
        ----------
        ddp : quantecon.markov.DiscreteDP
            Product form (R (S, A), Q (S, A, S)) or state-action-pair form (R (L,),
            Q (L, S) dense or sparse, ``s_indices``, ``a_indices``). ``gamma`` is
            ``ddp.beta``. QuantEcon maximises reward, as the CMDP does.
        c : array_like, shape (S, A) or (S, A, K)
            Costs (DiscreteDP has none). Entries of forbidden pairs are ignored.
        cost_limit : array_like, shape (K,) or scalar
        nu0 : array_like, shape (S,)
            Initial distribution (DiscreteDP has none).
        infeasible : {"error", "copy"}, default "error"
            QuantEcon forbids an action by a reward of ``-inf`` (product form) or by
            leaving the pair out (pair form); a CMDP has every action in every state.
            "error" raises ``ValueError`` naming the first forbidden (state, action).
            "copy" gives each forbidden pair the transitions, reward and cost of the
            state's lowest-numbered feasible action: every CMDP policy is then a DDP
            policy with the same values (weight on a copy is weight on its source), so
            values and the LP optimum are unchanged. Recover the mask with
            :func:`safemeta_fast.converters.quantecon_feasible_actions` and pass it to
            :meth:`to_quantecon` to forbid the copies again.

        Examples
        --------
        >>> import numpy as np, quantecon as qe
        >>> ddp = qe.markov.DiscreteDP([[1.0, 0.0], [0.0, 2.0]],
        ...                            np.full((2, 2, 2), 0.5), 0.9)
        >>> M = CMDP.from_quantecon(ddp, np.zeros((2, 2)), 0.0, [0.5, 0.5])
        >>> M.gamma
        0.9
        """
        from .converters import from_quantecon

        return from_quantecon(ddp, c, cost_limit, nu0, infeasible=infeasible)

    def to_quantecon(self, *, feasible=None, multiplier=None):
        """This model's MDP as a QuantEcon ``DiscreteDP`` (needs ``quantecon``).

        Built in the state-action-pair form with a sparse Q from the successor rows
        (no dense (S, A, S) tensor). DiscreteDP has no constraints: the reward is ``r``,
        or the Lagrangian ``r - c @ multiplier`` when ``multiplier`` (shape (K,)) is given.

        Parameters
        ----------
        feasible : numpy.ndarray of bool, shape (S, A), optional
            Keep only these pairs (e.g. the mask of a ``from_quantecon(...,
            infeasible="copy")`` model).
        multiplier : array_like, shape (K,), optional

        Returns
        -------
        quantecon.markov.DiscreteDP

        Examples
        --------
        >>> from safemeta_fast.envs import gridworld
        >>> ddp = gridworld(0.3).to_quantecon()
        >>> ddp.num_states, ddp.beta
        (49, 0.9)
        """
        from .converters import to_quantecon

        return to_quantecon(self, feasible=feasible, multiplier=multiplier)

    # -- shared validation and freezing ------------------------------------------

    def _init_common(self, S, A, ptr, nxt, prob, r, c, cost_limit, gamma, nu0, dense,
                     terminal_state=None):
        r = as_float_array("r", r, 2)
        check_shape("r", r, (S, A), "(S, A)")
        check_finite("r", r)
        c = as_float_array("c", c, (2, 3))
        if c.ndim == 2:
            c = c[:, :, None].copy()
        if c.shape[:2] != (S, A):
            raise ValueError(
                f"c must have shape (S, A, K) or (S, A) = ({S}, {A}, K); got {c.shape}")
        K = c.shape[2]
        if K == 0:
            raise ValueError(f"c has shape {c.shape}; it needs at least one constraint (K >= 1)")
        check_finite("c", c)
        b = as_float_array("cost_limit", cost_limit, (0, 1)).reshape(-1)
        check_shape("cost_limit", b, (K,), "(K,)")
        check_finite("cost_limit", b)
        g = check_gamma(gamma)
        nu = as_float_array("nu0", nu0, 1)
        check_shape("nu0", nu, (S,), "(S,)")
        check_finite("nu0", nu)
        check_nonneg("nu0", nu)
        check_row_sums("nu0", np.array([nu.sum()]), lambda i: "")

        set_ = object.__setattr__
        set_(self, "_P", dense)
        set_(self, "r", readonly(r))
        set_(self, "c", readonly(c))
        set_(self, "cost_limit", readonly(b))
        set_(self, "gamma", g)
        set_(self, "nu0", readonly(nu))
        set_(self, "succ_ptr", readonly(ptr))
        set_(self, "succ_next", readonly(nxt))
        set_(self, "succ_prob", readonly(prob))
        set_(self, "absorbing", readonly(self._find_absorbing(S, A)))
        if terminal_state is not None:
            t = int(terminal_state)
            if not (0 <= t < S) or not self.absorbing[t]:
                raise ValueError(f"terminal_state is {terminal_state!r}; it must index an "
                                 f"absorbing state in [0, {S})")
            terminal_state = t
        set_(self, "terminal_state", terminal_state)
        set_(self, "_frozen", True)

    def _find_absorbing(self, S: int, A: int) -> np.ndarray:
        ptr, nxt, prob = self.succ_ptr, self.succ_next, self.succ_prob
        counts = np.diff(ptr).reshape(S, A)
        first = np.minimum(ptr[:-1], max(nxt.size - 1, 0)).reshape(S, A)
        if nxt.size == 0:
            return np.zeros(S, dtype=bool)
        self_loop = (counts == 1) & (nxt[first] == np.arange(S)[:, None]) & (
            np.abs(prob[first] - 1.0) <= PROB_ATOL
        )
        const_r = np.all(self.r == self.r[:, :1], axis=1)
        const_c = np.all(self.c == self.c[:, :1, :], axis=(1, 2))
        return np.all(self_loop, axis=1) & const_r & const_c

    def __setattr__(self, name, value):
        raise AttributeError(f"CMDP is frozen; cannot set {name!r} (use M.replace(...))")

    def __delattr__(self, name):
        raise AttributeError(f"CMDP is frozen; cannot delete {name!r}")

    # -- views -------------------------------------------------------------------

    @property
    def n_states(self) -> int:
        """Number of states S."""
        return self.r.shape[0]

    @property
    def n_actions(self) -> int:
        """Number of actions A."""
        return self.r.shape[1]

    @property
    def n_constraints(self) -> int:
        """Number of constraints K."""
        return self.c.shape[2]

    @property
    def nnz(self) -> int:
        """Number of non-zero transition entries."""
        return int(self.succ_next.size)

    @property
    def P(self) -> np.ndarray:
        """Dense transition tensor, shape (S, A, S), read-only (materialised on first use)."""
        if self._P is None:
            S, A = self.n_states, self.n_actions
            dense = np.zeros((S * A, S))
            rows = np.repeat(np.arange(S * A), np.diff(self.succ_ptr))
            dense[rows, self.succ_next] = self.succ_prob
            object.__setattr__(self, "_P", readonly(dense.reshape(S, A, S)))
        return self._P

    @property
    def has_dense(self) -> bool:
        """Whether the dense tensor is already held in memory."""
        return self._P is not None

    def replace(self, *, r=None, c=None, cost_limit=None, gamma=None, nu0=None) -> "CMDP":
        """A copy with some of r, c, cost_limit, gamma, nu0 replaced (transitions shared).

        Examples
        --------
        >>> from safemeta_fast.envs import gridworld
        >>> M = gridworld(0.3)
        >>> M2 = M.replace(cost_limit=[2.0])
        >>> M2.cost_limit.tolist(), M2.succ_next is M.succ_next
        ([2.0], True)
        """
        obj = CMDP.__new__(CMDP)
        obj._init_common(
            self.n_states, self.n_actions, self.succ_ptr, self.succ_next, self.succ_prob,
            self.r if r is None else r,
            self.c if c is None else c,
            self.cost_limit if cost_limit is None else cost_limit,
            self.gamma if gamma is None else gamma,
            self.nu0 if nu0 is None else nu0,
            dense=self._P,
            terminal_state=self.terminal_state,
        )
        return obj

    def __repr__(self) -> str:
        return (
            f"CMDP(n_states={self.n_states}, n_actions={self.n_actions}, "
            f"n_constraints={self.n_constraints}, gamma={self.gamma}, "
            f"cost_limit={self.cost_limit.tolist()}, nnz={self.nnz})"
        )

    def __reduce__(self):
        # Rebuilt through the validated path (used by multiprocessing / Ray workers;
        # artifacts on disk never use pickle).
        return (
            _rebuild_cmdp,
            (self.n_states, self.n_actions, np.array(self.succ_ptr), np.array(self.succ_next),
             np.array(self.succ_prob), np.array(self.r), np.array(self.c),
             np.array(self.cost_limit), self.gamma, np.array(self.nu0), self.terminal_state),
        )


def _checked_successor_rows(S, A, ptr, nxt, prob):
    """Validate compressed successor rows from outside (a pickle) like the constructors do.

    The kernels index ``nxt`` without bounds checks, so a tampered row would read or write
    out of bounds; every check the constructors make is made here, and the rows are
    rebuilt sorted and merged through the same path as :meth:`CMDP.from_successors`.
    """
    for name, v in (("S", S), ("A", A)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"pickled CMDP: {name} is {v!r}; it must be an integer >= 1")
    S, A = int(S), int(A)
    ptr = np.asarray(ptr)
    nxt = np.asarray(nxt)
    if not (np.issubdtype(ptr.dtype, np.integer) and np.issubdtype(nxt.dtype, np.integer)):
        raise TypeError(f"pickled CMDP: succ_ptr and succ_next must hold integers; got dtypes "
                        f"{ptr.dtype} and {nxt.dtype}")
    prob = as_float_array("succ_prob", prob, 1)
    if ptr.shape != (S * A + 1,) or nxt.ndim != 1:
        raise ValueError(f"pickled CMDP: succ_ptr has shape {ptr.shape} and succ_next "
                         f"{nxt.shape}; expected ({S * A + 1},) and 1-D")
    if ptr[0] != 0 or (np.diff(ptr) < 0).any() or ptr[-1] != nxt.size or nxt.size != prob.size:
        raise ValueError(
            f"pickled CMDP: succ_ptr must rise from 0 to len(succ_next) = {nxt.size} = "
            f"len(succ_prob) = {prob.size}; got ptr[0] = {ptr[0]}, ptr[-1] = {ptr[-1]}"
        )
    check_finite("succ_prob", prob)
    check_nonneg("succ_prob", prob)
    bad = np.flatnonzero((nxt < 0) | (nxt >= S))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"succ_next[{j}] is {int(nxt[j])}; state indices must lie in [0, {S})")
    rows = np.repeat(np.arange(S * A, dtype=np.int64), np.diff(ptr))
    sums = np.bincount(rows, weights=prob, minlength=S * A)
    check_row_sums("succ_prob of pair", sums, lambda i: f" ({i // A}, {i % A})")
    return _csr_from_triplets(rows, nxt.astype(np.int64), prob, S * A)


def _rebuild_cmdp(S, A, ptr, nxt, prob, r, c, b, gamma, nu0, terminal_state=None) -> CMDP:
    ptr, nxt, prob = _checked_successor_rows(S, A, ptr, nxt, prob)
    obj = CMDP.__new__(CMDP)
    obj._init_common(int(S), int(A), ptr, nxt, prob, r, c, b, gamma, nu0, dense=None,
                     terminal_state=terminal_state)
    return obj
