"""Monte-Carlo rollouts: discounted episode returns of a policy or an episode-level mixture.

This is the thin, validating front of ``safemeta_fast.kernels.rollout``: it checks the
inputs once, resolves the seed, builds the per-policy alias tables, calls the compiled
kernel and wraps the result in a frozen :class:`RolloutResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cmdp import CMDP
from .kernels.rollout import (
    STATUS_OK,
    alias_thresholds,
    build_alias,
    build_tables,
    rollout_parallel,
    rollout_prefetch_parallel,
    rollout_prefetch_serial,
    rollout_serial,
    table_size,
)
from .policy import Mixture, as_policy
from .seeding import resolve_seed
from .validation import check_bool, check_size, readonly

__all__ = ["rollout", "RolloutResult"]

# Packed table fields (kernels/rollout.py): bucket offsets, table sizes and pair
# indices s*A + a must fit in 31 bits.
MAX_TABLE_ENTRIES = (1 << 31) - 1

#: Rollout schedules (kernels/rollout.py); "auto" picks "prefetch" once the bucket
#: records (32 bytes each) exceed _PREFETCH_MIN_BYTES, about a core's L2 cache.
SCHEDULES = ("auto", "pairs", "prefetch")
_PREFETCH_MIN_BYTES = 2 * 1024**2
#: Prefetch schedule: episodes stepped in turn per thread, and episodes per parallel block.
_LANES = 16
_BLOCK = 256


@dataclass(frozen=True, eq=False)
class RolloutResult:
    """Discounted returns of Monte-Carlo episodes.

    Attributes
    ----------
    reward : numpy.ndarray, shape (n,)
        ``R_e = sum_{t<H} gamma^t r(s_t, a_t)`` of each episode e (read-only).
    cost : numpy.ndarray, shape (n, K)
        ``C_e[k] = sum_{t<H} gamma^t c(s_t, a_t, k)`` (read-only).
    component : numpy.ndarray of int64, shape (n,), or None
        Mixture component drawn for each episode; None when a single policy was run.
    seed : int
        The seed actually used (pass it back as ``seed=`` to reproduce the run).
    horizon : int
        Episode length H.
    closed_form : bool
        Whether absorbing states were finished in closed form.
    """

    reward: np.ndarray
    cost: np.ndarray
    component: np.ndarray | None
    seed: int
    horizon: int
    closed_form: bool

    @property
    def n_episodes(self) -> int:
        """Number of episodes n."""
        return int(self.reward.shape[0])


def alias_table(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = w.size
    thr = np.empty(n)
    alias = np.empty(n, dtype=np.int64)
    scratch_s = np.empty(n, dtype=np.int64)
    scratch_l = np.empty(n, dtype=np.int64)
    build_alias(np.ascontiguousarray(w, dtype=np.float64), 0, n, thr, alias, scratch_s, scratch_l)
    thr_i = np.empty(n, dtype=np.int64)
    alias_thresholds(thr, thr_i)
    return thr_i, alias


def discount_tail(gamma: float, horizon: int) -> np.ndarray:
    """tail[m] = sum_{j<m} gamma^j for m = 0..H (the closed-form rest of an absorbed episode)."""
    tail = np.zeros(horizon + 1)
    np.cumsum(gamma ** np.arange(horizon, dtype=np.float64), out=tail[1:])
    return tail


def rollout(M, policy_or_mixture, n_episodes, horizon, *, seed, closed_form=True,
            parallel=True, schedule="auto") -> RolloutResult:
    """Run Monte-Carlo episodes and return their discounted returns and costs.

    Each episode draws ``s_0 ~ nu0`` and runs ``H = horizon`` steps
    ``a_t ~ pi(.|s_t)``, ``s_{t+1} ~ P(.|s_t, a_t)``, returning
    ``R = sum_{t<H} gamma^t r(s_t, a_t)`` and ``C_k = sum_{t<H} gamma^t c(s_t, a_t, k)``
    (SPEC section 2). A :class:`~safemeta_fast.policy.Mixture` is an episode-level
    mixture: its component ``i ~ weights`` is drawn ONCE at the start of each episode
    and followed for the whole episode, so the expected returns are linear in the
    weights.

    Parameters
    ----------
    M : CMDP
        The task.
    policy_or_mixture : array_like, shape (S, A), or Mixture
        A row-stochastic policy ``pi[s, a]``, or an episode-level mixture of (S, A)
        policies.
    n_episodes : int
        Number of episodes n >= 0.
    horizon : int
        Steps per episode H >= 0.
    seed : int, numpy.random.Generator or None
        Keyword-only. Resolved once (see :func:`safemeta_fast.seeding.resolve_seed`);
        episode e uses its own stream derived from (seed, e), so results do not depend
        on the number of threads and the recorded ``result.seed`` reproduces them.
    closed_form : bool, default True
        When an episode enters a state of ``M.absorbing`` (a self-loop under every
        action with action-independent reward and costs) at time t, add the rest
        ``r_abs * gamma^t * (1 - gamma^(H-t)) / (1 - gamma)`` (costs likewise) and stop.
        The remaining trajectory of such a state is deterministic, so this is exact in
        distribution (not an approximation): it only skips the random draws an episode
        would spend sitting in the absorbing state. On by default because it is exact
        and much faster whenever policies reach an absorbing goal (about 20x on the
        paper's gridworld with its optimal policy, about 3x with the uniform policy;
        see ``bench/bench_rollout.py``). Turn it off to reproduce the
        per-step loop of a plain simulator. Both settings consume the same draws up to
        the absorption, so with the same seed they give the same episodes, equal up to
        rounding in the last bits (the closed-form tail versus the step-by-step sum).
    parallel : bool, default True
        Spread episodes over numba's threads (``numba.set_num_threads`` sets how many).
        The results are bit-identical either way.
    schedule : {"auto", "pairs", "prefetch"}, default "auto"
        How each thread orders its work; the episodes, and so the results, are
        bit-identical under every schedule. ``"pairs"`` steps two episodes in lockstep
        with all their state in registers (fastest while the per-policy tables fit in
        the caches); ``"prefetch"`` steps 16 episodes in turn, each prefetching the table
        record of its next step, which hides the cache miss a step costs once the tables
        are megabytes (on the gridworld with the uniform policy, one thread: about 2x at
        10^4 states, 3.5x at 10^5, and 0.6-0.9x below 2,500; see
        ``bench/bench_rollout.py``). ``"auto"`` takes ``"prefetch"`` when
        the tables exceed 2 MiB (32 bytes per outcome (a, s') of each state with
        ``pi(a|s) > 0``), else ``"pairs"``.

    Returns
    -------
    RolloutResult
        ``reward`` (n,), ``cost`` (n, K), ``component`` (n,) for a mixture (else None),
        and the ``seed``, ``horizon`` and ``closed_form`` used.

    Raises
    ------
    TypeError
        If ``M`` is not a CMDP, a count is not an integer, a flag is not a bool or the
        seed has the wrong type.
    ValueError
        If the policy (or the mixture's components) do not have shape (S, A), have
        negative or non-finite entries or rows that do not sum to 1, or a count is
        negative or so large that its arrays would exceed
        :data:`~safemeta_fast.validation.MAX_ARRAY_BYTES` (checked before allocating),
        or ``schedule`` is not one of ``"auto"``, ``"pairs"``, ``"prefetch"``.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> pi = np.full((M.n_states, M.n_actions), 0.25)
    >>> res = rollout(M, pi, n_episodes=1000, horizon=100, seed=0)
    >>> res.reward.shape, res.cost.shape, res.component is None
    ((1000,), (1000, 1), True)
    """
    if not isinstance(M, CMDP):
        raise TypeError(f"M must be a CMDP; got {type(M).__name__}")
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    if isinstance(policy_or_mixture, Mixture):
        policy_or_mixture.check_shape(S, A)
        policies = np.ascontiguousarray(policy_or_mixture.policies, dtype=np.float64)
        weights = np.ascontiguousarray(policy_or_mixture.weights, dtype=np.float64)
        is_mixture = True
    else:
        policies = np.ascontiguousarray(as_policy(policy_or_mixture, S, A, name="policy")[None])
        weights = np.ones(1)
        is_mixture = False
    # outputs: reward (8 bytes), cost (8 K) and component (8) per episode; the discount
    # tail holds H + 1 floats
    n = check_size("n_episodes", n_episodes, item_bytes=8 * (2 + K), what="the episode outputs")
    H = check_size("horizon", horizon, item_bytes=8, what="the discount tail")
    closed_form = check_bool("closed_form", closed_form)
    parallel = check_bool("parallel", parallel)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(f"schedule is {schedule!r}; expected 'auto', 'pairs' or 'prefetch'")
    seed_used = resolve_seed(seed)

    succ_ptr = np.ascontiguousarray(M.succ_ptr, dtype=np.int64)
    T = table_size(policies, succ_ptr)
    if S * A > MAX_TABLE_ENTRIES or T > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"the rollout tables of this policy would need more than {MAX_TABLE_ENTRIES} entries; "
            "use fewer mixture components or a sparser model"
        )
    r = np.ascontiguousarray(M.r, dtype=np.float64)
    c = np.ascontiguousarray(M.c, dtype=np.float64)
    absorbing = np.ascontiguousarray(M.absorbing, dtype=np.int64)
    state_info, rec, bucket_state = build_tables(
        policies, succ_ptr, np.ascontiguousarray(M.succ_next, dtype=np.int64),
        np.ascontiguousarray(M.succ_prob, dtype=np.float64), r, c, absorbing,
    )
    comp_thr, comp_alias = alias_table(weights)
    nu_thr, nu_alias = alias_table(np.asarray(M.nu0))
    r_abs = np.ascontiguousarray(r[:, 0])
    c_abs = np.ascontiguousarray(c[:, 0, :]).reshape(-1)
    tail = discount_tail(M.gamma, H)

    out_r = np.zeros(n)
    out_c = np.zeros((n, K))
    out_comp = np.zeros(n, dtype=np.int64)
    head = (seed_used, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec, bucket_state)
    if schedule == "auto":
        schedule = "prefetch" if 32 * T > _PREFETCH_MIN_BYTES else "pairs"
    if schedule == "pairs":
        kernel = rollout_parallel if parallel else rollout_serial
        status = kernel(*head, r.reshape(-1), c.reshape(-1), r_abs, c_abs, float(M.gamma), H,
                        tail, closed_form, out_r, out_c, out_comp)
    else:
        # row i = s*A + a of rc: the pair's reward, then its K costs
        rc = np.concatenate([r.reshape(S * A, 1), c.reshape(S * A, K)], axis=1).reshape(-1)
        kernel = rollout_prefetch_parallel if parallel else rollout_prefetch_serial
        status = kernel(*head, rc, r_abs, c_abs, float(M.gamma), H, tail, closed_form, _LANES,
                        _BLOCK, out_r, out_c, out_comp)
    if status != STATUS_OK:  # pragma: no cover - the kernel has no failure path today
        raise RuntimeError(f"rollout kernel returned status {status}")
    return RolloutResult(
        reward=readonly(out_r),
        cost=readonly(out_c),
        component=readonly(out_comp) if is_mixture else None,
        seed=seed_used,
        horizon=H,
        closed_form=closed_form,
    )
