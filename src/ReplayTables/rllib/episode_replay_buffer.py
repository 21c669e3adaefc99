"""RLlib's new-stack ``EpisodeReplayBuffer`` on columnar step storage.

    config.training(replay_buffer_config={
        "type": "ReplayTables.rllib.EpisodeReplayBuffer", "capacity": 50_000})

Takes what RLlib's buffer takes (``add(list of SingleAgentEpisode chunks)``,
chunks of one episode id continue it) and returns what it returns
(``sample(..., sample_episodes=True)``: one-transition episodes with the
n-step discounted return, ``n_step`` and ``weights`` in
``extra_model_outputs``; ``sample()``: RLlib's ``[B, T]`` batch dict). The
steps live in :class:`~ReplayTables.engine.episode_steps.EpisodeSteps`, not in a
deque of episode objects; draws, n-step walks and returns are vectorised over
the batch. When Ray is importable the class subclasses RLlib's
``EpisodeReplayBuffer`` (so RLlib's type and ``isinstance`` checks accept it);
this module is imported only when the class is first used.

Without Ray (and with it, if that is what is added) the buffer takes our dict
chunks (:mod:`~ReplayTables.rllib.episode_chunks`) and returns dict batches
(:mod:`~ReplayTables.rllib.episode_batches`): a buffer returns the kind it holds.

Differences from RLlib 2.60 (deliberate, see docs/rllib-inside.md): an item
of an n-step sample counts one towards ``num_items`` even when its n-step is
cut short by the episode's end (RLlib's count can go down and return more
items than asked); a chunk that does not continue its stored episode
(``t_started`` off, or the episode already ended) is an ``EpisodeError``
instead of an ``AssertionError``; a lookback buffer in the first chunk seen of
an episode is not stored.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic, new_lock
from ReplayTables.engine.episode_steps import EpisodeSteps, flatten_fields
from ReplayTables.errors import ConfigError, EmptyBufferError, EpisodeError, SchemaError
from ReplayTables.rllib.episode_batches import slice_chunk, transition_batch
from ReplayTables.rllib.episode_chunks import as_episode, is_dict_chunk
from ReplayTables.rllib.episode_compat import (
    DEFAULT_AGENT_ID,
    DEFAULT_MODULE_ID,
    HAVE_RAY,
    RLLIB_EPISODE_BUFFER,
    MetricsLogger,
    RLlibBufferType,
    build_episode,
    fast_meta,
    lookback_buffer,
    make_episodes,
)

__all__ = ["EpisodeReplayBuffer"]

#: Constructor keys RLlib's configs pass besides ``capacity`` (``type`` is RLlib's).
KNOWN_KEYS = frozenset({"type", "batch_size_B", "batch_length_T", "metrics_num_episodes_for_smoothing", "seed",
                        "alpha", "beta"})


def _batch(values: list[Any]) -> Any:
    """A list of nested per-step values as nested arrays (RLlib's ``batch``)."""
    from ray.rllib.utils.spaces.space_utils import batch

    return batch(values)


def _int(name: str, value: Any, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, value, f"an integer >= {lo}")
    return int(value)


class EpisodeReplayBuffer(RLLIB_EPISODE_BUFFER, metaclass=RLlibBufferType):  # type: ignore[misc]
    """Episodes of steps, FIFO by whole episodes, uniform over stored steps.

    Args:
        capacity: timesteps stored before the oldest episodes are evicted (at least
            one episode stays, however long).
        batch_size_B, batch_length_T: defaults of :meth:`sample` (RLlib's).
        metrics_num_episodes_for_smoothing: window of the smoothed metrics.
        seed: seeds the sampling generator (RLlib's buffers are unseeded).

    Every public call holds the buffer's lock (``buffer.lock``), so threads may share
    it. RLlib's ``update_priorities`` refers to the last sample: a learner that
    shares the buffer holds ``buffer.lock`` around its sample and its update.
    """

    _prioritized = False

    def __init__(self, capacity: int = 10000, *, batch_size_B: int = 16, batch_length_T: int = 64,
                 metrics_num_episodes_for_smoothing: int = 100, seed: int | None = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - KNOWN_KEYS)
        if unknown:
            raise ConfigError(unknown[0], kwargs[unknown[0]], f"one of the constructor keys "
                                                                f"{sorted(KNOWN_KEYS | {'capacity'})}")
        self._lock = new_lock()
        self.capacity = _int("capacity", capacity, 1)
        self.batch_size_B = _int("batch_size_B", batch_size_B, 1)
        self.batch_length_T = _int("batch_length_T", batch_length_T, 0)
        self.store = EpisodeSteps(self.capacity, prioritized=self._prioritized)
        self._num_episodes_evicted = 0
        self._num_timesteps = 0
        self._num_timesteps_added = 0
        self.sampled_timesteps = 0
        self.rng = np.random.default_rng(seed)
        self.metrics = MetricsLogger(root=False) if MetricsLogger is not None else None
        self._metrics_num_episodes_for_smoothing = _int("metrics_num_episodes_for_smoothing",
                                                        metrics_num_episodes_for_smoothing, 1)
        self._extra_keys: list[Any] | None = None
        self._last_sampled_indices: list[int] = []
        #: what was added, so what sampling returns: "dict" (our dict chunks) or "rllib" (RLlib episodes)
        self._format: str | None = None

    # ------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self.get_num_timesteps()

    def get_num_episodes(self, module_id: Any = None) -> int:
        """Episodes stored (completed or not)."""
        return self.store.num_episodes

    def get_num_episodes_evicted(self, module_id: Any = None) -> int:
        return self._num_episodes_evicted

    def get_num_timesteps(self, module_id: Any = None) -> int:
        """Timesteps (actions) stored."""
        return self.store.num_steps

    def get_sampled_timesteps(self, module_id: Any = None) -> int:
        return self.sampled_timesteps

    def get_added_timesteps(self, module_id: Any = None) -> int:
        return self._num_timesteps_added

    @property
    def lock(self) -> Any:
        """The buffer's re-entrant lock, held by every public call (hold it to compose calls)."""
        return self._lock

    @atomic
    def get_metrics(self) -> dict[str, Any]:
        """The buffer's metrics, reduced (RLlib's ``MetricsLogger`` keys)."""
        return self.metrics.reduce() if self.metrics is not None else {}

    @property
    def episodes(self) -> list[Any]:
        """The stored episodes as RLlib episode objects, oldest first (a read-only copy, built on
        each access: for inspection and RLlib's tests, not for a training loop)."""
        with self._lock:
            return [self._stored_episode(slot) for slot in self.store.order]

    # ------------------------------------------------------------ add
    def _columns(self, eps: Any, extra_keys: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """Observation and step fields of an episode chunk as flattened arrays, and its infos
        (an empty list when every info is empty, the common case: nothing to store)."""
        L = len(eps)
        obs = eps.get_observations()
        if isinstance(obs, list) and obs and isinstance(obs[0], dict):
            obs = _batch(obs)
        obs_fields = flatten_fields("obs", obs, L + 1)
        actions = eps.get_actions()
        if isinstance(actions, list) and actions and isinstance(actions[0], dict):
            actions = _batch(actions)
        step_fields = flatten_fields("actions", actions, L)
        step_fields += flatten_fields("rewards", np.asarray(eps.get_rewards(), dtype=np.float64), L)
        keys = list(eps.extra_model_outputs.keys())
        if set(keys) != set(extra_keys):
            raise SchemaError("episode.extra_model_outputs", sorted(map(str, keys)),
                              f"the keys of the stored episodes: {sorted(map(str, extra_keys))}")
        for i, k in enumerate(extra_keys):
            step_fields += flatten_fields(f"extra{i}", np.asarray(eps.get_extra_model_outputs(k)), L)
        infos = eps.get_infos()
        return obs_fields, step_fields, (list(infos) if any(infos) else [])

    def _prepare(self, episodes: list[Any], keys: list[Any] | None = None) -> tuple[list[tuple[Any, Any]], list[Any]]:
        """Every chunk converted and checked (fields, continuity) before anything changes.

        ``keys``: the ids the chunks are stored under (default: their ``id_``). Returns the
        chunks with steps and their columns, and the extra-model-output keys.
        """
        store = self.store
        extra_keys = self._extra_keys
        fields = store.fields
        ends: dict[Any, tuple[int, bool]] = {}  # chunks of this call: where each episode ends now
        out = []
        for j, eps in enumerate(episodes):
            key = eps.id_ if keys is None else keys[j]
            if len(eps) == 0:
                continue  # a chunk without steps adds nothing (see the module docstring)
            if eps.t_started is None:  # a dict chunk without t_started continues its episode (or starts at 0)
                slot = store.slot_of.get(key)
                eps.t_started = ends[key][0] if key in ends else (
                    0 if slot is None else int(store.ep_t_started[slot] + store.ep_len[slot]))
            if extra_keys is None:
                extra_keys = list(eps.extra_model_outputs.keys())
            cols = self._columns(eps, extra_keys)
            if fields is None:
                fields = store.describe(cols[0], cols[1])
            else:
                store.check_fields(fields, cols[0], cols[1])
            t_started = int(eps.t_started)
            if key in ends:
                end, done = ends[key]
                if done or t_started != end:
                    raise EpisodeError("episode.t_started", t_started,
                                       f"{end} (where the earlier chunk of episode {key!r} in this add ends)"
                                       if not done else "no chunk after the episode's end in this add")
            else:
                store.check_chunk(key, len(eps), t_started)
            ends[key] = (t_started + len(eps), bool(eps.is_terminated or eps.is_truncated))
            out.append((eps, cols))
        return out, list(extra_keys or [])

    @atomic
    def add(self, episodes: Any, weight: float | None = None) -> None:
        """Store episode chunks; a chunk whose id is stored continues that episode.

        After each chunk, the oldest episodes are evicted whole while more than
        ``capacity`` timesteps are stored and more than one episode is (RLlib's rule).
        Every chunk is checked first: a refused add changes nothing.
        """
        episodes = list(episodes) if isinstance(episodes, (list, tuple)) else [episodes]
        fmt = chunk_format(episodes, self._format)
        episodes = [as_episode(e, f"episodes[{i}]") for i, e in enumerate(episodes)]
        priority = self._insert_priority(weight)
        prepared, extra_keys = self._prepare(episodes)
        if prepared:
            self._extra_keys = extra_keys
            self._format = fmt
        store = self.store
        steps_added = episodes_added = episodes_evicted = steps_evicted = 0
        for eps, cols in prepared:
            meta = {"agent_id": eps.agent_id, "module_id": eps.module_id,
                    "observation_space": eps.observation_space, "action_space": eps.action_space,
                    "multi_agent_episode_id": getattr(eps, "multi_agent_episode_id", None)}
            if eps.id_ not in store.slot_of:
                fast_meta(meta)  # what sampled episodes copy, looked up once per episode
            new = store.add_chunk(eps.id_, cols[0], cols[1], cols[2], bool(eps.is_terminated),
                                  bool(eps.is_truncated), int(eps.t_started), meta, priority)
            n = len(eps)
            steps_added += n
            episodes_added += int(new)
            self._num_timesteps_added += n
            while store.num_steps > self.capacity and store.num_episodes > 1:
                _, steps = store.evict_oldest()
                episodes_evicted += 1
                steps_evicted += steps
                self._num_episodes_evicted += 1
        self._num_timesteps = store.num_steps
        self._log_add(steps_added, episodes_added, episodes_evicted, steps_evicted)

    def _insert_priority(self, weight: float | None) -> float:
        return 1.0

    def _log_add(self, steps: int, episodes: int, episodes_evicted: int, steps_evicted: int) -> None:
        if self.metrics is None:
            return
        a, m = DEFAULT_AGENT_ID, DEFAULT_MODULE_ID
        self._update_add_metrics(
            num_episodes_added=episodes, num_env_steps_added=steps, num_episodes_evicted=episodes_evicted,
            num_env_steps_evicted=steps_evicted, agent_to_num_episodes_added={a: episodes},
            agent_to_num_steps_added={a: steps}, agent_to_num_episodes_evicted={a: episodes_evicted},
            agent_to_num_steps_evicted={a: steps_evicted}, module_to_num_episodes_added={m: episodes},
            module_to_num_steps_added={m: steps}, module_to_num_episodes_evicted={m: episodes_evicted},
            module_to_num_steps_evicted={m: steps_evicted})

    # ------------------------------------------------------------ sample
    @atomic
    def sample(self, num_items: int | None = None, *, batch_size_B: int | None = None,
               batch_length_T: int | None = None, n_step: int | tuple[int, int] | None = None, beta: float = 0.0,
               gamma: float = 0.99, include_infos: bool = False, include_extra_model_outputs: bool = False,
               sample_episodes: bool | None = False, to_numpy: bool = False, lookback: int = 0,
               min_batch_length_T: int = 0, **kwargs: Any) -> Any:
        """RLlib's sample: ``sample_episodes=True`` gives a list of episodes (n-step
        transitions, or sequences of ``batch_length_T`` with ``lookback``); otherwise
        the ``[B, T]`` batch dict of ``obs``, ``actions``, ``rewards``, ``is_first``,
        ``is_last``, ``is_terminated``, ``is_truncated``."""
        B = self._batch_size(num_items, batch_size_B)
        if self.store.num_steps == 0:
            raise EmptyBufferError("size", 0, "at least one stored timestep to sample from")
        if sample_episodes:
            if n_step is None:
                raise ConfigError("n_step", None, "an n-step (int or (low, high) range) when sampling episodes")
            return self._sample_episodes(B, batch_length_T=batch_length_T or 0, n_step=n_step, gamma=gamma,
                                         include_infos=include_infos,
                                         include_extra_model_outputs=include_extra_model_outputs,
                                         to_numpy=to_numpy, lookback=_int("lookback", lookback),
                                         min_batch_length_T=_int("min_batch_length_T", min_batch_length_T))
        return self._sample_batch(B, _int("batch_length_T", batch_length_T or self.batch_length_T, 1))

    def _batch_size(self, num_items: int | None, batch_size_B: int | None) -> int:
        if num_items is not None and batch_size_B is not None:
            raise ConfigError("num_items", num_items, "either num_items or batch_size_B, not both")
        B = num_items if num_items is not None else batch_size_B
        return _int("num_items", B or self.batch_size_B, 1)

    def _n_steps(self, n_step: int | tuple[int, int] | Sequence[int], B: int) -> np.ndarray:
        """One n-step per item: the given one, or drawn from ``[low, high)`` for a range (as RLlib)."""
        if isinstance(n_step, (tuple, list)):
            if len(n_step) != 2:
                raise ConfigError("n_step", n_step, "an int or a (low, high) range")
            lo, hi = _int("n_step[0]", n_step[0], 1), _int("n_step[1]", n_step[1], 2)
            if hi <= lo:
                raise ConfigError("n_step", n_step, "a range (low, high) with high > low")
            drawn: np.ndarray = self.rng.integers(lo, hi, size=B)
            return drawn
        return np.full(B, _int("n_step", n_step, 1), dtype=np.int64)

    def _sample_batch(self, B: int, T: int) -> dict[str, np.ndarray]:
        """RLlib's ``[B, T]`` batch: each row starts at a random step and continues with
        whole random episodes (from their first step) until it is ``T`` long."""
        store = self.store
        rows_out = np.full((B, T), -1, dtype=np.int64)
        reward = np.zeros((B, T), dtype=np.float64)
        is_first = np.zeros((B, T), dtype=bool)
        is_last = np.zeros((B, T), dtype=bool)
        is_term = np.zeros((B, T), dtype=bool)
        is_trunc = np.zeros((B, T), dtype=bool)
        fill = np.zeros(B, dtype=np.int64)
        first = True
        episodes_seen: set[int] = set()
        distinct_steps = 0
        assert store.storage is not None
        rcol = store.storage.columns[store.field_names.index(("rewards",))]
        while True:
            todo = np.flatnonzero(fill < T)
            if todo.size == 0:
                break
            starts = store.uniform_rows(self.rng, todo.size)
            ep = store.ep[starts]
            if first:
                ts = store.t[starts]
                first = False
            else:
                ts = np.zeros(todo.size, dtype=np.int64)
                starts = store.ep_first[ep]
            episodes_seen.update(np.unique(ep).tolist())
            distinct_steps += todo.size
            length = store.ep_len[ep] - ts + 1  # observations from ts to the episode's end
            take = np.minimum(length, T - fill[todo])
            # positions j in 0..max(take)-1 of each segment
            width = int(take.max())
            seg = store.walk_matrix(starts, width - 1)
            j = np.arange(width)[None, :]
            ok = j < take[:, None]
            r_idx, c_idx = np.nonzero(ok)
            dest_row = todo[r_idx]
            dest_col = fill[todo][r_idx] + c_idx
            rows_out[dest_row, dest_col] = seg[r_idx, c_idx]
            # each row holds the reward that came with its observation (0 at an episode's start)
            reward[dest_row, dest_col] = rcol[seg[r_idx, c_idx]]
            start_col = fill[todo]
            is_first[todo, start_col] = True
            end_col = start_col + take - 1
            is_last[todo, end_col] = True
            reached = take == length
            is_term[todo[reached], end_col[reached]] = store.ep_terminated[ep[reached]]
            trunc = reached & ~store.ep_terminated[ep]
            is_trunc[todo[trunc], end_col[trunc]] = store.ep_truncated[ep[trunc]]
            fill[todo] += take
        fields = store.gather(rows_out)  # a last observation's row repeats the last action, as RLlib does
        obs = self._unflatten(fields, "obs")
        actions = self._unflatten(fields, "actions")
        self.sampled_timesteps += B * T
        self._log_sample(B * T, len(episodes_seen), distinct_steps, None, 0)
        return {"obs": obs, "actions": actions, "rewards": reward, "is_first": is_first, "is_last": is_last,
                "is_terminated": is_term, "is_truncated": is_trunc}

    def _unflatten(self, fields: list[np.ndarray], prefix: str) -> Any:
        """The field(s) under ``prefix`` as an array or a nested dict of arrays."""
        names = self.store.field_names
        picked = [(p[1:], fields[i]) for i, p in enumerate(names) if p[0] == prefix]
        if len(picked) == 1 and picked[0][0] == ():
            return picked[0][1]
        out: dict[str, Any] = {}
        for path, arr in picked:
            d = out
            for key in path[:-1]:
                d = d.setdefault(key, {})
            d[path[-1]] = arr
        return out

    def _draw_rows(self, B: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Start rows of ``B`` items and their sampling probabilities (None: uniform)."""
        return self.store.uniform_rows(self.rng, B), None

    def _sample_episodes(self, B: int, *, batch_length_T: int, n_step: Any, gamma: float, include_infos: bool,
                         include_extra_model_outputs: bool, to_numpy: bool, lookback: int,
                         min_batch_length_T: int) -> Any:
        store = self.store
        if batch_length_T:
            if isinstance(n_step, (tuple, list)) or n_step != 1:
                raise ConfigError("n_step", n_step, "1 when sampling sequences (batch_length_T > 0)")
            return self._sample_sequences(B, batch_length_T, include_infos, include_extra_model_outputs,
                                          to_numpy, lookback, min_batch_length_T)
        n = self._n_steps(n_step, B)
        rows = store.uniform_rows(self.rng, B)
        if min_batch_length_T > 0:
            rows = self._redraw(rows, lambda r: store.t[r] + min_batch_length_T < store.ep_len[store.ep[r]])
        ep = store.ep[rows]
        ts = store.t[rows]
        m = np.minimum(n, store.ep_len[ep] - ts)  # steps actually available (RLlib slices to the end)
        # RLlib's sampled episodes always carry infos; a dict batch has them when asked for
        out = self._transitions(rows, ep, ts, n, m, gamma, np.ones(B),
                                include_infos=include_infos or self._format != "dict",
                                include_extra_model_outputs=include_extra_model_outputs, to_numpy=to_numpy)
        self.sampled_timesteps += B
        self._log_sample(B, int(np.unique(ep).size), int(np.unique(rows).size), float(n.mean()), 0)
        return out

    def _redraw(self, rows: np.ndarray, valid: Any, draw: Any = None) -> np.ndarray:
        """Replace rows that fail ``valid`` by fresh draws until all pass (RLlib's rejection)."""
        draw = draw or (lambda k: self.store.uniform_rows(self.rng, k))
        for _ in range(10_000):
            bad = np.flatnonzero(~valid(rows))
            if bad.size == 0:
                return rows
            rows[bad] = draw(bad.size)
        raise EmptyBufferError("min_batch_length_T", "no valid start", "stored episodes long enough to sample from")

    def _transitions(self, rows: np.ndarray, ep: np.ndarray, ts: np.ndarray, n: np.ndarray, m: np.ndarray,
                     gamma: float, weights: np.ndarray, *, include_infos: bool, include_extra_model_outputs: bool,
                     to_numpy: bool) -> Any:
        """One-transition episodes ``(o_t, a_t, sum_k gamma^k r_(t+k), o_(t+m))`` for each start row
        (one dict batch of them for dict chunks)."""
        store = self.store
        width = int(m.max())
        walk = store.walk_matrix(rows, width)  # rows t .. t + width
        k = np.arange(width + 1)[None, :]
        nxt = walk[np.arange(rows.shape[0]), m]
        assert store.storage is not None
        rcol = store.storage.columns[store.field_names.index(("rewards",))]
        # the reward of step t + j came with observation t + j + 1
        rmask = k[:, :width] < m[:, None]
        rv = np.where(rmask, rcol[np.maximum(walk[:, 1:], 0)], 0.0)
        returns = (rv * (gamma ** k[:, :width])).sum(axis=1) if width else np.zeros(rows.shape[0])
        here = store.gather(rows)
        there = store.gather(nxt)
        obs0, obs1 = self._unflatten(here, "obs"), self._unflatten(there, "obs")
        actions = self._unflatten(here, "actions")
        extras = None
        if include_extra_model_outputs and self._extra_keys:
            extras = {key: self._unflatten(here, f"extra{i}") for i, key in enumerate(self._extra_keys)}
        reached_end = ts + m == store.ep_len[ep]
        term = reached_end & store.ep_terminated[ep]
        trunc = reached_end & store.ep_truncated[ep] & ~term
        infos = (store.infos_at(rows), store.infos_at(nxt)) if include_infos else None
        ids = store.ep_id
        metas = store.ep_meta
        ep_list = ep.tolist()
        if self._format == "dict":
            return transition_batch(ids=[metas[e].get("id_", ids[e]) for e in ep_list], obs=(obs0, obs1),
                                    actions=actions, rewards=returns, terminated=term, truncated=trunc,
                                    weights=weights, n_steps=n, step_ids=store.ids_of(rows), t=ts, extras=extras,
                                    infos=infos)
        # an agent's episode inside a multi-agent one is stored under (episode id, agent id); "id_" is its own id
        return make_episodes(ids=[metas[e].get("id_", ids[e]) for e in ep_list], metas=[metas[e] for e in ep_list],
                             obs=(obs0, obs1),
                             actions=actions, rewards=returns, infos=infos, terminated=term, truncated=trunc,
                             weights=weights, n_steps=n, extras=extras, t_started=ts, to_numpy=to_numpy)

    def _sample_sequences(self, B: int, T: int, include_infos: bool, include_extra_model_outputs: bool,
                          to_numpy: bool, lookback: int, min_batch_length_T: int) -> list[Any]:
        """Slices of up to ``T`` steps from random starts, with ``lookback`` steps before them
        (fewer at an episode's start); RLlib counts ``len + 1`` items per slice."""
        store = self.store
        out: list[Any] = []
        count = 0
        episodes_seen: set[int] = set()
        starts_seen: set[int] = set()
        while count < B:
            rows = store.uniform_rows(self.rng, B)
            if min_batch_length_T > 0:
                ok = store.t[rows] + min_batch_length_T < store.ep_len[store.ep[rows]]
                rows = rows[ok]
            for r in rows.tolist():
                if count >= B:
                    break
                e = int(store.ep[r])
                t0 = int(store.t[r])
                stop = min(t0 + T, int(store.ep_len[e]))
                lb = min(lookback, t0)
                out.append(self._slice_episode(e, t0 - lb, stop, lb, to_numpy))
                count += (stop - t0 + 1) or 1
                episodes_seen.add(e)
                starts_seen.add(r)
        self.sampled_timesteps += B
        self._log_sample(B, len(episodes_seen), len(starts_seen), 1.0, 0)
        return out

    def _slice_episode(self, slot: int, lo: int, stop: int, lookback: int, to_numpy: bool,
                       n_step: int | None = 1) -> Any:
        """Steps ``lo .. stop`` (observations to ``stop``) of a stored episode as an RLlib
        episode whose first ``lookback`` steps are its lookback buffer."""
        store = self.store
        first = int(store.ep_first[slot])
        obs_rows = store.walk(np.array([first]), lo)
        rows = store.walk_matrix(obs_rows, stop - lo)[0]
        fields = store.gather(rows)
        obs = self._unflatten(fields, "obs")
        steps = [f[:-1] for f in fields]  # actions and extras at observations lo .. stop - 1
        actions = self._unflatten(steps, "actions")
        rewards = self._unflatten([f[1:] for f in fields], "rewards")  # came with observations lo + 1 .. stop
        extras = {key: self._unflatten(steps, f"extra{i}") for i, key in enumerate(self._extra_keys or [])}
        length = stop - lo - lookback
        infos = [i or {} for i in store.infos_at(rows)]
        reached = stop == int(store.ep_len[slot])
        term = bool(reached and store.ep_terminated[slot])
        if self._format == "dict":
            return slice_chunk(id_=store.ep_meta[slot].get("id_", store.ep_id[slot]), meta=store.ep_meta[slot],
                               obs=obs, actions=actions, rewards=rewards, extras=extras, infos=infos,
                               lookback=lookback, n_step=n_step, terminated=term,
                               truncated=bool(reached and not term and store.ep_truncated[slot]),
                               t_started=int(store.ep_t_started[slot]) + lo + lookback)
        extras_ilb: dict[str, Any] = {k: lookback_buffer(v, lookback) for k, v in extras.items()}
        if n_step is not None:
            extras_ilb["n_step"] = lookback_buffer(np.full(length + lookback, n_step), lookback)
            extras_ilb["weights"] = lookback_buffer(np.ones(length + lookback), lookback)
        return build_episode(
            id_=store.ep_id[slot], meta=store.ep_meta[slot], observations=lookback_buffer(obs, lookback),
            actions=lookback_buffer(actions, lookback), rewards=lookback_buffer(rewards, lookback),
            infos=lookback_buffer(infos, lookback), extra_model_outputs=extras_ilb, terminated=term,
            truncated=bool(reached and not term and store.ep_truncated[slot]),
            t_started=int(store.ep_t_started[slot]) + lo + lookback, to_numpy=to_numpy)

    def _stored_episode(self, slot: int) -> Any:
        length = int(self.store.ep_len[slot])
        return self._slice_episode(slot, 0, length, 0, to_numpy=True, n_step=None)

    def _log_sample(self, sampled: int, episodes: int, distinct: int, n_step: float | None, resamples: int) -> None:
        if self.metrics is None:
            return
        a, m = DEFAULT_AGENT_ID, DEFAULT_MODULE_ID
        self._update_sample_metrics(
            num_env_steps_sampled=sampled, num_episodes_per_sample=episodes, num_env_steps_per_sample=distinct,
            sampled_n_step=n_step, num_resamples=resamples, agent_to_num_steps_sampled={a: sampled},
            agent_to_num_episodes_per_sample={a: episodes}, agent_to_num_steps_per_sample={a: distinct},
            agent_to_sampled_n_step=None if n_step is None else {a: n_step}, agent_to_num_resamples={a: resamples},
            module_to_num_steps_sampled={m: sampled}, module_to_num_episodes_per_sample={m: episodes},
            module_to_num_steps_per_sample={m: distinct},
            module_to_sampled_n_step=None if n_step is None else {m: n_step},
            module_to_num_resamples={m: resamples})

    # ------------------------------------------------------------ state
    @atomic
    def get_state(self) -> dict[str, Any]:
        """A picklable state: the columnar store and the counters (not episode objects)."""
        return {"replaytables_episode_steps": self.store.state_dict(),
                "_num_episodes_evicted": self._num_episodes_evicted,
                "_num_timesteps_added": self._num_timesteps_added, "sampled_timesteps": self.sampled_timesteps,
                "_extra_keys": self._extra_keys, "rng": self.rng.bit_generator.state,
                "_last_sampled_indices": list(self._last_sampled_indices), "format": self._format}

    @atomic
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`, or a state of RLlib's own buffer (its episodes are re-added)."""
        if "replaytables_episode_steps" not in state:
            self._set_rllib_state(state)
            return
        store = EpisodeSteps.from_state(state["replaytables_episode_steps"])
        if store.capacity != self.capacity or store.prioritized != self._prioritized:
            raise ConfigError("state.capacity", store.capacity, f"{self.capacity} (this buffer's capacity)")
        self.store = store
        self._num_episodes_evicted = int(state["_num_episodes_evicted"])
        self._num_timesteps_added = int(state["_num_timesteps_added"])
        self._num_timesteps = store.num_steps
        self.sampled_timesteps = int(state["sampled_timesteps"])
        self._extra_keys = state["_extra_keys"]
        self.rng.bit_generator.state = state["rng"]
        self._last_sampled_indices = list(state["_last_sampled_indices"])
        self._format = state.get("format", "rllib" if store.num_episodes else None)

    def _set_rllib_state(self, state: dict[str, Any]) -> None:
        from ray.rllib.env.single_agent_episode import SingleAgentEpisode

        fresh = type(self)(self.capacity, batch_size_B=self.batch_size_B, batch_length_T=self.batch_length_T)
        fresh.add([SingleAgentEpisode.from_state(s) for s in state["episodes"]])
        self.store = fresh.store
        self._extra_keys = fresh._extra_keys
        self._num_episodes_evicted = int(state.get("_num_episodes_evicted", 0))
        self._num_timesteps_added = int(state.get("_num_timesteps_added", fresh._num_timesteps_added))
        self._num_timesteps = self.store.num_steps
        self.sampled_timesteps = int(state.get("sampled_timesteps", 0))
        self._format = fresh._format


def chunk_format(episodes: list[Any], stored: str | None, where: str = "episodes") -> str:
    """``"dict"`` or ``"rllib"``: the one kind of chunk in ``episodes``, which must be the kind
    already stored (a buffer returns what it was given, so it holds one kind)."""
    kinds = {"dict" if is_dict_chunk(e) else "rllib" for e in episodes}
    if not HAVE_RAY and "rllib" in kinds:
        bad = next(e for e in episodes if not is_dict_chunk(e))
        raise SchemaError(where, type(bad).__name__, "dict chunks (Ray is not installed: see docs/rllib-inside.md)")
    fmt = stored if not kinds else kinds.pop()
    if kinds or (stored is not None and fmt != stored):
        raise SchemaError(where, "dict chunks and RLlib episodes" if kinds else f"{fmt} chunks",
                          f"{stored or 'one kind of'} chunks only (a buffer holds and returns one kind)")
    return fmt or "rllib"
