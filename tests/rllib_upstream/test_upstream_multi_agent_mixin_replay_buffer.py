"""Restates ray-project/ray ``rllib/utils/replay_buffers/tests/test_multi_agent_mixin_replay_buffer.py``
(Ray 2.60) against ``ReplayTables.rllib.MultiAgentMixInReplayBuffer``; RLlib's assertions, our buffer.

Changed besides the import: the stored upstream file sets ``SampleBatch.DONES``, which RLlib
2.60's ``SampleBatch`` refuses; ``terminateds`` / ``truncateds`` carry it here. RLlib's
``assertAlmostEqual(a, b)`` is ``abs(a - b) < 5e-8`` (its seven places).
"""
from __future__ import annotations

import numpy as np
from ray.rllib.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch

from ReplayTables.rllib import MultiAgentMixInReplayBuffer

CAPACITY = 10
batch_id = 0


def episodes() -> SampleBatch:
    """Three rows: the end of an episode that started earlier (dropped), and a whole one."""
    return SampleBatch({
        SampleBatch.T: [1, 0, 1],
        SampleBatch.ACTIONS: 3 * [np.random.choice([0, 1])],
        SampleBatch.REWARDS: 3 * [np.random.rand()],
        SampleBatch.OBS: 3 * [np.random.random((4,))],
        SampleBatch.NEXT_OBS: 3 * [np.random.random((4,))],
        SampleBatch.TERMINATEDS: [True, False, True],
        SampleBatch.TRUNCATEDS: [False, False, False],
        SampleBatch.SEQ_LENS: [1, 2],
        SampleBatch.EPS_ID: [-1, batch_id, batch_id],
        SampleBatch.AGENT_INDEX: 3 * [0],
    })


def single_timestep() -> SampleBatch:
    return SampleBatch({
        SampleBatch.T: [0],
        SampleBatch.ACTIONS: [np.random.choice([0, 1])],
        SampleBatch.REWARDS: [np.random.rand()],
        SampleBatch.OBS: [np.random.random((4,))],
        SampleBatch.NEXT_OBS: [np.random.random((4,))],
        SampleBatch.TERMINATEDS: [True],
        SampleBatch.TRUNCATEDS: [False],
        SampleBatch.EPS_ID: [batch_id],
        SampleBatch.AGENT_INDEX: [0],
    })


def almost_equal(a: float, b: float) -> bool:
    return abs(a - b) < 5e-8


def rows(sample) -> int:
    assert type(sample) is MultiAgentBatch
    return len(sample.policy_batches[DEFAULT_POLICY_ID])


def test_mixin_sampling_episodes() -> None:
    buffer = MultiAgentMixInReplayBuffer(capacity=CAPACITY, storage_unit="episodes", replay_ratio=0.5,
                                         learning_starts=0, seed=0)
    # replay_ratio 0.5: one new and one old episode of two rows in every sample
    batch = episodes()
    results = []
    for _ in range(20):
        buffer.add(batch)
        results.append(rows(buffer.sample(2)))
    assert almost_equal(np.mean(results), 2 * (len(batch) - 1))   # the dropped row is not an episode


def test_mixin_sampling_sequences() -> None:
    buffer = MultiAgentMixInReplayBuffer(capacity=100, storage_unit="sequences", replay_ratio=0.5,
                                         learning_starts=0, replay_sequence_length=2,
                                         replay_sequence_override=True, seed=0)
    # two new and two old sequences of 1.5 rows on average
    batch = episodes()
    results = []
    for _ in range(400):
        buffer.add(batch)
        results.append(rows(buffer.sample(10)))
    assert abs(np.mean(results) - 2 * len(batch)) <= 0.1


def test_mixin_sampling_timesteps() -> None:
    buffer = MultiAgentMixInReplayBuffer(capacity=CAPACITY, storage_unit="timesteps", replay_ratio=0.333,
                                         learning_starts=0, seed=0)
    assert len(buffer.sample(10).policy_batches) == 0          # empty buffer: an empty batch

    batch = single_timestep()
    results = []
    for _ in range(100):                                         # insert twice, replay: 2 new + 1 old
        buffer.add(batch)
        buffer.add(batch)
        results.append(rows(buffer.sample(3)))
    assert abs(np.mean(results) - 3.0) <= 0.2

    results = []
    for _ in range(100):                                         # insert once: 1 new + 0.5 old
        buffer.add(batch)
        results.append(rows(buffer.sample(5)))
    assert abs(np.mean(results) - 1.5) <= 0.2

    buffer = MultiAgentMixInReplayBuffer(capacity=CAPACITY, replay_ratio=0.9, learning_starts=0, seed=1)
    results = []
    for _ in range(100):                                         # 1 new + 9 old
        buffer.add(batch)
        results.append(rows(buffer.sample(10)))
    assert abs(np.mean(results) - 10.0) <= 0.2

    buffer = MultiAgentMixInReplayBuffer(capacity=CAPACITY, replay_ratio=0.0, learning_starts=0, seed=2)
    batch = single_timestep()
    buffer.add(batch)
    sample = buffer.sample(1)
    assert type(sample) is MultiAgentBatch
    assert len(sample) == 1
    sample = buffer.sample(1)                                    # nothing new, no replay allowed
    assert type(sample) is MultiAgentBatch
    assert len(sample.policy_batches) == 0
    results = []
    for _ in range(100):
        buffer.add(batch)
        results.append(rows(buffer.sample(1)))
    assert abs(np.mean(results) - 1.0) <= 0.2

    buffer = MultiAgentMixInReplayBuffer(capacity=CAPACITY, replay_ratio=1.0, learning_starts=0, seed=3)
    assert len(buffer.sample(1).policy_batches) == 0
    batch = single_timestep()
    buffer.add(batch)
    sample = buffer.sample(1)
    assert type(sample) is MultiAgentBatch
    assert len(sample) == 1
    sample = buffer.sample(1)
    assert type(sample) is MultiAgentBatch
    assert len(sample) == 1
    results = [rows(buffer.sample(1)) for _ in range(100)]
    assert almost_equal(np.mean(results), 1.0)
