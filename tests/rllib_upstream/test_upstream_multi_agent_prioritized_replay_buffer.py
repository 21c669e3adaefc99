"""Restates ray-project/ray
``rllib/utils/replay_buffers/tests/test_multi_agent_prioritized_replay_buffer.py`` (Ray 2.60)
against ``ReplayTables.rllib.MultiAgentPrioritizedReplayBuffer``; RLlib's assertions, our buffer.

Changed besides the import: the stored upstream file sets ``SampleBatch.DONES``, which
RLlib 2.60's ``SampleBatch`` refuses, so ``terminateds`` / ``truncateds`` carry it here (as
in RLlib's other 2.60 tests); its ``_generate_data`` gave ``dones`` four values in a two-row
batch (RLlib's ``SampleBatch`` does not check ragged columns; ours refuses them by name), so
it gives two; RLlib's ``check(a, b)`` is ``np.testing.assert_allclose``.
"""
from __future__ import annotations

import numpy as np
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch

from ReplayTables.rllib import ALL_POLICIES, MultiAgentPrioritizedReplayBuffer

ALPHA = 1.0
BETA = 1.0


class Data:
    def __init__(self) -> None:
        self.batch_id = 0

    def two_steps(self) -> SampleBatch:
        self.batch_id += 1
        return SampleBatch({
            SampleBatch.T: [0, 1],
            SampleBatch.ACTIONS: 2 * [np.random.choice([0, 1])],
            SampleBatch.REWARDS: 2 * [np.random.rand()],
            SampleBatch.OBS: 2 * [np.random.random((4,))],
            SampleBatch.NEXT_OBS: 2 * [np.random.random((4,))],
            SampleBatch.TERMINATEDS: [False, True],
            SampleBatch.TRUNCATEDS: [False, False],
            SampleBatch.SEQ_LENS: [2],
            SampleBatch.EPS_ID: 2 * [self.batch_id],
            SampleBatch.AGENT_INDEX: 2 * [self.batch_id],
            "batch_id": 2 * [self.batch_id],
        })

    def add_multi_agent_batches(self, buffer, num_policies, num_batches=5, **kwargs) -> None:
        def one_step(policy_id):
            return SampleBatch({
                SampleBatch.T: [0],
                SampleBatch.ACTIONS: [np.random.choice([0, 1])],
                SampleBatch.REWARDS: [np.random.rand()],
                SampleBatch.OBS: [np.random.random((4,))],
                SampleBatch.NEXT_OBS: [np.random.random((4,))],
                SampleBatch.TERMINATEDS: [np.random.choice([False, True])],
                SampleBatch.TRUNCATEDS: [False],
                SampleBatch.EPS_ID: [self.batch_id],
                SampleBatch.AGENT_INDEX: [self.batch_id],
                "batch_id": [self.batch_id],
                "policy_id": [policy_id],
            })

        for _ in range(num_batches):
            policy_batches = {idx: one_step(idx) for idx in range(num_policies)}
            self.batch_id += 1
            buffer.add(MultiAgentBatch(policy_batches, 1), **kwargs)


def test_policy_id_of_multi_agent_batches_independent() -> None:
    data = Data()
    buffer = MultiAgentPrioritizedReplayBuffer(capacity=10, replay_mode="independent", learning_starts=0,
                                               num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=1, num_batches=1)
    mabatch = buffer.sample(1)
    assert next(iter(mabatch.policy_batches.keys())) == 0


def test_lockstep_mode() -> None:
    data = Data()
    num_policies, num_batches, buffer_size = 4, 13, 15
    buffer = MultiAgentPrioritizedReplayBuffer(capacity=buffer_size, replay_mode="lockstep", learning_starts=0,
                                               num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=num_policies, num_batches=num_batches)
    _id, _buffer = next(iter(buffer.replay_buffers.items()))
    assert _id == ALL_POLICIES
    assert len(buffer) == num_batches
    data.add_multi_agent_batches(buffer, num_policies=num_policies, num_batches=num_batches)   # until full
    assert _id == ALL_POLICIES
    assert len(buffer) == buffer_size


def test_independent_mode() -> None:
    data = Data()
    num_policies = 2
    buffer = MultiAgentPrioritizedReplayBuffer(capacity=15, replay_mode="independent", learning_starts=0,
                                               num_shards=1, seed=0)
    data.add_multi_agent_batches(buffer, num_policies=num_policies, num_batches=3)
    for _id in range(num_policies):
        for __id in buffer.sample(4, policy_id=_id).policy_batches[_id]["policy_id"]:
            assert __id == _id
    counts = dict.fromkeys(range(num_policies), 0)
    for _ in range(200):
        num_items = np.random.randint(1, 5)
        for _id, batch in buffer.sample(num_items=num_items).policy_batches.items():
            counts[_id] += 1
            assert len(batch) == num_items
    assert np.allclose(np.array(list(counts.values())), len(counts) * [200], atol=0.1)


def test_update_priorities() -> None:
    data = Data()
    num_batches, buffer_size = 5, 15
    buffer = MultiAgentPrioritizedReplayBuffer(capacity=buffer_size, prioritized_replay_alpha=ALPHA,
                                               prioritized_replay_beta=BETA, replay_mode="independent",
                                               replay_sequence_length=2, learning_starts=0, num_shards=1, seed=0)
    for i in range(num_batches):
        buffer.add(data.two_steps(), weight=1.0)
        assert len(buffer) == i + 1

    mabatch = buffer.sample(3)
    assert type(mabatch) is MultiAgentBatch
    samplebatch = mabatch.policy_batches[DEFAULT_POLICY_ID]
    np.testing.assert_allclose(samplebatch["weights"], np.ones(shape=(6,)))
    assert len(samplebatch["batch_indexes"]) == 6
    assert len(buffer) == num_batches
    assert buffer.replay_buffers[DEFAULT_POLICY_ID]._next_idx == num_batches

    # indices 0, 2, 3, 4 nearly never, as in the PrioritizedReplayBuffer tests: almost only index 1
    buffer.update_priorities({DEFAULT_POLICY_ID: (np.array([0, 2, 3, 4]), np.array([0.01, 0.01, 0.01, 0.01]))})
    for _ in range(10):
        mabatch = buffer.sample(1000)
        assert type(mabatch) is MultiAgentBatch
        assert 1900 < np.sum(mabatch.policy_batches[DEFAULT_POLICY_ID]["batch_indexes"]) < 2200
    state = buffer.get_state()
    new_buffer = MultiAgentPrioritizedReplayBuffer(capacity=buffer_size, prioritized_replay_alpha=ALPHA,
                                                   prioritized_replay_beta=BETA, replay_mode="independent",
                                                   learning_starts=0, num_shards=1, seed=0)
    new_buffer.set_state(state)
    batch = new_buffer.sample(1000).policy_batches[DEFAULT_POLICY_ID]
    assert 1900 < np.sum(batch["batch_indexes"]) < 2200
