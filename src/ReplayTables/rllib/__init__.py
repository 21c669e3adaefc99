"""Front end B: RLlib's replay-buffer API on the ReplayTables engine, without Ray.

    from ReplayTables.rllib import ReplayBuffer, StorageUnit, from_config
    buffer = ReplayBuffer(capacity=10_000, storage_unit=StorageUnit.TIMESTEPS)
    buffer.add(sample_batch)          # any mapping of column -> equal-length arrays
    batch = buffer.sample(32)         # a SampleBatch (dict of numpy arrays)

Storage is columnar (each timestep once, in a true ring of ``capacity``
timesteps); items are ranges of timesteps with ids that detect staleness; items
are drawn by the engine's uniform and sum-tree samplers. See ``docs/rllib.md``.
"""
from __future__ import annotations

from typing import Any

from ReplayTables.rllib.batches import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from ReplayTables.rllib.config import from_config
from ReplayTables.rllib.fifo_replay_buffer import FifoReplayBuffer
from ReplayTables.rllib.multi_agent_mixin_replay_buffer import MultiAgentMixInReplayBuffer
from ReplayTables.rllib.multi_agent_prioritized_replay_buffer import MultiAgentPrioritizedReplayBuffer
from ReplayTables.rllib.multi_agent_replay_buffer import ALL_POLICIES, MultiAgentReplayBuffer
from ReplayTables.rllib.prioritized_replay_buffer import PrioritizedReplayBuffer
from ReplayTables.rllib.replay_buffer import ReplayBuffer
from ReplayTables.rllib.reservoir_replay_buffer import ReservoirReplayBuffer
from ReplayTables.rllib.storage_unit import StorageUnit

#: New-stack episode buffers, loaded on first use: with Ray installed their modules import RLlib's base
#: classes (a cost ``import ReplayTables.rllib`` does not pay); without it they work on dict chunks.
EPISODE_BUFFER_MODULES = {
    "EpisodeReplayBuffer": "ReplayTables.rllib.episode_replay_buffer",
    "PrioritizedEpisodeReplayBuffer": "ReplayTables.rllib.prioritized_episode_buffer",
    "MultiAgentEpisodeReplayBuffer": "ReplayTables.rllib.multi_agent_episode_buffer",
    "MultiAgentPrioritizedEpisodeReplayBuffer": "ReplayTables.rllib.multi_agent_episode_buffer",
}


def __getattr__(name: str) -> Any:
    module = EPISODE_BUFFER_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'ReplayTables.rllib' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


BUFFER_CLASSES = ("ReplayBuffer", "PrioritizedReplayBuffer", "ReservoirReplayBuffer", "FifoReplayBuffer",
                  "MultiAgentReplayBuffer", "MultiAgentPrioritizedReplayBuffer", "MultiAgentMixInReplayBuffer")

__all__ = [
    "ALL_POLICIES",
    "BUFFER_CLASSES",
    "DEFAULT_POLICY_ID",
    "EPISODE_BUFFER_MODULES",
    "EpisodeReplayBuffer",
    "FifoReplayBuffer",
    "MultiAgentBatch",
    "MultiAgentEpisodeReplayBuffer",
    "MultiAgentMixInReplayBuffer",
    "MultiAgentPrioritizedEpisodeReplayBuffer",
    "MultiAgentPrioritizedReplayBuffer",
    "MultiAgentReplayBuffer",
    "PrioritizedEpisodeReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "ReservoirReplayBuffer",
    "SampleBatch",
    "StorageUnit",
    "from_config",
]
