"""Monte-Carlo rollouts of policies and episode-level mixtures on tabular CMDPs.

Layout (built once per policy by :func:`build_tables`): for every mixture component q
and state s a joint alias table over the outcomes (a, s') of one step, with weights
``pi_q(a|s) P(s'|s, a)``. The tables of all (q, s) are concatenated into T buckets;
the table of (q, s) is the bucket range ``[base, base + n)``. Bucket b (Vose's alias
method) holds, in one 32-byte record ``rec[4b:4b+4]`` (int64):

* ``rec[4b]``      the acceptance threshold, an integer in [0, 2**32];
* ``rec[4b + 1]``  the table of the next state of the bucket's own outcome, packed
  ``base << 32 | n << 1 | absorbing``; ``rec[4b + 2]`` the same for its alias outcome;
* ``rec[4b + 3]``  the pair indices ``i = s*A + a`` of the two outcomes, packed
  ``i_own << 32 | i_alias``, to look up ``r_flat[i]`` and ``c_flat[i*K:(i+1)*K]``,

and ``bucket_state[b]`` is the state whose table holds bucket b (read only to
finish an episode in closed form). Rewards and costs stay in the small (S*A)
arrays, so a step touches one 32-byte record of the tables.

One step is ONE 64-bit draw x: the bucket is ``base + ((x >> 32) * n >> 32)`` and the
low 32 bits ``x & (2**32 - 1)`` against the threshold choose the bucket's own outcome
(``lo < thr``) or its alias. The step's dependency chain is then record -> select ->
next record, with no index conversion to floating point and no unpredictable branch.
Both parts are exact up to the 32-bit resolution: every outcome probability is off by
less than ``n * 2**-32`` relatively (about 5e-9 for the paper's tables), far below
anything Monte-Carlo estimates can resolve.

Closed-form finish: in a state of ``M.absorbing`` (self-loop under every action,
action-independent reward and costs) at time t with ``g = gamma**t``, the rest of
the episode adds exactly ``r_abs * g * tail[H - t]`` with
``tail[m] = sum_{j<m} gamma**j`` (computed by the caller), costs likewise.

Randomness: episode e uses stream e of the user seed (see ``rng.py``); it draws the
mixture component first, then the initial state, then one number per step.

Two schedules run the same episodes, with bit-identical results:

* pairs (:func:`rollout_serial`, :func:`rollout_parallel`): two episodes in lockstep
  per thread, all state in registers; fastest while the tables sit in the caches.
* prefetch (:func:`rollout_prefetch_serial`, :func:`rollout_prefetch_parallel`):
  ``lanes`` episodes per thread stepped in turn, each drawing its next number ahead
  and prefetching the record of its next step and the reward/cost row ``rc`` of the
  outcome it just took (``rc`` interleaves r and c per pair, so that row is one cache
  line). With tables of megabytes (10^4 states and up) a step would otherwise wait
  on one or two cache misses; the other lanes' steps now hide them.
"""

from __future__ import annotations

import numpy as np
from numba import config, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .rng import stream_state, to_i64, to_u64, xoshiro256pp_next

__all__ = [
    "build_alias",
    "build_tables",
    "alias_thresholds",
    "table_size",
    "start_draws",
    "rollout_serial",
    "rollout_parallel",
    "rollout_prefetch_serial",
    "rollout_prefetch_parallel",
    "STATUS_OK",
]

STATUS_OK = 0
#: 2**32 as a float: thresholds and bucket fractions are 32-bit fixed point.
_TWO32 = 4294967296.0
_LO32 = 0xFFFFFFFF


if config.DISABLE_JIT:  # interpreted: nothing to prefetch

    def prefetch(arr, i):
        """Hint that ``arr[i]`` will be read soon (a no-op when interpreted)."""
        return None

