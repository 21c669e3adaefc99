"""The lock every public call of a table holds, and the wait that rate limiting needs.

One lock per table makes each public call (add, sample, get, delete, priority
update, state_dict, save) atomic with respect to the others. A call that may
have to wait (an insert or a sample the rate limiter holds back) waits *on that
lock*: :meth:`TableLock.wait_until` releases it while waiting, so other threads
can make the awaited condition true, and re-checks the condition under the lock
each time it is woken. Whoever changes the table calls :meth:`TableLock.notify`
before releasing the lock.

:class:`TableLockProtocol` is the whole interface a table relies on, so a
process-shared lock (a file lock on shared memory plus a polling wait) can
stand in for :class:`TableLock` without the table noticing.
"""
from __future__ import annotations

import math
import numbers
import threading
import time
from _thread import RLock as _RLock
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ReplayTables.errors import BufferClosedError, ConfigError, RateLimitTimeout

__all__ = ["TableLock", "TableLockProtocol", "check_timeout"]

Describe = str | Callable[[], str]


@runtime_checkable
class TableLockProtocol(Protocol):
    """What a table needs from its lock.

    - ``with lock:`` holds it; it is re-entrant, so a public call may call another.
    - ``wait_until(predicate, timeout, describe)``, called holding the lock,
      returns once ``predicate()`` is true (checked holding the lock); waits at
      most ``timeout`` seconds (``None``: no limit, ``0``: check once, never wait)
      and then raises :class:`~ReplayTables.errors.RateLimitTimeout`; raises
      :class:`~ReplayTables.errors.BufferClosedError` if the lock is or becomes
      closed. ``describe`` (a string, or a function called only on failure) says
      what was awaited, for the error message. While waiting the lock is released
      completely, even when held re-entrantly, so call it before changing anything.
    - ``notify()``, called holding the lock after any change that may make a
      waiter's predicate true. An implementation that polls may do nothing here.
    - ``close()`` wakes every waiter with ``BufferClosedError``; later waits raise
      it at once. ``closed`` says whether that happened.
    """

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def closed(self) -> bool: ...

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None,
                   describe: Describe = "the condition") -> None: ...

    def notify(self) -> None: ...

    def close(self) -> None: ...


def check_timeout(timeout: Any) -> float | None:
    """``timeout`` as seconds (``None`` or ``inf``: no limit); anything else than a number >= 0 is a ConfigError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(timeout) or timeout < 0:
        raise ConfigError("timeout", timeout, "None (no limit) or a number of seconds >= 0")
    return None if math.isinf(timeout) else float(timeout)


class TableLock(_RLock):  # type: ignore[misc]  # typeshed calls it final; CPython allows subclasses
    """A re-entrant lock for one table, in one process, with a condition to wait on.

    It *is* CPython's C ``RLock`` (a subclass), so an uncontended ``with lock:``
    costs exactly what an ``RLock`` costs; a wrapper object with Python
    ``__enter__``/``__exit__`` adds about 100 ns, most of a budget measured in
    hundreds. Waiting uses a ``threading.Condition`` on the same lock, so a
    waiter sleeps until notified instead of spinning. ``notify()`` costs one
    attribute test while nobody waits, which keeps it cheap on every add.

    Pickling or copying gives a new, unlocked lock (with the same ``closed``
    flag): a copied table is a separate table and must not share its lock.
    """

    __slots__ = ("_closed", "_cond", "_waiting")

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(self)
        self._closed = False
        self._waiting = 0  # threads inside wait_until; changed only under the lock

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None,
                   describe: Describe = "the condition") -> None:
        """Return once ``predicate()`` holds; see :class:`TableLockProtocol` for the rules.

        Call it holding the lock (``with lock:``), before the call changes anything:
        a timeout or a close then leaves the table as it was.
        """
        limit = check_timeout(timeout)
        if self._closed:
            raise _closed_error(describe, waited=False)
        if predicate():
            return
        if limit == 0:
            raise RateLimitTimeout("timeout", timeout, f"{_what(describe)} at once",
                                   "timeout=0 never waits")
        deadline = None if limit is None else time.monotonic() + limit
        self._waiting += 1
        try:
            while True:
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RateLimitTimeout("timeout", timeout, f"{_what(describe)} within {limit:g} s")
                    self._cond.wait(min(remaining, threading.TIMEOUT_MAX))
                if self._closed:
                    raise _closed_error(describe, waited=True)
                if predicate():
                    return
        finally:
            self._waiting -= 1

    def notify(self) -> None:
        """Wake every waiter to re-check its predicate (call holding the lock)."""
        if self._waiting:
            # all, not one: inserters and samplers wait on different predicates
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter with BufferClosedError; every later wait raises it at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TableLock {state}, {self._waiting} waiting>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_new_lock, (self._closed,))


def _new_lock(closed: bool) -> TableLock:
    lock = TableLock()
    lock._closed = bool(closed)
    return lock


def _what(describe: Describe) -> str:
    return describe() if callable(describe) else describe


def _closed_error(describe: Describe, waited: bool) -> BufferClosedError:
    when = "while this call waited for" if waited else "before this call could wait for"
    return BufferClosedError("buffer", "closed", "an open buffer", f"close() was called {when} {_what(describe)}")
