"""Policies and episode-level mixtures: one vocabulary of checks.

A policy is a row-stochastic array ``pi[s, a]`` of shape (S, A). A :class:`Mixture`
``sum_i d_i pi_i`` is run by drawing the component ``i ~ d`` once at the start of an
episode and following ``pi_i`` for the whole episode (SPEC section 2), so its values
are exactly linear in ``d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import as_float_array, check_stochastic, readonly

__all__ = ["Mixture", "as_policy", "as_policies", "as_weights", "uniform_policy"]


def as_policy(pi, n_states: int, n_actions: int, name: str = "pi") -> np.ndarray:
    """Validate one policy; returns a read-only float64 C-contiguous (S, A) copy."""
    arr = as_float_array(name, pi, 2)
    if arr.shape != (n_states, n_actions):
        raise ValueError(f"{name} must have shape (S, A) = ({n_states}, {n_actions}); "
                         f"got {arr.shape}")
    check_stochastic(name, arr)
    return readonly(arr)


def as_policies(pis, n_states: int, n_actions: int, name: str = "policies") -> np.ndarray:
    """Validate a stack of policies; returns a read-only (n, S, A) copy (a single (S, A)
    policy becomes n = 1)."""
    arr = as_float_array(name, pis, (2, 3))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[1:] != (n_states, n_actions) or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (n, S, A) = (n >= 1, {n_states}, {n_actions}); got {arr.shape}"
        )
    check_stochastic(name, arr)
    return readonly(arr)


def as_weights(weights, n: int, name: str = "weights") -> np.ndarray:
    """Validate mixture weights: shape (n,), non-negative, summing to 1 (tolerance 1e-9)."""
    w = as_float_array(name, weights, 1)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape (n,) = ({n},), one weight per policy; "
                         f"got {w.shape}")
    check_stochastic(name, w)
    return readonly(w)


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """The uniformly random policy, shape (S, A)."""
    return np.full((n_states, n_actions), 1.0 / n_actions)


@dataclass(frozen=True, eq=False)
class Mixture:
    """Episode-level mixture of policies.

    Parameters
    ----------
    policies : array_like, shape (m, S, A)
        The components.
    weights : array_like, shape (m,)
        Probabilities of drawing each component at the start of an episode.

    Examples
    --------
    >>> import numpy as np
    >>> mix = Mixture(np.full((2, 3, 2), 0.5), [0.25, 0.75])
    >>> mix.n_components
    2
    """

    policies: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        pols = as_float_array("policies", self.policies, 3)
        if pols.shape[0] == 0 or pols.shape[1] == 0 or pols.shape[2] == 0:
            raise ValueError(f"policies must have shape (m >= 1, S >= 1, A >= 1); got {pols.shape}")
        check_stochastic("policies", pols)
        w = as_weights(self.weights, pols.shape[0])
        object.__setattr__(self, "policies", readonly(pols))
        object.__setattr__(self, "weights", w)

    @property
    def n_components(self) -> int:
        return self.policies.shape[0]

    def check_shape(self, n_states: int, n_actions: int) -> None:
        """Raise ValueError unless the components are (S, A) policies."""
        if self.policies.shape[1:] != (n_states, n_actions):
            raise ValueError(
                f"mixture policies must have shape (m, S, A) = (m, {n_states}, {n_actions}); "
                f"got {self.policies.shape}"
            )

    def step_policy(self) -> np.ndarray:
        """The per-step average ``sum_i d_i pi_i`` (NOT value-equivalent to the mixture)."""
        return np.einsum("i,isa->sa", self.weights, self.policies)
