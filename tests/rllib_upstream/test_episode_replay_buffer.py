"""RLlib's ``test_episode_replay_buffer.py`` (ray-project/ray, rllib/utils/replay_buffers/tests)
restated for pytest: the same asserted behaviour, run on RLlib's class and on ours."""
from __future__ import annotations

import numpy as np
import pytest

from rllib_upstream.episode_helpers import IMPLEMENTATIONS, episode, make_buffer

NAME = "EpisodeReplayBuffer"


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(13)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_add_and_eviction_logic(impl: str) -> None:
    """Whole episodes are evicted oldest first while over capacity, but one always stays."""
    buffer = make_buffer(impl, NAME, capacity=100)

    def add(id_: str, length: int) -> None:
        buffer.add(episode(id_=id_, episode_len=length))

    def ids() -> set[str]:
        return {eps.id_ for eps in buffer.episodes}

    add("A", 50)
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (1, 50)
    add("B", 25)
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (2, 75)
    add("C", 25)  # exactly full: nothing evicted yet
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (3, 100)
    add("D", 1)  # one step over: A goes
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (3, 51)
    assert ids() == {"B", "C", "D"}
    add("E", 200)  # longer than the capacity: everything else goes, E stays
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (1, 200)
    assert ids() == {"E"}
    add("F", 2)
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (1, 2)
    assert ids() == {"F"}
    for i in range(10):
        add(str(i), 10)
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (10, 100)
    add("G", 21)  # 121 steps: three episodes of 10 go
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (8, 91)
    assert ids() == {"3", "4", "5", "6", "7", "8", "9", "G"}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("rounds", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_episode_replay_buffer_sample_logic(impl: str, rounds: int) -> None:
    """``sample(B, T)`` rows: consistent flags, rewards and actions aligned with observations."""
    buffer = make_buffer(impl, NAME, capacity=10000)
    for _ in range(200):
        buffer.add(episode())

    for _ in range(rounds):
        sample = buffer.sample(batch_size_B=16, batch_length_T=64)
        obs, actions, rewards = sample["obs"], sample["actions"], sample["rewards"]
        is_first, is_last = sample["is_first"], sample["is_last"]
        is_terminated, is_truncated = sample["is_terminated"], sample["is_truncated"]
        assert not np.any(is_truncated & is_terminated)
        assert np.all(is_last[:, -1]) and np.all(is_first[:, 0])
        assert obs.shape[:2] == rewards.shape == actions.shape == is_first.shape == is_last.shape \
            == is_terminated.shape
        # the reward that came with observation t is 0.1 * t (0 at an episode's start)
        assert np.all(np.equal(obs * 0.1, rewards))
        # the action taken at observation t is t, except at an episode's last observation
        assert np.all(np.where(is_last, True, np.equal(obs, actions)))
        # at a terminal observation the (dummy) action repeats the previous one
        assert np.all(np.where(is_terminated[:, 1:], np.equal(actions[:, 1:], actions[:, :-1]), True))
        # after a terminal observation comes a new episode's first, with reward 0
        assert np.all(np.where(is_terminated[:, :-1], rewards[:, 1:] == 0.0, True))
