"""Frame storage in plain arrays: in memory, or in memory-mapped ``.npy`` files.

A *frame store* keeps one fixed-shape observation per slot and answers
``read(index)`` for an index array of any shape (a ``[B, 2, k]`` index of
frame stacks comes back as ``[B, 2, k, *frame_shape]`` in one gather).

:class:`ArrayFrames` is backed either by ``np.zeros`` (pages are only paid for
once written) or by a ``.npy`` file opened with ``np.lib.format.open_memmap``:
the operating system pages it in and out, so a buffer can be larger than RAM,
and the file outlives the process. A memory-mapped file is an ordinary ``.npy``
(``np.load(path, mmap_mode="r")`` reads it). :func:`create_array` and
:func:`open_array` are also used for the step rows of a memory-mapped buffer.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.engine.files import open_npy_memmap
from ReplayTables.engine.state_checks import array
from ReplayTables.errors import CheckpointError

__all__ = ["ArrayFrames", "create_array", "open_array"]


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


class ArrayFrames:
    """One frame per slot in a ``(capacity, *shape)`` array (in memory or memory-mapped)."""

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: Any, path: str | os.PathLike[str] | None = None,
                 create: bool = True) -> None:
        self.capacity = int(capacity)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        full = (self.capacity, *self.shape)
        self.path = None if path is None else Path(path)
        if self.path is None:
            self.kind = "memory"
            self.data: np.ndarray = np.zeros(full, dtype=self.dtype)
        else:
            self.kind = "memmap"
            self.data = create_array(self.path, full, self.dtype) if create else open_array(self.path, full, self.dtype)

        self._runs: dict[int, np.ndarray] = {}  # overlapping read-only views of the frames, by run length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runs"] = {}  # views are rebuilt; pickling them would copy the frames again
        return state

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def write(self, slots: np.ndarray | int, frames: np.ndarray) -> None:
        """``frames[i]`` goes to ``slots[i]``, or one frame to one int slot (validated by the caller)."""
        self.data[slots] = frames

    def read(self, index: np.ndarray) -> np.ndarray:
        """A copy of the frames at ``index`` (any shape), shape ``index.shape + frame shape``."""
        return np.take(self.data, index, axis=0)

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

    def flush(self) -> None:
        if isinstance(self.data, np.memmap):
            self.data.flush()

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

    def restore_arrays(self, frames: np.ndarray) -> None:
        """Copy checked frames in (same shape and dtype: cannot fail)."""
        self.data[...] = frames

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore_arrays(self.check_arrays(arrays))
