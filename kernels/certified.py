"""Certified test-time phase: pooled empirical-Bernstein rejection and certified pairs.

The decision logic of the "certified" profile (``../shared/CERTIFIED.md``), as small
jitted functions over a state held in a few arrays; the Python ask/tell adapter and the
fused kernel :func:`run_certified` call exactly these functions, so both paths take the
same decisions on the same returns.

Notation: m components (the n candidates, then pi_s at index n), T = 1 + K streams
(t = 0 reward, t = 1 + k cost k), nA reference tasks (the calibrated set A').

Model arrays (``model`` tuple, fixed for a run, built in Python)
------------------------------------------------------------------
``muc`` (nA, T, m)
    Reference value of component j, stream t on reference task i, clipped to the
    component's return range (the predictable centring of the bound).
``mu2`` (nA, T, m)
    ``muc**2``.
``Rref`` (nA, m)
    Reference rewards (the deployment objective).
``U`` (nA, K, m)
    Certified cost of component j on reference task i: reference cost + box radius.
``b`` (K,)
    Cost limits.
``radius`` (T, m)
    Box half-width ``q s_jt + e_sim_t`` (conformal radius plus simulation error).
``eb_a``, ``eb_b`` (G, T)
    Empirical-Bernstein line constants: for grid point g the bound on ``|D|`` is
    ``eb_a[g, t] + eb_b[g, t] V`` (``log(G/delta_s) / lambda_g`` and
    ``psi_E(c_t lambda_g) / (c_t**2 lambda_g)``).
``prm`` (N_CPARAMS,)
    ``CP_CHECK_MIN``, ``CP_CHECK_FRAC``: a check runs once the episode count reaches
    the next check time, then the next one is ``n + max(check_min, floor(frac n))``.
``cv_g`` (m, S, T), ``cv_bar`` (m, T), ``use_cv`` (0/1 in ``prm[CP_USE_CV]``)
    Start-state control variate: ``X' = X - cv_g[j, s_0] + cv_bar[j]``.

State (``state`` tuple)
-----------------------
``ist`` int64 (N_CSTATE,): ``C_EP`` episodes told, ``C_NALIVE`` alive references,
``C_NEXT`` next check time, ``C_A``/``C_B`` the deployed pair, ``C_REFUTED`` episode at
which the alive set emptied (-1), ``C_NCHECK`` checks run, ``C_CERT`` 1 when the current
deployment is certified, ``C_NREJ`` references rejected so far.
``fst`` float64 (N_CFSTATE,): ``CF_W`` weight of component A.
``cnt`` (m,), ``Ssum`` (T, m), ``Qsum`` (T, m): episode counts, sums and sums of squares
of the (control-variate adjusted) returns per component and stream, over all episodes.
``alive`` int64 (nA,): alive reference indices in their original order (first
``C_NALIVE`` entries). ``bound`` (K,): certified cost bound of the current deployment.
``rbar`` (m,): scratch.

Every reduction runs in a fixed order, so results never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .adaptation import audit_mixture, mixture_table
from .rollout import run_episodes, start_draws

__all__ = [
    "C_EP", "C_NALIVE", "C_NEXT", "C_A", "C_B", "C_REFUTED", "C_NCHECK", "C_CERT", "C_NREJ",
    "N_CSTATE", "CF_W", "N_CFSTATE", "CP_CHECK_MIN", "CP_CHECK_FRAC", "CP_USE_CV", "N_CPARAMS",
    "EV_NONE", "EV_REJECTED", "EV_REFUTED", "STATUS_OK", "STATUS_STOPPED",
    "init_certified", "select_pair", "check_references", "observe_certified",
    "adjust_returns", "conformal_scores", "run_certified",
]

C_EP, C_NALIVE, C_NEXT, C_A, C_B, C_REFUTED, C_NCHECK, C_CERT, C_NREJ = range(9)
N_CSTATE = 9
CF_W = 0
N_CFSTATE = 1
CP_CHECK_MIN, CP_CHECK_FRAC, CP_USE_CV = 0, 1, 2
N_CPARAMS = 3

EV_NONE, EV_REJECTED, EV_REFUTED = 0, 3, 4
STATUS_OK = 0
STATUS_STOPPED = 1

#: Weights of a pair stop this far inside the certified interval (rounding guard).
_W_GUARD = 1e-12


@njit(cache=True)
def _pair_interval(alive, n_alive, U, b, a, c):
    """Feasible weights w of ``w pi_a + (1-w) pi_c``: returns (ok, lo, hi) within [0, 1]."""
    K = b.size
    lo = 0.0
    hi = 1.0
    for ii in range(n_alive):
        i = alive[ii]
        for k in range(K):
            ua = U[i, k, a]
            uc = U[i, k, c]
            d = ua - uc
            e = b[k] - uc
            if d > 0.0:
                t = e / d
                if t < hi:
                    hi = t
            elif d < 0.0:
                t = e / d
                if t > lo:
                    lo = t
            elif e < 0.0:
                return False, 0.0, -1.0
        if hi < lo:
            return False, lo, hi
    return True, lo, hi


@njit(cache=True)
def _deploy(ist, fst, bound, alive, n_alive, U, a, c, w, certified):
    """Record the deployment (a, c, w) and its certified cost bound over the alive set."""
    ist[C_A] = a
    ist[C_B] = c
    fst[CF_W] = w
    ist[C_CERT] = 1 if certified else 0
    K = bound.size
    for k in range(K):
        bound[k] = -np.inf
    for ii in range(n_alive):
        i = alive[ii]
        for k in range(K):
            x = w * U[i, k, a] + (1.0 - w) * U[i, k, c]
            if x > bound[k]:
                bound[k] = x


@njit(cache=True)
def select_pair(state, model):
    """Certified deployment over the alive set (CERTIFIED.md, idea 3).

    Maximises the mean over alive references of ``w R_a + (1-w) R_c`` subject to
    ``w U_a + (1-w) U_c <= b`` on every alive reference and constraint. Components are
    scanned by decreasing mean reward (stable order), so ties go to the lower index and
    the scan stops once no remaining component can beat the best value found. With no
    certified deployment the safe policy (index m - 1) runs alone, flagged uncertified.
    """
    ist, fst, cnt, Ssum, Qsum, alive, bound, rbar = state
    muc, mu2, Rref, U, b, radius, eb_a, eb_b, prm, cv_g, cv_bar = model
    m = Rref.shape[1]
    n_alive = ist[C_NALIVE]
    safe = m - 1
    if n_alive == 0:
        _deploy(ist, fst, bound, alive, 0, U, safe, safe, 1.0, False)
        return
    for j in range(m):
        rbar[j] = 0.0
    for ii in range(n_alive):
        i = alive[ii]
        for j in range(m):
            rbar[j] += Rref[i, j]
    for j in range(m):
        rbar[j] /= n_alive
    order = np.argsort(-rbar, kind="mergesort")
    best_val = -np.inf
    best_a = -1
    best_c = -1
    best_w = 0.0
    for p in range(m):
        a = order[p]
        if rbar[a] <= best_val:
            break
        ok, lo, hi = _pair_interval(alive, n_alive, U, b, a, a)
        if ok:  # a alone is certified: nothing later can beat it
            best_val = rbar[a]
            best_a = a
            best_c = a
            best_w = 1.0
            break
        for q in range(p + 1, m):
            c = order[q]
            ok, lo, hi = _pair_interval(alive, n_alive, U, b, a, c)
            if not ok:
                continue
            w = hi
            if w < 1.0:
                w = hi - _W_GUARD
                if w < lo:
                    w = lo
            val = rbar[c] + w * (rbar[a] - rbar[c])
            if val > best_val:
                best_val = val
                best_a = a
                best_c = c
                best_w = w
    if best_a < 0:
        _deploy(ist, fst, bound, alive, n_alive, U, safe, safe, 1.0, False)
        return
    if best_w <= 0.0:  # the weight sits on c alone
        best_a = best_c
        best_w = 1.0
    _deploy(ist, fst, bound, alive, n_alive, U, best_a, best_c, best_w, True)


@njit(cache=True)
def init_certified(state, model):
    """Fresh state: every reference alive, no data, the certified deployment over A'."""
    ist, fst, cnt, Ssum, Qsum, alive, bound, rbar = state
    prm = model[8]
    for j in range(ist.size):
        ist[j] = 0
    for j in range(fst.size):
        fst[j] = 0.0
    cnt[:] = 0.0
    Ssum[:, :] = 0.0
    Qsum[:, :] = 0.0
    for i in range(alive.size):
        alive[i] = i
    ist[C_NALIVE] = alive.size
    ist[C_NEXT] = np.int64(prm[CP_CHECK_MIN])
    ist[C_REFUTED] = -1
    select_pair(state, model)