else:

    @intrinsic
    def prefetch(typingctx, arr, i):
        """Hint that ``arr[i]`` will be read soon: one ``llvm.prefetch`` (read, keep in all
        cache levels). It changes no value; it lets a kernel start the cache miss of a
        load it will do later while it works on something else."""
        sig = types.void(arr, i)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            i8p = cgutils.ir.IntType(8).as_pointer()
            i32 = cgutils.ir.IntType(32)
            fnty = cgutils.ir.FunctionType(cgutils.ir.VoidType(), [i8p, i32, i32, i32])
            # llvmlite mangles the name for the pointer type ("llvm.prefetch.p0i8"), which
            # the typed-pointer LLVM of older numba needs and newer LLVMs auto-upgrade
            fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen


@njit(cache=True)
def build_alias(w, lo, n, thr, alias, small, large):
    """Vose's alias table over ``w[lo:lo+n]`` (weights >= 0, positive sum).

    Writes ``thr[lo:lo+n]`` (acceptance thresholds in [0, 1]) and ``alias[lo:lo+n]``
    (global indices in ``[lo, lo+n)``). ``small`` and ``large`` are int64 scratch
    arrays of length >= n. Deterministic (fixed stack order).
    """
    total = 0.0
    for i in range(n):
        total += w[lo + i]
    ns = 0
    nl = 0
    for i in range(n):
        q = w[lo + i] * n / total
        thr[lo + i] = q
        alias[lo + i] = lo + i
        if q < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        i_s = small[ns]
        nl -= 1
        i_l = large[nl]
        alias[lo + i_s] = lo + i_l
        q = (thr[lo + i_l] + thr[lo + i_s]) - 1.0
        thr[lo + i_l] = q
        if q < 1.0:
            small[ns] = i_l
            ns += 1
        else:
            large[nl] = i_l
            nl += 1
    # leftovers are 1 up to rounding: always accept them
    for j in range(nl):
        thr[lo + large[j]] = 1.0
    for j in range(ns):
        thr[lo + small[j]] = 1.0


@njit(cache=True)
def table_size(policies, succ_ptr):
    """Number of table entries T = sum_{q,s,a: pi_q(a|s) > 0} |succ(s, a)|."""
    m, S, A = policies.shape
    T = 0
    for q in range(m):
        for s in range(S):
            for a in range(A):
                if policies[q, s, a] > 0.0:
                    i = s * A + a
                    T += succ_ptr[i + 1] - succ_ptr[i]
    return T


@njit(cache=True)
def alias_thresholds(thr_f, thr_i):
    """Float thresholds in [0, 1] -> 32-bit fixed point ``round(q * 2**32)`` (int64)."""
    for j in range(thr_f.size):
        q = thr_f[j]
        if q >= 1.0:
            thr_i[j] = 1 << 32
        elif q <= 0.0:
            thr_i[j] = 0
        else:
            thr_i[j] = int(q * _TWO32 + 0.5)


