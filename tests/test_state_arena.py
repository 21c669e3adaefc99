"""State in arrays (engine/state.py): the components' scalars live in arena arrays.

What is proved: a table's counters, writer position, directory count and
identity flag, and a prioritized sampler's running maximum are elements of the
arena's arrays (writing the array changes what the component does next, and
what the component does shows up in the array); a component bound to an arena
that already holds its array adopts the values there (how an attaching process
will see shared state); a rate limiter's counts move into the table's arena;
checkpoints, pickles and copies keep both the values and the binding; and a
refused call or a refused load leaves the arena unchanged.
"""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import ReplayTables
from conftest import Transition, item, items
from ReplayTables.engine.ids import SlotDirectory
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.state import Counters, LocalArena, Scalars
from ReplayTables.engine.table import COUNTERS, Table
from ReplayTables.engine.writers import FifoWriter, ReservoirWriter
from ReplayTables.errors import CheckpointError, ConfigError, SchemaError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.rate_limiters import MinSize
from ReplayTables.ReplayBuffer import ReplayBuffer


def arena_values(arena: LocalArena) -> dict[str, list[float]]:
    return {name: a.tolist() for name, a in arena.arrays().items()}


# ---------------------------------------------------------------- the arena itself
def test_local_arena_hands_out_one_array_per_name() -> None:
    arena = LocalArena()
    a = arena.array("x.counts", (3,), np.int64, initial=[1, 2, 3])
    assert a.tolist() == [1, 2, 3]
    assert arena.array("x.counts", (3,), np.int64, initial=[9, 9, 9]) is a  # an existing array wins
    assert "x.counts" in arena and "y" not in arena
    assert arena.layout() == {"x.counts": ((3,), np.dtype(np.int64))}
    assert arena.array("y", (2,), np.float64).tolist() == [0.0, 0.0]


def test_local_arena_refuses_another_shape_or_dtype_for_a_name() -> None:
    arena = LocalArena()
    arena.array("x", (2,), np.int64, initial=[4, 5])
    with pytest.raises(ConfigError) as info:
        arena.array("x", (3,), np.int64)
    assert "arena['x']" in str(info.value) and "int64[2]" in str(info.value)
    with pytest.raises(ConfigError):
        arena.array("x", (2,), np.float64)
    assert arena_values(arena) == {"x": [4, 5]}


def test_copy_from_needs_the_same_layout_and_changes_nothing_otherwise() -> None:
    source, target = LocalArena(), LocalArena()
    source.array("a", (2,), np.int64, initial=[7, 8])
    source.array("b", (1,), np.float64, initial=[0.5])
    target.array("a", (2,), np.int64)
    with pytest.raises(ConfigError):
        target.copy_from(source)  # no "b" here
    assert arena_values(target) == {"a": [0, 0]}
    target.array("b", (1,), np.float64)
    target.copy_from(source)
    assert arena_values(target) == {"a": [7, 8], "b": [0.5]}


def test_scalars_adopt_what_an_arena_already_holds() -> None:
    arena = LocalArena()
    arena.array("writer.position", (1,), np.int64, initial=[7])
    writer = FifoWriter(10)
    writer.cursor = 3
    writer.bind(arena)
    assert writer.cursor == 7  # adopted, as an attaching process adopts the shared cursor
    assert writer.place_one(np.random.default_rng(0)) == 7
    assert arena.arrays()["writer.position"].tolist() == [8]
    fresh = LocalArena()
    other = ReservoirWriter(10)
    other.seen = 12
    other.bind(fresh)
    assert fresh.arrays()["writer.position"].tolist() == [12]  # carried over into a new arena


def test_counters_behave_like_the_dict_they_replace() -> None:
    counters = Counters("c", ("added", "evicted"))
    counters["added"] += 3
    assert dict(counters) == {"added": 3, "evicted": 0} and len(counters) == 2
    assert counters.scalars.array.tolist() == [3, 0]
    with pytest.raises(KeyError):
        counters["typo"] = 1
    with pytest.raises(TypeError):
        del counters["added"]
    assert pickle.loads(pickle.dumps(counters))["added"] == 3


