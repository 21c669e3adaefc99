"""Table: the engine core that every front end wires up.

A table owns one schema, one storage, one sampler, the item directory and a
layout (how items map to rows): one row per item placed by a writer (a FIFO
ring or a reservoir: ``add``, ``add_batch``), items of any length as ranges of
timestep rows (``layout=StepRanges(...)``: ``add_items``, ``read``), or per-stream
episode rings that write rows and admit complete transitions
(``layouts/episodes.py``: ``write_rows``, ``admit``, ``evict_slots``). Its public
calls are its only mutators. It applies the engine's rules:

* every input is checked *before* anything changes, so an error leaves the
  table exactly as it was;
* ids, not slots, leave the table, and stale ids are detected (see ``ids.py``);
* hot paths (batched add, sample, priority update) are vectorised; the single
  add has a per-schema fast path generated at first use, a few microseconds.

Thread safety: every public method holds ``self.lock`` (a re-entrant
:class:`~ReplayTables.engine.table_lock.TableLock`) for its whole run, the
generated add lanes included, so each call is atomic with respect to the others.
A sample is atomic too: ids, rows, probabilities, weights, size and mass come
from one call (:class:`Sample`), never from a second read that an add could
overtake.

Sampling is in two steps so a sharded buffer can sample against its global
totals: :meth:`Table.mass` reports the totals, :meth:`Table.sample_from` turns
given :class:`~ReplayTables.engine.draws.Draws` into a sample whose
probabilities and weights are relative to given totals. :meth:`Table.sample`
draws the points from the table's own rng and calls it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ReplayTables.engine import validators
from ReplayTables.engine.draws import Draws
from ReplayTables.engine.fast_add import compile_add_batch, compile_add_one
from ReplayTables.engine.ids import (
    MAX_SHARDS,
    NOT_STORED,
    SHARD_SHIFT,
    DirectoryState,
    SlotDirectory,
    local_ids,
    tag_ids,
)
from ReplayTables.engine.layouts.step_ranges import StepRanges
from ReplayTables.engine.mass import Mass, probabilities_against
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.rng_state import check_rng_state
from ReplayTables.engine.rng_state import rng_state as _rng_state
from ReplayTables.engine.samplers import Sampler, UniformSampler, check_priorities
from ReplayTables.engine.schema import Field, Schema
from ReplayTables.engine.state import Arena, Counters, LocalArena
from ReplayTables.engine.state_checks import check_counters, check_fields, integer, mapping, nbytes, string
from ReplayTables.engine.storage import PackedStorage, RowStorage, row_layout
from ReplayTables.engine.table_lock import TableLock
from ReplayTables.engine.weights import importance_weights
from ReplayTables.engine.writers import Writer, make_writer
from ReplayTables.errors import (
    CheckpointError,
    ConfigError,
    EmptyBufferError,
    PriorityError,
    SchemaError,
    StaleIdError,
)

__all__ = ["COUNTERS", "STEP_RANGE_COUNTERS", "Reader", "Sample", "StepRangeState", "Table", "TableState",
           "check_capacity", "check_ids", "check_schema_state", "step_table_nbytes"]

#: What a front end reads for the item slots of a sample (called under the table's lock).
Reader = Callable[[np.ndarray], Any]


class Sample(NamedTuple):
    """What a sample or get returns, all from one call under the table's lock.

    Attributes:
        ids: the items' ids (tagged with the table's shard).
        slots: where they are stored (for layouts that read more around them).
        fields: one array per field, the rows of these ids at that instant.
        q: stored priorities (1 for a uniform sampler).
        probabilities: ``P(i)`` against ``mass``.
        weights: importance weights ``(P / P_min) ** -beta`` (ones without ``beta``).
        size: items stored when the sample was taken.
        mass: the totals the probabilities and weights are relative to (the table's
            own, or the global mass a sharded buffer passed in).
        data: what the caller's ``read(slots)`` returned, called in the same call
            (``None`` without ``read``; with a step-range layout, ``fields`` are then
            left empty, the reader having read what it needs).
    """

    ids: np.ndarray
    slots: np.ndarray
    fields: list[np.ndarray]
    q: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    size: int
    mass: Mass
    data: Any = None


#: Larger capacities or sample sizes cannot be allocated on any machine we target.
MAX_COUNT = 2**40
_INT64 = np.dtype(np.int64)
#: Bookkeeping bytes per slot besides the stored row: slot ids and the dense live list (3 int64),
#: and for a prioritized sampler the sum tree (leaf + internal levels + marks, about 12 bytes).
DIRECTORY_BYTES_PER_SLOT = 24
TREE_BYTES_PER_SLOT = 12
#: Bytes a sample needs per drawn item besides its row (draws, slots, ids, probabilities, weights).
SAMPLE_BYTES_PER_ITEM = 40


#: Samples up to this many items are not checked against the machine's memory (they always fit).
LARGE_SAMPLE = 1 << 20


def check_sample_bytes(name: str, n: int, row_bytes: int) -> None:
    """Refuse a sample of ``n`` rows of ``row_bytes`` that cannot fit in this machine's memory."""
    per_item = row_bytes + SAMPLE_BYTES_PER_ITEM
    check_allocation(name, n, n * per_item, f"a sample of {n} items of {per_item} bytes")


def check_table_bytes(name: str, capacity: int, row_bytes: int, prioritized: bool) -> None:
    """Refuse a capacity whose rows and bookkeeping cannot fit in this machine's memory.

    Called before anything is allocated (front ends call it before building a sum tree)."""
    per_slot = row_bytes + DIRECTORY_BYTES_PER_SLOT + (TREE_BYTES_PER_SLOT if prioritized else 0)
    check_allocation(name, capacity, capacity * per_slot, f"{capacity} slots of {per_slot} bytes")
#: The table's counters, as ``stats()`` reports them.
COUNTERS = ("added", "evicted", "not_stored", "sampled", "deleted", "stale_updates")
#: The counters of a table whose items are step ranges (``added_steps``: timesteps offered).
STEP_RANGE_COUNTERS = ("added", "added_steps", "evicted", "not_stored", "sampled", "deleted", "stale_updates")


