"""Restates ray-project/ray ``rllib/utils/replay_buffers/tests/test_multi_agent_replay_buffer.py``
(Ray 2.60) against ``ReplayTables.rllib.MultiAgentReplayBuffer``; RLlib's assertions, our buffers
(the underlying ``ReplayBuffer`` / ``PrioritizedReplayBuffer`` types are ours too).
"""
from __future__ import annotations

import numpy as np
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch, concat_samples

from ReplayTables.rllib import MultiAgentReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer


def get_batch_id(batch, policy_id=DEFAULT_POLICY_ID):
    return batch.policy_batches[policy_id]["batch_id"][0]


class Data:
    """RLlib's test keeps running ``batch_id`` / ``eps_id`` counters on the test case."""

    def __init__(self) -> None:
        self.batch_id = 0
        self.eps_id = 0

    def add_sample_batches(self, buffer, batch_size, num_batches=5, **kwargs) -> None:
        self.eps_id = 0

        def two_steps():
            self.eps_id += 1
            return SampleBatch({
                SampleBatch.T: [0, 1],
                SampleBatch.ACTIONS: 2 * [np.random.choice([0, 1])],
                SampleBatch.REWARDS: 2 * [np.random.rand()],
                SampleBatch.OBS: 2 * [np.random.random((4,))],
                SampleBatch.NEXT_OBS: 2 * [np.random.random((4,))],
                SampleBatch.TERMINATEDS: 2 * [np.random.choice([False, True])],
                SampleBatch.TRUNCATEDS: 2 * [np.random.choice([False, True])],
                SampleBatch.EPS_ID: 2 * [self.eps_id],
                SampleBatch.AGENT_INDEX: 2 * [0],
                "batch_id": 2 * [self.batch_id],
            })

        for _ in range(num_batches):
            data = [two_steps() for _ in range(batch_size)]
            self.batch_id += 1
            buffer.add(concat_samples(data), **kwargs)

    def add_multi_agent_batches(self, buffer, num_policies, num_batches=5, seq_lens=False, **kwargs) -> None:
        def policy_batch(policy_id):
            batch = SampleBatch({
                SampleBatch.T: [0, 1],
                SampleBatch.ACTIONS: 2 * [np.random.choice([0, 1])],
                SampleBatch.REWARDS: 2 * [np.random.rand()],
                SampleBatch.OBS: 2 * [np.random.random((4,))],
                SampleBatch.NEXT_OBS: 2 * [np.random.random((4,))],
                SampleBatch.TERMINATEDS: [False, False],
                SampleBatch.TRUNCATEDS: [False, True],
                SampleBatch.EPS_ID: 2 * [self.batch_id],
                SampleBatch.AGENT_INDEX: 2 * [0],
                SampleBatch.SEQ_LENS: [2],
                "batch_id": 2 * [self.batch_id],
                "policy_id": 2 * [policy_id],
            })
            if not seq_lens:
                del batch[SampleBatch.SEQ_LENS]
            self.batch_id += 1
            return batch

        for _ in range(num_batches):
            policy_batches = {idx: policy_batch(idx) for idx in range(num_policies)}
            buffer.add(MultiAgentBatch(policy_batches, 1), **kwargs)


def test_policy_id_of_multi_agent_batches_independent() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=10, replay_mode="independent", num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=1, num_batches=1)
    mabatch = buffer.sample(1)
    assert next(iter(mabatch.policy_batches.keys())) == 0


def test_lockstep_mode() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=30, replay_mode="lockstep", num_shards=1, seed=0)
    data.add_sample_batches(buffer, batch_size=5, num_batches=1)
    assert get_batch_id(buffer.sample(1)) == 0
    data.add_sample_batches(buffer, batch_size=5, num_batches=2)
    counts = dict.fromkeys(range(data.batch_id), 0)
    for _ in range(200):
        counts[get_batch_id(buffer.sample(1))] += 1
    assert np.allclose(np.array(list(counts.values())) / 200, len(counts) * [1 / 3], atol=0.1)


def test_independent_mode_sequences_storage_unit() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=15, replay_mode="independent", storage_unit="sequences",
                                    replay_sequence_length=2, num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=2, num_batches=1, seq_lens=True)
    assert get_batch_id(buffer.sample(1), 0) == 0
    data.add_multi_agent_batches(buffer, num_policies=2, num_batches=2, seq_lens=True)
    # each batch that went into a multi-agent batch 1/6th of the time
    counts = dict.fromkeys(range(data.batch_id), 0)
    for _ in range(200):
        sample = buffer.sample(1)
        counts[get_batch_id(sample, np.random.choice([0, 1]))] += 1
        assert len(sample.policy_batches[np.random.choice([0, 1])]) == 2
    assert np.allclose(np.array(list(counts.values())) / 200, len(counts) * [1 / 6], atol=0.1)


def test_independent_mode_multiple_policies() -> None:
    data = Data()
    num_policies = 2
    buffer = MultiAgentReplayBuffer(capacity_ts=15, replay_mode="independent",
                                    num_steps_sampled_before_learning_starts=0, num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=num_policies, num_batches=3)
    for _id in range(num_policies):
        for __id in buffer.sample(4, policy_id=_id).policy_batches[_id]["policy_id"]:
            assert __id == _id
    # without a policy id: the same number of items from each policy
    counts = dict.fromkeys(range(num_policies), 0)
    for _ in range(200):
        num_items = np.random.randint(0, 5)
        for _id, batch in buffer.sample(num_items=num_items).policy_batches.items():
            counts[_id] += 1
            assert len(batch) == num_items
    assert np.allclose(np.array(list(counts.values())), len(counts) * [200], atol=0.1)


def test_lockstep_with_underlying_replay_buffer() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=200, replay_mode="lockstep", num_shards=1,
                                    underlying_buffer_config={"type": ReplayBuffer}, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=1, num_batches=20)
    sample = buffer.sample(2)
    assert len(sample) == 2
    assert len(sample.policy_batches) == 1
    data.add_multi_agent_batches(buffer, num_policies=2, num_batches=20)
    sample = buffer.sample(100)
    assert len(sample) == 100
    assert len(sample.policy_batches) == 2


def test_independent_with_underlying_prioritized_replay_buffer() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=15, replay_mode="independent", num_shards=1, seed=0,
                                    underlying_buffer_config={"type": PrioritizedReplayBuffer, "alpha": 0.6,
                                                              "beta": 0.4})
    data.add_multi_agent_batches(buffer, num_policies=2, num_batches=1)
    sample = buffer.sample(2)
    assert len(sample) == 4
    assert len(sample.policy_batches) == 2


def test_set_get_state() -> None:
    data = Data()
    buffer = MultiAgentReplayBuffer(capacity_ts=15, replay_mode="independent", num_shards=1)
    data.add_multi_agent_batches(buffer, num_policies=2, num_batches=1)
    state = buffer.get_state()
    another_buffer = MultiAgentReplayBuffer(capacity_ts=15, replay_mode="independent",
                                            num_steps_sampled_before_learning_starts=0, num_shards=1)
    another_buffer.set_state(state)
    for _id, _buffer in buffer.replay_buffers.items():
        assert _buffer.get_state() == another_buffer.replay_buffers[_id].get_state()
    assert buffer._num_added == another_buffer._num_added
