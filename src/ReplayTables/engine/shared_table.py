"""A table in shared memory: every array of its state in one segment, one process lock, and adds that commit whole.

:meth:`SharedTable.create` moves a table's state into a new
:class:`~ReplayTables.engine.shared_memory.SharedArrays` segment: the packed
rows, the slot directory (ids, live list), the sum tree, and every scalar of the
table's arena (counters, writer cursor, directory count, running maximum
priority, rate-limiter counts). The table's components then work on views of
that memory. :meth:`SharedTable.attach` does the same in another process for a
table built with the same arguments, adopting what the segment holds. From then
on each process has its own table *object* over the same state; only the random
generator (and, per process, some scratch arrays) stay private.

Every call of the table holds a :class:`~ReplayTables.engine.process_lock.ProcessLock`
that lives in the segment: it becomes ``table.lock``, which every public call of
the table (and of a front end over it) holds. A dead holder never blocks the others: the kernel drops its
``flock``.

**An add commits whole or not at all.** Before an add touches anything, the
shared journal records the ring slots it may write and a copy of every arena
scalar. If the process stops inside the add (SIGKILL, a crash, an unexpected
exception), the next process to take the lock rolls it back: the scalars come
back from the copy, every item in the journalled slots is removed (the rows of
those slots may be half-written; the items the add would have evicted there are
counted as evicted), and the live list and sum tree are rebuilt from the slot
ids. So no half-written row is ever visible, and the accounting stays exact:
every added item is present with its data or counted as evicted. Any other
change that stops half-way (a delete, a priority update, a load) is repaired by
rebuilding the live list and the tree from the slot ids and leaves.

An add checks and converts its input before it takes the lock (a refusal
raises there, having changed nothing and cost no repair); under the lock it
only places and copies its rows and commits. The table's generated add lanes,
which the front ends call straight, journal their writes too (``table.journal``).
Other refused calls (any :class:`~ReplayTables.errors.ReplayTablesError`) change
nothing, so they end their operation normally and cost no repair.

Three kinds of add are journalled. The FIFO writer's takes a contiguous ring
range of slots. A step-range layout's ring placement
(``layout=StepRanges(..., "ring")``) writes the steps from ``head`` on, takes
the item slots from ``issued`` on and evicts a prefix of the items in write
order, so the journal holds where those start and how many there are. Its
repair removes every item in those item slots and that prefix, and counts the
ones that were live before the add as evicted. A step-range reservoir
(``StepRanges(..., "reservoir", region)``, the region fixed up front) takes item
slots at random, so the journal has an array of one word per item slot: the add
opens the journal before it draws (the snapshot covers the reservoir's count of
offers), and the layout's ``on_placed`` hook writes the drawn slots there, and
then their count, before the first write. Its repair removes the items in those
slots and counts the ones that were live before as evicted; the offers of the
add are undone with the scalars. A one-row table with another writer than the
FIFO ring (its reservoir writer) is refused.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ReplayTables.engine.ids import tag_ids
from ReplayTables.engine.process_lock import ProcessLock, Recovery
from ReplayTables.engine.shared_memory import SharedArrays, SharedHandle
from ReplayTables.engine.state import FixedArena
from ReplayTables.engine.writers import FifoWriter
from ReplayTables.errors import ConfigError, ReplayTablesError

__all__ = ["OP_ADD", "OP_CHANGE", "SharedTable", "table_arrays"]

#: operation codes marked in the lock's words while a change is under way
OP_ADD = 1
OP_CHANGE = 2

# the journal's words: which kind of add is under way (0: none), its first ring slot (a step-range add:
# its first new item's insertion number), how many slots (items; a reservoir add: how many of the
# array journal.slots it has filled), how many of them held items (a step-range add: how many of the
# items it evicts were live), and for a step-range add the insertion number of the oldest item and
# how many items from it the add evicts
_ACTIVE, _FIRST, _COUNT, _LIVE_BEFORE, _OLDEST, _EVICTING = range(6)
_JOURNAL_WORDS = 6
_RING_ADD, _STREAM_ADD, _RANGE_ADD, _RESERVOIR_ADD = 1, 2, 3, 4

#: table methods that change state other than by adding (marked, and repaired if cut short)
_CHANGING = ("delete", "update_priorities", "load_state_dict", "restore")


def scalar_block(arena_arrays: dict[str, np.ndarray] | Any) -> tuple[int, dict[str, tuple[int, Any, Any]]]:
    """Words of one int64 block holding every arena scalar array, and each array's (offset, shape, dtype).

    One block, so the add journal snapshots all scalars in one copy."""
    offsets: dict[str, tuple[int, Any, Any]] = {}
    words = 0
    for name, a in arena_arrays.items():
        if a.dtype.itemsize != 8:
            raise ConfigError(f"arena[{name!r}]", str(a.dtype), "8-byte scalars (int64 or float64)")
        offsets[name] = (words, a.shape, a.dtype)
        words += a.size
    return words, offsets


def _scalar_views(block: np.ndarray, offsets: dict[str, tuple[int, Any, Any]]) -> dict[str, np.ndarray]:
    return {name: block[off:off + int(np.prod(shape, dtype=np.int64))].view(dtype).reshape(shape)
            for name, (off, shape, dtype) in offsets.items()}


def table_arrays(table: Any) -> dict[str, np.ndarray]:
    """Every array of a table's state (but its arena scalars) by the name it has in a shared segment."""
    if table.storage is None:
        raise ConfigError("structure", table.schema, "a structure whose every field has a declared shape and dtype "
                                                     "(FieldSpec), so the shared rows can be laid out up front")
    table.directory.reach(table.capacity - 1)  # every slot id exact: a lazy fill is per process, not shared
    out: dict[str, np.ndarray] = {"rows": table.storage.rows}
    out.update({f"directory.{k}": v for k, v in table.directory.arrays().items()})
    if table.layout is not None:
        out.update({f"ranges.{k}": v for k, v in table.layout.arrays().items()})
    tree = getattr(table.sampler, "tree", None)
    if tree is not None:
        out.update({f"tree.{k}": v for k, v in tree.arrays().items()})
    return out


