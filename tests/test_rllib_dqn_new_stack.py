"""RLlib's new-stack DQN (Ray's default stack) trains with our prioritized episode buffer.

The buffer is given as RLlib users give it, ``replay_buffer_config={"type": <class>, ...}``
(and as a dotted name); RLlib builds it, adds its env runners' episode chunks, samples
n-step episodes and calls ``update_priorities`` with the TD errors, which our buffer counts
(``stats()``). A small budget: a few hundred CartPole steps, well under a minute.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import ray
from ray.rllib.algorithms.dqn import DQNConfig

from ReplayTables.rllib import PrioritizedEpisodeReplayBuffer


@pytest.fixture(scope="module", autouse=True)
def _ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(buffer_type: object) -> DQNConfig:
    return (DQNConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=0, rollout_fragment_length=50)
            .reporting(min_sample_timesteps_per_iteration=100, min_time_s_per_iteration=0,
                       min_train_timesteps_per_iteration=0)
            .training(replay_buffer_config={"type": buffer_type, "capacity": 5000, "alpha": 0.6, "beta": 0.4},
                      num_steps_sampled_before_learning_starts=100, train_batch_size=32, n_step=3,
                      training_intensity=32 / 5)
            .debugging(seed=0))


@pytest.mark.parametrize("buffer_type", [PrioritizedEpisodeReplayBuffer,
                                         "ReplayTables.rllib.PrioritizedEpisodeReplayBuffer"])
def test_dqn_trains_and_updates_priorities(buffer_type: object) -> None:
    start = time.perf_counter()
    algo = _config(buffer_type).build_algo()
    try:
        buffer = algo.local_replay_buffer
        assert isinstance(buffer, PrioritizedEpisodeReplayBuffer)
        for _ in range(3):
            result = algo.train()
        stats = buffer.stats()
        assert stats["timesteps"] >= 300 and stats["episodes"] > 1
        assert stats["sampled_timesteps"] > 0
        # every sample was followed by RLlib's priority update for all of its 32 steps
        assert stats["priority_updates"] + stats["stale_updates"] == stats["sampled_timesteps"]
        assert stats["priority_updates"] > 0
        assert stats["per_module"]["default_policy"]["priority_updates"] == stats["priority_updates"]
        assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0
    finally:
        algo.stop()
    assert time.perf_counter() - start < 60
