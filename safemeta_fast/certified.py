"""Constants and state of the certified test-time profile (CERTIFIED.md).

Everything here is derived from the policy set's calibration (the joint conformal
prior, the family's reward and cost ranges), the horizon H, gamma and delta_test; no
constant is set per task family. The decision logic itself lives in
``safemeta_fast.kernels.certified`` and is driven by :class:`~safemeta_fast.adaptation.SafeAdapter`.

Derived quantities (m components, T = 1 + K streams):

* return range of stream t on horizon H: ``[lo_t, hi_t] * (1 - gamma^H) / (1 - gamma)``
  with the per-step range of the family; with the control variate, component j's
  returns ``X - g_j(s_0) + nu0 . g_j`` lie in
  ``[lo - max g_j + nu0 . g_j, hi - min g_j + nu0 . g_j]`` (max/min over the support of nu0);
* ``c_t`` = the widest of those ranges (the empirical-Bernstein scale);
* ``e_sim_t = max|x_t| (gamma^H / (1 - gamma) + L * 1e-7)``: the truncation bias of an
  H-step return and the simulator's rounding (the rollout tables quantise
  probabilities to 32 bits, a total-variation error well below 1e-7 per step, which
  moves values by at most L times that);
* box radius ``q s_jt + e_sim_t``; certified cost ``U = reference cost + radius``;
* ``delta_s = delta_test / (2 T)`` (two sides, T streams); the lambda grid
  ``c_t lambda_g`` is geometric from 0.95 down to 1e-4 over G = ``eb_grid`` points, each
  with its share ``delta_s / G`` (union bound), and
  ``bound(V) = min_g (log(G / delta_s) + psi_E(c_t lambda_g) V / c_t^2) / lambda_g``
  with ``psi_E(x) = -log(1 - x) - x`` (Howard et al. 2021, Thm 4, with Ville's inequality).
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import certified as _kc
from .training import lipschitz_constant

__all__ = ["certified_model", "fresh_state", "return_range", "step_ranges", "SIM_TV"]

#: Bound on the per-step total-variation error of the simulator (32-bit alias tables).
SIM_TV = 1e-7
_LAMC_HI, _LAMC_LO = 0.95, 1e-4


def _psi_e(x):
    return -np.log1p(-x) - x


def certified_model(ps, *, horizon: int, delta_test: float, use_cv: bool, check_min: int,
                    check_frac: float, eb_grid: int):
    """The kernel's ``model`` tuple and a dict of the derived constants (for the log)."""
    cal = ps.calibration
    gamma = ps.gamma
    K = ps.n_constraints
    T = 1 + K
    vals = np.asarray(cal.values)              # (nA, m, T)
    nA, m, _ = vals.shape
    S = ps.n_states
    gh = (1.0 - gamma ** horizon) / (1.0 - gamma)
    step_lo, step_hi = step_ranges(cal)
    raw_lo, raw_hi = return_range(cal, gamma, horizon)
    lo = np.tile(raw_lo, (m, 1))               # (m, T)
    hi = np.tile(raw_hi, (m, 1))
    cv_g = np.zeros((m, S, T))
    cv_bar = np.zeros((m, T))
    if use_cv:
        g = np.asarray(cal.cv_values)
        nu0 = np.asarray(cal.nu0)
        supp = nu0 > 0
        cv_g[:] = g
        cv_bar[:] = np.einsum("s,mst->mt", nu0, g)
        lo = lo - g[:, supp, :].max(axis=1) + cv_bar
        hi = hi - g[:, supp, :].min(axis=1) + cv_bar
    maxabs = np.maximum(np.abs(step_lo), np.abs(step_hi))
    L = lipschitz_constant(gamma)
    e_sim = maxabs * (gamma ** horizon / (1.0 - gamma) + L * SIM_TV)
    width = (hi - lo).max(axis=0)               # (T,)
    width = np.maximum(width, 1e-12 * (1.0 + maxabs * gh))
    radius = (cal.q * np.asarray(cal.scale) + e_sim[None, :]).T.copy()   # (T, m)
    muc = np.clip(vals.transpose(0, 2, 1), lo.T[None], hi.T[None])        # (nA, T, m)
    U = (vals[:, :, 1:].transpose(0, 2, 1) + radius[1:][None]).copy()     # (nA, K, m)
    Rref = np.ascontiguousarray(vals[:, :, 0])
    delta_s = delta_test / (2.0 * T)
    G = int(eb_grid)
    lamc = _LAMC_HI * (_LAMC_LO / _LAMC_HI) ** (np.arange(G) / max(G - 1, 1))
    lam = lamc[:, None] / width[None, :]                                  # (G, T)
    eb_a = math.log(G / delta_s) / lam
    eb_b = _psi_e(lamc)[:, None] / (width[None, :] ** 2 * lam)
    prm = np.zeros(_kc.N_CPARAMS)
    prm[_kc.CP_CHECK_MIN] = float(check_min)
    prm[_kc.CP_CHECK_FRAC] = float(check_frac)
    prm[_kc.CP_USE_CV] = 1.0 if use_cv else 0.0
    c = np.ascontiguousarray
    model = (c(muc), c(muc * muc), Rref, c(U), c(np.asarray(ps.cost_limit, dtype=np.float64)),
             c(radius), c(eb_a), c(eb_b), prm, c(cv_g), c(cv_bar))
    constants = {
        "q": cal.q, "delta_cal": cal.delta_cal, "delta_test": float(delta_test),
        "delta_s": delta_s, "eb_grid": G, "return_width": width.tolist(),
        "e_sim": e_sim.tolist(), "horizon": int(horizon), "control_variate": bool(use_cv),
        "check_min": int(check_min), "check_frac": float(check_frac),
        "n_references": int(nA), "return_low": lo.tolist(), "return_high": hi.tolist(),
    }
    return model, constants


def step_ranges(cal):
    """Per-step (low, high) of every stream (T,): the reward, then each cost."""
    return (np.concatenate([[cal.reward_range[0]], cal.cost_range[:, 0]]),
            np.concatenate([[cal.reward_range[1]], cal.cost_range[:, 1]]))


def return_range(cal, gamma: float, horizon: int):
    """(low, high) (T,) of an H-step discounted return of each stream."""
    gh = (1.0 - gamma ** horizon) / (1.0 - gamma)
    lo, hi = step_ranges(cal)
    return lo * gh, hi * gh


def fresh_state(n_refs: int, m: int, T: int):
    """The kernel's ``state`` tuple for one run."""
    return (np.zeros(_kc.N_CSTATE, dtype=np.int64), np.zeros(_kc.N_CFSTATE), np.zeros(m),
            np.zeros((T, m)), np.zeros((T, m)), np.zeros(n_refs, dtype=np.int64),
            np.zeros(T - 1), np.zeros(m))
