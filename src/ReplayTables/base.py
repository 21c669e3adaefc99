"""What every buffer built on one engine table shares: saving, loading, pickling, stats,
its lock and rate limiter, and prefetching.

A front end subclasses :class:`TableBuffer`, builds its :class:`~ReplayTables.engine.table.Table`
in ``__init__``, then calls ``_init_concurrency(rate_limiter)``, and says how to rebuild itself
(``_init_args`` / ``_construct``). Subclasses are registered for :func:`ReplayTables.load`
automatically. Every public call holds the table's lock (see :mod:`ReplayTables.atomic`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.atomic import Admission, atomic, check_k, check_limiter, limiter_from_config, table_lock
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
from ReplayTables.engine.table_lock import TableLockProtocol
from ReplayTables.errors import CheckpointError, ConfigError
from ReplayTables.prefetch import Prefetcher
from ReplayTables.rate_limiters import RateLimiter
from ReplayTables.shareable import Shareable

__all__ = ["TableBuffer"]


class TableBuffer(Shareable):
    """Base of buffers that are one engine table plus a front-end API."""

    _table: Table
    _lock: TableLockProtocol
    _admission: Admission

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    # ------------------------------------------------------------ shared memory (see ReplayTables.shared)
    def _bind_state(self) -> None:
        """Bind the front end's own scalars to the table's arena (before the table is shared)."""

    def _shared_extra(self) -> dict[str, np.ndarray]:
        """The front end's own arrays that a shared segment must hold too (none here)."""
        return {}

    def _shared_streams(self) -> int:
        """How many per-stream rings the table's slots form (0: adds are ring ranges of its writer)."""
        return 0

    def _use_shared_extra(self, shared: Any) -> None:
        """Work on ``shared.extra`` (the views of :meth:`_shared_extra`'s arrays) from now on."""

    def _finish_init(self, shared: bool, rate_limiter: RateLimiter | None) -> None:
        """The last step of a constructor: the front end's scalars into the arena, then shared memory,
        then the lock and rate limiter every public call uses (the process lock, when shared)."""
        if shared is not True and shared is not False:
            raise ConfigError("shared", shared, "True or False")
        check_limiter(rate_limiter)
        self._bind_state()
        if shared:
            from ReplayTables.shared import share

            share(self, rate_limiter)
        self._init_concurrency(rate_limiter)

    def _init_concurrency(self, rate_limiter: RateLimiter | None) -> None:
        """The table's lock for every public call, and the rate limiter (if any) they wait for."""
        self._lock = table_lock(self._table)
        self._admission = Admission(self._lock, check_limiter(rate_limiter), self._table)
        #: no limiter and not closed: an add has nothing to wait for or count (the hot path tests only this)
        self._plain = rate_limiter is None

    def _add_admitted(self, item: Any, priority: Any, timeout: float | None) -> int:
        """One add that waits for the limiter first and counts itself after (or refuses: closed).

        A shared, rate-limited buffer checks the item before it takes the lock (its
        schema is fixed), so other processes do not wait for the conversion."""
        table = self._table
        checked = table._check_one(item, priority) if self._shared is not None \
            and self._admission.limiter is not None else None
        with self._lock:
            self._admission.insert(1, timeout)
            new_id = table.add(item, priority) if checked is None else table._add_general(item, priority, checked)
            self._admission.inserted(1)
            return new_id

    # ------------------------------------------------------------ threads and rate limiting
    @property
    def lock(self) -> TableLockProtocol:
        """The buffer's re-entrant lock, held by every public call.

        Hold it yourself to make several calls one atomic step, e.g.
        ``with buffer.lock: batch = buffer.sample(n); buffer.update_priorities(...)``.
        Do not wait for other threads while holding it.
        """
        return self._lock

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The :class:`~ReplayTables.rate_limiters.RateLimiter` this buffer's adds and samples wait for."""
        return self._admission.limiter

    def can_insert(self, k: int = 1) -> bool:
        """Whether an add of ``k`` items would proceed now without waiting (False once closed)."""
        k = check_k(k)
        with self._lock:
            return self._admission.can_insert(k)

    def can_sample(self, k: int = 1) -> bool:
        """Whether a sample of ``k`` items would proceed now without waiting (False once closed).

        Without a rate limiter: whether anything is stored.
        """
        k = check_k(k)
        with self._lock:
            return self._admission.can_sample(k)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._lock.closed

    def close(self) -> None:
        """Refuse adds and samples from now on, and wake every call waiting for the rate
        limiter with a :class:`~ReplayTables.errors.BufferClosedError`.

        Reading (``get``, ``size``, ``stats``, ``state_dict``, ``save``) still works, so a
        closed buffer can be checkpointed. Closing twice is harmless.

        A shared buffer (``shared=True``) also lets go of its shared memory: closed by
        the process that made it, the memory is unlinked and every call of every
        process (reading too) then raises ``BufferClosedError``; closed by a process
        that attached it, only that process lets go.
        """
        if self._lock.closed:  # a shared buffer whose creator closed it: its lock can no longer be taken
            self._plain = False
        else:
            with self._lock:
                self._plain = False
        self._lock.close()
        if self._shared is not None:
            self._shared.close()

    def prefetch(self, n: int, depth: int = 2) -> Prefetcher[Any]:
        """An iterator of samples of ``n`` drawn by a background thread, ``depth`` kept ready.

        Priority updates made while iterating apply to the batches sampled after them
        (at most ``depth + 1`` batches are drawn ahead). Use it as a context manager or
        call ``close()``; an error in the thread is raised by the next ``next()``.
        See :class:`~ReplayTables.prefetch.Prefetcher`.
        """
        return Prefetcher(self.sample, n, depth)

    def sample(self, n: int, *, timeout: float | None = None) -> Any:
        """``n`` items drawn by the buffer's sampler (each front end defines it)."""
        raise NotImplementedError

    def _limiter_init(self) -> dict[str, Any]:
        """The limiter's config for ``_init_args`` (nothing without one, so older checkpoints load)."""
        limiter = self._admission.limiter
        return {} if limiter is None else {"rate_limiter": limiter.config()}

    @staticmethod
    def _limiter_arg(init: dict[str, Any]) -> RateLimiter | None:
        config = init.get("rate_limiter")
        return None if config is None else limiter_from_config(config)

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
        args = {**init, "rate_limiter": cls._limiter_arg(init)}
        return cls(**args, structure=structure, rng=rng)  # type: ignore[call-arg]

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
    def _full_frontend_state(self) -> dict[str, Any]:
        """:meth:`_frontend_state` plus the rate limiter's counts (when there is a limiter)."""
        state = self._frontend_state()
        limiter = self._admission.limiter
        if limiter is not None:
            state = {**state, "rate_limiter": limiter.state_dict()}
        return state

    def _check_frontend(self, state: Any) -> tuple[Any, dict[str, int] | None]:
        """What :meth:`_full_frontend_state` saved, checked: the subclass's part and the limiter's counts."""
        m = dict(mapping("frontend", state, closed=False))
        counts = m.pop("rate_limiter", None)
        limiter = self._admission.limiter
        if limiter is None:
            if counts is not None:
                raise CheckpointError("frontend.rate_limiter", counts, "no counts (this buffer has no rate limiter)")
        else:
            if counts is None:
                raise CheckpointError("frontend.rate_limiter", "<missing>",
                                      "the rate limiter's counts {'inserts': ..., 'samples': ...}")
            limiter.check_state(counts)
        return self._check_frontend_state(m), counts

    def _restore_frontend(self, checked: tuple[Any, dict[str, int] | None]) -> None:
        frontend, counts = checked
        self._restore_frontend_state(frontend)
        limiter = self._admission.limiter
        if limiter is not None and counts is not None:
            limiter.load_state_dict(counts)

    def _check_parts(self, table: Any, frontend: Any, arrays: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
        """Every part of a saved state checked (and built) before any of it is put in place."""
        return (self._table.check_state(table), self._check_frontend(frontend), self._check_arrays(arrays))

    def _restore_parts(self, checked: tuple[Any, Any, Any]) -> None:
        table, frontend, arrays = checked
        with self._lock:
            self._table.restore(table)
            self._restore_frontend(frontend)
            self._restore_arrays(arrays)
            self._admission.changed()

    # ------------------------------------------------------------ state
    @atomic
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to recreate this buffer: JSON-able parts plus numpy arrays.

        The arrays are copies, so the dict stays a snapshot while the buffer moves on
        (``load_state_dict`` of an earlier state dict rolls the buffer back).
        """
        meta, arrays = self._table.state()
        arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
        structure = self._table.schema.structure  # kept even before the first add fixes the fields
        return {"class": class_name(type(self)), "init": self._init_args(), "frontend": self._full_frontend_state(),
                "structure": None if structure is None else class_name(structure),
                "table": meta, "arrays": arrays}

    @atomic
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
        """Save to directory ``path`` atomically; :func:`ReplayTables.load` reads it back.

        The state is taken under the lock (one instant); the files are written after
        releasing it, so other threads go on adding and sampling meanwhile.
        """
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
        return cls._check_limiter_init(dict(mapping("init", init, ("max_size",), ("rate_limiter",))))

    @staticmethod
    def _check_limiter_init(init: dict[str, Any]) -> dict[str, Any]:
        """A saved ``rate_limiter`` config must make a valid limiter (a CheckpointError otherwise)."""
        if "rate_limiter" in init:
            limiter_from_config(init["rate_limiter"])
        return init

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
    @atomic
    def stats(self) -> dict[str, Any]:
        """Counters (added, evicted, sampled, deleted, stale updates, ...), size and memory."""
        table = self._table
        out: dict[str, Any] = dict(table.counters)
        out["size"] = table.size
        out["capacity"] = table.capacity
        out["storage_bytes"] = table.storage.nbytes if table.storage is not None else 0
        limiter = self._admission.limiter
        if limiter is not None:
            out["rate_limiter"] = {**limiter.config(), **limiter.state_dict()}
        return out

