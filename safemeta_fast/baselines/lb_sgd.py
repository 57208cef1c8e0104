"""LB-SGD: log-barrier stochastic policy gradient on the test task (BASELINES.md section 6).

Model-free safe policy search (Usmanova et al.'s LB-SGD as applied by Ni & Kamgarpour,
AISTATS 2025): stochastic gradient ascent on the log-barrier surrogate

    B_eta(theta) = V_r(theta) + eta * sum_k ln(b_k - V_c^k(theta))

over a tabular softmax policy ``pi(a|s) = softmax(theta[s, .])``, with gradients and
slacks estimated from batches of sampled trajectories of the current policy.

Defaults reproduce the authors' experiment code (``Log_barrier.ipynb``, section 6b/6c):
constant unnormalised step 4, ``eta = 0.1``, slack estimate clipped below at 0.05, a
first batch of 500 trajectories and 3000 for every later update, trajectories of
exactly 600 steps with no early stop, start ``theta_0 = ln(pi_LB)``. The original
adaptive step of LB-SGD is available as ``step_rule="adaptive"``.

Episode accounting (section 0.1): the x index counts episodes. Policy ``i`` is
deployed on the block ``[starts[i], starts[i+1])`` of ``policy_starts`` (500, then
3000 episodes; 15 policies for 40,000 episodes, see :func:`lb_sgd_schedule`), and
the gradient of update ``i`` is estimated from exactly those episodes: trajectory
``j`` of the block starting at ``it`` is episode ``it + j`` of the run (stream
``it + j`` of the seed). The reference also computes a 15th gradient on 3000
trajectories at ``it = 39,500`` and throws it away; it is skipped here (39,500
trajectories are simulated instead of the reference's 42,500), which changes nothing
that is logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..cmdp import CMDP
from ..errors import SafeMetaError
from ..kernels.lb_sgd import gradient_batch
from ..kernels.trajectory import csr_cdf, policy_cdf
from ..planning import primal_dual
from ..policy import as_policy
from ..seeding import resolve_seed
from ..validation import check_bool, check_cmdp, check_int, check_real, check_size, readonly
from .common import BaselineLog, BlockAudit, regret_reference_of

__all__ = [
    "lb_sgd",
    "lb_sgd_schedule",
    "lb_start_policy",
    "policy_gradient_batch",
    "GradientEstimate",
    "default_smoothness",
]

#: theta of an action with probability 0 in the start policy (the reference's -1e9).
THETA_ZERO_PROB = -1e9
#: Added to the clipped slack in the barrier term, as in the reference.
SLACK_EPS = 1e-8
#: Trajectories per parallel work unit are ``max(_MIN_CHUNK, ceil(n / _MAX_CHUNKS))``,
#: a function of the batch size only, so results never depend on the thread count.
_MIN_CHUNK = 32
_MAX_CHUNKS = 256
_STEP_RULES = ("fixed", "adaptive")


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _chunk_size(n: int) -> int:
    return max(_MIN_CHUNK, -(-n // _MAX_CHUNKS))


# ---------------------------------------------------------------------------
# softmax parameterisation and the update
# ---------------------------------------------------------------------------


def _theta_from_policy(pi: np.ndarray) -> np.ndarray:
    """``theta = ln(pi)``, with ``THETA_ZERO_PROB`` where ``pi == 0`` (section 6b)."""
    theta = np.full(pi.shape, THETA_ZERO_PROB)
    pos = pi > 0
    theta[pos] = np.log(pi[pos])
    return theta


def _softmax(theta: np.ndarray) -> np.ndarray:
    """Row-wise ``softmax(theta[s, .])``, shape (S, A) (max-shifted)."""
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _barrier_gradient(g_r: np.ndarray, g_c: np.ndarray, j_c: np.ndarray, cost_limit: np.ndarray,
                      eta: float, slack_clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Estimated barrier gradient and clipped slacks (section 6b steps 4-5, summed over k).

    ``s_hat_k = max(b_k - J_c^k, slack_clip)`` and
    ``g = g_r - eta * sum_k g_c[k] / (s_hat_k + 1e-8)``.
    """
    s_hat = np.maximum(cost_limit - j_c, slack_clip)
    g = g_r.copy()
    for k in range(g_c.shape[0]):
        g -= eta * g_c[k] / (s_hat[k] + SLACK_EPS)
    return g, s_hat


