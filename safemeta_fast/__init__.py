"""safemeta_fast: constrained meta-RL with provable test-time safety on tabular CMDPs.

A fast, exact engine for Ni & Kamgarpour (arXiv 2601.21845): a validated CMDP model,
exact evaluation, rollouts, value iteration, a primal-dual CMDP solver, occupancy LPs
in cvxpy, and the paper's gridworld.
"""

from .adaptation import AdaptStep, Profile, SafeAdapter, TestLog, normalisation_of
from .calibration import Calibration, calibrate
from .cmdp import CMDP
from .errors import (
    CalibrationRefutedWarning,
    ConvergenceError,
    InfeasibleError,
    OracleError,
    SafeMetaError,
    SafetyAssumptionError,
)
from .evaluation import (
    Evaluation,
    EvaluationBatch,
    StateValues,
    evaluate,
    evaluate_many,
    evaluate_mixture,
    occupancy,
    state_values,
)
from .lp import LPResult, min_cost, solve_lp
from .planning import (
    MDPSolution,
    PrimalDualResult,
    ValueIterationResult,
    primal_dual,
    solve_mdp,
    value_iteration,
)
from .policy import Mixture
from .rollout import RolloutResult, rollout

__version__ = "0.1.0"

__all__ = [
    "CMDP",
    "Mixture",
    "evaluate",
    "evaluate_many",
    "evaluate_mixture",
    "occupancy",
    "state_values",
    "Evaluation",
    "EvaluationBatch",
    "StateValues",
    "solve_lp",
    "min_cost",
    "LPResult",
    "value_iteration",
    "solve_mdp",
    "MDPSolution",
    "primal_dual",
    "ValueIterationResult",
    "PrimalDualResult",
    "rollout",
    "RolloutResult",
    "SafeAdapter",
    "calibrate",
    "Calibration",
    "TestLog",
    "Profile",
    "AdaptStep",
    "normalisation_of",
    "SafeMetaError",
    "InfeasibleError",
    "OracleError",
    "SafetyAssumptionError",
    "ConvergenceError",
    "CalibrationRefutedWarning",
    "__version__",
]