# ---------------------------------------------------------------- a table's state is its arena
def test_every_scalar_of_a_table_lives_in_its_arena() -> None:
    sampler = PrioritizedSampler(8, priority_exponent=1.0, uniform_probability=0.0)
    table = Table(8, Transition, sampler=sampler, rng=0)
    arrays = table.arena.arrays()
    assert set(arrays) == {"table.counters", "writer.position", "directory.count", "sampler.max_q", "tree.zero_count"}
    table.add_batch(items(range(5)))
    table.add(item(5))  # the generated single-add lane
    table.add(item(6), priority=4.0)  # the checked path
    table.update_priorities(np.array([0]), np.array([9.0]))
    table.sample(3)
    assert arrays["table.counters"].tolist() == [table.counters[k] for k in COUNTERS]
    assert table.counters["added"] == 7 and table.counters["sampled"] == 3
    assert arrays["writer.position"].tolist() == [7]
    assert arrays["directory.count"].tolist() == [7, 1]  # count, identity (no deletions yet)
    assert arrays["sampler.max_q"].tolist() == [9.0]
    table.delete(np.array([2]))
    assert arrays["directory.count"].tolist() == [6, 0]


def test_writing_the_arena_changes_what_the_table_does() -> None:
    table = Table(8, Transition, rng=0)
    table.add_batch(items(range(8)))
    table.arena.arrays()["writer.position"][0] = 5  # the next item takes slot 5
    new_id = table.add(item(100))
    assert new_id == 8 + 5
    np.testing.assert_array_equal(table.get(np.array([new_id])).fields[1], [100])
    assert table.counters["evicted"] == 1


def test_a_refused_add_leaves_the_arena_unchanged() -> None:
    table = Table(8, Transition, rng=0)
    table.add_batch(items(range(3)))
    before = arena_values(table.arena)
    with pytest.raises(SchemaError):
        table.add(Transition(np.zeros(4), np.int64(1), np.float32(0)))  # wrong shape
    with pytest.raises(SchemaError):
        table.add_batch(Transition(np.zeros((2, 3)), np.arange(3), np.zeros(2, np.float32)))
    assert arena_values(table.arena) == before


def test_the_rate_limiter_counts_move_into_the_tables_arena() -> None:
    table = Table(8, Transition, rng=0)
    limiter = MinSize(1)
    limiter.record_insert(4)
    table.bind_rate_limiter(limiter)
    counts = table.arena.arrays()["rate_limiter.counts"]
    assert counts.tolist() == [4, 0]  # carried over
    limiter.record_sample(2)
    assert counts.tolist() == [4, 2] and limiter.samples == 2
    counts[0] = 10
    assert limiter.inserts == 10


# ---------------------------------------------------------------- checkpoints, pickles, copies
def build_per() -> PrioritizedReplay:
    buf = PrioritizedReplay(16, Transition, config=PERConfig(priority_exponent=1.0, max_decay=0.5), rng=3)
    for k in range(20):
        buf.add(item(k))
    buf.update_priorities(np.array([10, 11]), np.array([3.0, 7.0]))
    buf.delete(np.array([12]))
    buf.sample(5)
    return buf


def test_the_checkpoint_format_still_holds_plain_numbers() -> None:
    state = build_per()._table.state_dict()
    assert type(state["writer"]["cursor"]) is int
    assert type(state["directory"]["count"]) is int and type(state["directory"]["identity"]) is bool
    assert type(state["sampler"]["max_q"]) is float
    assert all(type(v) is int for v in state["counters"].values())
    json.dumps({k: state[k] for k in ("writer", "counters")})


