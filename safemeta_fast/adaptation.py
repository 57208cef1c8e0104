"""Test-time phase (paper Algorithm 2): safe mixture adaptation, classic or certified.

Two decision logics share this adapter:

* **certified** (the default profile, ``../shared/CERTIFIED.md``): a calibrated joint
  conformal prior over the components' values (:func:`safemeta_fast.calibration.calibrate`),
  pooled empirical-Bernstein confidence sequences that reject reference tasks, and
  deployment of the best certified pair of components. Logic in
  ``safemeta_fast.kernels.certified``; constants in :mod:`safemeta_fast.certified`.
* **classic** (the "paper", "reference" and "pce" profiles), described below.

One implementation of the decision logic (``safemeta_fast.kernels.adaptation``: the
elimination test, the weight schedule, candidate selection, the pooled safe-policy
windows, the minimum window and the update gate, as jitted functions over a small state
array) is driven in two ways:

* **ask/tell** (:meth:`SafeAdapter.ask`, :meth:`SafeAdapter.tell`) for any environment the
  user runs; it never needs the test task's model;
* **fused** (:meth:`SafeAdapter.run`): the whole K-episode loop, rollouts included, in one
  compiled kernel on a known tabular test task, with an exact audit of every deployed
  mixture (reward, cost, regret, violations).

Algorithm (SPEC section 6), per episode k = 0..K-1 (0-based here):

1. deploy ``pi_k = alpha pi_l + (1 - alpha) pi_s`` as an episode-level mixture: the
   component (0 = candidate, 1 = safe) is drawn once, from stream k of the seed;
2. observe the discounted returns ``R_k``, ``C_k`` (horizon H);
3. elimination: with n episodes in the window, if ``|mean R - u_lm| > sqrt(c_r/n) + e_r``
   or, for any constraint k, ``|mean slack_k - v_lm,k| > sqrt(c_c/n) + e_c`` (and
   ``n >= min_window``), drop l, take the alive candidate with the largest u, m = 0,
   alpha = 0, new window;
4. else if ``n - gate_offset >= max_k min(max(gate_const / v_lm,k^2, gate_min), gate_max)``
   and ``m <= m_max(l)``: ``alpha <- alpha_{m+1}``, m <- m + 1, new window.

Several constraints: the cost test runs per constraint (any failing one eliminates);
alpha_1, the recursion and m_max are computed per constraint and the smallest value is
used; the update gate takes the largest episode count over constraints. This is the most
conservative combination.

Choices where SPEC is silent (documented, also listed in the module's tests):

* ties in u go to the lowest candidate index (the reference's list order);
* once every candidate is eliminated the safe policy is deployed alone (candidate -1);
* the "reference" profile's pooled windows: every episode run with m = 0 (pi_s alone)
  is added to one pool shared by all candidates; after the first elimination, a
  candidate at m = 0 is tested (and gated) on the pooled means and pooled count, with
  cost radius ``sqrt(150/n) + eps L_c`` and the usual reward radius;
* the "reference" and "pce" profiles compare with ``>=`` (the authors' code), "paper"
  with ``>`` (SPEC: "exceeds");
* "paper" works on the normalised scale of SPEC section 2: reward quantities are divided
  by the per-step reward range, slack of constraint k by ``max |(1-gamma) b_k - c_k|``
  (a shift of the reward does not matter: reward enters only through differences and
  the argmax of u). eps is the policy set's eps read on that scale, and the margin xi is
  ``xi_hat / max_k scale_k``;
* ``alpha_1`` or the recursion are clipped to [0, 1]; ``m_max`` is 0 when
  ``C_l`` is not in (0, 1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .certified import certified_model, fresh_state, return_range
from .cmdp import CMDP
from .errors import CalibrationRefutedWarning, SafetyAssumptionError, SafetyPreconditionWarning
from .kernels import adaptation as _k
from .kernels import certified as _kc
from .kernels.rollout import build_tables, table_size
from .policyset import PolicySet
from .profiles import CERTIFIED, PAPER, PCE, PROFILES, REFERENCE, Profile, params_array
from .rollout import MAX_TABLE_ENTRIES, alias_table, discount_tail
from .seeding import resolve_seed
from .testlog import AdaptStep, TestLog, build_log, exact_components, mixture_values
from .theory import lipschitz_constant, normalisation_of
from .validation import check_bool, check_int, check_real, readonly

__all__ = [
    "Profile",
    "CERTIFIED",
    "PAPER",
    "REFERENCE",
    "PCE",
    "PROFILES",
    "SafeAdapter",
    "AdaptStep",
    "TestLog",
    "lipschitz_constant",
    "normalisation_of",
]

#: Largest per-episode record an adapter allocates (per run of the fused kernel too).
_MAX_RECORD_BYTES = 4 * 2**30
#: Relative tolerance on told returns leaving the calibrated return range.
_RANGE_TOL = 1e-9


class SafeAdapter:
    """The test-time phase of the paper (Algorithm 2), by ask/tell or fused.

    Parameters
    ----------
    policy_set : PolicySet
        Candidates ``pi_i`` with predictions (u, v), the safe policy and its (u_s, v_s).
        The certified profile also needs its ``calibration``
        (:func:`safemeta_fast.calibration.calibrate`; ``train`` adds one by default).
    profile : {"certified", "paper", "reference", "pce"} or Profile, default "certified"
    n_episodes : int
        The budget K (enters the paper constants through ln(4K/delta)).
    delta : float, optional
        Confidence in (0, 1). Certified: the *total* failure probability (default the
        calibration's, 0.05), split into the calibration's ``delta_cal`` and
        ``delta_test = delta - delta_cal``. Classic profiles: default the policy set's delta.
    horizon : int, default: the profile's horizon, else 600
        Episode length H (used by :meth:`run`; ask/tell users run their own episodes,
        and the certified bounds assume returns of H steps).
    seed : int, numpy.random.Generator or None
        Resolved once; episode k draws its component (and, in :meth:`run`, its rollout)
        from stream k of this seed.
    strict : bool, default True
        Paper profile: raise :class:`~safemeta_fast.errors.SafetyAssumptionError` when
        ``(8L+18) eps > xi`` or ``v_s <= (4L+9) eps``; False turns it into a warning (the
        guarantee then does not hold; the log says so).
    reward_range, utility_scale : float, array_like (K,), optional
        Normalisation of the paper profile (see :func:`normalisation_of`); required for a
        normalised profile.
    control_variate : bool or None, default None
        Certified: the start-state control variate (returns minus the state value of the
        drawn component at s_0 on a fixed reference task, plus its nu0-mean). None: on
        wherever s_0 is known: in :meth:`run` when the test task has the calibrated
        nu0, and in ask/tell when the first :meth:`tell` passes ``start_state``.

    Examples
    --------
    >>> import numpy as np
    >>> from safemeta_fast.envs import gridworld
    >>> from safemeta_fast.lp import solve_lp
    >>> from safemeta_fast.evaluation import evaluate_many
    >>> from safemeta_fast.policyset import PolicySet
    >>> tasks = [gridworld(x) for x in (0.28, 0.32)]
    >>> pols = np.stack([solve_lp(M).policy for M in tasks])
    >>> safe = solve_lp(gridworld(0.4)).policy
    >>> ev = [evaluate_many(M, np.stack([*pols, safe])) for M in tasks]
    >>> ps = PolicySet(policies=pols, u=[e.reward[i] for i, e in enumerate(ev)],
    ...     v=[1.5 - e.cost[i] for i, e in enumerate(ev)], u_s=[e.reward[2] for e in ev],
    ...     v_s=[1.5 - e.cost[2] for e in ev], safe_policy=safe, cover_params=[0.28, 0.32],
    ...     cost_limit=[1.5], gamma=0.9, eps=0.005, delta=0.05, xi_hat=0.2, seed=0)
    >>> ad = SafeAdapter(ps, profile="reference", n_episodes=2000, seed=1)
    >>> step = ad.ask(); step.alpha, step.component
    (0.0, 1)
    >>> ad.tell(47.0, [1.1])
    >>> log = ad.run(gridworld(0.3))
    >>> log.violations
    0
    """

    def __init__(self, policy_set, *, profile="certified", n_episodes, delta=None, horizon=None,
                 seed=None, strict=True, reward_range=None, utility_scale=None,
                 control_variate=None):
        if not isinstance(policy_set, PolicySet):
            raise TypeError(f"policy_set must be a PolicySet; got {type(policy_set).__name__}")
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"profile is {profile!r}; expected one of {sorted(PROFILES)} "
                                 "or a Profile")
            profile = PROFILES[profile]
        elif not isinstance(profile, Profile):
            raise TypeError(f"profile must be a str or a Profile; got {type(profile).__name__}")
        check_bool("strict", strict)
        if control_variate is not None:
            check_bool("control_variate", control_variate)
        ps = policy_set
        self.policy_set = ps
        self.profile = profile
        self.n_episodes = check_int("n_episodes", n_episodes, 1)
        need = self.n_episodes * 8 * (14 + 2 * ps.n_constraints)
        if need > _MAX_RECORD_BYTES:
            raise ValueError(
                f"n_episodes is {self.n_episodes}: the per-episode record would need "
                f"{need / 2**30:.1f} GiB (more than {_MAX_RECORD_BYTES / 2**30:.0f} GiB); run the "
                "test phase in pieces of fewer episodes")
        if horizon is None:
            horizon = profile.horizon if profile.horizon is not None else 600
        self.horizon = check_int("horizon", horizon, 1)
        self.seed = resolve_seed(seed)
        self.notes: list[str] = []
        self.guarantee = False
        self.certified = bool(profile.certified)
        self._comps = np.ascontiguousarray(np.concatenate([ps.policies, ps.safe_policy[None]]))
        if self.certified:
            self._init_certified(delta, control_variate)
        else:
            self._init_classic(delta, strict, reward_range, utility_scale)
        n, K = self.n_episodes, ps.n_constraints
        self._h = {"pair": np.zeros((n, 2), dtype=np.int64), "weight": np.zeros(n),
                   "index": np.zeros(n, dtype=np.int64), "cand": np.zeros(n, dtype=np.int64),
                   "alpha": np.zeros(n), "comp": np.zeros(n, dtype=np.int64),
                   "stage": np.zeros(n, dtype=np.int64), "event": np.zeros(n, dtype=np.int64),
                   "r": np.zeros(n), "c": np.zeros((n, K)), "alive": np.zeros(n, dtype=np.int64),
                   "bound": np.zeros((n, K))}
        self._pending: AdaptStep | None = None

    # -- set-up ------------------------------------------------------------------------

    def _init_classic(self, delta, strict, reward_range, utility_scale):
        ps, profile = self.policy_set, self.profile
        K = ps.n_constraints
        self.delta = check_real("delta", ps.delta if delta is None else delta, 0.0, 1.0,
                                lo_open=True, hi_open=True)
        if profile.normalised:
            if reward_range is None or utility_scale is None:
                raise ValueError(
                    f"profile {profile.name!r} works on the normalised scale: pass reward_range "
                    "and utility_scale (e.g. **normalisation_of(M_train) for any task of the "
                    "family)"
                )
            rr = check_real("reward_range", reward_range, 0.0, lo_open=True)
            us = np.asarray(utility_scale, dtype=np.float64).reshape(-1)
            if us.size != K:
                raise ValueError(f"utility_scale must have shape ({K},); got {us.shape}")
            for k in range(K):
                if not (math.isfinite(us[k]) and us[k] > 0):
                    raise ValueError(f"utility_scale[{k}] is {us[k]}; it must be finite and > 0")
        else:
            rr = 1.0
            us = np.ones(K)
        self.reward_scale = rr
        self.utility_scale = readonly(us.copy())
        self._inv_c = np.ascontiguousarray(1.0 / us)
        self._u = np.ascontiguousarray(ps.u / rr)
        self._u_s = np.ascontiguousarray(ps.u_s / rr)
        self._v = np.ascontiguousarray(ps.v / us[None, :])
        self._v_s = np.ascontiguousarray(ps.v_s / us[None, :])
        self._b = np.ascontiguousarray(ps.cost_limit, dtype=np.float64)
        self.constants = profile.resolve(gamma=ps.gamma, eps=ps.eps, n_episodes=self.n_episodes,
                                         delta=self.delta)
        self._params = params_array(self.constants, 1.0 / rr)
        if profile.check_preconditions:
            self.guarantee = self._check_preconditions(strict)
        self._istate = np.zeros(_k.N_ISTATE, dtype=np.int64)
        self._fstate = np.zeros(_k.F_SUM_C + 2 * K)
        self._elim = np.zeros(ps.n_policies, dtype=np.int64)
        self._vlm = np.empty(K)
        _k.init_state(self._istate, self._fstate, self._elim, self._u, self._params)

    def _init_certified(self, delta, control_variate):
        ps = self.policy_set
        cal = ps.calibration
        if cal is None:
            raise ValueError(
                "the certified profile needs a calibrated policy set and this one has no "
                "calibration: ps = safemeta_fast.calibrate(ps, family) (train() adds one by "
                "default), or choose another profile")
        self.delta = check_real("delta", cal.delta if delta is None else delta, 0.0, 1.0,
                                lo_open=True, hi_open=True)
        if self.delta <= cal.delta_cal:
            raise ValueError(f"delta is {self.delta}; it must exceed the calibration's delta_cal "
                             f"= {cal.delta_cal} (delta_test = delta - delta_cal)")
        self.delta_cal = cal.delta_cal
        self.delta_test = self.delta - cal.delta_cal
        if control_variate and cal.cv_values is None:
            raise ValueError("control_variate=True, but the calibration has no control variate "
                             "(the family's tasks do not share one nu0)")
        self._cv_mode = control_variate
        self._models: dict = {}
        self._tell_cv: bool | None = None
        self._b = np.ascontiguousarray(ps.cost_limit, dtype=np.float64)
        model, self.constants = self._model(cal.cv_values is not None
                                            and control_variate is not False)
        m, T = ps.n_policies + 1, ps.n_constraints + 1
        self._cstate = fresh_state(cal.n_kept, m, T)
        _kc.init_certified(self._cstate, model)
        self._X = np.empty(T)
        self.guarantee = True
        self._raw_range = return_range(cal, ps.gamma, self.horizon)

    def _model(self, use_cv: bool):
        if use_cv not in self._models:
            p = self.profile
            self._models[use_cv] = certified_model(
                self.policy_set, horizon=self.horizon, delta_test=self.delta_test,
                use_cv=use_cv, check_min=p.check_min, check_frac=p.check_frac,
                eb_grid=p.eb_grid)
        return self._models[use_cv]

    # -- preconditions ------------------------------------------------------------------

    def _check_preconditions(self, strict: bool) -> bool:
        c = self.constants
        L, eps = c["L"], c["eps"]
        xi = self.policy_set.xi_hat / float(np.max(self.utility_scale))
        vs_min = float(self._v_s.min())
        problems = []
        if (8 * L + 18) * eps > xi:
            problems.append(
                f"(8L+18) eps = {(8 * L + 18) * eps:.6g} > xi = {xi:.6g} (normalised margin; "
                f"L = {L:.6g}, eps = {eps:.6g}); it holds for eps <= {xi / (8 * L + 18):.6g}"
            )
        if vs_min <= (4 * L + 9) * eps:
            problems.append(
                f"min v_s = {vs_min:.6g} <= (4L+9) eps = {(4 * L + 9) * eps:.6g} (normalised); "
                f"it holds for eps < {vs_min / (4 * L + 9):.6g}"
            )
        if not problems:
            return True
        msg = ("paper profile preconditions fail: " + "; ".join(problems)
               + ". The safety guarantee of the paper does not hold.")
        if strict:
            raise SafetyAssumptionError(msg + " Pass strict=False to run anyway.")
        warnings.warn(msg, SafetyPreconditionWarning, stacklevel=4)
        self.notes.append("WARNING: " + msg)
        return False

    # -- ask / tell ---------------------------------------------------------------------

    @property
    def episode(self) -> int:
        """Episodes told so far."""
        if self.certified:
            return int(self._cstate[0][_kc.C_EP])
        return int(self._istate[_k.I_EP])

    def _deployment(self):
        """(pair, weight) of the next episode's mixture."""
        n = self.policy_set.n_policies
        if self.certified:
            ist, fst = self._cstate[0], self._cstate[1]
            return (int(ist[_kc.C_A]), int(ist[_kc.C_B])), float(fst[_kc.CF_W])
        cand = int(self._istate[_k.I_CAND])
        if cand < 0:
            return (n, n), 1.0
        return (cand, n), float(self._fstate[_k.F_ALPHA])

    @property
    def alpha(self) -> float:
        """Weight of the next mixture on candidates (1 - its weight on pi_s)."""
        (a, c), w = self._deployment()
        n = self.policy_set.n_policies
        return w * (a < n) + (1.0 - w) * (c < n)

    @property
    def candidate(self) -> int:
        """The candidate in the next mixture (-1: pi_s alone)."""
        (a, c), _ = self._deployment()
        n = self.policy_set.n_policies
        return a if a < n else (c if c < n else -1)

    def ask(self) -> AdaptStep:
        """The policy for the next episode (the same step again until :meth:`tell`).

        Raises
        ------
        RuntimeError
            When all ``n_episodes`` episodes have been told.
        """
        if self._pending is not None:
            return self._pending
        k = self.episode
        if k >= self.n_episodes:
            raise RuntimeError(f"all n_episodes = {self.n_episodes} episodes are done")
        n = self.policy_set.n_policies
        pair, w = self._deployment()
        if self.certified:
            draw = int(_k.draw_component(self.seed, k, w))
            stage = 0
        else:
            draw = int(_k.draw_component(self.seed, k, self._fstate[_k.F_ALPHA]))
            stage = int(self._istate[_k.I_STAGE])
        j = pair[0] if draw == 0 else pair[1]
        pol = self._comps[j]
        pol = readonly(pol)
        self._pending = AdaptStep(episode=k, component=0 if j < n else 1, policy=pol,
                                  alpha=self.alpha, candidate=self.candidate, stage=stage,
                                  index=j, pair=pair, weight=w)
        return self._pending

    def tell(self, reward_return, cost_returns, *, start_state=None) -> None:
        """Feed back the discounted returns of the episode of the last :meth:`ask`.

        Parameters
        ----------
        reward_return : float
            ``R = sum_{t<H} gamma^t r_t``.
        cost_returns : float or array_like, shape (K,)
            ``C_k = sum_{t<H} gamma^t c_t^k``.
        start_state : int, optional
            Certified profile: the episode's initial state s_0, which turns on the
            start-state control variate (see the class docstring). Once given it is
            required on every later tell (the bounds assume one mode per run). The
            classic profiles ignore it.
        """
        if self._pending is None:
            raise RuntimeError("tell() called without a pending ask()")
        R = check_real("reward_return", reward_return)
        C = np.asarray(cost_returns, dtype=np.float64).reshape(-1)
        K = self.policy_set.n_constraints
        if C.size != K:
            raise ValueError(f"cost_returns must have shape ({K},); got {np.shape(cost_returns)}")
        bad = np.flatnonzero(~np.isfinite(C))
        if bad.size:
            raise ValueError(f"cost_returns[{bad[0]}] is {C[bad[0]]}; it must be finite")
        st = self._pending
        if self.certified:
            event, extra = self._tell_certified(st, R, C, start_state)
        else:
            event = int(_k.observe(self._istate, self._fstate, self._elim, self._u, self._v,
                                   self._u_s, self._v_s, self._b, self._inv_c, self._params,
                                   R, C, self._vlm))
            extra = None
        k = st.episode
        h = self._h
        h["pair"][k] = st.pair
        h["weight"][k] = st.weight
        h["index"][k] = st.index
        h["cand"][k] = st.candidate
        h["alpha"][k] = st.alpha
        h["comp"][k] = st.component
        h["stage"][k] = st.stage
        h["event"][k] = event
        h["r"][k] = R
        h["c"][k] = C
        if extra is not None:
            h["alive"][k], h["bound"][k] = extra
        self._pending = None

    def _tell_certified(self, st, R, C, start_state):
        lo, hi = self._raw_range
        x = np.concatenate([[R], C])
        tol = _RANGE_TOL * (1.0 + np.maximum(np.abs(lo), np.abs(hi)))
        out = np.flatnonzero((x < lo - tol) | (x > hi + tol))
        if out.size:
            t = int(out[0])
            name = "reward_return" if t == 0 else f"cost_returns[{t - 1}]"
            raise ValueError(
                f"{name} is {x[t]:.6g}, outside the calibrated return range [{lo[t]:.6g}, "
                f"{hi[t]:.6g}] of an H = {self.horizon} step episode (the family's per-step "
                "range); the certified bounds assume returns inside it")
        cal = self.policy_set.calibration
        use = self._tell_cv
        if use is None:  # the first tell fixes the mode for the run
            use = (start_state is not None and cal.cv_values is not None
                   if self._cv_mode is None else self._cv_mode)
        s0 = 0
        if use:
            if start_state is None:
                raise ValueError("start_state is required: this run uses the start-state control "
                                 "variate (construct with control_variate=False to run without)")
            s0 = check_int("start_state", start_state, 0)
            if s0 >= self.policy_set.n_states or cal.nu0[s0] <= 0:
                raise ValueError(f"start_state is {s0}; it must be a state with nu0 > 0 of the "
                                 f"calibrated family (0..{self.policy_set.n_states - 1})")
        if self._tell_cv is None:
            self._tell_cv = use
            self.constants = self._model(use)[1]
        model = self._model(use)[0]
        alive = int(self._cstate[0][_kc.C_NALIVE])
        bound = self._cstate[6].copy()
        _kc.adjust_returns(R, C, st.index, s0, model, self._X)
        event = int(_kc.observe_certified(self._cstate, model, st.index, self._X))
        if event == _kc.EV_REFUTED:
            warnings.warn(
                f"calibration refuted at episode {st.episode}: every reference task was rejected; "
                "deploying pi_s alone from now on", CalibrationRefutedWarning, stacklevel=3)
        return event, (alive, bound)

    def log(self, M_test=None, *, regret_reference=None, violation_tol=1e-9) -> TestLog:
        """The ask/tell record so far; with ``M_test`` (a known model) the exact audit too.

        Parameters
        ----------
        M_test : CMDP, optional
            The test task, when known: every deployed mixture is then evaluated exactly
            (reward, cost, regret, violations), as :meth:`run` does.
        regret_reference : float, optional
            V* for the regret (default the LP optimum of ``M_test``).
        violation_tol : float
            A violation is ``exact cost > limit + violation_tol``.
        """
        n = self.episode
        h = {k: v[:n].copy() for k, v in self._h.items()}
        tol = check_real("violation_tol", violation_tol, 0.0)
        ex_r = ex_c = vstar = None
        if M_test is not None:
            self._check_model(M_test, True)
            vstar = self._vstar(M_test, regret_reference)
            cr, cc = exact_components(M_test, self.policy_set)
            ex_r, ex_c = mixture_values(h["pair"], h["weight"], cr, cc)
        cert = None
        if self.certified:
            ref = int(self._cstate[0][_kc.C_REFUTED])
            cert = {"delta_cal": self.delta_cal, "delta_test": self.delta_test,
                    "alive": h["alive"], "bound": h["bound"], "refuted_at": ref}
            elim = np.full(self.policy_set.n_policies, -1, dtype=np.int64)
        else:
            elim = self._elim.copy()
        return build_log(
            self.policy_set, profile=self.profile, constants=self.constants, seed=self.seed,
            horizon=self.horizon, cand=h["cand"], alpha=h["alpha"], comp=h["comp"],
            stage=h["stage"], event=h["event"], pair=h["pair"], weight=h["weight"],
            drawn=h["index"], R=h["r"],
            C=h["c"], elim=elim, guarantee=self.guarantee, notes=self.notes, ex_r=ex_r,
            ex_c=ex_c, vstar=vstar, M=M_test, tol=tol, certified=cert)

    # -- fused ----------------------------------------------------------------------------

    def _tables(self, M: CMDP):
        """Rollout tables: classic = pairs ``[pi_0, pi_s, pi_1, pi_s, ...]``; certified =
        the m components in order."""
        ps = self.policy_set
        n = ps.n_policies
        if self.certified:
            pols = self._comps
        else:
            pols = np.empty((2 * n, ps.n_states, ps.n_actions))
            pols[0::2] = ps.policies
            pols[1::2] = ps.safe_policy
        succ_ptr = np.ascontiguousarray(M.succ_ptr, dtype=np.int64)
        if table_size(pols, succ_ptr) > MAX_TABLE_ENTRIES:
            raise ValueError("the rollout tables of this policy set are too large")
        r = np.ascontiguousarray(M.r, dtype=np.float64)
        c = np.ascontiguousarray(M.c, dtype=np.float64)
        absorbing = np.ascontiguousarray(M.absorbing, dtype=np.int64)
        state_info, rec, bucket_state = build_tables(
            pols, succ_ptr, np.ascontiguousarray(M.succ_next, dtype=np.int64),
            np.ascontiguousarray(M.succ_prob, dtype=np.float64), r, c, absorbing)
        nu_thr, nu_alias = alias_table(np.asarray(M.nu0))
        return (nu_thr, nu_alias, state_info, rec, bucket_state, r.reshape(-1), c.reshape(-1),
                np.ascontiguousarray(r[:, 0]), np.ascontiguousarray(c[:, 0, :]).reshape(-1),
                float(M.gamma), self.horizon, discount_tail(M.gamma, self.horizon))

    def _check_model(self, M, exact):
        if not isinstance(M, CMDP):
            raise TypeError(f"M_test must be a CMDP; got {type(M).__name__}")
        ps = self.policy_set
        if (M.n_states, M.n_actions, M.n_constraints) != (ps.n_states, ps.n_actions,
                                                          ps.n_constraints):
            raise ValueError(
                f"M_test has (S, A, K) = {(M.n_states, M.n_actions, M.n_constraints)}; the policy "
                f"set has {(ps.n_states, ps.n_actions, ps.n_constraints)}")
        if not np.allclose(M.cost_limit, ps.cost_limit, rtol=0, atol=1e-12):
            raise ValueError(f"M_test.cost_limit is {M.cost_limit}; the policy set's slacks refer "
                             f"to {ps.cost_limit}")
        if abs(M.gamma - ps.gamma) > 1e-12:
            raise ValueError(f"M_test.gamma is {M.gamma}; the policy set has gamma {ps.gamma}")
        check_bool("exact", exact)
        if self.certified:
            cal = ps.calibration
            r, c = np.asarray(M.r), np.asarray(M.c).reshape(-1, ps.n_constraints)
            tol = _RANGE_TOL * (1.0 + np.abs(cal.reward_range).max())
            if r.min() < cal.reward_range[0] - tol or r.max() > cal.reward_range[1] + tol:
                raise ValueError(
                    f"M_test's rewards span [{r.min():.6g}, {r.max():.6g}], outside the calibrated "
                    f"range [{cal.reward_range[0]:.6g}, {cal.reward_range[1]:.6g}]; the certified "
                    "bounds assume returns inside the family's ranges")
            for k in range(ps.n_constraints):
                lo, hi = cal.cost_range[k]
                tk = _RANGE_TOL * (1.0 + max(abs(lo), abs(hi)))
                if c[:, k].min() < lo - tk or c[:, k].max() > hi + tk:
                    raise ValueError(
                        f"M_test's cost {k} spans [{c[:, k].min():.6g}, {c[:, k].max():.6g}], "
                        f"outside the calibrated range [{lo:.6g}, {hi:.6g}]; the certified bounds "
                        "assume returns inside the family's ranges")

    @staticmethod
    def _vstar(M, regret_reference):
        if regret_reference is None:
            from .lp import solve_lp

            return float(solve_lp(M).reward)
        return check_real("regret_reference", regret_reference)

    def _fused_cv(self, M) -> bool:
        """Whether a fused run on M uses the control variate (needs the calibrated nu0)."""
        cal = self.policy_set.calibration
        if self._cv_mode is False or cal.cv_values is None:
            return False
        same = np.array_equal(np.asarray(M.nu0), np.asarray(cal.nu0))
        if not same and self._cv_mode:
            raise ValueError("control_variate=True needs M_test.nu0 equal to the calibrated nu0")
        return same

    def run(self, M_test, *, exact=True, regret_reference=None, stop_on_violation=False,
            violation_tol=1e-9, closed_form=True) -> TestLog:
        """All ``n_episodes`` episodes on a known tabular test task in one compiled kernel.

        Starts from a fresh state with the adapter's seed (independent of any ask/tell
        progress) and takes exactly the decisions ask/tell takes on the same returns
        (certified: with ``tell(..., start_state=s0)`` when the control variate is on).

        Parameters
        ----------
        M_test : CMDP
        exact : bool, default True
            Audit every deployed mixture exactly (reward, cost, regret, violations).
        regret_reference : float, optional
            V* for the regret; default the exact LP optimum of ``M_test``
            (:func:`safemeta_fast.lp.solve_lp`). The authors used the primal-dual value
            (:func:`safemeta_fast.planning.primal_dual`).
        stop_on_violation : bool, default False
            Stop before deploying a mixture whose exact cost exceeds the limit (the
            reference's behaviour). By default violations are recorded and the run goes on.
        violation_tol : float, default 1e-9
            A violation is ``exact cost > limit + violation_tol``.
        closed_form : bool, default True
            Finish episodes in absorbing states in closed form (exact; see ``rollout``).

        Returns
        -------
        TestLog
        """
        return self.run_tasks([M_test], seeds=[self.seed], regret_references=[regret_reference],
                              exact=exact, stop_on_violation=stop_on_violation,
                              violation_tol=violation_tol, closed_form=closed_form,
                              threads=1)[0][0]

    def run_seeds(self, M_test, seeds, *, exact=True, regret_reference=None,
                  stop_on_violation=False, violation_tol=1e-9, closed_form=True,
                  parallel=True) -> list:
        """:meth:`run` for several seeds of one test task, runs spread over threads.

        ``seeds`` is a sequence of ints; run i equals ``SafeAdapter(..., seed=seeds[i]).run``
        bit for bit, whatever the thread count.
        """
        check_bool("parallel", parallel)
        return self.run_tasks([M_test], seeds=seeds, regret_references=[regret_reference],
                              exact=exact, stop_on_violation=stop_on_violation,
                              violation_tol=violation_tol, closed_form=closed_form,
                              threads=None if parallel else 1)[0]

    def run_tasks(self, tasks, *, seeds=None, regret_references=None, exact=True,
                  stop_on_violation=False, violation_tol=1e-9, closed_form=True,
                  threads=None) -> list:
        """:meth:`run` on several test tasks (and seeds), one run per worker thread.

        Parameters
        ----------
        tasks : sequence of CMDP
        seeds : sequence of int, optional
            Seeds run on every task; default ``[adapter seed]``. Integers only.
        regret_references : sequence of float, optional
            One V* per task (default: each task's LP optimum, see :meth:`run`).
        threads : int, optional
            Worker threads (default: ``numba.get_num_threads()``). The fused kernels
            release the GIL, so runs proceed in parallel; every run owns its arrays and
            its random streams, so results do not depend on ``threads``.

        Returns
        -------
        list of list of TestLog
            ``logs[i][j]`` is task i with seed j, equal bit for bit to
            ``SafeAdapter(..., seed=seeds[j]).run(tasks[i], ...)``.
        """
        from concurrent.futures import ThreadPoolExecutor

        import numba

        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks is empty; pass at least one CMDP")
        for i, M in enumerate(tasks):
            try:
                self._check_model(M, exact)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"tasks[{i}]: {exc}") from None
        tol = check_real("violation_tol", violation_tol, 0.0)
        check_bool("stop_on_violation", stop_on_violation)
        check_bool("closed_form", closed_form)
        if stop_on_violation and not exact:
            raise ValueError("stop_on_violation=True needs exact=True")
        if seeds is None:
            seeds = [self.seed]
        else:
            seeds = [resolve_seed(check_int(f"seeds[{j}]", s, 0)) for j, s in enumerate(seeds)]
        if not seeds:
            raise ValueError("seeds is empty; pass at least one seed")
        if regret_references is None:
            refs = [None] * len(tasks)
        else:
            refs = list(regret_references)
            if len(refs) != len(tasks):
                raise ValueError(f"regret_references has {len(refs)} entries for "
                                 f"{len(tasks)} tasks")
        n_threads = numba.get_num_threads() if threads is None else check_int("threads", threads, 1)
        preps = [self._prepare(M, exact, ref) for M, ref in zip(tasks, refs)]
        units = [(i, j, s) for i in range(len(tasks)) for j, s in enumerate(seeds)]

        def work(unit):
            i, _, s = unit
            return self._execute(preps[i], s, bool(stop_on_violation), tol, bool(closed_form))

        if n_threads == 1 or len(units) == 1:
            outs = [work(u) for u in units]
        else:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                outs = list(pool.map(work, units))
        logs = [[None] * len(seeds) for _ in tasks]
        for (i, j, s), out in zip(units, outs):
            logs[i][j] = self._log_of(preps[i], out, s, tol)
        return logs

    def _prepare(self, M, exact, regret_reference):
        """Per-task inputs of the fused kernel: tables, exact component values, V*."""
        m, K = self.policy_set.n_policies + 1, self.policy_set.n_constraints
        if exact:
            ex_r, ex_c = exact_components(M, self.policy_set)
            vstar = self._vstar(M, regret_reference)
        else:
            ex_r, ex_c, vstar = np.full(m, np.nan), np.full((m, K), np.nan), None
        prep = {"M": M, "exact": exact, "ex_r": ex_r, "ex_c": ex_c, "vstar": vstar,
                "tabs": self._tables(M)}
        if self.certified:
            use_cv = self._fused_cv(M)
            prep["model"], prep["constants"] = self._model(use_cv)
            if (not use_cv and self._cv_mode is None
                    and self.policy_set.calibration.cv_values is not None):
                prep["note"] = ("control variate off: M_test.nu0 differs from the calibrated nu0")
        return prep

    def _execute(self, prep, seed, stop, tol, closed_form):
        """One fused run (releases the GIL); returns its output arrays."""
        ps = self.policy_set
        N, K = self.n_episodes, ps.n_constraints
        o = {"r": np.zeros(N), "c": np.zeros((N, K)), "comp": np.zeros(N, dtype=np.int64),
             "event": np.zeros(N, dtype=np.int64), "er": np.zeros(N), "ec": np.zeros((N, K))}
        tabs = prep["tabs"] + (closed_form,)
        if self.certified:
            cal = ps.calibration
            state = fresh_state(cal.n_kept, ps.n_policies + 1, K + 1)
            _kc.init_certified(state, prep["model"])
            o.update(a=np.zeros(N, dtype=np.int64), b=np.zeros(N, dtype=np.int64),
                     w=np.zeros(N), alive=np.zeros(N, dtype=np.int64), bound=np.zeros((N, K)))
            outs = (o["r"], o["c"], o["comp"], o["a"], o["b"], o["w"], o["alive"], o["bound"],
                    o["event"], o["er"], o["ec"])
            o["status"], o["done"] = _kc.run_certified(
                int(seed), N, state, prep["model"], tabs, prep["ex_r"], prep["ex_c"], stop, tol,
                outs)
            o["refuted_at"] = int(state[0][_kc.C_REFUTED])
            return o
        ist = np.zeros(_k.N_ISTATE, dtype=np.int64)
        fst = np.zeros(_k.F_SUM_C + 2 * K)
        elim = np.zeros(ps.n_policies, dtype=np.int64)
        _k.init_state(ist, fst, elim, self._u, self._params)
        o.update(cand=np.zeros(N, dtype=np.int64), alpha=np.zeros(N),
                 stage=np.zeros(N, dtype=np.int64), elim=elim)
        decision = (self._u, self._v, self._u_s, self._v_s, self._b, self._inv_c, self._params)
        outs = (o["r"], o["c"], o["comp"], o["cand"], o["alpha"], o["stage"], o["event"],
                o["er"], o["ec"])
        o["status"], o["done"] = _k.run_fused(int(seed), N, decision, (ist, fst, elim), tabs,
                                              prep["ex_r"], prep["ex_c"], stop, tol, outs)
        return o

    def _log_of(self, prep, o, seed, tol):
        d = int(o["done"])
        n = self.policy_set.n_policies
        exact = prep["exact"]
        cut = {k: v[:d] for k, v in o.items() if isinstance(v, np.ndarray) and v.ndim >= 1
               and v.shape[0] == self.n_episodes}
        notes = list(self.notes)
        if self.certified:
            pair = np.stack([cut["a"], cut["b"]], axis=1)
            weight = cut["w"]
            index = np.where(cut["comp"] == 0, cut["a"], cut["b"])
            alpha = weight * (cut["a"] < n) + (1.0 - weight) * (cut["b"] < n)
            cand = np.where(cut["a"] < n, cut["a"], np.where(cut["b"] < n, cut["b"], -1))
            comp = (index == n).astype(np.int64)
            stage = np.zeros(d, dtype=np.int64)
            elim = np.full(n, -1, dtype=np.int64)
            constants = prep["constants"]
            cert = {"delta_cal": self.delta_cal, "delta_test": self.delta_test,
                    "alive": cut["alive"], "bound": cut["bound"], "refuted_at": o["refuted_at"]}
            if "note" in prep:
                notes.append(prep["note"])
            if o["refuted_at"] >= 0:
                warnings.warn(f"calibration refuted at episode {o['refuted_at']} (seed {seed}): "
                              "every reference task was rejected; pi_s ran alone afterwards",
                              CalibrationRefutedWarning, stacklevel=4)
        else:
            cand, alpha, comp, stage = cut["cand"], cut["alpha"], cut["comp"], cut["stage"]
            alive = cand >= 0
            pair = np.stack([np.where(alive, cand, n), np.full(d, n)], axis=1)
            weight = np.where(alive, alpha, 1.0)
            index = np.where(alive & (comp == 0), cand, n)
            elim = o["elim"]
            constants = self.constants
            cert = None
        return build_log(
            self.policy_set, profile=self.profile, constants=constants, seed=seed,
            horizon=self.horizon, cand=cand, alpha=alpha, comp=comp, stage=stage,
            event=cut["event"], pair=pair, weight=weight, drawn=index, R=cut["r"], C=cut["c"],
            elim=elim,
            guarantee=self.guarantee, notes=notes, ex_r=cut["er"] if exact else None,
            ex_c=cut["ec"] if exact else None, vstar=prep["vstar"],
            M=prep["M"] if exact else None, stopped=o["status"] == _k.STATUS_STOPPED, tol=tol,
            certified=cert)