class TableState(NamedTuple):
    """A checked table state, every part ready to be put in place (see :meth:`Table.check_state`)."""

    schema: Schema | None
    storage: RowStorage | None
    #: checked saved rows to copy into ``storage`` (``None``: ``storage`` holds them already)
    rows: np.ndarray | None
    writer: dict[str, int]
    directory: DirectoryState
    sampler: Any
    counters: dict[str, int]
    rng: dict[str, Any]


class StepRangeState(NamedTuple):
    """A checked state of a table with a step-range layout (see :meth:`Table.check_state`)."""

    schema: Schema
    storage: RowStorage | None
    #: checked saved rows to copy into ``storage`` (``None``: ``storage`` holds them already)
    rows: np.ndarray | None
    #: the checked layout state (``StepRanges.check_state``)
    ranges: dict[str, Any]
    sampler: Any
    counters: dict[str, int]
    rng: dict[str, Any]


def step_table_nbytes(capacity: int, sampler: type[Sampler] | Sampler) -> int:
    """Bytes a step-range table of ``capacity`` timesteps holds without its rows (index and sampler)."""
    return StepRanges.nbytes_for(capacity) + sampler.nbytes_for(capacity)


def saved_row_bytes(storage: Any) -> int | None:
    """The row size of saved rows (real data, so bounded by the checkpoint), if there are any."""
    rows = storage.get("rows") if isinstance(storage, dict) else None
    return int(rows.shape[1]) if isinstance(rows, np.ndarray) and rows.ndim == 2 else None


def check_schema_state(value: Any, current: Schema, where: str, capacity: int,
                       rows_bytes: int | None = None) -> tuple[Schema | None, int]:
    """A saved schema (or ``None``) checked against the receiving ``current`` schema; also
    (an upper bound of) its row bytes.

    The kind must be the receiver's; if the receiver's fields are already fixed,
    the saved ones must equal them, and if only their names are declared, the
    names must match (the front end builds its items from them). Each field of
    ``capacity`` items must fit in memory, and with ``rows_bytes`` (the row size of
    saved rows, real data) the fields' layout must fill exactly such a row.
    """
    if value is None:
        return None, 0
    m = mapping(where, value, ("kind", "structure", "fields"))
    kind = string(f"{where}.kind", m["kind"], ("namedtuple", "dataclass", "dict"))
    if kind != current.kind:
        raise ConfigError(f"{where}.kind", kind, f"{current.kind!r} (the kind of this buffer's structure)")
    if m["structure"] is not None:
        string(f"{where}.structure", m["structure"], max_len=1000)
    fields = [Field(path, shape, dtype) for path, shape, dtype in check_fields(f"{where}.fields", m["fields"], kind)]
    names = [".".join(f.path) for f in fields]
    if rows_bytes is not None and row_layout(fields)[1] != rows_bytes:
        raise CheckpointError(where + ".fields", [f"{n}: {f.dtype.str} {list(f.shape)}" for n, f in zip(names, fields)],
                              f"fields that fill the saved rows of {rows_bytes} bytes")
    if current.resolved and fields != current.fields:
        raise ConfigError(f"{where}.fields", names, f"the fields of this buffer: {current!r}")
    if not current.resolved and current.names and names != current.names:
        raise ConfigError(f"{where}.fields", names, f"the fields {current.names} of this buffer's structure")
    row_bytes = 0
    for i, f in enumerate(fields):
        size = nbytes(f.shape, f.dtype)
        check_allocation(f"{where}.fields[{i}]", f"shape {list(f.shape)} dtype {f.dtype.str}", capacity * size,
                         f"field {f.name!r} of {capacity} items", error=CheckpointError)
        row_bytes += size + 8  # + alignment padding
    return Schema.from_fields(kind, current.structure, fields), row_bytes


def table_nbytes(capacity: int, row_bytes: int, sampler: type[Sampler] | Sampler) -> int:
    """Bytes a table of ``capacity`` slots of ``row_bytes`` holds (rows, directory, sampler)."""
    return capacity * row_bytes + SlotDirectory.nbytes_for(capacity) + sampler.nbytes_for(capacity)


def check_capacity(name: str, value: Any) -> int:
    return validators.integer(name, value, 1, MAX_COUNT)


def check_count(name: str, value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value  # the common case in one test (bool is a subclass of int, not int itself)
    return validators.integer(name, value, 0, MAX_COUNT)


def check_reserved(schema: Schema, reserved: frozenset[str]) -> None:
    """Refuse top-level field names that a front end's batch uses for itself."""
    clash = sorted({name.split(".")[0] for name in schema.names} & reserved)
    if clash:
        raise SchemaError("structure", clash, f"field names other than {sorted(reserved)} "
                                              "(a batch uses these for itself)")


def check_points(field: str, points: Any) -> np.ndarray:
    """Draw points as a 1-d float64 array of values in [0, 1)."""
    try:
        arr = np.ascontiguousarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(field, points, "a 1-d array of numbers in [0, 1)") from None
    if arr.ndim != 1:
        raise ConfigError(field, points, "a 1-d array of numbers in [0, 1)")
    if arr.shape[0] and not ((arr >= 0.0) & (arr < 1.0)).all():
        raise ConfigError(field, arr[~((arr >= 0.0) & (arr < 1.0))][:4].tolist(), "numbers in [0, 1)")
    return arr


def check_ids(ids: Any, field: str = "ids") -> np.ndarray:
    """``ids`` as a 1-d int64 array; an error for floats, strings or nesting."""
    if type(ids) is np.ndarray and ids.dtype is _INT64 and ids.ndim == 1:
        return ids  # what sample() hands out: nothing to convert
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError):  # ragged nesting
        raise StaleIdError(field, ids, "a 1-d array of integer item ids") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise StaleIdError(field, ids, "a 1-d array of integer item ids")
    return arr.astype(np.int64, copy=False)


