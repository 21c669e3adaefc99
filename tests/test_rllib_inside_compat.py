"""What RLlib's old-stack loop needs from our buffers (SPEC 3.1), checked with RLlib itself.

With Ray importable, samples are RLlib's own batch types and our classes pass RLlib's
``isinstance`` checks, so RLlib's own ``update_priorities_in_replay_buffer`` reaches ours;
every key of RLlib's ``replay_buffer_config`` is accepted with its meaning; RLlib's observable
attributes are read-only views. Without Ray (checked in a subprocess where ``import ray``
fails) our own dict batches come out. These tests need the ``rllib`` extra: they import Ray
and fail, never skip, without it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ray.rllib.policy.sample_batch import MultiAgentBatch as RLlibMultiAgentBatch
from ray.rllib.policy.sample_batch import SampleBatch as RLlibSampleBatch
from ray.rllib.utils import replay_buffers as rllib_buffers
from ray.rllib.utils.from_config import from_config as rllib_from_config
from ray.rllib.utils.replay_buffers.utils import sample_min_n_steps_from_buffer, update_priorities_in_replay_buffer

import ReplayTables.rllib as ours
from ReplayTables.errors import ConfigError, SchemaError
from ReplayTables.rllib import from_config

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLASSES = ("ReplayBuffer", "PrioritizedReplayBuffer", "ReservoirReplayBuffer", "FifoReplayBuffer",
           "MultiAgentReplayBuffer", "MultiAgentPrioritizedReplayBuffer", "MultiAgentMixInReplayBuffer")


def steps(start: int, n: int) -> dict[str, np.ndarray]:
    return {"obs": np.arange(start, start + n, dtype=np.float32), "actions": np.arange(n) % 2,
            "eps_id": np.zeros(n, np.int64), "t": np.arange(n), "terminateds": np.arange(n) == n - 1}


# ---------------------------------------------------------------- RLlib's types and isinstance
@pytest.mark.parametrize("name", CLASSES)
def test_our_classes_are_rllibs_by_isinstance(name: str) -> None:
    buffer = getattr(ours, name)(capacity=100)
    assert isinstance(buffer, getattr(rllib_buffers, name))
    assert isinstance(buffer, rllib_buffers.ReplayBuffer)
    # negative control: registration is what does it; a class of ours is not RLlib's sibling
    if name == "ReplayBuffer":
        assert not isinstance(buffer, rllib_buffers.MultiAgentPrioritizedReplayBuffer)


def test_samples_are_rllibs_batch_types() -> None:
    single = ours.PrioritizedReplayBuffer(capacity=100, seed=0)
    single.add(steps(0, 10))
    batch = single.sample(4)
    assert type(batch) is RLlibSampleBatch and batch.count == 4 and {"weights", "batch_indexes"} <= set(batch)
    multi = ours.MultiAgentPrioritizedReplayBuffer(capacity=100, seed=0)
    multi.add(RLlibMultiAgentBatch({"p0": RLlibSampleBatch(steps(0, 6)), "p1": RLlibSampleBatch(steps(10, 6))}, 6))
    out = multi.sample(3)
    assert type(out) is RLlibMultiAgentBatch
    assert out.env_steps() == 6 and out.agent_steps() == 6 and set(out.policy_batches) == {"p0", "p1"}
    assert all(type(b) is RLlibSampleBatch for b in out.policy_batches.values())


def test_rllibs_priority_update_reaches_our_buffer() -> None:
    """RLlib's own utility (it checks isinstance of its MultiAgentPrioritizedReplayBuffer)."""
    buffer = ours.MultiAgentPrioritizedReplayBuffer(capacity=100, seed=0)
    buffer.add(RLlibSampleBatch(steps(0, 20)))
    train_batch = buffer.sample(8)
    td = np.linspace(0.1, 2.0, 8)
    update_priorities_in_replay_buffer(buffer, {}, train_batch, {"default_policy": {"td_error": td,
                                                                                      "learner_stats": {}}})
    stats = buffer.stats()
    assert stats["priority_updates"] == 8 and stats["policies"]["default_policy"]["priority_updates"] == 8
    ids = train_batch.policy_batches["default_policy"]["batch_indexes"]
    got = buffer.replay_buffers["default_policy"].priorities(ids)
    last = {int(i): t for i, t in zip(ids, td)}              # a repeated id keeps its last td error
    expected = [(abs(last[int(i)]) + 1e-6) ** 0.6 for i in ids]
    assert np.allclose(got, expected)


def test_empty_multi_agent_sample_is_an_empty_batch_rllib_accepts() -> None:
    for buffer in (ours.MultiAgentReplayBuffer(capacity=10), ours.MultiAgentPrioritizedReplayBuffer(capacity=10)):
        batch = buffer.sample(1)
        assert type(batch) is RLlibMultiAgentBatch and batch.env_steps() == 0 and not batch.policy_batches
        assert sample_min_n_steps_from_buffer(buffer, 32, count_by_agent_steps=False).env_steps() == 0


