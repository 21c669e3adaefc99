"""RLlib's new-stack multi-agent episode buffers on columnar step storage.

    config.training(replay_buffer_config={
        "type": "ReplayTables.rllib.MultiAgentPrioritizedEpisodeReplayBuffer",
        "capacity": 50_000, "alpha": 0.6, "beta": 0.4})

``add(list of MultiAgentEpisode chunks)``: each agent's episode goes to the
store of its module (one :class:`~ReplayTables.engine.episode_steps.EpisodeSteps`
per module, created on first use), under ``(episode id, agent id)``, so chunks
continue it; capacity counts environment steps and whole multi-agent episodes
leave oldest first, with all their agents' steps (RLlib's rule). ``sample`` in
RLlib's default ``replay_mode="independent"``: ``num_items`` transitions per
module (or per module of ``modules_to_sample``), a start too close to its
agent episode's end for the n-step drawn again, as single-agent episodes with
``multi_agent_episode_id``, ``n_step`` and ``weights``. The prioritized variant
keeps one sum tree per module; ``update_priorities(td_errors, module_id)``
applies to that module's last sample, and ``stats()`` counts the applied updates
per module.

Differences from RLlib 2.60 (docs/rllib-inside.md): ``replay_mode="synchronized"``
is not offered (a ``ConfigError``); ``episodes`` is a read-only list of
``(id_, env_steps, agent_ids)`` records, not ``MultiAgentEpisode`` objects;
RLlib's per-module segment-tree bookkeeping (``_module_to_max_idx``,
``_module_to_tree_idx_to_sample_idx``) does not exist.
"""
from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import numpy as np

from ReplayTables.engine.episode_steps import ROW_SLACK, EpisodeSteps
from ReplayTables.errors import ConfigError, EmptyBufferError, PriorityError
from ReplayTables.rllib.episode_chunks import as_multi_agent_episode
from ReplayTables.rllib.episode_compat import (
    RLLIB_MULTI_AGENT_EPISODE_BUFFER,
    RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER,
    MetricsLogger,
    RLlibBufferType,
    fast_meta,
)
from ReplayTables.rllib.episode_replay_buffer import KNOWN_KEYS, EpisodeReplayBuffer, _int, chunk_format
from ReplayTables.rllib.prioritized_episode_buffer import PrioritizedEpisodeReplayBuffer, _number

__all__ = ["MultiAgentEpisodeReplayBuffer", "MultiAgentPrioritizedEpisodeReplayBuffer"]


class StoredMultiAgentEpisode(NamedTuple):
    """What ``buffer.episodes`` shows of a stored multi-agent episode."""

    id_: Any
    env_steps: int
    agent_ids: frozenset[Any]


class _PriorityView:
    """Read-only ``buffer._module_to_sum_segment[module][step_id]``."""

    def __init__(self, module: PrioritizedEpisodeReplayBuffer) -> None:
        self._module = module

    def __getitem__(self, step_id: int) -> float:
        return self._module._sum_segment[step_id]


