"""Slow, obviously-correct NumPy twins of the kernels (dense, straight from the formulas).

Tests compare every kernel against these; bench/ times the kernels next to them.
"""

from __future__ import annotations

import numpy as np


def dense_policy_matrix(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']."""
    return np.einsum("sa,sat->st", pi, P)


def evaluate_dense(P, r, c, nu0, gamma, pi):
    """Exact discounted values from nu0: returns (V_r, V_c (K,), occupancy (S, A)).

    d_s = (1-gamma) (I - gamma P_pi^T)^{-1} nu0,  mu(s, a) = d_s(s) pi(s, a),
    V_r = <mu, r> / (1-gamma),  V_c^k = <mu, c_k> / (1-gamma)   (SPEC section 2).
    """
    S = P.shape[0]
    Ppi = dense_policy_matrix(P, pi)
    d = (1.0 - gamma) * np.linalg.solve(np.eye(S) - gamma * Ppi.T, nu0)
    mu = d[:, None] * pi
    c3 = c if c.ndim == 3 else c[:, :, None]
    return float((mu * r).sum() / (1 - gamma)), np.einsum("sa,sak->k", mu, c3) / (1 - gamma), mu


def value_iteration_dense(P, r, gamma, tol=1e-10, max_iter=100_000):
    """Optimal unconstrained state values and a greedy policy, by dense Bellman sweeps."""
    S, A, _ = P.shape
    v = np.zeros(S)
    for _ in range(max_iter):
        q = r + gamma * P @ v
        v_new = q.max(axis=1)
        if np.max(np.abs(v_new - v)) * gamma / (1 - gamma) <= tol:
            v = v_new
            break
        v = v_new
    q = r + gamma * P @ v
    pi = np.zeros((S, A))
    pi[np.arange(S), q.argmax(axis=1)] = 1.0
    return v, pi


def rollout_per_step(P, r, c, nu0, gamma, pi, n_episodes, horizon, rng):
    """The authors' per-step loop: draw s0, then a ~ pi(s), s' ~ P(s, a) for H steps.

    Returns discounted returns (n,) and costs (n, K).
    """
    S, A = r.shape
    c3 = c if c.ndim == 3 else c[:, :, None]
    R = np.zeros(n_episodes)
    C = np.zeros((n_episodes, c3.shape[2]))
    for e in range(n_episodes):
        s = rng.choice(S, p=nu0)
        g = 1.0
        for _ in range(horizon):
            a = rng.choice(A, p=pi[s])
            R[e] += g * r[s, a]
            C[e] += g * c3[s, a]
            s = rng.choice(S, p=P[s, a])
            g *= gamma
    return R, C


# --- exact tools (evaluation / planning): twins appended for issue 2 ---------------


def state_values_dense(P, r, c, gamma, pi):
    """State values by a dense solve: v_r (S,), v_c (S, K) with v = (I - gamma P_pi)^{-1} x_pi."""
    S = P.shape[0]
    c3 = c if c.ndim == 3 else c[:, :, None]
    Ppi = dense_policy_matrix(P, pi)
    rhs = np.column_stack([(pi * r).sum(axis=1), np.einsum("sa,sak->sk", pi, c3)])
    V = np.linalg.solve(np.eye(S) - gamma * Ppi, rhs)
    return V[:, 0], V[:, 1:]


def primal_dual_dense(P, r, c, b, nu0, gamma, beta=0.1, eta_p=None, eta_xi=0.1, n_iter=10_000,
                      max_sweeps=50, sweep_tol=1e-5, alternating=True):
    """Entropy-regularised primal-dual CMDP solver (BASELINES.md 2b), dense NumPy.

    Returns (pi (S, A), xi (K,), v (S,), vc (S, K)).
    """
    S, A = r.shape
    c3 = c if c.ndim == 3 else c[:, :, None]
    K = c3.shape[2]
    b = np.asarray(b, dtype=float).reshape(K)
    if eta_p is None:
        expo, coef = 0.0, 1.0 / beta
    else:
        expo, coef = 1.0 - eta_p * beta / (1.0 - gamma), eta_p / (1.0 - gamma)
        if abs(expo) < 1e-12:
            expo = 0.0

    def softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def plogp(p):
        out = np.zeros_like(p)
        pos = p > 0
        out[pos] = p[pos] * np.log(p[pos])
        return out

    pi = softmax(r / beta)
    v = np.zeros(S)
    vc = np.zeros((S, K))
    xi = np.zeros(K)
    for _ in range(n_iter):
        rxi = r - c3 @ xi
        H = -plogp(pi).sum(axis=1)
        for _ in range(max_sweeps):
            v_new = (pi * (rxi + gamma * P @ v)).sum(axis=1) + beta * H
            diff = np.max(np.abs(v_new - v))
            v = v_new
            if diff <= sweep_tol:
                break
        q = rxi + gamma * P @ v
        logits = coef * (q - q.max(axis=1, keepdims=True))
        if expo != 0.0:
            with np.errstate(divide="ignore"):
                logits = logits + expo * np.log(pi)
        pi_new = softmax(logits)
        target = pi_new if alternating else pi
        for _ in range(max_sweeps):
            vc_new = np.einsum("sa,sak->sk", target, c3 + gamma * np.einsum("sat,tk->sak", P, vc))
            diff = np.max(np.abs(vc_new - vc))
            vc = vc_new
            if diff <= sweep_tol:
                break
        xi = np.maximum(0.0, xi - eta_xi * (b - nu0 @ vc))
        pi = pi_new
    return pi, xi, v, vc


# -- certified test-time phase (kernels/certified.py) ---------------------------------------

def certified_reject_twin(alive, muc, cnt, S, Q, radius, eb_a, eb_b):
    """Alive references after one check, by the formulas of CERTIFIED.md written out.

    ``D_it = sum_j (S_jt - n_j mu_ijt)``, ``V_it = sum_j (Q_jt - 2 mu_ijt S_jt + n_j mu_ijt^2)``,
    rejected when ``|D_it| - sum_j n_j radius_jt > min_g (eb_a[g, t] + eb_b[g, t] max(V_it, 0))``.
    """
    keep = []
    for i in alive:
        rejected = False
        for t in range(S.shape[0]):
            mu = muc[i, t]
            D = np.sum(S[t] - cnt * mu)
            V = max(np.sum(Q[t] - 2 * mu * S[t] + cnt * mu * mu), 0.0)
            bound = np.min(eb_a[:, t] + eb_b[:, t] * V)
            if abs(D) - np.sum(cnt * radius[t]) > bound:
                rejected = True
        if not rejected:
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def certified_pair_twin(alive, Rref, U, b):
    """Best certified episode-level mixture by brute force over every ordered pair.

    For each pair (a, c) the feasible weights on a form an interval (each constraint is
    linear in w); the objective (mean reward over alive references) is linear, so the
    best weight is an end of the interval. Returns the best value (-inf if none).
    """
    rbar = Rref[alive].mean(axis=0)
    m = Rref.shape[1]
    best = -np.inf
    for a in range(m):
        for c in range(m):
            ua, uc = U[alive][:, :, a], U[alive][:, :, c]   # (n_alive, K)
            d, e = ua - uc, b[None, :] - uc
            lo, hi, ok = 0.0, 1.0, True
            if np.any((d == 0) & (e < 0)):
                ok = False
            pos, neg = d > 0, d < 0
            if pos.any():
                hi = min(hi, float(np.min(e[pos] / d[pos])))
            if neg.any():
                lo = max(lo, float(np.max(e[neg] / d[neg])))
            if not ok or hi < lo:
                continue
            for w in (lo, hi):
                best = max(best, w * rbar[a] + (1 - w) * rbar[c])
    return best


def conformal_scores_twin(xB, xA, inv_s):
    """``min_i max_d |xB[b, d] - xA[i, d]| inv_s[d]`` for every b (dense broadcast)."""
    return (np.abs(xB[:, None, :] - xA[None, :, :]) * inv_s).max(axis=2).min(axis=1)


# --- policy iteration and modified policy iteration (issue 13) ----------------------


def _greedy(P, r, gamma, v):
    """q = r + gamma P v, its row maxima and the lowest-index argmax."""
    q = r + gamma * P @ v
    return q, q.max(axis=1), q.argmax(axis=1)


def policy_iteration_dense(P, r, gamma, max_iter=1000):
    """Howard's policy iteration: exact evaluation by np.linalg.solve, greedy improvement
    (an action changes only when another is better by more than 1e-13 relative), until the
    policy is stable. Returns (v, sigma, iterations)."""
    S = P.shape[0]
    sigma = r.argmax(axis=1)
    for it in range(1, max_iter + 1):
        v = np.linalg.solve(np.eye(S) - gamma * P[np.arange(S), sigma],
                            r[np.arange(S), sigma])
        q, best, arg = _greedy(P, r, gamma, v)
        keep = q[np.arange(S), sigma] >= best - 1e-13 * (1 + np.abs(best))
        new = np.where(keep, sigma, arg)
        if np.array_equal(new, sigma):
            return v, sigma, it
        sigma = new
    raise RuntimeError("policy iteration twin did not converge")


def modified_policy_iteration_dense(P, r, gamma, n_sweeps, tol, max_iter=100_000):
    """Modified policy iteration with the McQueen-Porteus stop, dense NumPy.

    v <- T v (greedy sigma), then n_sweeps Jacobi steps v <- r_sigma + gamma P_sigma v;
    stop when gamma/(1-gamma) span(T v - v)/2 <= tol and return the midpoint
    T v + gamma/(1-gamma) (max + min)(T v - v)/2. Returns (v, iterations).
    """
    S = P.shape[0]
    v = np.zeros(S)
    k = gamma / (1 - gamma)
    for it in range(1, max_iter + 1):
        _, tv, sigma = _greedy(P, r, gamma, v)
        d = tv - v
        if k * (d.max() - d.min()) / 2 <= tol:
            return tv + k * (d.max() + d.min()) / 2, it
        v = tv
        Ps, rs = P[np.arange(S), sigma], r[np.arange(S), sigma]
        for _ in range(n_sweeps):
            v = rs + gamma * Ps @ v
    raise RuntimeError("modified policy iteration twin did not converge")


def affine_coordinates_twin(x: np.ndarray, V: np.ndarray) -> np.ndarray:
    """out[t, e] = sum_k x[t, k] V[e, k] (kernels.distance.affine_coordinates)."""
    return np.einsum("tk,ek->te", x, V)


def affine_distance_twin(model, theta_i, theta_j) -> float:
    """SPEC section 3 distance of two tasks of an affine family, from the unreduced slopes:
    every entry differs by (theta_i - theta_j) . slope."""
    x = np.asarray(theta_i, dtype=np.float64) - np.asarray(theta_j, dtype=np.float64)
    M = model.base
    dP = np.zeros((M.n_states * M.n_actions, M.n_states))
    rows = np.repeat(np.arange(M.n_states * M.n_actions), np.diff(M.succ_ptr))
    dP[rows, M.succ_next] = x @ model.dprob
    return max(
        np.abs(np.tensordot(x, model.dr, 1)).max(),
        np.abs(np.tensordot(x, model.dc, 1)).max(),
        0.5 * np.abs(x @ model.dnu0).sum(),
        (0.5 * np.abs(dP).sum(axis=1)).max(),
    )


# --- rollout schedules: the sequential reading of the packed tables (issue 13) ---------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def splitmix_ref(state: int):
    """One SplitMix64 step on Python ints: returns (output, new state)."""
    state = (state + _GOLDEN) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31), state


