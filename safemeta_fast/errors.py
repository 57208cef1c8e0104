"""Exception hierarchy of safemeta_fast.

Bad input raises the built-in ``ValueError`` / ``TypeError``; everything the
engine itself detects (an infeasible task, a failing solver, a broken safety
assumption) raises a subclass of :class:`SafeMetaError`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SafeMetaError",
    "InfeasibleError",
    "OracleError",
    "SafetyAssumptionError",
    "ConvergenceError",
    "CalibrationRefutedWarning",
    "SafetyPreconditionWarning",
    "UncoveredUnsafeWarning",
    "ModelWarning",
    "ArtifactError",
    "RunFolderError",
    "NpzReadError",
    "ConfigMismatchError",
    "WorkerError",
]


class SafeMetaError(Exception):
    """Base class of every error raised by the engine (not for bad input)."""


class InfeasibleError(SafeMetaError):
    """The cost limits of a task cannot be met by any policy.

    Attributes
    ----------
    min_cost : numpy.ndarray or None
        Smallest achievable discounted cost per constraint, shape (K,), when known.
    cost_limit : numpy.ndarray or None
        The (possibly margin-shifted) limits that were asked for, shape (K,).
    """

    def __init__(self, message: str, *, min_cost=None, cost_limit=None):
        super().__init__(message)
        self.min_cost = min_cost
        self.cost_limit = cost_limit


class OracleError(SafeMetaError):
    """A solver did not return a usable answer (status other than optimal/infeasible)."""

    def __init__(self, message: str, *, status: str | None = None):
        super().__init__(message)
        self.status = status


class SafetyAssumptionError(SafeMetaError):
    """The safe policy is not strictly feasible on every task it must be safe on."""


class ConvergenceError(SafeMetaError):
    """An iterative method stopped at its iteration cap before reaching its tolerance."""


class CalibrationRefutedWarning(UserWarning):
    """The certified test phase rejected every calibrated reference task.

    The observed returns are inconsistent with the calibrated prior (which happens with
    probability at most delta_cal + delta_test when its assumptions hold, e.g. the test
    task really comes from the training distribution); the safe policy runs alone.
    """


class SafetyPreconditionWarning(UserWarning):
    """The paper's precondition (8L+18) eps <= xi does not hold: the guarantee is void."""


class UncoveredUnsafeWarning(UserWarning):
    """The safe policy violates a limit on sampled tasks outside the cover."""


class ModelWarning(UserWarning):
    """A converted model is valid but very likely not the model the user meant."""


class ArtifactError(SafeMetaError):
    """A saved artifact is missing, truncated, tampered with, or of another schema."""


class RunFolderError(SafeMetaError):
    """A run folder holds a file that is unreadable, incomplete, or from another configuration."""


class NpzReadError(RunFolderError):
    """:func:`read_npz` could not read a file as an ``.npz`` of this package.

    Attributes
    ----------
    path : Path
    reason : str
        The message without the path.
    damaged : bool
        True when the file itself cannot be opened or decompressed (truncated, corrupt
        compressed data, not a zip); False when it opens but its content is wrong (no
        metadata, invalid JSON, checksum mismatch, a required array missing).
    """

    def __init__(self, path, reason: str, *, damaged: bool):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.damaged = damaged


class ConfigMismatchError(RunFolderError):
    """The run folder holds results of a different configuration."""


class WorkerError(SafeMetaError):
    """A worker process died, or a job could not be handed to or returned by a worker."""
