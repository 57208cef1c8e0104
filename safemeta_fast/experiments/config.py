"""Configuration of the paper experiment: the methods, the parameters, the unit seeds.

:data:`METHODS` lists the compared methods (:class:`MethodSpec`), :class:`PaperConfig`
the parameters of one run folder (which of them change a unit's result, and which only
select what is run), and :func:`derive_seed` the seed of every unit. Nothing here reads
or writes files; :mod:`.units` does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

import numpy as np

from ..errors import ConfigMismatchError
from ..validation import check_int, check_real

__all__ = [
    "METHODS",
    "MethodSpec",
    "PaperConfig",
    "ConfigMismatchError",
    "derive_seed",
    "REFERENCE_EPISODES",
    "REFERENCE_WARMUP",
    "SCHEMA",
    "INPUT_NAMES",
    "VIOLATION_TOL",
    "SAFE_NOISE",
    "GDA_BETA",
    "LB_BETA",
]

#: Episodes per task in the paper's Figure 2.
REFERENCE_EPISODES = 40_000
#: DOPE+ warm-up of the reference notebook (episodes with pi_s before learning).
REFERENCE_WARMUP = 18_000
#: Layout version of the run folder.
SCHEMA = 1
#: Violation tolerance: exact cost > limit + this.
VIOLATION_TOL = 1e-9
#: Slip noise of the task the safe policy and LB-SGD's start policy are planned on.
SAFE_NOISE = 0.4
#: Regularisation of the primal-dual planner behind pi_s and u_opt.
GDA_BETA = 0.1
#: GDA beta of LB-SGD's start policy pi_LB.
LB_BETA = 8.0


#: Run-folder inputs a unit can read (:attr:`MethodSpec.inputs`).
INPUT_NAMES = ("pi_s", "pi_lb", "policy_set")


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison.

    Attributes
    ----------
    name : str
        File and table name.
    label : str
        Legend label.
    module, function : str or None
        Where the baseline lives (imported lazily); None for methods run here.
    paper_mean : float or None
        Published mean final cumulative regret at K = 40,000 (Figure 2, BASELINES 8.11).
    figure : {"figure2", "more"}
        Panel the method is drawn in.
    inferred : bool
        A reconstruction (labelled as such in every output).
    weight : float
        Rough relative run time, used to start long units first.
    group : str
        Methods sharing compiled kernels; with a process pool, one warm-up per group
        compiles them (numba's on-disk cache) before the group's units start, so workers
        never compile the same kernels twice at once.
    inputs : tuple of str
        The run-folder inputs a unit of this method reads besides its task's record
        (``"pi_s"`` and ``"pi_lb"`` from start_policies.npz, ``"policy_set"``); a unit
        records their hashes and is re-run when one changes. Default: the PCE family
        (group ``"adapt"``) reads the policy set, every other method pi_s.
    """

    name: str
    label: str
    module: str | None
    function: str | None
    paper_mean: float | None
    figure: str
    inferred: bool = False
    weight: float = 1.0
    description: str = ""
    group: str = ""
    inputs: tuple = ()

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", self.name)
        if not self.inputs:
            default = ("policy_set",) if self.group == "adapt" else ("pi_s",)
            object.__setattr__(self, "inputs", default)
        for i, name in enumerate(self.inputs):
            if name not in INPUT_NAMES:
                raise ValueError(f"inputs[{i}] is {name!r}; expected one of {INPUT_NAMES}")


METHODS = {
    m.name: m
    for m in (
        MethodSpec("ours", "Certified Safe-PCE (ours)", None, None, None, "figure2",
                   group="adapt",
                   description="SafeAdapter, profile 'certified' (CERTIFIED.md: calibrated "
                               "prior, confidence sequences, certified pairs; start-state "
                               "control variate on)"),
        MethodSpec("safe_pce", "Safe-PCE, reference constants", None, None, 40_000.0, "figure2",
                   group="adapt",
                   description="SafeAdapter, profile 'reference' (the authors' constants)"),
        MethodSpec("safe_pce_paper", "Safe-PCE, paper constants", None, None, None, "more",
                   group="adapt",
                   description="SafeAdapter, profile 'paper' with strict=False: its "
                               "preconditions fail here, the guarantee does not hold"),
        MethodSpec("pce", "PCE (no safety)", None, None, None, "more", group="adapt",
                   description="SafeAdapter, profile 'pce' (BASELINES 3); regret adds "
                               "|u_opt - V_r|"),
        MethodSpec("safe_meta_rl", "Safe Meta-RL", "safemeta_fast.baselines.safe_meta_rl",
                   "safe_meta_rl", 92_000.0, "figure2", weight=4.0,
                   description="BASELINES 4"),
        MethodSpec("dope_plus", "DOPE+", "safemeta_fast.baselines.dope_plus", "dope_plus",
                   105_000.0, "figure2", weight=8.0, group="dope", description="BASELINES 5"),
        MethodSpec("lb_sgd", "LB-SGD", "safemeta_fast.baselines.lb_sgd", "lb_sgd", 155_000.0,
                   "figure2", weight=4.0, inputs=("pi_lb",),
                   description="BASELINES 6, start policy pi_LB"),
        MethodSpec("dope", "DOPE [inferred]", "safemeta_fast.baselines.dope", "dope", None,
                   "more", inferred=True, weight=8.0, group="dope",
                   description="BASELINES 7: [inferred] discounted translation of DOPE"),
        MethodSpec("safe_policy", "pi_s alone", None, None, 95_500.0, "figure2", weight=0.1,
                   description="the safe policy for every episode (exact values, no sampling)"),
    )
}


