"""Storage: preallocated numpy memory addressed by slot.

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
from ReplayTables.errors import CheckpointError

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
    """

    kind = "packed"

    def __init__(self, fields: list[Field], capacity: int, rows: np.ndarray | None = None) -> None:
        self.fields = fields
        self.capacity = capacity
        self.offsets, self.row_bytes = row_layout(fields)
        if rows is None:
            rows = np.zeros((capacity, self.row_bytes), dtype=np.uint8)
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
        records = np.take(self._records, slots)  # one contiguous row copy per slot
        return [records[name] for name in self._names]

    def write_batch(self, slots: np.ndarray | slice, arrays: list[np.ndarray]) -> None:
        for col, arr in zip(self.columns, arrays):
            col[slots] = arr

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "row_bytes": self.row_bytes, "offsets": list(self.offsets), "rows": self.rows}

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

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "row_bytes": self.row_bytes, "offsets": self.offsets}


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))