class Table:
    """Fixed-capacity item store: schema + storage + layout + sampler + ids (see the module docstring).

    Args:
        capacity: rows (timesteps) stored at most.
        structure: the schema's source (NamedTuple, dataclass, dict of FieldSpec, or
            ``None``: fixed by the first add).
        writer: the placement of the one-row-per-item layout (``"fifo"``, ``"reservoir"``
            or a Writer); not used with ``layout``.
        layout: ``None`` (one row per item) or a :class:`StepRanges` of ``capacity`` steps.
        sampler, rng: what draws items, and the generator behind it (an int: a seed).
        capacity_name, count_name: the argument names errors report for the
            capacity and a sample's size (the front end's own names).
        storage, arena: where rows and scalar state live (``engine/storage``, ``state.py``).
        shard_tag: the shard index every id carries (``ids.py``).
        lazy_ids: the directory writes its markers as slots fill (one-row layout only).
    """

    def __init__(self, capacity: int, structure: Any = None, *, writer: Writer | str = "fifo",
                 sampler: Sampler | None = None, rng: np.random.Generator | int | None = None,
                 capacity_name: str = "capacity", storage: RowStorage | None = None,
                 arena: Arena | None = None, shard_tag: int = 0, lazy_ids: bool = False,
                 layout: StepRanges | None = None, count_name: str = "n") -> None:
        if isinstance(shard_tag, bool) or not isinstance(shard_tag, (int, np.integer)) \
                or not 0 <= shard_tag < MAX_SHARDS:
            raise ConfigError("shard_tag", shard_tag, f"an integer from 0 to {MAX_SHARDS - 1}")
        #: the shard index every id of this table carries (``ids.tag_ids``)
        self.shard_tag = int(shard_tag)
        self._tag = self.shard_tag << SHARD_SHIFT
        #: held by every public call (re-entrant)
        self.lock = TableLock()
        self.capacity = check_capacity(capacity_name, capacity)
        self.capacity_name = capacity_name
        self.count_name = count_name
        if layout is not None and (not isinstance(layout, StepRanges) or layout.steps != self.capacity):
            raise ConfigError("layout", layout, f"None or a StepRanges of {self.capacity} steps")
        #: ``None``: one row per item, placed by ``writer``; else the step ranges of the items
        self.layout = layout
        self.schema = structure if isinstance(structure, Schema) else Schema.from_structure(structure)
        self.writer = make_writer(writer, self.capacity) if isinstance(writer, str) else writer
        self.sampler = sampler if sampler is not None else UniformSampler()
        if rng is None:
            rng = np.random.default_rng()
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)) and rng >= 0:
            rng = np.random.default_rng(int(rng))  # an int seed means np.random.default_rng(seed)
        if not isinstance(rng, np.random.Generator):
            raise ConfigError("rng", rng, "a numpy.random.Generator or a non-negative int seed")
        self.rng = rng
        self._check_bytes(0)
        # lazy_ids: only items added through this table take slots (in the writer's order), so the
        # directory may write its never-written markers as the slots fill (see engine.ids)
        self.directory = SlotDirectory(self.capacity, lazy=lazy_ids) if layout is None else layout.directory
        #: where rows go once the fields are known (allocated then, or already allocated by the caller:
        #: a reopened memory-mapped file); ``storage`` is ``None`` until then
        self._storage = storage if storage is not None else PackedStorage()
        self.storage: RowStorage | None = None
        #: top-level field names the front end's batches reserve (checked when fields are fixed)
        self.reserved_names: frozenset[str] = frozenset()
        self.counters = Counters("table.counters", COUNTERS if layout is None else STEP_RANGE_COUNTERS)
        #: where the scalars of the table and its components live (see ``state.py``)
        self.arena = arena if arena is not None else LocalArena()
        for component in self._components():
            component.bind(self.arena)
        self._add_fast: Any = None
        self._add_batch_fast: Any = None
        #: a shared table's add journal (``SharedTable``): the generated lanes call its ``open_add(n)``
        #: before an add's first write and ``close_add()`` after its last; ``None`` for a private table
        self.journal: Any = None
        if self.schema.resolved:
            self._allocate()

    # ------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        return self.directory.count

    @property
    def fields(self) -> list[Field]:
        return self.schema.fields or []

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def _check_bytes(self, row_bytes: int) -> None:
        if self.layout is None:
            check_table_bytes(self.capacity_name, self.capacity, row_bytes, self.sampler.prioritized)
        else:
            check_allocation(self.capacity_name, self.capacity, self.capacity * row_bytes
                             + step_table_nbytes(self.capacity, self.sampler),
                             f"{self.capacity} timesteps of {row_bytes} bytes")

    def _allocate(self) -> None:
        assert self.schema.fields is not None
        row_bytes = sum(f.nbytes for f in self.schema.fields)
        storage = self._storage
        if storage.allocated:
            if storage.fields != self.schema.fields or storage.capacity != self.capacity:
                raise ConfigError("storage", f"{storage.capacity} slots of {storage.fields}",
                                  f"{self.capacity} slots of the table's fields {self.schema.fields}")
        else:
            if storage.kind == PackedStorage.kind:  # a file may exceed RAM; memory must fit
                self._check_bytes(row_bytes)
            storage.allocate(self.schema.fields, self.capacity)
        self.storage = storage
        self._add_fast = None
        self._add_batch_fast = None

    def _prepare(self, item: Any, batched: bool) -> Schema:
        """The schema to check ``item`` against. Before the first add it is a resolved
        copy, which :meth:`_ensure_storage` adopts only once the whole add has passed
        its checks, so a refused first item fixes no dtype or shape."""
        if self.layout is not None:
            raise ConfigError("add", type(item).__name__, "add_items(columns, lengths): this table's items are "
                                                          "ranges of steps")
        if self.storage is not None:
            return self.schema
        schema = copy.copy(self.schema)
        schema.resolve(item, batched=batched)
        check_reserved(schema, self.reserved_names)
        return schema

    def _ensure_storage(self, schema: Schema) -> RowStorage:
        if self.storage is None:
            self.schema = schema
            self._allocate()
        assert self.storage is not None
        return self.storage

    # ------------------------------------------------------------ add
    def add(self, item: Any, priority: Any = None) -> int:
        """Store one item; returns its id (``NOT_STORED`` if the writer declined it)."""
        fast = self._add_fast
        if fast is not None and priority is None:
            new_id: int = fast(item)  # a Python int; the generated lane holds the lock itself
            return new_id
        with self.lock:
            return self._add_checked(*self._check_one(item, priority))

    def _add_general(self, item: Any, priority: Any = None, checked: Any = None) -> int:
        """The checked single add, without the generated fast path (``checked``: from :meth:`_check_one`
        on this item, if the caller checked it already)."""
        with self.lock:
            if checked is None or checked[0] is not self.schema:
                checked = self._check_one(item, priority)
            return self._add_checked(*checked)

    def _check_one(self, item: Any, priority: Any) -> tuple[Schema, list[np.ndarray], np.ndarray | None]:
        """Check and convert one item and its priority, changing nothing: ``(schema, arrays, priority)``.

        Reads only the input and the schema, so a table whose rows are allocated
        (``storage`` set) may call it before taking its lock."""
        schema = self._prepare(item, batched=False)
        arrays = schema.coerce(schema.values_of(item))
        return schema, arrays, self._check_insert_priorities(priority, 1)

    def _add_checked(self, schema: Schema, arrays: list[np.ndarray], prio: np.ndarray | None) -> int:
        """Store one item checked by :meth:`_check_one` (under the lock): nothing in it refuses."""
        storage = self._ensure_storage(schema)
        if self._add_fast is None and prio is None and not self.sampler.requires_priority:
            self._add_fast = compile_add_one(self)
        slot = self.writer.place_one(self.rng)
        return self._commit_one(storage, slot, arrays, prio)

    def _commit_one(self, storage: RowStorage, slot: int, arrays: list[np.ndarray],
                    prio: np.ndarray | None) -> int:
        self.counters["added"] += 1
        if slot < 0:
            self.counters["not_stored"] += 1
            return NOT_STORED
        directory = self.directory
        if directory.slot_id[slot] >= 0:
            self.counters["evicted"] += 1
        new_id = directory.assign_one(slot)
        for column, value in zip(storage.columns, arrays):
            column[slot] = value
        if self.sampler.prioritized:
            self.sampler.on_insert(np.array([slot], dtype=np.int64), prio, directory)
        return new_id | self._tag

    def _check_insert_priorities(self, priority: Any, n: int) -> np.ndarray | None:
        if priority is None:
            if self.sampler.requires_priority:
                raise PriorityError("priority", None, "a priority for every add: new_priority_mode is 'given'")
            return None
        field = "priority" if n == 1 else "priorities"
        checked = check_priorities(priority, n, field)
        self.sampler.validate(checked, field)
        return checked

    def add_batch(self, items: Any, priorities: Any = None) -> np.ndarray:
        """Store a batch (every field with a leading batch axis); returns the ids."""
        fast = self._add_batch_fast
        if fast is not None and priorities is None:
            ids: np.ndarray = fast(items)  # the generated lane holds the lock itself
            return ids
        return self._add_batch_general(items, priorities)

    def _add_batch_general(self, items: Any, priorities: Any = None, checked: Any = None) -> np.ndarray:
        """The checked batch add (``checked``: as for :meth:`_add_general`, from :meth:`_check_batch`)."""
        with self.lock:
            if checked is None or checked[0] is not self.schema:
                checked = self._check_batch(items, priorities)
            return tag_ids(self._add_batch_checked(*checked), self.shard_tag)

    def _check_batch(self, items: Any, priorities: Any) -> tuple[Schema, int, list[np.ndarray], np.ndarray | None]:
        """Check and convert a batch and its priorities, changing nothing: ``(schema, m, arrays, priorities)``.

        Like :meth:`_check_one`, callable before the lock once ``storage`` is set."""
        schema = self._prepare(items, batched=True)
        m, arrays = schema.coerce_batch(schema.values_of(items))
        return schema, m, arrays, self._check_insert_priorities(priorities, m)

    def _add_batch_checked(self, schema: Schema, m: int, arrays: list[np.ndarray],
                           prio: np.ndarray | None) -> np.ndarray:
        """Store a batch checked by :meth:`_check_batch` (under the lock): nothing in it refuses."""
        storage = self._ensure_storage(schema)
        if self._add_batch_fast is None and not self.sampler.requires_priority:
            self._add_batch_fast = compile_add_batch(self)
        if m == 0:
            return np.empty(0, dtype=np.int64)
        directory = self.directory
        items_idx, slots = self.writer.place(m, self.rng)
        self.counters["added"] += m
        if isinstance(slots, slice):
            start, stop = slots.start, slots.stop
            directory.reach(stop)
            if directory.identity:
                self.counters["evicted"] += max(0, min(stop, directory.count) - start)
            else:
                self.counters["evicted"] += int((directory.slot_id[start:stop] >= 0).sum())
            ids = directory.assign_range(start, stop)
            slot_arr = None
        else:
            if slots.size:
                directory.reach(int(slots.max()) + 1)
            self.counters["evicted"] += int((directory.slot_id[slots] >= 0).sum())
            ids = directory.assign(slots)
            slot_arr = slots
        if isinstance(items_idx, slice) and items_idx == slice(0, m):
            storage.write(slots, arrays)
            out = ids
        else:
            storage.write(slots, [a[items_idx] for a in arrays])
            out = np.full(m, NOT_STORED, dtype=np.int64)
            out[items_idx] = ids
            self.counters["not_stored"] += m - len(ids)
        if self.sampler.prioritized and len(ids):
            if slot_arr is None:
                slot_arr = np.arange(slots.start, slots.stop, dtype=np.int64)  # type: ignore[union-attr]
            self.sampler.on_insert(slot_arr, None if prio is None else prio[items_idx], directory)
        return out

    # ------------------------------------------------------------ step-range layout
    def _steps(self) -> StepRanges:
        if self.layout is None:
            raise ConfigError("layout", None, "a StepRanges layout (this table stores one row per item: add, "
                                              "add_batch)")
        return self.layout

    def check_items(self, columns: Mapping[str, Any], lengths: Any, priorities: Any = None) -> tuple[
            Schema, list[np.ndarray], np.ndarray, np.ndarray | None]:
        """Validate a batch of step-range items without changing anything:
        ``(schema, arrays, lengths, priorities)``."""
        with self.lock:
            index = self._steps()
            schema = self.schema
            if not schema.resolved:
                schema = Schema.from_structure(None)
                schema.resolve(columns, batched=True)
                assert schema.fields is not None
                self._check_bytes(sum(f.nbytes for f in schema.fields))  # the rows are allocated on this first add
            m, arrays = schema.coerce_batch(schema.values_of(columns))
            lens = np.asarray(lengths)
            if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
                raise SchemaError("lengths", lengths, "a 1-d array of item lengths")
            lens = lens.astype(np.int64, copy=False)
            if int(lens.sum()) != m:
                raise SchemaError("lengths", int(lens.sum()), f"item lengths that add up to the {m} rows of the batch")
            index.check_lengths(lens)
            prio = None
            if priorities is not None:
                prio = check_priorities(priorities, lens.shape[0])
            elif self.sampler.requires_priority:
                raise SchemaError("priorities", None, "a priority for every item")
            return schema, arrays, lens, prio

    def add_items(self, columns: Mapping[str, Any], lengths: Any, priorities: Any = None) -> np.ndarray:
        """Store step-range items given as consecutive rows of ``columns`` (``lengths`` rows
        each); returns one id per item (``NOT_STORED`` for items a reservoir declined)."""
        with self.lock:
            return self._add_items_checked(*self.check_items(columns, lengths, priorities))

    def _add_items_checked(self, schema: Schema, arrays: list[np.ndarray], lens: np.ndarray,
                           prio: np.ndarray | None) -> np.ndarray:
        """The writes of :meth:`add_items` for input :meth:`check_items` accepted (the lock held)."""
        with self.lock:
            index = self._steps()
            if lens.size == 0:
                return np.empty(0, dtype=np.int64)
            storage = self._ensure_storage(schema)
            ids, gone, placement, evicted = index.insert(lens, self.rng)
            for rows, steps in placement:
                storage.write(steps, [a[rows] for a in arrays])
            stored = ids != NOT_STORED
            new_slots = ids[stored] % self.capacity
            if gone.size:
                self.sampler.on_delete(gone)
            if self.sampler.prioritized and new_slots.size:
                self.sampler.on_insert(new_slots, None if prio is None else prio[stored], self.directory)
            c = self.counters
            c["added"] += int(lens.size)
            c["added_steps"] += int(lens.sum())
            c["evicted"] += evicted
            c["not_stored"] += int(lens.size - new_slots.size)
            return tag_ids(ids, self.shard_tag)

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """Ids of the live items in ``slots``."""
        with self.lock:
            return tag_ids(self.directory.slot_id[slots], self.shard_tag)

    def read(self, slots: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Columns of the step-range items in ``slots``, rows concatenated in order, and their lengths."""
        with self.lock:
            steps, lengths = self._steps().steps_of(slots)
            assert self.storage is not None
            return self.storage.gather(steps), lengths

    def read_windows(self, slots: np.ndarray, before: int, total: int,
                     episode_field: str | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Windows of ``total`` steps per step-range item (``before`` burn-in steps, then the
        item, then padding), flattened to ``len(slots) * total`` rows.

        Returns ``(arrays, valid, in_item)`` (masks of shape ``(len(slots), total)``).
        Invalid rows are zero. With ``episode_field``, burn-in steps of another
        episode than the item's first step are invalid too.
        """
        with self.lock:
            phys, valid, in_item = self._steps().windows(slots, before, total)
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
        """How many times each step-range item was drawn since it was stored."""
        with self.lock:
            index = self._steps()
            _, slots = self.locate(ids)
            result: np.ndarray = index.hits[slots].copy()
            return result

    def oldest(self, k: int) -> np.ndarray:
        """Ids of the ``k`` oldest live step-range items (fewer if fewer are stored)."""
        with self.lock:
            slots = self._steps().oldest_slots(k)
            return tag_ids(self.directory.slot_id[slots], self.shard_tag)

    def take_oldest(self, k: int, read: Reader) -> tuple[np.ndarray, Any]:
        """Ids of the ``k`` oldest step-range items and ``read(their slots)``, then remove them
        and count them as sampled: a queue's pop, in one atomic call."""
        with self.lock:
            k = check_count(self.count_name, k)
            slots = self._steps().oldest_slots(k)
            ids = tag_ids(self.directory.slot_id[slots], self.shard_tag)
            if ids.size == 0:
                return ids, None
            data = read(slots)
            self.delete(ids)
            self.counters["sampled"] += int(ids.size)
            return ids, data

    # ------------------------------------------------------------ read
    def mass(self) -> Mass:
        """The totals this table's probabilities are relative to (see :mod:`~ReplayTables.engine.mass`)."""
        with self.lock:
            return self.sampler.mass(self.directory)

    def sample(self, n: int, beta: float | None = None, read: Reader | None = None) -> Sample:
        """``n`` items drawn by the sampler (with replacement), in one atomic call.

        The points come from the table's rng (:meth:`Sampler.split`) and are turned
        into items by :meth:`sample_from` against the table's own mass. With
        ``beta`` the weights are importance weights for that exponent, else ones.
        ``read(slots)`` (optional) reads more around the items in the same call;
        its result is ``Sample.data``. With a step-range layout each draw counts a
        hit of its item (:meth:`hit_counts`).
        """
        with self.lock:
            n = check_count(self.count_name, n)
            self._check_sample(n)
            draws, order = self.sampler.split(n, self.rng, self.directory)
            return self._sample_locked(draws, order, beta, None, read)

    def sample_from(self, draws: Draws, beta: float | None = None, totals: Mass | None = None,
                    read: Reader | None = None) -> Sample:
        """The items given points select (see :class:`~ReplayTables.engine.draws.Draws`), in one call.

        Items of ``draws.prioritized`` come first, then those of ``draws.uniform``.
        Probabilities ``(1 - u) q / total + u / size`` and weights
        ``(P / P_min) ** -beta`` are computed against ``totals`` (a sharded
        buffer's global :class:`Mass`) or, when ``None``, the table's own mass.
        """
        with self.lock:
            checked = Draws(check_points("draws.prioritized", draws.prioritized),
                            check_points("draws.uniform", draws.uniform))
            self._check_sample(checked.n)
            if totals is not None and not isinstance(totals, Mass):
                raise ConfigError("totals", totals, "a Mass or None")
            return self._sample_locked(checked, None, beta, totals, read)

    def _check_sample(self, n: int) -> None:
        if self.directory.count == 0:
            raise EmptyBufferError("size", 0, "at least one stored item to sample from")
        if n > LARGE_SAMPLE:  # every item has at least one row
            check_sample_bytes(self.count_name, n, self.storage.row_bytes if self.storage is not None else 0)

    def _sample_locked(self, draws: Draws, order: np.ndarray | None, beta: float | None,
                       totals: Mass | None, read: Reader | None) -> Sample:
        own = self.sampler.mass(self.directory)
        mass = own if totals is None else totals
        slots, ids, q, probabilities = self.sampler.select(draws, order, self.directory, mass)
        weights = importance_weights(probabilities, mass.min_probability() if beta else 0.0, beta or 0.0)
        assert self.storage is not None
        counters = self.counters  # its memoryview straight: the mapping's __getitem__/__setitem__ are two calls
        counters.view[counters.index["sampled"]] += int(slots.shape[0])
        if self.layout is None:
            fields = self.storage.gather(slots)
        else:
            self.layout.record_hits(slots)
            fields = [] if read is not None else self.read(slots)[0]
        return Sample(tag_ids(ids, self.shard_tag) if self._tag else ids, slots, fields, q, probabilities, weights,
                      own.size, mass, None if read is None else read(slots))

    def locate(self, ids: Any, field: str = "ids") -> tuple[np.ndarray, np.ndarray]:
        """Validated ids and their slots; a :class:`StaleIdError` naming any stale id or
        any id of another shard."""
        with self.lock:
            arr = check_ids(ids, field)
            slots, valid = self.directory.lookup(local_ids(field, arr, self.shard_tag))
            if not valid.all():
                bad = arr[~valid]
                raise StaleIdError(field, bad[:8].tolist(),
                                   "ids of items still in the buffer (these were overwritten, deleted or never "
                                   "issued)")
            return arr, slots

    def get(self, ids: Any, beta: float | None = None) -> Sample:
        """The items with these ids, with probabilities and (with ``beta``) weights against
        the table's own mass; an error naming any id that is stale."""
        with self.lock:
            arr, slots = self.locate(ids)
            mass = self.sampler.mass(self.directory)
            if self.storage is None:
                empty = np.empty(0)
                return Sample(arr, slots, [], empty, empty, empty, 0, mass)
            q = self.sampler.stored(slots)
            probabilities = probabilities_against(q, mass)
            weights = importance_weights(probabilities, mass.min_probability(), 0.0 if beta is None else beta)
            fields = self.storage.gather(slots) if self.layout is None else self.read(slots)[0]
            return Sample(arr, slots, fields, q, probabilities, weights, mass.size, mass)

    # ------------------------------------------------------------ change
    # Layouts that decide slots themselves (the per-stream episode rings) write rows first
    # and make them items once complete; these calls are their only way to change the table.
    def write_rows(self, slots: np.ndarray, values: list[np.ndarray]) -> None:
        """Write step rows at ``slots`` (checked values, one array per field); items are not changed."""
        with self.lock:
            assert self.storage is not None
            self.storage.write(slots, values)

    def write_row(self, slot: int, values: list[Any]) -> None:
        """Write one row at ``slot`` (checked values); items are not changed."""
        with self.lock:
            assert self.storage is not None
            for column, value in zip(self.storage.columns, values):
                column[slot] = value

    def admit(self, slots: np.ndarray) -> np.ndarray:
        """Make the rows at ``slots`` (unique, written, not live) items: their ids, by the one id rule."""
        with self.lock:
            directory = self.directory
            ids = directory.assign(slots)
            if self.sampler.prioritized:
                self.sampler.on_insert(slots, None, directory)
            self.counters["added"] += int(slots.shape[0])
            return tag_ids(ids, self.shard_tag)

    def admit_one(self, slot: int) -> np.ndarray:
        """:meth:`admit` for one slot (the per-step path: the directory's scalar id rule)."""
        with self.lock:
            directory = self.directory
            ids = np.array([directory.assign_one(slot) | self._tag], dtype=np.int64)
            if self.sampler.prioritized:
                self.sampler.on_insert(np.array([slot], dtype=np.int64), None, directory)
            self.counters["added"] += 1
            return ids

    def evict_slots(self, slots: np.ndarray) -> int:
        """Remove the items at those of ``slots`` (unique) that hold one, counted as evicted; returns how many."""
        with self.lock:
            directory = self.directory
            live = slots[directory.slot_id[slots] >= 0]
            if live.size:
                directory.remove(live)
                self.sampler.on_delete(live)
                self.counters["evicted"] += int(live.size)
            return int(live.size)

    def delete(self, ids: Any) -> int:
        """Remove items by id; all ids must be live (nothing is removed otherwise). Returns how
        many items were removed (an id given twice counts once), as every table does."""
        with self.lock:
            _, slots = self.locate(ids)
            slots = np.unique(slots)
            if self.layout is None:
                self.directory.remove(slots)
            else:
                self.layout.remove(slots)
            self.sampler.on_delete(slots)
            self.counters["deleted"] += int(slots.size)
            return int(slots.size)

    def update_priorities(self, ids: Any, priorities: Any, field: str = "ids") -> int:
        """Set raw priorities; stale ids are skipped and counted (ids of another shard are
        refused). Returns how many were applied. ``field``: the name errors give ``ids``."""
        with self.lock:
            arr = check_ids(ids, field)
            fused = getattr(self.sampler, "update_by_ids", None)
            if fused is not None:
                applied = int(fused(self.directory, arr, priorities, self.shard_tag))
                counters = self.counters  # its view straight (see _sample_locked)
                counters.view[counters.index["stale_updates"]] += arr.shape[0] - applied
                return applied
            p = check_priorities(priorities, arr.shape[0])
            self.sampler.validate(p)
            slots, valid = self.directory.lookup(local_ids(field, arr, self.shard_tag))
            if not valid.all():
                self.counters["stale_updates"] += int((~valid).sum())
                slots, p = slots[valid], p[valid]
            if slots.size:
                self.sampler.on_update(slots, p)
            return int(slots.size)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The table's full state: each component's ``state_dict`` (arrays included)."""
        with self.lock:
            return self._state_dict_locked()

    def _state_dict_locked(self) -> dict[str, Any]:
        if self.layout is not None:
            return {
                "capacity": self.capacity,
                "schema": self.schema.to_json() if self.schema.resolved else None,
                "index": self.layout.state_dict(),
                "sampler": {"name": self.sampler.name, "config": self.sampler.config(), **self.sampler.state_dict()},
                "storage": self.storage.state_dict() if self.storage is not None else None,
                "counters": dict(self.counters),
                "rng": _rng_state(self.rng),
            }
        return {
            "capacity": self.capacity,
            "schema": self.schema.to_json() if self.schema.resolved else None,
            "writer": {"name": self.writer.name, **self.writer.state_dict()},
            "sampler": {"name": self.sampler.name, "config": self.sampler.config(), **self.sampler.state_dict()},
            "directory": self.directory.state_dict(),
            "storage": self.storage.state_dict() if self.storage is not None else None,
            "counters": dict(self.counters),
            "rng": _rng_state(self.rng),
        }

    def check_state(self, state: Any, where: str = "table",
                    rows_in_storage: bool = False) -> TableState | StepRangeState:
        """Check a saved :meth:`state_dict` completely; changes nothing.

        Every component checks its own part (the writer, directory, sampler,
        storage layout, counters and rng state), and the parts are checked against
        each other (the sampler's leaves against the live slots). What needs
        memory is checked against the machine before it is built. A value that
        cannot be right is a :class:`CheckpointError`; a state of another kind of
        table (capacity, writer, sampler settings, fields) a :class:`ConfigError`.
        ``rows_in_storage``: the state has no rows because the table's storage holds
        them (a reopened memory-mapped file). A step-range table's state has the
        layout's ``index`` where a one-row table has ``writer`` and ``directory``.
        """
        if self.layout is not None:
            return self._check_step_state(self.layout, state, where)
        m = mapping(where, state, ("capacity", "schema", "writer", "sampler", "directory", "storage", "counters",
                                   "rng"))
        capacity = integer(f"{where}.capacity", m["capacity"], 1, MAX_COUNT)
        if capacity != self.capacity:
            raise ConfigError(f"{where}.capacity", capacity, f"{self.capacity} (the table's capacity)")
        for part, component in (("writer", self.writer), ("sampler", self.sampler)):
            name = mapping(f"{where}.{part}", m[part], ("name",), closed=False)["name"]
            if name != component.name:
                raise ConfigError(f"{where}.{part}.name", name, repr(component.name))
        if m["sampler"].get("config", {}) != self.sampler.config():
            raise ConfigError(f"{where}.sampler.config", m["sampler"].get("config"), f"{self.sampler.config()}")
        writer = self.writer.check_state(m["writer"], f"{where}.writer")
        directory = self.directory.check_state(m["directory"], f"{where}.directory")
        schema, row_bytes = check_schema_state(m["schema"], self.schema, f"{where}.schema", capacity,
                                               saved_row_bytes(m["storage"]))
        if schema is not None:
            clash = sorted({name.split(".")[0] for name in schema.names} & self.reserved_names)
            if clash:
                raise CheckpointError(f"{where}.schema.fields", clash, f"field names other than "
                                                                       f"{sorted(self.reserved_names)}")
        check_allocation(f"{where}.capacity", capacity, table_nbytes(capacity, row_bytes, self.sampler),
                         f"a table of {capacity} slots of {row_bytes} bytes", error=CheckpointError)
        saved_rows = None
        if m["storage"] is not None or (schema is not None and not rows_in_storage):
            if schema is None:
                raise CheckpointError(f"{where}.storage", "saved rows", "None (the state has no schema)")
            assert schema.fields is not None
            saved_rows = PackedStorage.check_state(m["storage"], schema.fields, capacity, f"{where}.storage")
        if schema is None and directory.count:
            raise CheckpointError(f"{where}.directory.count", directory.count, "0 (the state has no schema, so no "
                                                                               "item can be stored)")
        counters = check_counters(f"{where}.counters", m["counters"], COUNTERS)
        rng = check_rng_state(m["rng"], f"{where}.rng", self.rng)
        # every value is good: build what needs memory (nothing of this table is touched yet)
        sampler = self.sampler.check_state(m["sampler"], directory.live_mask, f"{where}.sampler")
        storage: RowStorage | None = None
        if schema is not None:
            assert schema.fields is not None
            if self.storage is not None and self.storage.fields == schema.fields:
                storage = self.storage  # saved rows are copied into it by restore()
            elif saved_rows is not None:
                storage = PackedStorage.from_rows(schema.fields, capacity, saved_rows)
                saved_rows = None
            else:
                raise ConfigError("storage", "no saved rows", f"a storage holding the rows of {capacity} slots of "
                                                              f"{schema.fields} (a reopened file)")
        return TableState(schema, storage, saved_rows, writer, directory, sampler, counters, rng)

    def _check_step_state(self, index: StepRanges, state: Any, where: str) -> StepRangeState:
        """:meth:`check_state` of a step-range table: every component, and the sampler
        against the live items; builds what needs memory only after the values are
        known to be good; changes nothing."""
        m = mapping(where, state, ("capacity", "schema", "index", "sampler", "storage", "counters", "rng"))
        capacity = integer(f"{where}.capacity", m["capacity"], 1, MAX_COUNT)
        if capacity != self.capacity:
            raise ConfigError(f"{where}.capacity", capacity, f"{self.capacity} (this buffer's capacity)")
        smp = mapping(f"{where}.sampler", m["sampler"], ("name",), closed=False)
        if smp["name"] != self.sampler.name or smp.get("config", {}) != self.sampler.config():
            raise ConfigError(f"{where}.sampler", {k: smp.get(k) for k in ("name", "config")},
                              f"{self.sampler.name} with {self.sampler.config()}")
        checked_index = index.check_state(m["index"], f"{where}.index")
        schema, row_bytes = check_schema_state(m["schema"], Schema.from_structure(None), f"{where}.schema", capacity,
                                               saved_row_bytes(m["storage"]))
        check_allocation(f"{where}.capacity", capacity,
                         capacity * row_bytes + step_table_nbytes(capacity, self.sampler),
                         f"a table of {capacity} timesteps of {row_bytes} bytes", error=CheckpointError)
        rows = None
        if (schema is None) != (m["storage"] is None):
            raise CheckpointError(f"{where}.storage", "saved rows" if m["storage"] is not None else None,
                                  "rows exactly when the state has a schema")
        if schema is not None:
            assert schema.fields is not None
            rows = PackedStorage.check_state(m["storage"], schema.fields, capacity, f"{where}.storage")
        elif checked_index["directory"].count:
            raise CheckpointError(f"{where}.index.directory.count", checked_index["directory"].count,
                                  "0 (the state has no schema, so no item can be stored)")
        counters = check_counters(f"{where}.counters", m["counters"], STEP_RANGE_COUNTERS)
        rng = check_rng_state(m["rng"], f"{where}.rng", self.rng)
        sampler = self.sampler.check_state(smp, checked_index["directory"].live_mask, f"{where}.sampler")
        storage: RowStorage | None = None
        if schema is not None:
            assert schema.fields is not None and rows is not None
            if self.storage is not None and self.storage.fields == schema.fields:
                storage = self.storage  # saved rows are copied into it by restore() (a shared table's stay shared)
            else:
                storage = PackedStorage.from_rows(schema.fields, capacity, rows)
                rows = None
        return StepRangeState(schema if schema is not None else Schema.from_structure(None), storage, rows,
                              checked_index, sampler, counters, rng)

    def restore(self, checked: TableState | StepRangeState) -> None:
        """Put a state from :meth:`check_state` in place (assignments only: it cannot fail half-way)."""
        with self.lock:
            self._restore_locked(checked)

    def _restore_locked(self, checked: TableState | StepRangeState) -> None:
        if isinstance(checked, StepRangeState):
            assert self.layout is not None
            self.layout.restore(checked.ranges)
            self.schema = checked.schema
            self.storage = checked.storage
            if checked.storage is not None:
                self._storage = checked.storage
                if checked.rows is not None:
                    checked.storage.restore_arrays(checked.rows)
            self.counters.update(checked.counters)
            self.rng.bit_generator.state = checked.rng
            self.sampler.restore(checked.sampler)
            return
        self._add_fast = None
        self._add_batch_fast = None
        if checked.schema is not None:
            self.schema = checked.schema
        self.storage = checked.storage
        if checked.storage is not None and checked.rows is not None:
            checked.storage.restore_arrays(checked.rows)
        self.writer.restore(checked.writer)
        self.directory.restore(checked.directory)
        self.sampler.restore(checked.sampler)
        self.counters.update(checked.counters)
        self.rng.bit_generator.state = checked.rng

    def bind(self, arena: Arena, carry: bool = True) -> None:
        """Keep the table's scalars in ``arena`` from now on.

        ``carry=True`` copies the current values in first (a creator moving its
        state into shared memory); ``carry=False`` adopts what ``arena`` holds (a
        process attaching to state someone else keeps). The arena must hold every
        array of the current arena's layout. A bound rate limiter is not moved:
        bind it again with :meth:`bind_rate_limiter`.
        """
        with self.lock:
            layout = self.arena.layout()
            for name, (shape, dtype) in layout.items():
                arena.array(name, shape, dtype)  # refuses a missing or different array before anything moves
            if carry:
                arena.copy_from(self.arena)
            for component in self._components():
                component.bind(arena)
            self.arena = arena
            self._add_fast = None  # the generated lanes hold views of the old arrays
            self._add_batch_fast = None

    def _components(self) -> tuple[Any, ...]:
        """The components whose scalars live in the table's arena."""
        parts: tuple[Any, ...] = (self.counters, self.writer, self.directory, self.sampler)
        return parts if self.layout is None else (*parts, self.layout)

    def bind_rate_limiter(self, limiter: Any) -> None:
        """Keep a :class:`~ReplayTables.rate_limiters.RateLimiter`'s counts in this table's arena
        (its current counts are carried over; an arena that holds them already wins)."""
        with self.lock:
            limiter.bind(self.arena.array("rate_limiter.counts", (2,), np.int64, initial=limiter.counts))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same capacity, writer and sampler kinds).

        Everything is checked before anything is replaced, so a state that does not
        fit leaves the table as it was.
        """
        with self.lock:
            self.restore(self.check_state(state))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """:meth:`state_dict` split into JSON-able metadata and named arrays."""
        from ReplayTables.checkpoint import split_arrays

        meta, arrays = split_arrays(self.state_dict())
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` produced."""
        from ReplayTables.checkpoint import join_arrays

        self.load_state_dict(join_arrays(meta, arrays, "table"))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_add_fast"] = None  # generated code is rebuilt on first add
        state["_add_batch_fast"] = None
        return state  # the lock pickles as a new, unlocked one (TableLock.__reduce__)
