"""The storage protocol: slot-addressed memory with a lifecycle.

A *storage* holds ``capacity`` records of a fixed layout (a list of
:class:`~ReplayTables.engine.schema.Field`) addressed by slot. Where the memory
comes from (the heap, a memory-mapped file, compressed blobs, later shared
memory) and how records are laid out in it (packed rows, one array per field)
is the storage's own choice; the rest of the engine only calls these methods:

* lifecycle: a storage is built with its options only (``PackedStorage()``,
  ``MemmapStorage(path)``, ``ZstdFrames(level=3)``) and then given its layout
  by :meth:`~Storage.allocate` (new, zero-filled memory) or
  :meth:`~Storage.reopen` (memory that already exists, such as a file written
  by an earlier process); :meth:`~Storage.flush` makes writes durable where
  that means anything and :meth:`~Storage.close` lets the memory go.
* data: :meth:`~Storage.write` puts values at slots and
  :meth:`~Storage.gather` copies them out;
* size and state: :attr:`~Storage.nbytes`, and :meth:`~Storage.arrays`,
  :meth:`~Storage.check_arrays`, :meth:`~Storage.restore_arrays` for
  checkpoints (check everything first, then restore without failing).

A table is *given* its storage (``Table(..., storage=MemmapStorage(path))``)
and allocates it when its fields are known; a step-stream buffer gives one to
its table for the step rows and keeps another for the observations (a *frame
store*: a storage of one field that also reads runs of consecutive slots).
The values a storage takes and gives are ``V``: a list of per-field arrays for
row storages, one array for frame stores.
"""
from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from ReplayTables.engine.schema import Field

__all__ = ["FrameStore", "RowStorage", "Storage"]

V = TypeVar("V")
Slots = np.ndarray | slice | int


@runtime_checkable
class Storage(Protocol[V]):
    """Slot-addressed records of a fixed layout (see the module docstring)."""

    #: the backend's name in checkpoints and ``stats()`` (``"packed"``, ``"memmap"``, ``"zstd"``)
    kind: str

    @property
    def allocated(self) -> bool:
        """Whether :meth:`allocate` or :meth:`reopen` has given this storage its memory."""

    @property
    def capacity(self) -> int:
        """Records held (0 before allocation)."""

    @property
    def fields(self) -> list[Field]:
        """The layout of one record (empty before allocation)."""

    def allocate(self, fields: list[Field], capacity: int) -> None:
        """Create zero-filled memory for ``capacity`` records of ``fields``."""

    def reopen(self, fields: list[Field], capacity: int) -> None:
        """Map memory that already holds such records (a :class:`ConfigError` if there is none to reopen)."""

    def flush(self) -> None:
        """Make the written records durable (a no-op for memory that is not backed by a file)."""

    def close(self) -> None:
        """Release the memory; a closed storage is no longer allocated."""

    @property
    def nbytes(self) -> int:
        """Bytes of record data held."""

    def write(self, slots: Slots, values: V) -> None:
        """Put ``values`` (already checked and converted by the caller) at ``slots``."""

    def gather(self, index: np.ndarray) -> V:
        """Copies of the records at ``index``."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The records as named arrays for a checkpoint."""

    def check_arrays(self, arrays: dict[str, Any], where: str = ...) -> Any:
        """Saved :meth:`arrays` checked against this storage's layout; changes nothing."""

    def restore_arrays(self, checked: Any) -> None:
        """Put what :meth:`check_arrays` returned in place (cannot fail)."""


@runtime_checkable
class RowStorage(Storage[list[np.ndarray]], Protocol):
    """A table's storage: one array per field in, one array per field out, and a
    writable ``(capacity, *shape)`` view per field for the generated add lanes.

    Its checkpoint format is packed rows (:meth:`state_dict`), wherever its memory is.
    """

    columns: list[np.ndarray]
    row_bytes: int

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "packed", "row_bytes", "offsets", "rows"}``: the rows as a checkpoint saves them."""


@runtime_checkable
class FrameStore(Storage[np.ndarray], Protocol):
    """A storage of one field (observations) that also reads runs of consecutive slots.

    ``gather(index)`` takes an index of any shape and returns
    ``index.shape + frame shape`` (a ``[B, 2, k]`` index of frame stacks in one call).
    """

    def read_runs(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``length`` consecutive frames from each of ``starts`` (``[B, length, *shape]``)."""
