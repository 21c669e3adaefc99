"""RLlib's ``test_prioritized_episode_buffer.py`` (ray-project/ray, rllib/utils/replay_buffers/tests)
restated for pytest: the same asserted behaviour, run on RLlib's class and on ours.

Where RLlib's test reads RLlib's private segment trees (``_sum_segment``, ``_max_idx``,
``_tree_idx_to_sample_idx``) ours offers read-only views where they have a meaning
(``_sum_segment[i]``, ``_last_sampled_indices``, ``_max_priority``); the tree layout
itself is a documented difference, marked ``xfail(strict=True)``.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from rllib_upstream.episode_helpers import IMPLEMENTATIONS, episode, make_buffer

NAME = "PrioritizedEpisodeReplayBuffer"
TOL = 1e-8


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(29)


def _filled(impl: str, capacity: int = 10000, n: int = 200, **kwargs: object) -> object:
    buffer = make_buffer(impl, NAME, capacity=capacity)
    for _ in range(n):
        buffer.add(episode(**kwargs))  # type: ignore[arg-type]
    return buffer


def _unpack(eps: object) -> tuple:  # type: ignore[type-arg]
    return (eps.get_observations(0), eps.get_actions(-1), eps.get_rewards(-1),  # type: ignore[attr-defined]
            eps.get_observations(-1), eps.is_terminated, eps.is_truncated,  # type: ignore[attr-defined]
            eps.get_extra_model_outputs("weights", -1), eps.get_extra_model_outputs("n_step", -1))  # type: ignore


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_add_and_eviction_logic(impl: str) -> None:
    buffer = make_buffer(impl, NAME, capacity=100)
    steps = [("A", 50, 1, 50), ("B", 25, 2, 75), ("C", 25, 3, 100), ("D", 1, 3, 51), ("E", 200, 1, 200),
             ("F", 2, 1, 2)]
    for id_, length, episodes, timesteps in steps:
        buffer.add(episode(id_=id_, episode_len=length))
        assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (episodes, timesteps), id_
        if id_ == "D":
            assert {e.id_ for e in buffer.episodes} == {"B", "C", "D"}
    assert {e.id_ for e in buffer.episodes} == {"F"}
    for i in range(10):
        buffer.add(episode(id_=str(i), episode_len=10))
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (10, 100)
    buffer.add(episode(id_="G", episode_len=21))
    assert (buffer.get_num_episodes(), buffer.get_num_timesteps()) == (8, 91)
    assert {e.id_ for e in buffer.episodes} == {"3", "4", "5", "6", "7", "8", "9", "G"}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("rounds", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_buffer_sample_logic(impl: str, n_step: int, rounds: int) -> None:
    """Transitions ``(o_t, a_t, discounted n-step reward, o_(t+n))`` with weight 1 at beta 0."""
    buffer = _filled(impl)
    for i in range(rounds):
        sample = buffer.sample(batch_size_B=16, n_step=n_step)  # type: ignore[attr-defined]
        assert buffer.get_sampled_timesteps() == 16 * (i + 1)  # type: ignore[attr-defined]
        for eps in sample:
            obs, action, reward, next_obs, terminated, truncated, weight, n = _unpack(eps)
            assert not (terminated and truncated)
            assert abs(obs - action) < TOL
            assert abs(next_obs - (obs + n_step)) < TOL
            # reward received with observation t is 0.1 t; discounted by RLlib's default gamma 0.99
            expected = sum(0.99 ** k * 0.1 * (next_obs - (n_step - 1) + k) for k in range(n_step))
            assert abs(reward - expected) < TOL
            assert abs(weight - 1.0) < TOL
            assert abs(n - n_step) < TOL


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_buffer_sample_logic_with_random_n_step(impl: str) -> None:
    buffer = _filled(impl)
    for i in range(200):
        sample = buffer.sample(batch_size_B=16, n_step=(1, 5))  # type: ignore[attr-defined]
        assert buffer.get_sampled_timesteps() == 16 * (i + 1)  # type: ignore[attr-defined]
        n_steps = [eps.get_extra_model_outputs("n_step", -1) for eps in sample]
        assert all(1 - TOL < n < 5 + TOL for n in n_steps)
        assert np.var(n_steps) > 0.0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_buffer_sample_logic_with_infos_and_extra_model_output(impl: str) -> None:
    buffer = _filled(impl, with_extra_model_outs=True)
    for i in range(200):
        sample = buffer.sample(batch_size_B=16, n_step=1, include_infos=True,  # type: ignore[attr-defined]
                               include_extra_model_outputs=True)
        assert buffer.get_sampled_timesteps() == 16 * (i + 1)  # type: ignore[attr-defined]
        for eps in sample:
            assert len(eps.get_infos()) == 2
            assert len(eps.get_extra_model_outputs(0)) == 1
            assert len(eps.get_extra_model_outputs(1)) == 1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_update_priorities(impl: str) -> None:
    """Updated priorities are stored as given (alpha 1); low-priority steps are drawn rarely."""
    buffer = _filled(impl, capacity=100)
    sample = buffer.sample(batch_size_B=16, n_step=1)  # type: ignore[attr-defined]
    weights = np.array([eps.get_extra_model_outputs("weights", -1) for eps in sample])
    assert np.all(weights - 1 < 1e-5)
    deltas = np.array([0.01] * 16)
    last = copy.deepcopy(buffer._last_sampled_indices)  # type: ignore[attr-defined]
    buffer.update_priorities(priorities=deltas)  # type: ignore[attr-defined]
    new_priorities = [buffer._sum_segment[idx] for idx in last]  # type: ignore[attr-defined]
    assert np.all(new_priorities - deltas < 1e-5)
    hits = []
    for _ in range(1000):
        buffer.sample(batch_size_B=16, n_step=1)  # type: ignore[attr-defined]
        hits.append(any(idx in last for idx in buffer._last_sampled_indices))  # type: ignore[attr-defined]
    assert sum(hits) / len(hits) < 0.15


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_update_priorities_concentrates_samples(impl: str) -> None:
    """RLlib's second half of ``test_update_priorities``: step 0 of a 10-step episode keeps
    priority 1, steps 1..9 end at 0.01 (step 1 had U(0.2, 1.2) before), so step 0 is drawn
    with probability 1 / 1.09 (RLlib asserts a share above 0.8)."""
    buffer = make_buffer(impl, NAME, capacity=10)
    buffer.add(episode(10))
    buffer._last_sampled_indices = [1]
    randn = np.random.random() + 0.2
    buffer.update_priorities(np.array([randn]))
    buffer._last_sampled_indices = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    buffer.update_priorities(np.array([0.01] * 9))
    for _ in range(10):
        buffer.sample(1000)
        share = np.sum(np.array(buffer._last_sampled_indices) == 0) / 1000
        assert share > 0.8
        expected = 1 / 1.09  # and within 5 standard deviations of the exact share
        assert abs(share - expected) < 5 * np.sqrt(expected * (1 - expected) / 1000)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_get_state_and_set_state(impl: str) -> None:
    buffer = _filled(impl, capacity=100)
    state = buffer.get_state()  # type: ignore[attr-defined]
    buffer2 = make_buffer(impl, NAME, capacity=100)
    buffer2.set_state(state)
    for getter in ("get_num_episodes", "get_num_episodes_evicted", "get_num_timesteps", "get_added_timesteps",
                   "get_sampled_timesteps"):
        assert getattr(buffer, getter)() == getattr(buffer2, getter)(), getter
    assert buffer._max_priority == buffer2._max_priority  # type: ignore[attr-defined]


@pytest.mark.parametrize("impl", [
    "rllib", pytest.param("ours", marks=pytest.mark.xfail(
        strict=True, raises=AttributeError,
        reason="documented difference: our priorities live in the engine's sum tree over step rows, "
               "RLlib's segment-tree bookkeeping (_max_idx, _tree_idx_to_sample_idx) does not exist"))])
def test_get_state_and_set_state_tree_bookkeeping(impl: str) -> None:
    buffer = _filled(impl, capacity=100)
    buffer2 = make_buffer(impl, NAME, capacity=100)
    buffer2.set_state(buffer.get_state())  # type: ignore[attr-defined]
    assert buffer._max_idx == buffer2._max_idx  # type: ignore[attr-defined]
    assert buffer._tree_idx_to_sample_idx == buffer2._tree_idx_to_sample_idx  # type: ignore[attr-defined]
