"""The step-stream front end's sequence settings (its batch types are in :mod:`ReplayTables.batch`).

Kept apart from :mod:`ReplayTables.trajectory` (the buffer itself) so the
settings can be read on their own; re-exported there.
"""
from __future__ import annotations

from dataclasses import dataclass

from ReplayTables.errors import ConfigError

__all__ = ["SequenceConfig"]


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