@njit(cache=True)
def build_tables(policies, succ_ptr, succ_next, succ_prob, r, c, absorbing):
    """Joint (action, next-state) alias tables of every component and state.

    Parameters
    ----------
    policies : float64 (m, S, A)
    succ_ptr, succ_next, succ_prob : the CMDP's successor rows (int64, int64, float64)
    r : float64 (S, A);  c : float64 (S, A, K);  absorbing : int64 (S,) 0/1

    Returns
    -------
    state_info : int64 (m*S,)  packed table of (q, s): ``base << 32 | n << 1 | absorbing``
    rec : int64 (4*T,)  bucket records (see the module docstring)
    bucket_state : int64 (T,)  the state of each bucket's table
    """
    m, S, A = policies.shape
    cnt = np.zeros(m * S, dtype=np.int64)
    for q in range(m):
        for s in range(S):
            n = 0
            for a in range(A):
                if policies[q, s, a] > 0.0:
                    i = s * A + a
                    n += succ_ptr[i + 1] - succ_ptr[i]
            cnt[q * S + s] = n
    start = np.zeros(m * S + 1, dtype=np.int64)
    nmax = 0
    for j in range(m * S):
        start[j + 1] = start[j] + cnt[j]
        if cnt[j] > nmax:
            nmax = cnt[j]
    T = start[m * S]
    w = np.empty(T, dtype=np.float64)
    thr_f = np.empty(T, dtype=np.float64)
    thr_i = np.empty(T, dtype=np.int64)
    alias = np.empty(T, dtype=np.int64)
    nstate = np.empty(T, dtype=np.int64)
    pair = np.empty(T, dtype=np.int64)
    bucket_state = np.empty(T, dtype=np.int64)
    small = np.empty(nmax, dtype=np.int64)
    large = np.empty(nmax, dtype=np.int64)
    state_info = np.empty(m * S, dtype=np.int64)
    for q in range(m):
        for s in range(S):
            j = start[q * S + s]
            state_info[q * S + s] = (j << 32) | (cnt[q * S + s] << 1) | absorbing[s]
            for a in range(A):
                p = policies[q, s, a]
                if p > 0.0:
                    i = s * A + a
                    for k in range(succ_ptr[i], succ_ptr[i + 1]):
                        w[j] = p * succ_prob[k]
                        nstate[j] = succ_next[k]
                        pair[j] = i
                        bucket_state[j] = s
                        j += 1
            build_alias(w, start[q * S + s], cnt[q * S + s], thr_f, alias, small, large)
    alias_thresholds(thr_f, thr_i)
    rec = np.empty(4 * T, dtype=np.int64)
    for q in range(m):
        for b in range(start[q * S], start[q * S + S]):
            ns_own = nstate[b]
            ns_alias = nstate[alias[b]]
            rec[4 * b] = thr_i[b]
            own, alias_ = q * S + ns_own, q * S + ns_alias
            rec[4 * b + 1] = (start[own] << 32) | (cnt[own] << 1) | absorbing[ns_own]
            rec[4 * b + 2] = (start[alias_] << 32) | (cnt[alias_] << 1) | absorbing[ns_alias]
            rec[4 * b + 3] = (pair[b] << 32) | pair[alias[b]]
    return state_info, rec, bucket_state


@njit(cache=True)
def alias_draw(x, thr, alias):
    """Alias draw over a whole table (len(thr) buckets, 32-bit thresholds) from one word."""
    hi = to_i64(x >> 32)
    lo = to_i64(x & _LO32)
    i = (hi * thr.size) >> 32
    if lo >= thr[i]:
        return alias[i]
    return i


@njit(cache=True)
def start_draws(e, seed, comp_thr, comp_alias, nu_thr, nu_alias):
    """The first two draws of episode e's stream: returns (stream, component q, s_0)."""
    s0, s1, s2, s3 = stream_state(seed, e)
    x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
    q = alias_draw(x, comp_thr, comp_alias)
    x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
    s = alias_draw(x, nu_thr, nu_alias)
    return s0, s1, s2, s3, q, s


@njit(cache=True)
def _start(e, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, S, out_comp):
    """Seed episode e's stream, draw its component then s_0; returns (stream, s_0, table)."""
    s0, s1, s2, s3, q, s = start_draws(e, seed, comp_thr, comp_alias, nu_thr, nu_alias)
    out_comp[e] = q
    return s0, s1, s2, s3, s, state_info[q * S + s]


@njit(cache=True)
def _bucket(x, info):
    """The bucket of table ``info`` that word x selects: ``base + ((x >> 32) * n >> 32)``."""
    return (info >> 32) + ((to_i64(x >> 32) * ((info >> 1) & 0x7FFFFFFF)) >> 32)


