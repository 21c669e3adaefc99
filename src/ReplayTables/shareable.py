"""The shared-memory face every shareable buffer class has: ``shared``, ``handle()``, no pickling when shared.

Front end A's buffers, the step-stream buffer and the RLlib front end's single-agent
ring buffers mix this in; :mod:`ReplayTables.shared` does the work (imported only
when a handle is asked for, so a buffer that is never shared never loads it).
"""
from __future__ import annotations

from typing import Any

from ReplayTables.errors import ConfigError

__all__ = ["Shareable"]


class Shareable:
    """``shared`` / ``handle()`` over ``self._shared``: the table's
    :class:`~ReplayTables.engine.shared_table.SharedTable` when the buffer lives in shared memory, else None."""

    #: the shared-memory side of the table (``shared=True`` or attached), else None
    _shared: Any = None

    @property
    def shared(self) -> bool:
        """Whether the buffer's state lives in shared memory (``shared=True``, or attached)."""
        return self._shared is not None

    def handle(self) -> Any:
        """A small picklable handle; ``ReplayTables.attach(handle)`` in another process (fork or spawn)
        returns a buffer of this class over the same memory. Only for ``shared=True`` buffers."""
        from ReplayTables.shared import handle_of

        return handle_of(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._shared is not None:
            raise ConfigError("buffer", "shared=True", "a buffer in this process's memory (a shared buffer is not "
                                                       "pickled or copied: pass buffer.handle() to the other process "
                                                       "and call ReplayTables.attach(handle) there)")
        return super().__reduce_ex__(protocol)
