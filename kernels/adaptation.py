"""Test-time phase (paper Algorithm 2): decision logic and the fused K-episode kernel.

The decision logic is ONE set of small jitted functions over a state held in three
arrays; the Python ask/tell object (``safemeta_fast.adaptation.SafeAdapter``) and the
fused kernel :func:`run_fused` both call exactly these functions, so the two paths take
the same decisions on the same returns.

State
-----
``istate`` int64 (N_ISTATE,):
    ``I_EP`` episodes observed so far (index of the next episode), ``I_CAND`` current
    candidate l (-1 once every candidate is eliminated), ``I_STAGE`` m, ``I_K0`` first
    episode of the current window, ``I_N`` episodes in the window, ``I_NPOOL`` episodes
    ever run with the safe policy alone (m = 0, alpha = 0), ``I_NELIM`` eliminations.
``fstate`` float64 (F_SUM_C + 2*K,):
    ``F_ALPHA`` the mixture weight, ``F_SUM_R`` / ``F_POOL_R`` window / pooled sums of
    the scaled episode rewards, then the window sums of the scaled slacks
    ``F_SUM_C + k`` and the pooled sums ``F_SUM_C + K + k``.
``elim_at`` int64 (n,): the episode at which candidate i was eliminated, -1 if alive.

Constants (``params`` float64 (N_PARAMS,)) are resolved in Python from a profile; see
``safemeta_fast.adaptation.Profile`` for their meaning. Candidate predictions ``u``,
``v``, ``u_s``, ``v_s`` are passed already on the profile's scale; observed returns
are raw and scaled here by ``params[P_INV_R]`` and ``inv_c`` (K,).

Sums are accumulated sequentially in episode order, so results never depend on the
thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .rng import stream_state, xoshiro256pp_next
from .rollout import alias_draw, alias_thresholds, build_alias, run_episodes

__all__ = [
    "I_EP", "I_CAND", "I_STAGE", "I_K0", "I_N", "I_NPOOL", "I_NELIM", "N_ISTATE",
    "F_ALPHA", "F_SUM_R", "F_POOL_R", "F_SUM_C",
    "P_RAD_R", "P_RAD_C", "P_RAD_POOL", "P_ERR_R", "P_ERR_C", "P_MIN_WIN", "P_GATE_CONST",
    "P_GATE_MIN", "P_GATE_MAX", "P_GATE_OFF", "P_A1_SHIFT", "P_A1_DENOM", "P_REC_ADD",
    "P_MMAX_ADD", "P_EPS", "P_FIXED_ALPHA", "P_INCLUSIVE", "P_INV_R", "N_PARAMS",
    "EV_NONE", "EV_ELIMINATED", "EV_UPDATED",
    "STATUS_OK", "STATUS_STOPPED",
    "init_state", "select_candidate", "next_alpha", "first_alpha", "m_max", "update_gate",
    "observe", "mixture_table", "draw_component", "audit_mixture", "run_fused",
]

I_EP, I_CAND, I_STAGE, I_K0, I_N, I_NPOOL, I_NELIM = 0, 1, 2, 3, 4, 5, 6
N_ISTATE = 7
F_ALPHA, F_SUM_R, F_POOL_R, F_SUM_C = 0, 1, 2, 3

(P_RAD_R, P_RAD_C, P_RAD_POOL, P_ERR_R, P_ERR_C, P_MIN_WIN, P_GATE_CONST, P_GATE_MIN,
 P_GATE_MAX, P_GATE_OFF, P_A1_SHIFT, P_A1_DENOM, P_REC_ADD, P_MMAX_ADD, P_EPS,
 P_FIXED_ALPHA, P_INCLUSIVE, P_INV_R) = range(18)
N_PARAMS = 18

EV_NONE, EV_ELIMINATED, EV_UPDATED = 0, 1, 2
STATUS_OK = 0
STATUS_STOPPED = 1


@njit(cache=True)
def select_candidate(u, elim_at):
    """Alive candidate with the largest predicted reward (first index on ties); -1 if none."""
    best = -1
    for i in range(u.size):
        if elim_at[i] < 0 and (best < 0 or u[i] > u[best]):
            best = i
    return best


@njit(cache=True)
def _start_alpha(params):
    fa = params[P_FIXED_ALPHA]
    return 0.0 if np.isnan(fa) else fa


@njit(cache=True)
def init_state(istate, fstate, elim_at, u, params):
    """Fresh state: every candidate alive, l = argmax u, m = 0, alpha = 0 (or fixed)."""
    for j in range(istate.size):
        istate[j] = 0
    for j in range(fstate.size):
        fstate[j] = 0.0
    for i in range(elim_at.size):
        elim_at[i] = -1
    istate[I_CAND] = select_candidate(u, elim_at)
    fstate[F_ALPHA] = _start_alpha(params)


@njit(cache=True)
def _clip01(x):
    if x < 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


@njit(cache=True)
def first_alpha(v_s, cand, params):
    """alpha_1 = min_k (v_s - shift) / (v_s - shift + denom), clipped to [0, 1]."""
    K = v_s.shape[1]
    best = 1.0
    for k in range(K):
        num = v_s[cand, k] - params[P_A1_SHIFT]
        den = num + params[P_A1_DENOM]
        a = 0.0 if (num <= 0.0 or den <= 0.0) else num / den
        a = _clip01(a)
        if a < best:
            best = a
    return best


@njit(cache=True)
def next_alpha(v_s, cand, alpha, m, params):
    """Weight after stage m: alpha_1 from m = 0, else min_k 3 v alpha / ((2 + alpha) v + add)."""
    if m == 0:
        return first_alpha(v_s, cand, params)
    K = v_s.shape[1]
    best = 1.0
    for k in range(K):
        vs = v_s[cand, k]
        den = (2.0 + alpha) * vs + params[P_REC_ADD]
        a = 0.0 if (vs <= 0.0 or den <= 0.0) else 3.0 * vs * alpha / den
        a = _clip01(a)
        if a < best:
            best = a
    return best


@njit(cache=True)
def m_max(v_s, cand, params):
    """min_k log_{C}(eps), C = (2 v_s + add) / (3 v_s); 0 when C is not in (0, 1)."""
    K = v_s.shape[1]
    best = np.inf
    eps = params[P_EPS]
    for k in range(K):
        vs = v_s[cand, k]
        mm = 0.0
        if vs > 0.0 and eps > 0.0 and eps < 1.0:
            C = (2.0 * vs + params[P_MMAX_ADD]) / (3.0 * vs)
            if C > 0.0 and C < 1.0:
                mm = np.log(eps) / np.log(C)
        if mm < best:
            best = mm
    return best


@njit(cache=True)
def update_gate(v_lm, params):
    """Episodes needed before a weight update: max_k min(max(const / v_k^2, lo), hi)."""
    g = 0.0
    for k in range(v_lm.size):
        vk = v_lm[k]
        if vk > 0.0:
            x = params[P_GATE_CONST] / (vk * vk)
        else:
            x = np.inf
        if x < params[P_GATE_MIN]:
            x = params[P_GATE_MIN]
        if x > params[P_GATE_MAX]:
            x = params[P_GATE_MAX]
        if x > g:
            g = x
    return g


@njit(cache=True)
def _exceeds(dev, rad, inclusive):
    if inclusive:
        return dev >= rad
    return dev > rad


@njit(cache=True)
def observe(istate, fstate, elim_at, u, v, u_s, v_s, cost_limit, inv_c, params, R, C, v_lm):
    """Feed one episode's raw returns ``R`` (float) and ``C`` (K,); returns the event.

    Implements steps 3-4 of SPEC section 6 (elimination test, then weight update), per
    constraint with the most conservative outcome. ``v_lm`` (K,) is scratch.
    """
    K = cost_limit.size
    k_ep = istate[I_EP]
    istate[I_EP] = k_ep + 1
    cand = istate[I_CAND]
    if cand < 0:
        return EV_NONE
    alpha = fstate[F_ALPHA]
    fixed = not np.isnan(params[P_FIXED_ALPHA])
    m = istate[I_STAGE]
    safe_only = (not fixed) and m == 0
    # accumulate the window (and the pool of safe-policy-only episodes)
    r_obs = R * params[P_INV_R]
    istate[I_N] += 1
    fstate[F_SUM_R] += r_obs
    if safe_only:
        istate[I_NPOOL] += 1
        fstate[F_POOL_R] += r_obs
    for k in range(K):
        g_obs = (cost_limit[k] - C[k]) * inv_c[k]
        fstate[F_SUM_C + k] += g_obs
        if safe_only:
            fstate[F_SUM_C + K + k] += g_obs
    # predictions of the deployed mixture
    u_lm = alpha * u[cand] + (1.0 - alpha) * u_s[cand]
    for k in range(K):
        v_lm[k] = alpha * v[cand, k] + (1.0 - alpha) * v_s[cand, k]
    pooled = safe_only and params[P_RAD_POOL] >= 0.0 and istate[I_NELIM] >= 1
    if pooled:
        nn = istate[I_NPOOL]
        off_r = F_POOL_R
        off_c = F_SUM_C + K
        rad_c_const = params[P_RAD_POOL]
    else:
        nn = istate[I_N]
        off_r = F_SUM_R
        off_c = F_SUM_C
        rad_c_const = params[P_RAD_C]
    inclusive = params[P_INCLUSIVE] != 0.0
    fail = False
    if nn >= params[P_MIN_WIN]:
        rad_r = np.sqrt(params[P_RAD_R] / nn) + params[P_ERR_R]
        if _exceeds(abs(fstate[off_r] / nn - u_lm), rad_r, inclusive):
            fail = True
        rad_c = np.sqrt(rad_c_const / nn) + params[P_ERR_C]
        for k in range(K):
            if _exceeds(abs(fstate[off_c + k] / nn - v_lm[k]), rad_c, inclusive):
                fail = True
    if fail:
        elim_at[cand] = k_ep
        istate[I_NELIM] += 1
        istate[I_CAND] = select_candidate(u, elim_at)
        istate[I_STAGE] = 0
        fstate[F_ALPHA] = _start_alpha(params)
        _reset_window(istate, fstate, k_ep + 1, K)
        return EV_ELIMINATED
    if fixed:
        return EV_NONE
    gate = update_gate(v_lm, params)
    if nn - params[P_GATE_OFF] >= gate and m <= m_max(v_s, cand, params):
        fstate[F_ALPHA] = next_alpha(v_s, cand, alpha, m, params)
        istate[I_STAGE] = m + 1
        _reset_window(istate, fstate, k_ep + 1, K)
        return EV_UPDATED
    return EV_NONE


@njit(cache=True)
def _reset_window(istate, fstate, k0, K):
    istate[I_K0] = k0
    istate[I_N] = 0
    fstate[F_SUM_R] = 0.0
    for k in range(K):
        fstate[F_SUM_C + k] = 0.0


@njit(cache=True)
def mixture_table(alpha, thr_i, alias):
    """2-entry alias table of (candidate, safe) = (alpha, 1 - alpha), 32-bit thresholds."""
    w = np.empty(2)
    w[0] = alpha
    w[1] = 1.0 - alpha
    thr = np.empty(2)
    small = np.empty(2, dtype=np.int64)
    large = np.empty(2, dtype=np.int64)
    build_alias(w, 0, 2, thr, alias, small, large)
    alias_thresholds(thr, thr_i)


@njit(cache=True)
def draw_component(seed, episode, alpha):
    """Component of episode ``episode``: 0 = candidate (prob. alpha), 1 = safe policy.

    The first draw of the episode's stream, exactly as the rollout kernel draws it.
    """
    thr_i = np.empty(2, dtype=np.int64)
    alias = np.empty(2, dtype=np.int64)
    mixture_table(alpha, thr_i, alias)
    s0, s1, s2, s3 = stream_state(seed, episode)
    x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
    return alias_draw(x, thr_i, alias)


@njit(cache=True)
def audit_mixture(w, a, c, exact_r, exact_c, cost_limit, viol_tol, out_c):
    """Exact values of the episode-level mixture ``w pi_a + (1 - w) pi_c``.

    Writes its costs into ``out_c`` (K,) and returns (reward, any cost above
    ``limit + viol_tol``); ``exact_r`` (m,), ``exact_c`` (m, K) are the components' values.
    """
    viol = False
    for k in range(cost_limit.size):
        ck = w * exact_c[a, k] + (1.0 - w) * exact_c[c, k]
        out_c[k] = ck
        if ck > cost_limit[k] + viol_tol:
            viol = True
    return w * exact_r[a] + (1.0 - w) * exact_r[c], viol


@njit(cache=True, nogil=True)
def run_fused(seed, n_episodes, decision, state, tables, exact_r, exact_c, stop_on_violation,
              viol_tol, outs):
    """All episodes of one test phase: draw, roll out, observe; returns (status, done).

    ``decision`` = (u, v, u_s, v_s, cost_limit, inv_c, params); ``state`` = (istate,
    fstate, elim_at); ``tables`` = (nu_thr, nu_alias, state_info, rec, bucket_state,
    r_flat, c_flat, r_abs, c_abs, gamma, horizon, tail, closed_form); ``outs`` = (out_r,
    out_c, out_comp, out_cand, out_alpha, out_stage, out_event, out_exact_r, out_exact_c).
    ``state_info`` holds the tables of the 2n components ``[pi_0, pi_s, pi_1, pi_s, ...]``
    so that candidate l's mixture is the contiguous slice ``[2l S, (2l + 2) S)``.
    ``exact_r`` (n + 1,) and ``exact_c`` (n + 1, K) are exact values of the candidates
    and (last row) of pi_s on the test task (NaN when unknown); the deployed mixture's
    exact values are ``alpha V(pi_l) + (1 - alpha) V(pi_s)``. With ``stop_on_violation``
    the run stops BEFORE deploying a mixture whose exact cost exceeds the limit by more
    than ``viol_tol`` (status STATUS_STOPPED, ``done`` episodes completed).
    """
    u, v, u_s, v_s, cost_limit, inv_c, params = decision
    istate, fstate, elim_at = state
    (nu_thr, nu_alias, state_info, rec, bucket_state, r_flat, c_flat, r_abs, c_abs, gamma,
     horizon, tail, closed_form) = tables
    (out_r, out_c, out_comp, out_cand, out_alpha, out_stage, out_event, out_exact_r,
     out_exact_c) = outs
    S = nu_thr.size
    K = cost_limit.size
    n = u.size
    thr_i = np.empty(2, dtype=np.int64)
    alias = np.empty(2, dtype=np.int64)
    v_lm = np.empty(K)
    last_alpha = -1.0
    for k_ep in range(n_episodes):
        cand = istate[I_CAND]
        alpha = fstate[F_ALPHA]
        lt = cand
        if cand < 0:  # every candidate eliminated: the safe policy alone
            lt = 0
            alpha = 0.0
        out_exact_r[k_ep], viol = audit_mixture(alpha, lt, n, exact_r, exact_c, cost_limit,
                                                viol_tol, out_exact_c[k_ep])
        if viol and stop_on_violation:
            return STATUS_STOPPED, k_ep
        if alpha != last_alpha:
            mixture_table(alpha, thr_i, alias)
            last_alpha = alpha
        si = state_info[2 * lt * S:(2 * lt + 2) * S]
        run_episodes(k_ep, -1, seed, thr_i, alias, nu_thr, nu_alias, si, rec, bucket_state,
                  r_flat, c_flat, r_abs, c_abs, S, K, gamma, horizon, tail, closed_form,
                  out_r, out_c, out_comp)
        out_cand[k_ep] = cand
        out_alpha[k_ep] = alpha
        out_stage[k_ep] = istate[I_STAGE]
        out_event[k_ep] = observe(istate, fstate, elim_at, u, v, u_s, v_s, cost_limit, inv_c,
                                  params, out_r[k_ep], out_c[k_ep], v_lm)
    return STATUS_OK, n_episodes
