"""RLlib's ``FifoReplayBuffer``: a queue; ``sample`` returns the oldest items and removes them."""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.engine.table import check_count
from ReplayTables.errors import ConfigError
from ReplayTables.rllib.batches import SampleBatch
from ReplayTables.rllib.replay_buffer import ReplayBuffer
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["FifoReplayBuffer"]


class FifoReplayBuffer(ReplayBuffer):
    """First in, first out: each stored item is returned once, in order.

    Unlike RLlib's (an unbounded list), capacity is respected: when full, the
    oldest unread items are evicted. An empty buffer samples an empty batch
    (as RLlib's does), so it can stand in for "no replay".
    """

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "fragments",
                 **kwargs: Any) -> None:
        super().__init__(capacity, storage_unit, **kwargs)

    @atomic
    def sample(self, num_items: int = 1, **kwargs: Any) -> Any:
        """The ``num_items`` oldest items (removed from the buffer), with ``weights`` of one."""
        return super().sample(num_items, **kwargs)

    def _sample(self, num_items: int = 1, **kwargs: Any) -> Any:
        if kwargs:
            raise ConfigError("sample()", sorted(kwargs), "only num_items")
        ids, data = self._table.take_oldest(check_count("num_items", num_items), self._read)
        if ids.size == 0:
            return SampleBatch()
        batch: SampleBatch = data[0]
        batch["weights"] = np.ones(batch.count, dtype=np.float64)
        return self._finish(batch)

    def update_priorities(self, *args: Any, **kwargs: Any) -> int:
        """No-op (a queue has no priorities)."""
        return 0
