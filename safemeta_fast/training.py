"""Training phase (paper Algorithm 1, SPEC section 5): cover, O_l per cover task, O_s, verification.

``train`` is a thin orchestrator: the cover comes from :func:`~safemeta_fast.covering.build_cover`
(kernels), each cover task is solved by O_l (the occupancy LP by default, or the
entropy-regularised primal-dual solver the authors used), the safe policy comes from O_s
(a pessimistic task, a user policy, or the robust construction), and that policy is
verified exactly on every cover task and every sampled training task of the final round.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from .cmdp import CMDP
from .covering import build_cover
from .errors import (
    InfeasibleError,
    SafetyAssumptionError,
    SafetyPreconditionWarning,
    UncoveredUnsafeWarning,
)
from .lp import solve_lp
from .planning import primal_dual
from .policy import as_policy
from .policyset import PolicySet
from .safe_policy import robust_safe_policy, verify_safe_policy
from .seeding import resolve_seed
from .tasks import TaskFamily
from .theory import lipschitz_constant, normalised_margin

__all__ = [
    "train",
    "calibration_seed",
    "lipschitz_constant",
    "normalised_margin",
    "SafetyPreconditionWarning",
    "UncoveredUnsafeWarning",
]

ORACLES = ("lp", "primal_dual")


def _solve_ol(M: CMDP, oracle: str, options: dict):
    if oracle == "lp":
        res = solve_lp(M, **options)
    else:
        res = primal_dual(M, **options)
    return np.asarray(res.policy), float(res.reward), np.asarray(res.cost)


def _label(family: TaskFamily, theta) -> str:
    names = family.param_names or tuple(f"theta{k}" for k in range(len(theta)))
    return ", ".join(f"{n}={v:.6g}" for n, v in zip(names, theta))


def _sampled_slack(family: TaskFamily, params: np.ndarray, pi_s, progress: bool,
                   chunk: int = 2048) -> np.ndarray:
    """Smallest exact slack of pi_s on each sampled task, shape (N,).

    An affine family (:meth:`TaskFamily.affine_model`) is evaluated in one parallel kernel
    without building the tasks; otherwise tasks are built and verified chunk by chunk.
    """
    from .evaluation import evaluate_affine

    model = family.affine_model_on(params)
    if model is not None:
        vals = evaluate_affine(model, params, np.asarray(pi_s)[None])[:, 0, 1:]
        return (np.asarray(model.base.cost_limit)[None, :] - vals).min(axis=1)
    slack = np.empty(params.shape[0])
    for lo_i in tqdm(range(0, params.shape[0], chunk), desc="verifying pi_s on sampled tasks",
                     disable=not progress, leave=False):
        tasks = [family.build(theta) for theta in params[lo_i:lo_i + chunk]]
        slack[lo_i:lo_i + len(tasks)] = verify_safe_policy(
            pi_s, tasks, raise_on_unsafe=False).slack.min(axis=1)
    return slack


def train(
    family: TaskFamily,
    *,
    eps: float,
    delta: float,
    distance: str = "model",
    safe_policy="robust",
    oracle: str = "lp",
    oracle_options: dict | None = None,
    n_rule: str = "paper",
    max_rounds: int = 8,
    verify: str = "all",
    calibration: bool = True,
    calibration_options: dict | None = None,
    seed=None,
    progress: bool = True,
) -> PolicySet:
    """Run the training phase and return the policy set (paper Algorithm 1).

    Parameters
    ----------
    family : TaskFamily
        The task family and its distribution (e.g. ``envs.GridworldFamily()``).
    eps : float
        Closeness radius of the cover (model-distance units for ``distance="model"``,
        the family's parameter units for ``distance="parameter"``).
    delta : float
        Confidence parameter in (0, 1).
    distance : {"model", "parameter"}
        ``"model"``: the exact distance of SPEC section 3 on the built CMDPs (default);
        ``"parameter"``: the family's parameter closeness (the authors' experiment compared
        noise levels; for the gridworld the model distance is 0.75 x the noise difference).
    safe_policy : "robust", CMDP or array (S, A)
        O_s: ``"robust"`` = robust value iteration over the cover tasks' rectangular hull
        (default, needs no hand-picked task); a CMDP = the optimum (by ``oracle``) of that
        pessimistic task (the paper: gridworld noise 0.4); an array = a policy you trust.
        Whatever the source, it is verified exactly (see ``verify``).
    oracle : {"lp", "primal_dual"}
        O_l: the occupancy LP (default) or the entropy-regularised primal-dual solver
        (the authors' choice, with ``oracle_options={"beta": 0.1}`` by default).
    oracle_options : dict, optional
        Keyword arguments for ``solve_lp`` or ``primal_dual``.
    n_rule : {"paper", "authors"}
        Initial sample size and growth rule of the cover loop (see ``build_cover``).
    max_rounds : int
        Cap on the cover loop's rounds.
    verify : {"all", "cover"}
        Verify pi_s exactly on the cover tasks and on every sampled task of the final round
        (default, as SPEC section 4 requires), or on the cover tasks only (faster).
        ``xi_hat`` is the smallest slack over the cover tasks and the covered samples (the
        tasks the guarantee speaks about); samples outside the cover are checked too and
        reported in ``info["outside_cover"]`` with a warning when pi_s is unsafe there.
    calibration : bool, default True
        Attach the joint conformal prior of the certified test-time profile
        (:func:`safemeta_fast.calibration.calibrate`, on fresh tasks from the family with
        a seed derived from ``seed`` and distinct from every training sample).
    calibration_options : dict, optional
        Keyword arguments of ``calibrate`` (``n_reference``, ``n_calibration``, ``delta``,
        ``delta_cal``, ``seed``).
    seed : int, Generator or None
    progress : bool
        Progress bars over cover rounds, oracle calls, verification and calibration.

    Returns
    -------
    PolicySet
        With ``xi_hat`` = the verified margin, and in ``info``: the worst task, the
        number of verified tasks, the safe-policy source, the oracle, and the check of the
        paper's precondition ``(8L+18) eps <= xi`` on the normalised scale.

    Raises
    ------
    SafetyAssumptionError
        When the safe policy's verified margin is not positive (names the worst task).
    InfeasibleError
        When a cover task has no feasible policy (names the task).

    Warns
    -----
    SafetyPreconditionWarning
        When ``(8L+18) eps > xi`` (the paper's guarantee then does not hold).
    UncoveredUnsafeWarning
        When pi_s violates a limit on sampled tasks outside the cover (the at most
        3 delta N uncovered tasks, which the guarantee excludes); counted in ``info``.

    Examples
    --------
    >>> from safemeta_fast.envs import GridworldFamily, gridworld
    >>> ps = train(GridworldFamily(), eps=0.02, delta=0.2, distance="parameter",
    ...            safe_policy=gridworld(0.4), seed=0, progress=False)
    >>> len(ps.policies), ps.eps
    (1, 0.02)
    """
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily; got {type(family).__name__}")
    if not isinstance(calibration, (bool, np.bool_)):
        raise TypeError(f"calibration must be a bool; got {type(calibration).__name__}")
    if oracle not in ORACLES:
        raise ValueError(f"oracle is {oracle!r}; expected one of {ORACLES}")
    if verify not in ("all", "cover"):
        raise ValueError(f"verify is {verify!r}; expected 'all' or 'cover'")
    opts = dict(oracle_options or {})
    if oracle == "primal_dual":
        opts.setdefault("beta", 0.1)
    if isinstance(safe_policy, str) and safe_policy != "robust":
        raise ValueError(
            f"safe_policy is {safe_policy!r}; expected 'robust', a CMDP or an (S, A) array")
    used_seed = resolve_seed(seed)
    t_start = time.perf_counter()

    cover = build_cover(family, eps=eps, delta=delta, distance=distance, n_rule=n_rule,
                        seed=used_seed, progress=progress, max_rounds=max_rounds)
    if not cover.converged:
        warnings.warn(
            f"the cover loop stopped after {len(cover.rounds)} rounds without passing the "
            f"stopping test (last value {cover.rounds[-1].test_value:.4g} > delta {delta}); "
            f"raise max_rounds for the paper's guarantee", RuntimeWarning, stacklevel=2)
    t_cover = time.perf_counter() - t_start

    # O_l on every cover task
    cover_tasks = [family.build(theta) for theta in cover.chosen_params]
    labels = [_label(family, theta) for theta in cover.chosen_params]
    policies, u, v = [], [], []
    for M, label in tqdm(list(zip(cover_tasks, labels)), desc="O_l on cover tasks",
                         disable=not progress, leave=False):
        try:
            pi, rew, cost = _solve_ol(M, oracle, opts)
        except InfeasibleError as exc:
            raise InfeasibleError(f"cover task ({label}) is infeasible: {exc}",
                                  min_cost=exc.min_cost, cost_limit=exc.cost_limit) from None
        policies.append(pi)
        u.append(rew)
        v.append(M.cost_limit - cost)
    t_ol = time.perf_counter() - t_start - t_cover

    # O_s
    info_s: dict = {}
    if isinstance(safe_policy, CMDP):
        pi_s, _, _ = _solve_ol(safe_policy, oracle, opts)
        source = f"optimum ({oracle}) of a given pessimistic task"
    elif isinstance(safe_policy, str):
        pi_s, info_s = robust_safe_policy(cover_tasks)
        source = "robust value iteration over the cover tasks' rectangular hull"
    else:
        S, A = cover_tasks[0].n_states, cover_tasks[0].n_actions
        pi_s = np.array(as_policy(safe_policy, S, A, "safe_policy"))
        source = "user-given policy"

    # exact verification: cover tasks, then every sampled task of the final round
    cover_check = verify_safe_policy(pi_s, cover_tasks, names=labels, raise_on_unsafe=False)
    xi_hat, worst = cover_check.xi_hat, ("cover", labels[cover_check.worst_task])
    n_verified = len(cover_tasks)
    outside = {"n_tasks": 0, "n_unsafe": 0, "min_slack": None, "worst": None}
    if verify == "all":
        params = cover.params
        covered = np.asarray(cover.covered, dtype=bool)
        slack = _sampled_slack(family, params, pi_s, progress)
        if covered.any():
            i = int(np.flatnonzero(covered)[np.argmin(slack[covered])])
            if slack[i] < xi_hat:
                xi_hat, worst = float(slack[i]), ("sampled", _label(family, params[i]))
        if (~covered).any():
            i = int(np.flatnonzero(~covered)[np.argmin(slack[~covered])])
            outside = {"n_tasks": int((~covered).sum()),
                       "n_unsafe": int((slack[~covered] <= 0).sum()),
                       "min_slack": float(slack[i]), "worst": _label(family, params[i])}
        n_verified += params.shape[0]
    if not xi_hat > 0:
        raise SafetyAssumptionError(
            f"the safe policy ({source}) is not strictly feasible on every covered training task: "
            f"on the {worst[0]} task ({worst[1]}) its smallest slack is {xi_hat:.6g} <= 0"
        )
    if outside["n_unsafe"]:
        warnings.warn(
            f"the safe policy violates a cost limit on {outside['n_unsafe']} of the "
            f"{outside['n_tasks']} sampled tasks left outside the cover "
            f"(worst: {outside['worst']}, "
            f"slack {outside['min_slack']:.4g}); the guarantee excludes that remainder "
            f"(at most 3*delta*N tasks), but a test task drawn there is not protected",
            UncoveredUnsafeWarning, stacklevel=2)

    gamma = cover_tasks[0].gamma
    L = lipschitz_constant(gamma)
    K = cover_tasks[0].n_constraints
    xi_norm = normalised_margin(np.array([[xi_hat]]) if K == 1 else np.full((1, K), xi_hat),
                                cover_tasks)
    need = (8 * L + 18) * float(eps)
    holds = need <= xi_norm
    if not holds:
        warnings.warn(
            f"the paper's precondition (8L+18) eps <= xi fails: "
            f"(8*{L:.4g}+18)*{eps:g} = {need:.4g} "
            f"> normalised margin {xi_norm:.4g} (raw slack {xi_hat:.4g}); the test-time safety "
            "guarantee does not hold for this eps "
            f"(it would need eps <= {xi_norm / (8 * L + 18):.3g})",
            SafetyPreconditionWarning, stacklevel=2)

    rounds = [
        {"n_tasks": r.n_tasks, "n_cover": r.n_chosen, "n_uncovered": r.n_uncovered,
         "test_value": r.test_value, "passed": bool(r.passed),
         "n_exact_distances": r.n_exact_distances, "seconds": r.seconds}
        for r in cover.rounds
    ]
    info = {
        "distance": distance, "n_rule": n_rule, "oracle": oracle,
        "oracle_options": {k: v for k, v in opts.items() if isinstance(v, (int, float, str, bool))},
        "safe_policy_source": source, "safe_policy_info": {k: float(x) for k, x in info_s.items()},
        "worst_task": {"kind": worst[0], "label": worst[1]},
        "n_verified_tasks": int(n_verified), "verify": verify,
        "outside_cover": outside,
        "cover_converged": bool(cover.converged),
        "lipschitz_L": L, "xi_hat_normalised": xi_norm,
        "precondition": {"lhs_(8L+18)eps": need, "rhs_xi": xi_norm, "holds": bool(holds)},
        "param_names": list(family.param_names),
        "family": type(family).__name__,
        "seconds": {"cover": t_cover, "oracles": t_ol,
                    "total": time.perf_counter() - t_start},
    }
    ps = PolicySet(
        policies=np.stack(policies), u=np.array(u), v=np.stack(v),
        u_s=cover_check.reward, v_s=cover_check.slack, safe_policy=pi_s,
        cover_params=cover.chosen_params, cost_limit=cover_tasks[0].cost_limit, gamma=gamma,
        eps=float(eps), delta=float(delta), xi_hat=xi_hat, seed=used_seed, rounds=rounds, info=info,
    )
    if calibration:
        from .calibration import calibrate

        copts = dict(calibration_options or {})
        copts.setdefault("seed", calibration_seed(used_seed))
        ps = calibrate(ps, family, progress=progress, **copts)
    return ps


def calibration_seed(training_seed: int) -> int:
    """The calibration seed ``train`` derives from its own seed (a separate stream)."""
    words = np.random.SeedSequence([int(training_seed), 0xCA11B]).generate_state(2, np.uint64)
    return int(words[0] >> np.uint64(1))
