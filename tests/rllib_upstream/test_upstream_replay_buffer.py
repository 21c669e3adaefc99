"""Restates ray-project/ray ``rllib/utils/replay_buffers/tests/test_replay_buffer.py`` (Ray 2.60)
against ``ReplayTables.rllib.ReplayBuffer``; RLlib's assertions, our buffer.

Changed besides the import: ``test_multi_agent_batches`` passed a stray
``batch_size=100`` that RLlib's ``add(**kwargs)`` swallows; our ``add`` refuses
unknown keywords by name, so it is left out (it has no meaning in either).
"""
from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples

from ReplayTables.rllib import ReplayBuffer
from rllib_upstream.upstream_differences import TRUE_RING


class Ids:
    """RLlib's test keeps a running ``batch_id`` on the test case."""

    def __init__(self) -> None:
        self.batch_id = 0


def add_single_steps(ids: Ids, buffer, batch_size, num_batches=5, **kwargs) -> None:
    def one_step():
        return SampleBatch({
            SampleBatch.T: [np.random.random((4,))],
            SampleBatch.ACTIONS: [np.random.choice([0, 1])],
            SampleBatch.OBS: [np.random.random((4,))],
            SampleBatch.NEXT_OBS: [np.random.random((4,))],
            SampleBatch.REWARDS: [np.random.rand()],
            SampleBatch.TERMINATEDS: [np.random.choice([False, True])],
            SampleBatch.TRUNCATEDS: [np.random.choice([False, False])],
            "batch_id": [ids.batch_id],
        })

    for _ in range(num_batches):
        data = [one_step() for _ in range(batch_size)]
        ids.batch_id += 1
        buffer.add(concat_samples(data), **kwargs)


def add_multi_agent_batches(ids: Ids, buffer, num_policies, num_batches=5, seq_lens=False, **kwargs) -> None:
    def policy_batch(policy_id):
        batch = SampleBatch({
            SampleBatch.T: [0, 1],
            SampleBatch.ACTIONS: 2 * [np.random.choice([0, 1])],
            SampleBatch.REWARDS: 2 * [np.random.rand()],
            SampleBatch.OBS: 2 * [np.random.random((4,))],
            SampleBatch.NEXT_OBS: 2 * [np.random.random((4,))],
            SampleBatch.TERMINATEDS: [False, True],
            SampleBatch.TRUNCATEDS: [False, False],
            SampleBatch.EPS_ID: 2 * [ids.batch_id],
            SampleBatch.AGENT_INDEX: 2 * [0],
            SampleBatch.SEQ_LENS: [2],
            "batch_id": 2 * [ids.batch_id],
            "policy_id": 2 * [policy_id],
        })
        if not seq_lens:
            del batch[SampleBatch.SEQ_LENS]
        ids.batch_id += 1
        return batch

    for _ in range(num_batches):
        policy_batches = {idx: policy_batch(idx) for idx in range(num_policies)}
        buffer.add(MultiAgentBatch(policy_batches, num_batches * 2), **kwargs)


def frequencies(buffer, key, ids, num_samples=200) -> np.ndarray:
    counts = dict.fromkeys(ids, 0)
    for _ in range(num_samples):
        sample = buffer.sample(1)
        if key != "batch_id" or SampleBatch.SEQ_LENS in sample:
            assert len(sample[SampleBatch.SEQ_LENS]) == 1
        counts[sample[key][0]] += 1
    return np.array(list(counts.values())) / num_samples


def test_stats() -> None:
    ids = Ids()
    buffer = ReplayBuffer(capacity=15, storage_unit="fragments", seed=0)
    add_single_steps(ids, buffer, batch_size=5, num_batches=1)
    assert len(buffer) == 1
    assert buffer._num_timesteps_added == 5
    assert buffer._num_timesteps_added_wrap == 5
    assert buffer._next_idx == 1
    assert buffer._eviction_started is False
    assert buffer.sample(1)["batch_id"][0] == 0
    buffer.sample(2)
    assert buffer._num_timesteps_sampled == 15
    add_single_steps(ids, buffer, batch_size=5, num_batches=2)
    assert len(buffer) == 3
    assert buffer._num_timesteps_added == 15
    assert buffer._num_timesteps_added_wrap == 0
    assert buffer._next_idx == 0
    assert buffer._eviction_started is True


def test_multi_agent_batches() -> None:
    ids = Ids()
    buffer = ReplayBuffer(capacity=100, storage_unit="fragments", seed=0)
    add_multi_agent_batches(ids, buffer, num_policies=2, num_batches=2)
    assert len(buffer) == 2
    assert buffer._num_timesteps_added == 8
    assert buffer._num_timesteps_added_wrap == 8
    assert buffer._next_idx == 2
    assert buffer._eviction_started is False
    buffer.sample(3)
    assert buffer._num_timesteps_sampled == 12
    add_multi_agent_batches(ids, buffer, num_policies=3, num_batches=3)
    assert len(buffer) == 5
    assert buffer._num_timesteps_added == 26
    assert buffer._num_timesteps_added_wrap == 26
    assert buffer._next_idx == 5


