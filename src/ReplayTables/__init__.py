"""ReplayTables: fast, memory-lean, checkpointable experience replay for RL.

Front ends: :mod:`ReplayTables.ReplayBuffer` and :mod:`ReplayTables.PER` (the
ReplayTables API). Everything runs on the engine in :mod:`ReplayTables.engine`.
Importing this package imports numpy only; numba loads on the first prioritized
operation.
"""
from __future__ import annotations

from typing import Any

from ReplayTables.errors import (
    CheckpointError,
    ConfigError,
    EmptyBufferError,
    EpisodeError,
    PriorityError,
    ReplayTablesError,
    SchemaError,
    StaleIdError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EmptyBufferError",
    "EpisodeError",
    "PriorityError",
    "ReplayTablesError",
    "SchemaError",
    "StaleIdError",
    "__version__",
    "load",
]


def load(path: Any, structure: Any = None) -> Any:
    """Load a buffer saved with ``buffer.save(path)`` (same class, contents and rng state).

    The directory is treated as untrusted: nothing is unpickled or imported by name,
    only the snapshot's regular files are read, and every value is checked before
    anything is built (see the "Checkpoints" section of the concepts page). Anything
    refused is a :class:`CheckpointError` naming the key, the value and what was
    expected. ``structure`` is your NamedTuple or dataclass for the loaded batches
    (by default the saved one if it is already imported, else a stand-in).
    """
    from ReplayTables.checkpoint import load as _load

    return _load(path, structure)