class MultiAgentEpisodeReplayBuffer(RLLIB_MULTI_AGENT_EPISODE_BUFFER, metaclass=RLlibBufferType):  # type: ignore[misc]
    """Multi-agent episodes, one columnar store per module (see module docstring).

    Args:
        capacity: environment steps stored before the oldest episodes are evicted.
        batch_size_B, batch_length_T, metrics_num_episodes_for_smoothing, seed: as
            :class:`~ReplayTables.rllib.EpisodeReplayBuffer`.
    """

    _module_class: type = EpisodeReplayBuffer
    _prioritized = False

    def __init__(self, capacity: int = 10000, *, batch_size_B: int = 16, batch_length_T: int = 1,
                 metrics_num_episodes_for_smoothing: int = 100, seed: int | None = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - KNOWN_KEYS)
        if unknown:
            raise ConfigError(unknown[0], kwargs[unknown[0]], f"one of the constructor keys "
                                                                f"{sorted(KNOWN_KEYS | {'capacity'})}")
        self.capacity = _int("capacity", capacity, 1)
        self.batch_size_B = _int("batch_size_B", batch_size_B, 1)
        self.batch_length_T = _int("batch_length_T", batch_length_T, 0)
        self._module_kwargs = {k: v for k, v in kwargs.items() if k in ("alpha",)}
        self.rng = np.random.default_rng(seed)
        self.metrics = MetricsLogger(root=False) if MetricsLogger is not None else None
        self._metrics_num_episodes_for_smoothing = _int("metrics_num_episodes_for_smoothing",
                                                        metrics_num_episodes_for_smoothing, 1)
        self._modules: dict[Any, Any] = {}  # module id -> our single-agent buffer (its store and helpers)
        self._order: deque[Any] = deque()  # multi-agent episode ids, oldest first
        self._env_steps: dict[Any, int] = {}
        self._agents: dict[Any, dict[Any, Any]] = {}  # episode id -> {agent id: module id}
        self._done: dict[Any, bool] = {}
        self._num_timesteps = 0
        self._num_timesteps_added = 0
        self._num_agent_timesteps_added = 0
        self._num_episodes_evicted = 0
        self.sampled_timesteps = 0
        self._module_added: dict[Any, int] = {}
        self._module_evicted: dict[Any, int] = {}
        self._module_sampled: dict[Any, int] = {}
        #: what was added, so what sampling returns: "dict" (our dict chunks) or "rllib" (RLlib episodes)
        self._format: str | None = None

    # ------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self._num_timesteps

    def get_module_ids(self) -> list[Any]:
        return list(self._modules)

    def get_num_episodes(self, module_id: Any = None) -> int:
        if module_id:
            return self._modules[module_id].store.num_episodes if module_id in self._modules else 0
        return len(self._order)

    def get_num_episodes_evicted(self, module_id: Any = None) -> int:
        return self._module_evicted.get(module_id, 0) if module_id else self._num_episodes_evicted

    def get_num_timesteps(self, module_id: Any = None) -> int:
        """Environment steps stored (agent steps of ``module_id`` if given)."""
        if module_id:
            return self._modules[module_id].store.num_steps if module_id in self._modules else 0
        return self._num_timesteps

    def get_num_agent_timesteps(self) -> int:
        return sum(m.store.num_steps for m in self._modules.values())

    def get_added_timesteps(self, module_id: Any = None) -> int:
        return self._module_added.get(module_id, 0) if module_id else self._num_timesteps_added

    def get_added_agent_timesteps(self) -> int:
        return self._num_agent_timesteps_added

    def get_sampled_timesteps(self, module_id: Any = None) -> int:
        return self._module_sampled.get(module_id, 0) if module_id else self.sampled_timesteps

    def get_metrics(self) -> dict[str, Any]:
        return self.metrics.reduce() if self.metrics is not None else {}

    @property
    def episodes(self) -> list[StoredMultiAgentEpisode]:
        """The stored episodes, oldest first: id, environment steps and agents (read-only)."""
        return [StoredMultiAgentEpisode(i, self._env_steps[i], frozenset(self._agents[i])) for i in self._order]

    @property
    def _module_to_indices(self) -> dict[Any, list[tuple[int, Any, int]]]:
        """RLlib's per-module index view: ``(episode index, agent id, t)`` of every stored step
        (built on access, for inspection and RLlib's tests)."""
        index = {eid: i + self._num_episodes_evicted for i, eid in enumerate(self._order)}
        out: dict[Any, list[tuple[int, Any, int]]] = {}
        for mid, module in self._modules.items():
            st = module.store
            out[mid] = [(index[st.ep_id[s][0]], st.ep_id[s][1], t) for s in st.order
                        for t in range(int(st.ep_len[s]))]
        return out

    # ------------------------------------------------------------ add
    def _module(self, module_id: Any) -> Any:
        module = self._modules.get(module_id)
        if module is None:
            module = self._module_class(self.capacity, **self._module_kwargs)
            module.rng = self.rng
            module.metrics = None  # this buffer logs the metrics
            # the module's store grows as its agents' steps arrive; eviction is this buffer's
            module.store = EpisodeSteps(self.capacity, self._prioritized,
                                        initial_rows=int(self.capacity * ROW_SLACK) // 2 + 16)
            self._modules[module_id] = module
            self._module_added[module_id] = 0
            self._module_evicted[module_id] = 0
            self._module_sampled[module_id] = 0
        return module

    def add(self, episodes: Any, weight: float | None = None) -> None:
        """Store multi-agent episode chunks (each agent's steps with its module).

        Every chunk is checked before anything changes; after each chunk the oldest
        episodes are evicted whole while over ``capacity`` environment steps and more
        than one episode is stored.
        """
        episodes = list(episodes) if isinstance(episodes, (list, tuple)) else [episodes]
        fmt = chunk_format(episodes, self._format)
        episodes = [as_multi_agent_episode(e, f"episodes[{i}]") for i, e in enumerate(episodes)]
        # group agent chunks by module and check them all first
        per_module: dict[Any, tuple[list[Any], list[Any]]] = {}
        for ma in episodes:
            if self._done.get(ma.id_):
                from ReplayTables.errors import EpisodeError

                raise EpisodeError("episode.id_", ma.id_, "a chunk of an episode that has not ended")
            for aid, sa in ma.agent_episodes.items():
                mid = ma.module_for(aid)
                chunks, keys = per_module.setdefault(mid, ([], []))
                chunks.append(sa)
                keys.append((ma.id_, aid))
        prepared: dict[Any, tuple[list[Any], list[Any]]] = {}
        created = [mid for mid in per_module if mid not in self._modules]
        try:
            for mid, (chunks, keys) in per_module.items():
                prepared[mid] = self._module(mid)._prepare(chunks, keys)
        except Exception:
            for mid in created:  # a refused add leaves no new module behind
                self._modules.pop(mid, None)
                self._module_added.pop(mid, None)
                self._module_evicted.pop(mid, None)
                self._module_sampled.pop(mid, None)
            raise
        by_episode: dict[Any, list[tuple[Any, Any, Any]]] = {}
        if episodes:
            self._format = fmt
        for mid, (items, extra_keys) in prepared.items():
            module = self._modules[mid]
            module._format = fmt
            if items:
                module._extra_keys = extra_keys
            for sa, cols in items:
                by_episode.setdefault(sa.multi_agent_episode_id, []).append((mid, sa, cols))
        steps_added = episodes_added = episodes_evicted = steps_evicted = 0
        agent_steps: dict[Any, int] = {}
        for ma in episodes:
            new = ma.id_ not in self._env_steps
            if new:
                self._order.append(ma.id_)
                self._env_steps[ma.id_] = 0
                self._agents[ma.id_] = {}
                episodes_added += 1
            n = ma.env_steps()
            self._env_steps[ma.id_] += n
            self._num_timesteps += n
            self._num_timesteps_added += n
            steps_added += n
            self._done[ma.id_] = bool(ma.is_terminated or ma.is_truncated)
            for mid, sa, cols in by_episode.pop(ma.id_, []):
                module = self._modules[mid]
                key = (ma.id_, sa.agent_id)
                meta = {"id_": sa.id_, "agent_id": sa.agent_id, "module_id": mid,
                        "observation_space": sa.observation_space, "action_space": sa.action_space,
                        "multi_agent_episode_id": ma.id_}
                if key not in module.store.slot_of:
                    fast_meta(meta)  # what sampled episodes copy, looked up once per episode
                module.store.add_chunk(key, cols[0], cols[1], cols[2], bool(sa.is_terminated),
                                       bool(sa.is_truncated), int(sa.t_started), meta,
                                       module._insert_priority(weight))
                self._agents[ma.id_][sa.agent_id] = mid
                self._module_added[mid] += len(sa)
                self._num_agent_timesteps_added += len(sa)
                agent_steps[mid] = agent_steps.get(mid, 0) + len(sa)
            while self._num_timesteps > self.capacity and len(self._order) > 1:
                steps_evicted += self._evict_oldest()
                episodes_evicted += 1
        self._log_add(steps_added, episodes_added, episodes_evicted, steps_evicted, agent_steps)

    def _evict_oldest(self) -> int:
        eid = self._order.popleft()
        for aid, mid in self._agents.pop(eid).items():
            self._modules[mid].store.evict((eid, aid))
            self._module_evicted[mid] += 1
        steps = self._env_steps.pop(eid)
        self._done.pop(eid, None)
        self._num_timesteps -= steps
        self._num_episodes_evicted += 1
        return steps

    def _log_add(self, steps: int, episodes: int, episodes_evicted: int, steps_evicted: int,
                 module_steps: dict[Any, int]) -> None:
        if self.metrics is None:
            return
        mods = {m: module_steps.get(m, 0) for m in self._modules}
        zero = dict.fromkeys(self._modules, 0)
        self._update_add_metrics(
            num_episodes_added=episodes, num_env_steps_added=steps, num_episodes_evicted=episodes_evicted,
            num_env_steps_evicted=steps_evicted, agent_to_num_episodes_added={}, agent_to_num_steps_added={},
            agent_to_num_episodes_evicted={}, agent_to_num_steps_evicted={},
            module_to_num_episodes_added=zero, module_to_num_steps_added=mods,
            module_to_num_episodes_evicted=zero, module_to_num_steps_evicted=zero)

    # ------------------------------------------------------------ sample
    def sample(self, num_items: int | None = None, *, batch_size_B: int | None = None,
               batch_length_T: int | None = None, n_step: int | tuple[int, int] | None = 1, gamma: float = 0.99,
               include_infos: bool = False, include_extra_model_outputs: bool = False,
               replay_mode: str = "independent", modules_to_sample: Any = None, beta: float | None = None,
               to_numpy: bool = False, **kwargs: Any) -> Any:
        """``num_items`` transitions for every module (or every module in ``modules_to_sample``):
        RLlib's flat list of episodes, or for dict chunks ``{module_id: dict batch}``."""
        if replay_mode != "independent":
            raise ConfigError("replay_mode", replay_mode, "'independent' (synchronized replay is not offered)")
        if num_items is not None and batch_size_B is not None:
            raise ConfigError("num_items", num_items, "either num_items or batch_size_B, not both")
        B = _int("num_items", (num_items if num_items is not None else batch_size_B) or self.batch_size_B, 1)
        mids = list(modules_to_sample) if modules_to_sample else list(self._modules)
        for mid in mids:
            if mid not in self._modules or self._modules[mid].store.num_steps == 0:
                raise EmptyBufferError(f"module {mid!r}", 0, "stored timesteps of every module to sample")
        out: list[Any] = []
        batches: dict[Any, Any] = {}
        n_means: dict[Any, float] = {}
        resamples: dict[Any, int] = {}
        for mid in mids:
            module = self._modules[mid]
            episodes, mean_n, redrawn = self._sample_module(module, B, n_step or 1, gamma, beta, include_infos,
                                                            include_extra_model_outputs, to_numpy)
            if self._format == "dict":
                batches[mid] = episodes
                out.extend(episodes["episode_ids"])
            else:
                out.extend(episodes)
            self._module_sampled[mid] += B
            n_means[mid] = mean_n
            resamples[mid] = redrawn
        self.sampled_timesteps += B
        if self.metrics is not None:
            total = B * len(mids)
            self._update_sample_metrics(
                num_env_steps_sampled=total, num_episodes_per_sample=len(
                    {i[0] for i in out} if self._format == "dict" else {e.multi_agent_episode_id for e in out}),
                num_env_steps_per_sample=total, sampled_n_step=float(np.mean(list(n_means.values()))),
                num_resamples=sum(resamples.values()), agent_to_num_steps_sampled={},
                agent_to_num_episodes_per_sample={}, agent_to_num_steps_per_sample={},
                agent_to_sampled_n_step={}, agent_to_num_resamples={},
                module_to_num_steps_sampled=dict.fromkeys(mids, B),
                module_to_num_episodes_per_sample=dict.fromkeys(mids, 0),
                module_to_num_steps_per_sample=dict.fromkeys(mids, B), module_to_sampled_n_step=n_means,
                module_to_num_resamples=resamples)
        return batches if self._format == "dict" else out

    def _draw(self, module: Any, B: int) -> np.ndarray:
        rows: np.ndarray = module.store.uniform_rows(self.rng, B)
        return rows

    def _weights(self, module: Any, rows: np.ndarray, beta: float | None) -> np.ndarray:
        return np.ones(rows.shape[0])

    def _sample_module(self, module: Any, B: int, n_step: Any, gamma: float, beta: float | None,
                       include_infos: bool, include_extra: bool, to_numpy: bool) -> tuple[Any, float, int]:
        """``B`` transitions of one module, each fitting its agent episode (RLlib's rejection)."""
        store = module.store
        n = module._n_steps(n_step, B)
        rows = self._draw(module, B)
        redrawn = 0
        for _ in range(10_000):
            bad = np.flatnonzero(store.t[rows] + n > store.ep_len[store.ep[rows]])
            if bad.size == 0:
                break
            redrawn += int(bad.size)
            rows[bad] = self._draw(module, bad.size)
        else:
            raise EmptyBufferError("n_step", n_step, "stored agent episodes long enough for this n-step")
        ep, ts = store.ep[rows], store.t[rows]
        episodes = module._transitions(rows, ep, ts, n, n, gamma, self._weights(module, rows, beta),
                                       include_infos=include_infos, include_extra_model_outputs=include_extra,
                                       to_numpy=to_numpy)
        module._last_sampled_indices = store.ids_of(rows).tolist()
        return episodes, float(n.mean()), redrawn

    # ------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """A picklable state: every module's store and the episode bookkeeping."""
        return {"replaytables_multi_agent": True,
                "modules": {mid: m.get_state() for mid, m in self._modules.items()},
                "order": list(self._order), "env_steps": dict(self._env_steps), "agents": dict(self._agents),
                "done": dict(self._done), "counters": {
                    "_num_timesteps": self._num_timesteps, "_num_timesteps_added": self._num_timesteps_added,
                    "_num_agent_timesteps_added": self._num_agent_timesteps_added,
                    "_num_episodes_evicted": self._num_episodes_evicted, "sampled_timesteps": self.sampled_timesteps},
                "module_added": dict(self._module_added), "module_evicted": dict(self._module_evicted),
                "module_sampled": dict(self._module_sampled), "rng": self.rng.bit_generator.state,
                "format": self._format}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` (a state of RLlib's own buffer is not taken: a ``ConfigError``)."""
        if not isinstance(state, dict) or not state.get("replaytables_multi_agent"):
            raise ConfigError("state", type(state).__name__, "a state from this class's get_state()")
        modules = {}
        for mid, ms in state["modules"].items():
            module = self._module_class(self.capacity, **self._module_kwargs)
            module.set_state(ms)
            module.rng = self.rng
            module.metrics = None
            modules[mid] = module
        self._modules = modules
        self._order = deque(state["order"])
        self._env_steps = dict(state["env_steps"])
        self._agents = {k: dict(v) for k, v in state["agents"].items()}
        self._done = dict(state["done"])
        for k, v in state["counters"].items():
            setattr(self, k, int(v))
        self._module_added = dict(state["module_added"])
        self._module_evicted = dict(state["module_evicted"])
        self._module_sampled = dict(state["module_sampled"])
        self.rng.bit_generator.state = state["rng"]
        self._format = state.get("format", "rllib" if self._order else None)
        for m in self._modules.values():
            m.rng = self.rng


class MultiAgentPrioritizedEpisodeReplayBuffer(MultiAgentEpisodeReplayBuffer,
                                               RLLIB_MULTI_AGENT_PRIORITIZED_EPISODE_BUFFER):  # type: ignore[misc]
    """Per-module prioritized replay of multi-agent episodes (see module docstring).

    Args:
        alpha: prioritization exponent of every module's priorities.
        beta: default importance-weight exponent of :meth:`sample`.
    """

    _module_class = PrioritizedEpisodeReplayBuffer
    _prioritized = True

    def __init__(self, capacity: int = 10000, *, batch_size_B: int = 16, batch_length_T: int = 1,
                 alpha: float = 1.0, beta: float | None = None, metrics_num_episodes_for_smoothing: int = 100,
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(capacity, batch_size_B=batch_size_B, batch_length_T=batch_length_T,
                         metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing, seed=seed,
                         alpha=_number("alpha", alpha), **kwargs)
        self._beta = 0.0 if beta is None else _number("beta", beta)

    @property
    def _module_to_last_sampled_indices(self) -> dict[Any, list[int]]:
        return {mid: m._last_sampled_indices for mid, m in self._modules.items()}

    @property
    def _module_to_sum_segment(self) -> dict[Any, _PriorityView]:
        return {mid: _PriorityView(m) for mid, m in self._modules.items()}

    @property
    def _module_to_max_priority(self) -> dict[Any, float]:
        return {mid: m._max_priority for mid, m in self._modules.items()}

    def _draw(self, module: Any, B: int) -> np.ndarray:
        rows: np.ndarray = module.store.prioritized_rows(self.rng, B)
        return rows

    def _weights(self, module: Any, rows: np.ndarray, beta: float | None) -> np.ndarray:
        b = self._beta if beta is None else _number("beta", beta)
        if not b:
            return np.ones(rows.shape[0])
        tree = module.store.tree
        w: np.ndarray = np.power(tree.leaves[rows] / tree.min_positive, -b)
        return w

    def update_priorities(self, priorities: Any, module_id: Any = None, *, ids: Any = None) -> None:
        """New priorities for the last sample of ``module_id`` (a dict of module id to
        priorities updates several), or for step ``ids`` of that module (a dict batch's
        ``"ids"``); steps evicted since are skipped and counted."""
        if isinstance(priorities, dict):
            for mid in priorities:
                if mid not in self._modules:
                    raise PriorityError("module_id", mid, f"one of the modules {sorted(map(str, self._modules))}")
            for mid, p in priorities.items():
                self._modules[mid].update_priorities(p)
            return
        if module_id not in self._modules:
            raise PriorityError("module_id", module_id, f"one of the modules {sorted(map(str, self._modules))}")
        self._modules[module_id].update_priorities(priorities, ids=ids)
        if self.metrics is not None:
            self.metrics.log_value(("num_priority_updates", module_id), len(np.asarray(priorities).reshape(-1)),
                                   reduce="sum")

    def stats(self) -> dict[str, Any]:
        """Counters of the buffer and per module (priority updates applied, stale ones skipped)."""
        per_module = {mid: {"priority_updates": m._priority_updates, "stale_updates": m._stale_updates,
                            "timesteps": m.store.num_steps} for mid, m in self._modules.items()}
        return {"timesteps": self._num_timesteps, "episodes": len(self._order),
                "sampled_timesteps": self.sampled_timesteps,
                "priority_updates": sum(v["priority_updates"] for v in per_module.values()),
                "stale_updates": sum(v["stale_updates"] for v in per_module.values()), "per_module": per_module}

