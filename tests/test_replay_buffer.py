"""Front end A: ReplayBuffer behaviour through the public API."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import ReplayTables
from conftest import DTransition, Transition, check_fields, item, items, keys_of
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.errors import StaleIdError
from ReplayTables.ReplayBuffer import Batch, ReplayBuffer


class Data(NamedTuple):
    x: np.ndarray
    a: np.ndarray
    r: np.ndarray


def test_readme_shapes_ids_and_weights() -> None:
    b = ReplayBuffer(max_size=100, structure=Data, rng=np.random.default_rng(0))
    for k in range(10):
        b.add(Data(np.full(7, k, dtype=np.float32), np.int64(k % 3), np.float32(k)))
    batch = b.sample(32)
    assert isinstance(batch, Batch)
    assert batch.x.shape == (32, 7) and batch.x.dtype == np.float32
    assert batch.a.shape == (32,) and batch.r.shape == (32,)
    assert batch.ids.dtype == np.int64 and batch.ids.shape == (32,)
    np.testing.assert_array_equal(batch.weights, np.ones(32))
    assert isinstance(batch.data, Data)
    np.testing.assert_array_equal(batch.data.x, batch.x)
    np.testing.assert_array_equal(batch.x[:, 0], batch.r)  # rows stay together


def test_add_returns_ids_and_sizes() -> None:
    b = ReplayBuffer(4, Transition, np.random.default_rng(0))
    assert b.size() == len(b) == 0 and b.max_size == 4
    ids = [b.add(item(k)) for k in range(3)]
    assert ids == [0, 1, 2] and all(isinstance(i, int) for i in ids)
    more = b.add_batch(items([3, 4, 5]))
    assert more.dtype == np.int64 and more.tolist() == [3, 4, 5]
    assert b.size() == len(b) == 4 and b.max_size == 4


def test_fifo_eviction_makes_old_ids_stale() -> None:
    b = ReplayBuffer(3, Transition, np.random.default_rng(0))
    ids = [b.add(item(k)) for k in range(5)]
    check_fields(b.get(ids[2:]), [2, 3, 4])
    for old in ids[:2]:
        with pytest.raises(StaleIdError, match=str(old)):
            b.get([old])
    stats = b.stats()
    assert stats["added"] == 5 and stats["evicted"] == 2 and stats["size"] == 3


def test_get_keeps_order_and_duplicates() -> None:
    b = ReplayBuffer(10, Transition, np.random.default_rng(0))
    ids = b.add_batch(items(range(6)))
    check_fields(b.get([ids[4], ids[1], ids[4]]), [4, 1, 4])
    check_fields(b.get(np.int64(ids[2])), [2])


def test_sample_only_live_items_and_covers_them() -> None:
    b = ReplayBuffer(6, Transition, np.random.default_rng(0))
    ids = b.add_batch(items(range(6)))
    b.delete([ids[1], ids[3]])
    assert len(b) == 4 and b.stats()["deleted"] == 2
    batch = b.sample(2000)
    assert set(batch.a.tolist()) == {0, 2, 4, 5}
    check_fields(batch, batch.a)
    assert set(batch.ids.tolist()) == {int(ids[k]) for k in (0, 2, 4, 5)}


def test_sample_zero_and_large_n() -> None:
    b = ReplayBuffer(5, Transition, np.random.default_rng(0))
    b.add(item(9))
    empty = b.sample(0)
    assert len(empty) == 0 and empty.x.shape == (0, 3)
    many = b.sample(1000)
    assert (many.a == 9).all()
    assert b.stats()["sampled"] == 1000


def test_same_seed_same_samples() -> None:
    def run() -> np.ndarray:
        b = ReplayBuffer(50, Transition, np.random.default_rng(42))
        b.add_batch(items(range(50)))
        return np.concatenate([b.sample(16).ids for _ in range(5)])

    np.testing.assert_array_equal(run(), run())


def test_buffer_stores_copies_and_returns_copies() -> None:
    b = ReplayBuffer(5, Transition, np.random.default_rng(0))
    x = np.array([1.0, 2.0, 3.0])
    i = b.add(Transition(x, np.int64(1), np.float32(0)))
    x[:] = -1  # the caller reuses its array
    np.testing.assert_array_equal(b.get([i]).x, [[1.0, 2.0, 3.0]])
    batch = b.get([i])
    batch.x[:] = 99  # the caller scribbles on a batch
    np.testing.assert_array_equal(b.get([i]).x, [[1.0, 2.0, 3.0]])


def test_values_are_cast_to_the_field_dtype() -> None:
    b = ReplayBuffer(5, Transition, np.random.default_rng(0))
    b.add(item(1))  # fixes x float64, a int64, r float32
    i = b.add(Transition([1, 2, 3], 7, 0.25))  # python lists and scalars
    got = b.get([i])
    assert got.x.dtype == np.float64 and got.a.dtype == np.int64 and got.r.dtype == np.float32
    assert got.a.tolist() == [7] and got.r.tolist() == [0.25]


def test_dataclass_and_dict_structures() -> None:
    b = ReplayBuffer(5, DTransition, np.random.default_rng(0))
    ids = b.add_batch(items(range(3), DTransition))
    got = b.get(ids)
    check_fields(got, [0, 1, 2])
    assert isinstance(got.data, DTransition)
    d = ReplayBuffer(5, None, np.random.default_rng(0))
    j = d.add({"obs": np.ones(2), "r": 1.0})
    assert d.get([j]).obs.shape == (1, 2)
    assert d.get([j]).data["r"].tolist() == [1.0]


def test_add_batch_wrapping_and_overflow() -> None:
    b = ReplayBuffer(4, Transition, np.random.default_rng(0))
    b.add_batch(items(range(3)))
    ids = b.add_batch(items(range(3, 6)))  # wraps around the ring
    assert sorted(keys_of(b, ids).tolist()) == [3, 4, 5]
    assert b.stats()["evicted"] == 2 and len(b) == 4
    big = b.add_batch(items(range(100, 110)))  # larger than the buffer: only the last 4 stay
    assert (big[:6] == -1).all() and (big[6:] >= 0).all()
    assert keys_of(b, big[6:]).tolist() == [106, 107, 108, 109]
    assert len(b) == 4 and b.stats()["not_stored"] == 6


def test_empty_batch_add() -> None:
    b = ReplayBuffer(4, Transition, np.random.default_rng(0))
    b.add(item(0))
    ids = b.add_batch(items([]))
    assert ids.shape == (0,) and len(b) == 1


def test_capacity_one() -> None:
    b = ReplayBuffer(1, Transition, np.random.default_rng(0))
    for k in range(5):
        i = b.add(item(k))
        assert len(b) == 1
        check_fields(b.sample(3), [k, k, k])
    b.delete([i])
    assert len(b) == 0


def test_structure_and_repr() -> None:
    b = ReplayBuffer(5, Transition, np.random.default_rng(0))
    assert b.structure is Transition
    b.add(item(1))
    text = repr(b)
    assert "ReplayBuffer" in text and "max_size=5" in text
    assert "x" in repr(b.sample(2))


def test_default_rng_is_accepted() -> None:
    b = ReplayBuffer(5, Transition)
    b.add(item(1))
    assert b.sample(1).a.tolist() == [1]



def test_single_add_fast_lane_matches_the_general_path(tmp_path: Path) -> None:
    """The generated single-add lane (exact dtypes) and the general path (lists, cast)
    give the same ids, counters and contents: fresh slots, ring wrap with eviction,
    a deleted slot refilled, and adds after a save/load (which replaces the id array)."""
    structure = {"x": FieldSpec((3,), np.float32), "r": FieldSpec((), np.float32)}
    fast = ReplayBuffer(5, structure, np.random.default_rng(0))
    slow = ReplayBuffer(5, structure, np.random.default_rng(0))

    def both(k: int) -> None:
        v = np.arange(3, dtype=np.float32) + k
        assert fast.add({"x": v, "r": float(k)}) == slow.add({"x": v.tolist(), "r": float(k)})

    for k in range(7):  # fills, then wraps (two evictions)
        both(k)
    victim = fast.sample(1).ids[0]
    assert slow.sample(1).ids[0] == victim  # same seed, same contents
    fast.delete([victim])
    slow.delete([victim])
    for k in range(7, 10):  # refills the hole, then evicts in ring order
        both(k)
    fast.save(tmp_path / "fast")
    slow.save(tmp_path / "slow")
    fast = ReplayTables.load(tmp_path / "fast")
    slow = ReplayTables.load(tmp_path / "slow")
    for k in range(10, 13):
        both(k)
    assert fast.stats() == slow.stats()
    assert fast.stats()["evicted"] == 7 and fast.stats()["deleted"] == 1
    for i in range(13 * 5):
        try:
            a = fast.get([i])
        except StaleIdError:
            with pytest.raises(StaleIdError):
                slow.get([i])
            continue
        b = slow.get([i])
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.r, b.r)
