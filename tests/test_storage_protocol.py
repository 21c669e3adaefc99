"""The storage protocol (engine/storage/): every backend passes the same conformance tests.

Backends: packed rows in memory, packed rows in a memory-mapped file, frames in
memory, frames in a file, Zstandard-compressed frames. Each is allocated, written,
gathered, checkpointed through its arrays, pickled, flushed, reopened (where its
memory outlives the process) and closed through the protocol's calls only.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ReplayTables.engine.schema import Field
from ReplayTables.engine.storage import (
    ArrayFrames,
    CompressedFrames,
    FrameStore,
    MemmapStorage,
    PackedStorage,
    RowStorage,
    Storage,
    frame_field,
)
from ReplayTables.engine.table import Table
from ReplayTables.errors import CheckpointError, ConfigError, ReplayTablesError

pytest.importorskip("zstandard")  # the compression extra is a test dependency (CI installs it)

CAPACITY = 12
ROW_FIELDS = [Field(("x",), (3,), np.dtype(np.float32)), Field(("a",), (), np.dtype(np.int64)),
              Field(("done",), (), np.dtype(np.bool_))]
FRAME_FIELDS = [frame_field((4, 5), np.uint8)]


def rows_values(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.normal(size=(n, 3)).astype(np.float32), rng.integers(-10**12, 10**12, n),
            rng.random(n) < 0.5]


def frame_values(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 4, 5), dtype=np.uint8)


class Backend:
    """How to build one backend, its layout, and values for it."""

    def __init__(self, name: str, make: Callable[[Path], Any], fields: list[Field], values: Callable[..., Any],
                 persistent: bool) -> None:
        self.name, self.make, self.fields, self.values, self.persistent = name, make, fields, values, persistent

    def __repr__(self) -> str:
        return self.name


BACKENDS = [
    Backend("packed", lambda d: PackedStorage(), ROW_FIELDS, rows_values, False),
    Backend("memmap", lambda d: MemmapStorage(d / "rows.npy"), ROW_FIELDS, rows_values, True),
    Backend("frames-memory", lambda d: ArrayFrames(), FRAME_FIELDS, frame_values, False),
    Backend("frames-memmap", lambda d: ArrayFrames(d / "frames.npy"), FRAME_FIELDS, frame_values, True),
    Backend("zstd", lambda d: CompressedFrames(level=3), FRAME_FIELDS, frame_values, False),
]


def as_list(values: Any) -> list[np.ndarray]:
    return list(values) if isinstance(values, list) else [values]


def assert_same(a: Any, b: Any) -> None:
    for x, y in zip(as_list(a), as_list(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(params=BACKENDS, ids=repr)
def backend(request: pytest.FixtureRequest) -> Backend:
    result: Backend = request.param
    return result


def allocated(backend: Backend, tmp_path: Path) -> Any:
    storage = backend.make(tmp_path)
    storage.allocate(backend.fields, CAPACITY)
    return storage


def test_every_backend_is_a_storage(backend: Backend, tmp_path: Path) -> None:
    storage = backend.make(tmp_path)
    assert isinstance(storage, Storage)
    kind = RowStorage if backend.fields is ROW_FIELDS else FrameStore
    assert isinstance(storage, kind)
    assert not storage.allocated and storage.capacity == 0


def test_allocate_gives_zeroed_records_of_the_layout(backend: Backend, tmp_path: Path) -> None:
    storage = allocated(backend, tmp_path)
    assert storage.allocated and storage.capacity == CAPACITY and storage.fields == backend.fields
    got = as_list(storage.gather(np.arange(CAPACITY)))
    for f, arr in zip(backend.fields, got, strict=True):
        assert arr.shape == (CAPACITY, *f.shape) and arr.dtype == f.dtype
        assert not arr.any()
    assert storage.nbytes > 0


def test_write_then_gather_returns_copies_of_what_was_written(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    storage = allocated(backend, tmp_path)
    slots = np.array([3, 0, 11, 7])
    values = backend.values(rng, 4)
    storage.write(slots, values)
    assert_same(storage.gather(slots), values)
    order = np.array([11, 3, 3])
    assert_same(storage.gather(order), [v[[2, 0, 0]] for v in as_list(values)] if isinstance(values, list)
                else values[[2, 0, 0]])
    # a gather is a copy: changing it changes nothing stored
    for arr in as_list(storage.gather(slots)):
        arr[...] = 0
    assert_same(storage.gather(slots), values)
    # a slice of slots writes contiguous records
    more = backend.values(rng, 3)
    storage.write(slice(4, 7), more)
    assert_same(storage.gather(np.arange(4, 7)), more)


def test_checkpoint_arrays_round_trip_into_a_fresh_storage(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    source = allocated(backend, tmp_path)
    source.write(np.arange(CAPACITY), backend.values(rng, CAPACITY))
    saved = {k: np.array(v) for k, v in source.arrays().items()}
    (tmp_path / "b").mkdir()
    target = allocated(backend, tmp_path / "b")
    target.restore_arrays(target.check_arrays(saved))
    assert_same(target.gather(np.arange(CAPACITY)), source.gather(np.arange(CAPACITY)))


def test_bad_checkpoint_arrays_are_refused_and_change_nothing(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    storage = allocated(backend, tmp_path)
    storage.write(np.arange(CAPACITY), backend.values(rng, CAPACITY))
    before = [a.copy() for a in as_list(storage.gather(np.arange(CAPACITY)))]
    saved = {k: np.array(v) for k, v in storage.arrays().items()}
    name = sorted(saved)[0]
    with pytest.raises(CheckpointError) as info:
        storage.check_arrays({**saved, "extra": np.zeros(1)})
    assert isinstance(info.value, ReplayTablesError)
    with pytest.raises(CheckpointError):
        storage.check_arrays({**saved, name: saved[name][:1] if name != "zstd_data" else saved[name][:-1]})
    assert_same(storage.gather(np.arange(CAPACITY)), before)


def test_pickle_keeps_records_and_stays_writable(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    storage = allocated(backend, tmp_path)
    values = backend.values(rng, CAPACITY)
    storage.write(np.arange(CAPACITY), values)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.allocated and copy.capacity == CAPACITY
    assert_same(copy.gather(np.arange(CAPACITY)), values)
    fresh = backend.values(rng, 1)
    copy.write(np.array([5]), fresh)
    assert_same(copy.gather(np.array([5])), fresh)
    assert_same(storage.gather(np.arange(CAPACITY)), values)  # the copy is independent


def test_flush_close_reopen(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    storage = allocated(backend, tmp_path)
    values = backend.values(rng, CAPACITY)
    storage.write(np.arange(CAPACITY), values)
    storage.flush()
    kept = [a.copy() for a in as_list(storage.gather(np.arange(CAPACITY)))]
    storage.close()
    assert not storage.allocated
    again = backend.make(tmp_path)
    if backend.persistent:
        again.reopen(backend.fields, CAPACITY)
        assert_same(again.gather(np.arange(CAPACITY)), kept)
    else:
        with pytest.raises(ConfigError) as info:
            again.reopen(backend.fields, CAPACITY)
        assert "reopen" in str(info.value)
        assert not again.allocated


def test_reopen_refuses_a_file_of_another_layout(tmp_path: Path) -> None:
    rows = MemmapStorage(tmp_path / "rows.npy")
    rows.allocate(ROW_FIELDS, CAPACITY)
    rows.close()
    with pytest.raises(CheckpointError):
        MemmapStorage(tmp_path / "rows.npy").reopen(ROW_FIELDS, CAPACITY + 1)
    with pytest.raises(CheckpointError):
        MemmapStorage(tmp_path / "missing.npy").reopen(ROW_FIELDS, CAPACITY)


def test_frame_stores_read_runs_and_any_index_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for make in (lambda: ArrayFrames(), lambda: ArrayFrames(tmp_path / "f.npy"), lambda: CompressedFrames()):
        store = make()
        store.allocate(FRAME_FIELDS, CAPACITY)
        frames = frame_values(rng, CAPACITY)
        store.write(np.arange(CAPACITY), frames)
        np.testing.assert_array_equal(store.read_runs(np.array([0, 5, 9]), 3),
                                      frames[np.array([0, 5, 9])[:, None] + np.arange(3)])
        index = np.array([[[1, 2], [3, 4]], [[0, 0], [11, 10]]])
        np.testing.assert_array_equal(store.gather(index), frames[index])


def test_a_frame_store_takes_exactly_one_field() -> None:
    for store in (ArrayFrames(), CompressedFrames()):
        with pytest.raises(ConfigError):
            store.allocate(ROW_FIELDS, CAPACITY)
        assert not store.allocated


# ---------------------------------------------------------------- a table is given its storage
def test_a_table_allocates_the_storage_it_is_given_in_a_file(tmp_path: Path) -> None:
    structure = {"x": ((3,), np.float32), "a": ((), np.int64), "done": ((), np.bool_)}
    from ReplayTables.engine.schema import FieldSpec

    spec = {k: FieldSpec(*v) for k, v in structure.items()}
    storage = MemmapStorage(tmp_path / "rows.npy")
    table = Table(CAPACITY, spec, storage=storage, rng=0)
    assert table.storage is storage and storage.allocated
    ids = table.add_batch({"x": np.ones((5, 3), np.float32), "a": np.arange(5), "done": np.zeros(5, bool)})
    table.add({"x": np.full(3, 2.0, np.float32), "a": 99, "done": True})
    storage.flush()
    on_disk = np.load(tmp_path / "rows.npy", mmap_mode="r")
    assert on_disk.shape == (CAPACITY, storage.row_bytes)
    reread = MemmapStorage(tmp_path / "rows.npy")
    reread.reopen(storage.fields, CAPACITY)
    np.testing.assert_array_equal(reread.gather(np.arange(6))[1], [0, 1, 2, 3, 4, 99])
    np.testing.assert_array_equal(table.get(ids).fields[1], np.arange(5))


def test_a_table_refuses_an_allocated_storage_of_other_fields() -> None:
    storage = PackedStorage(ROW_FIELDS[:1], CAPACITY)
    from ReplayTables.engine.schema import FieldSpec

    with pytest.raises(ConfigError) as info:
        Table(CAPACITY, {"a": FieldSpec((), np.int64)}, storage=storage)
    assert "storage" in str(info.value)


def test_a_table_allocates_its_default_storage_on_the_first_add() -> None:
    table = Table(CAPACITY, None, rng=0)
    assert table.storage is None
    table.add({"v": 1.5})
    assert isinstance(table.storage, PackedStorage) and table.storage.allocated
