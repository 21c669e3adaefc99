"""RLlib's new-stack DQN (Ray's default stack) trains with our prioritized episode buffer.

The buffer is given as RLlib users give it, ``replay_buffer_config={"type": <class>, ...}``
(and as a dotted name); RLlib builds it, adds its env runners' episode chunks, samples
n-step episodes and calls ``update_priorities`` with the TD errors, which our buffer counts
(``stats()``). The training test also checks that DQN learns with it: CartPole's mean episode
return starts near a random policy's (~22) and must reach ``RETURN_GOAL`` within
``MAX_ITERATIONS`` iterations of 500 env steps (it stops as soon as it does). Measured with
these settings on a shared 2-core machine (10k steps took 49 s at load ~1.7): the best
iteration's mean return was 192, 169 and 147 for seeds 0, 1, 2 (over 10k, 10k and 7k steps)
and it first reached 60 after 3,000, 3,000 and 2,500 steps;
with ``lr=0`` (the same loop, learning nothing; seed 0; 8k steps) the best was the first
iteration's 23.3 and the mean fell to ~9.5 as epsilon decayed: the check fails without learning.
The training test took 33 s at load ~2.5-5 and 65 s at load ~4-9.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from ReplayTables.rllib import PrioritizedEpisodeReplayBuffer
from rllib_training import MAX_ITERATIONS, RETURN_GOAL, train_until_return


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


def _learning_config(buffer_type: object, lr: float = 1e-3) -> DQNConfig:
    """:func:`_config` with settings under which CartPole improves within a few thousand
    steps: a small network, n-step 3, 8 trained steps per sampled step, a target update
    every 250 trained steps and epsilon down to 0.02 over the first 3,000 steps."""
    return (_config(buffer_type)
            .reporting(min_sample_timesteps_per_iteration=500)
            .training(replay_buffer_config={"type": buffer_type, "capacity": 50_000, "alpha": 0.6, "beta": 0.4},
                      num_steps_sampled_before_learning_starts=500, lr=lr, training_intensity=8,
                      target_network_update_freq=250, epsilon=[(0, 1.0), (3000, 0.02)])
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64], head_fcnet_hiddens=[64])))


def check_priorities_updated(stats: dict[str, Any], result: dict[str, Any]) -> None:
    """Every sample was followed by RLlib's priority update for all of its 32 steps, on the one module."""
    assert stats["episodes"] > 1
    assert stats["sampled_timesteps"] > 0
    assert stats["priority_updates"] + stats["stale_updates"] == stats["sampled_timesteps"]
    assert stats["priority_updates"] > 0
    assert stats["per_module"]["default_policy"]["priority_updates"] == stats["priority_updates"]
    assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0


def test_dqn_learns_cartpole_and_updates_priorities() -> None:
    start = time.perf_counter()
    algo = _learning_config(PrioritizedEpisodeReplayBuffer).build_algo()
    try:
        buffer = algo.local_replay_buffer
        assert isinstance(buffer, PrioritizedEpisodeReplayBuffer)
        returns, result = train_until_return(algo, RETURN_GOAL, MAX_ITERATIONS)
        print("mean episode return per iteration:", returns)
        assert returns[0] < 35, returns          # it starts as a random policy (~22)
        assert max(returns) >= RETURN_GOAL, returns
        check_priorities_updated(buffer.stats(), result)
    finally:
        algo.stop()
    assert time.perf_counter() - start < 240


def test_dqn_builds_our_buffer_from_its_dotted_name_and_updates_priorities() -> None:
    start = time.perf_counter()
    algo = _config("ReplayTables.rllib.PrioritizedEpisodeReplayBuffer").build_algo()
    try:
        buffer = algo.local_replay_buffer
        assert isinstance(buffer, PrioritizedEpisodeReplayBuffer)
        for _ in range(3):
            result = algo.train()
        assert buffer.stats()["timesteps"] >= 300
        check_priorities_updated(buffer.stats(), result)
    finally:
        algo.stop()
    assert time.perf_counter() - start < 60
