"""Buffers in shared memory: ``shared=True``, ``buffer.handle()`` and :func:`attach`.

A buffer built with ``shared=True`` keeps all of its state (rows, ids, sum tree,
counters, writer cursor, rate-limiter counts) and its lock in one shared-memory
segment (see :mod:`ReplayTables.engine.shared_table`). ``buffer.handle()`` is a
small picklable :class:`BufferHandle`; :func:`attach` in another process (fork
or spawn) returns a buffer of the same class over the same memory, with every
method.

Lifetime: the process that built the buffer owns the memory. Its ``close()``,
or its exit (normal, exception, SIGTERM), unlinks the segment; processes that
attached go on with their mapping until they close, but every call then raises
:class:`~ReplayTables.errors.BufferClosedError`, and new attaches fail with a
:class:`~ReplayTables.errors.SharedMemoryError`. An attached process closing or
exiting never unlinks anything.

Samples are copies of the rows, so a batch stays valid whatever happens to the
buffer after it was drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ReplayTables.engine.shared_memory import SharedHandle
from ReplayTables.engine.shared_table import SharedTable
from ReplayTables.errors import ConfigError

__all__ = ["BufferHandle", "attach"]


@dataclass(frozen=True)
class BufferHandle:
    """What :func:`attach` needs: the buffer class, its constructor arguments, its structure and the segment.

    No array data: a few hundred bytes pickled (the structure class goes by
    reference, so a spawned process must be able to import it).
    """

    cls: str
    init: dict[str, Any]
    structure: Any
    segment: SharedHandle


def share(buffer: Any, rate_limiter: Any = None) -> None:
    """Move ``buffer``'s table (and its rate limiter's counts) into a new segment this process owns.

    Called by the constructors before they take the table's lock, which is then the process lock."""
    table = buffer._table
    if rate_limiter is not None:
        table.bind_rate_limiter(rate_limiter)  # its counts join the arena, so the segment holds them
    buffer._shared = SharedTable.create(table, buffer._shared_extra(), buffer._shared_streams())
    if rate_limiter is not None:
        table.bind_rate_limiter(rate_limiter)  # now the segment's copy
    buffer._use_shared_extra(buffer._shared)


def handle_of(buffer: Any) -> BufferHandle:
    from ReplayTables.checkpoint import class_name

    shared = getattr(buffer, "_shared", None)
    if shared is None:
        raise ConfigError("shared", False, "a buffer built with shared=True (only those have a handle)")
    return BufferHandle(class_name(type(buffer)), buffer._init_args(), buffer._table.schema,
                        shared.handle())


def attach(handle: BufferHandle, rng: np.random.Generator | int | None = None) -> Any:
    """A buffer of ``handle``'s class over the shared memory it names, in this process.

    ``rng`` drives this process's samples (each process draws with its own
    generator; ``None`` draws a fresh seed). A segment whose creator closed it or
    exited is a :class:`~ReplayTables.errors.SharedMemoryError`.
    """
    from ReplayTables.checkpoint import resolve_class

    if not isinstance(handle, BufferHandle):
        raise ConfigError("handle", handle, "a BufferHandle from buffer.handle()")
    cls: Any = resolve_class(handle.cls, "handle.cls")
    buffer = cls._construct(handle.init, handle.structure, rng)
    table, limiter = buffer._table, buffer.rate_limiter
    if limiter is not None:
        table.bind_rate_limiter(limiter)  # the same arena layout as the creator's
    buffer._shared = SharedTable.attach(handle.segment, table, buffer._shared_extra())
    if limiter is not None:
        table.bind_rate_limiter(limiter)  # adopts the shared counts
    buffer._use_shared_extra(buffer._shared)
    buffer._init_concurrency(limiter)  # every call now holds the process lock
    return buffer
