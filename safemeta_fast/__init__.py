"""safemeta_fast: constrained meta-RL with provable test-time safety on tabular CMDPs.

A fast, exact engine for Ni & Kamgarpour (arXiv 2601.21845): a validated CMDP model,
exact evaluation, rollouts, value iteration, a primal-dual CMDP solver, occupancy LPs
in cvxpy, and the paper's gridworld.
"""

from .cmdp import CMDP
from .errors import (
    ConvergenceError,
    InfeasibleError,
    OracleError,
    SafeMetaError,
    SafetyAssumptionError,
)

__version__ = "0.1.0"

__all__ = [
    "CMDP",
    "SafeMetaError",
    "InfeasibleError",
    "OracleError",
    "SafetyAssumptionError",
    "ConvergenceError",
    "__version__",
]
