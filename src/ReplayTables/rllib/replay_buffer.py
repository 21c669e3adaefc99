"""RLlib's ``ReplayBuffer`` on the engine: items of a :class:`StorageUnit` over a true ring of timesteps.

Storage is one engine :class:`~ReplayTables.engine.table.Table` with a
:class:`~ReplayTables.engine.layouts.step_ranges.StepRanges` layout: the
columns of every stored timestep live once in packed columnar memory, items are
ranges of those timesteps with ids that carry a generation, and items are drawn
by the engine's samplers. This module only translates RLlib's API (batches in,
``SampleBatch`` out, storage units, sequences with burn-in) onto it.

Extension hooks for your own buffers (all public and stable):

* :meth:`ReplayBuffer.draw` - draw item ids the way ``sample`` does (counts hits);
* :meth:`ReplayBuffer.get` - the ``SampleBatch`` of items by id;
* :meth:`ReplayBuffer.hit_counts` - how often each item was drawn since it was stored;
* :meth:`ReplayBuffer.delete` - remove items by id;
* :meth:`ReplayBuffer.item_ids` - ids of every stored item, oldest first.

RLlib's observable attributes (``_num_timesteps_added``, ``_storage``,
``_next_idx``, ``_hit_count`` ...), which RLlib's subclasses, tests and
algorithms read, are offered as read-only compatibility views (see
:class:`~ReplayTables.rllib.rllib_views.RLlibViews`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic, table_lock
from ReplayTables.engine.layouts.step_ranges import StepRanges
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.samplers import Sampler, UniformSampler
from ReplayTables.engine.state_checks import MAX_INT, array, integer, mapping
from ReplayTables.engine.table import MAX_COUNT, Table, check_capacity, step_table_nbytes
from ReplayTables.errors import CheckpointError, ConfigError, SchemaError
from ReplayTables.rllib import policy_rows
from ReplayTables.rllib.batches import SampleBatch, as_columns, as_policy_batches, env_steps_of
from ReplayTables.rllib.checkpointable import Checkpointable
from ReplayTables.rllib.declared_columns import columns_json, declared_schema
from ReplayTables.rllib.ray_interop import register_with_rllib, to_rllib
from ReplayTables.rllib.rllib_keys import check_rllib_keys
from ReplayTables.rllib.rllib_views import RLlibCounters, RLlibViews
from ReplayTables.rllib.storage_unit import ItemPlan, StorageUnit, split_items
from ReplayTables.shareable import Shareable

__all__ = ["ReplayBuffer", "StorageUnit"]


class ReplayBuffer(Shareable, RLlibViews, Checkpointable):
    """Uniform replay of items (timesteps, sequences, episodes or fragments).

    Args:
        capacity: timesteps stored at most, as a true ring: the oldest items are
            evicted until a new one fits.
        storage_unit: a :class:`StorageUnit` or its name; ``sample(num_items)``
            counts items of this unit.
        replay_sequence_length: sequences only: a sampled sequence is at most
            this many rows (burn-in included); its rows are ``seq_lens`` long,
            as RLlib returns them. Added batches without ``seq_lens`` are cut
            into chunks of ``replay_sequence_length - replay_burn_in`` steps per
            episode.
        replay_burn_in: steps read from just before each sequence (the same
            episode; zeros where that would cross the episode start).
        replay_zero_init_states: ``state_in_*`` columns come out as zeros
            (otherwise the stored state at each sequence's first real step).
        zero_pad: with ``replay_sequence_length``: every sampled sequence is
            exactly that many rows, zero padded, with a ``mask`` column saying
            which rows are real (static shapes for a recurrent learner of your
            own; RLlib's learners pad themselves, so the default is ``False``).
        seed: seed of the buffer's random generator (sampling, reservoir).
        shared: keep the buffer in shared memory (ours, not RLlib's): other processes on
            this machine ``ReplayTables.attach(buffer.handle())`` and add to and sample
            from it directly, as with front end A's ``shared=True`` (SPEC 6.3,
            docs/shared-memory.md). Needs ``columns``; single-policy batches only; a
            reservoir needs its regions fixed up front (``max_item_length``, unless
            timesteps or ``replay_sequence_length`` fix it).
        columns: every stored column's per-row ``(shape, dtype)`` (see
            :mod:`ReplayTables.rllib.declared_columns`), declared up front instead of
            learnt from the first batch; a batch with other columns is refused.
        rllib_config: the other keys of RLlib's ``replay_buffer_config``, which
            RLlib passes to every buffer (see :mod:`ReplayTables.rllib.rllib_keys`);
            any other keyword is an error naming it.

    A ``MultiAgentBatch`` added with ``storage_unit="fragments"`` is stored as
    one item, as RLlib stores it, and sampled back as a ``MultiAgentBatch``.

    Every public call is atomic (it holds the table's lock), so threads may share it.
    """

    _placement = "ring"
    _prioritized = False
    _state_portable_args = ("storage_unit", "seed")   # later adds split by ours; the state brings its generator

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps", *,
                 replay_sequence_length: int | None = None, replay_burn_in: int = 0,
                 replay_zero_init_states: bool = True, seed: int | None = None, zero_pad: bool = False,
                 shared: bool = False, columns: Mapping[str, Any] | None = None, **rllib_config: Any) -> None:
        capacity = check_rllib_keys(type(self), rllib_config, capacity, prioritized=self._prioritized)
        self.capacity = check_capacity("capacity", 10000 if capacity is None else capacity)
        # before the sampler's sum tree and the index are built (numpy would raise a bare MemoryError)
        check_allocation("capacity", self.capacity, self.nbytes_for(self.capacity),
                         f"the index of {self.capacity} timesteps")
        self.storage_unit = StorageUnit.of(storage_unit)
        self.replay_sequence_length = _check_sequence_args(self.capacity, self.storage_unit, replay_sequence_length,
                                                           replay_burn_in)
        self.replay_burn_in = int(replay_burn_in)
        if not isinstance(replay_zero_init_states, (bool, np.bool_)):
            raise ConfigError("replay_zero_init_states", replay_zero_init_states, "True or False")
        self.replay_zero_init_states = bool(replay_zero_init_states)
        if not isinstance(zero_pad, (bool, np.bool_)):
            raise ConfigError("zero_pad", zero_pad, "True or False")
        self.zero_pad = bool(zero_pad)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError("seed", seed, "None or a non-negative integer (numpy's seeds are)")
        self.seed = None if seed is None else int(seed)
        if shared is not True and shared is not False:
            raise ConfigError("shared", shared, "True or False")
        #: the declared columns (``columns=``), else None: learnt from the first batch
        self.columns = None if columns is None else declared_schema(columns)
        if shared and self.columns is None:
            raise ConfigError("columns", None, "every column's (shape, dtype) with shared=True (the shared rows "
                                               "are laid out when the buffer is made)")
        region = self._region()
        if shared and self._placement == "reservoir" and region is None:
            raise ConfigError("max_item_length", None, "the longest item in timesteps with shared=True (a shared "
                                                       "reservoir's regions are laid out when the buffer is made; "
                                                       "timesteps and replay_sequence_length fix it themselves)")
        self._ranges = StepRanges(self.capacity, self._placement, region)
        self._table = Table(self.capacity, self.columns, layout=self._ranges, sampler=self._make_sampler(),
                            rng=np.random.default_rng(self.seed), count_name="num_items")
        self._policy_ids: list[Any] = []       # policies of stored multi-agent items, by index
        self._policy_columns: list[list[str]] = []   # and the columns of each
        self._rllib = RLlibCounters()
        self._rllib.bind(self._table.arena)
        self._shared = None  # (Shareable) the SharedTable once shared
        if shared:
            from ReplayTables.shared import share

            share(self)
        self._lock = table_lock(self._table)  # the process lock when shared
        register_with_rllib()

    # ------------------------------------------------------------ shared memory (see ReplayTables.shared)
    @property
    def _dropped_episodes(self) -> int:
        return int(self._rllib.dropped_episodes)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or, attached, the creator closed the buffer)."""
        return bool(self._lock.closed)

    def close(self) -> None:
        """Let go of the shared memory (the creator's close unlinks it: every process's calls then raise
        :class:`~ReplayTables.errors.BufferClosedError`); refuse calls from now on. Harmless twice."""
        self._lock.close()
        if self._shared is not None:
            self._shared.close()

    @property
    def rate_limiter(self) -> None:
        """No rate limiter: RLlib's loop paces its own adds and samples."""
        return None

    def _shared_extra(self) -> dict[str, np.ndarray]:
        return {}

    def _shared_streams(self) -> int:
        return 0

    def _use_shared_extra(self, shared: Any) -> None:
        self._rllib.bind(self._table.arena)  # RLlib's counters: the segment's copy from now on

    def _init_concurrency(self, rate_limiter: Any) -> None:
        self._lock = table_lock(self._table)

    @classmethod
    def _construct(cls, init: dict[str, Any], structure: Any, rng: np.random.Generator) -> ReplayBuffer:
        """A buffer of ``init``'s arguments in this process (``attach`` then points it at the shared memory);
        it draws with ``rng``."""
        buffer = cls(**init)
        buffer._table.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return buffer

    # ------------------------------------------------------------ subclass hooks
    def _make_sampler(self) -> Sampler:
        return UniformSampler()

    def _region(self) -> int | None:
        return None

    def _consumed_columns(self) -> tuple[str, ...]:
        """Columns read on add but not stored."""
        return ("seq_lens",)

    def _init_args(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "storage_unit": self.storage_unit.value,
                "replay_sequence_length": self.replay_sequence_length, "replay_burn_in": self.replay_burn_in,
                "replay_zero_init_states": self.replay_zero_init_states, "seed": self.seed,
                **({"zero_pad": True} if self.zero_pad else {}),   # absent when off: older checkpoints load
                **({"columns": columns_json(self.columns)} if self.columns is not None else {})}

    # ------------------------------------------------------------ size
    def __len__(self) -> int:
        """Items stored now."""
        if self._shared is not None:
            with self._lock:  # repairs first if a process died inside a change
                return self._table.size
        return self._table.size

    @property
    def num_timesteps(self) -> int:
        """Timesteps stored now (never more than ``capacity``)."""
        if self._shared is not None:
            with self._lock:
                return self._ranges.live_steps
        return self._ranges.live_steps

    # ------------------------------------------------------------ add
    def _plan(self, batch: Any) -> tuple[dict[str, Any], Any, dict[str, np.ndarray]]:
        """Validate and split a batch: ``(columns to store, ItemPlan, all columns)``."""
        if hasattr(batch, "policy_batches"):
            return self._plan_multi_agent(batch, per_step=bool(getattr(batch, "per_step", False)))
        columns = as_columns(batch)
        rows = _row_count(columns, ("seq_lens",))
        chunk = None
        if self.replay_sequence_length is not None:
            chunk = self.replay_sequence_length - self.replay_burn_in
        plan = split_items(columns, self.storage_unit, rows, chunk)
        stored = {k: v for k, v in columns.items() if k not in self._consumed_columns()}
        if plan.rows is not None:
            stored = _take_rows(stored, plan.rows)
        plan.counts = plan.lengths
        return stored, plan, columns

    def _plan_multi_agent(self, batch: Any, per_step: bool) -> tuple[dict[str, Any], Any, dict[str, np.ndarray]]:
        """A multi-agent batch as one item (or one item per env step): see :mod:`policy_rows`."""
        if self._shared is not None:
            raise SchemaError("batch", type(batch).__name__, "a single-policy batch for a shared buffer (its "
                                                             "policy list would be one process's)")
        if not per_step and self.storage_unit is not StorageUnit.FRAGMENTS:
            raise SchemaError("batch", type(batch).__name__,
                              f"a single-policy batch for storage_unit={self.storage_unit.value!r} (a MultiAgentBatch "
                              "is stored as one item with storage_unit='fragments', as RLlib stores it; "
                              "MultiAgentReplayBuffer splits one by policy)")
        pbs = as_policy_batches(batch)
        rows = {pid: _row_count(cols, ("seq_lens",)) for pid, cols in pbs.items()}
        consumed = self._consumed_columns()
        kept = {pid: {k: v for k, v in cols.items() if k not in consumed} for pid, cols in pbs.items()}
        columns, lengths, policy_ids, policy_columns = policy_rows.flatten(
            kept, rows, self._policy_ids, self._policy_columns, env_steps_of(batch), per_step, self._table.fields)
        plan = ItemPlan(None, lengths)
        plan.counts = np.ones(lengths.shape[0], np.int64) if per_step else \
            columns[policy_rows.ENV_STEPS_COLUMN][:1].copy()
        plan.policy_ids = policy_ids
        plan.policy_columns = policy_columns
        every = {**{k: v for cols in pbs.values() for k, v in cols.items()}, **columns}
        if "weights" in columns or any("weights" in cols for cols in pbs.values()):
            every["weights"] = _concat_weights(pbs, rows, per_step)
        return columns, plan, every

    def _priorities(self, plan: Any, columns: dict[str, np.ndarray], kwargs: dict[str, Any]) -> Any:
        if kwargs:
            raise ConfigError("add()", sorted(kwargs), "no extra arguments for this buffer")
        return None

    @atomic
    def check(self, batch: Any, **kwargs: Any) -> None:
        """Raise the error :meth:`add` would raise for ``batch``, changing nothing."""
        stored, plan, columns = self._plan(batch)
        self._table.check_items(stored, plan.lengths, self._priorities(plan, columns, dict(kwargs)))

    @atomic
    def add(self, batch: Any, **kwargs: Any) -> np.ndarray:
        """Split ``batch`` into items of the storage unit and store them; returns their ids.

        A bad batch (wrong, missing or ragged columns against the columns of the
        first batch) raises :class:`~ReplayTables.SchemaError` and stores nothing.
        """
        stored, plan, columns = self._plan(batch)
        priorities = self._priorities(plan, columns, kwargs)
        table = self._table
        if self._shared is not None:  # one journalled add: the items and RLlib's counters commit together
            checked = table.check_items(stored, plan.lengths, priorities)  # a refusal changes nothing
            ids: np.ndarray = self._shared.add_checked_items(checked, lambda: self._count_add(plan))
            return ids
        ids = table.add_items(stored, plan.lengths, priorities)
        self._count_add(plan)
        return ids

    def _count_add(self, plan: Any) -> None:
        self._rllib.dropped_episodes += plan.dropped_episodes
        if plan.policy_ids is not None and plan.policy_columns is not None:
            self._policy_ids, self._policy_columns = plan.policy_ids, plan.policy_columns
        self._rllib.on_add(plan.counts, self.capacity)

    # ------------------------------------------------------------ hooks
    @atomic
    def draw(self, num_items: int) -> np.ndarray:
        """Ids of ``num_items`` items drawn (with replacement) by this buffer's sampler.

        Counts one hit per draw for :meth:`hit_counts`; raises
        :class:`~ReplayTables.EmptyBufferError` when the buffer is empty.
        """
        ids: np.ndarray = self._table.sample(num_items).ids
        return ids

    @atomic
    def get(self, ids: Any, with_indexes: bool = False) -> Any:
        """The items with these ids, concatenated in order (an error naming stale ids).

        ``with_indexes=True`` adds the ``batch_indexes`` column (each item's id on its rows).
        """
        with self._table.lock:  # the ids and their rows at one instant
            arr, slots = self._table.locate(ids)
            batch, rows = self._read(slots)
        if with_indexes:
            batch["batch_indexes"] = np.repeat(arr, rows)
        return to_rllib(self._finish(batch, sampled=False))

    @atomic
    def hit_counts(self, ids: Any) -> np.ndarray:
        """How many times each item was drawn since it was stored."""
        return self._table.hit_counts(ids)

    @atomic
    def delete(self, ids: Any) -> int:
        """Remove items by id (all must be stored; otherwise nothing is removed)."""
        return self._table.delete(ids)

    @atomic
    def item_ids(self) -> np.ndarray:
        """Ids of all stored items, oldest first."""
        return self._table.oldest(len(self))

    # ------------------------------------------------------------ sample
    @atomic
    def sample(self, num_items: int, **kwargs: Any) -> Any:
        """``num_items`` items drawn uniformly with replacement, concatenated.

        A ``SampleBatch`` (RLlib's when Ray is importable), or a
        ``MultiAgentBatch`` for a buffer of multi-agent items.
        """
        return to_rllib(self._sample(num_items, **kwargs))

    def _sample(self, num_items: int, **kwargs: Any) -> Any:
        """:meth:`sample` in this package's own batch types."""
        if kwargs:
            raise ConfigError("sample()", sorted(kwargs), "no extra arguments for this buffer")
        batch: SampleBatch = self._table.sample(num_items, read=self._read).data[0]  # ids and rows in one call
        return self._finish(batch)

    def _finish(self, batch: SampleBatch, sampled: bool = True) -> Any:
        """Rebuild multi-agent items; a sample counts its timesteps (RLlib's ``_num_timesteps_sampled``)."""
        out: Any = batch
        if policy_rows.POLICY_COLUMN in batch:
            out = policy_rows.unflatten(batch, self._policy_ids, self._policy_columns)
        if sampled:
            self._rllib.sampled += out.count
        return out

    def _read(self, slots: np.ndarray) -> tuple[SampleBatch, np.ndarray]:
        """Output batch of items in ``slots`` and the row count of each item."""
        table = self._table
        if self.replay_sequence_length is not None:
            L, B = self.replay_sequence_length, self.replay_burn_in
            arrays, valid, _ = table.read_windows(slots, B, L, "eps_id")
            out = SampleBatch(zip(table.names, arrays))
            lengths = self._ranges.length[slots]
            out["mask"] = valid.reshape(-1)
            out["seq_lens"] = (B + lengths).astype(np.int32)
            n = slots.shape[0]
            for key in [k for k in out if k.startswith("state_in_")]:
                per_row = out[key].reshape(n, L, *out[key].shape[1:])
                if self.replay_zero_init_states:
                    out[key] = np.zeros_like(per_row[:, 0])
                else:
                    first = np.argmax(valid, axis=1)
                    out[key] = per_row[np.arange(n), first]
            if self.zero_pad:
                return out, np.full(n, L, dtype=np.int64)
            real = valid.reshape(-1)           # RLlib's layout: the real rows only, seq_lens of them
            del out["mask"]
            for key in [k for k in out if k != "seq_lens" and not k.startswith("state_in_")]:
                out[key] = _take_rows(out[key], real) if isinstance(out[key], dict) else out[key][real]
            rows = valid.sum(axis=1).astype(np.int64)
            out["seq_lens"] = rows.astype(np.int32)
            return out, rows
        arrays, lengths = table.read(slots)
        out = SampleBatch(table.schema.build(arrays))
        if self.storage_unit in (StorageUnit.SEQUENCES, StorageUnit.EPISODES) \
                and policy_rows.POLICY_COLUMN not in out:
            out["seq_lens"] = lengths.astype(np.int32)     # one sequence per item, as RLlib's slices carry
        return out, lengths

    # ------------------------------------------------------------ stats & state
    @atomic
    def stats(self, debug: bool = False) -> dict[str, Any]:
        """Counters and sizes: added/sampled/evicted counts, entries, timesteps, bytes."""
        t = self._table
        c = t.counters
        row = t.storage.row_bytes if t.storage is not None else 0
        r = self._rllib
        return {"added_count": r.added, "added_count_wrapped": r.wrap, "sampled_count": r.sampled,
                "added_items": c["added"], "added_timesteps": c["added_steps"], "sampled_items": c["sampled"],
                "evicted_count": c["evicted"], "eviction_started": r.eviction_started, "deleted_count": c["deleted"],
                "not_stored_count": c["not_stored"], "stale_updates": c["stale_updates"],
                "dropped_incomplete_episodes": self._dropped_episodes, "num_entries": len(self),
                "num_timesteps": self.num_timesteps, "capacity": self.capacity,
                "est_size_bytes": self.num_timesteps * row, "allocated_bytes": t.storage.nbytes if t.storage else 0}

    def _state_dict(self) -> dict[str, Any]:
        return {"table": self._table.state_dict(), "dropped_episodes": self._dropped_episodes,
                "policy_ids": list(self._policy_ids), "policy_columns": [list(c) for c in self._policy_columns],
                "rllib_counters": self._rllib.state_dict(),
                **self._extra_state()}

    def _check_state_dict(self, state: Any, where: str = "state") -> tuple[Any, ...]:
        m = mapping(where, state, ("table",), ("dropped_episodes", "policy_ids", "policy_columns", "rllib_counters",
                                               *self._extra_state()))
        table = self._table.check_state(m["table"], f"{where}.table")
        saved = getattr(table.schema, "fields", None)
        if self.columns is not None and saved != self.columns.fields:
            raise CheckpointError(f"{where}.table.schema", [f.name for f in saved or []],
                                  f"this buffer's declared columns {[f.name for f in self.columns.fields or []]}")
        dropped = integer(f"{where}.dropped_episodes", m.get("dropped_episodes", 0), 0, MAX_INT)
        policy_ids = _check_policy_ids(f"{where}.policy_ids", m.get("policy_ids", []))
        policy_columns = _check_policy_columns(f"{where}.policy_columns", m.get("policy_columns", []),
                                               len(policy_ids))
        counters = RLlibCounters.check_state(m.get("rllib_counters"), f"{where}.rllib_counters")
        return table, dropped, (policy_ids, policy_columns), counters, self._check_extra_state(dict(m))

    def _restore_state(self, checked: tuple[Any, ...]) -> None:
        table, dropped, (policy_ids, policy_columns), counters, extra = checked
        self._table.restore(table)
        self._rllib.copy_from(counters)  # in place: the counters may be shared
        self._rllib.dropped_episodes = dropped
        self._policy_ids, self._policy_columns = policy_ids, policy_columns
        self._load_extra_state(extra)

    @classmethod
    def _check_before_construction(cls, init: dict[str, Any], state: Any, where: str = "state",
                                   init_where: str = "init") -> None:
        """The saved capacity against the saved step index (real arrays), and the memory it needs."""
        capacity = integer(f"{init_where}.capacity", init.get("capacity", 10000), 1, MAX_COUNT)
        table = mapping(f"{where}.table", mapping(where, state, ("table",), closed=False)["table"], ("index",),
                        closed=False)
        index = mapping(f"{where}.table.index", table["index"], ("start",), closed=False)
        array(f"{where}.table.index.start", index["start"], (capacity,), "iu")
        check_allocation(f"{init_where}.capacity", capacity, cls.nbytes_for(capacity),
                         f"a buffer of {capacity} timesteps", error=CheckpointError)

    @classmethod
    def nbytes_for(cls, capacity: int) -> int:
        """Bytes a buffer of ``capacity`` timesteps holds before any row is stored."""
        return step_table_nbytes(capacity, cls._sampler_class())

    @classmethod
    def _sampler_class(cls) -> type[Sampler]:
        return UniformSampler

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(capacity={self.capacity}, storage_unit={self.storage_unit.value!r}, "
                f"items={len(self)}, timesteps={self.num_timesteps})")


def _check_sequence_args(capacity: int, unit: StorageUnit, length: Any, burn_in: Any) -> int | None:
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ConfigError("replay_burn_in", burn_in, "a non-negative integer")
    if length is None or (length == 1 and burn_in == 0 and unit is not StorageUnit.SEQUENCES):
        if burn_in:
            raise ConfigError("replay_burn_in", burn_in, "0 unless replay_sequence_length is set")
        return None
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ConfigError("replay_sequence_length", length, "None or a positive integer")
    if unit is not StorageUnit.SEQUENCES:
        raise ConfigError("replay_sequence_length", length,
                          f"None (or 1) with storage_unit={unit.value!r}; sequences need storage_unit='sequences'")
    if burn_in >= length:
        raise ConfigError("replay_burn_in", burn_in, f"less than replay_sequence_length={length} (it is included)")
    if length - burn_in > capacity:
        raise ConfigError("replay_sequence_length", length,
                          f"at most capacity + replay_burn_in = {capacity + burn_in} timesteps")
    return int(length)


def _check_policy_ids(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > 100_000:
        raise CheckpointError(where, value, "a list of policy ids")
    for pid in value:
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or (isinstance(pid, str) and len(pid) > 1000) \
                or (isinstance(pid, int) and not -MAX_INT <= pid <= MAX_INT):
            raise CheckpointError(where, pid, "str or int policy ids")
    if len(set(value)) != len(value):
        raise CheckpointError(where, value, "distinct policy ids")
    return list(value)


def _check_policy_columns(where: str, value: Any, policies: int) -> list[list[str]]:
    if not isinstance(value, list) or len(value) != policies:
        raise CheckpointError(where, value, f"a list of column-name lists, one per policy ({policies})")
    for names in value:
        if not isinstance(names, list) or len(names) > 10_000 or \
                not all(isinstance(n, str) and 0 < len(n) <= 1000 for n in names):
            raise CheckpointError(where, names, "a list of column names")
    return [list(n) for n in value]


def _concat_weights(pbs: dict[Any, dict[str, Any]], rows: dict[Any, int], per_step: bool) -> np.ndarray:
    """The ``weights`` column of a multi-agent item in stored row order (ones where a policy has none)."""
    parts = [np.asarray(cols["weights"], dtype=np.float64) if "weights" in cols else np.ones(rows[pid])
             for pid, cols in pbs.items()]
    flat = np.concatenate(parts) if parts else np.empty(0)
    if per_step and parts:
        n = rows[next(iter(pbs))]
        flat = flat.reshape(len(parts), n).T.reshape(-1)
    return flat


def _leaves(columns: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in columns.items():
        if isinstance(v, dict):
            out.extend(_leaves(v, f"{prefix}{k}/"))
        else:
            out.append((prefix + k, v))
    return out


def _row_count(columns: dict[str, Any], skip: tuple[str, ...]) -> int:
    """The common leading length of all per-row columns; a SchemaError naming ragged ones."""
    lengths = {}
    for name, arr in _leaves(columns):
        if name in skip:
            continue
        if arr.ndim == 0:
            raise SchemaError(name, arr, "an array with one row per timestep (got a scalar)")
        lengths[name] = int(arr.shape[0])
    if not lengths:
        raise SchemaError("batch", list(columns), "at least one column")
    if len(set(lengths.values())) > 1:
        raise SchemaError("batch", lengths, "the same number of rows in every column (ragged columns)")
    return next(iter(lengths.values()))


def _take_rows(columns: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: (_take_rows(v, rows) if isinstance(v, dict) else v[rows]) for k, v in columns.items()}
