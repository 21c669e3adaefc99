"""Atomic public calls: the one lock a buffer's calls hold, and what a rate limiter adds to them.

Every public call of a buffer holds the lock of its table for the whole call
(SPEC 6.1), so a sample's rows are the rows of its ids at one instant and the
counters, live ids and sum tree stay exact under any interleaving of threads.
The lock is the table's :class:`~ReplayTables.engine.table_lock.TableLock`
(``table.lock``); it is re-entrant, so a call may call another, and the table's
own methods may take it again inside. A buffer of several tables (multi-agent)
has a lock of its own around its per-policy calls.

:func:`atomic` wraps a method in ``with self._lock:``; the hot paths (add,
sample) write the ``with`` out instead, which saves a Python call per add.
:class:`Admission` is the rate-limited form of a call (SPEC 6.2): wait for the
limiter on the lock, change the buffer, count the change, wake the waiters.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np

from ReplayTables.engine.admission import admit_insert, admit_sample
from ReplayTables.engine.table_lock import TableLock, TableLockProtocol, check_timeout
from ReplayTables.errors import BufferClosedError, CheckpointError, ConfigError
from ReplayTables.rate_limiters import RateLimiter

__all__ = ["Admission", "atomic", "check_k", "check_limiter", "closed_error", "limiter_from_config", "new_lock",
           "table_lock"]

F = TypeVar("F", bound=Callable[..., Any])


def table_lock(table: Any) -> TableLockProtocol:
    """The lock of ``table`` (``table.lock``), given to it first if the table has none yet."""
    lock = getattr(table, "lock", None)
    if lock is None:
        lock = new_lock()
        table.lock = lock
    return cast(TableLockProtocol, lock)


def new_lock() -> TableLockProtocol:
    """A lock of a buffer's own (a buffer of several tables holds it around their calls)."""
    return cast(TableLockProtocol, TableLock())


def atomic(method: F) -> F:
    """``method`` holding ``self._lock`` for the whole call."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, locked)


def check_limiter(value: Any) -> RateLimiter | None:
    """A ``rate_limiter=`` argument: ``None`` or a :class:`~ReplayTables.rate_limiters.RateLimiter`."""
    if value is not None and not isinstance(value, RateLimiter):
        raise ConfigError("rate_limiter", value, "None or a ReplayTables.rate_limiters.RateLimiter "
                                                 "(e.g. MinSize(1000) or SampleToInsertRatio(...))")
    return value


def limiter_from_config(config: Any, where: str = "init.rate_limiter") -> RateLimiter:
    """A limiter rebuilt from its saved ``config()``; a bad one is a CheckpointError naming ``where``."""
    try:
        return RateLimiter.from_config(config)
    except ConfigError as exc:
        field = exc.field if exc.field.startswith(where) else f"{where}.{exc.field}"
        raise CheckpointError(field, exc.value, exc.expected, "a value saved in the state") from None


def check_k(k: Any) -> int:
    """A number of items for ``can_insert`` / ``can_sample``: an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError("k", k, "a number of items >= 1")
    return int(k)


def closed_error(what: str) -> BufferClosedError:
    return BufferClosedError("buffer", "closed", "an open buffer", f"close() was called before this {what}")


class Admission:
    """One buffer's lock, rate limiter and table, and the calls that wait on them.

    Call every method holding ``lock``. Without a limiter, admission only checks
    that the buffer is open (and that ``timeout`` is a valid value). The limiter
    sees the table's ``size`` (items that can be sampled now).
    """

    __slots__ = ("limiter", "lock", "table")

    def __init__(self, lock: TableLockProtocol, limiter: RateLimiter | None, table: Any) -> None:
        self.lock = lock
        self.limiter = limiter
        self.table = table

    def size(self) -> int:
        size: int = self.table.size
        return size

    def insert(self, k: int, timeout: float | None) -> None:
        """Return once ``k`` items may be inserted (wait at most ``timeout`` s); change nothing.

        ``k = 0`` never waits for the limiter (only a closed buffer refuses it)."""
        if self.limiter is None or k == 0:
            if timeout is not None:
                check_timeout(timeout)
            if self.lock.closed:
                raise closed_error("insert")
            return
        admit_insert(self.lock, self.limiter, k, self.size, timeout)

    def sample(self, k: int, timeout: float | None, size: Callable[[], int] | None = None) -> None:
        """Return once ``k`` items may be sampled (from ``size()`` items, the table's by default)."""
        if self.limiter is None or k == 0:
            if timeout is not None:
                check_timeout(timeout)
            if self.lock.closed:
                raise closed_error("sample")
            return
        admit_sample(self.lock, self.limiter, k, self.size if size is None else size, timeout)

    def inserted(self, k: int) -> None:
        """Count ``k`` inserted items and wake the waiters (after the insert)."""
        if self.limiter is not None and k > 0:
            self.limiter.record_insert(k)
            self.lock.notify()

    def sampled(self, k: int) -> None:
        """Count ``k`` sampled items and wake the waiters (after the sample)."""
        if self.limiter is not None and k > 0:
            self.limiter.record_sample(k)
            self.lock.notify()

    def changed(self) -> None:
        """Wake the waiters after a change of size that counts nothing (a delete, a load)."""
        if self.limiter is not None:
            self.lock.notify()

    def can_insert(self, k: int) -> bool:
        if self.lock.closed:
            return False
        return True if self.limiter is None else self.limiter.can_insert(k, self.size())

    def can_sample(self, k: int, size: Callable[[], int] | None = None) -> bool:
        if self.lock.closed:
            return False
        n = self.size() if size is None else size()
        if self.limiter is None:
            return n > 0
        return self.limiter.can_sample(k, n)
