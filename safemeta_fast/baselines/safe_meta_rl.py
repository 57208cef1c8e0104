"""Safe Meta-RL (Xu & Zhu, NeurIPS 2025) as the reference experiment runs it: repeated one-step
safe adaptation of the start policy from Monte-Carlo advantages (BASELINES.md section 4).

Every adaptation step samples ``episodes_per_step`` padded episodes of the current policy,
estimates every-visit Monte-Carlo advantages, solves the KL-regularised surrogate by
projected dual descent and moves to its closed-form maximiser
``pi_u ∝ pi exp((A_r - u A_c) / (lam + (1 - gamma) u lam_c))``. The episodes of a step are
the x-axis slots of the block that deploys the current policy (BASELINES.md 0.1, 4d).

The hot work runs in :mod:`safemeta_fast.kernels.safe_meta_rl`; this module validates,
evaluates each deployed policy exactly once, and writes the :class:`BaselineLog`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cmdp import CMDP
from ..kernels.safe_meta_rl import (
    RESAMPLE_STREAM_BASE,
    dual_policy,
    mc_advantages,
    sample_padded_block,
)
from ..kernels.trajectory import csr_cdf, policy_cdf
from ..policy import as_policy
from ..seeding import resolve_seed
from ..validation import (
    check_bool,
    check_choice,
    check_cmdp,
    check_int,
    check_real,
    check_size,
    readonly,
)
from .common import BaselineLog, BlockAudit, regret_reference_of

__all__ = ["safe_meta_rl", "safe_meta_rl_step", "SafeMetaRLStep", "DUAL_SAMPLING"]

#: Ways to estimate the state average of the dual gradient (BASELINES.md 4b step 4.3, 4e).
DUAL_SAMPLING = ("resample", "exact")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

def _check_constants(lam, lam_c, dual_step, dual_iters, delta, log_clip):
    return dict(
        lam=check_real("lam", lam, lo=0.0, lo_open=True),
        lam_c=check_real("lam_c", lam_c, lo=0.0),
        dual_step=check_real("dual_step", dual_step, lo=0.0, lo_open=True),
        dual_iters=check_int("dual_iters", dual_iters, 1),
        delta=check_real("delta", delta),
        log_clip=check_real("log_clip", log_clip, lo=0.0, lo_open=True, hi=1.0, hi_open=True),
    )


# ---------------------------------------------------------------------------
# one adaptation step
# ---------------------------------------------------------------------------

class _Stepper:
    """Preallocated buffers and CDF tables for repeated adaptation steps on one task."""

    def __init__(self, M: CMDP, n_traj: int, horizon: int, consts: dict, exact: bool, seed: int):
        S, A, K = M.n_states, M.n_actions, M.n_constraints
        self.M, self.consts, self.exact, self.seed = M, consts, exact, seed
        self.nu_cdf = policy_cdf(np.ascontiguousarray(M.nu0)[None, :])[0]
        self.succ_cdf = csr_cdf(M.succ_ptr, M.succ_prob)
        self.states = np.empty((n_traj, horizon), np.int64)
        self.actions = np.empty((n_traj, horizon), np.int64)
        self.lengths = np.empty(n_traj, np.int64)
        self.adv_r = np.empty((S, A))
        self.adv_c = np.empty((S, A, K))
        self.j_c = np.empty(K)
        self.hist = np.empty(S, np.int64)
        self.u_used = np.empty(K)
        self.u_last = np.empty(K)

    def __call__(self, pi: np.ndarray, step: int) -> np.ndarray:
        M, k = self.M, self.consts
        n_traj = self.states.shape[0]
        sample_padded_block(self.seed, step * n_traj, policy_cdf(pi), self.nu_cdf, M.succ_ptr,
                            M.succ_next, self.succ_cdf, M.absorbing, self.states, self.actions,
                            self.lengths)
        mc_advantages(self.states, self.actions, M.r, M.c, M.gamma, self.adv_r, self.adv_c,
                      self.j_c, self.hist)
        d_prime = (1.0 - M.gamma) * (np.asarray(M.cost_limit) + k["delta"] - self.j_c)
        pi_new = np.empty_like(pi)
        dual_policy(pi, self.adv_r, self.adv_c, d_prime, k["lam"], k["lam_c"], M.gamma,
                    k["dual_step"], k["dual_iters"], k["log_clip"], self.states.reshape(-1),
                    self.hist, self.exact, self.seed, RESAMPLE_STREAM_BASE + step, pi_new,
                    self.u_used, self.u_last)
        return pi_new


@dataclass(frozen=True, eq=False)
class SafeMetaRLStep:
    """One safe adaptation step (BASELINES.md 4b), with its intermediate estimates.

    Attributes
    ----------
    policy : numpy.ndarray, shape (S, A)
        The adapted policy of the last dual pass.
    u : numpy.ndarray, shape (K,)
        The dual variable that produced ``policy`` (before the final dual update).
    u_last : numpy.ndarray, shape (K,)
        The dual variable after the final update.
    j_c : numpy.ndarray, shape (K,)
        Monte-Carlo cost estimate (mean discounted cost of the padded episodes).
    adv_r, adv_c : numpy.ndarray, shapes (S, A) and (S, A, K)
        Every-visit advantages (0 on unvisited pairs).
    states, actions : numpy.ndarray of int64, shape (N, H)
        The padded episodes; ``states.ravel()`` is the state buffer.
    lengths : numpy.ndarray of int64, shape (N,)
        Steps taken before padding (``H`` when the episode never reached an absorbing state).
    """

    policy: np.ndarray
    u: np.ndarray
    u_last: np.ndarray
    j_c: np.ndarray
    adv_r: np.ndarray
    adv_c: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray


def safe_meta_rl_step(M_test, pi, *, seed, step=0, n_trajectories=50, horizon=600, lam=0.2,
                      lam_c=0.2, dual_step=1.0, dual_iters=30, delta=0.0, log_clip=1e-10,
                      dual_sampling="resample") -> SafeMetaRLStep:
    """One-step safe adaptation ``one_step_safe_adaptation`` of BASELINES.md section 4b.

    Parameters
    ----------
    M_test : CMDP
        The task (S states, A actions, K constraints); sampled, plus its known ``r``,
        ``c``, ``cost_limit``, ``gamma``, ``nu0``.
    pi : array_like, shape (S, A)
        Current policy.
    seed : int or numpy.random.Generator
        Run seed. Episode ``j`` uses stream ``step * n_trajectories + j``; the dual
        resampling uses stream ``RESAMPLE_STREAM_BASE + step``. With the same seed,
        :func:`safe_meta_rl`'s step ``step`` reproduces this call exactly.
    step : int, default 0
        Index of the adaptation step within a run.
    n_trajectories, horizon, lam, lam_c, dual_step, dual_iters, delta, log_clip, dual_sampling
        As in :func:`safe_meta_rl` (``n_trajectories`` is its ``episodes_per_step``).

    Returns
    -------
    SafeMetaRLStep

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> st = safe_meta_rl_step(M, np.full((49, 4), 0.25), seed=0, n_trajectories=5, horizon=50)
    >>> st.policy.shape, st.states.shape
    ((49, 4), (5, 50))
    """
    M = check_cmdp(M_test, "M_test")
    pi = np.ascontiguousarray(as_policy(pi, M.n_states, M.n_actions, name="pi"))
    if seed is None:
        raise TypeError("seed must be an int or a numpy.random.Generator (got None); a step is "
                        "only meaningful with the run's seed")
    seed = resolve_seed(seed)
    step = check_int("step", step, 0)
    horizon = check_size("horizon", horizon, minimum=1, item_bytes=16,
                         what="the trajectory buffers")
    n_traj = check_size("n_trajectories", n_trajectories, minimum=1, item_bytes=16 * horizon,
                        what=f"the (n_trajectories, horizon = {horizon}) trajectory buffers")
    consts = _check_constants(lam, lam_c, dual_step, dual_iters, delta, log_clip)
    exact = check_choice("dual_sampling", dual_sampling, DUAL_SAMPLING) == "exact"
    run = _Stepper(M, n_traj, horizon, consts, exact, seed)
    new = run(pi, step)
    return SafeMetaRLStep(
        policy=readonly(new), u=readonly(run.u_used.copy()), u_last=readonly(run.u_last.copy()),
        j_c=readonly(run.j_c.copy()), adv_r=readonly(run.adv_r.copy()),
        adv_c=readonly(run.adv_c.copy()), states=readonly(run.states.copy()),
        actions=readonly(run.actions.copy()), lengths=readonly(run.lengths.copy()),
    )


# ---------------------------------------------------------------------------
# the multi-step driver
# ---------------------------------------------------------------------------

def safe_meta_rl(M_test, pi_start, *, n_episodes=40_000, regret_reference=None, seed=None,
                 horizon=600, episodes_per_step=50, lam=0.2, lam_c=0.2, dual_step=1.0,
                 dual_iters=30, delta=0.0, log_clip=1e-10, dual_sampling="resample",
                 stop_on_violation=False, violation_tol=1e-9, progress=False) -> BaselineLog:
    """Safe Meta-RL with multi-step safe adaptation (BASELINES.md section 4).

    The reference's ``multi_step_safe_adaptation(env, pi_s, 40000, 50)``: blocks of
    ``episodes_per_step`` episodes; block ``i`` deploys policy ``pi_i``, whose exact
    values are logged for every episode of the block *before* its episodes are drawn
    (section 4d); the same episodes then feed the adaptation step that produces
    ``pi_{i+1}``. No extra episodes are spent on estimation.

    One adaptation step (section 4b):

    1. Sample ``N = episodes_per_step`` episodes of ``pi`` from ``nu0``. An episode stops
       right after it enters an absorbing state ``g`` (``M_test.absorbing``; the goal in
       the gridworld) and is padded up to ``horizon`` steps with ``(g, action 0,
       r(g, 0), c(g, 0))``. Padded steps enter the estimators and the state buffer.
    2. Per episode, backwards: ``G_t = r_t + gamma G_{t+1}`` (and per constraint for the
       cost), truncated at the horizon. Every visit adds ``G_t`` to the sums of
       ``(s_t, a_t)`` and of ``s_t``; ``Q = sum / count``, ``V = sum / count`` (the
       every-visit average over behaviour actions), ``A = Q - V`` on visited pairs and 0 on
       unvisited ones. ``J_c`` = mean over episodes of ``G^c_0``. The buffer holds every
       ``s_t`` (``N * horizon`` states).
    3. ``d'_k = (1 - gamma)(b_k + delta - J_c^k)``; ``l_pi = ln max(pi, log_clip)``; ``u = 0``.
    4. ``dual_iters`` times: ``eta = lam + (1 - gamma) lam_c sum_k u_k``;
       ``pi_u ∝ exp(l_pi + (A_r - sum_k u_k A_c^k) / eta)`` per state (row maximum
       subtracted; the logits use the clipped log ``l_pi`` [inferred: the spec names one
       clipped log computed once]); ``g_k = d'_k - mean over buffer states s of
       [sum_a pi_u A_c^k + (1 - gamma) lam_c sum_a pi_u (ln max(pi_u, log_clip) - l_pi)]``;
       ``u_k <- max(0, u_k - dual_step g_k)``.
    5. The next policy is the ``pi_u`` of the last pass (it lags the final ``u`` by one
       update).

    Parameters
    ----------
    M_test : CMDP
        The test task (S states, A actions, K constraints). The method samples episodes
        from it and, as in the reference, treats ``r``, ``c``, ``cost_limit``, ``nu0`` and
        ``gamma`` as known; its transitions are used only to sample and for the exact audit.
    pi_start : array_like, shape (S, A)
        Start (meta-)policy; the reference uses ``primal_dual(gridworld(0.4), beta=0.1).policy``.
    n_episodes : int, default 40_000
        Episode budget (x-axis length). A last partial block is logged with the policy
        it would deploy; the update after the last block is never deployed and not computed.
    regret_reference : float, optional
        ``V*`` of the regret; default ``solve_lp(M_test).reward``. The experiment passes the
        primal-dual value of the test task.
    seed : int, numpy.random.Generator or None
        Episode ``e`` (global index) uses stream ``e`` of the seed; the dual resampling of
        step ``i`` uses stream ``RESAMPLE_STREAM_BASE + i``. Same seed -> identical log on
        any number of threads.
    horizon : int, default 600
    episodes_per_step : int, default 50
        Episodes per adaptation step (``num_trai_per_iter``).
    lam, lam_c : float, default 0.2
        Reward KL weight (``lam > 0``) and cost KL weight (``lam_c >= 0``).
    dual_step : float, default 1.0
        Projected dual descent step (the reference's ``beta``; a step, not a temperature).
    dual_iters : int, default 30
        Dual iterations per step, from ``u = 0``.
    delta : float, default 0.0
        Added to the cost limit in the slack ``d'``.
    log_clip : float, default 1e-10
        Floor inside the logarithms.
    dual_sampling : {"resample", "exact"}, default "resample"
        ``"resample"`` (the reference) averages the dual term over ``N * horizon`` states
        drawn uniformly with replacement from the buffer, fresh each dual iteration.
        ``"exact"`` uses the buffer's state histogram instead: the expectation of the
        resampled average, deterministic given the episodes (section 4e; it removes the
        resampling noise, so it is not the reference's statistics).
    stop_on_violation : bool, default False
        The reference breaks when a policy about to be deployed has exact cost above the
        limit. By default we record the violation and continue; with True the run stops
        before deploying it (``stopped_on_violation``, fewer episodes).
    violation_tol : float, default 1e-9
        A violation is ``V_c^k > b_k + violation_tol``.
    progress : bool, default False
        Show a tqdm bar over adaptation steps.

    Returns
    -------
    BaselineLog
        ``method="safe_meta_rl"``; ``policy_starts`` = block starts. ``info`` holds
        ``episodes_per_step``, ``n_steps`` (adaptation steps computed), ``dual_sampling``,
        ``u_used`` (K-list: ``u`` behind the last computed policy), ``u_max`` (largest such
        ``u`` over the run), ``j_c_first`` (K-list, the first step's ``J_c``) and
        ``n_constraints``.

    Notes
    -----
    With several constraints ``u`` becomes a vector: the closed form is
    ``pi_u ∝ pi exp((A_r - sum_k u_k A_c^k) / (lam + (1 - gamma) lam_c sum_k u_k))`` (the
    maximiser of the Lagrangian with one multiplier per surrogate constraint) and each
    ``u_k`` takes its own projected descent step on its own slack. With K = 1 this is the
    reference exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> log = safe_meta_rl(M, np.full((49, 4), 0.25), n_episodes=100, seed=0,
    ...                    regret_reference=50.0, horizon=100)
    >>> log.n_episodes, log.policy_starts.tolist()
    (100, [0, 50])
    """
    M = check_cmdp(M_test, "M_test")
    pi = np.ascontiguousarray(as_policy(pi_start, M.n_states, M.n_actions, name="pi_start"))
    n_episodes = check_size("n_episodes", n_episodes, minimum=1,
                            item_bytes=16 * (1 + M.n_constraints), what="the episode log")
    horizon = check_size("horizon", horizon, minimum=1, item_bytes=16,
                         what="the trajectory buffers")
    n_traj = check_size("episodes_per_step", episodes_per_step, minimum=1,
                        item_bytes=16 * horizon,
                        what=f"the (episodes_per_step, horizon = {horizon}) trajectory buffers")
    consts = _check_constants(lam, lam_c, dual_step, dual_iters, delta, log_clip)
    exact = check_choice("dual_sampling", dual_sampling, DUAL_SAMPLING) == "exact"
    stop_on_violation = check_bool("stop_on_violation", stop_on_violation)
    violation_tol = check_real("violation_tol", violation_tol, lo=0.0)
    progress = check_bool("progress", progress)
    seed = resolve_seed(seed)
    regret_reference = regret_reference_of(M, regret_reference)

    n_blocks = -(-n_episodes // n_traj)
    limit = np.asarray(M.cost_limit)
    run = _Stepper(M, n_traj, horizon, consts, exact, seed)
    audit = BlockAudit(M, stop_on_violation, violation_tol)
    u_max = 0.0
    u_used = [0.0] * M.n_constraints
    j_c_first = None
    n_steps = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_blocks, desc="safe meta-RL steps", unit="step")
    try:
        for i in range(n_blocks):
            if not audit.deploy(pi, i * n_traj):
                break
            if i + 1 < n_blocks:
                pi = run(pi, i)
                n_steps += 1
                u_used = run.u_used.tolist()
                u_max = max(u_max, float(run.u_used.max()))
                if j_c_first is None:
                    j_c_first = run.j_c.tolist()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    K = M.n_constraints
    stopped = audit.stopped
    n_run = len(audit.starts) * n_traj if stopped else n_episodes
    starts_arr, exact_reward, exact_cost = audit.arrays(n_run)
    info = {
        "episodes_per_step": n_traj,
        "n_steps": n_steps,
        "dual_sampling": dual_sampling,
        "u_used": u_used,
        "u_max": u_max,
        "j_c_first": j_c_first,
        "n_constraints": K,
        "horizon": horizon,
    }
    return BaselineLog(
        method="safe_meta_rl", seed=seed, exact_reward=exact_reward, exact_cost=exact_cost,
        cost_limit=limit, regret_reference=regret_reference, policy_starts=starts_arr,
        stopped_on_violation=stopped, n_budget=n_episodes, info=info,
        violation_tol=violation_tol,
    )
