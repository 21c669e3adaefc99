"""Compressed frames (a frame store, see ``protocol.py``): each frame compressed on write with Zstandard.

Pixel observations compress well (Atari frames typically 5-20x), so a buffer
that would not fit in RAM uncompressed often does compressed. The codec is the
``zstandard`` package (the ``compression`` extra: ``pip install
ReplayTables[compression]``), imported only when a compressed store is built.

Trade-off, stated plainly: every frame is a separate compressed blob, so
``write`` and ``read`` call the codec once per frame (a Python-level loop over
the frames of a batch, a few microseconds each). Use it when memory, not
sampling speed, is the constraint; otherwise use plain or memory-mapped arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.engine.schema import Field
from ReplayTables.engine.state_checks import array, int_array
from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["CompressedFrames", "zstd_module"]


def zstd_module() -> Any:
    """The ``zstandard`` module, or a :class:`ConfigError` saying which extra installs it."""
    try:
        import zstandard
    except ImportError:
        raise ConfigError("compression", "zstd", "the zstandard package: pip install 'ReplayTables[compression]'") \
            from None
    return zstandard


class CompressedFrames:
    """One Zstandard-compressed frame per slot (``level`` 1-22; 3 is the library default)."""

    kind = "zstd"

    def __init__(self, level: int = 3) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise ConfigError("level", level, "an integer compression level from 1 to 22")
        self.level = level
        zstd = zstd_module()
        self._compressor = zstd.ZstdCompressor(level=level)
        self._decompressor = zstd.ZstdDecompressor()
        self._clear()

    def _clear(self) -> None:
        self.fields: list[Field] = []
        self.capacity = 0
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.uint8)
        self.frame_bytes = 0
        self.blobs: list[bytes] = []

    # ------------------------------------------------------------ lifecycle
    @property
    def allocated(self) -> bool:
        return bool(self.fields)

    def allocate(self, fields: list[Field], capacity: int) -> None:
        """``capacity`` slots, each holding the compressed blob of an all-zero frame."""
        if len(fields) != 1:
            raise ConfigError("fields", [f.name for f in fields], "exactly one field (a frame store holds one "
                                                                  "observation per slot)")
        self.fields = list(fields)
        self.capacity = int(capacity)
        self.shape, self.dtype = fields[0].shape, fields[0].dtype
        self.frame_bytes = fields[0].nbytes
        empty = self._compressor.compress(bytes(self.frame_bytes))
        self.blobs = [empty] * self.capacity

    def reopen(self, fields: list[Field], capacity: int) -> None:
        raise ConfigError("storage", self.kind, "a storage with memory to reopen, such as memory-mapped files "
                                                "(compressed frames live in memory)")

    def close(self) -> None:
        self._clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_compressor"], state["_decompressor"]  # codec contexts are rebuilt, not pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        zstd = zstd_module()
        self._compressor = zstd.ZstdCompressor(level=self.level)
        self._decompressor = zstd.ZstdDecompressor()

    @property
    def nbytes(self) -> int:
        """Bytes of compressed data held (plus nothing else per slot but a list entry)."""
        return sum(len(b) for b in self.blobs)

    def write(self, slots: np.ndarray | slice | int, values: np.ndarray) -> None:
        """Compress ``values[i]`` into ``slots[i]`` (one codec call per frame)."""
        frames = values
        if isinstance(slots, slice):
            slots = np.arange(self.capacity)[slots]
        if isinstance(slots, (int, np.integer)):
            slots, frames = np.array([slots]), np.asarray(frames)[None]
        frames = np.ascontiguousarray(frames, dtype=self.dtype)
        compress = self._compressor.compress
        blobs = self.blobs
        for slot, frame in zip(np.asarray(slots).reshape(-1).tolist(), frames.reshape(-1, *self.shape)):
            blobs[slot] = compress(frame.tobytes())

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Decompressed copies of the frames at ``index`` (any shape)."""
        index = np.asarray(index)
        out = np.empty((*index.shape, *self.shape), dtype=self.dtype)
        flat = out.reshape(-1, self.frame_bytes // self.dtype.itemsize).view(np.uint8) if out.size else out
        decompress = self._decompressor.decompress
        blobs = self.blobs
        for row, slot in enumerate(index.reshape(-1).tolist()):
            flat[row] = np.frombuffer(decompress(blobs[slot]), dtype=np.uint8)
        return out

    read = gather  # the episode ring's name for it

    def read_runs(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``length`` consecutive frames from each of ``starts`` (decompressed one by one)."""
        return self.gather(np.asarray(starts)[:, None] + np.arange(length))

    def flush(self) -> None:
        """Nothing to do: the blobs live in memory."""

    # ------------------------------------------------------------ state
    def arrays(self) -> dict[str, np.ndarray]:
        lengths = np.fromiter((len(b) for b in self.blobs), dtype=np.int64, count=self.capacity)
        data = np.frombuffer(b"".join(self.blobs), dtype=np.uint8)
        return {"zstd_lengths": lengths, "zstd_data": data}

    def check_arrays(self, arrays: dict[str, Any], where: str = "frames_") -> list[bytes]:
        """The saved blobs, checked: one length per slot adding up to the data, and every blob a
        Zstandard frame that says it holds exactly one frame's bytes; changes nothing."""
        if set(arrays) != {"zstd_lengths", "zstd_data"}:
            raise CheckpointError(f"{where}zstd_lengths", sorted(arrays), "exactly the arrays 'zstd_lengths' and "
                                                                          "'zstd_data' (compressed frames)")
        data = array(f"{where}zstd_data", arrays["zstd_data"], None, "u", ndim=1)
        if data.dtype != np.uint8:
            raise CheckpointError(f"{where}zstd_data", f"dtype {data.dtype}", "a 1-d uint8 array")
        lengths = int_array(f"{where}zstd_lengths", arrays["zstd_lengths"], (self.capacity,), 1, data.size)
        if int(lengths.sum()) != data.size:
            raise CheckpointError(f"{where}zstd_lengths", f"lengths summing to {int(lengths.sum())}",
                                  f"{self.capacity} lengths summing to {data.size} (the bytes of zstd_data)")
        ends = np.cumsum(lengths)
        raw = data.tobytes()
        blobs = [raw[e - n:e] for e, n in zip(ends.tolist(), lengths.tolist())]
        zstd = zstd_module()
        for slot, blob in enumerate(blobs):
            try:
                size = zstd.frame_content_size(blob)
            except zstd.ZstdError:
                size = None
            if size != self.frame_bytes:
                raise CheckpointError(f"{where}zstd_data", f"the blob of slot {slot} (content size {size})",
                                      f"Zstandard frames of {self.frame_bytes} bytes each (one observation)")
        return blobs

    def restore_arrays(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore_arrays(self.check_arrays(arrays))
