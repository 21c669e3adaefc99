"""RLlib's episode types at the boundary of the new-stack episode buffers.

Imported only by the episode-buffer modules (never by ``import ReplayTables``):
when Ray is importable it provides RLlib's base classes (so our buffers pass
RLlib's ``issubclass``/``isinstance`` checks), its ``MetricsLogger`` and fast
builders of ``SingleAgentEpisode`` objects for sampled items. Without Ray the
bases are plain ``object`` and sampling needs Ray to build episodes (a
:class:`~ReplayTables.errors.ConfigError` says how to install it).
"""
from __future__ import annotations

import importlib
from typing import Any

from ReplayTables.errors import ConfigError

__all__ = ["DEFAULT_AGENT_ID", "DEFAULT_MODULE_ID", "HAVE_RAY", "RLLIB_EPISODE_BUFFER",
           "RLLIB_PRIORITIZED_EPISODE_BUFFER", "MetricsLogger", "build_episode", "lookback_buffer", "make_episode"]

def _rllib(module: str, name: str) -> Any:
    """``name`` from an RLlib module, typed ``Any`` (RLlib's own types stay out of our API)."""
    return getattr(importlib.import_module(module), name)


DEFAULT_AGENT_ID: Any
DEFAULT_MODULE_ID: Any
MetricsLogger: Any
SingleAgentEpisode: Any
InfiniteLookbackBuffer: Any
RLLIB_EPISODE_BUFFER: Any
RLLIB_PRIORITIZED_EPISODE_BUFFER: Any
try:
    DEFAULT_AGENT_ID = _rllib("ray.rllib.core", "DEFAULT_AGENT_ID")
    DEFAULT_MODULE_ID = _rllib("ray.rllib.core", "DEFAULT_MODULE_ID")
    SingleAgentEpisode = _rllib("ray.rllib.env.single_agent_episode", "SingleAgentEpisode")
    InfiniteLookbackBuffer = _rllib("ray.rllib.env.utils.infinite_lookback_buffer", "InfiniteLookbackBuffer")
    MetricsLogger = _rllib("ray.rllib.utils.metrics.metrics_logger", "MetricsLogger")
    RLLIB_EPISODE_BUFFER = _rllib("ray.rllib.utils.replay_buffers.episode_replay_buffer", "EpisodeReplayBuffer")
    RLLIB_PRIORITIZED_EPISODE_BUFFER = _rllib("ray.rllib.utils.replay_buffers.prioritized_episode_buffer",
                                              "PrioritizedEpisodeReplayBuffer")
    HAVE_RAY = True
except ImportError:  # pragma: no cover - exercised only without Ray
    DEFAULT_AGENT_ID = None
    DEFAULT_MODULE_ID = "default_policy"
    MetricsLogger = SingleAgentEpisode = InfiniteLookbackBuffer = None
    RLLIB_EPISODE_BUFFER = RLLIB_PRIORITIZED_EPISODE_BUFFER = object
    HAVE_RAY = False


def _require_ray() -> None:
    if not HAVE_RAY:
        raise ConfigError("ray", None, "ray[rllib] installed to build RLlib episodes: pip install 'ray[rllib]'")


def lookback_buffer(data: Any, lookback: int) -> Any:
    """An RLlib ``InfiniteLookbackBuffer`` over ``data`` (numpy data is taken as is)."""
    _require_ray()
    buf = InfiniteLookbackBuffer.__new__(InfiniteLookbackBuffer)
    buf.data = data
    buf.lookback = min(lookback, len(data))
    buf.finalized = not isinstance(data, list)
    buf.space = None
    return buf


def build_episode(*, id_: Any, meta: dict[str, Any], observations: Any, actions: Any, rewards: Any, infos: Any,
                  extra_model_outputs: dict[str, Any], terminated: bool, truncated: bool, t_started: int,
                  to_numpy: bool) -> Any:
    """A ``SingleAgentEpisode`` from ready lookback buffers (RLlib's constructor does the checks)."""
    _require_ray()
    return SingleAgentEpisode(
        id_=id_, observations=observations, observation_space=meta.get("observation_space"), infos=infos,
        actions=actions, action_space=meta.get("action_space"), rewards=rewards, terminated=terminated,
        truncated=truncated, extra_model_outputs=extra_model_outputs, t_started=t_started,
        agent_id=meta.get("agent_id"), module_id=meta.get("module_id"),
        multi_agent_episode_id=meta.get("multi_agent_episode_id"))


def make_episode(*, id_: Any, meta: dict[str, Any], obs: tuple[Any, Any], action: Any, reward: float,
                 infos: list[Any] | None, terminated: bool, truncated: bool, weight: float, n_step: int,
                 extras: dict[Any, Any] | None, t_started: int, to_numpy: bool) -> Any:
    """A one-transition ``SingleAgentEpisode`` ``(o_t, a_t, R, o_(t+n))`` as RLlib's buffers return it."""
    _require_ray()
    extra: dict[Any, Any] = {"weights": [weight], "n_step": [n_step]}
    if extras:
        for k, v in extras.items():
            extra[k] = [v]
    eps = SingleAgentEpisode(
        id_=id_, observations=[obs[0], obs[1]], observation_space=meta.get("observation_space"),
        infos=infos, actions=[action], action_space=meta.get("action_space"), rewards=[reward],
        terminated=terminated, truncated=truncated, extra_model_outputs=extra, t_started=t_started,
        len_lookback_buffer=0, agent_id=meta.get("agent_id"), module_id=meta.get("module_id"),
        multi_agent_episode_id=meta.get("multi_agent_episode_id"))
    if to_numpy:
        eps.to_numpy()
    return eps
