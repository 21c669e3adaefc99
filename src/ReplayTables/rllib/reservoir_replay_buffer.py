"""RLlib's ``ReservoirReplayBuffer``: Vitter's algorithm R over items.

Once full, every item ever offered is stored with the same probability
``capacity_items / offered``, however long ago it came. Items live in
fixed regions of ``max_item_length`` timesteps (1 for timesteps, the chunk
length for sequences with ``replay_sequence_length``, else the first item's
length), so a full buffer of one-timestep items holds exactly ``capacity``.
"""
from __future__ import annotations

from typing import Any

from ReplayTables.engine.table import check_capacity
from ReplayTables.errors import ConfigError
from ReplayTables.rllib.replay_buffer import ReplayBuffer
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["ReservoirReplayBuffer"]


class ReservoirReplayBuffer(ReplayBuffer):
    """Uniform sampling from a reservoir sample of every item ever added.

    Args:
        max_item_length: the longest item (in timesteps) the reservoir takes;
            ``capacity // max_item_length`` items fit.
        Other arguments as for :class:`ReplayBuffer`; ``replay_burn_in`` must be 0
        (a reservoir does not keep the steps before a sequence).
    """

    _placement = "reservoir"

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps",
                 max_item_length: int | None = None, **kwargs: Any) -> None:
        if max_item_length is not None:
            check_capacity("max_item_length", max_item_length)
        self.max_item_length = max_item_length
        if kwargs.get("replay_burn_in", 0):
            raise ConfigError("replay_burn_in", kwargs["replay_burn_in"],
                              "0 for a reservoir buffer (burn-in reads the steps written just before a sequence, "
                              "which a reservoir does not keep)")
        super().__init__(capacity, storage_unit, **kwargs)

    def _region(self) -> int | None:
        if self.max_item_length is not None:
            if self.max_item_length > self.capacity:
                raise ConfigError("max_item_length", self.max_item_length, f"at most capacity={self.capacity}")
            return self.max_item_length
        if self.storage_unit is StorageUnit.TIMESTEPS:
            return 1
        if self.replay_sequence_length is not None:
            return self.replay_sequence_length - self.replay_burn_in
        return None

    def _init_args(self) -> dict[str, Any]:
        return {**super()._init_args(), "max_item_length": self.max_item_length}