@njit(cache=True)
def check_references(state, model):
    """Reject every alive reference whose confidence sequence is crossed (idea 2).

    Reference i is rejected when, for some stream t,
    ``|D_it| - slack_t > min_g (eb_a[g, t] + eb_b[g, t] V_it)`` with
    ``D_it = sum_j (S_jt - n_j mu_ijt)``, ``V_it = sum_j (Q_jt - 2 mu_ijt S_jt + n_j mu_ijt^2)``
    and ``slack_t = sum_j n_j radius_jt``. Returns the new alive count (the list is
    compacted in order).
    """
    ist, fst, cnt, Ssum, Qsum, alive, bound, rbar = state
    muc, mu2, Rref, U, b, radius, eb_a, eb_b, prm, cv_g, cv_bar = model
    T, m = Ssum.shape
    G = eb_a.shape[0]
    n_alive = ist[C_NALIVE]
    stot = np.zeros(T)
    qtot = np.zeros(T)
    slack = np.zeros(T)
    for t in range(T):
        for j in range(m):
            stot[t] += Ssum[t, j]
            qtot[t] += Qsum[t, j]
            slack[t] += cnt[j] * radius[t, j]
    keep = 0
    for ii in range(n_alive):
        i = alive[ii]
        rejected = False
        for t in range(T):
            dn = 0.0
            ds = 0.0
            dq = 0.0
            for j in range(m):
                mu = muc[i, t, j]
                dn += cnt[j] * mu
                ds += Ssum[t, j] * mu
                dq += cnt[j] * mu2[i, t, j]
            excess = abs(stot[t] - dn) - slack[t]
            if excess > 0.0:
                V = qtot[t] - 2.0 * ds + dq
                if V < 0.0:
                    V = 0.0
                for g in range(G):
                    if eb_a[g, t] + eb_b[g, t] * V < excess:
                        rejected = True
                        break
            if rejected:
                break
        if not rejected:
            alive[keep] = i
            keep += 1
    return keep


