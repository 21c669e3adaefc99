"""Helpers of the restated RLlib episode-buffer suites: episodes as RLlib's tests build them,
and each buffer class in two implementations (RLlib's own, the reference, and ours).

Every restated test runs on both: RLlib's run shows the assertion is RLlib's behaviour,
ours that we match it. Episodes are made as in RLlib's tests: observation ``t``, action
``t - 1`` taken before it, reward ``0.1 * t`` received with it, random lengths and ends
drawn from numpy's global generator (seeded per test here).
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

IMPLEMENTATIONS = ("ours", "rllib")
TOL = 1e-8

_MODULES = {
    ("ours", "EpisodeReplayBuffer"): "ReplayTables.rllib.episode_replay_buffer",
    ("ours", "PrioritizedEpisodeReplayBuffer"): "ReplayTables.rllib.prioritized_episode_buffer",
    ("rllib", "EpisodeReplayBuffer"): "ray.rllib.utils.replay_buffers.episode_replay_buffer",
    ("rllib", "PrioritizedEpisodeReplayBuffer"): "ray.rllib.utils.replay_buffers.prioritized_episode_buffer",
    ("ours", "MultiAgentEpisodeReplayBuffer"): "ReplayTables.rllib.multi_agent_episode_buffer",
    ("ours", "MultiAgentPrioritizedEpisodeReplayBuffer"): "ReplayTables.rllib.multi_agent_episode_buffer",
    ("rllib", "MultiAgentEpisodeReplayBuffer"): "ray.rllib.utils.replay_buffers.multi_agent_episode_buffer",
    ("rllib", "MultiAgentPrioritizedEpisodeReplayBuffer"):
        "ray.rllib.utils.replay_buffers.multi_agent_prioritized_episode_buffer",
}


def buffer_class(impl: str, name: str) -> type:
    return getattr(importlib.import_module(_MODULES[(impl, name)]), name)  # type: ignore[no-any-return]


def make_buffer(impl: str, name: str, seed: int = 0, **kwargs: Any) -> Any:
    """A buffer of ``impl`` whose sampling generator is seeded (RLlib's are not by default)."""
    buf = buffer_class(impl, name)(**kwargs)
    buf.rng = np.random.default_rng(seed)
    return buf


def episode(episode_len: int | None = None, id_: str | None = None, with_extra_model_outs: bool = False) -> Any:
    """An episode as RLlib's tests make it (lengths 1..199 and random ends when not given)."""
    eps = SingleAgentEpisode(id_=id_, observations=[0.0], infos=[{}])
    ts = np.random.randint(1, 200) if episode_len is None else episode_len
    for t in range(ts):
        eps.add_env_step(observation=float(t + 1), action=int(t), reward=0.1 * (t + 1), infos={},
                         extra_model_outputs={k: k for k in range(2)} if with_extra_model_outs else None)
    eps.is_terminated = np.random.random() > 0.5
    eps.is_truncated = False if eps.is_terminated else np.random.random() > 0.8
    return eps


def multi_agent_episode(episode_len: int | None = None, id_: str | None = None) -> Any:
    """A two-agent episode as RLlib's multi-agent tests make it (agents on modules 1 and 2)."""
    eps = MultiAgentEpisode(id_=id_, observations=[{"agent_1": 0.0, "agent_2": 0.0}],
                            infos=[{"agent_1": {}, "agent_2": {}}],
                            agent_module_ids={"agent_1": "module_1", "agent_2": "module_2"})
    ts = np.random.randint(1, 200) if episode_len is None else episode_len
    for t in range(ts):
        eps.add_env_step(observations={"agent_1": float(t + 1), "agent_2": float(t + 1)},
                         actions={"agent_1": int(t), "agent_2": int(t)},
                         rewards={"agent_1": 0.1 * (t + 1), "agent_2": 0.1 * (t + 1)},
                         infos={"agent_1": {}, "agent_2": {}})
    eps.is_terminated = np.random.random() > 0.5
    eps.is_truncated = False if eps.is_terminated else (np.random.random() > 0.8 or ts >= 200)
    return eps


def check_counts(buffer: object, episodes: int, timesteps: int, added: int) -> None:
    b = buffer
    assert (b.get_num_episodes(), b.get_num_timesteps()) == (episodes, timesteps)  # type: ignore[attr-defined]
    assert b.get_num_agent_timesteps() == 2 * timesteps  # type: ignore[attr-defined]
    assert b.get_added_agent_timesteps() == 2 * added  # type: ignore[attr-defined]
    for module_id in b.get_module_ids():  # type: ignore[attr-defined]
        assert b.get_num_episodes(module_id) == episodes  # type: ignore[attr-defined]
        assert b.get_num_timesteps(module_id) == timesteps  # type: ignore[attr-defined]
        assert b.get_added_timesteps(module_id) == added  # type: ignore[attr-defined]


def add_and_evict(impl: str, name: str) -> None:
    buffer = make_buffer(impl, name, capacity=100)
    plan = [("A", 50, 1, 50, 50), ("B", 25, 2, 75, 75), ("C", 25, 3, 100, 100), ("D", 1, 3, 51, 101),
            ("E", 200, 1, 200, 301), ("F", 2, 1, 2, 303)]
    for id_, length, episodes, timesteps, added in plan:
        buffer.add(multi_agent_episode(length, id_))
        check_counts(buffer, episodes, timesteps, added)
        if id_ in "DEF":
            assert {e.id_ for e in buffer.episodes} == {"D": {"B", "C", "D"}, "E": {"E"}, "F": {"F"}}[id_]
    for i in range(10):
        buffer.add(multi_agent_episode(10, str(i)))
    check_counts(buffer, 10, 100, 403)
    buffer.add(multi_agent_episode(21, "G"))
    check_counts(buffer, 8, 91, 424)
    assert {e.id_ for e in buffer.episodes} == {"3", "4", "5", "6", "7", "8", "9", "G"}


def check_independent_sample(sample: list, n_step: int = 1) -> None:  # type: ignore[type-arg]
    assert {"module_1", "module_2"} <= {eps.module_id for eps in sample}
    for eps in sample:
        obs, action, reward = eps.get_observations(0), eps.get_actions(-1), eps.get_rewards(-1)
        next_obs, weight, n = eps.get_observations(-1), eps.get_extra_model_outputs("weights", -1), \
            eps.get_extra_model_outputs("n_step", -1)
        assert not (eps.is_terminated and eps.is_truncated)
        assert abs(obs - action) < TOL
        assert abs(next_obs - (obs + n_step)) < TOL
        if n_step == 1:
            assert abs(reward * 10 - next_obs) < TOL
        assert abs(weight - 1.0) < TOL
        assert abs(n - n_step) < TOL


def check_state_round_trip(impl: str, name: str, capacity: int) -> tuple:  # type: ignore[type-arg]
    buffer = make_buffer(impl, name, capacity=capacity)
    for _ in range(200):
        buffer.add(multi_agent_episode())
    buffer2 = make_buffer(impl, name, capacity=capacity)
    buffer2.set_state(buffer.get_state())
    for getter in ("get_num_episodes", "get_num_episodes_evicted", "get_num_timesteps", "get_added_timesteps",
                   "get_sampled_timesteps", "get_num_agent_timesteps", "get_added_agent_timesteps",
                   "get_module_ids"):
        assert getattr(buffer, getter)() == getattr(buffer2, getter)(), getter
    for module_id in buffer.get_module_ids():
        for getter in ("get_num_timesteps", "get_added_timesteps", "get_num_episodes", "get_num_episodes_evicted"):
            assert getattr(buffer, getter)(module_id) == getattr(buffer2, getter)(module_id), getter
        assert buffer._module_to_indices[module_id] == buffer2._module_to_indices[module_id]
    return buffer, buffer2
