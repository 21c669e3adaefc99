"""RLlib's own replay-buffer walkthrough, run on our buffers.

Restates the storage-unit and underlying-buffer sections of ray-project/ray
``rllib/examples/replay_buffer_api.py`` (the ``replay_buffer_demo`` of RLlib's
"Replay Buffers" page, Ray 2.60), with ``ReplayTables.rllib`` classes where it
uses RLlib's. Its ``LessSampledReplayBuffer`` edits RLlib's private ``_storage``
and ``_hit_count`` lists; ours is written with the public hooks that replace them
(``draw``, ``get``, ``hit_counts``, ``delete``), as in docs/rllib.md. The DQN runs
use RLlib's old API stack (the page's buffers are old-stack buffers) and a small
budget. Needs the ``rllib`` extra; fails, never skips, without it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import ray
from ray.rllib.algorithms.dqn.dqn import DQNConfig
from ray.rllib.examples.envs.classes.random_env import RandomEnv
from ray.rllib.policy.sample_batch import SampleBatch, concat_samples
from ray.rllib.utils.replay_buffers.utils import validate_buffer_config

from ReplayTables.rllib import MultiAgentReplayBuffer, ReplayBuffer, StorageUnit


class LessSampledReplayBuffer(ReplayBuffer):
    """Evicts items that have been sampled more than ``evict_sampled_more_then`` times."""

    def sample(self, num_items: int, evict_sampled_more_then: int = 30, **kwargs: Any) -> Any:
        ids = self.draw(num_items)
        batch = self.get(ids)
        drawn = np.unique(ids)
        self.delete(drawn[self.hit_counts(drawn) > evict_sampled_more_then])
        return batch


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def old_stack() -> DQNConfig:
    return DQNConfig().api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)


def test_type_specification_names_resolve_to_one_class() -> None:
    configs = [old_stack().training(replay_buffer_config={"type": t})
               for t in (ReplayBuffer, "ReplayTables.rllib.ReplayBuffer",
                         "ReplayTables.rllib.replay_buffer.ReplayBuffer")]
    for config in configs:
        validate_buffer_config(config)
    assert configs[0].replay_buffer_config == configs[1].replay_buffer_config == configs[2].replay_buffer_config
    assert configs[0].replay_buffer_config["type"] is ReplayBuffer
    # a bare name is RLlib's (RLlib prefixes it with its own package)
    bare = old_stack().training(replay_buffer_config={"type": "ReplayBuffer"})
    validate_buffer_config(bare)
    assert bare.replay_buffer_config["type"].__module__.startswith("ray.rllib")


def test_storage_unit_section() -> None:
    config = old_stack().training(replay_buffer_config={"type": LessSampledReplayBuffer}).environment("CartPole-v1")
    # this line makes the buffer store only complete episodes found in a batch
    config.training(replay_buffer_config={"storage_unit": StorageUnit.EPISODES})
    less_sampled_buffer = LessSampledReplayBuffer(**config.replay_buffer_config)

    env = RandomEnv({"p_terminated": 0.2, "max_episode_len": 50})
    env.reset(seed=0)
    terminated = truncated = False
    batch = SampleBatch({})
    t = 0
    while not terminated and not truncated:
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        # "t" and "terminateds" mark the episode's start and end for the buffer
        one_step = SampleBatch({"obs": [obs], "t": [t], "reward": [reward], "terminateds": [terminated],
                                "truncateds": [truncated]})
        batch = concat_samples([batch, one_step])
        t += 1

    less_sampled_buffer.add(batch)
    for _ in range(10):
        assert len(less_sampled_buffer._storage) == 1
        less_sampled_buffer.sample(num_items=1, evict_sampled_more_then=9)
    assert len(less_sampled_buffer._storage) == 0


@pytest.mark.parametrize("evict_after", [20, 1])   # the page's value, and one that must evict in one iteration
def test_underlying_buffers_section(evict_after: int) -> None:
    config = (old_stack()
              .training(replay_buffer_config={
                  "type": "ReplayTables.rllib.MultiAgentReplayBuffer",
                  "capacity": 5000,
                  "underlying_replay_buffer_config": {
                      "type": LessSampledReplayBuffer,
                      # the default call argument of the underlying buffers' sample method
                      "evict_sampled_more_then": evict_after,
                  },
              }, num_steps_sampled_before_learning_starts=64, train_batch_size=32)
              .environment(env="CartPole-v1")
              .env_runners(num_env_runners=0, rollout_fragment_length=4)
              .reporting(min_sample_timesteps_per_iteration=100)
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        result = algo.train()
        buffer = algo.local_replay_buffer
        assert type(buffer) is MultiAgentReplayBuffer
        underlying = buffer.replay_buffers["default_policy"]
        assert type(underlying) is LessSampledReplayBuffer and buffer.underlying_call_args == {
            "evict_sampled_more_then": evict_after}
        draws = underlying.stats()["sampled_items"]
        assert result["num_env_steps_trained"] > 0 and draws >= result["num_env_steps_trained"]
        # the call argument reached the underlying buffer's sample: no stored item was drawn more often
        assert (underlying.hit_counts(underlying.item_ids()) <= evict_after).all()
        deleted = underlying.stats()["deleted_count"]
        if evict_after == 1:    # several hundred draws from at most a few hundred items: some drawn twice
            assert draws > len(underlying) + deleted and deleted > 0
    finally:
        algo.stop()
