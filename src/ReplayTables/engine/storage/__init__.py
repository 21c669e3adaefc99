"""Storage backends: slot-addressed memory behind one protocol (``protocol.py``).

==============  =============================================================
``packed.py``   :class:`PackedStorage`, a table's rows packed in memory (the default)
``memmap.py``   :class:`MemmapStorage` (rows in a ``.npy`` file), :class:`ArrayFrames`
                (observations in memory or a file) and :class:`MappedDirectory`
                (a memory-mapped buffer's files, ``DIRTY`` marker and saved state)
``zstd.py``     :class:`CompressedFrames`, observations compressed one by one
==============  =============================================================
"""
from ReplayTables.engine.storage.memmap import (
    ArrayFrames,
    MappedDirectory,
    MemmapStorage,
    create_array,
    frame_field,
    open_array,
)
from ReplayTables.engine.storage.packed import PackedStorage, row_layout
from ReplayTables.engine.storage.protocol import FrameStore, RowStorage, Storage
from ReplayTables.engine.storage.zstd import CompressedFrames, zstd_module

__all__ = ["ArrayFrames", "CompressedFrames", "FrameStore", "MappedDirectory", "MemmapStorage", "PackedStorage",
           "RowStorage", "Storage", "create_array", "frame_field", "open_array", "row_layout", "zstd_module"]
