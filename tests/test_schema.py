"""Schema (fields from NamedTuple, dataclass, dict, nested dict, FieldSpec or the
first item) and PackedStorage (row layout, alignment, views and gathers)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReplayTables.engine.schema import Field, FieldSpec, Schema
from ReplayTables.engine.storage import PackedStorage, row_layout
from ReplayTables.errors import SchemaError
from ReplayTables.ReplayBuffer import ReplayBuffer


class Scalars(NamedTuple):
    a: float
    b: int
    c: bool
    d: np.float32


class Arrays(NamedTuple):
    obs: np.ndarray
    r: float


@dataclass
class DC:
    obs: np.ndarray
    a: int


def dtypes(schema: Schema) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    assert schema.fields is not None
    return {f.name: (f.shape, f.dtype) for f in schema.fields}


# ---------------------------------------------------------------- building
def test_namedtuple_scalar_annotations_are_declared() -> None:
    s = Schema.from_structure(Scalars)
    assert s.kind == "namedtuple" and s.structure is Scalars and s.resolved
    assert dtypes(s) == {"a": ((), np.dtype(np.float64)), "b": ((), np.dtype(np.int64)),
                         "c": ((), np.dtype(np.bool_)), "d": ((), np.dtype(np.float32))}


def test_namedtuple_array_fields_come_from_the_first_item() -> None:
    s = Schema.from_structure(Arrays)
    assert not s.resolved and s.names == ["obs", "r"]
    s.resolve(Arrays(np.zeros((4, 2), dtype=np.float32), 1.0))
    assert dtypes(s) == {"obs": ((4, 2), np.dtype(np.float32)), "r": ((), np.dtype(np.float64))}


def test_first_batch_gives_shapes_without_the_batch_axis() -> None:
    s = Schema.from_structure(Arrays)
    s.resolve(Arrays(np.zeros((7, 3), dtype=np.uint8), np.zeros(7)), batched=True)
    assert dtypes(s) == {"obs": ((3,), np.dtype(np.uint8)), "r": ((), np.dtype(np.float64))}


def test_dataclass() -> None:
    s = Schema.from_structure(DC)
    assert s.kind == "dataclass" and not s.resolved
    s.resolve(DC(np.zeros(5, dtype=np.float16), 3))
    assert dtypes(s) == {"obs": ((5,), np.dtype(np.float16)), "a": ((), np.dtype(np.int64))}
    built = s.build([np.ones((2, 5)), np.arange(2)])
    assert isinstance(built, DC) and built.obs.shape == (2, 5)


def test_dict_of_specs_in_every_form() -> None:
    s = Schema.from_structure({"a": FieldSpec((3,), np.float32), "b": ((2, 2), np.int16), "c": np.uint8,
                               "d": None, "e": FieldSpec(shape=(4,)), "f": FieldSpec(dtype=np.float64)})
    assert s.kind == "dict" and not s.resolved  # d, e, f wait for the first item
    s.resolve({"a": np.zeros(3), "b": np.zeros((2, 2)), "c": 1, "d": np.zeros(6, dtype=np.int8),
               "e": np.zeros(4, dtype=np.float32), "f": np.zeros((2, 3), dtype=np.float32)})
    assert dtypes(s) == {"a": ((3,), np.dtype(np.float32)), "b": ((2, 2), np.dtype(np.int16)),
                         "c": ((), np.dtype(np.uint8)), "d": ((6,), np.dtype(np.int8)),
                         "e": ((4,), np.dtype(np.float32)), "f": ((2, 3), np.dtype(np.float64))}


def test_fully_declared_dict_is_resolved_at_once() -> None:
    s = Schema.from_structure({"a": FieldSpec((3,), np.float32), "b": ((), np.int64)})
    assert s.resolved


def test_nested_dict() -> None:
    spec = {"obs": {"image": FieldSpec((4, 4), np.uint8), "state": {"pos": ((2,), np.float32)}},
            "action": ((), np.int64)}
    s = Schema.from_structure(spec)
    assert s.resolved
    assert [f.path for f in s.fields or []] == [("obs", "image"), ("obs", "state", "pos"), ("action",)]
    assert [f.name for f in s.fields or []] == ["obs/image", "obs/state/pos", "action"]
    built = s.build([np.zeros((2, 4, 4)), np.ones((2, 2)), np.arange(2)])
    assert set(built) == {"obs", "action"} and built["obs"]["state"]["pos"].shape == (2, 2)


def test_first_item_without_structure() -> None:
    s = Schema.from_structure(None)
    s.resolve({"obs": {"x": np.zeros(2, dtype=np.float32)}, "r": 1.5})
    assert dtypes(s) == {"obs/x": ((2,), np.dtype(np.float32)), "r": ((), np.dtype(np.float64))}


def test_values_of_gives_field_order() -> None:
    s = Schema.from_structure({"b": ((), np.int64), "a": {"c": ((), np.int64), "d": ((), np.int64)}})
    assert s.values_of({"a": {"d": 4, "c": 3}, "b": 2}) == [2, 3, 4]


def test_json_round_trip() -> None:
    s = Schema.from_structure({"obs": {"image": FieldSpec((4, 4), np.uint8)}, "r": ((), np.float32)})
    js = s.to_json()
    back = Schema.from_fields(js["kind"], None, [Field.from_json(f) for f in js["fields"]])
    assert back == s


def test_coerce_casts_same_kind_and_checks_shape() -> None:
    s = Schema.from_structure({"x": ((3,), np.float32), "a": ((), np.int32)})
    out = s.coerce([np.arange(3, dtype=np.float64), np.int64(5)])
    assert [o.shape for o in out] == [(3,), ()]
    with pytest.raises(SchemaError, match="x"):
        s.coerce([np.zeros(4), 1])
    with pytest.raises(SchemaError, match="a"):
        s.coerce([np.zeros(3), 1.5])


def test_buffer_returns_nested_dict_fields() -> None:
    spec = {"obs": {"pos": ((2,), np.float32), "vel": ((2,), np.float32)}, "a": ((), np.int64)}
    b = ReplayBuffer(4, spec, np.random.default_rng(0))
    ids = [b.add({"obs": {"pos": np.full(2, k), "vel": -np.full(2, k)}, "a": k}) for k in range(3)]
    got = b.get(ids)
    assert got.obs["pos"].dtype == np.float32 and got.obs["pos"].shape == (3, 2)
    np.testing.assert_array_equal(got.obs["vel"][:, 0], [0, -1, -2])
    np.testing.assert_array_equal(got.a, [0, 1, 2])
    assert got.data["obs"]["pos"].shape == (3, 2)
    assert set(got.fields) == {"obs/pos", "obs/vel", "a"}


@pytest.mark.parametrize("structure", [Scalars, DC])
def test_buffer_data_is_the_users_structure(structure: type) -> None:
    b = ReplayBuffer(4, structure, np.random.default_rng(0))
    if structure is Scalars:
        b.add(Scalars(1.5, 2, True, np.float32(0.5)))
    else:
        b.add(DC(np.zeros(3), 4))
    batch = b.sample(5)
    assert isinstance(batch.data, structure)
    assert len(batch) == 5 and batch.ids.dtype == np.int64


# ---------------------------------------------------------------- storage
MIXED = [Field(("flag",), (), np.dtype(np.bool_)), Field(("x",), (3,), np.dtype(np.float64)),
         Field(("img",), (5, 3), np.dtype(np.uint8)), Field(("a",), (), np.dtype(np.int32)),
         Field(("h",), (2,), np.dtype(np.float16)), Field(("r",), (), np.dtype(np.float32))]


@pytest.mark.parametrize("order", [list(range(6)), [5, 4, 3, 2, 1, 0], [2, 0, 4, 1, 3, 5]])
def test_row_layout_is_aligned_and_non_overlapping(order: list[int]) -> None:
    fields = [MIXED[i] for i in order]
    offsets, row = row_layout(fields)
    spans = sorted((off, off + f.nbytes) for f, off in zip(fields, offsets))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    for f, off in zip(fields, offsets):
        assert off % min(f.dtype.alignment, 8) == 0
    assert row >= spans[-1][1]
    assert row % max(min(f.dtype.alignment, 8) for f in fields) == 0


def test_storage_views_write_through_and_gather_copies() -> None:
    storage = PackedStorage(MIXED, 10)
    assert storage.rows.shape == (10, storage.row_bytes) and storage.rows.dtype == np.uint8
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 2, 10).astype(bool), rng.normal(size=(10, 3)),
            rng.integers(0, 255, (10, 5, 3)).astype(np.uint8), rng.integers(-9, 9, 10).astype(np.int32),
            rng.normal(size=(10, 2)).astype(np.float16), rng.normal(size=10).astype(np.float32)]
    storage.write(slice(0, 10), data)
    for col, f in zip(storage.columns, MIXED):
        assert col.shape == (10, *f.shape) and col.dtype == f.dtype
        assert np.shares_memory(col, storage.rows)
    slots = np.array([7, 2, 2, 9])
    got = storage.gather(slots)
    for g, d, f in zip(got, data, MIXED):
        np.testing.assert_array_equal(g, d[slots])
        assert g.dtype == f.dtype and g.shape == (4, *f.shape)
        assert all(s % f.dtype.itemsize == 0 for s in g.strides)
        assert not np.shares_memory(g, storage.rows)
    got[1][:] = 0.0  # a gathered copy can be changed without touching the store
    np.testing.assert_array_equal(storage.columns[1][slots], data[1][slots])


def test_storage_write_with_slot_array() -> None:
    storage = PackedStorage(MIXED[:2], 6)
    storage.write(np.array([4, 1]), [np.array([True, False]), np.ones((2, 3))])
    assert storage.columns[0].tolist() == [False, False, False, False, True, False]
    np.testing.assert_array_equal(storage.columns[1][[1, 4]], np.ones((2, 3)))
    np.testing.assert_array_equal(storage.columns[1][[0, 2, 3, 5]], np.zeros((4, 3)))


def test_storage_state_round_trip() -> None:
    a = PackedStorage(MIXED, 4)
    a.columns[1][2] = [1.0, 2.0, 3.0]
    b = PackedStorage(MIXED, 4)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.rows, a.rows)
    np.testing.assert_array_equal(b.columns[1][2], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- round trips of random schemas
DTYPES = [np.bool_, np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.complex64]


@st.composite
def specs_and_batches(draw: st.DrawFn) -> tuple[dict[str, tuple[tuple[int, ...], type]], int, int]:
    n_fields = draw(st.integers(1, 5))
    spec = {}
    for j in range(n_fields):
        shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        spec[f"f{j}"] = (shape, draw(st.sampled_from(DTYPES)))
    return spec, draw(st.integers(1, 6)), draw(st.integers(0, 2**31))


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    raw = rng.integers(0, 100, size=shape)
    return (raw % 2).astype(dtype) if dtype is np.bool_ else raw.astype(dtype)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(specs_and_batches(), st.sampled_from(["declared", "first-item"]))
def test_random_schemas_round_trip_through_the_buffer(case: tuple[dict, int, int], how: str) -> None:
    spec, m, seed = case
    rng = np.random.default_rng(seed)
    structure = spec if how == "declared" else None
    b = ReplayBuffer(5, structure, np.random.default_rng(0))
    batch = {k: _values(rng, (m, *shape), dt) for k, (shape, dt) in spec.items()}
    ids = b.add_batch(batch)
    singles = [{k: _values(rng, shape, dt) for k, (shape, dt) in spec.items()} for _ in range(3)]
    single_ids = [b.add(one) for one in singles]  # the second and third take the generated fast path
    expect_ids = list(ids[-max(0, 5 - 3):]) if m > 2 else list(ids)
    got = b.get(np.array(expect_ids + single_ids, dtype=np.int64))
    kept = [j for j in range(m) if ids[j] in expect_ids]
    for k, (shape, dt) in spec.items():
        want = np.concatenate([batch[k][kept], np.stack([s[k] for s in singles])])
        assert got.fields[k].dtype == np.dtype(dt) and got.fields[k].shape == (len(kept) + 3, *shape)
        np.testing.assert_array_equal(got.fields[k], want)


class One(NamedTuple):
    v: np.ndarray


@dataclass
class OneDC:
    v: float


def test_single_field_structures() -> None:
    b = ReplayBuffer(3, One, np.random.default_rng(0))
    ids = [b.add(One(np.full(2, k, dtype=np.float32))) for k in range(4)]
    more = b.add_batch(One(np.zeros((2, 2), dtype=np.float32)))
    np.testing.assert_array_equal(b.get([ids[3]]).v, [[3.0, 3.0]])
    assert len(more) == 2 and len(b) == 3
    c = ReplayBuffer(3, OneDC, np.random.default_rng(0))
    ids = [c.add(OneDC(float(k))) for k in range(3)]
    c.add_batch(OneDC(np.array([7.0])))
    assert c.get(ids[1:]).v.tolist() == [1.0, 2.0]


def test_integers_go_into_any_integer_field_that_holds_them() -> None:
    b = ReplayBuffer(4, {"u8": ((2,), np.uint8), "i16": ((), np.int16)}, np.random.default_rng(0))
    i = b.add({"u8": [0, 255], "i16": -32768})  # python ints (int64) into uint8 / int16
    j = b.add({"u8": np.array([3, 4], dtype=np.int32), "i16": np.uint8(200)})
    got = b.get([i, j])
    assert got.u8.dtype == np.uint8 and got.u8.tolist() == [[0, 255], [3, 4]]
    assert got.i16.tolist() == [-32768, 200]
    with pytest.raises(SchemaError, match=r"\[0, 255\]"):
        b.add({"u8": [0, 256], "i16": 0})
