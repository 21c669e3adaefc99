"""Opening the files of a checkpoint or a memory-mapped buffer without trusting them.

A directory handed to ``load`` (or ``TrajectoryReplay.open``) may have been made
by someone else. Its files are opened only if they are regular files: a symlink
(which could point anywhere), a FIFO (whose open or read blocks for ever), a
device or a directory is refused before it is opened. The open itself neither
follows a symlink nor blocks on a FIFO swapped in after the check, and what was
opened is checked again with ``fstat``. A ``.npy`` header is read and compared
with the file's size before any data is read or mapped, so a header that claims
terabytes in a small file is refused instead of allocated.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from ReplayTables.engine.state_checks import nbytes
from ReplayTables.errors import CheckpointError

__all__ = ["open_npy_memmap", "open_regular", "read_npy_header", "read_small", "real_directory"]

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)
MAX_NPY_HEADER = 10_000


def open_regular(path: Path, field: str, what: str, writable: bool = False) -> tuple[io.BufferedIOBase, int]:
    """``path`` opened (read-only, or read-write), and its size, if it is a regular file.

    ``lstat`` first (a symlink, FIFO, device or directory is refused without being
    opened), then an open that neither follows a symlink nor blocks on a FIFO
    swapped in meanwhile, then ``fstat`` of what was opened: it must be the same
    regular file.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(field, str(path), f"{what} (the file is missing)") from None
    except OSError as exc:
        raise CheckpointError(field, str(path), what, str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(field, str(path), f"{what}: a regular file (not a symlink, FIFO, device or "
                                                "directory)")
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | _NO_FOLLOW)
    except OSError as exc:
        raise CheckpointError(field, str(path), f"{what}: a regular file that can be opened", str(exc)) from None
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise CheckpointError(field, str(path), f"{what}: a regular file that is not replaced while it is opened")
    return cast(io.BufferedIOBase, os.fdopen(fd, "r+b" if writable else "rb")), int(fst.st_size)


def read_small(path: Path, field: str, what: str, limit: int) -> bytes:
    """The bytes of a small regular file (at most ``limit``)."""
    fh, size = open_regular(path, field, what)
    with fh:
        if size > limit:
            raise CheckpointError(field, f"{size} bytes", f"{what} of at most {limit} bytes")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(field, f"more than {limit} bytes", f"{what} of at most {limit} bytes")
    return data


def real_directory(path: Path) -> bool:
    """Is ``path`` a directory itself (not a symlink to one)?"""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_npy_header(fh: BinaryIO | io.BufferedIOBase, size: int, field: str,
                    path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of an open ``.npy`` file whose size is ``size``.

    The header must be a plain one (format 1.0 or 2.0, at most ``MAX_NPY_HEADER``
    bytes, no object dtype) and the file exactly as long as the header says.
    Leaves ``fh`` at the start of the data.
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise CheckpointError(field, str(path), "a complete .npy file", str(exc)[:200]) from None
    if dtype.hasobject:
        raise CheckpointError(field, str(path), "a numeric array (object arrays need pickle)")
    shape = tuple(int(s) for s in shape)
    expected = fh.tell() + nbytes(shape, dtype)
    if size != expected:
        raise CheckpointError(field, f"a file of {size} bytes", f"a complete .npy file of {expected} bytes (its "
                                                               f"header says shape {shape} dtype {dtype.str})")
    return shape, dtype, bool(fortran)


def open_npy_memmap(path: Path, shape: tuple[int, ...], dtype: Any, field: str) -> np.ndarray:
    """An existing ``.npy`` file of exactly ``shape`` and ``dtype``, memory-mapped read-write.

    Checked like every file of a checkpoint: a regular file (no symlink, FIFO or
    device), a header that agrees with the file's size, and the expected shape
    and dtype, before anything is mapped.
    """
    fh, size = open_regular(path, field, "an existing memory-mapped .npy file", writable=True)
    with fh:
        got_shape, got_dtype, fortran = read_npy_header(fh, size, field, path)
        if got_shape != tuple(shape) or got_dtype != np.dtype(dtype):
            raise CheckpointError(field, f"shape {got_shape} dtype {got_dtype}",
                                  f"shape {tuple(shape)} dtype {np.dtype(dtype)}")
        offset = fh.tell()
        if nbytes(got_shape, got_dtype) == 0:  # nothing to map (mmap refuses a length of 0)
            return np.zeros(got_shape, dtype=got_dtype)
        return np.memmap(fh, dtype=got_dtype, mode="r+", offset=offset, shape=got_shape,
                         order="F" if fortran else "C")
