"""A lock for the processes sharing one segment: a dead holder cannot keep it, and the next holder learns of it.

Design:

- **Across processes: ``flock`` on the segment's file.** Each lock object
  opens its own open file description on the segment (``flock`` belongs to an
  open file description, not to a process or a descriptor number). The kernel
  drops the lock when the holder's last descriptor to it closes, which a dying
  process does whatever killed it (SIGKILL included), so a dead holder never
  blocks the others. A fork child would inherit the parent's open file
  description, and with it the parent's lock; so after a fork every lock in the
  child reopens a description of its own and forgets what the parent held.
- **Across threads of one process: a ``threading.RLock``.** Threads of one
  process share the description, so ``flock`` alone does not exclude them. The
  RLock also makes the lock re-entrant within a thread; ``flock`` is taken on
  the outermost acquire and dropped on the outermost release.
- **A dead holder's half-done operation: an operation word in shared memory.**
  A mutating operation is bracketed with :meth:`ProcessLock.begin` /
  :meth:`ProcessLock.end` (or ``with lock.operation(op):``), which set and clear
  ``[holder pid, op, arg]`` in an int64 word array of the segment. Whoever
  takes the lock and finds an operation still marked knows its holder stopped
  inside it (it died, or it raised out of it): ``acquire()`` runs the repair
  callbacks registered with :meth:`ProcessLock.on_recover` (the table makes the
  half-done add invisible) and clears the mark, or, with no callback, returns
  the :class:`Recovery` and leaves the mark until :meth:`ProcessLock.recovered`.
- **Waiting: polling with exponential backoff.** A ``threading.Condition``
  cannot wake another process, so :meth:`ProcessLock.wait_until` releases the
  lock, sleeps (20 us doubling to 1 ms), reacquires and re-checks;
  :meth:`ProcessLock.notify` bumps an epoch word that resets waiters' backoff so
  they re-check promptly.

An uncontended ``with lock:`` costs two ``flock`` system calls and an RLock
(about 1-2 us; ``benchmarks/bench_process_lock.py`` measures it).

The lock lives in the segment it guards: the segment's layout holds the word
array (``{"lock": ProcessLock.LAYOUT, ...}``) and every process makes its
``ProcessLock(segment)``. One segment has one lock: two ``ProcessLock`` objects
on one segment, even in one process, exclude each other (a thread holding one
and acquiring the other deadlocks). Do not fork while holding the lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import numbers
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ReplayTables.engine.shared_memory import SharedArrays
from ReplayTables.errors import BufferClosedError, ConfigError, RateLimitTimeout

__all__ = ["ProcessLock", "Recovery"]

# the word array: who is inside an operation, which, the wake-up epoch, closed, recovery counts
_PID, _OP, _ARG, _EPOCH, _CLOSED, _RECOVERIES, _LAST_PID, _LAST_OP = range(8)
_WORDS = 8

_MIN_DELAY = 20e-6
_MAX_DELAY = 1e-3
_OWNER_CHECK_INTERVAL = 0.1  # how often a waiter checks that the segment's creator still runs

_EX, _UN = fcntl.LOCK_EX, fcntl.LOCK_UN
_flock = fcntl.flock
_get_ident = threading.get_ident


@dataclass(frozen=True)
class Recovery:
    """An operation that its holder never finished: ``pid`` was inside ``op`` (with ``arg``) and stopped.

    ``died`` tells a holder that died holding the lock (killed, crashed) from
    one that released it with the operation unfinished (an exception out of it)
    and lives on.
    """

    pid: int
    op: int
    arg: int
    died: bool


def _text(describe: str | Callable[[], str]) -> str:
    return describe() if callable(describe) else describe


def _check_timeout(timeout: Any) -> float | None:
    """``timeout`` in seconds (``None`` or ``inf``: no limit); anything but a number >= 0 is a ConfigError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(timeout) or timeout < 0:
        raise ConfigError("timeout", timeout, "None (no limit) or a number of seconds >= 0")
    return None if math.isinf(timeout) else float(timeout)


