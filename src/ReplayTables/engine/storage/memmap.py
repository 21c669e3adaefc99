"""Storage in memory-mapped ``.npy`` files, and the lifecycle of a buffer made of them.

The operating system pages a mapped file in and out, so a buffer can be larger
than RAM, and the file outlives the process. Every file is an ordinary ``.npy``
(``np.load(path, mmap_mode="r")`` reads it).

* :class:`MemmapStorage`: a table's packed rows (see ``packed.py``) in one
  ``uint8[capacity, row_bytes]`` file.
* :class:`ArrayFrames`: a frame store of one ``(capacity, *shape)`` array, in
  memory (``path=None``; ``np.zeros``, pages paid for once written) or in a file.
* :class:`MappedDirectory`: the directory of a memory-mapped buffer: created
  empty, its data files, a ``DIRTY`` marker that is present from the first
  change after a flush until the next flush, and the small state saved by
  :meth:`~MappedDirectory.flush_state` (a checkpoint folder ``state``). A
  directory is reopened only if it was flushed after its last change, so a
  process that reopens it never sees rows that disagree with their state.

Files are opened only if they are regular files whose headers fit the expected
shape and dtype (see :mod:`ReplayTables.engine.files`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.engine.files import open_npy_memmap, real_directory
from ReplayTables.engine.schema import Field
from ReplayTables.engine.state_checks import array
from ReplayTables.engine.storage.packed import PackedStorage, row_layout
from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["ArrayFrames", "MappedDirectory", "MemmapStorage", "create_array", "frame_field", "open_array"]


def create_array(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A new zero-filled ``.npy`` file at ``path``, memory-mapped read-write."""
    return np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype=np.dtype(dtype), shape=shape)