def test_save_and_load_restore_the_scalars_into_the_loaded_buffers_arena(tmp_path: Path) -> None:
    buf = build_per()
    buf.save(tmp_path / "ck")
    back = ReplayTables.load(tmp_path / "ck")
    assert arena_values(back._table.arena) == arena_values(buf._table.arena)
    # the loaded components still read their arena: a write to it is seen
    back._table.arena.arrays()["writer.position"][0] = 0
    assert back._table.writer.cursor == 0
    np.testing.assert_array_equal(back.sample(6).a, build_per().sample(6).a)  # same next samples


def test_load_state_dict_writes_into_the_same_arena_arrays() -> None:
    buf = build_per()
    other = PrioritizedReplay(16, Transition, config=PERConfig(priority_exponent=1.0, max_decay=0.5), rng=3)
    other.add(item(0))
    arrays = dict(other._table.arena.arrays())
    other.load_state_dict(buf.state_dict())
    for name, a in other._table.arena.arrays().items():
        assert a is arrays[name]  # restored in place, not replaced
    assert arena_values(other._table.arena) == arena_values(buf._table.arena)


def test_a_refused_load_leaves_the_arena_unchanged() -> None:
    buf = build_per()
    state = buf.state_dict()
    state["table"]["writer"]["cursor"] = 999
    target = build_per()
    target.add(item(50))
    before = arena_values(target._table.arena)
    with pytest.raises((CheckpointError, ConfigError)):
        target.load_state_dict(state)
    assert arena_values(target._table.arena) == before


@pytest.mark.parametrize("clone", [lambda b: pickle.loads(pickle.dumps(b)), copy.deepcopy], ids=["pickle", "deepcopy"])
def test_pickle_and_deepcopy_keep_components_bound_to_their_arena(clone) -> None:
    buf = build_per()
    twin = clone(buf)
    assert arena_values(twin._table.arena) == arena_values(buf._table.arena)
    arrays = twin._table.arena.arrays()
    arrays["writer.position"][0] = 1
    arrays["sampler.max_q"][0] = 42.0
    assert twin._table.writer.cursor == 1 and twin._table.sampler.max_q == 42.0
    assert buf._table.writer.cursor != 1  # the clone's arena is its own
    twin.add(item(77))
    assert twin._table.counters["added"] == buf._table.counters["added"] + 1
    assert arrays["table.counters"][0] == twin._table.counters["added"]


def test_buffers_of_every_front_end_keep_their_counters_in_the_arena() -> None:
    buf = ReplayBuffer(8, Transition, rng=0)
    for k in range(10):
        buf.add(item(k))
    buf.sample(4)
    stats = buf.stats()
    assert buf._table.arena.arrays()["table.counters"].tolist() == [stats[k] for k in COUNTERS]
    assert buf._table.arena.arrays()["directory.count"][0] == len(buf) == 8


def test_a_directory_unbound_keeps_its_scalars_in_its_own_array() -> None:
    directory = SlotDirectory(4)
    directory.assign_one(0)
    assert directory.scalars.array.tolist() == [1, 1]
    assert isinstance(directory.scalars, Scalars) and "directory.count" in repr(directory.scalars)


# ---------------------------------------------------------------- an arena in shared memory
def test_a_table_moves_its_scalars_into_shared_memory_and_a_second_binding_adopts_them() -> None:
    from ReplayTables.engine.shared_memory import SharedArrays
    from ReplayTables.engine.state import FixedArena

    sampler = PrioritizedSampler(8, priority_exponent=1.0, uniform_probability=0.0)
    table = Table(8, Transition, sampler=sampler, rng=0)
    table.add_batch(items(range(3)))
    table.add(item(3), priority=5.0)
    with SharedArrays.create(table.arena.layout()) as shared:
        before = arena_values(table.arena)
        table.bind(FixedArena(shared.arrays), carry=True)
        assert arena_values(table.arena) == before  # carried over into shared memory
        table.add(item(4))  # the lanes are rebuilt over the shared arrays
        assert shared.arrays["table.counters"][0] == 5 and shared.arrays["writer.position"][0] == 5
        # a second set of components bound without carrying adopts the shared values (as an attacher would)
        writer, directory = FifoWriter(8), SlotDirectory(8)
        writer.bind(FixedArena(shared.arrays))
        directory.bind(FixedArena(shared.arrays))
        assert writer.cursor == 5 and directory.count == 5
        writer.place_one(np.random.default_rng(0))
        assert table.writer.cursor == 6  # one cursor, two views
        del writer, directory
        table.bind(LocalArena(), carry=True)  # back to private memory before the segment goes
    assert table.writer.cursor == 6 and table.counters["added"] == 5