class ProcessLock:
    """A re-entrant lock shared by every process attached to one segment; see the module docstring.

    ``segment`` holds the lock's words under ``words`` (an int64 array of shape
    ``LAYOUT[0]``). ``with lock:`` holds it (the value bound by ``as`` is the
    :class:`Recovery` this acquire found, usually None); ``with
    lock.operation(op, arg):`` holds it and marks a mutating operation.
    """

    LAYOUT: tuple[tuple[int, ...], type[np.int64]] = ((_WORDS,), np.int64)
    """The ``(shape, dtype)`` the segment's layout must give the lock's words."""

    def __init__(self, segment: SharedArrays, words: str = "lock") -> None:
        arrays = segment.arrays
        if words not in arrays:
            raise ConfigError("words", words, f"the name of the lock's words in the segment's layout {list(arrays)}")
        array = arrays[words]
        if array.dtype != np.int64 or array.shape != (_WORDS,):
            raise ConfigError(f"layout[{words!r}]", (array.shape, str(array.dtype)),
                              f"ProcessLock.LAYOUT, i.e. (({_WORDS},), int64)")
        self._segment = segment
        self._w = array.data  # a memoryview: plain int reads and writes, cheaper than numpy scalars
        self._fd = segment.open_file()
        self._rlock = threading.RLock()
        self._depth = 0  # re-entrant holds by the owning thread (guarded by _rlock)
        self._ops = 0  # nested begin() depth
        self._flocked = False
        self._holder: int | None = None  # thread ident of the holder
        self._closed = False
        self._pid = os.getpid()
        self._callbacks: list[Callable[[Recovery], None]] = []
        _live_locks.add(self)

    # ------------------------------------------------------------ holding

    def acquire(self) -> Recovery | None:
        """Take the lock (blocking), re-entrantly; the Recovery of a holder that stopped mid-operation, else None.

        Raises BufferClosedError once this lock, or the segment's creator, closed it.
        """
        self._rlock.acquire()
        if self._depth:
            self._depth += 1
            return None
        w = self._w
        try:
            if self._closed or w[_CLOSED]:
                raise self._closed_error("acquire the lock")
            _flock(self._fd, _EX)  # blocks (without the GIL) while another process holds it
        except BaseException:
            self._rlock.release()
            raise
        self._flocked = True
        self._depth = 1
        self._holder = _get_ident()
        if w[_OP]:
            try:
                return self._recover()
            except BaseException:
                self.release()
                raise
        return None

    def release(self) -> None:
        """Undo one :meth:`acquire` of this thread; the outermost release lets other processes in."""
        if self._holder != _get_ident():
            raise RuntimeError("ProcessLock.release() by a thread that does not hold it")
        if self._depth == 1:
            if self._ops:
                self._abandon()  # released inside an operation: it stays marked, as not finished
            self._depth = 0
            self._holder = None
            if self._flocked:
                self._flocked = False
                _flock(self._fd, _UN)
            if self._closed:
                self._close_fd()
        else:
            self._depth -= 1
        self._rlock.release()

    def __enter__(self) -> Recovery | None:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._holder == _get_ident()

    # ------------------------------------------------------------ operations

    def begin(self, op: int = 1, arg: int = 0) -> None:
        """Mark a mutating operation ``op`` (a positive int; ``arg`` is free for the caller) as in progress.

        Needs the lock held by this thread. Nested begins count; the outermost
        :meth:`end` clears the mark. If the process stops before that, the next
        acquirer (in any process) is told to recover.
        """
        if self._holder != _get_ident():
            raise RuntimeError("ProcessLock.begin() needs the lock held by this thread")
        if self._ops == 0:
            if op <= 0:
                raise ConfigError("op", op, "a positive operation code")
            w = self._w
            w[_PID] = self._pid
            w[_ARG] = arg
            w[_OP] = op
        self._ops += 1

    def end(self) -> None:
        """The operation :meth:`begin` marked is complete: clear the mark (outermost end only)."""
        if self._ops <= 0 or self._holder != _get_ident():
            raise RuntimeError("ProcessLock.end() without a begin() by this thread")
        self._ops -= 1
        if self._ops == 0:
            w = self._w
            w[_OP] = 0
            w[_PID] = 0
            w[_ARG] = 0

    def operation(self, op: int = 1, arg: int = 0) -> _Operation:
        """``with lock.operation(op, arg):`` acquires, begins; ends and releases on the way out.

        An exception out of the block leaves the operation marked (the block
        may have stopped half-way, as a killed process would), so the next
        acquirer repairs it. Validate input before the block, so a refused call
        costs no repair.
        """
        return _Operation(self, op, arg)

    def _abandon(self) -> None:
        """Leave an operation without finishing it: the outermost stays marked, as given up by a live process.

        The holder pid is stored negated, which tells the next holder that the
        operation was abandoned (an exception) rather than cut short by death.
        """
        if self._ops > 1:
            self._ops -= 1
        elif self._ops == 1:
            self._ops = 0
            self._w[_PID] = -self._pid

    # ------------------------------------------------------------ recovery

    def on_recover(self, fn: Callable[[Recovery], None]) -> None:
        """Register ``fn(recovery)``, run under the lock by the acquire that finds an unfinished operation.

        After every callback returned, the mark is cleared. If one raises, the
        mark stays, the lock is released and the exception comes out of
        ``acquire()``; the next acquire tries again.
        """
        self._callbacks.append(fn)

    @property
    def pending(self) -> Recovery | None:
        """The unfinished operation marked in shared memory (when no callback repaired it), else None."""
        op = self._w[_OP]
        if not op or self._ops:
            return None
        pid = self._w[_PID]
        # a positive pid never got to release the lock (it died holding it); a negative one let go
        # of an unfinished operation and lives on (see _abandon)
        return Recovery(pid=abs(pid), op=op, arg=self._w[_ARG], died=pid > 0)

    def recovered(self) -> None:
        """The holder repaired the unfinished operation: clear its mark (needs the lock held)."""
        if self._holder != _get_ident():
            raise RuntimeError("ProcessLock.recovered() needs the lock held by this thread")
        w = self._w
        w[_LAST_PID] = w[_PID]
        w[_LAST_OP] = w[_OP]
        w[_OP] = 0
        w[_PID] = 0
        w[_ARG] = 0
        w[_RECOVERIES] += 1

    @property
    def recoveries(self) -> int:
        """How many unfinished operations were repaired on this segment, by any process."""
        return int(self._w[_RECOVERIES])

    def _recover(self) -> Recovery:
        info = self.pending
        assert info is not None
        if self._callbacks:
            for fn in list(self._callbacks):
                fn(info)
            self.recovered()
        return info

    # ------------------------------------------------------------ waiting

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None,
                   describe: str | Callable[[], str] = "the condition") -> None:
        """Hold the lock until ``predicate()`` is true, letting other processes in meanwhile.

        The same contract as the in-process table lock's ``wait_until``, by
        polling. Called with the lock held (outside an operation); returns
        with it held. ``timeout=None`` (or ``inf``) waits without limit, ``0``
        checks once and never waits. ``describe`` (a string, or a function
        called only on failure) says what was awaited. Raises
        :class:`RateLimitTimeout` when ``timeout`` seconds pass first, and
        :class:`BufferClosedError` once the lock is closed (here, or by the
        segment's creator) or the segment's creator has exited.
        """
        limit = _check_timeout(timeout)
        if self._holder != _get_ident():
            raise RuntimeError("ProcessLock.wait_until() needs the lock held by this thread")
        if self._ops:
            raise RuntimeError("ProcessLock.wait_until() inside an operation would show other processes "
                               "a half-done operation")
        if self._closed or self._w[_CLOSED]:
            raise self._closed_error(f"wait for {_text(describe)}")
        if predicate():
            return
        if limit == 0:
            raise self._timeout_error(timeout, describe, 0.0)
        start = time.monotonic()
        deadline = None if limit is None else start + limit
        next_owner_check = start + _OWNER_CHECK_INTERVAL
        delay = _MIN_DELAY
        epoch = self._w[_EPOCH]
        while True:
            if self._closed or self._w[_CLOSED]:
                raise self._closed_error(f"wait for {_text(describe)}")
            depth = self._release_all()
            try:
                pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
                time.sleep(pause)
            finally:
                self._reacquire(depth)
            if self._closed or self._w[_CLOSED]:
                raise self._closed_error(f"wait for {_text(describe)}")
            if predicate():
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise self._timeout_error(timeout, describe, now - start)
            if now >= next_owner_check:
                next_owner_check = now + _OWNER_CHECK_INTERVAL
                if self._segment.released:
                    raise self._closed_error(f"wait for {_text(describe)}")
            current = self._w[_EPOCH]
            if current != epoch:
                epoch = current
                delay = _MIN_DELAY
            else:
                delay = min(delay * 2, _MAX_DELAY)

    def _release_all(self) -> int:
        depth = self._depth
        self._depth = 1
        self.release()
        for _ in range(depth - 1):
            self._rlock.release()
        return depth

    def _reacquire(self, depth: int) -> None:
        for _ in range(depth):
            self._rlock.acquire()
        self._depth = depth
        self._holder = _get_ident()
        if self._closed or self._w[_CLOSED]:
            return  # hold the thread lock only; the caller raises and its release undoes this
        _flock(self._fd, _EX)
        self._flocked = True
        if self._w[_OP] and self._callbacks:
            self._recover()

    def notify(self) -> None:
        """Tell waiters (in any process) the state changed, so they re-check now; call with the lock held."""
        self._w[_EPOCH] += 1

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the lock here; in the segment's creator, close it for every process.

        Waiters (here, or in other processes when the creator closes) stop with
        :class:`BufferClosedError` within a poll interval, and later acquires
        raise it. Closing twice is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        if self._segment.owner:
            self._w[_CLOSED] = 1
        if self._rlock.acquire(blocking=False):
            try:
                if self._depth == 0:
                    self._close_fd()
            finally:
                self._rlock.release()
        # else another thread holds it: its outermost release closes the descriptor

    @property
    def closed(self) -> bool:
        """Whether this lock was closed here, or by the segment's creator."""
        return self._closed or bool(self._w[_CLOSED])

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _after_fork_in_child(self) -> None:
        """A fork child's copy: forget the parent's holds and stop sharing its open file description."""
        self._rlock = threading.RLock()
        self._depth = 0
        self._ops = 0
        self._flocked = False
        self._holder = None
        self._pid = os.getpid()
        old = self._fd
        if old >= 0:
            try:
                self._fd = os.open(f"/proc/self/fd/{old}", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                self._fd = -1
                self._closed = True
            finally:
                os.close(old)

    # ------------------------------------------------------------ errors

    def _closed_error(self, doing: str) -> BufferClosedError:
        who = "this process" if self._closed else "the process that created the buffer"
        return BufferClosedError("buffer", "closed", "an open buffer", f"cannot {doing}: {who} closed it")

    @staticmethod
    def _timeout_error(timeout: float | None, describe: str | Callable[[], str], waited: float) -> RateLimitTimeout:
        return RateLimitTimeout("timeout", timeout, f"enough time for {_text(describe)}",
                                f"still not possible after {waited:.3g} s")

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("held" if self._depth else "free")
        return f"ProcessLock(segment={self._segment.name!r}, {state})"

    def __reduce__(self) -> Any:
        raise TypeError("a ProcessLock is not pickled: attach the segment in the other process and make its "
                        "ProcessLock there")


class _Operation:
    """The context manager :meth:`ProcessLock.operation` returns."""

    __slots__ = ("_arg", "_lock", "_op", "recovery")

    def __init__(self, lock: ProcessLock, op: int, arg: int) -> None:
        self._lock = lock
        self._op = op
        self._arg = arg
        self.recovery: Recovery | None = None

    def __enter__(self) -> Recovery | None:
        lock = self._lock
        self.recovery = lock.acquire()
        try:
            lock.begin(self._op, self._arg)
        except BaseException:
            lock.release()
            raise
        return self.recovery

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        lock = self._lock
        try:
            if exc_type is None:
                lock.end()
            else:
                lock._abandon()
        finally:
            lock.release()


_live_locks: weakref.WeakSet[ProcessLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_live_locks):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
