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
