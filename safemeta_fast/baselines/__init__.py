"""Comparison methods of the paper's gridworld experiment (BASELINES.md), one module each.

Every method takes a known tabular test task, its start policy and an episode budget,
learns from sampled episodes only, and returns a :class:`BaselineLog` with the exact
values of every deployed policy (the audit of SPEC section 6).
"""

from .common import BaselineLog, block_values
from .dope import dope
from .dope_plus import dope_plus
from .lb_sgd import (
    GradientEstimate,
    default_smoothness,
    lb_sgd,
    lb_sgd_schedule,
    lb_start_policy,
    policy_gradient_batch,
)
from .safe_meta_rl import SafeMetaRLStep, safe_meta_rl, safe_meta_rl_step

__all__ = [
    "BaselineLog",
    "block_values",
    "safe_meta_rl",
    "safe_meta_rl_step",
    "SafeMetaRLStep",
    "dope_plus",
    "dope",
    "lb_sgd",
    "lb_sgd_schedule",
    "lb_start_policy",
    "policy_gradient_batch",
    "GradientEstimate",
    "default_smoothness",
]
