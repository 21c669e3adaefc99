"""What every buffer built on one engine table shares: saving, loading, pickling, stats.

A front end subclasses :class:`TableBuffer`, builds its :class:`~ReplayTables.engine.table.Table`
in ``__init__`` and says how to rebuild itself (``_init_args`` / ``_construct``).
Subclasses are registered for :func:`ReplayTables.load` automatically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.checkpoint import class_name, register, resolve_structure, write_checkpoint
from ReplayTables.engine.table import Table
from ReplayTables.errors import CheckpointError

__all__ = ["TableBuffer"]


class TableBuffer:
    """Base of buffers that are one engine table plus a front-end API."""

    _table: Table

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    # ------------------------------------------------------------ size
    @property
    def max_size(self) -> int:
        """How many records the buffer holds at most (its capacity)."""
        return self._table.capacity

    def size(self) -> int:
        """How many items can be sampled now."""
        return self._table.size

    def __len__(self) -> int:
        return self._table.size

    # ------------------------------------------------------------ to override
    def _init_args(self) -> dict[str, Any]:
        """JSON-able constructor arguments (other than structure and rng)."""
        raise NotImplementedError

    @classmethod
    def _construct(cls, init: dict[str, Any], structure: Any, rng: np.random.Generator) -> TableBuffer:
        return cls(**init, structure=structure, rng=rng)  # type: ignore[call-arg]

    def _frontend_state(self) -> dict[str, Any]:
        return {}

    def _load_frontend_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to recreate this buffer: JSON-able parts plus numpy arrays.

        The arrays are copies, so the dict stays a snapshot while the buffer moves on
        (``load_state_dict`` of an earlier state dict rolls the buffer back).
        """
        meta, arrays = self._table.state()
        arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
        structure = self._table.schema.structure  # kept even before the first add fixes the fields
        return {"class": class_name(type(self)), "init": self._init_args(), "frontend": self._frontend_state(),
                "structure": None if structure is None else class_name(structure),
                "table": meta, "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (same class and constructor arguments)."""
        if state.get("class") != class_name(type(self)):
            raise CheckpointError("class", state.get("class"), class_name(type(self)))
        if state.get("init") != self._init_args():
            raise CheckpointError("init", state.get("init"), f"{self._init_args()} (this buffer's arguments)")
        self._table.load_state(state["table"], state["arrays"])
        self._load_frontend_state(state.get("frontend", {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to directory ``path`` atomically; :func:`ReplayTables.load` reads it back."""
        state = self.state_dict()
        arrays = state.pop("arrays")
        return write_checkpoint(path, state, arrays)

    @classmethod
    def _from_checkpoint(cls, manifest: dict[str, Any], arrays: dict[str, np.ndarray], structure: Any) -> Any:
        schema = manifest["table"].get("schema")
        if structure is None and schema is not None:
            names = [".".join(f["path"]) for f in schema["fields"]]
            structure = resolve_structure(schema.get("structure"), names, schema["kind"])
        if structure is None and schema is None and manifest.get("structure"):
            structure = resolve_structure(manifest["structure"], [], "namedtuple")
        if schema is not None and schema["kind"] == "dict":
            structure = None
        buffer = cls._construct(dict(manifest["init"]), structure, np.random.default_rng())
        buffer._table.load_state(manifest["table"], arrays)
        buffer._load_frontend_state(manifest.get("frontend", {}))
        return buffer

    # ------------------------------------------------------------ common API
    def stats(self) -> dict[str, Any]:
        """Counters (added, evicted, sampled, deleted, stale updates, ...), size and memory."""
        table = self._table
        out: dict[str, Any] = dict(table.counters)
        out["size"] = table.size
        out["capacity"] = table.capacity
        out["storage_bytes"] = table.storage.nbytes if table.storage is not None else 0
        return out