def open_array(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An existing ``.npy`` file memory-mapped read-write; an error if its shape or dtype differ.

    Only a regular file is opened (never a symlink, FIFO or device), and its
    header must agree with its size (see :mod:`ReplayTables.engine.files`).
    """
    p = Path(path)
    return open_npy_memmap(p, tuple(shape), dtype, p.name)


def frame_field(shape: tuple[int, ...], dtype: Any) -> Field:
    """The one field of a frame store: an observation of ``shape`` and ``dtype``."""
    return Field(("frames",), tuple(int(s) for s in shape), np.dtype(dtype))


def _flush(data: np.ndarray) -> None:
    if isinstance(data, np.memmap):
        data.flush()


class MemmapStorage(PackedStorage):
    """Packed rows in the ``.npy`` file ``path``: created by :meth:`allocate`, mapped again by :meth:`reopen`."""

    kind = "memmap"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)

    def _new_rows(self, capacity: int, row_bytes: int) -> np.ndarray:
        return create_array(self.path, (capacity, row_bytes), np.uint8)

    def reopen(self, fields: list[Field], capacity: int) -> None:
        """Map the existing file; an error if it is not a regular file of exactly this layout."""
        row_bytes = row_layout(fields)[1]
        self._adopt(fields, capacity, open_array(self.path, (capacity, row_bytes), np.uint8))

    def flush(self) -> None:
        _flush(self.rows)

    def close(self) -> None:
        """Flush and unmap (the file stays: it is the buffer)."""
        self.flush()
        self._clear()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a pickled copy holds the rows in memory: the file belongs to the original
        super().__setstate__(state)
        self.path = state["path"]


class ArrayFrames:
    """One frame per slot in a ``(capacity, *shape)`` array: in memory, or in the ``.npy`` file ``path``."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.kind = "memory" if self.path is None else "memmap"
        self.fields: list[Field] = []
        self.capacity = 0
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.uint8)
        self.data: np.ndarray = np.zeros(0, dtype=np.uint8)
        self._runs: dict[int, np.ndarray] = {}  # overlapping read-only views of the frames, by run length
        self._allocated = False

    # ------------------------------------------------------------ lifecycle
    @property
    def allocated(self) -> bool:
        return self._allocated

    def _set(self, fields: list[Field], capacity: int, data: np.ndarray) -> None:
        self.fields = list(fields)
        self.capacity = int(capacity)
        self.shape, self.dtype = fields[0].shape, fields[0].dtype
        self.data = data
        self._runs = {}
        self._allocated = True

    @staticmethod
    def _one_field(fields: list[Field]) -> Field:
        if len(fields) != 1:
            raise ConfigError("fields", [f.name for f in fields], "exactly one field (a frame store holds one "
                                                                  "observation per slot)")
        return fields[0]

    def allocate(self, fields: list[Field], capacity: int) -> None:
        f = self._one_field(fields)
        full = (int(capacity), *f.shape)
        data = np.zeros(full, dtype=f.dtype) if self.path is None else create_array(self.path, full, f.dtype)
        self._set(fields, capacity, data)

    def reopen(self, fields: list[Field], capacity: int) -> None:
        f = self._one_field(fields)
        if self.path is None:
            raise ConfigError("storage", self.kind, "frames in a file to reopen (frames in memory do not outlive "
                                                    "their process)")
        self._set(fields, capacity, open_array(self.path, (int(capacity), *f.shape), f.dtype))

    def flush(self) -> None:
        _flush(self.data)

    def close(self) -> None:
        self.flush()
        self.__dict__.update(ArrayFrames(self.path).__dict__)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runs"] = {}  # views are rebuilt; pickling them would copy the frames again
        return state

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    # ------------------------------------------------------------ data
    def write(self, slots: np.ndarray | slice | int, values: np.ndarray) -> None:
        """``values[i]`` goes to ``slots[i]``, or one frame to one int slot (validated by the caller)."""
        self.data[slots] = values

    def gather(self, index: np.ndarray) -> np.ndarray:
        """A copy of the frames at ``index`` (any shape), shape ``index.shape + frame shape``."""
        return np.take(self.data, index, axis=0)

    read = gather  # the episode ring's name for it

    def read_runs(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Copies of ``length`` consecutive frames from each of ``starts`` (``[B, length, *shape]``).

        One contiguous block per start, so a stack plus its successor costs one
        random access instead of ``length``. Requires ``starts + length <= capacity``.
        """
        runs = self._runs.get(length)
        if runs is None:
            data = self.data
            runs = np.lib.stride_tricks.as_strided(data, shape=(self.capacity - length + 1, length, *self.shape),
                                                   strides=(data.strides[0], *data.strides), writeable=False)
            self._runs[length] = runs
        result: np.ndarray = runs[starts]  # fancy indexing keeps the strided view (np.take would copy it whole)
        return result

    # ------------------------------------------------------------ state
    def arrays(self) -> dict[str, np.ndarray]:
        return {"frames": self.data}

    def check_arrays(self, arrays: dict[str, Any], where: str = "frames_") -> np.ndarray:
        """The saved frames, checked against this store's shape and dtype; changes nothing."""
        if set(arrays) != {"frames"}:
            raise CheckpointError(f"{where}frames", sorted(arrays), "exactly the array 'frames' (uncompressed "
                                                                    "frames)")
        frames = array(f"{where}frames", arrays["frames"], self.data.shape, "biufcSUVmM")
        if frames.dtype != self.dtype:
            raise CheckpointError(f"{where}frames", f"dtype {frames.dtype}", f"dtype {self.dtype}")
        return frames

    def restore_arrays(self, checked: np.ndarray) -> None:
        """Copy checked frames in (same shape and dtype: cannot fail)."""
        self.data[...] = checked

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore_arrays(self.check_arrays(arrays))


class MappedDirectory:
    """The directory of a memory-mapped buffer and its lifecycle (see the module docstring).

    :meth:`create` makes a new one (refusing a directory that already holds a
    buffer); :meth:`reopen` checks that an existing one was flushed after its last
    change and reads its saved state. Either way, :meth:`storage` and
    :meth:`frames` name its data files for the buffer to allocate or reopen.
    """

    DIRTY = "DIRTY"
    STATE = "state"

    def __init__(self, root: Path, reopening: bool) -> None:
        self.root = root
        self.reopening = reopening
        self._dirty = False

    @classmethod
    def create(cls, root: str | os.PathLike[str], data_file: str = "frames.npy") -> MappedDirectory:
        """A new buffer directory at ``root`` (made if missing); refused if ``data_file`` is there already."""
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        if (path / data_file).exists():
            raise ConfigError("path", str(path), "a directory without a buffer in it (reopen an existing one with "
                                                 "TrajectoryReplay.open(path))")
        return cls(path, reopening=False)

    @classmethod
    def reopen(cls, root: str | os.PathLike[str]) -> tuple[MappedDirectory, dict[str, Any], dict[str, np.ndarray]]:
        """An existing, flushed buffer directory, and the manifest and arrays of its saved state."""
        from ReplayTables.checkpoint import read_checkpoint

        path = Path(root)
        if not real_directory(path):
            raise CheckpointError("path", str(path), "the directory of a memory-mapped buffer")
        if os.path.lexists(path / cls.DIRTY):
            raise CheckpointError("path", str(path), "a buffer flushed after its last change (it was written to and "
                                                     "not flushed; its state file is older than its data)")
        if not real_directory(path / cls.STATE):
            raise CheckpointError("path", str(path / cls.STATE), "the state folder of a flushed buffer (a directory, "
                                                                 "not a symlink)")
        manifest, arrays = read_checkpoint(path / cls.STATE)
        return cls(path, reopening=True), manifest, arrays

    def storage(self, name: str, fields: list[Field], capacity: int) -> MemmapStorage:
        """The rows file ``name``, created or reopened with this layout."""
        storage = MemmapStorage(self.root / name)
        (storage.reopen if self.reopening else storage.allocate)(fields, capacity)
        return storage

    def frames(self, name: str, shape: tuple[int, ...], dtype: Any, capacity: int) -> ArrayFrames:
        """The frames file ``name``, created or reopened."""
        frames = ArrayFrames(self.root / name)
        (frames.reopen if self.reopening else frames.allocate)([frame_field(shape, dtype)], capacity)
        return frames

    def mark_dirty(self) -> None:
        """Record (once per flush) that the data files are about to change."""
        if not self._dirty:
            (self.root / self.DIRTY).touch()
            self._dirty = True

    def flush_state(self, buffer_class: type, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Save the small state (the data files must already be flushed), then clear the marker.

        The manifest's ``class`` is ``buffer_class``'s registered name.
        """
        from ReplayTables.checkpoint import class_name, write_checkpoint

        write_checkpoint(self.root / self.STATE, {"class": class_name(buffer_class), **manifest}, arrays)
        (self.root / self.DIRTY).unlink(missing_ok=True)
        self._dirty = False