@dataclass(frozen=True)
class PaperConfig:
    """Parameters of the paper experiment.

    Parameters
    ----------
    methods : tuple of str, default every method in :data:`METHODS`
    n_tasks : int, default 10
        The first ``n_tasks`` of the paper's test noises (``PAPER_TEST_NOISES``), 1..10.
    n_episodes : int, default 40,000
        Episodes K per run.
    n_seeds : int, default 1
        Runs per (method, task).
    seed : int, default 0
        Base seed; unit seeds come from :func:`derive_seed`.
    warmup : int or None
        DOPE+/DOPE warm-up episodes; None: the reference fraction 18,000/40,000 of K.
    horizon : int, default 600
    train_eps, train_delta : float, default 0.005, 0.05
        Training phase settings (noise-space closeness, confidence).
    train_seed : int, default 0
    quick : bool
        Only recorded (the quick preset is :meth:`quick_preset`).

    Examples
    --------
    >>> PaperConfig(n_episodes=5000).resolved_warmup
    2250
    """

    methods: tuple = tuple(METHODS)
    n_tasks: int = 10
    n_episodes: int = REFERENCE_EPISODES
    n_seeds: int = 1
    seed: int = 0
    warmup: int | None = None
    horizon: int = 600
    train_eps: float = 0.005
    train_delta: float = 0.05
    train_seed: int = 0
    quick: bool = False

    def __post_init__(self):
        methods = self.methods
        if isinstance(methods, str):
            methods = (methods,)
        methods = tuple(methods)
        if not methods:
            raise ValueError("methods is empty; choose from " + ", ".join(METHODS))
        for i, m in enumerate(methods):
            if m not in METHODS:
                raise ValueError(f"methods[{i}] is {m!r}; expected one of {', '.join(METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods {list(methods)} lists a method twice")
        object.__setattr__(self, "methods", methods)
        from ..envs import PAPER_TEST_NOISES

        check_int("n_tasks", self.n_tasks, 1, len(PAPER_TEST_NOISES))
        check_int("n_episodes", self.n_episodes, 1)
        check_int("n_seeds", self.n_seeds, 1)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("horizon", self.horizon, 1)
        check_int("train_seed", self.train_seed, 0, 2**63 - 1)
        if self.warmup is not None:
            check_int("warmup", self.warmup, 0, self.n_episodes)
        check_real("train_eps", self.train_eps, 0.0, lo_open=True)
        check_real("train_delta", self.train_delta, 0.0, 1.0, lo_open=True, hi_open=True)

    @classmethod
    def quick_preset(cls, **overrides) -> "PaperConfig":
        """3 tasks (the first three test noises), K = 5,000, 1 seed, every method."""
        base = {"n_tasks": 3, "n_episodes": 5_000, "n_seeds": 1, "quick": True}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def resolved_warmup(self) -> int:
        """DOPE+/DOPE warm-up: ``warmup`` or ``round(18,000 K / 40,000)``."""
        if self.warmup is not None:
            return int(self.warmup)
        return int(round(REFERENCE_WARMUP * self.n_episodes / REFERENCE_EPISODES))

    @property
    def test_noises(self) -> tuple:
        from ..envs import PAPER_TEST_NOISES

        return tuple(PAPER_TEST_NOISES[: self.n_tasks])

    def result_config(self) -> dict:
        """Every parameter that changes a unit's result (compared on resume)."""
        return {
            "schema": SCHEMA,
            "n_episodes": self.n_episodes,
            "seed": self.seed,
            "horizon": self.horizon,
            "warmup": self.resolved_warmup,
            "train_eps": self.train_eps,
            "train_delta": self.train_delta,
            "train_seed": self.train_seed,
            "train_setup": "GridworldFamily(), distance=parameter, oracle=primal_dual, "
                           "verify=cover, safe_policy=pi_s",
            "safe_policy": f"primal_dual(gridworld({SAFE_NOISE}), beta={GDA_BETA})",
            "regret_reference": f"primal_dual(M_test, beta={GDA_BETA}).reward",
            "lb_start_policy": f"lb_start_policy(gridworld({SAFE_NOISE})) (GDA beta {LB_BETA})",
            "paper_profile_normalisation": "normalisation_of(gridworld(0.3))",
            "seed_derivation": "SeedSequence(seed, spawn_key=(crc32(method), task, seed_index))",
        }

    def selection(self) -> dict:
        """What is run (may change between runs in one folder)."""
        return {"methods": list(self.methods), "n_tasks": self.n_tasks, "n_seeds": self.n_seeds}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["methods"] = list(self.methods)
        d["resolved_warmup"] = self.resolved_warmup
        return d


def derive_seed(base_seed: int, method: str, task: int, seed_index: int) -> int:
    """Seed of one unit: ``SeedSequence(base_seed, spawn_key=(crc32(method), task, seed_index))``.

    Deterministic, independent of the selection and of the order units run in, and
    below 2**63.

    Examples
    --------
    >>> derive_seed(0, "safe_pce", 0, 0) == derive_seed(0, "safe_pce", 0, 0)
    True
    >>> derive_seed(0, "safe_pce", 0, 0) != derive_seed(0, "safe_pce", 1, 0)
    True
    """
    check_int("base_seed", base_seed, 0, 2**63 - 1)
    check_int("task", task, 0)
    check_int("seed_index", seed_index, 0)
    if not isinstance(method, str):
        raise TypeError(f"method must be a str; got {type(method).__name__}")
    code = zlib.crc32(method.encode("utf-8"))
    ss = np.random.SeedSequence(int(base_seed), spawn_key=(code, int(task), int(seed_index)))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))