@njit(cache=True)
def adjust_returns(R, C, j, s0, model, X):
    """Stream vector X (T,) of one episode: (R, C) minus the control variate when on."""
    cv_g, cv_bar, prm = model[9], model[10], model[8]
    T = X.size
    X[0] = R
    for k in range(T - 1):
        X[1 + k] = C[k]
    if prm[CP_USE_CV] != 0.0:
        for t in range(T):
            X[t] += cv_bar[j, t] - cv_g[j, s0, t]


@njit(cache=True)
def observe_certified(state, model, j, X):
    """Feed one episode's stream vector X (T,) run by component j; returns the event.

    Accumulates the per-component sums, and at check times rejects references and, if
    any was rejected, re-selects the certified deployment. When the alive set empties the
    calibrated model is refuted: pi_s runs alone from then on (EV_REFUTED, once).
    """
    ist, fst, cnt, Ssum, Qsum, alive, bound, rbar = state
    prm = model[8]
    T = X.size
    ep = ist[C_EP]
    ist[C_EP] = ep + 1
    cnt[j] += 1.0
    for t in range(T):
        Ssum[t, j] += X[t]
        Qsum[t, j] += X[t] * X[t]
    if ist[C_REFUTED] >= 0:
        return EV_NONE
    n = ep + 1
    if n < ist[C_NEXT]:
        return EV_NONE
    ist[C_NCHECK] += 1
    step = np.int64(np.floor(prm[CP_CHECK_FRAC] * n))
    if step < np.int64(prm[CP_CHECK_MIN]):
        step = np.int64(prm[CP_CHECK_MIN])
    ist[C_NEXT] = n + step
    keep = check_references(state, model)
    if keep == ist[C_NALIVE]:
        return EV_NONE
    ist[C_NREJ] += ist[C_NALIVE] - keep
    ist[C_NALIVE] = keep
    select_pair(state, model)
    if keep == 0:
        ist[C_REFUTED] = ep
        return EV_REFUTED
    return EV_REJECTED