def _adaptive_step(g: np.ndarray, g_c: np.ndarray, s_hat: np.ndarray, eta: float,
                   m0: float, m1: float) -> float:
    """Step length gamma_t of the original LB-SGD rule (section 6b), for K constraints.

    With ``a_k = s_hat_k``, ``p_k = <g_c[k], g> / ||g||``::

        gamma_t = min( min_k a_k / (2 |p_k| + sqrt(a_k M1)),  1 / M2 ),
        M2 = M0 + sum_k (4 eta M1 / a_k + 4 eta p_k^2 / a_k^2).

    For K = 1 this is exactly the formula of section 6b; the minimum over k of the
    first term and the sum over k in ``M2`` (one barrier per constraint, as in
    Usmanova et al.'s multi-constraint LB-SGD) are the natural generalisation
    [inferred]. Returns 0 when ``g`` is zero (no direction).
    """
    norm = float(np.sqrt(np.sum(g * g)))
    if norm == 0.0:
        return 0.0
    first = math.inf
    m2 = m0
    for k in range(g_c.shape[0]):
        a = float(s_hat[k])
        p = float(np.sum(g_c[k] * g)) / norm
        den = 2.0 * abs(p) + math.sqrt(a * m1)
        if den > 0.0:
            first = min(first, a / den)
        m2 += 4.0 * eta * m1 / a + 4.0 * eta * p * p / (a * a)
    second = 1.0 / m2 if m2 > 0.0 else math.inf
    return min(first, second)


# ---------------------------------------------------------------------------
# public helpers
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GradientEstimate:
    """Batch means of the LB-SGD (G(PO)MDP) estimator for a softmax policy.

    Attributes
    ----------
    reward_grad : numpy.ndarray, shape (S, A)
        ``mean_j sum_t gamma^t r_t z_t`` (gradient of ``V_r`` w.r.t. ``theta``).
    cost_grad : numpy.ndarray, shape (K, S, A)
        The same for each cost.
    reward_estimate : float
        ``mean_j sum_{t<H} gamma^t r_t``.
    cost_estimate : numpy.ndarray, shape (K,)
        ``mean_j sum_{t<H} gamma^t c_t`` (``J_c``, from which the slack is estimated).
    n_trajectories : int
    horizon : int
    seed : int
        Seed actually used.
    first_episode : int
        Trajectory j used stream ``first_episode + j`` of ``seed``.
    """

    reward_grad: np.ndarray
    cost_grad: np.ndarray
    reward_estimate: float
    cost_estimate: np.ndarray
    n_trajectories: int
    horizon: int
    seed: int
    first_episode: int


