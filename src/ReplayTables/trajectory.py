"""Front end for step streams: pixel and recurrent agents.

    buffer = TrajectoryReplay(100_000, obs_shape=(84, 84), obs_dtype=np.uint8, frame_stack=4, n_step=3)
    obs, _ = env.reset(seed=0)
    buffer.begin_episode(obs)
    for t in range(T):
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add_step(action, reward, next_obs, terminated, truncated)
        if terminated or truncated:
            obs, _ = env.reset()
            buffer.begin_episode(obs)
    batch = buffer.sample(32)   # obs, action, returns, discount, next_obs, ids, weights

The vectorised form is :meth:`TrajectoryReplay.begin_episodes` /
:meth:`TrajectoryReplay.add_steps` with one stream per sub-environment.

Every observation is stored once (``next_obs`` and frame stacks are assembled
at sample time by index), n-step targets respect ``terminated`` vs.
``truncated``, and :meth:`TrajectoryReplay.sample_sequences` draws fixed-length
windows with burn-in for recurrent agents. Storage is in memory, in
memory-mapped files (``storage="memmap"``) or Zstandard-compressed
(``storage="zstd"``). The machinery lives in the engine (``layouts/episodes``,
``layouts/nstep``, ``layouts/sequence_starts``, ``storage``); this module checks
input and translates the API.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.base import TableBuffer
from ReplayTables.batch import SequenceBatch, TransitionBatch
from ReplayTables.checkpoint import refusing, split_arrays
from ReplayTables.engine import validators
from ReplayTables.engine.layouts.episodes import EpisodeRing
from ReplayTables.engine.samplers import PrioritizedSampler, Sampler, UniformSampler
from ReplayTables.engine.schema import FieldSpec, Schema, check_fits
from ReplayTables.engine.state import Scalars
from ReplayTables.engine.state_checks import (
    MAX_INT,
    check_dtype,
    check_shape,
    integer,
    mapping,
    nbytes,
    number,
    string,
)
from ReplayTables.engine.storage import (
    ArrayFrames,
    CompressedFrames,
    FrameStore,
    MappedDirectory,
    PackedStorage,
    RowStorage,
    frame_field,
)
from ReplayTables.engine.table import MAX_COUNT, Table, check_capacity, check_count, check_table_bytes, table_nbytes
from ReplayTables.errors import CheckpointError, ConfigError, EmptyBufferError, SchemaError
from ReplayTables.PER import PERConfig
from ReplayTables.rate_limiters import RateLimiter
from ReplayTables.trajectory_types import SequenceConfig

__all__ = ["SequenceBatch", "SequenceConfig", "TrajectoryReplay", "TransitionBatch"]

STORAGE_KINDS = ("memory", "memmap", "zstd")
STACK_PADDING = ("repeat", "zeros")


def _spec(name: str, value: Any) -> FieldSpec:
    if isinstance(value, FieldSpec) and value.shape is not None and value.dtype is not None:
        return FieldSpec(_shape(f"{name}.shape", value.shape), _dtype(f"{name}.dtype", value.dtype))
    if isinstance(value, tuple) and len(value) == 2:
        return FieldSpec(_shape(f"{name}.shape", value[0]), _dtype(f"{name}.dtype", value[1]))
    raise ConfigError(name, value, "a FieldSpec(shape, dtype) or a (shape, dtype) pair")


def _shape(name: str, value: Any) -> tuple[int, ...]:
    expected = "a tuple of non-negative integers, e.g. (84, 84)"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ConfigError(name, value, expected)
    if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0 for s in value):
        raise ConfigError(name, value, expected)
    return tuple(int(s) for s in value)


def _dtype(name: str, value: Any) -> np.dtype[Any]:
    """A numeric numpy dtype (bool, integers, floats, complex); anything else is a ConfigError."""
    try:
        dtype: np.dtype[Any] = np.dtype(value)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "a numeric numpy dtype such as np.uint8 or np.float32") from None
    if dtype.kind not in "biufc" or dtype.subdtype is not None:
        raise ConfigError(name, value, f"a numeric numpy dtype such as np.uint8 or np.float32 (got {dtype})")
    return dtype


def _positive(name: str, value: Any) -> int:
    return validators.integer(name, value, 1, MAX_COUNT, expected="a positive integer")


class TrajectoryReplay(TableBuffer):
    """Replay for step streams: each observation stored once; stacks, n-step and sequences at sample time.

    Args:
        capacity: records kept (one per observation; an episode of ``L`` steps
            takes ``L + 1``), split evenly over ``num_streams``.
        obs_shape, obs_dtype: one observation (one frame when stacking).
        action_shape, action_dtype: one action.
        extras: more per-step fields, ``{"logp": FieldSpec((), np.float32)}``.
        num_streams: parallel environments (one ring each).
        frame_stack: ``k`` frames per observation, assembled at sample time.
        stack_padding: ``"repeat"`` the episode's first frame, or ``"zeros"``,
            where a stack would reach before the episode started.
        n_step, gamma: n-step returns (see :class:`TransitionBatch`).
        sequence: a :class:`SequenceConfig` to enable :meth:`sample_sequences`.
        per: a :class:`~ReplayTables.PER.PERConfig` for prioritized transitions
            (``new_priority_mode`` ``'max'`` or ``'mean'``); ``None`` is uniform.
        storage: ``"memory"``, ``"memmap"`` (files under ``path``) or ``"zstd"``
            (compressed frames, the ``compression`` extra).
        path: directory of a memory-mapped buffer (created; must not hold one).
        compression_level: Zstandard level for ``storage="zstd"``.
        rng: a ``numpy.random.Generator``, or an int seed for ``np.random.default_rng(seed)``.
        shared: keep the whole state (rows, frames, rings, ids, priorities, counters) in
            shared memory for other processes to ``ReplayTables.attach(buffer.handle())``;
            needs ``storage="memory"`` and no ``sequence`` (see docs/shared-memory.md).
        rate_limiter: a :class:`~ReplayTables.rate_limiters.RateLimiter` that steps and
            samples wait for (``timeout=`` on each call). Each step counts one insert
            (it becomes one transition); each sampled transition or window one sample.

    Every public call is atomic (it holds the buffer's lock), so threads may share it.
    ``max_size`` counts records (observations, each episode's final one included);
    ``size()`` and ``len()`` count the complete transitions that can be sampled now.
    """

    def __init__(self, capacity: int, obs_shape: Any, obs_dtype: Any = np.uint8, *, action_shape: Any = (),
                 action_dtype: Any = np.int64, extras: Mapping[str, Any] | None = None, num_streams: int = 1,
                 frame_stack: int = 1, stack_padding: str = "repeat", n_step: int = 1, gamma: float = 0.99,
                 sequence: SequenceConfig | None = None, per: PERConfig | None = None, storage: str = "memory",
                 path: str | os.PathLike[str] | MappedDirectory | None = None, compression_level: int = 3,
                 rng: np.random.Generator | int | None = None, rate_limiter: RateLimiter | None = None,
                 shared: bool = False) -> None:
        capacity = check_capacity("capacity", capacity)
        self.obs_shape = _shape("obs_shape", obs_shape)
        self.obs_dtype = _dtype("obs_dtype", obs_dtype)
        self.action_shape = _shape("action_shape", action_shape)
        self.action_dtype = _dtype("action_dtype", action_dtype)
        self.extras = {str(k): _spec(f"extras.{k}", v) for k, v in (extras or {}).items()}
        clash = set(self.extras) & {"action", "reward", "terminated", "truncated", "obs", "next_obs"}
        if clash:
            raise ConfigError("extras", sorted(clash), "names other than the built-in step fields")
        self.num_streams = _positive("num_streams", num_streams)
        self.frame_stack = _positive("frame_stack", frame_stack)
        if stack_padding not in STACK_PADDING:
            raise ConfigError("stack_padding", stack_padding, f"one of {STACK_PADDING}")
        self.stack_padding = stack_padding
        self.n_step = _positive("n_step", n_step)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ConfigError("gamma", gamma, "a number in [0, 1]")
        self.gamma = float(gamma)
        if sequence is not None and not isinstance(sequence, SequenceConfig):
            raise ConfigError("sequence", sequence, "a SequenceConfig or None")
        self.sequence = sequence
        if per is not None and (not isinstance(per, PERConfig) or per.new_priority_mode == "given"):
            raise ConfigError("per", per, "None or a PERConfig with new_priority_mode 'max' or 'mean' (items are "
                                          "made when their n-step window completes, so no priority is given)")
        self.per = per
        if storage not in STORAGE_KINDS:
            raise ConfigError("storage", storage, f"one of {STORAGE_KINDS}")
        if (storage == "memmap") != (path is not None):
            raise ConfigError("path", path, "a directory exactly when storage='memmap'")
        self.storage_kind = storage
        # open() passes the reopened directory; a path is a new one, created below once the arguments are checked
        self.path = None if path is None else path.root if isinstance(path, MappedDirectory) else Path(path)
        if isinstance(compression_level, bool) or not isinstance(compression_level, (int, np.integer)) \
                or not 1 <= compression_level <= 22:  # checked for every storage: a typo is not silently kept
            raise ConfigError("compression_level", compression_level,
                              "an integer Zstandard level from 1 to 22 (used by storage='zstd')")
        self.compression_level = int(compression_level)
        if shared is True and (storage != "memory" or sequence is not None):
            raise ConfigError("shared", shared, "storage='memory' and no SequenceConfig (a shared step-stream "
                                                "buffer keeps frames in shared memory and samples transitions)")
        self._calls = Scalars("frontend.sample_calls", [0], np.int64)  # samples so far: beta anneals with them
        self._capacity_arg = capacity
        capacity = capacity // self.num_streams * self.num_streams
        if capacity == 0:
            raise ConfigError("capacity", self._capacity_arg, f"at least num_streams={self.num_streams}")
        fields: dict[str, Any] = {"action": FieldSpec(self.action_shape, self.action_dtype),
                                  "reward": FieldSpec((), np.float32), "terminated": FieldSpec((), np.bool_),
                                  "truncated": FieldSpec((), np.bool_), **self.extras}
        # in memory: frames and step rows; memory-mapped files may exceed RAM (only bookkeeping counts);
        # zstd frames are compressed (their size is not known up front)
        frame_bytes = int(np.prod(self.obs_shape, dtype=np.int64)) * self.obs_dtype.itemsize
        row_bytes = sum(int(np.prod(f.shape or (), dtype=np.int64)) * np.dtype(f.dtype).itemsize
                        for f in fields.values())
        in_memory = (frame_bytes if storage == "memory" else 0) + (row_bytes if storage != "memmap" else 0)
        check_table_bytes("capacity", self._capacity_arg, in_memory + 4 + (8 if sequence else 0), per is not None)
        sampler: Sampler
        if per is None:
            sampler = UniformSampler()
        else:
            sampler = PrioritizedSampler(capacity, priority_exponent=per.priority_exponent,
                                         uniform_probability=per.uniform_probability,
                                         new_priority_mode=per.new_priority_mode, max_decay=per.max_decay,
                                         stratified=per.stratified)
        files: MappedDirectory | None = None
        if isinstance(path, MappedDirectory):
            files = path
        elif self.path is not None:
            files = MappedDirectory.create(self.path, "frames.npy")
        schema = Schema.from_structure(fields)
        assert schema.fields is not None
        rows: RowStorage = PackedStorage() if files is None else files.storage("steps.npy", schema.fields, capacity)
        frames: FrameStore
        if files is not None:
            frames = files.frames("frames.npy", self.obs_shape, self.obs_dtype, capacity)
        else:
            frames = CompressedFrames(level=compression_level) if storage == "zstd" else ArrayFrames()
            frames.allocate([frame_field(self.obs_shape, self.obs_dtype)], capacity)
        table = Table(capacity, schema, writer="fifo", sampler=sampler, rng=rng, storage=rows)
        self._files = files
        seq = sequence
        self._table = table
        self._ring = EpisodeRing(table, frames, self.num_streams, n_step=self.n_step, frame_stack=self.frame_stack,
                                 zero_pad_stacks=stack_padding == "zeros", seq_length=seq.length if seq else 0,
                                 burn_in=seq.burn_in if seq else 0, pad_sequences=seq.pad if seq else False)
        self._step_fields = table.schema
        self._finish_init(shared, rate_limiter)

    # ------------------------------------------------------------ shared memory (see ReplayTables.shared)
    @property
    def _sample_calls(self) -> int:
        return int(self._calls.view[0])

    @_sample_calls.setter
    def _sample_calls(self, value: int) -> None:
        self._calls.view[0] = value

    def _bind_state(self) -> None:
        self._calls.bind(self._table.arena)

    def _shared_extra(self) -> dict[str, np.ndarray]:
        ring = self._ring
        assert isinstance(ring.frames, ArrayFrames)
        return {"t_in_episode": ring.t_in_episode, "next_pos": ring.next_pos, "episode_first": ring.episode_first,
                "open": ring.open, "frames": ring.frames.data}

    def _shared_streams(self) -> int:
        return self.num_streams

    def _use_shared_extra(self, shared: Any) -> None:
        ring, views = self._ring, shared.extra
        ring.t_in_episode, ring.next_pos = views["t_in_episode"], views["next_pos"]
        ring.episode_first, ring.open = views["episode_first"], views["open"]
        frames = ring.frames
        assert isinstance(frames, ArrayFrames)
        frames.data, frames._runs = views["frames"], {}
        shared.on_stream_reset = self._cut_episodes

    def _cut_episodes(self, streams: np.ndarray) -> None:
        """After a process stopped inside a step on ``streams``: their rings were emptied; their
        episodes are over (the next call on such a stream is ``begin_episodes``)."""
        self._ring.open[streams] = False

    def _stream_add(self, streams: np.ndarray, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, a change to the rings of ``streams``: journalled when the buffer is shared."""
        if self._shared is None:
            return fn(*args)
        return self._shared.stream_add(streams, fn, *args)

    # ------------------------------------------------------------ sizes (max_size / size / len: TableBuffer)

    @atomic
    def ids(self) -> np.ndarray:
        """Ids of every transition that can be sampled now (in slot order)."""
        directory = self._table.directory
        result: np.ndarray = directory.slot_id[np.sort(directory.live_slots())].copy()
        return result

    @atomic
    def num_sequences(self) -> int:
        """Valid sequence windows that can be sampled now (0 without a :class:`SequenceConfig`)."""
        return 0 if self._ring.starts is None else self._ring.starts.count

    @atomic
    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["frame_bytes"] = self._ring.frames.nbytes
        out["storage"] = self.storage_kind
        out["sequences"] = self.num_sequences()
        return out

    # ------------------------------------------------------------ input checks
    def _streams(self, streams: Any) -> np.ndarray:
        if streams is None:
            return np.arange(self.num_streams, dtype=np.int64)
        arr = np.asarray(streams)
        if arr.dtype == np.bool_:
            if arr.shape != (self.num_streams,):
                raise SchemaError("streams", streams, f"a bool mask of shape ({self.num_streams},)")
            return np.flatnonzero(arr).astype(np.int64)
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise SchemaError("streams", streams, "stream indices (ints) or a bool mask")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_streams or np.unique(arr).size != arr.size):
            raise SchemaError("streams", streams, f"distinct stream indices in [0, {self.num_streams})")
        return arr

    def _obs(self, name: str, obs: Any, m: int) -> np.ndarray:
        arr = np.asarray(obs)
        expected = (m, *self.obs_shape)
        if arr.shape != expected:
            raise SchemaError(name, obs, f"shape {expected} (one {self.obs_shape} observation per stream), got "
                                         f"shape {arr.shape}")
        if not np.can_cast(arr.dtype, self.obs_dtype, "same_kind"):
            raise SchemaError(name, obs, f"dtype {self.obs_dtype} (got {arr.dtype})")
        if arr.size and not np.can_cast(arr.dtype, self.obs_dtype, "safe"):
            check_fits(name, self.obs_dtype, obs, arr)
        return arr

    def _flags(self, name: str, value: Any, m: int) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != (m,) or arr.dtype.kind not in "bui":
            raise SchemaError(name, value, f"{m} booleans, one per stream")
        if arr.dtype.kind != "b":
            if ((arr != 0) & (arr != 1)).any():
                raise SchemaError(name, value, "booleans (0 or 1)")
            arr = arr.astype(bool)
        return arr

    def _mark_dirty(self) -> None:
        if self._files is not None:
            self._files.mark_dirty()

    # ------------------------------------------------------------ writing
    @atomic
    def begin_episodes(self, obs: Any, streams: Any = None) -> None:
        """Start new episodes on ``streams`` (all by default, or indices / a bool mask).

        ``obs`` has one first observation per selected stream. A stream whose
        episode is still open is an :class:`~ReplayTables.errors.EpisodeError`.
        """
        idx = self._streams(streams)
        arr = self._obs("obs", obs, idx.size)
        self._ring.check_open(idx, want_open=False)
        self._admission.insert(0, None)  # a closed buffer takes no new episode
        if idx.size:
            self._mark_dirty()
            self._stream_add(idx, self._ring.begin, idx, arr)

    def begin_episode(self, obs: Any, stream: int = 0) -> None:
        """Start a new episode on one stream with its first observation (after ``env.reset()``)."""
        self.begin_episodes(np.asarray(obs)[None], np.array([stream]))

    def add_steps(self, action: Any, reward: Any, next_obs: Any, terminated: Any, truncated: Any, *,
                  streams: Any = None, timeout: float | None = None, **extras: Any) -> np.ndarray:
        """One environment step on each selected stream (all by default).

        Arrays have one row per selected stream. ``next_obs`` is what ``env.step``
        returned (the final observation when the step ended the episode; with
        gymnasium's same-step autoreset pass ``info["final_obs"]`` for those
        streams, then :meth:`begin_episodes` with the reset observations).
        Returns the ids of the transitions this step completed. Every input is
        checked before anything is stored; a bad call leaves the buffer unchanged.
        With a rate limiter the call waits until all ``m`` steps may be inserted, at
        most ``timeout`` seconds, then raises ``RateLimitTimeout`` having stored nothing.
        """
        idx = self._streams(streams)
        m = idx.size
        unknown = sorted(set(extras) - set(self.extras))
        missing = sorted(set(self.extras) - set(extras))
        if unknown or missing:
            raise SchemaError("extras", unknown or missing, f"exactly the extras {sorted(self.extras)}")
        schema = self._step_fields
        term = self._flags("terminated", terminated, m)
        trunc = self._flags("truncated", truncated, m)
        values = [action, reward, term, trunc, *(extras[k] for k in self.extras)]
        arrays = schema.coerce(values, batch=m)
        if np.asarray(reward).dtype.kind == "f" and not np.isfinite(arrays[1]).all():
            raise SchemaError("reward", reward, "finite rewards (no NaN or inf)")
        obs = self._obs("next_obs", next_obs, m)
        # the checks above read only the input and settings fixed at construction, so they run before the
        # lock (writer processes of a shared buffer do them side by side); the rest reads and writes state
        with self._lock:
            self._ring.check_open(idx, want_open=True)
            self._admission.insert(m, timeout)
            if m == 0:
                return np.empty(0, dtype=np.int64)
            self._mark_dirty()
            ids: np.ndarray = self._stream_add(idx, self._ring.step, idx, arrays, obs, term, trunc)
            self._admission.inserted(m)
            return ids

    def add_step(self, action: Any, reward: Any, next_obs: Any, terminated: bool, truncated: bool, *,
                 stream: int = 0, timeout: float | None = None, **extras: Any) -> np.ndarray:
        """One environment step: what ``env.step(action)`` returned, plus the action.

        Returns the ids of the transitions this step completed (with ``n_step=n``
        a transition is complete ``n - 1`` steps later, or when its episode ends).
        Checked like :meth:`add_steps`; a bad call leaves the buffer unchanged.
        ``timeout``: as for :meth:`add_steps`.
        """
        if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) \
                or not 0 <= stream < self.num_streams:
            raise SchemaError("stream", stream, f"a stream index in [0, {self.num_streams})")
        if extras.keys() != self.extras.keys():
            unknown = sorted(set(extras) - set(self.extras)) or sorted(set(self.extras) - set(extras))
            raise SchemaError("extras", unknown, f"exactly the extras {sorted(self.extras)}")
        term = self._flag("terminated", terminated)
        trunc = self._flag("truncated", truncated)
        arrays = self._step_fields.coerce([action, reward, term, trunc, *(extras[k] for k in self.extras)])
        if not np.isfinite(arrays[1]):
            raise SchemaError("reward", reward, "a finite reward (no NaN or inf)")
        obs = next_obs
        if type(obs) is not np.ndarray or obs.dtype != self.obs_dtype or obs.shape != self.obs_shape:
            obs = self._obs("next_obs", np.asarray(next_obs)[None], 1)[0]
        stream = int(stream)
        with self._lock:  # the checks above read only the input (as in add_steps); this part reads state
            if not self._ring.open[stream]:
                self._ring.check_open(np.array([stream]), want_open=True)
            self._admission.insert(1, timeout)
            self._mark_dirty()
            if self._shared is None:
                ids = self._ring.step_one(stream, arrays, obs, term, trunc)
            else:
                ids = self._shared.stream_add(np.array([stream]), self._ring.step_one, stream, arrays, obs, term,
                                              trunc)
            self._admission.inserted(1)
            return ids

    @staticmethod
    def _flag(name: str, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "bui" and value in (0, 1):
            return bool(value)
        raise SchemaError(name, value, "a boolean")

    # ------------------------------------------------------------ reading
    @property
    def beta(self) -> float:
        return 0.0 if self.per is None else self.per.beta_at(self._sample_calls)

    def _batch(self, slots: np.ndarray, ids: np.ndarray, fields: list[np.ndarray], weights: np.ndarray,
               probabilities: np.ndarray) -> TransitionBatch:
        t = self._ring.transition_arrays(slots, fields, self.gamma)
        extras = {k: f for k, f in zip(self.extras, fields[4:])}
        return TransitionBatch(obs=t["obs"], action=fields[0], reward=fields[1], next_obs=t["next_obs"],
                               terminated=t["end_terminated"], truncated=t["end_truncated"], returns=t["returns"],
                               discount=t["discount"], steps=t["steps"], extras=extras, ids=ids, weights=weights,
                               probabilities=probabilities)

    @atomic
    def sample(self, n: int, *, timeout: float | None = None) -> TransitionBatch:
        """``n`` complete transitions (uniformly, or by priority with importance ``weights``).

        With a rate limiter, waits until it allows a sample of ``n``, at most
        ``timeout`` seconds, then raises ``RateLimitTimeout``. The transition's other steps
        (next observation, n-step rewards) are read from the same storage under the
        table's lock (held by this whole call), so no add can overwrite them in between.
        """
        n = check_count("n", n)
        self._admission.sample(n, timeout)
        if self.per is None:
            s = self._table.sample(n)
        else:
            s = self._table.sample(n, self.beta)
            self._sample_calls += 1
        batch = self._batch(s.slots, s.ids, s.fields, s.weights, s.probabilities)
        self._admission.sampled(len(s.ids))
        return batch

    @atomic
    def get(self, ids: Any) -> TransitionBatch:
        """The transitions with these ids (an error naming any that were evicted)."""
        with self._table.lock:
            s = self._table.get(ids, beta=None if self.per is None else self.beta)
            return self._batch(s.slots, s.ids, s.fields, s.weights, s.probabilities)

    @atomic
    def update_priorities(self, ids: Any, priorities: Any) -> int:
        """New raw priorities by id (needs ``per``); evicted ids are skipped and counted as stale."""
        if self.per is None:
            raise ConfigError("per", None, "a PERConfig (this buffer samples uniformly)")
        if isinstance(ids, TransitionBatch):
            ids = ids.ids
        return self._table.update_priorities(ids, priorities)

    @atomic
    def sample_sequences(self, n: int, *, timeout: float | None = None) -> SequenceBatch:
        """``n`` windows of ``burn_in + length`` steps, uniformly over valid windows.

        Cost is ``O(n * (burn_in + length))``, independent of the buffer size. With a
        rate limiter, waits (at most ``timeout`` seconds) until it allows a sample of
        ``n`` from the windows stored now.
        """
        starts = self._ring.starts
        if starts is None or self.sequence is None:
            raise ConfigError("sequence", None, "a SequenceConfig given to the constructor")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError("n", n, "a non-negative integer")
        self._admission.sample(int(n), timeout, lambda: starts.count)
        if starts.count == 0:
            raise EmptyBufferError("sequences", 0, f"at least one stored window of {self.sequence.length} steps"
                                                   f" (+{self.sequence.burn_in} burn-in)")
        anchors = starts.sample(self._table.rng, int(n))
        s = self._ring.sequence_arrays(anchors)
        self._admission.sampled(int(n))
        f = s["fields"]
        return SequenceBatch(obs=s["obs"], next_obs=s["next_obs"], action=f[0], reward=f[1], terminated=f[2],
                             truncated=f[3], extras={k: a for k, a in zip(self.extras, f[4:])}, mask=s["mask"],
                             burn_in=self.sequence.burn_in)

    # ------------------------------------------------------------ checkpoint
    def _init_args(self) -> dict[str, Any]:
        return {"capacity": self._capacity_arg, "obs_shape": list(self.obs_shape), "obs_dtype": self.obs_dtype.str,
                "action_shape": list(self.action_shape), "action_dtype": self.action_dtype.str,
                "extras": {k: [list(v.shape or ()), np.dtype(v.dtype).str] for k, v in self.extras.items()},
                "num_streams": self.num_streams, "frame_stack": self.frame_stack,
                "stack_padding": self.stack_padding, "n_step": self.n_step, "gamma": self.gamma,
                "sequence": None if self.sequence is None else dataclasses.asdict(self.sequence),
                "per": None if self.per is None else dataclasses.asdict(self.per),
                "storage": self.storage_kind, "path": None if self.path is None else str(self.path),
                "compression_level": self.compression_level, **self._limiter_init()}

    @classmethod
    def _construct(cls, init: dict[str, Any], structure: Any, rng: np.random.Generator | int | None,
                   reopen: MappedDirectory | None = None) -> TrajectoryReplay:
        args = dict(init)
        args["extras"] = {k: (tuple(v[0]), np.dtype(v[1])) for k, v in args["extras"].items()}
        args["sequence"] = None if args["sequence"] is None else SequenceConfig(**args["sequence"])
        args["per"] = None if args["per"] is None else PERConfig(**args["per"])
        args["rate_limiter"] = cls._limiter_arg(init)
        if args["storage"] == "memmap" and reopen is None:
            # a checkpoint of a memory-mapped buffer loads into memory (its files belong to the original)
            args["storage"], args["path"] = "memory", None
        elif reopen is not None:
            args["path"] = reopen  # the files are mapped again, not created
        return cls(rng=rng, **args)

    def _frontend_state(self) -> dict[str, Any]:
        return {"sample_calls": self._sample_calls}

    def _check_frontend_state(self, state: Any) -> int:
        m = mapping("frontend", state, (), ("sample_calls",))
        return integer("frontend.sample_calls", m.get("sample_calls", 0), 0, MAX_INT)

    def _restore_frontend_state(self, checked: int) -> None:
        self._sample_calls = checked

    @atomic
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # copies, as the table's: save() writes them after releasing the lock, while other threads step on
        state["arrays"].update({f"ring_{k}": np.array(v, copy=True) for k, v in self._ring.arrays().items()})
        state["arrays"].update({f"frames_{k}": np.array(v, copy=True) for k, v in self._ring.frames.arrays().items()})
        return state

    def _check_arrays(self, arrays: dict[str, np.ndarray], frames: bool = True) -> tuple[Any, Any]:
        """The ring's arrays and (unless the frames are a memory-mapped file) the frames, checked."""
        ring = self._ring.check_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("ring_")})
        stored = None
        if frames:
            stored = self._ring.frames.check_arrays({k[7:]: v for k, v in arrays.items() if k.startswith("frames_")})
        return ring, stored

    def _restore_arrays(self, checked: tuple[Any, Any]) -> None:
        ring, stored = checked
        self._ring.restore_arrays(ring)
        if stored is not None:
            self._ring.frames.restore_arrays(stored)
        if self._shared is not None:  # the ring took new arrays: their values go into the shared ones
            views = self._shared.extra
            for name, value in (("t_in_episode", self._ring.t_in_episode), ("next_pos", self._ring.next_pos),
                                ("episode_first", self._ring.episode_first), ("open", self._ring.open)):
                views[name][...] = value
            self._use_shared_extra(self._shared)

    @atomic
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.path is not None:
            raise ConfigError("storage", "memmap", "an in-memory buffer (a memory-mapped one reopens with "
                                                   "TrajectoryReplay.open)")
        super().load_state_dict(state)

    # ------------------------------------------------------------ loading a checkpoint
    _INIT_KEYS = ("capacity", "obs_shape", "obs_dtype", "action_shape", "action_dtype", "extras", "num_streams",
                  "frame_stack", "stack_padding", "n_step", "gamma", "sequence", "per", "storage", "path",
                  "compression_level")

    @classmethod
    def _check_init(cls, init: Any) -> dict[str, Any]:
        """Saved constructor arguments, each of the type the constructor takes (their ranges and
        combinations are the constructor's to check)."""
        m = cls._check_limiter_init(dict(mapping("init", init, cls._INIT_KEYS, ("rate_limiter",))))
        integer("init.capacity", m["capacity"], 1, MAX_COUNT)
        for key in ("num_streams", "frame_stack", "n_step"):
            integer(f"init.{key}", m[key], 1, MAX_COUNT)
        for key in ("obs", "action"):
            check_shape(f"init.{key}_shape", m[f"{key}_shape"])
            check_dtype(f"init.{key}_dtype", m[f"{key}_dtype"])
        extras = mapping("init.extras", m["extras"], closed=False)
        for name, spec in extras.items():
            string(f"init.extras.{name}", name)
            if not isinstance(spec, list) or len(spec) != 2:
                raise CheckpointError(f"init.extras.{name}", spec, "a pair [shape, dtype]")
            check_shape(f"init.extras.{name}[0]", spec[0])
            check_dtype(f"init.extras.{name}[1]", spec[1])
        string("init.stack_padding", m["stack_padding"], STACK_PADDING)
        number("init.gamma", m["gamma"], 0.0, 1.0)
        if m["sequence"] is not None:
            mapping("init.sequence", m["sequence"], ("length",), ("burn_in", "pad"))
        if m["per"] is not None:
            mapping("init.per", m["per"], closed=False)  # PERConfig checks its keys and values
        string("init.storage", m["storage"], STORAGE_KINDS)
        if m["path"] is not None:
            string("init.path", m["path"], max_len=4096)
        integer("init.compression_level", m["compression_level"], -2**31, 2**31)
        return m

    @classmethod
    def _saved_capacity(cls, init: dict[str, Any]) -> tuple[str, int]:
        capacity = init["capacity"] // init["num_streams"] * init["num_streams"]
        if capacity == 0:
            raise CheckpointError("init.capacity", init["capacity"], f"at least num_streams={init['num_streams']}")
        return "init.capacity", capacity

    @classmethod
    def _saved_nbytes(cls, init: dict[str, Any], capacity: int, table: dict[str, Any],
                      arrays: dict[str, np.ndarray]) -> int:
        """Rows, directory, sampler and ring, plus the frames when they are loaded into memory
        (a checkpoint carries them; a flushed memory-mapped buffer maps its file instead)."""
        fields = [(init["action_shape"], init["action_dtype"]), *init["extras"].values()]
        row = 6 + sum(nbytes(tuple(shape), check_dtype("init", dtype)) + 8 for shape, dtype in fields)  # + padding
        sampler = UniformSampler if init["per"] is None else PrioritizedSampler
        total = table_nbytes(capacity, row if table.get("storage") is not None else 0, sampler)
        total += EpisodeRing.nbytes_for(capacity, init["sequence"] is not None)
        if any(k.startswith("frames_") for k in arrays) and init["storage"] != "zstd":
            total += capacity * nbytes(tuple(init["obs_shape"]), check_dtype("init.obs_dtype", init["obs_dtype"]))
        return total

    @classmethod
    def _init_after_load(cls, init: dict[str, Any]) -> dict[str, Any]:
        # a checkpoint of a memory-mapped buffer loads into memory (its files belong to the original)
        return {**init, "storage": "memory", "path": None} if init["storage"] == "memmap" else init

    # ------------------------------------------------------------ memory-mapped buffers
    @atomic
    def flush(self) -> None:
        """Make a memory-mapped buffer durable: data files flushed, then the small state saved.

        :meth:`open` in any later process sees the buffer as of the last flush.
        Writes after it are not visible until the next flush (``open`` refuses a
        buffer changed since its last flush rather than show inconsistent data).
        """
        if self._files is None:
            raise ConfigError("storage", self.storage_kind, "storage='memmap' (only those have files to flush)")
        table = self._table
        assert table.storage is not None
        self._ring.frames.flush()
        table.storage.flush()
        state = table.state_dict()
        state["storage"] = None  # the step rows are the memory-mapped file itself
        meta, arrays = split_arrays(state)
        arrays.update({f"ring_{k}": v for k, v in self._ring.arrays().items()})
        self._files.flush_state(type(self), {"init": self._init_args(), "table": meta,
                                             "frontend": self._full_frontend_state()}, arrays)

    def close(self) -> None:
        """Flush a memory-mapped buffer, then refuse steps and samples from now on and wake
        every call waiting for the rate limiter with a ``BufferClosedError`` (see
        :meth:`TableBuffer.close <ReplayTables.base.TableBuffer.close>`)."""
        if self.path is not None:
            with self._lock:
                self.flush()
        super().close()

    @classmethod
    def open(cls, path: str | os.PathLike[str],
             rng: np.random.Generator | int | None = None) -> TrajectoryReplay:
        """Reopen a memory-mapped buffer that was :meth:`flush`-ed, in this or another process.

        The directory is checked like a checkpoint (see :func:`ReplayTables.load`): its
        state, and its ``frames.npy`` / ``steps.npy`` (regular files whose headers fit the
        saved arguments) before they are mapped. ``rng``, if given, must be of the kind
        the buffer saved (its state is replaced by the saved one).
        """
        if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)) and rng >= 0:
            rng = np.random.default_rng(int(rng))  # an int seed, as everywhere else
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ConfigError("rng", rng, "None, a numpy.random.Generator or a non-negative int seed")
        root = Path(path)
        with refusing(root):
            files, manifest, arrays = MappedDirectory.reopen(root)
            init, table, saved_rng = cls._check_before_construction(manifest, arrays)
            if init["storage"] != "memmap":
                raise CheckpointError("init.storage", init["storage"], "'memmap' (open() reopens memory-mapped "
                                                                       "buffers; ReplayTables.load reads checkpoints)")
            init["path"] = str(root)
        if rng is not None and type(rng.bit_generator) is not type(saved_rng.bit_generator):
            raise ConfigError("rng", type(rng.bit_generator).__name__,
                              f"a {type(saved_rng.bit_generator).__name__} generator, as the buffer saved")
        with refusing(root):
            buffer = cls._construct(init, None, rng if rng is not None else saved_rng, reopen=files)
            if buffer._init_args() != init:
                raise CheckpointError("init", init, f"the arguments the buffer was built with: {buffer._init_args()}")
            checked = (buffer._table.check_state(table, rows_in_storage=True),
                       buffer._check_frontend(manifest.get("frontend", {})),
                       buffer._check_arrays(arrays, frames=False))
            buffer._restore_parts(checked)
        return buffer

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size()}, max_size={self.max_size}, obs={self.obs_shape} "
                f"{self.obs_dtype}, streams={self.num_streams}, frame_stack={self.frame_stack}, "
                f"n_step={self.n_step}, storage={self.storage_kind!r})")

