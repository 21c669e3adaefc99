"""Engine SegmentIndex / SegmentTable (the variable-length item store under ReplayTables.rllib).

Checked against a plain-Python model of a true ring of timesteps: the newest
items that fit are kept, deleted items leave holes until the ring comes round,
and every live item's rows read back exactly as written.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReplayTables.engine.ids import NOT_STORED
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.segment_table import SegmentTable
from ReplayTables.engine.segments import SegmentIndex
from ReplayTables.errors import ConfigError, SchemaError, StaleIdError

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(1, 7), min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.integers(0, 1000)),
), min_size=1, max_size=30)


@settings(max_examples=int(os.environ.get("RT_EXAMPLES", "80")), deadline=None)
@given(ops, st.integers(4, 24))
def test_ring_matches_model(operations: list, capacity: int) -> None:
    table = SegmentTable(capacity, rng=np.random.default_rng(0))
    model: list[tuple[int, int, int]] = []   # (id, first value, length) of live items, in write order
    deleted: set[int] = set()
    head = 0                                 # absolute position (rows offered so far)
    spans: list[tuple[int, int, int]] = []   # (id, abs start, length) of every stored item, live or deleted
    value = 0
    for op, arg in operations:
        if op == "add":
            lengths = [n for n in arg if n <= capacity]
            if not lengths:
                continue
            n = sum(lengths)
            ids = table.add({"v": np.arange(value, value + n, dtype=np.int64)}, np.array(lengths))
            cut = head + n - capacity
            spans = [s for s in spans if s[1] >= cut]
            model = [m for m in model if any(s[0] == m[0] for s in spans)]
            offset = 0
            for i, length in zip(ids.tolist(), lengths):
                if head + offset >= cut:
                    assert i != NOT_STORED
                    spans.append((i, head + offset, length))
                    model.append((i, value + offset, length))
                else:
                    assert i == NOT_STORED
                offset += length
            head += n
            value += n
        elif model:
            victim = model[arg % len(model)]
            table.delete([victim[0]])
            deleted.add(victim[0])
            model.remove(victim)
            with pytest.raises(StaleIdError):
                table.delete([victim[0]])
        assert table.size == len(model)
        assert table.index.live_steps == sum(m[2] for m in model) <= capacity
        if model:
            ids = np.array([m[0] for m in model])
            _, slots = table.locate(ids)
            arrays, lengths = table.read(slots)
            expect = np.concatenate([np.arange(v, v + n) for _, v, n in model])
            assert arrays[0].tolist() == expect.tolist() and lengths.tolist() == [m[2] for m in model]
            assert table.oldest(len(model)).tolist() == ids.tolist()
        stale = [i for i in deleted if i not in {m[0] for m in model}]
        if stale:
            _, valid = table.index.directory.lookup(np.array(stale))
            assert not valid.any()


def test_uniform_draws_cover_live_items_only() -> None:
    table = SegmentTable(10, rng=np.random.default_rng(1))
    ids = table.add({"v": np.arange(9)}, np.array([2, 3, 4]))
    table.delete(ids[1:2])
    s = table.sample(3000)
    slots, probs = s.slots, s.probabilities
    drawn = table.ids_of(slots)
    assert np.array_equal(drawn, s.ids)
    assert set(drawn.tolist()) == {ids[0], ids[2]}
    assert abs((drawn == ids[0]).mean() - 0.5) < 0.04 and np.allclose(probs, 0.5)
    assert table.index.hits[slots].sum() > 0 and table.hit_counts(ids[[0, 2]]).sum() == 3000


def test_prioritized_items_and_windows() -> None:
    sampler = PrioritizedSampler(12, priority_exponent=1.0, uniform_probability=0.0)
    table = SegmentTable(12, sampler=sampler, rng=np.random.default_rng(2))
    ids = table.add({"v": np.arange(1, 9), "e": np.array([0, 0, 0, 0, 1, 1, 1, 1])}, np.array([2, 2, 2, 2]))
    table.update_priorities(ids, [0.0, 1.0, 0.0, 3.0])
    s = table.sample(4000, beta=1.0)
    w = s.weights
    got = table.ids_of(s.slots)
    assert set(got.tolist()) == {ids[1], ids[3]} and abs((got == ids[3]).mean() - 0.75) < 0.03
    assert w is not None and np.allclose(w[got == ids[3]], 1 / 3) and np.allclose(w[got == ids[1]], 1.0)
    _, slots = table.locate(ids)
    arrays, valid, in_item = table.read_windows(slots, 2, 5, episode_field="e")
    v = arrays[0].reshape(4, 5)
    assert v.tolist() == [[0, 0, 1, 2, 0], [1, 2, 3, 4, 0], [0, 0, 5, 6, 0], [5, 6, 7, 8, 0]]
    assert in_item.sum() == 8 and valid.sum() == 12
    assert table.update_priorities(np.array([ids[0] + 12 * 5]), [1.0]) == 0   # never issued: skipped
    assert table.counters["stale_updates"] == 1


def test_reservoir_index_places_items_in_regions() -> None:
    index = SegmentIndex(10, "reservoir", region=3)     # 3 regions of 3 steps
    rng = np.random.default_rng(0)
    ids, gone, placement, evicted = index.insert(np.array([3, 2, 3]), rng)
    assert ids.tolist() == [0, 1, 2] and evicted == 0 and gone.size == 0
    _, step_slots = placement[0]
    assert np.asarray(step_slots).tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    with pytest.raises(SchemaError):
        index.check_lengths(np.array([4]))
    for _ in range(50):
        ids, _, _, _ = index.insert(np.array([1]), rng)
    assert index.directory.count == 3 and index.writer is not None and index.writer.seen == 53
    with pytest.raises(ConfigError):
        SegmentIndex(10, "lifo")
    with pytest.raises(ConfigError):
        SegmentIndex(10, "reservoir", region=11)


def test_checks_change_nothing() -> None:
    table = SegmentTable(8, rng=np.random.default_rng(0))
    table.add({"v": np.arange(4)}, np.array([4]))
    state = repr(table.state_dict())
    for columns, lengths in (({"v": np.arange(3)}, [2, 2]), ({"v": np.arange(3)}, [[3]]),
                             ({"v": np.arange(9)}, [9]), ({"v": np.arange(3)}, [0, 3]),
                             ({"w": np.arange(3)}, [3]), ({"v": np.arange(3.5)}, [3])):
        with pytest.raises(SchemaError):
            table.add(columns, np.array(lengths))
    assert repr(table.state_dict()) == state
