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

from ReplayTables.checkpoint import (
    checking,
    class_name,
    join_arrays,
    register,
    resolve_structure,
    write_checkpoint,
)
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.rng_state import make_generator
from ReplayTables.engine.samplers import SAMPLERS, UniformSampler
from ReplayTables.engine.state_checks import array, check_fields, integer, mapping
from ReplayTables.engine.table import MAX_COUNT, Table, table_nbytes
from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["TableBuffer"]


class TableBuffer:
    """Base of buffers that are one engine table plus a front-end API."""

    _table: Table
    #: the shared-memory side of the table (``shared=True``), else None
    _shared: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    # ------------------------------------------------------------ shared memory (see ReplayTables.shared)
    def _bind_state(self) -> None:
        """Bind the front end's own scalars to the table's arena (before the table is shared)."""

    def _finish_init(self, shared: bool) -> None:
        """The last step of a constructor: the front end's scalars into the arena, then shared memory."""
        self._bind_state()
        if shared is not False:
            if shared is not True:
                raise ConfigError("shared", shared, "True or False")
            from ReplayTables.shared import share

            share(self)

    @property
    def shared(self) -> bool:
        """Whether the buffer's state lives in shared memory (``shared=True``, or attached)."""
        return self._shared is not None

    def handle(self) -> Any:
        """A small picklable handle; ``ReplayTables.attach(handle)`` in another process (fork or spawn)
        returns a buffer of this class over the same memory. Only for ``shared=True`` buffers."""
        from ReplayTables.shared import handle_of

        return handle_of(self)

    def close(self) -> None:
        """Release shared memory: the creating process unlinks it, and every process's calls then raise
        :class:`~ReplayTables.errors.BufferClosedError`; an attached process only lets go of its mapping.
        Nothing to do for a buffer in this process's memory."""
        if self._shared is not None:
            self._shared.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._shared is not None:
            raise ConfigError("buffer", "shared=True", "a buffer in this process's memory (a shared buffer is not "
                                                       "pickled or copied: pass buffer.handle() to the other process "
                                                       "and call ReplayTables.attach(handle) there)")
        return super().__reduce_ex__(protocol)

    # ------------------------------------------------------------ size
    @property
    def max_size(self) -> int:
        """How many records the buffer holds at most (its capacity)."""
        return self._table.capacity

    def size(self) -> int:
        """How many items can be sampled now."""
        if self._shared is not None:
            with self._shared.lock:  # repairs first if a process died inside a change
                return self._table.size
        return self._table.size

    def __len__(self) -> int:
        return self.size()

    # ------------------------------------------------------------ to override
    def _init_args(self) -> dict[str, Any]:
        """JSON-able constructor arguments (other than structure and rng)."""
        raise NotImplementedError

    @classmethod
    def _construct(cls, init: dict[str, Any], structure: Any, rng: np.random.Generator) -> TableBuffer:
        return cls(**init, structure=structure, rng=rng)  # type: ignore[call-arg]

    def _frontend_state(self) -> dict[str, Any]:
        return {}

    def _check_frontend_state(self, state: Any) -> Any:
        """Check what :meth:`_frontend_state` saved; returns what :meth:`_restore_frontend_state` takes."""
        mapping("frontend", state)
        return None

    def _restore_frontend_state(self, checked: Any) -> None:
        pass

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """Check front-end arrays saved beside the table's (none here); changes nothing."""
        return None

    def _restore_arrays(self, checked: Any) -> None:
        pass

    # ------------------------------------------------------------ checked restore
    def _check_parts(self, table: Any, frontend: Any, arrays: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
        """Every part of a saved state checked (and built) before any of it is put in place."""
        return (self._table.check_state(table), self._check_frontend_state(frontend), self._check_arrays(arrays))

    def _restore_parts(self, checked: tuple[Any, Any, Any]) -> None:
        table, frontend, arrays = checked
        self._table.restore(table)
        self._restore_frontend_state(frontend)
        self._restore_arrays(arrays)

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
        """Restore from :meth:`state_dict` (same class and constructor arguments).

        The whole state is checked first (every value, and the parts against each
        other); only then is anything replaced, so a state that is refused (a
        :class:`~ReplayTables.errors.CheckpointError`, or a
        :class:`~ReplayTables.errors.ConfigError` for a state of a differently
        built buffer) leaves the buffer exactly as it was.
        """
        with checking():
            m = mapping("state", state, ("class", "init", "table", "arrays"), ("frontend", "structure"))
            if m["class"] != class_name(type(self)):
                raise CheckpointError("class", m["class"], class_name(type(self)))
            if m["init"] != self._init_args():
                raise CheckpointError("init", m["init"], f"{self._init_args()} (this buffer's arguments)")
            arrays = dict(mapping("arrays", m["arrays"], closed=False))
            checked = self._check_parts(join_arrays(m["table"], arrays, "table"), m.get("frontend", {}), arrays)
        self._restore_parts(checked)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to directory ``path`` atomically; :func:`ReplayTables.load` reads it back."""
        state = self.state_dict()
        arrays = state.pop("arrays")
        return write_checkpoint(path, state, arrays)

    # ------------------------------------------------------------ loading a checkpoint
    #: top-level keys of a manifest written by :meth:`save`
    _MANIFEST_KEYS = ("format", "format_version", "arrays", "class", "init", "frontend", "structure", "table")

    @classmethod
    def _check_init(cls, init: Any) -> dict[str, Any]:
        """Saved constructor arguments: a dict of exactly this class's keys (values are checked by the
        constructor); changes nothing."""
        return dict(mapping("init", init, ("max_size",)))

    @classmethod
    def _saved_capacity(cls, init: dict[str, Any]) -> tuple[str, int]:
        """The table capacity the saved arguments give, and the argument that says so."""
        return "init.max_size", integer("init.max_size", init["max_size"], 1, MAX_COUNT)

    @classmethod
    def _saved_nbytes(cls, init: dict[str, Any], capacity: int, table: dict[str, Any],
                      arrays: dict[str, np.ndarray]) -> int:
        """Bytes the buffer built from ``init`` will hold (its rows are checked with the table)."""
        sampler = table.get("sampler")
        name = sampler.get("name") if isinstance(sampler, dict) else None
        kind = SAMPLERS.get(name, UniformSampler) if isinstance(name, str) else UniformSampler
        return table_nbytes(capacity, 0, kind)

    @classmethod
    def _init_after_load(cls, init: dict[str, Any]) -> dict[str, Any]:
        """The arguments a buffer loaded from ``init`` reports (the same, unless loading changes some)."""
        return init

    @classmethod
    def _check_before_construction(cls, manifest: Any, arrays: dict[str, np.ndarray]) -> tuple[
            dict[str, Any], dict[str, Any], np.random.Generator]:
        """What can be checked before anything is built: the manifest's layout, the saved
        arguments, the capacity against the saved arrays, and the memory it needs.

        Returns ``(init, table state with arrays, generator in the saved state)``.
        """
        m = mapping("manifest", manifest, ("class", "init", "table"), cls._MANIFEST_KEYS)
        init = cls._check_init(m["init"])
        table = join_arrays(m["table"], arrays, "table")
        t = mapping("table", table, ("capacity", "directory", "rng"), closed=False)
        field, capacity = cls._saved_capacity(init)
        saved = integer("table.capacity", t["capacity"], 1, MAX_COUNT)
        if saved != capacity:
            raise CheckpointError("table.capacity", saved, f"{capacity} (the capacity {field} gives)")
        slot_id = mapping("table.directory", t["directory"], ("slot_id",), closed=False)["slot_id"]
        array("table.directory.slot_id", slot_id, (capacity,), "iu")
        check_allocation(field, capacity, cls._saved_nbytes(init, capacity, table, arrays),
                         f"a buffer of {capacity} slots", error=CheckpointError)
        return init, table, make_generator(t["rng"], "table.rng")

    @classmethod
    def _from_checkpoint(cls, manifest: dict[str, Any], arrays: dict[str, np.ndarray], structure: Any) -> Any:
        init, table, rng = cls._check_before_construction(manifest, arrays)
        schema = table.get("schema")
        if schema is not None:
            s = mapping("table.schema", schema, ("kind", "structure", "fields"))
            kind = s["kind"]
            if kind == "dict":
                structure = None  # dict items need no class
            elif structure is None and kind in ("namedtuple", "dataclass"):
                names = [p[0] for p, _, _ in check_fields("table.schema.fields", s["fields"], kind)]
                structure = resolve_structure(s["structure"], names, kind)
        saved_structure = manifest.get("structure")
        if saved_structure is not None and not isinstance(saved_structure, str):
            raise CheckpointError("structure", saved_structure, "None or a 'module:QualName' string")
        if structure is None and schema is None and saved_structure:
            structure = resolve_structure(saved_structure, None, None)
        buffer = cls._construct(init, structure, rng)
        if buffer._init_args() != cls._init_after_load(init):  # a default filled in, or a value changed
            raise CheckpointError("init", init, f"the arguments the buffer was built with: {buffer._init_args()}")
        buffer._restore_parts(buffer._check_parts(table, manifest.get("frontend", {}), arrays))
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

