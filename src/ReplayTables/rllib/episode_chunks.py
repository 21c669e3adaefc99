"""Dict-based episode chunks: what the new-stack episode buffers take without Ray.

A single-agent chunk is a dict of columns, like RLlib's ``SingleAgentEpisode``
carries them (``T`` steps, ``T + 1`` observations; a chunk that continues a
stored episode starts with that episode's last observation, as RLlib's chunks do)::

    {"id": "ep-0",                      # episode identity (chunks of one id continue it)
     "obs": (T + 1, ...),               # array, or nested dict of arrays
     "actions": (T, ...),               # array, or nested dict of arrays
     "rewards": (T,),                   # reward of step t came with obs t + 1
     "terminated": False, "truncated": False,              # optional, default False
     "t_started": 0,                    # optional: default continues the stored episode (or 0)
     "extra_model_outputs": {"logp": (T, ...)},            # optional
     "infos": [dict] * (T + 1),         # optional
     "agent_id": ..., "module_id": ...}  # optional

A multi-agent chunk is ``{"id": ..., "agents": {agent_id: single-agent chunk
without "id"}, "env_steps": int, "terminated": bool, "truncated": bool}`` (the
last three optional); an agent's ``module_id`` defaults to its agent id.

:func:`as_episode` checks a chunk and wraps it in :class:`DictEpisode`, which
answers the few questions the buffers ask of RLlib's episodes (so one add path
serves both). Every check raises a :class:`~ReplayTables.errors.SchemaError`
naming the field, the value and what was expected, before the buffer changes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.errors import SchemaError

__all__ = ["CHUNK_KEYS", "MULTI_AGENT_CHUNK_KEYS", "DictEpisode", "DictMultiAgentEpisode", "as_episode",
           "as_multi_agent_episode", "is_dict_chunk"]

#: Keys a single-agent chunk may hold.
CHUNK_KEYS = frozenset({"id", "obs", "actions", "rewards", "terminated", "truncated", "t_started",
                        "extra_model_outputs", "infos", "agent_id", "module_id"})
#: Keys a multi-agent chunk may hold.
MULTI_AGENT_CHUNK_KEYS = frozenset({"id", "agents", "env_steps", "terminated", "truncated"})


def is_dict_chunk(chunk: Any) -> bool:
    """Whether ``chunk`` is one of our dict chunks (not an RLlib episode object)."""
    return isinstance(chunk, Mapping)


def _leading(name: str, value: Any, n: int) -> None:
    """``value`` (array or nested dict of arrays) has ``n`` rows in every leaf."""
    if isinstance(value, Mapping):
        if not value:
            raise SchemaError(name, {}, "an array or a non-empty dict of arrays")
        for k, v in value.items():
            _leading(f"{name}[{k!r}]", v, n)
        return
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise SchemaError(name, f"dtype {arr.dtype}", "numeric or boolean values")
    if arr.shape[:1] != (n,):
        raise SchemaError(name, f"shape {arr.shape}", f"a leading axis of {n}")


def _flag(where: str, chunk: Mapping[str, Any], key: str) -> bool:
    value = chunk.get(key, False)
    if not isinstance(value, (bool, np.bool_)):
        raise SchemaError(f"{where}[{key!r}]", value, "True or False")
    return bool(value)


def _check_keys(where: str, chunk: Any, allowed: frozenset[str], required: tuple[str, ...]) -> None:
    if not isinstance(chunk, Mapping):
        raise SchemaError(where, type(chunk).__name__, "a dict chunk")
    unknown = sorted(set(map(str, chunk)) - allowed)
    if unknown:
        raise SchemaError(f"{where}[{unknown[0]!r}]", chunk[unknown[0]], f"one of the keys {sorted(allowed)}")
    for key in required:
        if key not in chunk:
            raise SchemaError(f"{where}[{key!r}]", "missing", f"a chunk with the keys {list(required)}")


class DictEpisode:
    """A checked single-agent dict chunk seen through the part of RLlib's episode API the
    buffers use (``len``, ``get_observations``, ``id_``, ``t_started`` ...)."""

    observation_space = None
    action_space = None

    def __init__(self, chunk: Mapping[str, Any], where: str = "chunk", id_: Any = None) -> None:
        _check_keys(where, chunk, CHUNK_KEYS, ("obs", "actions", "rewards") if id_ is not None
                    else ("id", "obs", "actions", "rewards"))
        rewards = np.asarray(chunk["rewards"])
        if rewards.ndim != 1 or rewards.dtype.kind not in "biuf":
            raise SchemaError(f"{where}['rewards']", f"shape {rewards.shape} dtype {rewards.dtype}",
                              "a 1-d array of numbers, one per step")
        T = int(rewards.shape[0])
        _leading(f"{where}['obs']", chunk["obs"], T + 1)
        _leading(f"{where}['actions']", chunk["actions"], T)
        extras = chunk.get("extra_model_outputs", {})
        if not isinstance(extras, Mapping):
            raise SchemaError(f"{where}['extra_model_outputs']", type(extras).__name__, "a dict of (T, ...) arrays")
        for k, v in extras.items():
            _leading(f"{where}['extra_model_outputs'][{k!r}]", v, T)
        infos = chunk.get("infos")
        if infos is not None and (not isinstance(infos, (list, tuple)) or len(infos) != T + 1
                                  or not all(i is None or isinstance(i, Mapping) for i in infos)):
            raise SchemaError(f"{where}['infos']", infos, f"a list of {T + 1} dicts (one per observation)")
        self.is_terminated = _flag(where, chunk, "terminated")
        self.is_truncated = _flag(where, chunk, "truncated")
        if self.is_terminated and self.is_truncated:
            raise SchemaError(f"{where}['truncated']", True, "False when the chunk is terminated")
        t_started = chunk.get("t_started")
        if t_started is not None and (isinstance(t_started, bool) or not isinstance(t_started, (int, np.integer))
                                      or t_started < 0):
            raise SchemaError(f"{where}['t_started']", t_started, "an integer >= 0")
        self.id_ = chunk["id"] if id_ is None else id_
        try:
            hash(self.id_)
        except TypeError:
            raise SchemaError(f"{where}['id']", self.id_, "a hashable episode id (str or int)") from None
        #: ``None``: the buffer continues the stored episode of this id (or starts it at 0)
        self.t_started: int | None = None if t_started is None else int(t_started)
        self.agent_id = chunk.get("agent_id")
        self.module_id = chunk.get("module_id")
        self.multi_agent_episode_id: Any = None
        self._chunk = chunk
        self._len = T
        self.extra_model_outputs = dict(extras)
        self._infos = list(infos) if infos is not None else [{}] * (T + 1)

    def __len__(self) -> int:
        return self._len

    def get_observations(self) -> Any:
        return self._chunk["obs"]

    def get_actions(self) -> Any:
        return self._chunk["actions"]

    def get_rewards(self) -> Any:
        return self._chunk["rewards"]

    def get_extra_model_outputs(self, key: Any) -> Any:
        return self.extra_model_outputs[key]

    def get_infos(self) -> list[Any]:
        return self._infos


class DictMultiAgentEpisode:
    """A checked multi-agent dict chunk seen through the part of RLlib's ``MultiAgentEpisode``
    API the buffers use (``agent_episodes``, ``module_for``, ``env_steps`` ...)."""

    def __init__(self, chunk: Any, where: str = "chunk") -> None:
        _check_keys(where, chunk, MULTI_AGENT_CHUNK_KEYS, ("id", "agents"))
        agents = chunk["agents"]
        if not isinstance(agents, Mapping) or not agents:
            raise SchemaError(f"{where}['agents']", agents, "a non-empty dict of agent id -> chunk")
        self.id_ = chunk["id"]
        try:
            hash(self.id_)
        except TypeError:
            raise SchemaError(f"{where}['id']", self.id_, "a hashable episode id (str or int)") from None
        self.agent_episodes: dict[Any, DictEpisode] = {}
        self._modules: dict[Any, Any] = {}
        for aid, sa_chunk in agents.items():
            sa = DictEpisode(sa_chunk, f"{where}['agents'][{aid!r}]", id_=(self.id_, aid))
            sa.agent_id = aid
            sa.module_id = aid if sa.module_id is None else sa.module_id
            sa.multi_agent_episode_id = self.id_
            self.agent_episodes[aid] = sa
            self._modules[aid] = sa.module_id
        longest = max(len(sa) for sa in self.agent_episodes.values())
        steps = chunk.get("env_steps", longest)
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < longest:
            raise SchemaError(f"{where}['env_steps']", steps, f"an integer >= {longest} (the longest agent chunk)")
        self._env_steps = int(steps)
        every = self.agent_episodes.values()
        # by default the episode ends when every agent's chunk has ended
        self.is_terminated = _flag(where, chunk, "terminated") if "terminated" in chunk \
            else all(sa.is_terminated for sa in every)
        self.is_truncated = _flag(where, chunk, "truncated") if "truncated" in chunk \
            else not self.is_terminated and all(sa.is_terminated or sa.is_truncated for sa in every)

    def module_for(self, agent_id: Any) -> Any:
        return self._modules[agent_id]

    def env_steps(self) -> int:
        return self._env_steps


def as_episode(chunk: Any, where: str = "chunk") -> Any:
    """A dict chunk checked and wrapped; anything else (an RLlib episode) as it is."""
    return DictEpisode(chunk, where) if is_dict_chunk(chunk) else chunk


def as_multi_agent_episode(chunk: Any, where: str = "chunk") -> Any:
    """A multi-agent dict chunk checked and wrapped; anything else as it is."""
    return DictMultiAgentEpisode(chunk, where) if is_dict_chunk(chunk) else chunk