# ---------------------------------------------------------------- RLlib's config keys
RLLIB_KEYS = {"num_shards": 1, "replay_sequence_override": True, "worker_side_prioritization": False,
              "metrics_num_episodes_for_smoothing": 100, "learning_starts": 0,
              "num_steps_sampled_before_learning_starts": 0, "replay_buffer_shards_colocated_with_driver": True,
              "no_local_replay_buffer": False, "prioritized_replay_alpha": 0.6, "prioritized_replay_beta": 0.4,
              "prioritized_replay_eps": 1e-6, "replay_sequence_length": 1, "replay_burn_in": 0,
              "replay_zero_init_states": True, "alpha": 0.6, "beta": 0.4}


@pytest.mark.parametrize("name", CLASSES)
def test_every_class_takes_rllibs_keys(name: str) -> None:
    config = {"type": f"ReplayTables.rllib.{name}", "capacity": 50, **RLLIB_KEYS}
    if name.startswith("MultiAgent"):
        config["underlying_replay_buffer_config"] = {}
    built = from_config(config)
    assert type(built) is getattr(ours, name) and built.capacity == 50
    # RLlib's own builder passes every key as a keyword (type popped): the same buffer
    by_rllib = rllib_from_config(getattr(ours, name), {k: v for k, v in config.items() if k != "type"})
    assert type(by_rllib) is getattr(ours, name)


def test_rllib_keys_keep_their_meaning() -> None:
    assert ours.ReplayBuffer(capacity_ts=30).capacity == 30                    # older name of capacity
    per = ours.MultiAgentPrioritizedReplayBuffer(alpha=0.3, beta=0.7)            # DQN's keys: aliases
    assert (per.prioritized_replay_alpha, per.prioritized_replay_beta) == (0.3, 0.7)
    assert ours.PrioritizedReplayBuffer(beta=0.9).beta == 0.9                   # default beta of sample()
    for bad, field in (({"num_shards": 2}, "num_shards"), ({"capacity": 5, "capacity_ts": 6}, "capacity_ts"),
                       ({"type": "PrioritizedReplayBuffer"}, "type"), ({"worker_side_prioritization": True},
                                                                             "worker_side_prioritization"),
                       ({"metrics_num_episodes_for_smoothing": 0}, "metrics_num_episodes_for_smoothing"),
                       ({"capacty": 5}, "capacty")):
        with pytest.raises(ConfigError, match=field):
            ours.ReplayBuffer(**bad)
    # num_shards > 1: the multi-agent classes put their policies' rows on Ray shards, started at the
    # first add, so building one (here, with no Ray running) starts nothing; the other classes refuse it
    sharded = from_config({"type": "MultiAgentPrioritizedReplayBuffer", "num_shards": 4})
    assert type(sharded) is ours.MultiAgentPrioritizedReplayBuffer and sharded.num_shards == 4
    assert sharded.replay_buffers == {} and len(sharded) == 0
    with pytest.raises(ConfigError, match=r"ray.*not initialized.*ray\.init"):
        sharded.add(steps(0, 2))
    assert sharded.replay_buffers == {} and len(sharded) == 0            # the refused add stored nothing
    for name in ("ReplayBuffer", "PrioritizedReplayBuffer", "MultiAgentMixInReplayBuffer"):
        with pytest.raises(ConfigError, match=f"num_shards.*4.*1 for {name}"):
            getattr(ours, name)(num_shards=4)
    with pytest.raises(ConfigError, match="alpha"):
        ours.MultiAgentPrioritizedReplayBuffer(prioritized_replay_alpha=0.3, alpha=0.5)


def test_replay_sequence_override_false_ignores_seq_lens() -> None:
    batch = {**steps(0, 6), "seq_lens": np.array([1, 5])}
    given = ours.MultiAgentReplayBuffer(capacity=50, storage_unit="sequences", replay_sequence_length=5)
    given.add(batch)
    chunked = ours.MultiAgentReplayBuffer(capacity=50, storage_unit="sequences", replay_sequence_length=3,
                                          replay_sequence_override=False)
    chunked.add(batch)                                  # seq_lens [1, 5] ignored: chunks of 3 steps
    assert len(given) == 2 and len(chunked) == 2
    assert sorted(chunked.replay_buffers["default_policy"].get(chunked.replay_buffers["default_policy"]
                                                                .item_ids())["seq_lens"].tolist()) == [3, 3]


# ---------------------------------------------------------------- views, MultiAgentBatch items, state
def test_views_are_read_only_and_follow_rllibs_counts() -> None:
    buffer = ours.ReplayBuffer(capacity=4, storage_unit="fragments", seed=0)
    buffer.add(steps(0, 3))
    buffer.add(steps(3, 2))                              # 5 >= 4: RLlib's ring wraps here
    assert (buffer._num_timesteps_added, buffer._num_timesteps_added_wrap, buffer._next_idx) == (5, 0, 0)
    assert buffer._eviction_started and len(buffer) == 1 and len(buffer._storage) == 1   # a true ring holds 2 rows
    assert buffer._storage[0]["obs"].tolist() == [3.0, 4.0] and buffer._hit_count.tolist() == [0]
    buffer.sample(3)
    assert buffer._num_timesteps_sampled == 6 and buffer._hit_count.tolist() == [3]
    for name in ("_num_timesteps_added", "_storage", "_next_idx", "_hit_count", "_eviction_started"):
        with pytest.raises(AttributeError):
            setattr(buffer, name, 0)