def stream_words(seed: int, index: int):
    """The 64-bit words of stream ``index`` of ``seed`` (the layout documented in rng.py),
    as an endless generator of Python ints: xoshiro256++ seeded by SplitMix64."""
    base, _ = splitmix_ref((seed - _GOLDEN) & _MASK64)  # mix64(seed)
    st = (base + 4 * index * _GOLDEN) & _MASK64
    s = []
    for _ in range(4):
        w, st = splitmix_ref(st)
        s.append(w)
    while True:
        z = (s[0] + s[3]) & _MASK64
        res = ((((z << 23) & _MASK64) | (z >> 41)) + s[0]) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = ((s[3] << 45) & _MASK64) | (s[3] >> 19)
        yield res


def rollout_records_twin(seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
                         bucket_state, r, c, r_abs, c_abs, gamma, horizon, tail, closed_form,
                         n_episodes):
    """Episodes one after the other, step by step, read from the packed rollout tables.

    The plain statement of kernels/rollout.py's module docstring: episode e takes words
    from stream e; word 1 draws the component, word 2 the start state (alias draws:
    bucket ``(x >> 32) * len >> 32``, its own index if ``x & (2**32-1) < thr`` else its
    alias), then one word per step picks bucket ``base + ((x >> 32) * n >> 32)`` of the
    current table and its own or alias outcome the same way; the step adds
    ``g * r[pair]``, ``g * c[pair]``, ``g *= gamma``. With the closed form an episode
    that reaches an absorbing table (bit 0 of the packed table) at time t adds
    ``r_abs * gamma**t * tail[H - t]`` and stops. Every schedule of the kernels must
    reproduce these numbers bit for bit. ``r`` (S*A,), ``c`` (S*A, K) float64.

    Returns (reward (n,), cost (n, K), component (n,)).
    """
    lo32 = (1 << 32) - 1
    K = c.shape[1]
    S = nu_thr.size

    def draw(x, thr, alias):
        i = ((x >> 32) * thr.size) >> 32
        return int(alias[i]) if (x & lo32) >= thr[i] else i

    R = np.zeros(n_episodes)
    C = np.zeros((n_episodes, K))
    comp = np.zeros(n_episodes, dtype=np.int64)
    for e in range(n_episodes):
        words = stream_words(int(seed), e)
        q = draw(next(words), comp_thr, comp_alias)
        s = draw(next(words), nu_thr, nu_alias)
        comp[e] = q
        info = int(state_info[q * S + s])
        if horizon > 0 and closed_form and info & 1:
            R[e] += r_abs[s] * tail[horizon]
            C[e] += c_abs[s * K:(s + 1) * K] * tail[horizon]
            continue
        g = 1.0
        for t in range(horizon):
            x = next(words)
            b = (info >> 32) + (((x >> 32) * ((info >> 1) & 0x7FFFFFFF)) >> 32)
            own = (x & lo32) < rec[4 * b]
            info = int(rec[4 * b + 1] if own else rec[4 * b + 2])
            pair = int(rec[4 * b + 3]) >> 32 if own else int(rec[4 * b + 3]) & lo32
            R[e] += g * r[pair]
            for k in range(K):
                C[e, k] += g * c[pair, k]
            g *= gamma
            if closed_form and info & 1:
                s = int(bucket_state[info >> 32])
                R[e] += r_abs[s] * (g * tail[horizon - t - 1])
                for k in range(K):
                    C[e, k] += c_abs[s * K + k] * (g * tail[horizon - t - 1])
                break
    return R, C, comp
