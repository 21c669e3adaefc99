"""What the step-stream front end takes and hands back: the sequence settings and the two batch types.

Kept apart from :mod:`ReplayTables.trajectory` (the buffer itself) so the data
types a learner touches can be read on their own; both are re-exported there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ReplayTables.errors import ConfigError

__all__ = ["SequenceBatch", "SequenceConfig", "TransitionBatch"]


@dataclass(frozen=True)
class SequenceConfig:
    """Fixed-length sequence sampling (for recurrent agents).

    Attributes:
        length: ``T``, the steps a learner trains on.
        burn_in: extra leading steps of the same episode (to warm up a recurrent state).
        pad: ``False``: every window lies inside one episode. ``True``: windows
            may start at any step; burn-in before the episode's first step and
            steps after its end are zeros with ``mask`` False.
    """

    length: int
    burn_in: int = 0
    pad: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise ConfigError("length", self.length, "a positive integer")
        if isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ConfigError("burn_in", self.burn_in, "a non-negative integer")
        if not isinstance(self.pad, bool):
            raise ConfigError("pad", self.pad, "True or False")


@dataclass
class TransitionBatch:
    """Sampled transitions. The learner's target is ``returns + discount * V(next_obs)``.

    ``obs`` / ``next_obs`` are ``[B, *obs_shape]``, or ``[B, k, *obs_shape]`` with
    ``frame_stack=k`` (oldest frame first). ``next_obs`` is the bootstrap
    observation ``steps`` steps ahead; ``discount`` is ``gamma ** steps``, or 0
    when the window ended by termination; ``terminated`` / ``truncated`` say how
    the window ended (both False when it ran ``n_step`` steps). ``reward`` is the
    first step's reward; ``returns`` the n-step discounted return (equal to
    ``reward`` for ``n_step=1``).
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    returns: np.ndarray
    discount: np.ndarray
    steps: np.ndarray
    extras: dict[str, np.ndarray]
    ids: np.ndarray
    weights: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class SequenceBatch:
    """Sampled windows, each ``[B, burn_in + T, ...]``; ``mask`` is False on padding steps."""

    obs: np.ndarray
    next_obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    extras: dict[str, np.ndarray]
    mask: np.ndarray
    burn_in: int

    def __len__(self) -> int:
        return int(self.mask.shape[0])
