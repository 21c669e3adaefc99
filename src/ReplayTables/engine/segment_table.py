"""SegmentTable: a table of variable-length items over one store of timesteps.

The same rules as :class:`~ReplayTables.engine.table.Table`, for items that
are runs of timesteps (sequences, episodes, whole batches) instead of single
rows: a schema discovered from the first batch and checked afterwards, packed
columnar storage of *timesteps* (each step stored once), a
:class:`~ReplayTables.engine.segments.SegmentIndex` that maps items to ranges
of steps (ring or reservoir placement, ids with generations), and one of the
engine's samplers drawing *items*. Every input is checked before anything
changes; only ids leave the table. Every public call holds ``self.lock`` (a
:class:`~ReplayTables.engine.table_lock.TableLock`); a sample reads its items'
rows in the same call (:class:`SegmentSample`), and so does :meth:`SegmentTable.take_oldest`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ReplayTables.engine.draws import Draws
from ReplayTables.engine.ids import NOT_STORED
from ReplayTables.engine.mass import Mass
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.rng_state import check_rng_state
from ReplayTables.engine.rng_state import rng_state as _rng_state
from ReplayTables.engine.samplers import PrioritizedSampler, Sampler, UniformSampler, check_priorities
from ReplayTables.engine.schema import Field, Schema
from ReplayTables.engine.segments import SegmentIndex
from ReplayTables.engine.state_checks import check_counters, integer, mapping
from ReplayTables.engine.storage import PackedStorage
from ReplayTables.engine.table import (
    LARGE_SAMPLE,
    MAX_COUNT,
    check_capacity,
    check_count,
    check_ids,
    check_points,
    check_sample_bytes,
    check_schema_state,
    saved_row_bytes,
)
from ReplayTables.engine.table_lock import TableLock
from ReplayTables.engine.weights import importance_weights
from ReplayTables.errors import CheckpointError, ConfigError, EmptyBufferError, SchemaError, StaleIdError

__all__ = ["SegmentSample", "SegmentTable"]

COUNTERS = ("added", "added_steps", "evicted", "not_stored", "sampled", "deleted", "stale_updates")

#: What a front end reads for the item slots of a sample (called under the table's lock).
Reader = Callable[[np.ndarray], Any]


class SegmentSample(NamedTuple):
    """A sample of items and what ``read`` made of their rows, from one call under the lock."""

    ids: np.ndarray
    slots: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    size: int
    mass: Mass
    data: Any


class SegmentTable:
    """Items of any length over ``capacity`` timesteps (see module docstring).

    Args:
        capacity: timesteps stored at most.
        placement: ``"ring"`` (oldest items evicted until a new one fits) or
            ``"reservoir"`` (algorithm R over items, in regions of ``region`` steps).
        region: reservoir item length bound (``None``: the first item's length).
        sampler: the engine sampler that draws items (uniform if ``None``).
        rng: drives sampling and reservoir placement.
    """

    def __init__(self, capacity: int, *, placement: str = "ring", region: int | None = None,
                 sampler: Sampler | None = None, rng: np.random.Generator | None = None) -> None:
        self.capacity = check_capacity("capacity", capacity)
        self.schema = Schema.from_structure(None)
        self.storage: PackedStorage | None = None
        self.index = SegmentIndex(self.capacity, placement, region)
        self.sampler = sampler if sampler is not None else UniformSampler()
        if rng is None:
            rng = np.random.default_rng()
        if not isinstance(rng, np.random.Generator):
            raise ConfigError("rng", rng, "a numpy.random.Generator")
        self.rng = rng
        self.counters = dict.fromkeys(COUNTERS, 0)
        #: held by every public call (re-entrant)
        self.lock = TableLock()

    # ------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        """Live items."""
        return self.index.directory.count

    @property
    def fields(self) -> list[Field]:
        return self.schema.fields or []

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    # ------------------------------------------------------------ add
    def check(self, columns: Mapping[str, Any], lengths: Any, priorities: Any = None) -> tuple[
            Schema, list[np.ndarray], np.ndarray, np.ndarray | None]:
        """Validate a batch without changing anything: ``(schema, arrays, lengths, priorities)``."""
        schema = self.schema
        if not schema.resolved:
            schema = Schema.from_structure(None)
            schema.resolve(columns, batched=True)
            assert schema.fields is not None
            row_bytes = sum(f.nbytes for f in schema.fields)  # the rows are allocated on this first add
            check_allocation("capacity", self.capacity, self.capacity * row_bytes
                             + self.nbytes_for(self.capacity, self.sampler),
                             f"{self.capacity} timesteps of {row_bytes} bytes")
        m, arrays = schema.coerce_batch(schema.values_of(columns))
        lens = np.asarray(lengths)
        if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
            raise SchemaError("lengths", lengths, "a 1-d array of item lengths")
        lens = lens.astype(np.int64, copy=False)
        if int(lens.sum()) != m:
            raise SchemaError("lengths", int(lens.sum()), f"item lengths that add up to the {m} rows of the batch")
        self.index.check_lengths(lens)
        prio = None
        if priorities is not None:
            prio = check_priorities(priorities, lens.shape[0])
        elif self.sampler.requires_priority:
            raise SchemaError("priorities", None, "a priority for every item")
        return schema, arrays, lens, prio

    def add(self, columns: Mapping[str, Any], lengths: Any, priorities: Any = None) -> np.ndarray:
        """Store items given as consecutive rows of ``columns``; returns one id per item."""
        with self.lock:
            return self._add_locked(columns, lengths, priorities)

    def _add_locked(self, columns: Mapping[str, Any], lengths: Any, priorities: Any) -> np.ndarray:
        schema, arrays, lens, prio = self.check(columns, lengths, priorities)
        if lens.size == 0:
            return np.empty(0, dtype=np.int64)
        if self.storage is None:
            self.schema = schema
            assert schema.fields is not None
            self.storage = PackedStorage(schema.fields, self.capacity)
        ids, gone, placement, evicted = self.index.insert(lens, self.rng)
        for rows, steps in placement:
            self.storage.write(steps, [a[rows] for a in arrays])
        stored = ids != NOT_STORED
        new_slots = ids[stored] % self.capacity
        if gone.size:
            self.sampler.on_delete(gone)
        if self.sampler.prioritized and new_slots.size:
            self.sampler.on_insert(new_slots, None if prio is None else prio[stored], self.index.directory)
        c = self.counters
        c["added"] += int(lens.size)
        c["added_steps"] += int(lens.sum())
        c["evicted"] += evicted
        c["not_stored"] += int(lens.size - new_slots.size)
        return ids

    # ------------------------------------------------------------ read
    def sample(self, n: int, beta: float | None = None, read: Reader | None = None) -> SegmentSample:
        """Draw ``n`` items with replacement and read them, in one atomic call; counts hits.

        ``weights`` are importance weights for exponent ``beta`` (ones without it);
        ``data`` is ``read(item_slots)`` (``None`` without ``read``), called under the
        lock so the rows are those of the drawn ids.
        """
        with self.lock:
            n = check_count("num_items", n)
            if self.size == 0:
                raise EmptyBufferError("size", 0, "at least one stored item to sample from")
            if n > LARGE_SAMPLE:  # every item has at least one row
                check_sample_bytes("num_items", n, self.storage.row_bytes if self.storage is not None else 0)
            draws, order = self.sampler.split(n, self.rng, self.index.directory)
            return self._sample_locked(draws, order, beta, None, read)

    def sample_from(self, draws: Draws, beta: float | None = None, totals: Mass | None = None,
                    read: Reader | None = None) -> SegmentSample:
        """The items given points select, read in the same call (see :meth:`Table.sample_from
        <ReplayTables.engine.table.Table.sample_from>`: prioritized points first, probabilities
        and weights against ``totals`` or the table's own mass)."""
        with self.lock:
            checked = Draws(check_points("draws.prioritized", draws.prioritized),
                            check_points("draws.uniform", draws.uniform))
            if self.size == 0:
                raise EmptyBufferError("size", 0, "at least one stored item to sample from")
            if totals is not None and not isinstance(totals, Mass):
                raise ConfigError("totals", totals, "a Mass or None")
            return self._sample_locked(checked, None, beta, totals, read)

    def _sample_locked(self, draws: Draws, order: np.ndarray | None, beta: float | None, totals: Mass | None,
                       read: Reader | None) -> SegmentSample:
        directory = self.index.directory
        own = self.sampler.mass(directory)
        mass = own if totals is None else totals
        slots, ids, _, probabilities = self.sampler.select(draws, order, directory, mass)
        weights = importance_weights(probabilities, mass.min_probability(), 0.0 if beta is None else beta)
        self.index.record_hits(slots)
        self.counters["sampled"] += int(slots.shape[0])
        data = None if read is None else read(slots)
        return SegmentSample(ids, slots, probabilities, weights, own.size, mass, data)

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """Ids of the live items in ``slots``."""
        result: np.ndarray = self.index.directory.slot_id[slots]
        return result

    def locate(self, ids: Any, field: str = "ids") -> tuple[np.ndarray, np.ndarray]:
        """Validated ids and their item slots; a :class:`StaleIdError` naming stale ones."""
        arr = check_ids(ids, field)
        slots, valid = self.index.directory.lookup(arr)
        if not valid.all():
            raise StaleIdError(field, arr[~valid][:8].tolist(),
                               "ids of items still in the buffer (these were evicted, deleted or never issued)")
        return arr, slots

    def read(self, slots: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Columns of the items in ``slots``, rows concatenated in order, and their lengths."""
        steps, lengths = self.index.steps_of(slots)
        assert self.storage is not None
        return self.storage.gather(steps), lengths

    def read_windows(self, slots: np.ndarray, before: int, total: int,
                     episode_field: str | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Windows of ``total`` steps per item (``before`` burn-in steps, then the item,
        then padding), flattened to ``len(slots) * total`` rows.

        Returns ``(arrays, valid, in_item)`` (masks of shape ``(len(slots), total)``).
        Invalid rows are zero. With ``episode_field``, burn-in steps of another
        episode than the item's first step are invalid too.
        """
        phys, valid, in_item = self.index.windows(slots, before, total)
        assert self.storage is not None
        arrays = self.storage.gather(phys.reshape(-1))
        if before and episode_field is not None and episode_field in self.names:
            eps = arrays[self.names.index(episode_field)].reshape(len(slots), total, -1)
            first = eps[:, before:before + 1]
            same = (eps == first).reshape(len(slots), total, -1).all(axis=2)
            valid = valid & (same | in_item)
        if not valid.all():
            flat = ~valid.reshape(-1)
            for a in arrays:  # views into the fresh gathered copy, so writable
                a[flat] = 0
        return arrays, valid, in_item

    def hit_counts(self, ids: Any) -> np.ndarray:
        _, slots = self.locate(ids)
        result: np.ndarray = self.index.hits[slots].copy()
        return result

    # ------------------------------------------------------------ change
    def delete(self, ids: Any) -> int:
        """Remove items by id; every id must be live (nothing is removed otherwise)."""
        with self.lock:
            _, slots = self.locate(ids)
            slots = np.unique(slots)
            self.index.remove(slots)
            self.sampler.on_delete(slots)
            self.counters["deleted"] += int(slots.size)
            return int(slots.size)

    def update_priorities(self, ids: Any, priorities: Any) -> int:
        """Set raw priorities by id; stale ids are skipped and counted. Returns how many applied."""
        with self.lock:
            arr = check_ids(ids, "batch_indexes")
            sampler = self.sampler
            if not isinstance(sampler, PrioritizedSampler):
                raise ConfigError("sampler", sampler.name, "a prioritized sampler to update priorities of")
            applied = int(sampler.update_by_ids(self.index.directory, np.ascontiguousarray(arr), priorities))
            self.counters["stale_updates"] += arr.shape[0] - applied
            return applied

    def oldest(self, k: int) -> np.ndarray:
        """Ids of the ``k`` oldest live items (fewer if fewer are stored)."""
        with self.lock:
            slots = self.index.oldest_slots(k)
            result: np.ndarray = self.index.directory.slot_id[slots]
            return result

    def take_oldest(self, k: int, read: Reader) -> tuple[np.ndarray, Any]:
        """Ids of the ``k`` oldest items and ``read(their slots)``, then remove them and count
        them as sampled: a queue's pop, in one atomic call."""
        with self.lock:
            k = check_count("num_items", k)
            slots = self.index.oldest_slots(k)
            ids: np.ndarray = self.index.directory.slot_id[slots]
            if ids.size == 0:
                return ids, None
            data = read(slots)
            self.delete(ids)
            self.counters["sampled"] += int(ids.size)
            return ids, data

    def mass(self) -> Mass:
        """The totals this table's probabilities are relative to."""
        with self.lock:
            return self.sampler.mass(self.index.directory)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The table's full state: each component's ``state_dict`` (arrays included)."""
        with self.lock:
            return self._state_dict_locked()

    def _state_dict_locked(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "schema": self.schema.to_json() if self.schema.resolved else None,
            "index": self.index.state_dict(),
            "sampler": {"name": self.sampler.name, "config": self.sampler.config(), **self.sampler.state_dict()},
            "storage": self.storage.state_dict() if self.storage is not None else None,
            "counters": dict(self.counters),
            "rng": _rng_state(self.rng),
        }

    @staticmethod
    def nbytes_for(capacity: int, sampler: type[Sampler] | Sampler) -> int:
        """Bytes a table of ``capacity`` timesteps holds without its rows (index and sampler)."""
        return SegmentIndex.nbytes_for(capacity) + sampler.nbytes_for(capacity)

    def check_state(self, state: Any, where: str = "table") -> dict[str, Any]:
        """Check a saved :meth:`state_dict` completely (every component, and the sampler
        against the live items); builds what needs memory only after the values are
        known to be good; changes nothing."""
        m = mapping(where, state, ("capacity", "schema", "index", "sampler", "storage", "counters", "rng"))
        capacity = integer(f"{where}.capacity", m["capacity"], 1, MAX_COUNT)
        if capacity != self.capacity:
            raise ConfigError(f"{where}.capacity", capacity, f"{self.capacity} (this buffer's capacity)")
        smp = mapping(f"{where}.sampler", m["sampler"], ("name",), closed=False)
        if smp["name"] != self.sampler.name or smp.get("config", {}) != self.sampler.config():
            raise ConfigError(f"{where}.sampler", {k: smp.get(k) for k in ("name", "config")},
                              f"{self.sampler.name} with {self.sampler.config()}")
        index = self.index.check_state(m["index"], f"{where}.index")
        schema, row_bytes = check_schema_state(m["schema"], Schema.from_structure(None), f"{where}.schema", capacity,
                                               saved_row_bytes(m["storage"]))
        check_allocation(f"{where}.capacity", capacity, capacity * row_bytes + self.nbytes_for(capacity, self.sampler),
                         f"a table of {capacity} timesteps of {row_bytes} bytes", error=CheckpointError)
        rows = None
        if (schema is None) != (m["storage"] is None):
            raise CheckpointError(f"{where}.storage", "saved rows" if m["storage"] is not None else None,
                                  "rows exactly when the state has a schema")
        if schema is not None:
            assert schema.fields is not None
            rows = PackedStorage.check_state(m["storage"], schema.fields, capacity, f"{where}.storage")
        elif index["directory"].count:
            raise CheckpointError(f"{where}.index.directory.count", index["directory"].count,
                                  "0 (the state has no schema, so no item can be stored)")
        counters = check_counters(f"{where}.counters", m["counters"], COUNTERS)
        rng = check_rng_state(m["rng"], f"{where}.rng", self.rng)
        sampler = self.sampler.check_state(smp, index["directory"].live_mask, f"{where}.sampler")
        storage = None
        if schema is not None:
            assert schema.fields is not None and rows is not None
            storage = PackedStorage.from_rows(schema.fields, capacity, rows)
        return {"schema": schema if schema is not None else Schema.from_structure(None), "storage": storage,
                "index": index, "sampler": sampler, "counters": counters, "rng": rng}

    def restore(self, checked: dict[str, Any]) -> None:
        """Put a state from :meth:`check_state` in place (assignments only)."""
        with self.lock:
            self._restore_locked(checked)

    def _restore_locked(self, checked: dict[str, Any]) -> None:
        self.index.restore(checked["index"])
        self.schema = checked["schema"]
        self.storage = checked["storage"]
        self.counters = dict(checked["counters"])
        self.rng.bit_generator.state = checked["rng"]
        self.sampler.restore(checked["sampler"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same capacity, placement and sampler kind); the whole
        state is checked before anything is replaced."""
        with self.lock:
            self.restore(self.check_state(state))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.storage is not None:  # field views must share memory with the rows again
            self.storage = PackedStorage(self.storage.fields, self.capacity, rows=self.storage.rows)
