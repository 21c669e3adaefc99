"""Shard tags on ids: the one id rule plus the shard index in the top bits."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Transition, assert_equal_state, item, items
from ReplayTables.engine.ids import (
    LOCAL_ID_LIMIT,
    MAX_SHARDS,
    NEXT_ID_INPLACE_SOURCE,
    NEXT_ID_SOURCE,
    NOT_STORED,
    SHARD_BITS,
    next_id,
    next_ids,
    shard_of,
    tag_ids,
    untag,
)
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.table import Table
from ReplayTables.engine.writers import ReservoirWriter
from ReplayTables.errors import ConfigError, StaleIdError


def test_layout() -> None:
    assert SHARD_BITS == 15 and MAX_SHARDS == 2**15 and LOCAL_ID_LIMIT == 2**48
    assert int(tag_ids(np.array([5]), 3)[0]) == 5 + (3 << 48)
    assert int(tag_ids(np.array([LOCAL_ID_LIMIT - 1]), MAX_SHARDS - 1)[0]) == 2**63 - 1  # still a positive int64


@given(local=st.lists(st.integers(0, LOCAL_ID_LIMIT - 1), max_size=20), shard=st.integers(0, MAX_SHARDS - 1))
def test_tag_round_trip(local: list[int], shard: int) -> None:
    ids = np.array(local, dtype=np.int64)
    tagged = tag_ids(ids, shard)
    assert (tagged >= 0).all()
    np.testing.assert_array_equal(untag(tagged), ids)
    assert (shard_of(tagged) == shard).all()


def test_not_stored_keeps_its_value() -> None:
    assert tag_ids(np.array([NOT_STORED]), 7).tolist() == [NOT_STORED]
    assert shard_of(np.array([NOT_STORED])).tolist() == [-1]


def test_the_id_rule() -> None:
    assert next_id(-1, 3, 10) == 3  # never written: the slot
    assert next_id(13, 3, 10) == 23  # live: one generation on
    assert next_id(-(23 + 2), 3, 10) == 33  # deleted: continues after the deleted id
    np.testing.assert_array_equal(next_ids(np.array([-1, 13, -25]), np.array([3, 3, 3]), 10), [3, 23, 33])


def test_the_lanes_sources_of_the_id_rule_agree_with_it() -> None:
    """The generated add lanes inline the rule's live-slot case as source, as an expression and in place."""
    live = np.array([13, 4, 27])
    expr = eval(NEXT_ID_SOURCE.format(old="live", capacity="10"))
    inplace = live.copy()
    exec(NEXT_ID_INPLACE_SOURCE.format(old="inplace", capacity="10"))
    np.testing.assert_array_equal(expr, next_ids(live, live % 10, 10))
    np.testing.assert_array_equal(inplace, expr)


@pytest.mark.parametrize("shard", [0, 5, MAX_SHARDS - 1])
@pytest.mark.parametrize("prioritized", [False, True])
def test_every_id_a_table_gives_out_carries_its_tag(shard: int, prioritized: bool) -> None:
    sampler = PrioritizedSampler(8, uniform_probability=0.1) if prioritized else None
    t = Table(8, Transition, sampler=sampler, rng=0, shard_tag=shard)
    ids = [t.add(item(k)) for k in range(3)]  # first add: general lane; then the generated one
    ids += t.add_batch(items(range(3, 6))).tolist()  # general, compiles the fast lane
    ids += t.add_batch(items(range(6, 7))).tolist()  # the generated batch lane
    ids += t.add_batch(items(range(7, 12))).tolist()  # wraps the ring: the general lane again
    arr = np.array(ids)
    assert (shard_of(arr) == shard).all()
    np.testing.assert_array_equal(untag(arr), np.arange(12))  # the one id rule: the insertion count
    s = t.sample(50)
    assert (shard_of(s.ids) == shard).all()
    np.testing.assert_array_equal(s.fields[1], untag(s.ids))  # with FIFO, item k has local id k
    live = arr[-8:]
    np.testing.assert_array_equal(t.get(live).fields[1], untag(live))
    if prioritized:
        assert t.update_priorities(live[:2], [2.0, 3.0]) == 2
        assert t.update_priorities(arr[:1], [1.0]) == 0  # overwritten: stale, skipped
    t.delete(live[:1])
    assert t.size == 7


def test_reservoir_ids_carry_the_tag() -> None:
    t = Table(4, Transition, writer=ReservoirWriter(4), rng=0, shard_tag=2)
    ids = np.array([t.add(item(k)) for k in range(10)])
    stored = ids[ids != NOT_STORED]
    assert (shard_of(stored) == 2).all()


@pytest.mark.parametrize("prioritized", [False, True])
def test_ids_of_another_shard_are_refused_and_change_nothing(prioritized: bool) -> None:
    def make(shard: int) -> Table:
        sampler = PrioritizedSampler(8) if prioritized else None
        t = Table(8, Transition, sampler=sampler, rng=0, shard_tag=shard)
        t.add_batch(items(range(5)))
        return t

    a, b = make(1), make(2)
    foreign = b.sample(3).ids  # same slots and generations as a's ids, another shard
    before = copy.deepcopy(a.state_dict())
    calls = [lambda: a.get(foreign), lambda: a.delete(foreign)]
    if prioritized:
        calls.append(lambda: a.update_priorities(foreign, [1.0, 1.0, 1.0]))  # the fused kernel's check
    for call in calls:
        with pytest.raises(StaleIdError, match="shard 1") as e:
            call()
        assert "shard(s) [2]" in str(e.value)
        assert_equal_state(a.state_dict(), before)
    # untagged ids (shard 0) are another shard's too
    with pytest.raises(StaleIdError, match="shard 1"):
        a.get(untag(foreign))
    # and a shard-0 table refuses tagged ids
    c = make(0)
    with pytest.raises(StaleIdError, match="shard 0"):
        c.get(foreign)
    with pytest.raises(StaleIdError, match="shard 0"):
        c.update_priorities(foreign, [1.0, 1.0, 1.0]) if prioritized else c.delete(foreign)
    assert c.counters["stale_updates"] == 0  # refused, not counted as stale


@pytest.mark.parametrize("bad", [-1, MAX_SHARDS, 1.5, True, "0"])
def test_shard_tag_is_checked(bad: object) -> None:
    with pytest.raises(ConfigError, match="shard_tag"):
        Table(4, Transition, shard_tag=bad)  # type: ignore[arg-type]


def test_step_range_tables_tag_their_ids_too() -> None:
    from ReplayTables.engine.layouts.step_ranges import StepRanges

    t = Table(12, layout=StepRanges(12), sampler=PrioritizedSampler(12), rng=0, shard_tag=3)
    ids = t.add_items({"v": np.arange(6)}, [2, 2, 2])
    assert (shard_of(ids) == 3).all()
    assert (shard_of(t.sample(10).ids) == 3).all() and (shard_of(t.oldest(3)) == 3).all()
    np.testing.assert_array_equal(t.get(ids[1:2]).fields[0], [2, 3])
    assert t.update_priorities(ids, [1.0, 2.0, 3.0]) == 3
    before = copy.deepcopy(t.state_dict())
    with pytest.raises(StaleIdError, match="shard 3"):
        t.delete(untag(ids))
    assert_equal_state(t.state_dict(), before)
    assert t.take_oldest(1, t.read)[0].tolist() == ids[:1].tolist()
