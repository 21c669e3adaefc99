"""RLlib's ``MultiAgentMixInReplayBuffer``: new items mixed with replayed ones.

Every added item is returned by a later ``sample`` once (close to on-policy)
while also being stored for replay. ``replay_ratio`` is the share of replayed
items in a sample, on average: stochastic rounding decides whether a fraction
rounds up or down. When fewer new items exist than the ratio wants, fewer old
ones are mixed in too, so the proportion holds (as RLlib does).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.engine.rng_state import check_rng_state
from ReplayTables.engine.rng_state import rng_state as _rng_state
from ReplayTables.engine.state_checks import MAX_INT, int_array, integer
from ReplayTables.engine.table import check_count
from ReplayTables.errors import CheckpointError
from ReplayTables.rllib.batches import SampleBatch
from ReplayTables.rllib.multi_agent_prioritized_replay_buffer import MultiAgentPrioritizedReplayBuffer
from ReplayTables.rllib.multi_agent_replay_buffer import _sample_of
from ReplayTables.rllib.prioritized_replay_buffer import PrioritizedReplayBuffer, check_number
from ReplayTables.rllib.ray_interop import to_rllib
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["MultiAgentMixInReplayBuffer"]


class MultiAgentMixInReplayBuffer(MultiAgentPrioritizedReplayBuffer):
    """Mix new and replayed items at ``replay_ratio`` = old / (old + new) on average.

    ``replay_ratio=0`` returns only new items, ``1`` only replayed ones. New
    items evicted before they were returned are dropped (counted in ``stats()``).
    Sampling a buffer with nothing stored returns an empty batch; a policy with nothing ready
    is left out of the sample, as in RLlib. ``num_shards`` must be 1: the mix-in
    keeps its new items beside the underlying buffers, which a shard does not.
    """

    _shardable = False

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps",
                 replay_mode: str = "independent", replay_sequence_length: int = 1, replay_burn_in: int = 0,
                 replay_zero_init_states: bool = True, underlying_buffer_config: Mapping[str, Any] | None = None,
                 prioritized_replay_alpha: float = 0.6, prioritized_replay_beta: float = 0.4,
                 prioritized_replay_eps: float = 1e-6, replay_ratio: float = 0.66, seed: int | None = None,
                 **rllib_config: Any) -> None:
        self.replay_ratio = check_number("replay_ratio", replay_ratio, 0.0, 1.0)
        super().__init__(capacity, storage_unit, replay_mode, replay_sequence_length, replay_burn_in,
                         replay_zero_init_states, underlying_buffer_config, prioritized_replay_alpha,
                         prioritized_replay_beta, prioritized_replay_eps, seed, **rllib_config)
        self._rng = np.random.default_rng(seed)
        self._new: dict[Any, np.ndarray] = {}
        self._new_dropped = 0

    def _init_args(self) -> dict[str, Any]:
        return {**super()._init_args(), "replay_ratio": self.replay_ratio}

    @atomic
    def add(self, batch: Any, **kwargs: Any) -> dict[Any, np.ndarray]:
        out = super().add(batch, **kwargs)
        for key, ids in out.items():
            kept = ids[ids >= 0]
            self._new[key] = np.concatenate([self._new.get(key, np.empty(0, np.int64)), kept])
        return out

    def _round(self, value: float) -> int:
        """An integer whose mean is ``value`` (stochastic rounding)."""
        low = math.floor(value)
        return low + int(self._rng.random() < value - low)

    def _fresh(self, key: Any) -> np.ndarray:
        """New ids of ``key`` still stored (evicted ones dropped and counted)."""
        ids = self._new.get(key, np.empty(0, np.int64))
        if ids.size:
            buf = self.replay_buffers[key]
            with buf._lock:
                _, live = buf._table.directory.lookup(ids)
            if not live.all():
                self._new_dropped += int((~live).sum())
                ids = ids[live]
        self._new[key] = ids
        return ids

    def _mix(self, key: Any, num_items: int, args: dict[str, Any]) -> Any:
        buf = self.replay_buffers[key]
        fresh = self._fresh(key)
        ratio = self.replay_ratio
        if (len(buf) == 0 and ratio > 0.0) or (fresh.size == 0 and ratio < 1.0):
            return None
        if ratio == 1.0:
            return _sample_of(buf, num_items, args)
        max_new = self._round(num_items * (1.0 - ratio))
        new, self._new[key] = fresh[:max_new], fresh[max_new:]
        parts = [self._new_part(buf, new)] if new.size else []
        if ratio > 0.0:
            if new.size == max_new:
                # as many new items as wanted: the rest is replay, so old / total averages replay_ratio
                # (RLlib tests isclose(num_new, num_items * (1 - ratio)), which misses non-integer
                # targets and then biases the mix towards new items)
                num_old = num_items - max_new
            else:
                num_old = min(num_items - max_new, self._round(new.size * ratio / (1.0 - ratio)))
            if num_old > 0:
                parts.append(_sample_of(buf, num_old, args))
        return _concat(parts) if parts else None

    @staticmethod
    def _new_part(buf: Any, ids: np.ndarray) -> SampleBatch:
        batch = buf.get(ids, with_indexes=isinstance(buf, PrioritizedReplayBuffer))
        if isinstance(buf, PrioritizedReplayBuffer):
            batch["weights"] = np.ones(batch["batch_indexes"].shape[0], dtype=np.float64)
        result: SampleBatch = batch
        return result

    @atomic
    def sample(self, num_items: int, policy_id: Any = None, **kwargs: Any) -> Any:
        """New items plus replayed ones per policy, ``replay_ratio`` replayed on average.

        An empty ``MultiAgentBatch`` when nothing is stored or ready, as in RLlib.
        """
        num_items = check_count("num_items", num_items)
        keys = self._policies(policy_id)
        args = self._call_args(kwargs)
        samples = {}
        for key in keys:
            part = self._mix(key, num_items, args)
            if part is not None:
                samples[key] = part
        return to_rllib(self._as_multi_agent(samples))

    @atomic
    def stats(self, debug: bool = False) -> dict[str, Any]:
        out = super().stats(debug)
        out["new_items_pending"] = {str(k): int(v.size) for k, v in self._new.items()}
        out["new_items_dropped"] = self._new_dropped
        return out

    def _extra_state(self) -> dict[str, Any]:
        keys = list(self.replay_buffers)
        return {"new": [[keys.index(k), v] for k, v in self._new.items() if k in keys],
                "new_dropped": self._new_dropped, "rng": _rng_state(self._rng)}

    def _check_extra_state(self, state: dict[str, Any], policies: list[Any] | None = None) -> dict[str, Any]:
        """The pending new ids per policy (by index into ``policies``), the dropped count and the
        mixing generator's state, checked."""
        keys = list(self.replay_buffers) if policies is None else policies
        entries = state.get("new", [])
        if not isinstance(entries, list):
            raise CheckpointError("state.new", entries, "a list of [policy index, new item ids] pairs")
        new: dict[Any, np.ndarray] = {}
        for j, entry in enumerate(entries):
            if not isinstance(entry, list) or len(entry) != 2:
                raise CheckpointError(f"state.new[{j}]", entry, "a pair [policy index, new item ids]")
            index = integer(f"state.new[{j}][0]", entry[0], 0, len(keys) - 1)
            if keys[index] in new:
                raise CheckpointError(f"state.new[{j}][0]", index, "a policy index no other pair has")
            new[keys[index]] = int_array(f"state.new[{j}][1]", entry[1], lo=0, hi=MAX_INT, ndim=1)
        dropped = integer("state.new_dropped", state.get("new_dropped", 0), 0, MAX_INT)
        rng = check_rng_state(state["rng"], "state.rng", self._rng) if "rng" in state else None
        return {"new": new, "new_dropped": dropped, "rng": rng}

    def _load_extra_state(self, checked: dict[str, Any]) -> None:
        self._new = dict(checked["new"])
        self._new_dropped = checked["new_dropped"]
        if checked["rng"] is not None:
            self._rng.bit_generator.state = checked["rng"]


def _concat(parts: list[SampleBatch]) -> SampleBatch:
    if len(parts) == 1:
        return parts[0]
    keys = parts[0].keys()
    return SampleBatch({k: (_concat([SampleBatch(p[k]) for p in parts]) if isinstance(parts[0][k], dict)
                            else np.concatenate([p[k] for p in parts])) for k in keys})