def _gradient(M: CMDP, pi: np.ndarray, n: int, horizon: int, seed: int, first: int,
              tables: tuple) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Unvalidated kernel call; ``tables = (nu_cdf, succ_cdf, r, c)``."""
    nu_cdf, succ_cdf, r, c = tables
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    pi = np.ascontiguousarray(pi, dtype=np.float64)
    g_r = np.zeros((S, A))
    g_c = np.zeros((K, S, A))
    j_r = np.zeros(1)
    j_c = np.zeros(K)
    gradient_batch(seed, first, n, _chunk_size(n), pi, policy_cdf(pi), nu_cdf, M.succ_ptr,
                   M.succ_next, succ_cdf, r, c, float(M.gamma), horizon, M.absorbing,
                   g_r, g_c, j_r, j_c)
    return g_r, g_c, float(j_r[0]), j_c


def _tables(M: CMDP) -> tuple:
    return (policy_cdf(np.ascontiguousarray(M.nu0, dtype=np.float64)[None, :])[0],
            csr_cdf(M.succ_ptr, M.succ_prob),
            np.ascontiguousarray(M.r, dtype=np.float64),
            np.ascontiguousarray(M.c, dtype=np.float64))


def policy_gradient_batch(M, pi, n_trajectories, *, seed, horizon=600,
                          first_episode=0) -> GradientEstimate:
    """Estimate the softmax policy gradients of ``V_r`` and ``V_c`` from sampled trajectories.

    The estimator of BASELINES.md 6b step 3 (G(PO)MDP): per trajectory of exactly
    ``horizon`` steps (no early stop), ``g_r = sum_t gamma^t r_t z_t`` with the cumulative
    score ``z_t = sum_{t'<=t} (e_{a_t'} - pi(.|s_t'))`` on rows ``s_t'``, averaged over the
    batch; computed in the equivalent reward-to-go form (6e) in a numba kernel
    (``kernels/lb_sgd.py``) at O(n H) cost. The gradients are w.r.t. ``theta`` of
    ``pi = softmax(theta[s, .])``; they depend on ``theta`` only through ``pi``.

    Parameters
    ----------
    M : CMDP
        Task to sample (S states, A actions, K constraints).
    pi : array_like, shape (S, A)
        Row-stochastic policy.
    n_trajectories : int
        Batch size n >= 1.
    seed : int, numpy.random.Generator or None
        Keyword-only; trajectory j is stream ``first_episode + j`` of the resolved seed,
        so results are bit-identical on any number of threads.
    horizon : int, default 600
        Steps per trajectory H >= 1.
    first_episode : int, default 0
        Stream offset (>= 0).

    Returns
    -------
    GradientEstimate
        ``reward_grad`` (S, A), ``cost_grad`` (K, S, A), ``reward_estimate``,
        ``cost_estimate`` (K,).

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> M = gridworld(0.3)
    >>> est = policy_gradient_batch(M, np.full((49, 4), 0.25), 100, seed=0, horizon=50)
    >>> est.reward_grad.shape, est.cost_grad.shape
    ((49, 4), (1, 49, 4))
    """
    M = check_cmdp(M)
    pi = as_policy(pi, M.n_states, M.n_actions)
    n = check_int("n_trajectories", n_trajectories, 1)
    H = check_int("horizon", horizon, 1)
    first = check_int("first_episode", first_episode, 0)
    seed_used = resolve_seed(seed)
    g_r, g_c, j_r, j_c = _gradient(M, pi, n, H, seed_used, first, _tables(M))
    return GradientEstimate(readonly(g_r), readonly(g_c), j_r, readonly(j_c), n, H,
                            seed_used, first)


def lb_sgd_schedule(n_episodes=40_000, first_batch=500, batch=3000) -> np.ndarray:
    """First episode of every policy LB-SGD deploys (BASELINES.md 0.1 and 6b step 7).

    The first policy runs ``first_batch`` episodes, every later one ``batch``, the last
    block being cut at ``n_episodes``. The reference's batch line
    ``n <- max(min(1/s_hat^2, 500), 3000)`` always yields 3000 (the inner minimum never
    exceeds 500), so after the first block the size is always ``batch``.

    Parameters
    ----------
    n_episodes : int, default 40000
    first_batch : int, default 500
    batch : int, default 3000

    Returns
    -------
    numpy.ndarray of int64, shape (n_policies,)

    Examples
    --------
    >>> lb_sgd_schedule()[:4].tolist(), lb_sgd_schedule().size
    ([0, 500, 3500, 6500], 15)
    """
    n = check_int("n_episodes", n_episodes, 1)
    fb = check_int("first_batch", first_batch, 1)
    b = check_int("batch", batch, 1)
    if n <= fb:
        return np.zeros(1, dtype=np.int64)
    return np.concatenate([[0], np.arange(fb, n, b)]).astype(np.int64)


def lb_start_policy(M_start) -> np.ndarray:
    """The reference's LB-SGD start policy pi_LB (BASELINES.md 2c-2d, 6c).

    ``primal_dual(M_start, beta=8.0).policy``: entropy-regularised GDA with
    ``beta = 8``, ``eta_p = (1-gamma)/beta = 0.0125``, ``eta_xi = 0.1`` and 10^4
    iterations, last iterate. The experiment uses ``M_start = gridworld(0.4)``, where
    it gives ``V_r = 35.2742``, ``V_c = 1.500140`` (marginally above the limit there;
    feasible on every test noise).

    Parameters
    ----------
    M_start : CMDP

    Returns
    -------
    numpy.ndarray, shape (S, A)
        Read-only high-entropy policy (smallest entry ~4.6e-16 on noise 0.4).

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> pi_lb = lb_start_policy(gridworld(0.4))
    >>> pi_lb.shape
    (49, 4)
    """
    M_start = check_cmdp(M_start, "M_start")
    return primal_dual(M_start, beta=8.0).policy


def default_smoothness(M) -> tuple[float, float]:
    """Default ``(M0, M1)`` of the adaptive step: softmax smoothness bounds of V_r and V_c.

    ``M0 = 8 span(r) / (1-gamma)^3`` and ``M1 = 8 max_k span(c_k) / (1-gamma)^3``, the
    smoothness bound of the value of a tabular softmax policy (Mei et al., 2020,
    Lemma 7, ``8/(1-gamma)^3`` for per-step rewards in [0, 1]), scaled by the per-step
    range (adding a constant to the reward shifts every value by the same amount and
    leaves the Hessian unchanged). These are worst-case constants, so the resulting
    steps are tiny (about 1e-5 on the paper's gridworld, whose rewards and costs are
    0 or 10) [inferred; the reference never ran the adaptive rule].

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> [round(m) for m in default_smoothness(gridworld(0.3))]
    [80000, 80000]
    """
    M = check_cmdp(M)
    scale = 8.0 / (1.0 - M.gamma) ** 3
    r = np.asarray(M.r)
    c = np.asarray(M.c)
    span_c = float(np.max(c.max(axis=(0, 1)) - c.min(axis=(0, 1))))
    return float(scale * (r.max() - r.min())), float(scale * span_c)


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------


def lb_sgd(M_test, pi_start, *, n_episodes=40_000, regret_reference=None, seed=None, horizon=600,
           eta=0.1, step=4.0, step_rule="fixed", first_batch=500, batch=3000, slack_clip=0.05,
           smoothness=None, stop_on_violation=False, violation_tol=1e-9,
           progress=False) -> BaselineLog:
    """LB-SGD, the log-barrier policy-gradient baseline (BASELINES.md section 6).

    Softmax tabular parameters ``theta`` (S, A) start at ``ln(pi_start)`` (entries with
    probability 0 get -1e9). With ``it = 0`` and ``n = first_batch``, while
    ``it < n_episodes`` (section 6b):

    1. ``pi = softmax(theta)``; exact ``V_r(pi)``, ``V_c(pi)`` (the audit). If the cost
       exceeds a limit by more than ``violation_tol``: with ``stop_on_violation`` stop
       before deploying it, otherwise record the violation and continue (the
       reference breaks).
    2. Deploy ``pi`` on episodes ``[it, min(it + n, n_episodes))`` (logged values).
    3. Unless this is the last block: estimate ``g_r``, ``g_c``, ``J_c`` from the block's
       ``n`` trajectories of exactly ``horizon`` steps (episode ``it + j`` = stream
       ``it + j``; see :func:`policy_gradient_batch`).
    4. ``s_hat_k = max(b_k - J_c^k, slack_clip)``.
    5. ``g = g_r - eta * sum_k g_c[k] / (s_hat_k + 1e-8)`` (one log barrier per
       constraint; for K = 1 the reference's formula).
    6. ``"fixed"``: ``theta += step * g`` (unnormalised, the reference). ``"adaptive"``:
       ``theta += gamma_t g / ||g||`` with the original LB-SGD step
       ``gamma_t = min(min_k s_k / (2|<g_c[k], g>|/||g|| + sqrt(s_k M1)), 1/M2)``,
       ``M2 = M0 + sum_k (4 eta M1/s_k + 4 eta <g_c[k], g>^2/(||g||^2 s_k^2))``, where
       ``s_k = s_hat_k`` (the clipped estimate).
    7. ``it += n``; ``n = batch`` (the reference's batch line always yields 3000).

    The model is used only to sample episodes, plus ``r``, ``c``, ``cost_limit``,
    ``nu0`` and ``gamma``, which the reference treats as known, and for the exact
    audit of every deployed policy (15 evaluations for 40,000 episodes).

    Parameters
    ----------
    M_test : CMDP
        Test task (S states, A actions, K constraints).
    pi_start : array_like, shape (S, A)
        Start policy; the reference uses :func:`lb_start_policy` of ``gridworld(0.4)``.
    n_episodes : int, default 40000
        Episode budget (logged x axis), >= 1.
    regret_reference : float, optional
        ``V*`` of the regret; default the exact LP optimum ``solve_lp(M_test).reward``
        (the experiment passes the authors' primal-dual value).
    seed : int, numpy.random.Generator or None
        Resolved once; recorded in the result. Bit-identical on any thread count.
    horizon : int, default 600
        Steps of every trajectory (no early stop).
    eta : float, default 0.1
        Barrier weight (>= 0).
    step : float, default 4.0
        Constant step of the ``"fixed"`` rule (> 0); unused by ``"adaptive"``.
    step_rule : {"fixed", "adaptive"}, default "fixed"
    first_batch : int, default 500
        Trajectories of the first policy (>= 1).
    batch : int, default 3000
        Trajectories of every later policy (>= 1).
    slack_clip : float, default 0.05
        Lower clip of the estimated slack (> 0).
    smoothness : (float, float), optional
        ``(M0, M1)``, smoothness constants of ``V_r`` and ``V_c`` for the adaptive rule
        (both > 0); default :func:`default_smoothness` of ``M_test``
        (``8 span / (1-gamma)^3``, 80,000 each on the paper's gridworld). Only valid with
        ``step_rule="adaptive"``.
    stop_on_violation : bool, default False
    violation_tol : float, default 1e-9
    progress : bool, default False
        tqdm bar over episodes.

    Returns
    -------
    BaselineLog
        ``method="lb_sgd"``; ``policy_starts`` as :func:`lb_sgd_schedule` (shorter if
        stopped). ``info`` holds the constants, ``slack_estimates`` (per update; one
        float per constraint), ``reward_estimates``, ``grad_norms`` (of ``g``),
        ``step_lengths`` (``||theta_{i+1} - theta_i||``), ``trajectories_simulated`` and
        ``reference_trajectories`` (what the reference would simulate).

    Raises
    ------
    TypeError, ValueError
        For arguments of the wrong type or out of range.
    SafeMetaError
        If an iterate becomes non-finite.

    Examples
    --------
    >>> from safemeta_fast.envs import gridworld
    >>> pi_lb = lb_start_policy(gridworld(0.4))
    >>> log = lb_sgd(gridworld(0.34), pi_lb, n_episodes=1500, batch=1000, seed=0,
    ...              regret_reference=49.4)
    >>> log.policy_starts.tolist(), log.violations
    ([0, 500], 0)
    """
    M = check_cmdp(M_test, "M_test")
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    pi0 = as_policy(pi_start, S, A, name="pi_start")
    n_total = check_size("n_episodes", n_episodes, minimum=1,
                         item_bytes=16 * (1 + M.n_constraints), what="the episode log")
    H = check_int("horizon", horizon, 1)
    eta = check_real("eta", eta, lo=0.0)
    step = check_real("step", step, lo=0.0, lo_open=True)
    if not isinstance(step_rule, str) or step_rule not in _STEP_RULES:
        raise ValueError(f"step_rule is {step_rule!r}; expected one of {_STEP_RULES}")
    fb = check_int("first_batch", first_batch, 1)
    bs = check_int("batch", batch, 1)
    slack_clip = check_real("slack_clip", slack_clip, lo=0.0, lo_open=True)
    if smoothness is not None:
        if step_rule != "adaptive":
            raise ValueError("smoothness only applies to step_rule='adaptive'; got step_rule="
                             f"{step_rule!r} with smoothness={smoothness!r}")
        if not isinstance(smoothness, (tuple, list)) or len(smoothness) != 2:
            raise ValueError(f"smoothness must be a pair (M0, M1); got {smoothness!r}")
        m0 = check_real("smoothness[0]", smoothness[0], lo=0.0, lo_open=True)
        m1 = check_real("smoothness[1]", smoothness[1], lo=0.0, lo_open=True)
    elif step_rule == "adaptive":
        m0, m1 = default_smoothness(M)
    else:
        m0 = m1 = None
    stop_on_violation = check_bool("stop_on_violation", stop_on_violation)
    violation_tol = check_real("violation_tol", violation_tol, lo=0.0)
    progress = check_bool("progress", progress)
    v_star = regret_reference_of(M, regret_reference)
    seed_used = resolve_seed(seed)

    schedule = lb_sgd_schedule(n_total, fb, bs)
    ends = np.append(schedule[1:], n_total)
    limit = np.asarray(M.cost_limit, dtype=np.float64)
    tables = _tables(M)

    theta = _theta_from_policy(np.asarray(pi0))
    audit = BlockAudit(M, stop_on_violation, violation_tol)
    slack_est, reward_est, grad_norms, step_lengths = [], [], [], []
    simulated = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_total, unit="episode", desc="lb_sgd")
    try:
        for i, it in enumerate(schedule):
            pi = _softmax(theta)
            if not audit.deploy(pi, int(it)):
                break
            n_block = fb if i == 0 else bs
            if i + 1 < schedule.size:  # the last block's gradient would be wasted
                g_r, g_c, j_r, j_c = _gradient(M, pi, n_block, H, seed_used, int(it), tables)
                simulated += n_block
                g, s_hat = _barrier_gradient(g_r, g_c, j_c, limit, eta, slack_clip)
                norm = float(np.sqrt(np.sum(g * g)))
                if step_rule == "fixed":
                    delta = step * g
                else:
                    gam = _adaptive_step(g, g_c, s_hat, eta, m0, m1)
                    delta = (gam / norm) * g if norm > 0.0 else np.zeros_like(g)
                theta = theta + delta
                if not np.all(np.isfinite(theta)):
                    raise SafeMetaError(f"lb_sgd: theta became non-finite at update {i} "
                                        f"(episode {int(it)}); gradient norm {norm!r}")
                slack_est.append(float(s_hat[0]) if K == 1 else [float(x) for x in s_hat])
                reward_est.append(j_r)
                grad_norms.append(norm)
                step_lengths.append(float(np.sqrt(np.sum(delta * delta))))
            if bar is not None:
                bar.update(int(ends[i] - it))
    finally:
        if bar is not None:
            bar.close()

    n_run = int(ends[len(audit.starts) - 1]) if audit.starts else 0
    starts_arr, exact_reward, exact_cost = audit.arrays(n_run)
    stopped = audit.stopped
    reference_trajectories = fb + bs * (schedule.size - 1)
    info = {
        "step_rule": step_rule,
        "eta": eta,
        "step": step,
        "slack_clip": slack_clip,
        "first_batch": fb,
        "batch": bs,
        "horizon": H,
        "smoothness": None if m0 is None else [m0, m1],
        "n_updates": len(grad_norms),
        "slack_estimates": slack_est,
        "reward_estimates": reward_est,
        "grad_norms": grad_norms,
        "step_lengths": step_lengths,
        "trajectories_simulated": simulated,
        "reference_trajectories": int(reference_trajectories),
    }
    return BaselineLog(
        method="lb_sgd",
        seed=seed_used,
        exact_reward=exact_reward,
        exact_cost=exact_cost,
        cost_limit=limit,
        regret_reference=v_star,
        policy_starts=starts_arr,
        stopped_on_violation=stopped,
        n_budget=n_total,
        info=info,
        violation_tol=violation_tol,
    )
