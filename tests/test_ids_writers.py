"""SlotDirectory (ids with generations, stale detection, delete with swap-remove)
and the writers (FIFO ring, reservoir)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import Transition, item, items
from ReplayTables.engine.ids import NOT_STORED, SlotDirectory
from ReplayTables.engine.table import Table
from ReplayTables.engine.writers import FifoWriter, ReservoirWriter, make_writer
from ReplayTables.errors import StaleIdError


# ---------------------------------------------------------------- ids
def test_ids_carry_slot_and_generation() -> None:
    d = SlotDirectory(4)
    ids = [d.assign_one(s) for s in (0, 1, 2, 3, 0, 1, 0)]
    assert ids == [0, 1, 2, 3, 4, 5, 8]  # id = generation * capacity + slot
    assert d.count == 4
    slots, valid = d.lookup(np.array([0, 4, 8, 1, 5, 3, 12, -1]))
    assert valid.tolist() == [False, False, True, False, True, True, False, False]
    assert slots[valid].tolist() == [0, 1, 3]


def test_assign_range_and_assign_match_one_by_one() -> None:
    a, b = SlotDirectory(5), SlotDirectory(5)
    one = [a.assign_one(s) for s in [0, 1, 2, 3, 4, 0, 1]]
    many = b.assign_range(0, 5).tolist() + b.assign(np.array([0, 1])).tolist()
    assert one == many
    np.testing.assert_array_equal(a.slot_id, b.slot_id)


def test_delete_swap_remove_keeps_live_list_dense() -> None:
    d = SlotDirectory(8)
    d.assign_range(0, 8)
    d.remove(np.array([1, 6]))
    assert d.count == 6
    assert sorted(d.live_slots().tolist()) == [0, 2, 3, 4, 5, 7]
    d.remove(np.array([0, 7, 3]))
    assert sorted(d.live_slots().tolist()) == [2, 4, 5]
    assert d.is_live(np.arange(8)).tolist() == [False, False, True, False, True, True, False, False]
    # deleted ids are stale; re-filling a deleted slot gives a newer id
    _, valid = d.lookup(np.array([1, 6, 2]))
    assert valid.tolist() == [False, False, True]
    new = d.assign_one(6)
    assert new == 6 + 8 and d.count == 4
    assert sorted(d.live_slots().tolist()) == [2, 4, 5, 6]
    rng = np.random.default_rng(0)
    drawn = d.sample_uniform(rng, 4000)
    assert set(drawn.tolist()) == {2, 4, 5, 6}


def test_delete_everything_then_refill() -> None:
    d = SlotDirectory(3)
    d.assign_range(0, 3)
    d.remove(np.array([0, 1, 2]))
    assert d.count == 0 and d.live_slots().size == 0
    assert d.assign(np.array([2, 0])).tolist() == [5, 3]
    assert sorted(d.live_slots().tolist()) == [0, 2]


def test_directory_state_round_trip() -> None:
    d = SlotDirectory(6)
    d.assign_range(0, 6)
    d.remove(np.array([2]))
    d.assign_one(0)
    e = SlotDirectory(6)
    e.load_state_dict(d.state_dict())
    np.testing.assert_array_equal(e.slot_id, d.slot_id)
    assert e.count == d.count
    assert sorted(e.live_slots().tolist()) == sorted(d.live_slots().tolist())
    e.remove(np.array([3]))  # still consistent after load
    assert sorted(e.live_slots().tolist()) == [0, 1, 4, 5]


def test_stale_id_never_reaches_the_newcomer() -> None:
    t = Table(2, Transition, rng=np.random.default_rng(0))
    old = t.add(item(0))
    t.add(item(1))
    new = t.add(item(2))  # overwrites slot of `old`
    with pytest.raises(StaleIdError, match=str(old)):
        t.get([old])
    assert t.get([new]).fields[1].tolist() == [2]
    with pytest.raises(StaleIdError):
        t.delete([old])
    assert t.size == 2


# ---------------------------------------------------------------- FIFO
def test_fifo_place_one_cycles() -> None:
    w = FifoWriter(3)
    rng = np.random.default_rng(0)
    assert [w.place_one(rng) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_fifo_place_batches() -> None:
    w = FifoWriter(5)
    rng = np.random.default_rng(0)
    items_idx, slots = w.place(3, rng)
    assert items_idx == slice(0, 3) and slots == slice(0, 3)
    items_idx, slots = w.place(4, rng)  # wraps: 3, 4, 0, 1
    assert np.arange(4)[items_idx].tolist() == [0, 1, 2, 3]
    assert np.asarray(slots).tolist() == [3, 4, 0, 1]
    items_idx, slots = w.place(12, rng)  # only the last 5 fit; they go where the ring is
    assert np.arange(12)[items_idx].tolist() == [7, 8, 9, 10, 11]
    assert np.asarray(slots).tolist() == [4, 0, 1, 2, 3]
    assert w.cursor == (2 + 12) % 5


def test_fifo_table_evicts_oldest_and_counts() -> None:
    t = Table(3, Transition, rng=np.random.default_rng(0))
    ids = t.add_batch(items(range(5)))
    assert ids.tolist()[:2] == [NOT_STORED, NOT_STORED]
    assert sorted(t.get(ids[2:]).fields[1].tolist()) == [2, 3, 4]
    assert t.counters["added"] == 5 and t.counters["not_stored"] == 2
    t.add(item(5))
    assert t.counters["evicted"] == 1
    live = t.get(t.directory.slot_id[t.directory.live_slots()]).fields[1]
    assert sorted(live.tolist()) == [3, 4, 5]


def test_fifo_hole_from_delete_is_refilled_in_ring_order() -> None:
    t = Table(4, Transition, rng=np.random.default_rng(0))
    ids = t.add_batch(items(range(4)))
    t.delete([ids[2]])
    t.add(item(10))  # the ring is at slot 0: evicts item 0, the hole stays
    assert t.size == 3 and t.counters["evicted"] == 1
    t.add(item(11))  # slot 1: evicts item 1
    t.add(item(12))  # slot 2: the hole, nothing evicted
    assert t.counters["evicted"] == 2 and t.size == 4


# ---------------------------------------------------------------- reservoir
def test_reservoir_fills_then_replaces_or_refuses() -> None:
    w = ReservoirWriter(4)
    rng = np.random.default_rng(0)
    assert [w.place_one(rng) for _ in range(4)] == [0, 1, 2, 3]
    later = [w.place_one(rng) for _ in range(2000)]
    assert set(later) <= {-1, 0, 1, 2, 3}
    assert w.seen == 2004
    # offer t is kept with probability 4 / (t + 1): about 4 * ln(2004 / 4) ~ 25 of 2000 offers
    kept = sum(s >= 0 for s in later)
    assert 10 < kept < 50


def test_reservoir_batch_keeps_the_later_of_two_items_for_one_slot() -> None:
    w = ReservoirWriter(2)
    rng = np.random.default_rng(3)
    w.place(2, rng)
    for _ in range(50):
        items_idx, slots = w.place(40, rng)
        items_idx, slots = np.asarray(items_idx), np.asarray(slots)
        assert len(set(slots.tolist())) == slots.size  # each slot once
        assert (np.diff(items_idx) > 0).all()


def test_reservoir_batch_and_single_agree_in_distribution_of_count() -> None:
    t = Table(10, Transition, writer="reservoir", rng=np.random.default_rng(0))
    ids = t.add_batch(items(range(1000)))
    assert t.size == 10
    assert (ids >= 0).sum() >= 10
    assert t.counters["added"] == 1000


def test_make_writer() -> None:
    assert isinstance(make_writer("fifo", 3), FifoWriter)
    assert isinstance(make_writer("reservoir", 3), ReservoirWriter)


def test_writer_state_round_trip() -> None:
    w = ReservoirWriter(3)
    rng = np.random.default_rng(0)
    w.place(10, rng)
    v = ReservoirWriter(3)
    v.load_state_dict(w.state_dict())
    assert v.seen == 10
    f = FifoWriter(3)
    f.place(5, rng)
    g = FifoWriter(3)
    g.load_state_dict(f.state_dict())
    assert g.cursor == f.cursor == 2