def test_an_arena_of_a_fixed_layout_refuses_what_it_lacks_and_binding_changes_nothing() -> None:
    from ReplayTables.engine.state import FixedArena

    table = Table(8, Transition, rng=0)
    table.add_batch(items(range(3)))
    partial = FixedArena({"table.counters": np.zeros(len(COUNTERS), np.int64)})
    before = arena_values(table.arena)
    with pytest.raises(ConfigError) as info:
        table.bind(partial)
    assert "writer.position" in str(info.value)
    assert arena_values(table.arena) == before and partial.arrays()["table.counters"].tolist() == [0] * 6
    table.add(item(3))
    assert table.counters["added"] == 4


# ---------------------------------------------------------------- the step-range layout's state
def step_table(capacity: int, placement: str = "ring", region: int | None = None) -> Table:
    from ReplayTables.engine.layouts.step_ranges import StepRanges

    return Table(capacity, layout=StepRanges(capacity, placement, region), rng=0)


def step_columns(start: int, n: int) -> dict[str, np.ndarray]:
    return {"v": np.arange(start, start + n, dtype=np.int64)}


def test_every_scalar_of_the_step_range_layout_lives_in_the_tables_arena() -> None:
    table = step_table(8)
    layout = table.layout
    assert layout is not None
    table.add_items(step_columns(0, 3), np.array([2, 1]))
    table.add_items(step_columns(3, 7), np.array([3, 4]))  # 10 steps into 8: the first item (steps 0-1) goes
    arrays = table.arena.arrays()
    # head, issued, oldest, live_steps, unit_lengths, region (none)
    assert arrays["ranges.scalars"].tolist() == [10, 4, 1, 8, 0, 0]
    assert (layout.head, layout.issued, layout.oldest, layout.live_steps, layout.unit_lengths) == (10, 4, 1, 8, False)
    arrays["ranges.scalars"][3] = 99  # writing the arena is what the layout reads next
    assert layout.live_steps == 99
    arrays["ranges.scalars"][3] = 8
    assert table.layout.state_dict()["live_steps"] == 8 and table.size == 3


def test_a_reservoir_layout_fixes_its_region_and_writer_in_the_arena() -> None:
    table = step_table(9, "reservoir")  # no region: the first batch's longest item fixes it
    assert "ranges.writer.position" not in table.arena
    table.add_items(step_columns(0, 5), np.array([3, 2]))
    arrays = table.arena.arrays()
    assert arrays["ranges.scalars"][5] == 3 and table.layout is not None and table.layout.region == 3
    assert arrays["ranges.writer.position"].tolist() == [2]  # offers seen, beside the table's own writer.position
    assert "writer.position" in arrays
    for k in range(10):
        table.add_items(step_columns(10 + k, 1), np.array([1]))
    assert arrays["ranges.writer.position"].tolist() == [12] == [table.layout.writer.seen]