@njit(cache=True)
def _outcome(x, b, rec):
    """Bucket b's outcome for word x: returns (next table, pair index s*A+a).

    Both outcomes are loaded with the threshold and one is selected arithmetically
    (``m = -1`` when ``lo < thr``, the bucket's own outcome, else 0): a branch here
    would mispredict half the time and, waiting on the load, squash the work of the
    other episodes in flight.
    """
    lo = to_i64(x & _LO32)
    thr_b = rec[4 * b]
    own_b = rec[4 * b + 1]
    ali_b = rec[4 * b + 2]
    pairs = rec[4 * b + 3]
    m = (lo - thr_b) >> 63
    i_ali = pairs & _LO32
    return ali_b ^ ((own_b ^ ali_b) & m), i_ali ^ (((pairs >> 32) ^ i_ali) & m)


@njit(cache=True)
def _step(s0, s1, s2, s3, info, rec):
    """One step from the table ``info``: returns (stream, next table, pair index s*A+a)."""
    x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
    nxt, i = _outcome(x, _bucket(x, info), rec)
    return s0, s1, s2, s3, nxt, i


@njit(cache=True)
def _finish(e, s, h, r_abs, c_abs, K, R, C0, out_c):
    """Add ``h`` times the reward and costs of absorbing state s (closed form)."""
    R += r_abs[s] * h
    if K == 1:
        C0 += c_abs[s] * h
    else:
        for kk in range(K):
            out_c[e, kk] += c_abs[s * K + kk] * h
    return R, C0


@njit(cache=True)
def run_episodes(e0, e1, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
              bucket_state, r_flat, c_flat, r_abs, c_abs, S, K, gamma, horizon, tail,
              closed_form, out_r, out_c, out_comp):
    """Run episode e0, and episode e1 in lockstep with it when e1 >= 0.

    Two independent episodes interleaved give the CPU two dependency chains to
    overlap (each step waits on a table load); every episode still does exactly
    the same arithmetic on its own stream, so results do not depend on the pairing.
    """
    a0, a1, a2, a3, sa, ia = _start(e0, seed, comp_thr, comp_alias, nu_thr, nu_alias,
                                    state_info, S, out_comp)
    for kk in range(K):
        out_c[e0, kk] = 0.0
    Ra = 0.0
    Ca = 0.0
    ga = 1.0
    live_a = horizon > 0
    if live_a and closed_form and (ia & 1) == 1:
        Ra, Ca = _finish(e0, sa, tail[horizon], r_abs, c_abs, K, Ra, Ca, out_c)
        live_a = False
    pair = e1 >= 0
    b0, b1, b2, b3, ib = a0, a1, a2, a3, ia
    Rb = 0.0
    Cb = 0.0
    gb = 1.0
    live_b = False
    if pair:
        b0, b1, b2, b3, sb, ib = _start(e1, seed, comp_thr, comp_alias, nu_thr, nu_alias,
                                        state_info, S, out_comp)
        for kk in range(K):
            out_c[e1, kk] = 0.0
        live_b = horizon > 0
        if live_b and closed_form and (ib & 1) == 1:
            Rb, Cb = _finish(e1, sb, tail[horizon], r_abs, c_abs, K, Rb, Cb, out_c)
            live_b = False
    for t in range(horizon):
        if live_a:
            a0, a1, a2, a3, ia, i = _step(a0, a1, a2, a3, ia, rec)
            Ra += ga * r_flat[i]
            if K == 1:
                Ca += ga * c_flat[i]
            else:
                for kk in range(K):
                    out_c[e0, kk] += ga * c_flat[i * K + kk]
            ga *= gamma
            if closed_form and (ia & 1) == 1:
                # absorbed at time t + 1, discount ga = gamma**(t+1)
                Ra, Ca = _finish(e0, bucket_state[ia >> 32], ga * tail[horizon - t - 1],
                                 r_abs, c_abs, K, Ra, Ca, out_c)
                live_a = False
        if live_b:
            b0, b1, b2, b3, ib, i = _step(b0, b1, b2, b3, ib, rec)
            Rb += gb * r_flat[i]
            if K == 1:
                Cb += gb * c_flat[i]
            else:
                for kk in range(K):
                    out_c[e1, kk] += gb * c_flat[i * K + kk]
            gb *= gamma
            if closed_form and (ib & 1) == 1:
                Rb, Cb = _finish(e1, bucket_state[ib >> 32], gb * tail[horizon - t - 1],
                                 r_abs, c_abs, K, Rb, Cb, out_c)
                live_b = False
        if not live_a and not live_b:
            break
    out_r[e0] = Ra
    if K == 1:
        out_c[e0, 0] = Ca
    if pair:
        out_r[e1] = Rb
        if K == 1:
            out_c[e1, 0] = Cb


