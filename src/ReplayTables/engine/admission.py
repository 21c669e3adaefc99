"""Admission: wait, on the table's lock, until the rate limiter lets an insert or a sample through.

A table call that is rate limited goes through four steps, all under one hold
of the table's lock::

    with lock:
        admit_insert(lock, limiter, k, table_size, timeout)  # may wait; raises before any change
        ...insert the k items...
        limiter.record_insert(k)
        lock.notify()                                        # after every change (deletes too)

(``admit_sample`` / ``record_sample`` likewise.) Admission happens before the
call changes anything, so a call that times out (``RateLimitTimeout``) or is
woken by ``close()`` (``BufferClosedError``) leaves the table exactly as it was.
``size`` is a function, not a number, because deletes and evictions made by
other threads while this one waits change the size, and it is read again at
every wake-up.
"""
from __future__ import annotations

from collections.abc import Callable

from ReplayTables.engine.table_lock import TableLockProtocol, check_timeout
from ReplayTables.rate_limiters import RateLimiter

__all__ = ["admit_insert", "admit_sample"]


def admit_insert(lock: TableLockProtocol, limiter: RateLimiter | None, k: int,
                 size: Callable[[], int], timeout: float | None = None) -> None:
    """Return once ``limiter`` allows inserting ``k`` items; call holding ``lock``.

    Waits at most ``timeout`` seconds (``None``: no limit; ``0``: never waits),
    then raises ``RateLimitTimeout``; raises ``BufferClosedError`` if the lock is
    or gets closed. ``limiter=None`` admits at once.
    """
    if limiter is None:
        return
    if timeout is not None:
        check_timeout(timeout)
    if not lock.closed and limiter.can_insert(k, size()):
        return  # the common case builds no closures
    lock.wait_until(lambda: limiter.can_insert(k, size()), timeout,
                    lambda: f"the rate limiter to allow an insert of {k} item(s) with {size()} stored; {limiter!r}")


def admit_sample(lock: TableLockProtocol, limiter: RateLimiter | None, k: int,
                 size: Callable[[], int], timeout: float | None = None) -> None:
    """Return once ``limiter`` allows sampling ``k`` items; call holding ``lock``.

    The same rules as :func:`admit_insert`.
    """
    if limiter is None:
        return
    if timeout is not None:
        check_timeout(timeout)
    if not lock.closed and limiter.can_sample(k, size()):
        return
    lock.wait_until(lambda: limiter.can_sample(k, size()), timeout,
                    lambda: f"the rate limiter to allow a sample of {k} item(s) with {size()} stored; {limiter!r}")
