"""Restates ray-project/ray ``rllib/utils/replay_buffers/tests/test_fifo_replay_buffer.py`` (Ray 2.60)
against ``ReplayTables.rllib.FifoReplayBuffer``; RLlib's assertions, our buffer.

Changed besides the import: the stored upstream file sets ``SampleBatch.DONES``, which RLlib
2.60's ``SampleBatch`` refuses; ``terminateds`` / ``truncateds`` carry it here.
"""
from __future__ import annotations

import numpy as np
from ray.rllib.policy.sample_batch import SampleBatch

from ReplayTables.rllib import FifoReplayBuffer


def test_empty_buffer() -> None:
    buffer = FifoReplayBuffer()
    assert len(buffer.sample()) == 0


def test_sample() -> None:
    buffer = FifoReplayBuffer()
    for t in (1, 2):
        buffer.add(SampleBatch({
            SampleBatch.T: [t],
            SampleBatch.ACTIONS: [np.random.choice([0, 1])],
            SampleBatch.REWARDS: [np.random.rand()],
            SampleBatch.OBS: [np.random.random((4,))],
            SampleBatch.NEXT_OBS: [np.random.random((4,))],
            SampleBatch.TERMINATEDS: [np.random.choice([False, True])],
            SampleBatch.TRUNCATEDS: [False],
        }))
    assert buffer.sample()[SampleBatch.T][0] == 1
    assert buffer.sample()[SampleBatch.T][0] == 2
