"""ReplayTables: fast, memory-lean, checkpointable experience replay for RL.

Front ends: :mod:`ReplayTables.ReplayBuffer` and :mod:`ReplayTables.PER` (the
ReplayTables API). Everything runs on the engine in :mod:`ReplayTables.engine`.
Importing this package imports numpy only; numba loads on the first prioritized
operation.
"""
from __future__ import annotations

from typing import Any

from ReplayTables.errors import (
    BufferClosedError,
    CheckpointError,
    ConfigError,
    EmptyBufferError,
    EpisodeError,
    PriorityError,
    RateLimitTimeout,
    ReplayTablesError,
    SchemaError,
    StaleIdError,
)

__version__ = "0.1.0"

__all__ = [
    "BufferClosedError",
    "CheckpointError",
    "ConfigError",
    "EmptyBufferError",
    "EpisodeError",
    "PriorityError",
    "RateLimitTimeout",
    "ReplayTablesError",
    "SchemaError",
    "StaleIdError",
    "__version__",
    "load",
]


def load(path: Any, structure: Any = None) -> Any:
    """Load a buffer saved with ``buffer.save(path)`` (same class, contents and rng state)."""
    from ReplayTables.checkpoint import load as _load

    return _load(path, structure)
