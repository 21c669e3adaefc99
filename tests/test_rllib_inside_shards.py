"""RLlib's ``num_shards`` key at the constructor, as RLlib's own loop passes it (SPEC 3.1, 6.4).

``MultiAgentReplayBuffer(num_shards=2)`` / ``MultiAgentPrioritizedReplayBuffer(num_shards=2)``
stay those classes and put every policy's rows on 2 Ray shard actors, started at the
policy's first ``add``. Ray is started once for the module
(``ray.init(num_cpus=2, include_dashboard=False)``). Needs the ``rllib`` extra.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
import ray
from ray.rllib.policy.sample_batch import MultiAgentBatch as RLlibMultiAgentBatch
from ray.rllib.policy.sample_batch import SampleBatch as RLlibSampleBatch
from ray.rllib.utils.from_config import from_config as rllib_from_config
from ray.rllib.utils.replay_buffers import MultiAgentPrioritizedReplayBuffer as RLlibMultiAgentPrioritizedReplayBuffer
from ray.rllib.utils.replay_buffers.utils import validate_buffer_config

import ReplayTables.rllib as ours
from ReplayTables.distributed.rllib_buffers import ShardedTimestepBuffer
from ReplayTables.errors import CheckpointError, ConfigError, PriorityError, SchemaError


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def ledgers() -> set[str]:
    """The named ledger actor every started ShardedReplay has (one per policy here)."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return {n["name"] for n in names if n["name"].startswith("ReplayTables-shard-ledger-")}


def steps(start: int, n: int) -> dict[str, np.ndarray]:
    return {"obs": np.arange(start, start + n, dtype=np.float32), "actions": np.arange(start, start + n)}


def test_no_actor_starts_until_first_use() -> None:
    before = ledgers()
    config = {"replay_buffer_config": {"type": "ReplayTables.rllib.MultiAgentPrioritizedReplayBuffer",
                                       "capacity": 40, "num_shards": 2}}
    validate_buffer_config(config)     # RLlib builds (and drops) a buffer here
    assert config["replay_buffer_config"]["type"] is ours.MultiAgentPrioritizedReplayBuffer
    built = rllib_from_config(ours.MultiAgentPrioritizedReplayBuffer,
                              {k: v for k, v in config["replay_buffer_config"].items() if k != "type"})
    assert type(built) is ours.MultiAgentPrioritizedReplayBuffer and built.num_shards == 2 and built.sharded
    assert isinstance(built, RLlibMultiAgentPrioritizedReplayBuffer)
    assert len(built) == 0 and built.stats()["num_entries"] == 0 and built.sample(3).env_steps() == 0
    assert ledgers() == before          # building, len, stats and sampling nothing started no actor
    built.add(steps(0, 6))
    assert len(ledgers() - before) == 1 and built.replay_buffers["default_policy"].started
    built.close()


def test_num_shards_2_builds_every_policys_rows_on_2_shards() -> None:
    buffer = ours.MultiAgentPrioritizedReplayBuffer(capacity=40, num_shards=2, prioritized_replay_alpha=0.5, seed=3)
    for k in range(6):                 # batches land on one shard each, spread over both
        buffer.add(RLlibMultiAgentBatch({"a": RLlibSampleBatch(steps(10 * k, 3)),
                                         "b": RLlibSampleBatch(steps(100 + 10 * k, 2))}, 3))
    assert set(buffer.replay_buffers) == {"a", "b"} and len(buffer) == 30
    for pid, rows in (("a", 18), ("b", 12)):
        sharded = buffer.replay_buffers[pid]
        assert isinstance(sharded, ShardedTimestepBuffer) and len(sharded.buffer.actors) == 2
        assert sharded.buffer.max_restarts == -1             # Ray's own restarts bring a dead shard back
        added = [s["added"] for s in sharded.stats()["shards"]]
        assert sum(added) == rows and all(a > 0 for a in added)
    out = buffer.sample(16, policy_id="a")
    batch = out.policy_batches["a"]
    assert batch.count == 16 and set(batch) >= {"obs", "weights", "batch_indexes"}
    assert (batch["obs"] == batch["actions"]).all() and np.allclose(batch["weights"], 1.0)  # equal priorities
    applied = buffer.update_priorities({"a": (batch["batch_indexes"], np.linspace(0.5, 3.0, 16))})
    stats = buffer.stats()
    assert applied == 16 and stats["priority_updates"] == 16 and stats["policies"]["a"]["priority_updates"] == 16
    assert stats["policies"]["a"]["sampled_count"] == 16 and stats["policies"]["b"]["priority_updates"] == 0
    # a sharded buffer's state lives in its actors: get_state / set_state refuse by name, nothing changes
    with pytest.raises(CheckpointError, match=r"num_shards.*2.*ShardedReplay"):
        buffer.get_state()
    local = ours.MultiAgentPrioritizedReplayBuffer(capacity=40)
    local.add(steps(0, 2))
    with pytest.raises(CheckpointError, match="num_shards"):
        buffer.set_state(local.get_state())
    assert len(buffer) == 30 and set(buffer.replay_buffers) == {"a", "b"}
    buffer.close()