def test_timesteps_unit() -> None:
    ids = Ids()
    buffer = ReplayBuffer(capacity=15, seed=0)
    add_single_steps(ids, buffer, batch_size=5, num_batches=1)
    add_single_steps(ids, buffer, batch_size=5, num_batches=2)
    assert np.allclose(frequencies(buffer, "batch_id", range(ids.batch_id)), ids.batch_id * [1 / 3], atol=0.1)

    state = buffer.get_state()
    other_buffer = ReplayBuffer(capacity=15, seed=0)
    add_single_steps(ids, other_buffer, 1)
    other_buffer.set_state(state)
    assert other_buffer._storage == buffer._storage
    assert other_buffer._next_idx == buffer._next_idx
    assert other_buffer._num_timesteps_added == buffer._num_timesteps_added
    assert other_buffer._num_timesteps_added_wrap == buffer._num_timesteps_added_wrap
    assert other_buffer._num_timesteps_sampled == buffer._num_timesteps_sampled
    assert other_buffer._eviction_started == buffer._eviction_started
    assert other_buffer._est_size_bytes == buffer._est_size_bytes
    assert len(other_buffer) == len(other_buffer)


def sequence_batch(length, seq_lens, batch_id) -> SampleBatch:
    return SampleBatch({
        SampleBatch.T: length * [np.random.random((4,))],
        SampleBatch.ACTIONS: length * [np.random.choice([0, 1])],
        SampleBatch.REWARDS: length * [np.random.rand()],
        SampleBatch.TERMINATEDS: length * [np.random.choice([False, True])],
        SampleBatch.TRUNCATEDS: length * [np.random.choice([False, True])],
        SampleBatch.SEQ_LENS: seq_lens,
        "batch_id": length * [batch_id],
    })


@pytest.mark.xfail(strict=True, reason=TRUE_RING)
def test_sequences_unit() -> None:
    buffer = ReplayBuffer(capacity=10, storage_unit="sequences", seed=0)
    for i in range(1, 4):
        buffer.add(sequence_batch(i, [i], i))
    buffer.add(sequence_batch(4, [2, 2], 4))
    # the last batch holds two sequences, so it is drawn twice as often
    assert np.allclose(frequencies(buffer, "batch_id", range(1, 5)), [1 / 5, 1 / 5, 1 / 5, 2 / 5], atol=0.1)

    buffer.add(sequence_batch(5, [5], 5))   # 15 timesteps added: RLlib evicts one list slot, we evict 6 timesteps
    assert len(buffer) == 5
    assert buffer._num_timesteps_added == sum(range(1, 6))
    assert buffer._num_timesteps_added_wrap == 5
    assert buffer._next_idx == 1
    assert buffer._eviction_started is True
    assert np.allclose(frequencies(buffer, "batch_id", range(2, 6)), [1 / 5, 1 / 5, 2 / 5, 1 / 5], atol=0.1)


def episode_batch(t, terminateds, seq_lens, eps_id) -> SampleBatch:
    n = len(t)
    return SampleBatch({
        SampleBatch.T: t,
        SampleBatch.ACTIONS: n * [np.random.choice([0, 1])],
        SampleBatch.REWARDS: n * [np.random.rand()],
        SampleBatch.TERMINATEDS: terminateds,
        SampleBatch.TRUNCATEDS: n * [False],
        SampleBatch.SEQ_LENS: seq_lens,
        SampleBatch.EPS_ID: eps_id,
    })


def test_episodes_unit() -> None:
    buffer = ReplayBuffer(capacity=18, storage_unit="episodes", seed=0)
    for i in range(3):
        buffer.add(episode_batch([0, 1, 2, 3], [False, False, False, True], [4], 4 * [i]))
    buffer.add(episode_batch([0, 1, 0, 1], [False, True, False, True], [2, 2], [3, 3, 4, 4]))
    # every episode equally often, whichever batch it came in
    assert np.allclose(frequencies(buffer, SampleBatch.EPS_ID, range(5)), 5 * [1 / 5], atol=0.1)

    # episode 6 does not end inside its batch: it is not stored
    buffer.add(episode_batch([0, 1, 0, 1], [False, True, False, False], [2, 2], [5, 5, 6, 6]))
    assert np.allclose(frequencies(buffer, SampleBatch.EPS_ID, range(7)), 6 * [1 / 6] + [0], atol=0.1)

    buffer.add(episode_batch([0, 1, 2, 3], [False, False, False, True], [4], 4 * [7]))   # evicts episode 0
    assert len(buffer) == 6
    assert buffer._num_timesteps_added == 4 * 6 - 2
    assert buffer._num_timesteps_added_wrap == 4
    assert buffer._next_idx == 1
    assert buffer._eviction_started is True
    assert np.allclose(frequencies(buffer, SampleBatch.EPS_ID, range(8)),
                       [0, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0, 1 / 6], atol=0.1)
