"""RLlib's episode types at the boundary of the new-stack episode buffers.

Imported only by the episode-buffer modules (never by ``import ReplayTables``):
when Ray is importable it provides RLlib's base classes (so our buffers pass
RLlib's ``issubclass``/``isinstance`` checks), its ``MetricsLogger`` and fast
builders of ``SingleAgentEpisode`` objects for sampled items. Without Ray the
bases are plain ``object``, there are no metrics, and the buffers take and
return dict chunks only (:mod:`ReplayTables.rllib.episode_chunks`); building an
RLlib episode is then a :class:`~ReplayTables.errors.ConfigError` that says how
to install Ray.
"""
from __future__ import annotations

import gc
import importlib
from typing import Any

import numpy as np

from ReplayTables.errors import ConfigError

__all__ = [
    "DEFAULT_AGENT_ID",
    "DEFAULT_MODULE_ID",
    "HAVE_RAY",
    "RLLIB_EPISODE_BUFFER", "RLLIB_MULTI_AGENT_EPISODE_BUFFER", "RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER",
    "RLLIB_PRIORITIZED_EPISODE_BUFFER",
    "MetricsLogger",
    "RLlibBufferType",
    "build_episode", "fast_meta",
    "lookback_buffer",
    "make_episodes",
]

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
RLLIB_MULTI_AGENT_EPISODE_BUFFER: Any
RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER: Any
try:
    DEFAULT_AGENT_ID = _rllib("ray.rllib.core", "DEFAULT_AGENT_ID")
    DEFAULT_MODULE_ID = _rllib("ray.rllib.core", "DEFAULT_MODULE_ID")
    SingleAgentEpisode = _rllib("ray.rllib.env.single_agent_episode", "SingleAgentEpisode")
    InfiniteLookbackBuffer = _rllib("ray.rllib.env.utils.infinite_lookback_buffer", "InfiniteLookbackBuffer")
    MetricsLogger = _rllib("ray.rllib.utils.metrics.metrics_logger", "MetricsLogger")
    RLLIB_EPISODE_BUFFER = _rllib("ray.rllib.utils.replay_buffers.episode_replay_buffer", "EpisodeReplayBuffer")
    RLLIB_PRIORITIZED_EPISODE_BUFFER = _rllib("ray.rllib.utils.replay_buffers.prioritized_episode_buffer",
                                              "PrioritizedEpisodeReplayBuffer")
    RLLIB_MULTI_AGENT_EPISODE_BUFFER = _rllib("ray.rllib.utils.replay_buffers.multi_agent_episode_buffer",
                                              "MultiAgentEpisodeReplayBuffer")
    RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER = _rllib(
        "ray.rllib.utils.replay_buffers.multi_agent_prioritized_episode_buffer",
        "MultiAgentPrioritizedEpisodeReplayBuffer")
    HAVE_RAY = True
except ImportError:  # pragma: no cover - exercised only without Ray
    DEFAULT_AGENT_ID = None
    DEFAULT_MODULE_ID = "default_policy"
    MetricsLogger = SingleAgentEpisode = InfiniteLookbackBuffer = None
    RLLIB_EPISODE_BUFFER = RLLIB_PRIORITIZED_EPISODE_BUFFER = object
    RLLIB_MULTI_AGENT_EPISODE_BUFFER = RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER = object
    HAVE_RAY = False


class RLlibBufferType(type(RLLIB_EPISODE_BUFFER)):  # type: ignore[misc]
    """Metaclass of our episode buffers: ``"EpisodeReplayBuffer" in cls`` answers for the class's
    dotted name.

    Ray 2.60's ``Algorithm._create_local_replay_buffer_if_necessary`` tests
    ``"EpisodeReplayBuffer" in config["replay_buffer_config"]["type"]``, which raises
    ``TypeError`` when ``type`` is a class (Ray issue #60491), for RLlib's own classes too.
    Answering the substring test on ``module.qualname`` lets a class ``type`` build, and
    RLlib then passes ``metrics_num_episodes_for_smoothing`` as it does for a name.
    """

    def __contains__(cls, text: object) -> bool:
        return isinstance(text, str) and text in f"{cls.__module__}.{cls.__qualname__}"


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