def test_uniform_multi_agent_buffer_shards_too() -> None:
    buffer = ours.MultiAgentReplayBuffer(capacity=20, num_shards=2, seed=0)
    buffer.add(steps(0, 5))
    buffer.add(steps(5, 5))
    out = buffer.sample(8).policy_batches["default_policy"]
    assert out.count == 8 and "weights" not in out and len(buffer) == 10
    buffer.close()


@pytest.mark.parametrize(("kwargs", "field", "value", "expected"), [
    ({"num_shards": 0}, "num_shards", "0", "an integer >= 1"),
    ({"num_shards": -2}, "num_shards", "-2", "an integer >= 1"),
    ({"num_shards": True}, "num_shards", "True", "an integer >= 1"),
    ({"num_shards": 2.0}, "num_shards", "2.0", "an integer >= 1"),
    ({"num_shards": "2"}, "num_shards", "'2'", "an integer >= 1"),
    ({"num_shards": 11, "capacity": 10}, "num_shards", "11", "at most capacity=10"),
    ({"num_shards": 2, "storage_unit": "sequences", "replay_sequence_length": 4}, "storage_unit", "sequences",
     "'timesteps' with num_shards=2"),
    ({"num_shards": 2, "replay_mode": "lockstep"}, "replay_mode", "lockstep", "'independent' with num_shards=2"),
    ({"num_shards": 2, "underlying_buffer_config": {"type": "ReplayTables.rllib.FifoReplayBuffer"}},
     "underlying_buffer_config.type", "FifoReplayBuffer", "ReplayBuffer with num_shards=2"),
])
def test_bad_num_shards_refused_by_name_and_nothing_started(kwargs: dict[str, object], field: str, value: str,
                                                          expected: str) -> None:
    before = ledgers()
    cls = ours.MultiAgentReplayBuffer
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    err = info.value
    assert err.field == field and value in str(err) and expected in err.expected, str(err)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ours.from_config({"type": "MultiAgentReplayBuffer", **kwargs})
    assert ledgers() == before


def test_an_existing_buffer_is_unchanged_by_a_refused_sharded_add() -> None:
    buffer = ours.MultiAgentPrioritizedReplayBuffer(capacity=20, num_shards=2, seed=0)
    buffer.add(steps(0, 4))
    good = RLlibSampleBatch(steps(4, 2))
    for bad, error, field in (
            (steps(4, 2), ConfigError, "add"),                                        # with unknown=1 below
            ({"obs": np.zeros(3, np.float32), "actions": np.arange(2)}, SchemaError, "same leading length"),
            ({"obs": np.zeros(2, np.float32)}, SchemaError, "first batch"),
            ({**steps(4, 2), "weights": np.array([1.0, np.nan])}, PriorityError, "weights"),
            # a multi-agent batch: every policy's part is checked before any is stored
            (RLlibMultiAgentBatch({"default_policy": good, "other": RLlibSampleBatch(
                {"obs": np.zeros(2, np.float32), "actions": np.arange(3)})}, 2), SchemaError, "same leading")):
        with pytest.raises(error, match=field):
            buffer.add(bad, **({"unknown": 1} if error is ConfigError else {}))
        assert len(buffer) == 4 and list(buffer.replay_buffers) == ["default_policy"]
        assert buffer.stats()["policies"]["default_policy"]["added_count"] == 4
    buffer.close()


def test_a_killed_shard_is_restarted_by_ray_and_the_rllib_buffer_carries_on() -> None:
    buffer = ours.MultiAgentPrioritizedReplayBuffer(capacity=40, num_shards=2, seed=0)
    for k in range(4):
        buffer.add(steps(5 * k, 5))
    sharded = buffer.replay_buffers["default_policy"]
    victim = sharded.buffer.actors[0]
    os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)           # the process dies; Ray restarts it
    start = time.monotonic()
    while True:                   # RLlib's calls go on meanwhile: sample, update, add
        batch = buffer.sample(4).policy_batches["default_policy"]
        assert batch.count == 4
        buffer.update_priorities({"default_policy": (batch["batch_indexes"], np.ones(4))})
        shard = buffer.stats()["policies"]["default_policy"]["shards"][0]
        if shard["alive"] and shard["restarts"] == 1:
            break
        assert time.monotonic() - start < 20, "Ray did not restart the killed shard"
    assert shard["size"] == 0                                        # restarted empty
    kept = buffer.stats()["policies"]["default_policy"]["shards"][1]["size"]
    buffer.add(steps(100, 5))                                       # the emptiest shard takes them: the new one
    assert len(buffer) == kept + 5 and buffer.stats()["policies"]["default_policy"]["shards"][0]["size"] == 5
    buffer.close()
