"""A step-range table (the RLlib front end's engine) in shared memory: adds from other processes, and a
writer killed inside an add leaves nothing half-written.

Engine level: ``SharedTable`` over a ``Table(layout=StepRanges(...))`` with declared fields, attached
in forked children. Items are runs of consecutive global step numbers ``v`` with ``w = [v, -v]``, so
a half-written item (one column of the new add, the other of the old) is seen by :func:`check_items`.
What is proved: every item a child adds is seen whole by the parent; after a writer is SIGKILLed
between its first and its last write (or after its writes but before its commit) the next call
repairs the table: every item the add was taking or evicting is gone, the ones that were live count
as evicted, ``added`` is as before, the live steps, the live list and the sum tree agree with the
slot ids, the rest of the data is whole, and the next add goes on from there. The checker itself is
shown to catch a half-written item (negative control). A reservoir (items in regions drawn at
random) does the same: two children's offers are all counted and every region holds one whole item;
a writer killed after its draw, inside its writes or before its commit leaves the items of the
regions it drew removed and counted as evicted (the parent predicts the draw from the child's
seed), its offers undone, and the rest whole.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

import numpy as np
import pytest

from ReplayTables.engine.layouts.step_ranges import StepRanges
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.engine.shared_table import SharedTable
from ReplayTables.engine.table import Table
from ReplayTables.errors import ConfigError, SchemaError

STEPS = 64
FIELDS = {"v": FieldSpec((), np.int64), "w": FieldSpec((2,), np.float32)}


def make_table(prioritized: bool, placement: str = "ring", region: int | None = None) -> Table:
    sampler = PrioritizedSampler(STEPS, priority_exponent=1.0, uniform_probability=0.0) if prioritized else None
    return Table(STEPS, dict(FIELDS), layout=StepRanges(STEPS, placement, region), sampler=sampler, rng=0)


def columns(first: int, n: int) -> dict[str, np.ndarray]:
    v = np.arange(first, first + n, dtype=np.int64)
    return {"v": v, "w": np.stack([v, -v], axis=1).astype(np.float32)}


def add(table: Table, first: int, lengths: list[int], prioritized: bool) -> np.ndarray:
    prio = np.arange(1, len(lengths) + 1, dtype=np.float64) if prioritized else None
    return table.add_items(columns(first, sum(lengths)), np.array(lengths), prio)


def check_items(table: Table) -> dict[int, tuple[int, int]]:
    """Every live item whole (consecutive ``v``, ``w == [v, -v]``) and the table's bookkeeping in
    agreement with its slot ids; ``{id: (first v, length)}``. Holds the table's lock, whose acquire
    repairs an add some process left unfinished."""
    with table.lock:
        return _check_items(table)


def _check_items(table: Table) -> dict[int, tuple[int, int]]:
    layout = table.layout
    assert layout is not None and table.storage is not None
    slot_id = table.directory.slot_id
    live = np.flatnonzero(slot_id >= 0)
    assert table.size == live.size, "the live count disagrees with the slot ids"
    assert layout.live_steps == int(layout.length[live].sum()), "the live steps disagree with the live items"
    out: dict[int, tuple[int, int]] = {}
    for slot in live.tolist():
        steps, lengths = layout.steps_of(np.array([slot]))
        v, w = table.storage.gather(steps)
        assert np.array_equal(v, v[0] + np.arange(int(lengths[0]))), f"item in slot {slot}: steps {v.tolist()}"
        assert np.array_equal(w, np.stack([v, -v], axis=1).astype(np.float32)), f"item in slot {slot} half-written"
        out[int(slot_id[slot])] = (int(v[0]), int(lengths[0]))
    tree = getattr(table.sampler, "tree", None)
    if tree is not None:
        leaves = tree.leaves[:STEPS]
        assert np.all(leaves[slot_id < 0] == 0.0), "a removed item keeps its priority"
        assert tree.total == pytest.approx(float(leaves.sum()), rel=1e-9)
    return out


def _attach(handle: Any, prioritized: bool) -> tuple[Table, SharedTable]:
    table = make_table(prioritized)
    return table, SharedTable.attach(handle, table)


def _adds(handle: Any, prioritized: bool, first: int, batches: list[list[int]]) -> None:
    table, shared = _attach(handle, prioritized)
    for lengths in batches:
        add(table, first, lengths, prioritized)
        first += sum(lengths)
    shared.close()
    os._exit(0)


def _dies_inside_an_add(handle: Any, prioritized: bool, where: str, first: int, lengths: list[int],
                        reservoir: bool = False) -> None:
    table = make_reservoir(prioritized) if reservoir else make_table(prioritized)  # rng=0, as the parent predicts
    shared = SharedTable.attach(handle, table)
    assert table.storage is not None and table.layout is not None
    storage = table.storage

    def die(*args: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "drawn":  # a reservoir's slots drawn (the count of offers raised), not yet journalled
        table.layout.on_placed = die
    elif where == "write":  # fault injection: the index changed and the first column of the new steps written
        real_write = storage.write

        def write_then_die(slots: Any, values: list[np.ndarray]) -> None:
            real_write(slots, values[:1])
            die()

        storage.write = write_then_die  # type: ignore[method-assign]
    else:  # every write done, the add not yet committed
        shared.close_add = die  # type: ignore[method-assign]
    add(table, first, lengths, prioritized)
    os._exit(3)  # not reached


def run_child(target: Any, *args: Any) -> int:
    p = mp.get_context("fork").Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode is not None, "the child hung"
    return p.exitcode


@pytest.fixture(params=[False, True], ids=["uniform", "prioritized"])
def prioritized(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_items_a_child_adds_are_seen_whole_by_the_parent(prioritized: bool) -> None:
    table = make_table(prioritized)
    shared = SharedTable.create(table)
    try:
        add(table, 0, [3, 1, 2], prioritized)
        batches = [[1 + (k % 5), 2, 1] for k in range(20)]  # 120 steps through a ring of 64: it wraps
        head = 6 + sum(map(sum, batches))
        assert run_child(_adds, shared.handle(), prioritized, 6, batches) == 0
        items = check_items(table)
        assert table.counters["added"] == 3 + 60 and table.counters["added_steps"] == head == 126
        assert table.layout is not None and table.layout.head == head
        assert table.counters["added"] - table.counters["evicted"] == table.size == len(items)
        newest = max(start + n for start, n in items.values())
        assert newest == head  # the child's last step is stored, and what is stored is the newest 64 steps or fewer
        assert min(start for start, _ in items.values()) >= head - STEPS
        assert shared.lock.recoveries == 0
        # the parent goes on where the child stopped
        add(table, head, [4], prioritized)
        assert max(s + n for s, n in check_items(table).values()) == head + 4
    finally:
        shared.close()


@pytest.mark.parametrize("where", ["write", "commit"])
def test_a_writer_killed_inside_an_add_leaves_nothing_half_written(prioritized: bool, where: str) -> None:
    table = make_table(prioritized)
    shared = SharedTable.create(table)
    try:
        add(table, 0, [5] * 12, prioritized)  # 60 of 64 steps
        layout = table.layout
        assert layout is not None
        table.delete(np.array([2]))  # a dead item inside the prefix the next add evicts
        before = check_items(table)
        added, evicted = table.counters["added"], table.counters["evicted"]
        lengths = [6, 4, 3]  # 13 steps from 60: the steps up to 60 + 13 - 64 = 9 are overwritten
        doomed = {i for i, (start, _) in before.items() if start < 60 + 13 - STEPS}
        assert doomed == {0, 1}  # items 0 (steps 0-4) and 1 (5-9) start before step 9; 2 (10-14) was deleted
        assert run_child(_dies_inside_an_add, shared.handle(), prioritized, where, 60, lengths) == -signal.SIGKILL
        after = check_items(table)  # the first call repairs: every item whole, the bookkeeping agrees
        assert shared.lock.recoveries == 1
        assert after == {i: v for i, v in before.items() if i not in doomed}
        assert table.counters["added"] == added and table.counters["evicted"] == evicted + 2
        assert table.counters["added"] - table.counters["evicted"] - 1 == table.size  # one deleted
        sample = table.sample(200)
        assert np.isin(sample.ids, np.array(list(after))).all()
        # the next add goes on from the steps the dead writer had
        ids = add(table, 60, lengths, prioritized)
        final = check_items(table)
        assert [final[int(i)] for i in ids] == [(60, 6), (66, 4), (70, 3)]
        assert table.counters["added"] == added + 3
    finally:
        shared.close()


def test_the_checker_sees_a_half_written_item() -> None:
    table = make_table(False)
    add(table, 0, [4, 4], False)
    check_items(table)
    assert table.storage is not None
    table.storage.write(np.array([5]), [np.array([5]), np.array([[0.0, 0.0]], dtype=np.float32)])
    with pytest.raises(AssertionError, match="half-written"):
        check_items(table)


def _dies_inside_a_delete(handle: Any, ids: np.ndarray) -> None:
    table, _ = _attach(handle, True)

    def die(slots: Any) -> None:  # fault injection: the live steps already lowered, the directory not yet
        os.kill(os.getpid(), signal.SIGKILL)

    table.directory.remove = die  # type: ignore[method-assign]
    table.delete(ids)
    os._exit(3)  # not reached


def test_a_writer_killed_inside_a_delete_is_repaired_to_agree_with_the_slot_ids() -> None:
    table = make_table(True)
    shared = SharedTable.create(table)
    try:
        ids = add(table, 0, [2, 3, 4], True)
        assert run_child(_dies_inside_a_delete, shared.handle(), ids[1:2]) == -signal.SIGKILL
        items = check_items(table)  # the delete did not happen: all three whole, 9 live steps
        assert len(items) == 3 and table.layout is not None and table.layout.live_steps == 9
        assert shared.lock.recoveries == 1
    finally:
        shared.close()


def test_a_refused_add_changes_nothing_and_needs_no_repair() -> None:
    table = make_table(False)
    shared = SharedTable.create(table)
    try:
        add(table, 0, [3, 3], False)
        before = check_items(table)
        scalars = {k: v.copy() for k, v in table.arena.arrays().items()}
        with pytest.raises(SchemaError):
            table.add_items(columns(6, 4), np.array([2, 1]))  # lengths that do not add up to the rows
        with pytest.raises(SchemaError):
            table.add_items(columns(6, 70), np.array([70]))  # longer than the ring
        assert check_items(table) == before and shared.lock.recoveries == 0
        for name, a in table.arena.arrays().items():
            np.testing.assert_array_equal(a, scalars[name])
    finally:
        shared.close()


def test_a_reservoir_without_its_region_or_an_undeclared_step_range_table_is_not_shared() -> None:
    with pytest.raises(ConfigError, match="region"):
        SharedTable.create(make_table(False, "reservoir"))  # its regions would be fixed by the first add
    lazy = Table(STEPS, layout=StepRanges(STEPS), rng=0)  # columns learned from the first add
    with pytest.raises(ConfigError, match="FieldSpec"):
        SharedTable.create(lazy)


# ---------------------------------------------------------------- a reservoir (items in random regions)
REGION = 4  # 16 regions of 4 steps


def make_reservoir(prioritized: bool) -> Table:
    return make_table(prioritized, "reservoir", REGION)


def _reservoir_adds(handle: Any, prioritized: bool, first: int, batches: list[list[int]]) -> None:
    table = make_reservoir(prioritized)
    table.rng = np.random.default_rng(first)
    shared = SharedTable.attach(handle, table)
    for lengths in batches:
        add(table, first, lengths, prioritized)
        first += sum(lengths)
    shared.close()
    os._exit(0)


def test_reservoir_items_children_add_are_seen_whole_and_every_offer_is_accounted_for(prioritized: bool) -> None:
    table = make_reservoir(prioritized)
    shared = SharedTable.create(table)
    try:
        add(table, 0, [3, 1, 2], prioritized)
        batches = [[1 + (k % 4), 2, 1] for k in range(30)]  # 90 items for 16 regions: most are declined
        steps = sum(map(sum, batches))
        ctx = mp.get_context("fork")
        children = [ctx.Process(target=_reservoir_adds, args=(shared.handle(), prioritized, first, batches))
                    for first in (10_000, 20_000)]
        for p in children:
            p.start()
        for p in children:
            p.join(60)
            assert p.exitcode == 0
        items = check_items(table)
        c = table.counters
        layout = table.layout
        assert layout is not None and layout.writer is not None
        assert c["added"] == layout.writer.seen == 3 + 2 * 90 and c["added_steps"] == layout.head == 6 + 2 * steps
        assert table.size == len(items) == 16  # every region holds an item
        assert c["added"] - c["evicted"] - c["not_stored"] == table.size
        assert len({start for start, _ in items.values()}) == 16  # no item twice
        assert shared.lock.recoveries == 0
    finally:
        shared.close()


def predicted_draw(table: Table, m: int) -> np.ndarray:
    """The item slots the killed child's add draws (its generator is seeded 0, as this one's copy is)."""
    from ReplayTables.engine.writers import ReservoirWriter

    assert table.layout is not None and table.layout.writer is not None
    writer = ReservoirWriter(table.layout.writer.capacity)
    writer.seen = table.layout.writer.seen
    _, slots = writer.place(m, np.random.default_rng(0))
    return np.asarray(slots, dtype=np.int64)


@pytest.mark.parametrize("where", ["drawn", "write", "commit"])
def test_a_reservoir_writer_killed_inside_an_add_leaves_nothing_half_written(prioritized: bool, where: str) -> None:
    table = make_reservoir(prioritized)
    table.rng = np.random.default_rng(99)  # the parent's own draws are not the child's
    shared = SharedTable.create(table)
    try:
        add(table, 0, [4, 3, 2, 1] * 10, prioritized)  # 40 offers: the 16 regions full
        table.delete(table.ids_of(np.array([5])))  # an empty region the next add may draw
        before = check_items(table)
        layout = table.layout
        assert layout is not None and layout.writer is not None
        counters = dict(table.counters)
        offers = (layout.writer.seen, layout.head, layout.issued)
        lengths = [2, 4, 1, 3, 4, 2, 1, 1]
        drawn = predicted_draw(table, len(lengths))
        assert drawn.size >= 1
        slot_id = table.directory.slot_id
        doomed = {int(slot_id[s]) for s in drawn if slot_id[s] >= 0} if where != "drawn" else set()
        assert where == "drawn" or len(doomed) >= 1  # the add replaces some stored item
        assert run_child(_dies_inside_an_add, shared.handle(), prioritized, where, 1000, lengths, True) \
            == -signal.SIGKILL
        after = check_items(table)  # the first call repairs: every item whole, the bookkeeping agrees
        assert shared.lock.recoveries == 1
        assert after == {i: v for i, v in before.items() if i not in doomed}
        assert (layout.writer.seen, layout.head, layout.issued) == offers  # the add's offers undone
        c = table.counters
        assert dict(c) == {**counters, "evicted": counters["evicted"] + len(doomed)}
        assert c["added"] - c["evicted"] - c["not_stored"] - c["deleted"] == table.size
        ids = add(table, 2000, [3, 3], prioritized)  # and the table goes on
        final = check_items(table)
        assert all(final[int(i)][0] in (2000, 2003) for i in ids if i >= 0)
    finally:
        shared.close()
