"""RLlib's ``test_multi_agent_prio_episode_buffer.py`` (ray-project/ray,
rllib/utils/replay_buffers/tests) restated for pytest, run on RLlib's class and on ours.

RLlib's per-module segment-tree bookkeeping (``_module_to_max_idx``,
``_module_to_tree_idx_to_sample_idx``, ``_module_to_sum_segment[m].value``) is a documented
difference: that part of the state test is ``xfail(strict=True)`` on ours.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from rllib_upstream.episode_helpers import (
    IMPLEMENTATIONS,
    add_and_evict,
    check_independent_sample,
    check_state_round_trip,
    make_buffer,
    multi_agent_episode,
)

NAME = "MultiAgentPrioritizedEpisodeReplayBuffer"


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(37)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_add_and_eviction_logic(impl: str) -> None:
    add_and_evict(impl, NAME)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_buffer_independent_sample_logic(impl: str) -> None:
    buffer = make_buffer(impl, NAME, capacity=10000)
    for _ in range(200):
        buffer.add(multi_agent_episode())
    for i in range(10):
        sample = buffer.sample(batch_size_B=16, n_step=1)
        assert buffer.get_sampled_timesteps() == 16 * (i + 1)
        assert buffer.get_sampled_timesteps("module_1") == buffer.get_sampled_timesteps("module_2") == 16 * (i + 1)
        check_independent_sample(sample)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("rounds", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_update_priorities(impl: str, rounds: int) -> None:
    """Priorities updated to a tenth of their value are lower afterwards, per module."""
    buffer = make_buffer(impl, NAME, capacity=100)
    for _ in range(200):
        buffer.add(multi_agent_episode())
    for _ in range(rounds):
        sample = buffer.sample(batch_size_B=16, n_step=1)
        module_ids = {eps.module_id for eps in sample}
        indices = copy.deepcopy(buffer._module_to_last_sampled_indices)
        before = {m: [buffer._module_to_sum_segment[m][i] for i in indices[m]] for m in module_ids}
        for m in module_ids:
            buffer.update_priorities(priorities=np.array(before[m]) * 0.1, module_id=m)
        after = {m: [buffer._module_to_sum_segment[m][i] for i in indices[m]] for m in module_ids}
        for m in module_ids:
            assert all(b >= a for b, a in zip(before[m], after[m]))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_get_state_set_state(impl: str) -> None:
    buffer, buffer2 = check_state_round_trip(impl, NAME, 100)
    for m in buffer.get_module_ids():
        assert buffer._module_to_max_priority[m] == buffer2._module_to_max_priority[m]


@pytest.mark.parametrize("impl", ["rllib", pytest.param("ours", marks=pytest.mark.xfail(
    strict=True, raises=(AttributeError, TypeError),
    reason="documented difference: per-module priorities live in the engine's sum trees over step rows; "
           "RLlib's segment-tree bookkeeping does not exist"))])
def test_get_state_set_state_tree_bookkeeping(impl: str) -> None:
    buffer, buffer2 = check_state_round_trip(impl, NAME, 100)
    for m in buffer.get_module_ids():
        assert buffer._module_to_max_idx[m] == buffer2._module_to_max_idx[m]
        assert np.array_equal(buffer._module_to_sum_segment[m].value, buffer2._module_to_sum_segment[m].value)
        assert buffer._module_to_tree_idx_to_sample_idx[m] == buffer2._module_to_tree_idx_to_sample_idx[m]