def _struct(space: Any) -> Any:
    """RLlib's ``get_base_struct_from_space`` (what a lookback buffer keeps beside its space)."""
    if space is None:
        return None
    return _rllib("ray.rllib.utils.spaces.space_utils", "get_base_struct_from_space")(space)


def _spaces(meta: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Observation and action spaces of an episode and their structs (computed once per episode)."""
    cached = meta.get("_structs")
    if cached is None:
        obs_space, act_space = meta.get("observation_space"), meta.get("action_space")
        cached = (obs_space, _struct(obs_space), act_space, _struct(act_space))
        meta["_structs"] = cached
    return cached


def _ilb(data: Any, space: Any = None, struct: Any = None) -> Any:
    """A lookback buffer without lookback over ``data``, made without RLlib's per-call checks."""
    buf = InfiniteLookbackBuffer.__new__(InfiniteLookbackBuffer)
    buf.data = data
    buf.lookback = 0
    buf.finalized = not isinstance(data, list)
    buf._space = space
    buf._space_struct = struct
    return buf


def make_episodes(*, ids: list[Any], metas: list[dict[str, Any]], obs: tuple[Any, Any], actions: Any,
                  rewards: np.ndarray, infos: tuple[Any, Any] | None, terminated: np.ndarray,
                  truncated: np.ndarray, weights: np.ndarray, n_steps: np.ndarray, extras: dict[Any, Any] | None,
                  t_started: np.ndarray, to_numpy: bool) -> list[Any]:
    """One-transition ``SingleAgentEpisode``s ``(o_t, a_t, R, o_(t+n))``, one per row of the
    batched inputs, with ``weights`` and ``n_step`` in ``extra_model_outputs``: what RLlib's
    buffers return, built field by field (RLlib's constructor costs ~50 us per episode, most
    of it re-deriving the same space structure; the data and the checks are the same).

    ``obs`` are the batched first and last observations (arrays or nested dicts of arrays);
    with ``to_numpy`` every field is a numpy array (views of the batch), otherwise a list.
    """
    _require_ray()
    rewards_space = _rllib("ray.rllib.env.single_agent_episode", "_REWARDS_BOX_SPACE")
    rewards_struct = _struct(rewards_space)
    B = rewards.shape[0]
    tree_obs = isinstance(obs[0], dict) or isinstance(actions, dict)
    pair = None
    if not tree_obs:
        pair = np.stack([obs[0], obs[1]], axis=1)  # (B, 2, ...): each episode's observations are a view
    ret = rewards.reshape(B, 1) if to_numpy else rewards.tolist()
    w = weights.reshape(B, 1) if to_numpy else weights.tolist()
    n = n_steps.reshape(B, 1) if to_numpy else n_steps.tolist()
    term, trunc = terminated.tolist(), truncated.tolist()
    t0 = t_started.tolist()
    new = SingleAgentEpisode.__new__
    lb_new = InfiniteLookbackBuffer.__new__
    out: list[Any] = []
    # ~10 objects per episode trigger the cyclic collector every ~70 episodes, and with a large
    # heap (a training process) its passes cost several times the building itself. These objects
    # form no cycles, so the collector is paused while they are made and runs once afterwards.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _fill(out, B, metas, ids, pair, obs, actions, ret, w, n, infos, extras, term, trunc, t0, to_numpy,
              rewards_space, rewards_struct, new, lb_new)
    finally:
        if collecting:
            gc.enable()
    return out


def fast_meta(meta: dict[str, Any]) -> tuple[Any, ...]:
    """What every sampled episode of a stored episode copies from it, looked up once."""
    cached = meta.get("_fast")
    if cached is None:
        obs_space, obs_struct, act_space, act_struct = _spaces(meta)
        cached = (meta.get("agent_id"), meta.get("module_id"), meta.get("multi_agent_episode_id"), obs_space,
                  obs_struct, act_space, act_struct)
        meta["_fast"] = cached
    return tuple(cached)