@njit(cache=True, parallel=True)
def conformal_scores(xB, xA, inv_s, out):
    """Split-conformal scores: ``out[b] = min_i max_d |xB[b, d] - xA[i, d]| inv_s[d]``.

    The inner maximum stops as soon as it exceeds the running minimum (exact).
    """
    nB, D = xB.shape
    nA = xA.shape[0]
    for bb in prange(nB):
        best = np.inf
        for i in range(nA):
            mx = 0.0
            for d in range(D):
                x = abs(xB[bb, d] - xA[i, d]) * inv_s[d]
                if x > mx:
                    mx = x
                    if mx >= best:
                        break
            if mx < best:
                best = mx
        out[bb] = best


@njit(cache=True, nogil=True)
def run_certified(seed, n_episodes, state, model, tables, exact_r, exact_c, stop_on_violation,
                  viol_tol, outs):
    """All episodes of one certified test phase: draw, roll out, observe.

    ``tables`` = (nu_thr, nu_alias, state_info, rec, bucket_state, r_flat, c_flat, r_abs,
    c_abs, gamma, horizon, tail, closed_form) with the rollout tables of the m components
    in order (``state_info`` of component j is ``[j S, (j + 1) S)``). ``exact_r`` (m,) and
    ``exact_c`` (m, K) are the components' exact values on the test task (NaN when
    unknown). ``outs`` = (out_r (N,), out_c (N, K), out_comp, out_a, out_b, out_w,
    out_alive, out_bound (N, K), out_event, out_exact_r, out_exact_c (N, K)).
    Returns (status, episodes done); with ``stop_on_violation`` the run stops BEFORE
    deploying a mixture whose exact cost exceeds the limit by more than ``viol_tol``.
    """
    ist, fst, cnt, Ssum, Qsum, alive, bound, rbar = state
    b = model[4]
    (nu_thr, nu_alias, state_info, rec, bucket_state, r_flat, c_flat, r_abs, c_abs, gamma,
     horizon, tail, closed_form) = tables
    (out_r, out_c, out_comp, out_a, out_b, out_w, out_alive, out_bound, out_event,
     out_exact_r, out_exact_c) = outs
    S = nu_thr.size
    K = b.size
    T = 1 + K
    X = np.empty(T)
    thr_i = np.empty(2, dtype=np.int64)
    alias = np.empty(2, dtype=np.int64)
    si = np.empty(2 * S, dtype=np.int64)
    last_a = -1
    last_c = -1
    last_w = -1.0
    for k_ep in range(n_episodes):
        a = ist[C_A]
        c = ist[C_B]
        w = fst[CF_W]
        out_exact_r[k_ep], viol = audit_mixture(w, a, c, exact_r, exact_c, b, viol_tol,
                                                out_exact_c[k_ep])
        if viol and stop_on_violation:
            return STATUS_STOPPED, k_ep
        if a != last_a or c != last_c:
            for s in range(S):
                si[s] = state_info[a * S + s]
                si[S + s] = state_info[c * S + s]
            last_a = a
            last_c = c
        if w != last_w:
            mixture_table(w, thr_i, alias)
            last_w = w
        run_episodes(k_ep, -1, seed, thr_i, alias, nu_thr, nu_alias, si, rec, bucket_state,
                  r_flat, c_flat, r_abs, c_abs, S, K, gamma, horizon, tail, closed_form,
                  out_r, out_c, out_comp)
        j = a if out_comp[k_ep] == 0 else c
        s0 = 0
        if model[8][CP_USE_CV] != 0.0:
            _, _, _, _, _, s0 = start_draws(k_ep, seed, thr_i, alias, nu_thr, nu_alias)
        out_a[k_ep] = a
        out_b[k_ep] = c
        out_w[k_ep] = w
        out_alive[k_ep] = ist[C_NALIVE]
        for kk in range(K):
            out_bound[k_ep, kk] = bound[kk]
        adjust_returns(out_r[k_ep], out_c[k_ep], j, s0, model, X)
        out_event[k_ep] = observe_certified(state, model, j, X)
    return STATUS_OK, n_episodes