@njit(cache=True)
def rollout_serial(seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec, bucket_state,
                   r_flat, c_flat, r_abs, c_abs, gamma, horizon, tail, closed_form,
                   out_r, out_c, out_comp):
    """Run ``out_r.size`` episodes (in interleaved pairs) on one thread; returns STATUS_OK.

    ``comp_thr/comp_alias`` (m,) and ``nu_thr/nu_alias`` (S,) are alias tables (32-bit
    thresholds, local indices) of the mixture weights and of nu0; ``state_info``,
    ``rec``, ``bucket_state`` come from :func:`build_tables`; ``r_flat`` (S*A,) and
    ``c_flat`` (S*A*K,) are ``r`` and ``c`` flattened; ``r_abs`` (S,) and ``c_abs``
    (S*K,) are the reward and costs of each state under any action (used only for
    absorbing states); ``tail`` (horizon+1,) with ``tail[m] = sum_{j<m} gamma**j``.
    Outputs: ``out_r`` (n,), ``out_c`` (n, K), ``out_comp`` (n,) int64.
    """
    S = nu_thr.size
    K = out_c.shape[1]
    n = out_r.size
    for p in range((n + 1) // 2):
        e1 = 2 * p + 1 if 2 * p + 1 < n else -1
        run_episodes(2 * p, e1, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
                  bucket_state, r_flat, c_flat, r_abs, c_abs, S, K, gamma, horizon, tail,
                  closed_form, out_r, out_c, out_comp)
    return STATUS_OK


@njit(cache=True, parallel=True)
def rollout_parallel(seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec, bucket_state,
                     r_flat, c_flat, r_abs, c_abs, gamma, horizon, tail, closed_form,
                     out_r, out_c, out_comp):
    """As :func:`rollout_serial`, pairs of episodes spread over threads (``prange``).

    Episodes are independent (own stream, own output slots), so the results are
    bit-identical to the serial kernel for every thread count.
    """
    S = nu_thr.size
    K = out_c.shape[1]
    n = out_r.size
    for p in prange((n + 1) // 2):
        e1 = 2 * p + 1 if 2 * p + 1 < n else -1
        run_episodes(2 * p, e1, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
                  bucket_state, r_flat, c_flat, r_abs, c_abs, S, K, gamma, horizon, tail,
                  closed_form, out_r, out_c, out_comp)
    return STATUS_OK


@njit(cache=True, inline="always")
def _add_step(e, g, rc, i, K, out_r, out_c):
    """Add ``g`` times the reward and costs of pair i (row i of ``rc``) to episode e.

    Inlined by numba (``inline="always"``): left to LLVM it stayed an out-of-line call
    on every step and halved the speed of the lane loop.
    """
    out_r[e] += g * rc[i * (K + 1)]
    if K == 1:
        out_c[e, 0] += g * rc[2 * i + 1]
    else:
        for kk in range(K):
            out_c[e, kk] += g * rc[i * (K + 1) + 1 + kk]


@njit(cache=True)
def _add_absorbed(e, s, h, r_abs, c_abs, K, out_r, out_c):
    """Add ``h`` times the reward and costs of absorbing state s to episode e (closed form)."""
    out_r[e] += r_abs[s] * h
    for kk in range(K):
        out_c[e, kk] += c_abs[s * K + kk] * h


@njit(cache=True)
def _lane_fill(w, nxt, e_hi, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
               r_abs, c_abs, S, K, horizon, tail, closed_form, lane_rng, lane_int, lane_g,
               out_r, out_c, out_comp):
    """Start episodes nxt, nxt+1, ... in lane w until one needs a step; returns the new nxt.

    Episodes that need no step (H = 0, or starting absorbed with the closed form) are
    finished here; lane w is left idle (``lane_int[w, 0] = -1``) when the block runs out.
    The lane draws its first step's number at once and prefetches that step's record.
    """
    lane_int[w, 0] = -1
    while nxt < e_hi:
        e = nxt
        nxt += 1
        s0, s1, s2, s3, s, info = _start(e, seed, comp_thr, comp_alias, nu_thr, nu_alias,
                                         state_info, S, out_comp)
        out_r[e] = 0.0
        for kk in range(K):
            out_c[e, kk] = 0.0
        if horizon == 0:
            continue
        if closed_form and (info & 1) == 1:
            _add_absorbed(e, s, tail[horizon], r_abs, c_abs, K, out_r, out_c)
            continue
        x, s0, s1, s2, s3 = xoshiro256pp_next(s0, s1, s2, s3)
        prefetch(rec, 4 * _bucket(x, info))
        lane_rng[w, 0] = s0
        lane_rng[w, 1] = s1
        lane_rng[w, 2] = s2
        lane_rng[w, 3] = s3
        lane_rng[w, 4] = x
        lane_int[w, 0] = e
        lane_int[w, 1] = info
        lane_int[w, 2] = 0
        lane_int[w, 3] = -1
        lane_g[w] = 1.0
        break
    return nxt


@njit(cache=True)
def _lanes(e_lo, e_hi, W, seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
           bucket_state, rc, r_abs, c_abs, S, K, gamma, horizon, tail, closed_form,
           out_r, out_c, out_comp):
    """Run episodes ``[e_lo, e_hi)`` in W lanes, one step of each lane in turn.

    Used once the tables outgrow the caches, where a step waits on a cache miss. Every
    lane keeps its stream's next number drawn ahead, so as soon as a step has chosen
    its outcome the lane knows the record of its next step and prefetches it, together
    with the reward/cost row of the outcome just taken; that row is added one turn
    later, and the record is read one turn later: W - 1 other steps hide each miss.

    Each episode still does exactly the arithmetic of :func:`run_episodes` on its own
    stream (the same draws, and its rewards and costs added in the same order into
    its own output slots), so results are bit-identical to the pair schedule and do
    not depend on W, the block, or the thread count. The number drawn ahead after an
    episode's last step is never used.

    Lane state: ``lane_rng[w]`` the stream (4 words) and the drawn-ahead word;
    ``lane_int[w]`` = (episode or -1, table of the current state, steps done, pair of
    the previous step whose reward is pending or -1); ``lane_g[w]`` the discount of
    the pending step (of the current step when none is pending).
    """
    lane_rng = np.empty((W, 5), dtype=np.uint64)
    lane_int = np.empty((W, 4), dtype=np.int64)
    lane_g = np.empty(W, dtype=np.float64)
    nxt = e_lo
    live = 0
    for w in range(W):
        nxt = _lane_fill(w, nxt, e_hi, seed, comp_thr, comp_alias, nu_thr, nu_alias,
                         state_info, rec, r_abs, c_abs, S, K, horizon, tail, closed_form,
                         lane_rng, lane_int, lane_g, out_r, out_c, out_comp)
        if lane_int[w, 0] >= 0:
            live += 1
    while live > 0:
        for w in range(W):
            e = lane_int[w, 0]
            if e < 0:
                continue
            x = to_u64(lane_rng[w, 4])
            b = _bucket(x, lane_int[w, 1])
            g = lane_g[w]
            ip = lane_int[w, 3]
            if ip >= 0:  # the previous step's reward and costs, prefetched last turn
                _add_step(e, g, rc, ip, K, out_r, out_c)
                g *= gamma
            info, i = _outcome(x, b, rec)
            t = lane_int[w, 2] + 1
            absorbed = closed_form and (info & 1) == 1
            if t == horizon or absorbed:
                _add_step(e, g, rc, i, K, out_r, out_c)
                if absorbed:
                    # absorbed at time t, discount gamma**t
                    g *= gamma
                    _add_absorbed(e, bucket_state[info >> 32], g * tail[horizon - t],
                                  r_abs, c_abs, K, out_r, out_c)
                nxt = _lane_fill(w, nxt, e_hi, seed, comp_thr, comp_alias, nu_thr, nu_alias,
                                 state_info, rec, r_abs, c_abs, S, K, horizon, tail,
                                 closed_form, lane_rng, lane_int, lane_g, out_r, out_c, out_comp)
                if lane_int[w, 0] < 0:
                    live -= 1
            else:
                x, s0, s1, s2, s3 = xoshiro256pp_next(
                    to_u64(lane_rng[w, 0]), to_u64(lane_rng[w, 1]), to_u64(lane_rng[w, 2]),
                    to_u64(lane_rng[w, 3]))
                prefetch(rec, 4 * _bucket(x, info))
                prefetch(rc, i * (K + 1))
                lane_rng[w, 0] = s0
                lane_rng[w, 1] = s1
                lane_rng[w, 2] = s2
                lane_rng[w, 3] = s3
                lane_rng[w, 4] = x
                lane_int[w, 1] = info
                lane_int[w, 2] = t
                lane_int[w, 3] = i
                lane_g[w] = g


@njit(cache=True)
def rollout_prefetch_serial(seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
                            bucket_state, rc, r_abs, c_abs, gamma, horizon, tail, closed_form,
                            lanes, block, out_r, out_c, out_comp):
    """As :func:`rollout_serial`, in blocks of ``block`` episodes run in ``lanes`` lanes.

    The schedule for tables beyond the caches (see :func:`_lanes`); the results are
    bit-identical to :func:`rollout_serial`. ``rc`` (S*A*(K+1),) holds each pair's
    reward followed by its K costs (one row, so one cache line serves a step).
    ``lanes`` >= 1 and ``block`` >= 1.
    """
    S = nu_thr.size
    K = out_c.shape[1]
    n = out_r.size
    for j in range((n + block - 1) // block):
        _lanes(j * block, min(n, (j + 1) * block), lanes, seed, comp_thr, comp_alias, nu_thr,
               nu_alias, state_info, rec, bucket_state, rc, r_abs, c_abs, S, K, gamma, horizon,
               tail, closed_form, out_r, out_c, out_comp)
    return STATUS_OK


@njit(cache=True, parallel=True)
def rollout_prefetch_parallel(seed, comp_thr, comp_alias, nu_thr, nu_alias, state_info, rec,
                              bucket_state, rc, r_abs, c_abs, gamma, horizon, tail, closed_form,
                              lanes, block, out_r, out_c, out_comp):
    """As :func:`rollout_prefetch_serial`, blocks spread over threads (``prange``).

    Blocks write disjoint episodes, each from its own stream, so the results are
    bit-identical for every thread count.
    """
    S = nu_thr.size
    K = out_c.shape[1]
    n = out_r.size
    for j in prange((n + block - 1) // block):
        _lanes(j * block, min(n, (j + 1) * block), lanes, seed, comp_thr, comp_alias, nu_thr,
               nu_alias, state_info, rec, bucket_state, rc, r_abs, c_abs, S, K, gamma, horizon,
               tail, closed_form, out_r, out_c, out_comp)
    return STATUS_OK