def _point_at(table: Any, arrays: dict[str, np.ndarray], scalars: dict[str, np.ndarray]) -> None:
    """Make ``table``'s components work on ``arrays`` (named as by :func:`table_arrays`) and its arena on
    ``scalars``, adopting their contents."""
    storage = table.storage
    storage._adopt(storage.fields, storage.capacity, arrays["rows"])
    table.directory.use_arrays({k: arrays[f"directory.{k}"] for k in table.directory.arrays()})
    if table.layout is not None:
        table.layout.use_arrays({k: arrays[f"ranges.{k}"] for k in table.layout.arrays()})
    tree = getattr(table.sampler, "tree", None)
    if tree is not None:
        tree.use_arrays({k: arrays[f"tree.{k}"] for k in tree.arrays()})
    table.bind(FixedArena(scalars), carry=False)


class SharedTable:
    """The shared-memory side of one table in this process: segment, lock, journal and recovery."""

    def __init__(self, table: Any, segment: SharedArrays) -> None:
        self.table = table
        self.segment = segment
        self.lock = ProcessLock(segment)
        arrays = segment.arrays
        self._journal = arrays["journal"].data  # a memoryview: plain int reads and writes
        self._scalars = arrays["arena"]  # every arena scalar, in one block
        self._snapshot = arrays["journal.arena"]  # their values before the add under way
        # the same two blocks as memoryviews: the journal's copy is one slice assignment (cheaper than numpy's)
        self._scalars_mv, self._snapshot_mv = self._scalars.data, self._snapshot.data
        #: the front end's own arrays in the segment (``extra=`` of :meth:`create`), by name
        self.extra = {name[len("extra."):]: a for name, a in arrays.items() if name.startswith("extra.")}
        self._streams = arrays.get("journal.streams")  # per-stream rings: which streams an add touches
        self._slots = arrays.get("journal.slots")  # a reservoir add: the item slots it draws
        if self._slots is not None:
            table.layout.on_placed = self._journal_slots
        #: called by the repair with the streams whose rings were emptied (the front end resets them)
        self.on_stream_reset: Callable[[np.ndarray], None] | None = None
        self.lock.on_recover(self._recover)
        table.lock = self.lock
        self._wrap(table)

    # ------------------------------------------------------------ making and attaching
    @classmethod
    def create(cls, table: Any, extra: dict[str, np.ndarray] | None = None, streams: int = 0) -> SharedTable:
        """Move ``table``'s state into a new segment owned by this process (see the module docstring).

        ``extra``: the front end's own arrays, copied in too (their views are :attr:`extra`).
        ``streams``: the table's slots are ``streams`` equal per-stream rings whose adds the
        front end brackets with :meth:`stream_add` (a step-stream buffer); else adds are ring ranges.
        """
        ranges = table.layout
        if ranges is not None and ranges.placement == "reservoir" and ranges.writer is None:
            raise ConfigError("region", None, "the reservoir's item length bound fixed when the table is made (a "
                                              "shared reservoir journals its item slots in an array sized by it)")
        if not streams and ranges is None and not isinstance(table.writer, FifoWriter):
            raise ConfigError("writer", table.writer.name, "'fifo' (a shared table journals its adds as ring ranges)")
        arrays = table_arrays(table)
        arrays.update({f"extra.{name}": a for name, a in (extra or {}).items()})
        words, offsets = scalar_block(table.arena.arrays())
        layout: dict[str, tuple[Any, Any]] = {name: (a.shape, a.dtype) for name, a in arrays.items()}
        layout["arena"] = layout["journal.arena"] = ((words,), np.int64)
        layout["journal"] = ((_JOURNAL_WORDS,), np.int64)
        if streams:
            layout["journal.streams"] = ((int(streams),), np.int64)
        if ranges is not None and ranges.writer is not None:
            layout["journal.slots"] = ((ranges.writer.capacity,), np.int64)
        layout["lock"] = ProcessLock.LAYOUT
        segment = SharedArrays.create(layout)
        try:
            shared = segment.arrays
            for name, a in arrays.items():
                shared[name][...] = a
            scalars = _scalar_views(shared["arena"], offsets)
            for name, a in table.arena.arrays().items():
                scalars[name][...] = a
            _point_at(table, shared, scalars)
            return cls(table, segment)
        except BaseException:
            segment.close()
            raise

    @classmethod
    def attach(cls, handle: SharedHandle, table: Any, extra: dict[str, np.ndarray] | None = None) -> SharedTable:
        """``table`` (built in this process with the creator's arguments) over the segment ``handle`` names;
        ``extra``: the front end's own arrays as :meth:`create` was given them (checked, not copied)."""
        segment = SharedArrays.attach(handle)
        try:
            arrays = segment.arrays
            mine = table_arrays(table)
            mine.update({f"extra.{name}": a for name, a in (extra or {}).items()})
            words, offsets = scalar_block(table.arena.arrays())
            mine["arena"] = np.zeros(words, np.int64)
            for name, a in mine.items():
                if name not in arrays or arrays[name].shape != a.shape or arrays[name].dtype != a.dtype:
                    raise ConfigError("handle", handle.name, f"a segment holding {name} as {a.dtype}{list(a.shape)} "
                                                             "(the layout of a table built with these arguments)")
            _point_at(table, arrays, _scalar_views(arrays["arena"], offsets))
            return cls(table, segment)
        except BaseException:
            segment.close()
            raise

    def handle(self) -> SharedHandle:
        """The segment's picklable handle (attach it with :meth:`attach` and a table of the same arguments)."""
        return self.segment.handle()

    @property
    def owner(self) -> bool:
        """Whether this process created the segment (its close releases it)."""
        return self.segment.owner

    def close(self) -> None:
        """Close the lock (for every process, if this is the creator) and release the segment.

        The table's views stay valid memory (they keep the mapping alive), but
        every call of the table now raises :class:`~ReplayTables.errors.BufferClosedError`.
        """
        self.lock.close()
        self.segment.close()

    # ------------------------------------------------------------ every call under the lock
    def _wrap(self, table: Any) -> None:
        """Shadow the table's public calls with locked (and, for changes, marked) ones on this instance.

        Adds check and convert their input *before* taking the lock (the schema of
        a shared table is fixed, so the checks read only the input): two writer
        processes never wait for each other's casts and shape checks. Under the
        lock an add only places its rows, copies them in and commits, inside the
        journal. The generated lanes (which front ends call straight) do the same:
        ``table.journal`` makes them open and close the journal around their writes,
        and what they do not take goes to the journalled general path below."""
        lock = self.lock
        cls = type(table)
        # every public call of the table holds table.lock (now this process lock); changes are also marked
        for name in _CHANGING:
            if hasattr(cls, name):
                setattr(table, name, _marked(lock, getattr(cls, name).__get__(table)))
        table.journal = self
        table._add_fast = table._add_batch_fast = None  # compiled again, with the journal, on the first add
        capacity = int(table.capacity)

        def add_general(item: Any, priority: Any = None, checked: Any = None) -> int:
            if checked is None:  # before the lock: a refusal raises here, having changed nothing
                checked = table._check_one(item, priority)
            lock.acquire()
            try:
                if checked[0] is not table.schema:  # a load replaced the schema meanwhile: check again
                    checked = table._check_one(item, priority)
                self.open_add(1)
                new_id: int = table._add_checked(*checked)
                self.close_add()
                return new_id
            finally:
                lock.release()  # inside an unfinished add this leaves it marked for the next holder

        def add_batch_general(items: Any, priorities: Any = None, checked: Any = None) -> np.ndarray:
            if checked is None:  # before the lock, as for add_general
                checked = table._check_batch(items, priorities)
            lock.acquire()
            try:
                if checked[0] is not table.schema:
                    checked = table._check_batch(items, priorities)
                self.open_add(min(checked[1], capacity))
                ids: np.ndarray = tag_ids(table._add_batch_checked(*checked), table.shard_tag)
                self.close_add()
                return ids
            finally:
                lock.release()

        @functools.wraps(cls.add)
        def shared_add(item: Any, priority: Any = None) -> int:
            fast = table._add_fast
            if fast is not None and priority is None:
                new_id: int = fast(item)
                return new_id
            return add_general(item, priority)

        @functools.wraps(cls.add_batch)
        def shared_add_batch(items: Any, priorities: Any = None) -> np.ndarray:
            fast = table._add_batch_fast
            if fast is not None and priorities is None:
                ids: np.ndarray = fast(items)
                return ids
            return add_batch_general(items, priorities)

        @functools.wraps(cls.add_items)
        def shared_add_items(columns: Any, lengths: Any, priorities: Any = None) -> np.ndarray:
            checked = table.check_items(columns, lengths, priorities)  # a refusal raises here, changing nothing
            lock.acquire()
            try:
                if checked[0] is not table.schema:
                    checked = table.check_items(columns, lengths, priorities)
                return self.add_checked_items(checked)
            finally:
                lock.release()

        table.add = shared_add
        table.add_batch = shared_add_batch
        if table.layout is not None:
            table.add_items = shared_add_items
        # the generated lanes hand what they do not take to these (compile_add_one/compile_add_batch read them)
        table._add_general = add_general
        table._add_batch_general = add_batch_general

    def open_add(self, n: int, live_before: int = -1) -> None:
        """Journal an add of at most ``n`` items, before its first write (the lock held by this thread).

        ``live_before``: how many of the ``n`` ring slots from the writer's cursor hold
        items, if the caller knows (a generated lane does); else it is counted here."""
        self.lock.begin(OP_ADD, n)
        self._begin_add(n, live_before)

    def open_range_add(self, lengths: np.ndarray) -> None:
        """Journal a step-range add of items of ``lengths`` (checked), before its first write (the lock held).

        Records what :meth:`_recover` needs to undo it whole: the first new item's
        insertion number and the item count, the oldest item's insertion number,
        how many items from it the add evicts (those starting before ``head + steps
        - capacity``, as ``StepRanges`` evicts them) and how many of those are live.
        A reservoir's slots are drawn inside the add, so for it this only opens the
        journal (:meth:`_open_reservoir_add`) and the layout's hook records them."""
        layout = self.table.layout
        if layout.placement == "reservoir":
            self._open_reservoir_add(int(lengths.size))
            return
        evicted = layout.evicted_by(int(lengths.sum()))  # what the insert will evict, computed as it will
        evicting = int(evicted.size)
        live_before = int(layout.directory.is_live(evicted).sum())
        oldest, issued = layout.oldest, layout.issued
        self.lock.begin(OP_ADD, int(lengths.size))
        self._snapshot_mv[:] = self._scalars_mv
        j = self._journal
        j[_FIRST] = issued
        j[_COUNT] = int(lengths.size)
        j[_LIVE_BEFORE] = live_before
        j[_OLDEST] = oldest
        j[_EVICTING] = evicting
        j[_ACTIVE] = _RANGE_ADD  # last: the journal is only read once it is complete

    def _open_reservoir_add(self, items: int) -> None:
        """The first half of a reservoir add's journal: the scalars (the count of offers among them) before
        the add draws its slots; no slot yet (:meth:`_journal_slots` adds them before the first write)."""
        self.lock.begin(OP_ADD, items)
        self._snapshot_mv[:] = self._scalars_mv
        j = self._journal
        j[_COUNT] = 0
        j[_ACTIVE] = _RESERVOIR_ADD

    def _journal_slots(self, slots: np.ndarray, live_before: int) -> None:
        """The layout's ``on_placed`` hook: the item slots a reservoir add drew (unique) and how many of them
        hold items, journalled before its first write; the count is written last, so it only ever covers
        slots already recorded."""
        assert self._slots is not None
        j = self._journal  # (outside a journalled add these words are never read: _ACTIVE is 0)
        self._slots[:slots.size] = slots
        j[_LIVE_BEFORE] = live_before
        j[_COUNT] = int(slots.size)

    def add_checked_items(self, checked: tuple[Any, ...], then: Callable[[], None] | None = None) -> np.ndarray:
        """One journalled step-range add of input ``table.check_items`` accepted (the lock held by this thread);
        ``then()`` runs inside it, so what it changes (a front end's counters in the arena) commits with the
        items or is rolled back with them."""
        self.open_range_add(checked[2])
        ids: np.ndarray = self.table._add_items_checked(*checked)
        if then is not None:
            then()
        self.close_add()
        return ids

    def close_add(self) -> None:
        """The add :meth:`open_add` journalled is complete: commit it."""
        self._journal[_ACTIVE] = 0
        self.lock.end()

    def stream_add(self, streams: np.ndarray, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as one add to the per-stream rings of ``streams``: if its process stops inside it,
        the repair empties those streams' rings (their items counted as evicted) and calls
        :attr:`on_stream_reset`, so nothing half-written stays visible."""
        assert self._streams is not None, "a table shared with streams=0"
        lock = self.lock
        lock.acquire()
        try:
            lock.begin(OP_ADD, int(streams.size))
            self._streams[streams] = 1
            self._journal[_ACTIVE] = _STREAM_ADD
            try:
                result = fn(*args)
            except ReplayTablesError:
                self._journal[_ACTIVE] = 0  # refused: nothing changed
                self._streams[streams] = 0
                lock.end()
                raise
            self._journal[_ACTIVE] = 0
            self._streams[streams] = 0
            lock.end()
            return result
        finally:
            lock.release()

    def _begin_add(self, n: int, live_before: int = -1) -> None:
        table = self.table
        cap = table.capacity
        first = table.writer.cursor
        slot_id = table.directory.slot_id
        if live_before >= 0:
            pass
        elif n == 1:
            live_before = 1 if slot_id.item(first) >= 0 else 0
        elif first + n <= cap:
            live_before = int(np.count_nonzero(slot_id[first:first + n] >= 0))
        elif n < cap:
            live_before = int(np.count_nonzero(slot_id[first:] >= 0) + np.count_nonzero(slot_id[:first + n - cap] >= 0))
        else:
            live_before = table.directory.count
        self._snapshot_mv[:] = self._scalars_mv
        j = self._journal
        j[_FIRST] = first
        j[_COUNT] = n
        j[_LIVE_BEFORE] = live_before
        j[_ACTIVE] = 1  # last: the journal is only read once it is complete

    # ------------------------------------------------------------ recovery
    def _recover(self, info: Recovery) -> None:
        """Run under the lock by the acquire that finds an operation its holder never finished."""
        table = self.table
        directory = table.directory
        j = self._journal
        if j[_ACTIVE] == _STREAM_ADD and self._streams is not None:
            self._empty_streams(np.flatnonzero(self._streams))
            j[_ACTIVE] = 0
        elif j[_ACTIVE] == _RANGE_ADD:
            self._undo_range_add()
            j[_ACTIVE] = 0
        elif j[_ACTIVE] == _RESERVOIR_ADD:
            self._undo_reservoir_add()
            j[_ACTIVE] = 0
        elif j[_ACTIVE]:
            self._scalars[...] = self._snapshot
            cap = table.capacity
            n = j[_COUNT]
            slots = (j[_FIRST] + np.arange(n, dtype=np.int64)) % cap if n < cap else np.arange(cap, dtype=np.int64)
            self._remove_slots(slots)
            table.counters["evicted"] += int(j[_LIVE_BEFORE])
            j[_ACTIVE] = 0
        directory.rebuild_live()
        if table.layout is not None:  # a delete may have stopped between the live steps and the directory
            table.layout.live_steps = int(table.layout.length[directory.slot_id >= 0].sum())
        self._rebuild_tree()

    def _undo_range_add(self) -> None:
        """Undo a step-range add that stopped half-way: the scalars as they were before it, and every item
        in the item slots it was taking or in the prefix it was evicting removed (their steps may be
        half-written); the live ones of the prefix count as evicted."""
        table = self.table
        layout = table.layout
        j = self._journal
        self._scalars[...] = self._snapshot
        T = layout.steps
        taking = (j[_FIRST] + np.arange(min(j[_COUNT], T), dtype=np.int64)) % T
        evicting = (j[_OLDEST] + np.arange(j[_EVICTING], dtype=np.int64)) % T
        self._remove_slots(np.union1d(taking, evicting))
        table.counters["evicted"] += int(j[_LIVE_BEFORE])  # (the live steps are recounted by _recover)

    def _undo_reservoir_add(self) -> None:
        """Undo a reservoir add that stopped half-way: the scalars as they were before it (its offers
        uncounted), and the items in the slots it had drawn removed (their steps may be half-written); the
        ones that were live before it count as evicted."""
        assert self._slots is not None
        j = self._journal
        self._scalars[...] = self._snapshot
        n = int(j[_COUNT])
        if n:
            self._remove_slots(self._slots[:n])
            self.table.counters["evicted"] += int(j[_LIVE_BEFORE])

    def _empty_streams(self, streams: np.ndarray) -> None:
        """Remove every item of the per-stream rings of ``streams`` (after an add to them stopped half-way)."""
        table = self.table
        assert self._streams is not None
        per_stream = table.capacity // self._streams.shape[0]
        slots = (streams[:, None] * per_stream + np.arange(per_stream)).reshape(-1)
        table.counters["evicted"] += self._remove_slots(slots)
        if self.on_stream_reset is not None:
            self.on_stream_reset(streams)
        self._streams[streams] = 0

    def _remove_slots(self, slots: np.ndarray) -> int:
        """Remove the items in ``slots`` (their rows may be half-written), keeping each slot's generation, and
        zero their priorities; how many there were. The caller rebuilds the live list and the tree after."""
        table = self.table
        slot_id = table.directory.slot_id
        ids = slot_id[slots]
        held = ids >= 0
        slot_id[slots[held]] = -ids[held] - 2
        tree = getattr(table.sampler, "tree", None)
        if tree is not None:
            tree.leaves[slots] = 0.0
        return int(held.sum())

    def _rebuild_tree(self) -> None:
        tree = getattr(self.table.sampler, "tree", None)
        if tree is None:
            return
        cap = self.table.capacity
        live = self.table.directory.slot_id >= 0
        leaves = tree.leaves[:cap]
        leaves[~live] = 0.0  # an empty slot holds an unflagged zero
        tree.rebuild()
        tree.zero_count = int(((leaves == 0.0) & np.signbit(leaves)).sum())


def _marked(lock: ProcessLock, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under the lock as a marked change (a refused call ends it normally: it changed nothing)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        lock.acquire()
        try:
            lock.begin(OP_CHANGE)
            try:
                result = fn(*args, **kwargs)
            except ReplayTablesError:
                lock.end()
                raise
            lock.end()
            return result
        finally:
            lock.release()

    return call
