"""Restates ray-project/ray ``rllib/utils/replay_buffers/tests/test_reservoir_buffer.py`` (Ray 2.60)
against ``ReplayTables.rllib.ReservoirReplayBuffer``; RLlib's assertions, our buffer.

Changed besides the import: the stored upstream file sets ``SampleBatch.DONES``, which RLlib
2.60's ``SampleBatch`` refuses; ``terminateds`` / ``truncateds`` carry it here.
"""
from __future__ import annotations

import numpy as np
from ray.rllib.policy.sample_batch import SampleBatch, concat_samples

from ReplayTables.rllib import ReservoirReplayBuffer


def add_batches(buffer, make, batch_size, num_batches) -> None:
    for batch_id in range(num_batches):
        buffer.add(concat_samples([make(batch_id) for _ in range(batch_size)]))


def test_timesteps_unit() -> None:
    def one_step(batch_id):
        return SampleBatch({
            SampleBatch.T: [np.random.random((4,))],
            SampleBatch.ACTIONS: [np.random.choice([0, 1])],
            SampleBatch.OBS: [np.random.random((4,))],
            SampleBatch.NEXT_OBS: [np.random.random((4,))],
            SampleBatch.REWARDS: [np.random.rand()],
            SampleBatch.TERMINATEDS: [np.random.choice([False, True])],
            SampleBatch.TRUNCATEDS: [False],
            "batch_id": [batch_id],
        })

    buffer = ReservoirReplayBuffer(capacity=100, seed=0)
    add_batches(buffer, one_step, batch_size=1, num_batches=1000)   # 1000 batches into a capacity of 100
    batch_id_sum = 0
    for _ in range(200):
        num_ts_sampled = np.random.randint(1, 10)
        batch_id_sum += sum(buffer.sample(num_ts_sampled)["batch_id"]) / num_ts_sampled
    assert abs(batch_id_sum / 200 - 500) <= 100          # the batch id is ~500 on average


def test_episodes_unit() -> None:
    def two_steps(batch_id):
        return SampleBatch({
            SampleBatch.T: [0, 1],
            SampleBatch.ACTIONS: 2 * [np.random.choice([0, 1])],
            SampleBatch.REWARDS: 2 * [np.random.rand()],
            SampleBatch.OBS: 2 * [np.random.random((4,))],
            SampleBatch.NEXT_OBS: 2 * [np.random.random((4,))],
            SampleBatch.TERMINATEDS: [False, True],
            SampleBatch.TRUNCATEDS: [False, False],
            SampleBatch.AGENT_INDEX: 2 * [0],
            "batch_id": 2 * [batch_id],
        })

    buffer = ReservoirReplayBuffer(capacity=100, storage_unit="fragments", seed=0)
    add_batches(buffer, two_steps, batch_size=1, num_batches=1000)
    batch_id_sum = 0
    for _ in range(200):
        num_episodes_sampled = np.random.randint(1, 10)
        sample = buffer.sample(num_episodes_sampled)
        batch_id_sum += sum(sample["batch_id"]) / (num_episodes_sampled * 2)
    assert abs(batch_id_sum / 200 - 500) <= 100