def _fill(out: list[Any], B: int, metas: list[dict[str, Any]], ids: list[Any], pair: Any, obs: tuple[Any, Any],
          actions: Any, ret: Any, w: Any, n: Any, infos: Any, extras: Any, term: list[bool], trunc: list[bool],
          t0: list[int], to_numpy: bool, rewards_space: Any, rewards_struct: Any, new: Any, lb_new: Any) -> None:
    """The loop of :func:`make_episodes` (one episode per row); per-row values are made
    first by numpy's own iteration, so the loop only assembles objects."""
    if pair is not None:
        if to_numpy:
            o_items: list[Any] = list(pair)
            a_items: list[Any] = list(actions.reshape((B, 1, *actions.shape[1:])))
        else:
            o_items = list(map(list, pair))
            a_items = [[x] for x in actions]
    else:
        o_items = [[_pick(obs[0], i), _pick(obs[1], i)] for i in range(B)]
        a_items = [[_pick(actions, i)] for i in range(B)]
    if to_numpy:
        r_items, w_items, n_items = list(ret), list(w), list(n)
    else:
        r_items, w_items, n_items = [[x] for x in ret], [[x] for x in w], [[x] for x in n]
    if infos is None:
        i_items: list[Any] = [[{}, {}] for _ in range(B)]
    else:
        i_items = [[x or {}, y or {}] for x, y in zip(infos[0].tolist(), infos[1].tolist())]
    finalized = to_numpy and pair is not None
    ILB, SAE = InfiniteLookbackBuffer, SingleAgentEpisode
    for i, (id_, meta, o, a, r, inf, wv, nv, te, tr, ts) in enumerate(zip(
            ids, metas, o_items, a_items, r_items, i_items, w_items, n_items, term, trunc, t0)):
        agent_id, module_id, ma_id, obs_space, obs_struct, act_space, act_struct = fast_meta(meta)
        # lookback buffers by their attribute dict in one assignment (what their __init__ sets)
        ob = lb_new(ILB)
        ob.__dict__ = {"data": o, "lookback": 0, "finalized": finalized, "_space": obs_space,
                       "_space_struct": obs_struct}
        ab = lb_new(ILB)
        ab.__dict__ = {"data": a, "lookback": 0, "finalized": finalized, "_space": act_space,
                       "_space_struct": act_struct}
        rb = lb_new(ILB)
        rb.__dict__ = {"data": r, "lookback": 0, "finalized": to_numpy, "_space": rewards_space,
                       "_space_struct": rewards_struct}
        ib = lb_new(ILB)
        ib.__dict__ = {"data": inf, "lookback": 0, "finalized": False, "_space": None, "_space_struct": None}
        wb = lb_new(ILB)
        wb.__dict__ = {"data": wv, "lookback": 0, "finalized": to_numpy, "_space": None, "_space_struct": None}
        nb = lb_new(ILB)
        nb.__dict__ = {"data": nv, "lookback": 0, "finalized": to_numpy, "_space": None, "_space_struct": None}
        emo = {"weights": wb, "n_step": nb}
        if extras:
            for k, v in extras.items():
                emo[k] = _ilb([_pick(v, i)])
        e = new(SAE)
        e.id_ = id_
        e.agent_id = agent_id
        e.module_id = module_id
        e.multi_agent_episode_id = ma_id
        e.observations = ob
        e.actions = ab
        e.rewards = rb
        e.infos = ib
        e.extra_model_outputs = emo
        e.is_terminated = te
        e.is_truncated = tr
        e.t_started = ts
        e.t = ts + 1
        e._observation_space = obs_space
        e._action_space = act_space
        e._custom_data = {}
        e._start_time = None
        e._last_step_time = None
        e._last_added_observation = None
        e._last_added_infos = None
        out.append(e)


def _pick(value: Any, i: int) -> Any:
    if isinstance(value, dict):
        return {k: _pick(v, i) for k, v in value.items()}
    return value[i]