@pytest.mark.parametrize("placement, region", [("ring", None), ("reservoir", 2), ("reservoir", None)])
def test_a_step_range_load_restores_into_the_same_arrays(placement: str, region: int | None) -> None:
    source = step_table(8, placement, region)
    for k in range(6):
        source.add_items(step_columns(10 * k, 3), np.array([1, 2]))
    source.delete(source.ids_of(np.array([1])))
    target = step_table(8, placement, region)
    if region is not None or placement == "ring":  # (a first add would fix a lazy region to another length)
        target.add_items(step_columns(0, 1), np.array([1]))
    layout = target.layout
    assert layout is not None
    arrays = {**layout.arrays(), **dict(target.arena.arrays())}
    target.load_state_dict(source.state_dict())
    for name, a in {**layout.arrays(), **dict(target.arena.arrays())}.items():
        assert name not in arrays or a is arrays[name], name  # copied in place, so views stay valid
    assert arena_values(target.arena) == arena_values(source.arena)
    assert target.layout is not None and source.layout is not None
    for name, a in source.layout.arrays().items():
        np.testing.assert_array_equal(target.layout.arrays()[name], a)


def test_a_refused_step_range_load_leaves_the_layout_unchanged() -> None:
    source = step_table(8)
    source.add_items(step_columns(0, 4), np.array([2, 2]))
    state = source.state_dict()
    state["index"]["live_steps"] = 3  # not the sum of the live lengths
    target = step_table(8)
    target.add_items(step_columns(0, 3), np.array([3]))
    assert target.layout is not None
    before = (arena_values(target.arena), {k: v.copy() for k, v in target.layout.arrays().items()})
    with pytest.raises(CheckpointError):
        target.load_state_dict(state)
    assert arena_values(target.arena) == before[0]
    for name, a in target.layout.arrays().items():
        np.testing.assert_array_equal(a, before[1][name])


def test_an_rllib_buffer_keeps_working_with_its_layout_state_in_shared_memory() -> None:
    from ReplayTables.engine.shared_memory import SharedArrays
    from ReplayTables.engine.state import FixedArena
    from ReplayTables.rllib import ReplayBuffer as RllibReplayBuffer

    buf = RllibReplayBuffer(capacity=16, storage_unit="episodes", seed=0)
    batch = {"obs": np.arange(6, dtype=np.float32), "eps_id": np.array([0, 0, 0, 1, 1, 1]),
             "dones": np.array([False, False, True, False, False, True])}
    buf.add(batch)
    table = buf._table
    with SharedArrays.create(table.arena.layout()) as shared:
        table.bind(FixedArena(shared.arrays), carry=True)
        buf.add({k: v for k, v in batch.items()})
        assert shared.arrays["ranges.scalars"][:4].tolist() == [12, 4, 0, 12]  # head, issued, oldest, live_steps
        assert len(buf) == 4 and buf.num_timesteps == 12
        table.bind(LocalArena(), carry=True)
    assert len(buf.sample(2)["obs"]) == 6  # two episodes of three steps


def test_a_scalar_field_reads_and_writes_its_element_of_the_components_scalars() -> None:
    from ReplayTables.engine.state import ScalarField, Scalars, flag, int_or_none, zero_for_none

    class Component:
        count = ScalarField(0, doc="how many")
        full = ScalarField(1, bool, flag)
        bound = ScalarField(2, int_or_none, zero_for_none)

        def __init__(self) -> None:
            self.scalars = Scalars("component", [3, 0, 0], np.int64)

    c = Component()
    assert (c.count, c.full, c.bound) == (3, False, None)
    assert type(c.count) is int and type(c.full) is bool  # Python numbers, not numpy scalars
    c.count, c.full, c.bound = 7, True, 5
    assert c.scalars.array.tolist() == [7, 1, 5] and (c.count, c.full, c.bound) == (7, True, 5)
    c.full, c.bound = np.bool_(False), None
    assert c.scalars.array.tolist() == [7, 0, 0] and c.bound is None
    arena = LocalArena()
    c.scalars.bind(arena)  # bound: the field follows the arena's array
    arena.arrays()["component"][0] = 11
    assert c.count == 11
    assert isinstance(Component.count, ScalarField) and Component.count.__doc__ == "how many"