def test_multi_agent_batch_is_one_item_of_a_single_agent_buffer() -> None:
    buffer = ours.PrioritizedReplayBuffer(capacity=40, storage_unit="fragments", seed=0)
    first = RLlibMultiAgentBatch({"a": RLlibSampleBatch(steps(0, 2)), "b": RLlibSampleBatch(steps(10, 3))}, 3)
    buffer.add(first)
    buffer.add(RLlibMultiAgentBatch({"c": RLlibSampleBatch(steps(20, 1))}, 1))   # another set of policies
    assert len(buffer) == 2 and buffer._num_timesteps_added == 4
    item = buffer._storage[0]
    assert type(item) is RLlibMultiAgentBatch and item.env_steps() == 3
    assert item.policy_batches["a"]["obs"].tolist() == [0, 1]
    assert item.policy_batches["b"]["obs"].tolist() == [10, 11, 12]
    out = buffer.sample(50)
    pbs = out.policy_batches
    drawn_first = pbs["a"].count // 2                          # items drawn: the first (2 + 3 rows) or the second
    assert pbs["b"].count == 3 * drawn_first and pbs["c"].count == 50 - drawn_first
    assert out.env_steps() == 3 * drawn_first + (50 - drawn_first) and 0 < drawn_first < 50
    assert all("weights" in b and "batch_indexes" in b for b in pbs.values())
    # a refused multi-agent batch leaves the buffer as it was
    before = (len(buffer), buffer._num_timesteps_added, buffer.stats()["added_items"])
    for bad in (RLlibMultiAgentBatch({"a": RLlibSampleBatch(steps(0, 2)),
                                      "b": RLlibSampleBatch({"other": np.zeros(2)})}, 2),):
        with pytest.raises(SchemaError, match="policy_batches"):
            buffer.add(bad)
    timesteps = ours.ReplayBuffer(capacity=40)
    with pytest.raises(SchemaError, match="fragments"):
        timesteps.add(first)
    assert len(timesteps) == 0 and (len(buffer), buffer._num_timesteps_added, buffer.stats()["added_items"]) == before


def test_state_moves_to_a_buffer_of_another_storage_unit_only() -> None:
    fragments = ours.PrioritizedReplayBuffer(capacity=20, storage_unit="fragments", alpha=0.5)
    fragments.add(steps(0, 4))
    timesteps = ours.PrioritizedReplayBuffer(capacity=20, alpha=0.5)
    timesteps.set_state(fragments.get_state())
    assert len(timesteps) == 1 and timesteps.storage_unit.value == "timesteps"
    assert timesteps._storage == fragments._storage and timesteps.stats()["added_count"] == 4
    other = ours.PrioritizedReplayBuffer(capacity=30, alpha=0.5)
    with pytest.raises(Exception, match="init"):
        other.set_state(fragments.get_state())
    assert len(other) == 0


# ---------------------------------------------------------------- without Ray
def run_without_ray(code: str, env: dict[str, str] | None = None) -> str:
    script = textwrap.dedent(code)
    full_env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full_env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_ray_our_own_batches_come_out() -> None:
    out = run_without_ray("""
        import sys
        sys.modules["ray"] = None          # import ray fails, as without the extra
        import numpy as np
        from ReplayTables.rllib import MultiAgentPrioritizedReplayBuffer, SampleBatch, MultiAgentBatch
        from ReplayTables.rllib.ray_interop import register_with_rllib
        b = MultiAgentPrioritizedReplayBuffer(capacity=10)
        empty = b.sample(1)
        b.add({"obs": np.arange(4.0)})
        s = b.sample(2)
        print(type(s) is MultiAgentBatch, type(s["default_policy"]) is SampleBatch, s.count, empty.count,
              register_with_rllib())
    """)
    assert out == "True True 2 0 False"
    # negative control: the same script with Ray importable gives RLlib's types
    out = run_without_ray("""
        import numpy as np
        from ReplayTables.rllib import ReplayBuffer, SampleBatch
        b = ReplayBuffer(capacity=10)
        b.add({"obs": np.arange(4.0)})
        print(type(b.sample(2)) is SampleBatch)
    """)
    assert out == "False"
    out = run_without_ray("""
        import numpy as np
        from ReplayTables.rllib import ReplayBuffer, SampleBatch
        b = ReplayBuffer(capacity=10)
        b.add({"obs": np.arange(4.0)})
        print(type(b.sample(2)) is SampleBatch)
    """, {"REPLAYTABLES_RLLIB_BATCHES": "ours"})
    assert out == "True"
