"""DOPE+ as the reference runs it (BASELINES.md section 5), and the machinery DOPE reuses.

DOPE+ (Yu, Lee, Overman & Lee, RLJ 2025) in the authors' discounted translation
(``DOPE+.ipynb``): play the safe start policy ``pi_s`` for a warm-up, counting
transitions; afterwards, before every episode, estimate the model from all counts so
far and solve an optimistic-pessimistic occupancy LP on the empirical model, play its
policy for one episode, count, repeat. If the LP fails, ``pi_s`` is played.

Pieces shared with :mod:`safemeta_fast.baselines.dope` (imported there, never copied):

* :func:`estimate_model` -- ``P_hat``, the summed radius ``eps``, the per-entry radius
  ``conf_p`` and the flow slack ``w`` from the counts (section 5b "Estimation");
* :func:`optimistic_reward` and :func:`reward_cap_value` -- the capped optimistic reward;
* :class:`OptimisticLP` -- the LP built once per run (three interchangeable back ends);
* :func:`run_optimistic_pessimistic` -- the driver loop.

Only the cost bonus (``conf``) and the reward-bonus scale differ between the two methods.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..cmdp import CMDP
from ..evaluation import evaluate
from ..kernels.dope import count_episodes
from ..kernels.trajectory import csr_cdf, policy_cdf
from ..lp import quiet_highs
from ..lp.problem import extract_policy
from ..policy import as_policy
from ..seeding import resolve_seed
from ..validation import check_bool, check_cmdp, check_int, check_real, check_size
from .common import BaselineLog, regret_reference_of

__all__ = [
    "dope_plus",
    "ModelEstimate",
    "estimate_model",
    "dope_plus_cost_bonus",
    "optimistic_reward",
    "reward_cap_value",
    "LPData",
    "lp_data",
    "OptimisticLP",
    "policy_from_occupancy",
    "run_optimistic_pessimistic",
    "REFERENCE_REWARD_CAP",
    "BACKENDS",
]

#: The reference's reward cap ``1 + sqrt(5e-4)`` (assumes rewards in {0, 1}).
REFERENCE_REWARD_CAP = 1.0 + math.sqrt(5e-4)
_CAP_SLACK = math.sqrt(5e-4)
_CAP_MODES = ("reference", "corrected", None)
#: LP back ends: a persistent highspy model updated in place ("highs"), a compiled cvxpy
#: problem with Parameters ("cvxpy"), a cold ``scipy.optimize.linprog`` per episode with
#: the reference's exact matrix and row order ("linprog", the faithful reproduction).
BACKENDS = ("highs", "cvxpy", "linprog")


# ---------------------------------------------------------------------------
# estimation (section 5b)
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ModelEstimate:
    """Empirical model and confidence radii from the counts (BASELINES.md 5b).

    Attributes
    ----------
    P_hat : numpy.ndarray, shape (S, A, S)
        ``n(s, a, .) / n(s, a)``; uniform ``1/S`` where ``n(s, a) = 0``.
    n1 : numpy.ndarray, shape (S, A)
        ``n' = max(1, n(s, a) - 1)``.
    eps : numpy.ndarray, shape (S, A)
        Summed L1 radius ``sqrt(4 L S / n') + 14 L S / (3 n')``.
    conf_p : numpy.ndarray, shape (S, A, S)
        Per-entry radius ``sqrt(4 L_p P_hat / n') + 14 L_p / (3 n')``.
    w : numpy.ndarray, shape (S,)
        Flow slack ``w(s) = sum_a sum_s'' conf_p(s, a, s'')`` (state ``s``'s OWN outgoing
        rows, as in the reference).
    """

    P_hat: np.ndarray
    n1: np.ndarray
    eps: np.ndarray
    conf_p: np.ndarray
    w: np.ndarray


def estimate_model(n_sa, n_sas, L: float, L_p: float) -> ModelEstimate:
    """Estimate the model and the radii of section 5b from visit counts (vectorised).

    Parameters
    ----------
    n_sa : array_like, shape (S, A)
        Visit counts ``n(s, a)``.
    n_sas : array_like, shape (S, A, S)
        Transition counts ``n(s, a, s')`` (summing over ``s'`` to ``n(s, a)``).
    L, L_p : float
        Log constants of ``eps`` and ``conf_p``.

    Returns
    -------
    ModelEstimate

    Examples
    --------
    >>> est = estimate_model(np.array([[2.0]]), np.array([[[2.0]]]), 1e-4, 1e-8)
    >>> float(est.P_hat[0, 0, 0]), float(est.n1[0, 0])
    (1.0, 1.0)
    """
    n_sa = np.asarray(n_sa, dtype=np.float64)
    n_sas = np.asarray(n_sas, dtype=np.float64)
    S = n_sa.shape[0]
    n1 = np.maximum(1.0, n_sa - 1.0)
    visited = n_sa > 0
    P_hat = np.where(visited[..., None], n_sas / np.maximum(n_sa, 1.0)[..., None], 1.0 / S)
    eps = np.sqrt(4.0 * L * S / n1) + 14.0 * L * S / (3.0 * n1)
    conf_p = np.sqrt(4.0 * L_p * P_hat / n1[..., None]) + 14.0 * L_p / (3.0 * n1[..., None])
    w = conf_p.sum(axis=(1, 2))
    return ModelEstimate(P_hat, n1, eps, conf_p, w)


def dope_plus_cost_bonus(est: ModelEstimate, gamma: float, L: float, conf_K: float) -> np.ndarray:
    """The DOPE+ reference cost bonus, shape (S, A) (BASELINES.md 5b).

    ``conf(s, a) = 8 eps(s, a) / sqrt(1 - gamma) + 2 L sqrt(conf_K / ((1 - gamma) A)) / n'``.
    """
    A = est.n1.shape[1]
    return (8.0 * est.eps / math.sqrt(1.0 - gamma)
            + 2.0 * L * math.sqrt(conf_K / ((1.0 - gamma) * A)) / est.n1)


def reward_cap_value(mode, r: np.ndarray) -> float | None:
    """The numeric reward cap for a ``reward_cap`` mode.

    ``"reference"``: ``1 + sqrt(5e-4)`` (the authors' constant, which assumes rewards in
    {0, 1}); ``"corrected"``: ``max r + sqrt(5e-4) * max |r|`` (the cap scaled with the
    reward range; ``= (1 + sqrt(5e-4)) max r`` for non-negative rewards, i.e. 10.2236
    on the gridworld); ``None``: no cap.
    """
    if mode == "reference":
        return REFERENCE_REWARD_CAP
    if mode == "corrected":
        r = np.asarray(r, dtype=np.float64)
        return float(r.max() + _CAP_SLACK * np.abs(r).max())
    return None


def optimistic_reward(r: np.ndarray, conf: np.ndarray, scale: float,
                      cap: float | None) -> np.ndarray:
    """``r_tilde = min(r + scale * conf, cap)`` (no ``min`` when ``cap`` is None), shape (S, A)."""
    rt = np.asarray(r, dtype=np.float64) + scale * conf
    return rt if cap is None else np.minimum(rt, cap)


# ---------------------------------------------------------------------------
# the optimistic-pessimistic LP (section 5b)
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LPData:
    """Data of one optimistic-pessimistic LP over ``x`` (S*A,), ``x >= 0``, index ``s*A + a``.

    maximise ``obj . x`` subject to ``G x <= b`` (K pessimistic cost rows), then the 2S
    relaxed flow rows ``F x <= hi`` and ``-F x <= -lo`` (the reference's 99 rows for
    S = 49, K = 1, in this order).

    Attributes
    ----------
    obj : (S*A,) ``r_tilde / (1 - gamma)``.
    G : (K, S*A) ``(c_k + conf) / (1 - gamma)``.
    b : (K,) cost limits.
    F : (S, S*A) ``E - gamma P_hat^T``: ``F[s', s*A + a] = [s' = s] - gamma P_hat(s'|s, a)``.
    lo, hi : (S,) ``(1 - gamma) nu0 -/+ w``.
    """

    obj: np.ndarray
    G: np.ndarray
    b: np.ndarray
    F: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def reference_form(self):
        """``(c, A_ub, b_ub)`` for ``linprog`` (minimise ``c . x``, rows in the reference order)."""
        A_ub = np.vstack([self.G, self.F, -self.F])
        b_ub = np.concatenate([self.b, self.hi, -self.lo])
        return -self.obj, A_ub, b_ub


def lp_data(M: CMDP, est: ModelEstimate, conf: np.ndarray, r_tilde: np.ndarray) -> LPData:
    """Assemble the LP of section 5b from an estimate, a cost bonus and an optimistic reward."""
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    g = M.gamma
    n = S * A
    F = np.repeat(np.eye(S), A, axis=1) - g * est.P_hat.reshape(n, S).T
    G = (M.c + conf[:, :, None]).reshape(n, K).T / (1.0 - g)
    rhs = (1.0 - g) * M.nu0
    return LPData(obj=r_tilde.reshape(n) / (1.0 - g), G=np.ascontiguousarray(G),
                  b=np.array(M.cost_limit, dtype=np.float64), F=F, lo=rhs - est.w, hi=rhs + est.w)


class OptimisticLP:
    """The optimistic-pessimistic LP of one run, built once and re-solved every episode.

    Parameters
    ----------
    S, A, K : int
        Shape of the task.
    backend : {"highs", "cvxpy", "linprog"}
        ``"highs"``: one persistent :class:`highspy.Highs` model (K cost rows, then the S
        flow rows held as ranged rows ``lo <= F x <= hi``, HiGHS's native form of the
        reference's two one-sided rows: the same feasible set). Each :meth:`solve`
        changes in place only the matrix coefficients, costs and row bounds that moved
        since the previous episode and re-solves from HiGHS's current basis; a warm
        solve that is not optimal is retried once cold. ``"cvxpy"``: the same LP with
        the reference's 99 rows as a DPP cvxpy problem with Parameters (compiled once),
        solved by HiGHS. ``"linprog"``: a cold ``scipy.optimize.linprog(method="highs")``
        on the reference's exact matrix, row and column order (the reference's own call).

    Notes
    -----
    Under the reference reward cap the objective is flat (section 5d), so the optimal
    VALUE is unique but the optimal vertex, hence the policy, depends on the back end
    and on the previous basis.
    """

    def __init__(self, S: int, A: int, K: int, backend: str = "highs"):
        if backend not in BACKENDS:
            raise ValueError(f"backend is {backend!r}; expected one of {BACKENDS}")
        self.S, self.A, self.K, self.n = S, A, K, S * A
        self.backend = backend
        self.n_cold_retries = 0
        self._built = False

    # -- highs ----------------------------------------------------------------
    def _highs_build(self, d: LPData):
        import highspy as hp

        self._hp = hp
        h = quiet_highs(hp)
        h.setOptionValue("output_flag", False)
        V = np.vstack([d.G, d.F])                      # (K + S, n), row-major
        cols, rows = np.nonzero(V.T)                   # column-wise order for CSC
        start = np.zeros(self.n + 1, dtype=np.int32)
        np.cumsum(np.bincount(cols, minlength=self.n), out=start[1:])
        lp = hp.HighsLp()
        lp.num_col_ = self.n
        lp.num_row_ = self.K + self.S
        lp.sense_ = hp.ObjSense.kMaximize
        lp.col_cost_ = d.obj.copy()
        lp.col_lower_ = np.zeros(self.n)
        lp.col_upper_ = np.full(self.n, hp.kHighsInf)
        lp.row_lower_ = np.concatenate([np.full(self.K, -hp.kHighsInf), d.lo])
        lp.row_upper_ = np.concatenate([d.b, d.hi])
        lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
        lp.a_matrix_.start_ = start
        lp.a_matrix_.index_ = rows.astype(np.int32)
        lp.a_matrix_.value_ = V.T[cols, rows]
        h.passModel(lp)
        self._h = h
        self._V = V
        self._obj = d.obj.copy()
        self._lo = d.lo.copy()
        self._hi = d.hi.copy()
        self._b = d.b.copy()
        self._flow_rows = np.arange(self.K, self.K + self.S, dtype=np.int32)

    def _highs_update(self, d: LPData):
        h = self._h
        V = np.vstack([d.G, d.F])
        rr, cc = np.nonzero(V != self._V)
        if rr.size:
            vals = V[rr, cc]
            for i, j, v in zip(rr.tolist(), cc.tolist(), vals.tolist()):
                h.changeCoeff(i, j, v)
            self._V = V
        ch = np.flatnonzero(d.obj != self._obj)
        if ch.size:
            h.changeColsCost(ch.size, ch.astype(np.int32), d.obj[ch])
            self._obj = d.obj.copy()
        if not (np.array_equal(d.lo, self._lo) and np.array_equal(d.hi, self._hi)):
            h.changeRowsBounds(self.S, self._flow_rows, d.lo, d.hi)
            self._lo, self._hi = d.lo.copy(), d.hi.copy()
        if not np.array_equal(d.b, self._b):
            idx = np.arange(self.K, dtype=np.int32)
            h.changeRowsBounds(self.K, idx, np.full(self.K, -self._hp.kHighsInf), d.b)
            self._b = d.b.copy()

    def _highs_solve(self, d: LPData):
        if not self._built:
            self._highs_build(d)
            self._built = True
        else:
            self._highs_update(d)
        h = self._h
        h.run()
        status = h.getModelStatus().name
        if status != "kOptimal":
            self.n_cold_retries += 1
            h.clearSolver()
            h.run()
            status = h.getModelStatus().name
        if status != "kOptimal":
            return None
        return np.asarray(h.getSolution().col_value, dtype=np.float64)

    # -- cvxpy ----------------------------------------------------------------
    def _cvxpy_build(self, d: LPData):
        import cvxpy as cp

        n, S, K = self.n, self.S, self.K
        self._x = cp.Variable(n, nonneg=True, name="x")
        self._p_obj = cp.Parameter(n, name="r_tilde")
        self._p_G = cp.Parameter((K, n), name="G")
        self._p_F = cp.Parameter((S, n), name="F")
        self._p_lo = cp.Parameter(S, name="lo")
        self._p_hi = cp.Parameter(S, name="hi")
        self._p_b = cp.Parameter(K, name="b")
        cons = [self._p_G @ self._x <= self._p_b,
                self._p_F @ self._x <= self._p_hi,
                -self._p_F @ self._x <= -self._p_lo]
        self._prob = cp.Problem(cp.Maximize(self._p_obj @ self._x), cons)
        if not self._prob.is_dpp():  # pragma: no cover - a construction invariant
            raise RuntimeError("the DOPE+ LP is not DPP")

    def _cvxpy_solve(self, d: LPData):
        import cvxpy as cp

        if not self._built:
            self._cvxpy_build(d)
            self._built = True
        self._p_obj.value = d.obj
        self._p_G.value = d.G
        self._p_F.value = d.F
        self._p_lo.value = d.lo
        self._p_hi.value = d.hi
        self._p_b.value = d.b
        try:
            # cold: cvxpy's HiGHS warm start raised SolverError on ~16% of the episodes of
            # this degenerate LP (a cold retry then succeeds), which costs more than it saves
            self._prob.solve(solver="HIGHS", warm_start=False)
        except cp.error.SolverError:
            return None
        if self._prob.status != "optimal":
            return None
        return np.asarray(self._x.value, dtype=np.float64)

    # -- linprog --------------------------------------------------------------
    def _linprog_solve(self, d: LPData):
        from scipy.optimize import linprog

        c, A_ub, b_ub = d.reference_form()
        res = linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs")
        if res.x is None or not res.success:
            return None
        return np.asarray(res.x, dtype=np.float64)

    def solve(self, d: LPData):
        """Solve for ``d``; returns ``x`` (S*A,) or None when the solver does not report optimal."""
        if self.backend == "highs":
            return self._highs_solve(d)
        if self.backend == "cvxpy":
            return self._cvxpy_solve(d)
        return self._linprog_solve(d)


def policy_from_occupancy(x: np.ndarray, S: int, A: int) -> np.ndarray:
    """``pi(a|s) = x(s, a) / sum_a x(s, a)``, uniform where the sum is <= 1e-10, shape (S, A).

    Solver round-off below 0 is clipped to 0 first (the oracle's own extraction,
    :func:`safemeta_fast.lp.problem.extract_policy`).
    """
    return extract_policy(np.maximum(np.asarray(x, dtype=np.float64), 0.0).reshape(S, A))


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

def check_dope_arguments(M_test, pi_start, n_episodes, regret_reference, horizon, warmup, L, L_p,
                  reward_cap, backend, stop_on_violation, violation_tol, progress):
    """Validate the arguments DOPE+ and DOPE share; returns the cleaned values."""
    check_cmdp(M_test, "M_test")
    pi_s = np.array(as_policy(pi_start, M_test.n_states, M_test.n_actions, name="pi_start"))
    out = dict(
        pi_s=pi_s,
        # per episode: the exact reward and K costs logged (8 (1 + K) bytes, plus the log)
        n_episodes=check_size("n_episodes", n_episodes, minimum=1,
                              item_bytes=16 * (1 + M_test.n_constraints),
                              what="the episode log"),
        horizon=check_size("horizon", horizon, minimum=1, item_bytes=16,
                           what="the trajectory buffers"),
        warmup=check_int("warmup", warmup, 0),
        L=check_real("L", L, lo=0.0, lo_open=True),
        L_p=check_real("L_p", L_p, lo=0.0),
        stop_on_violation=check_bool("stop_on_violation", stop_on_violation),
        violation_tol=check_real("violation_tol", violation_tol, lo=0.0),
        progress=check_bool("progress", progress),
    )
    if regret_reference is not None:
        regret_reference = check_real("regret_reference", regret_reference)
    out["regret_reference"] = regret_reference
    if not (reward_cap is None or (isinstance(reward_cap, str) and reward_cap in _CAP_MODES)):
        raise ValueError(f"reward_cap is {reward_cap!r}; expected 'reference', 'corrected' or None")
    out["reward_cap"] = reward_cap
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend is {backend!r}; expected one of {BACKENDS}")
    out["backend"] = backend
    return out


# ---------------------------------------------------------------------------
# the driver (section 5b "Driver"), shared with DOPE
# ---------------------------------------------------------------------------

def _policy_key(pi: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(pi).tobytes(), digest_size=16).digest()


def run_optimistic_pessimistic(M: CMDP, *, method: str, label: str, pi_s: np.ndarray,
                               n_episodes: int, regret_reference, seed, horizon: int, warmup: int,
                               L: float, L_p: float,
                               cost_bonus: Callable[[ModelEstimate], np.ndarray],
                               reward_bonus_scale: float, reward_cap, backend: str,
                               stop_on_violation: bool, violation_tol: float, progress: bool,
                               info: dict) -> BaselineLog:
    """The DOPE+/DOPE loop on validated arguments (see :func:`dope_plus`).

    ``cost_bonus(est)`` returns ``conf`` (S, A); the optimistic reward is
    ``min(r + reward_bonus_scale * conf, cap)``. Episode ``e`` (warm-up included) is
    sampled from stream ``e`` of the resolved seed.
    """
    seed = resolve_seed(seed)
    S, A, K = M.n_states, M.n_actions, M.n_constraints
    ev_s = evaluate(M, pi_s)
    regret_reference = regret_reference_of(M, regret_reference)
    cap = reward_cap_value(reward_cap, M.r)
    limit = np.asarray(M.cost_limit)

    nu_cdf = policy_cdf(np.ascontiguousarray(M.nu0)[None, :])[0]
    succ_cdf = csr_cdf(M.succ_ptr, M.succ_prob)
    succ_ptr, succ_next, absorbing = M.succ_ptr, M.succ_next, M.absorbing
    pair_of_entry = np.repeat(np.arange(S * A), np.diff(succ_ptr))
    flat_entry = pair_of_entry * S + succ_next           # position in the dense (S*A*S) counts
    n_sa = np.zeros(S * A, dtype=np.int64)
    n_succ = np.zeros(succ_next.size, dtype=np.int64)
    states = np.empty(horizon + 1, dtype=np.int64)
    actions = np.empty(horizon + 1, dtype=np.int64)

    exact_r = np.empty(n_episodes)
    exact_c = np.empty((n_episodes, K))
    starts: list[int] = []
    cache: dict[bytes, tuple[float, np.ndarray]] = {}
    key_s = _policy_key(pi_s)
    cache[key_s] = (float(ev_s.reward), np.array(ev_s.cost, dtype=np.float64))

    def unsafe(cost):
        return bool(np.any(cost > limit + violation_tol))

    lp = OptimisticLP(S, A, K, backend)
    stopped = False
    n_run = 0
    n_lp = n_fail = 0
    lp_seconds = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_episodes, desc=method, unit="episode")

    n_warm = min(warmup, n_episodes)
    warm_steps = 0
    if n_warm > 0:
        if stop_on_violation and unsafe(cache[key_s][1]):
            stopped = True
        else:
            warm_steps = int(count_episodes(seed, 0, n_warm, policy_cdf(pi_s), nu_cdf, succ_ptr,
                                            succ_next, succ_cdf, horizon, absorbing, n_sa, n_succ,
                                            states, actions))
            exact_r[:n_warm] = cache[key_s][0]
            exact_c[:n_warm] = cache[key_s][1]
            starts.append(0)
            n_run = n_warm
            if bar is not None:
                bar.update(n_warm)
    warm_info = dict(warmup_steps=warm_steps, warmup_counts=int(n_sa.sum()),
                     warmup_pairs_visited=int(np.count_nonzero(n_sa)))
    prev_key = key_s if n_run else None
    n_sas = np.zeros(S * A * S)
    first_lp = None
    it = n_run
    while not stopped and it < n_episodes:
        n_sas[flat_entry] = n_succ
        est = estimate_model(n_sa.reshape(S, A), n_sas.reshape(S, A, S), L, L_p)
        conf = cost_bonus(est)
        r_tilde = optimistic_reward(M.r, conf, reward_bonus_scale, cap)
        data = lp_data(M, est, conf, r_tilde)
        t0 = time.perf_counter()
        x = lp.solve(data)
        lp_seconds += time.perf_counter() - t0
        n_lp += 1
        if x is None:
            n_fail += 1
            pi = pi_s
        else:
            pi = policy_from_occupancy(x, S, A)
        key = _policy_key(pi)
        vals = cache.get(key)
        if vals is None:
            ev = evaluate(M, pi)
            vals = (float(ev.reward), np.array(ev.cost, dtype=np.float64))
            cache[key] = vals
        if first_lp is None:
            first_lp = dict(
                first_lp_episode=it, first_lp_success=x is not None,
                first_lp_reward=vals[0], first_lp_cost=vals[1].tolist(),
                first_lp_conf_min=float(conf.min()), first_lp_conf_max=float(conf.max()),
                first_lp_reward_saturated=bool(cap is not None and np.all(r_tilde == cap)),
            )
        if stop_on_violation and unsafe(vals[1]):
            stopped = True
            break
        if key != prev_key:
            starts.append(it)
            prev_key = key
        count_episodes(seed, it, 1, policy_cdf(np.ascontiguousarray(pi)), nu_cdf, succ_ptr,
                       succ_next, succ_cdf, horizon, absorbing, n_sa, n_succ, states, actions)
        exact_r[it] = vals[0]
        exact_c[it] = vals[1]
        it += 1
        n_run = it
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    info = dict(info)
    info.update(
        label=label, backend=backend, warmup=warmup, L=L, L_p=L_p,
        reward_bonus_scale=float(reward_bonus_scale), reward_cap=reward_cap,
        reward_cap_value=cap, n_lp=n_lp, n_lp_fallbacks=n_fail,
        n_cold_retries=lp.n_cold_retries, n_distinct_policies=len(cache),
        lp_seconds=lp_seconds, pi_start_reward=float(ev_s.reward),
        pi_start_cost=np.asarray(ev_s.cost).tolist(), final_counts=int(n_sa.sum()),
        final_pairs_visited=int(np.count_nonzero(n_sa)), **warm_info,
    )
    if first_lp is not None:
        info.update(first_lp)
    return BaselineLog(
        method=method, seed=seed, exact_reward=exact_r[:n_run], exact_cost=exact_c[:n_run],
        cost_limit=limit, regret_reference=float(regret_reference),
        policy_starts=np.array(starts, dtype=np.int64), stopped_on_violation=stopped,
        n_budget=n_episodes, info=info, violation_tol=violation_tol,
    )


# ---------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------

def dope_plus(M_test: CMDP, pi_start, *, n_episodes: int = 40_000, regret_reference=None,
              seed=None, horizon: int = 600, warmup: int = 18_000, L: float = 1e-4,
              L_p: float = 1e-8, conf_K: float = 40_000, reward_bonus_scale=None,
              reward_cap="reference", backend: str = "highs", stop_on_violation: bool = False,
              violation_tol: float = 1e-9, progress: bool = False) -> BaselineLog:
    """DOPE+ as in the authors' ``DOPE+.ipynb`` (BASELINES.md section 5).

    The test task's transition kernel is used ONLY to sample episodes. ``r``, ``c``,
    ``cost_limit``, ``nu0`` and ``gamma`` are treated as known (as in the reference), and
    the exact evaluation of each deployed policy is the audit, not a learning signal.

    Loop (section 5b). Episode ``e`` uses stream ``e`` of the seed.

    1. Warm-up, episodes ``0 .. warmup-1``: play ``pi_start``.
    2. Every later episode: estimate from ALL counts so far (``n' = max(1, n - 1)``)
       ``P_hat = n(s,a,.)/n(s,a)`` (uniform ``1/S`` if unvisited),
       ``eps = sqrt(4 L S/n') + 14 L S/(3 n')``,
       ``conf = 8 eps/sqrt(1-gamma) + 2 L sqrt(conf_K/((1-gamma) A))/n'``,
       ``conf_p = sqrt(4 L_p P_hat/n') + 14 L_p/(3 n')``,
       ``w(s) = sum_{a,s''} conf_p(s,a,s'')``; solve the LP over ``x >= 0`` (S*A,)

           maximise   sum r_tilde x / (1-gamma),  r_tilde = min(r + reward_bonus_scale conf, cap)
           s.t.       sum (c_k + conf) x / (1-gamma) <= b_k                 (K rows)
                      sum_a x(s,a) - gamma sum P_hat(s|s',a') x(s',a') <= (1-gamma) nu0(s) + w(s)
                      -[same]                                          <= -(1-gamma) nu0(s) + w(s)

       and play ``pi = x(s,.)/sum_a x(s,a)`` (uniform where the sum <= 1e-10), or
       ``pi_start`` if the LP fails.
    3. Sampling stops when an episode lands in an absorbing state ``s_abs`` (the goal);
       then one extra count of ``(s_abs, a', s_abs)`` is added for EVERY action ``a'``.

    With K > 1 constraints every cost gets its own pessimistic row with the same bonus
    ``conf`` (the natural generalisation).

    .. warning:: **Reward-scale bug of the reference (the default).** ``reward_cap="reference"``
       caps the optimistic reward at ``1 + sqrt(5e-4) = 1.02236``, a constant that assumes
       rewards in {0, 1}. On the gridworld (goal reward 10) after the reference warm-up
       EVERY ``r_tilde`` equals the cap, the goal included: the LP objective is flat (it
       only maximises the total occupancy mass) and the policy is whichever optimal
       vertex the solver returns (section 5d). Kept as the default to reproduce Figure 2.
       ``reward_cap="corrected"`` caps at ``max r + sqrt(5e-4) * max |r|`` instead (the
       same relative slack, scaled with the reward range; 10.2236 on the gridworld);
       ``reward_cap=None`` applies no cap.

    Parameters
    ----------
    M_test : CMDP
        The test task (S states, A actions, K constraints).
    pi_start : array_like, shape (S, A)
        Safe start policy ``pi_s`` (played during the warm-up and on LP failure).
    n_episodes : int, default 40000
        Episode budget (warm-up included).
    regret_reference : float or None
        ``V*`` of the regret; None uses the exact LP optimum ``solve_lp(M_test).reward``
        (the experiment passes the authors' primal-dual value).
    seed : int, numpy.random.Generator or None
    horizon : int, default 600
        Steps per episode at most.
    warmup : int, default 18000
        Warm-up episodes with ``pi_start`` (the notebook value; the published figure
        suggests 14000 for most runs, section 5f).
    L, L_p : float, default 1e-4, 1e-8
        Tuned log constants of ``eps``/``conf`` and of ``conf_p``.
    conf_K : float, default 40000
        The ``K`` inside ``conf``'s second term.
    reward_bonus_scale : float or None
        Multiplier of ``conf`` in the reward; None: ``1 / (0.1 (1 - gamma))`` (reference).
    reward_cap : {"reference", "corrected", None}, default "reference"
        See the warning above.
    backend : {"highs", "cvxpy", "linprog"}, default "highs"
        The LP solver, see :class:`OptimisticLP`; ``"linprog"`` is the reference's own
        cold scipy call (the only one that can reproduce its vertex choices).
    stop_on_violation : bool, default False
        Stop before deploying a policy whose exact cost exceeds the limit (the reference
        breaks right after deploying it); by default record it and continue.
    violation_tol : float, default 1e-9
    progress : bool, default False
        Show a tqdm bar over episodes.

    Returns
    -------
    BaselineLog
        ``method="dope_plus"``; ``info`` holds the settings (``label``, ``backend``,
        ``reward_cap`` and its value, ...), warm-up statistics (``warmup_counts``,
        ``warmup_pairs_visited``), the first LP (``first_lp_*``: values, conf range,
        whether the reward is saturated), ``n_lp``, ``n_lp_fallbacks``,
        ``n_distinct_policies`` and ``lp_seconds``.

    Examples
    --------
    >>> from safemeta_fast import primal_dual
    >>> from safemeta_fast.envs import gridworld
    >>> pi_s = primal_dual(gridworld(0.4), beta=0.1).policy
    >>> log = dope_plus(gridworld(0.34), pi_s, n_episodes=60, warmup=50, seed=0)
    >>> log.n_episodes, int(log.policy_starts[0]), log.info["n_lp"]
    (60, 0, 10)
    """
    args = check_dope_arguments(M_test, pi_start, n_episodes, regret_reference, horizon, warmup,
                                L, L_p, reward_cap, backend, stop_on_violation, violation_tol,
                                progress)
    conf_K = check_real("conf_K", conf_K, lo=0.0, lo_open=True)
    g = M_test.gamma
    if reward_bonus_scale is None:
        reward_bonus_scale = 1.0 / (0.1 * (1.0 - g))
    else:
        reward_bonus_scale = check_real("reward_bonus_scale", reward_bonus_scale, lo=0.0)
    L_ = args["L"]

    def cost_bonus(est):
        return dope_plus_cost_bonus(est, g, L_, conf_K)

    return run_optimistic_pessimistic(
        M_test, method="dope_plus", label="DOPE+ (reference discounted translation, DOPE+.ipynb)",
        pi_s=args["pi_s"], n_episodes=args["n_episodes"], regret_reference=args["regret_reference"],
        seed=seed, horizon=args["horizon"], warmup=args["warmup"], L=L_, L_p=args["L_p"],
        cost_bonus=cost_bonus, reward_bonus_scale=reward_bonus_scale,
        reward_cap=args["reward_cap"], backend=args["backend"],
        stop_on_violation=args["stop_on_violation"], violation_tol=args["violation_tol"],
        progress=args["progress"], info=dict(conf_K=conf_K),
    )
