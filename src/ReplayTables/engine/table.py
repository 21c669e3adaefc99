"""Table: the engine core that every front end wires up.

A table owns one schema, one storage, one writer, one sampler and the slot
directory, and applies the engine's rules:

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
from typing import Any, NamedTuple

import numpy as np

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

__all__ = ["COUNTERS", "Sample", "Table", "TableState", "check_capacity", "check_ids", "check_schema_state"]


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
    """

    ids: np.ndarray
    slots: np.ndarray
    fields: list[np.ndarray]
    q: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    size: int
    mass: Mass


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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_COUNT:
        raise ConfigError(name, value, f"an integer from 1 to {MAX_COUNT}")
    return int(value)


def check_count(name: str, value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value  # the common case in one test (bool is a subclass of int, not int itself)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_COUNT:
        raise ConfigError(name, value, f"an integer from 0 to {MAX_COUNT}")
    return int(value)


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
    """Fixed-capacity item store: schema + storage + writer + sampler + ids."""

    def __init__(self, capacity: int, structure: Any = None, *, writer: Writer | str = "fifo",
                 sampler: Sampler | None = None, rng: np.random.Generator | int | None = None,
                 capacity_name: str = "capacity", lazy_ids: bool = False, shard_tag: int = 0,
                 storage: RowStorage | None = None, arena: Arena | None = None) -> None:
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
        self.directory = SlotDirectory(self.capacity, lazy=lazy_ids)
        #: where rows go once the fields are known (allocated then, or already allocated by the caller:
        #: a reopened memory-mapped file); ``storage`` is ``None`` until then
        self._storage = storage if storage is not None else PackedStorage()
        self.storage: RowStorage | None = None
        #: top-level field names the front end's batches reserve (checked when fields are fixed)
        self.reserved_names: frozenset[str] = frozenset()
        self.counters = Counters("table.counters", COUNTERS)
        #: where the scalars of the table and its components live (see ``state.py``)
        self.arena = arena if arena is not None else LocalArena()
        for component in (self.counters, self.writer, self.directory, self.sampler):
            component.bind(self.arena)
        self._add_fast: Any = None
        self._add_batch_fast: Any = None
        if self.schema.resolved:
            self._allocate()

    # ------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        return self.directory.count

    @property
    def fields(self) -> list[Field]:
        return self.schema.fields or []

    def _check_bytes(self, row_bytes: int) -> None:
        check_table_bytes(self.capacity_name, self.capacity, row_bytes, self.sampler.prioritized)

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
            return int(fast(item))  # the generated lane holds the lock itself
        with self.lock:
            schema = self._prepare(item, batched=False)
            arrays = schema.coerce(schema.values_of(item))
            prio = self._check_insert_priorities(priority, 1)
            storage = self._ensure_storage(schema)
            if self._add_fast is None and priority is None and not self.sampler.requires_priority:
                self._add_fast = compile_add_one(self)
            slot = self.writer.place_one(self.rng)
            return self._commit_one(storage, slot, arrays, prio)

    def _add_general(self, item: Any) -> int:
        """The checked single add, without the generated fast path."""
        with self.lock:
            schema = self._prepare(item, batched=False)
            arrays = schema.coerce(schema.values_of(item))
            prio = self._check_insert_priorities(None, 1)
            storage = self._ensure_storage(schema)
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

    def _add_batch_general(self, items: Any, priorities: Any = None) -> np.ndarray:
        with self.lock:
            return tag_ids(self._add_batch_locked(items, priorities), self.shard_tag)

    def _add_batch_locked(self, items: Any, priorities: Any) -> np.ndarray:
        schema = self._prepare(items, batched=True)
        m, arrays = schema.coerce_batch(schema.values_of(items))
        prio = self._check_insert_priorities(priorities, m)
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

    # ------------------------------------------------------------ read
    def mass(self) -> Mass:
        """The totals this table's probabilities are relative to (see :mod:`~ReplayTables.engine.mass`)."""
        with self.lock:
            return self.sampler.mass(self.directory)

    def sample(self, n: int, beta: float | None = None) -> Sample:
        """``n`` items drawn by the sampler (with replacement), in one atomic call.

        The points come from the table's rng (:meth:`Sampler.split`) and are turned
        into items by :meth:`sample_from` against the table's own mass. With
        ``beta`` the weights are importance weights for that exponent, else ones.
        """
        with self.lock:
            n = check_count("n", n)
            self._check_sample(n)
            draws, order = self.sampler.split(n, self.rng, self.directory)
            return self._sample_locked(draws, order, beta, None)

    def sample_from(self, draws: Draws, beta: float | None = None, totals: Mass | None = None) -> Sample:
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
            return self._sample_locked(checked, None, beta, totals)

    def _check_sample(self, n: int) -> None:
        if self.directory.count == 0:
            raise EmptyBufferError("size", 0, "at least one stored item to sample from")
        if n > LARGE_SAMPLE:
            check_sample_bytes("n", n, self.storage.row_bytes if self.storage is not None else 0)

    def _sample_locked(self, draws: Draws, order: np.ndarray | None, beta: float | None,
                       totals: Mass | None) -> Sample:
        own = self.sampler.mass(self.directory)
        mass = own if totals is None else totals
        slots, ids, q, probabilities = self.sampler.select(draws, order, self.directory, mass)
        weights = importance_weights(probabilities, mass.min_probability(), 0.0 if beta is None else beta)
        assert self.storage is not None
        self.counters["sampled"] += int(slots.shape[0])
        return Sample(tag_ids(ids, self.shard_tag), slots, self.storage.gather(slots), q, probabilities, weights,
                      own.size, mass)

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
            return Sample(arr, slots, self.storage.gather(slots), q, probabilities, weights, mass.size, mass)

    # ------------------------------------------------------------ change
    def delete(self, ids: Any) -> None:
        """Remove items by id; all ids must be live (nothing is removed otherwise)."""
        with self.lock:
            _, slots = self.locate(ids)
            slots = np.unique(slots)
            self.directory.remove(slots)
            self.sampler.on_delete(slots)
            self.counters["deleted"] += int(slots.size)

    def update_priorities(self, ids: Any, priorities: Any) -> int:
        """Set raw priorities; stale ids are skipped and counted (ids of another shard are
        refused). Returns how many were applied."""
        with self.lock:
            arr = check_ids(ids)
            fused = getattr(self.sampler, "update_by_ids", None)
            if fused is not None:
                applied = int(fused(self.directory, arr, priorities, self.shard_tag))
                self.counters["stale_updates"] += arr.shape[0] - applied
                return applied
            p = check_priorities(priorities, arr.shape[0])
            self.sampler.validate(p)
            slots, valid = self.directory.lookup(local_ids("ids", arr, self.shard_tag))
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

    def check_state(self, state: Any, where: str = "table", rows_in_storage: bool = False) -> TableState:
        """Check a saved :meth:`state_dict` completely; changes nothing.

        Every component checks its own part (the writer, directory, sampler,
        storage layout, counters and rng state), and the parts are checked against
        each other (the sampler's leaves against the live slots). What needs
        memory is checked against the machine before it is built. A value that
        cannot be right is a :class:`CheckpointError`; a state of another kind of
        table (capacity, writer, sampler settings, fields) a :class:`ConfigError`.
        ``rows_in_storage``: the state has no rows because the table's storage holds
        them (a reopened memory-mapped file).
        """
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

    def restore(self, checked: TableState) -> None:
        """Put a state from :meth:`check_state` in place (assignments only: it cannot fail half-way)."""
        with self.lock:
            self._restore_locked(checked)

    def _restore_locked(self, checked: TableState) -> None:
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
        layout = self.arena.layout()
        for name, (shape, dtype) in layout.items():
            arena.array(name, shape, dtype)  # refuses a missing or different array before anything moves
        if carry:
            arena.copy_from(self.arena)
        for component in (self.counters, self.writer, self.directory, self.sampler):
            component.bind(arena)
        self.arena = arena
        self._add_fast = None  # the generated lanes hold views of the old arrays
        self._add_batch_fast = None

    def bind_rate_limiter(self, limiter: Any) -> None:
        """Keep a :class:`~ReplayTables.rate_limiters.RateLimiter`'s counts in this table's arena
        (its current counts are carried over; an arena that holds them already wins)."""
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
