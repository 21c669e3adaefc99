"""Packed rows in memory: the default storage of a table (see ``protocol.py``).

:class:`PackedStorage` keeps every field of a slot in one row of a single
``uint8[capacity, row_bytes]`` array. A random sample then costs about one cache
(and TLB) miss per row instead of one per field per row, which is what makes
uniform sampling of small transitions fast: the gather is a single numpy call
over contiguous rows, and each field of the result is a strided view into it.

Fields are aligned to their item size inside the row and the row is padded to
the largest alignment, so every field view has strides that are a multiple of
its item size (``torch.from_numpy`` and DLPack accept them).

The memory is ``np.zeros``: the operating system hands out pages as they are
first written, so a large, mostly empty buffer costs little resident memory.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ReplayTables.engine.schema import Field
from ReplayTables.engine.state_checks import array, mapping, string
from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["PackedStorage", "row_layout"]


def row_layout(fields: list[Field]) -> tuple[list[int], int]:
    """Byte offset of each field in a row, and the padded row size."""
    offsets = []
    pos = 0
    max_align = 1
    for f in fields:
        align = min(f.dtype.alignment, 8) or 1
        max_align = max(max_align, align)
        pos = (pos + align - 1) // align * align
        offsets.append(pos)
        pos += math.prod(f.shape) * f.dtype.itemsize  # Python ints: a saved shape may be absurd
    row = (pos + max_align - 1) // max_align * max_align
    return offsets, max(row, 1)


class PackedStorage:
    """All fields of a slot in one row of one array.

    ``columns[i]`` is a writable ``(capacity, *shape)`` view of field ``i``; writes go
    through these views. ``gather(slots)`` copies the rows of ``slots`` in one call and
    returns per-field views of the copy.

    ``PackedStorage()`` is an unallocated storage for a table to allocate when its
    fields are known; ``PackedStorage(fields, capacity)`` allocates at once, and
    ``rows=`` adopts existing rows (which must have the layout's shape).
    """

    kind = "packed"

    def __init__(self, fields: list[Field] | None = None, capacity: int = 0, rows: np.ndarray | None = None) -> None:
        self._clear()
        if fields is not None:
            self._adopt(fields, capacity, rows)

    def _clear(self) -> None:
        self.fields: list[Field] = []
        self.capacity = 0
        self.offsets: list[int] = []
        self.row_bytes = 0
        self.rows = np.zeros((0, 1), dtype=np.uint8)
        self.columns: list[np.ndarray] = []
        self._names: list[str] = []
        self._records: np.ndarray | None = None
        self._allocated = False

    # ------------------------------------------------------------ lifecycle
    @property
    def allocated(self) -> bool:
        return self._allocated

    def allocate(self, fields: list[Field], capacity: int) -> None:
        """Zero-filled rows (``np.zeros``: pages are paid for when first written)."""
        self._adopt(fields, capacity, None)

    def reopen(self, fields: list[Field], capacity: int) -> None:
        raise ConfigError("storage", self.kind, "a storage with memory to reopen, such as MemmapStorage (rows in "
                                                "memory do not outlive their process)")

    def flush(self) -> None:
        """Nothing to do: the rows are not backed by a file."""

    def close(self) -> None:
        """Drop the rows (views handed out by :meth:`gather` are copies and stay valid)."""
        self._clear()

    def _new_rows(self, capacity: int, row_bytes: int) -> np.ndarray:
        """Memory for the rows; a subclass takes it from elsewhere (a file, shared memory)."""
        return np.zeros((capacity, row_bytes), dtype=np.uint8)

    def _adopt(self, fields: list[Field], capacity: int, rows: np.ndarray | None) -> None:
        offsets, row_bytes = row_layout(fields)
        if rows is None:
            rows = self._new_rows(capacity, row_bytes)
        elif rows.shape != (capacity, row_bytes) or rows.dtype != np.uint8:
            raise ConfigError("rows", f"{rows.dtype} {list(rows.shape)}", f"uint8 [{capacity}, {row_bytes}] (the "
                                                                          "layout of the fields)")
        self.fields = list(fields)
        self.capacity = capacity
        self.offsets, self.row_bytes = offsets, row_bytes
        self.rows = rows
        self.columns = [self._view(rows, f, off) for f, off in zip(fields, self.offsets)]
        # The same rows seen as one record per slot: np.take of records is a plain
        # row copy, and each field of the result is a view made by numpy's own
        # (fast) structured-field access.
        self._names = [f"f{i}" for i in range(len(fields))]
        self.record_dtype = np.dtype({"names": self._names,
                                      "formats": [(f.dtype, f.shape) if f.shape else f.dtype for f in fields],
                                      "offsets": self.offsets, "itemsize": self.row_bytes})
        self._records = rows.view(self.record_dtype).reshape(-1) if fields else None
        self._allocated = True

    @staticmethod
    def _view(rows: np.ndarray, f: Field, offset: int) -> np.ndarray:
        n = rows.shape[0]
        view: np.ndarray = np.ndarray(shape=(n, *f.shape), dtype=f.dtype, buffer=rows, offset=offset,
                                      strides=(rows.strides[0], *_c_strides(f.shape, f.dtype.itemsize)))
        return view

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes)

    def gather(self, slots: np.ndarray) -> list[np.ndarray]:
        """Copies of the fields at ``slots``, each ``(len(slots), *shape)``."""
        if self._records is None:
            return []
        records = self._records.take(slots)  # one contiguous row copy per slot (the method: no Python wrapper)
        return [records[name] for name in self._names]

    def write(self, slots: np.ndarray | slice | int, values: list[np.ndarray]) -> None:
        """Field ``i`` of ``values`` goes to the slots' rows (``values`` checked by the caller)."""
        for col, arr in zip(self.columns, values):
            col[slots] = arr


    def __getstate__(self) -> dict[str, Any]:
        return {"fields": self.fields, "capacity": self.capacity, "rows": self.rows, "allocated": self._allocated}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # the field views must share memory with the unpickled rows: rebuilt, not pickled
        self._clear()
        if state["allocated"]:
            self._adopt(state["fields"], state["capacity"], state["rows"])

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        # the format of saved rows, wherever this storage keeps them (a file, shared memory)
        return {"kind": PackedStorage.kind, "row_bytes": self.row_bytes, "offsets": list(self.offsets),
                "rows": self.rows}

    @staticmethod
    def check_state(state: Any, fields: list[Field], capacity: int, where: str = "storage") -> np.ndarray:
        """The saved rows, checked against the layout of ``fields`` and the capacity; changes nothing."""
        m = mapping(where, state, ("kind", "row_bytes", "offsets", "rows"))
        string(f"{where}.kind", m["kind"], (PackedStorage.kind,))
        offsets, row_bytes = row_layout(fields)
        if m["row_bytes"] != row_bytes or m["offsets"] != offsets:
            raise CheckpointError(f"{where}.offsets", {"row_bytes": m["row_bytes"], "offsets": m["offsets"]},
                                  f"row_bytes {row_bytes} and offsets {offsets} (the layout of the schema's fields)")
        rows = array(f"{where}.rows", m["rows"], (capacity, row_bytes), "u")
        if rows.dtype != np.uint8:
            raise CheckpointError(f"{where}.rows", f"dtype {rows.dtype}",
                                  f"a uint8 array of shape {(capacity, row_bytes)}")
        return rows

    @staticmethod
    def from_rows(fields: list[Field], capacity: int, rows: np.ndarray) -> PackedStorage:
        """A storage holding a copy of checked ``rows`` (see :meth:`check_state`)."""
        return PackedStorage(fields, capacity, rows=np.array(rows, dtype=np.uint8, order="C", copy=True))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy saved rows in (same fields and capacity; the layout is checked first)."""
        self.rows[...] = self.check_state(state, self.fields, self.capacity)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"rows": self.rows}

    def check_arrays(self, arrays: dict[str, Any], where: str = "storage") -> np.ndarray:
        """Saved ``{"rows": ...}`` checked against this storage's layout; changes nothing."""
        if set(arrays) != {"rows"}:
            raise CheckpointError(f"{where}.rows", sorted(arrays), "exactly the array 'rows' (packed rows)")
        return self.check_state({"kind": PackedStorage.kind, "row_bytes": self.row_bytes, "offsets": list(self.offsets),
                                 "rows": arrays["rows"]}, self.fields, self.capacity, where)

    def restore_arrays(self, checked: np.ndarray) -> None:
        """Copy checked rows in (same shape: cannot fail)."""
        self.rows[...] = checked

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "row_bytes": self.row_bytes, "offsets": self.offsets}


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))
