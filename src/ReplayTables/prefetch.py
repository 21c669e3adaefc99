"""Prefetch: samples drawn by a background thread, kept ready for a learner.

    with buffer.prefetch(256, depth=2) as batches:
        for step in range(steps):
            batch = next(batches)          # usually ready: no wait for the sample
            loss, td = learn(batch)        # torch / jax work that releases the GIL
            buffer.update_priorities(batch.ids, td)

A :class:`Prefetcher` owns one thread that calls the buffer's ``sample(n)``
and keeps up to ``depth`` batches in a queue. The buffer's lock makes each of
those samples atomic with respect to the learner's own calls, and the compiled
sampling kernels release the GIL, so sampling overlaps the learner's work on a
second core.

- **Staleness.** A batch is sampled when the thread draws it, so a priority
  update made by the learner applies to every batch drawn after it: at most
  ``depth`` batches waiting in the queue and the one being drawn were sampled
  before it.
- **Errors.** An error raised by ``sample`` in the thread (an empty buffer, a
  closed one) is raised by the consumer's next ``next()``, with its traceback;
  the thread then stops and the iterator ends after that error.
- **Closing.** :meth:`Prefetcher.close` (or leaving the ``with`` block) stops the
  thread and joins it; batches still queued are dropped. A prefetcher that is
  garbage collected without being closed stops its thread too.
- **Rate limiting.** The thread's samples wait for the buffer's rate limiter like
  any other; it waits in short slices so that ``close()`` can stop it.
"""
from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from ReplayTables.errors import ConfigError, RateLimitTimeout

__all__ = ["Prefetcher"]

B = TypeVar("B")

#: How long one wait of the thread for the rate limiter lasts before it checks for close().
_WAIT_SLICE = 0.05
#: How long close() waits for the thread to finish its current sample.
_JOIN_SECONDS = 60.0


class _Signal:
    """A one-shot wake-up for the one producer thread, on a C lock (no ``threading.Condition``).

    The waiter announces itself under the shared mutex (``waiting = True``) and
    then calls :meth:`wait` outside it; whoever makes its condition true clears
    ``waiting`` under the mutex and calls :meth:`wake`. Each announcement is
    paired with exactly one wake, so the lock, held while nobody is to be woken,
    is released once and taken once per wake-up (a wake that comes before the
    wait is not lost: the wait then returns at once). A ``Condition``'s Python
    ``notify`` costs about 2 µs on the learner's side of every batch; this costs
    one C call.
    """

    __slots__ = ("_lock", "waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.waiting = False

    def wait(self) -> None:
        self._lock.acquire()

    def wake(self) -> None:
        """Wake the announced waiter; call holding the mutex, with ``waiting`` true."""
        self.waiting = False
        self._lock.release()


class _Shared(Generic[B]):
    """What the consumer and the thread share (the thread never refers to the Prefetcher itself,
    so a prefetcher nobody holds can be collected and its thread stopped).

    ``mutex`` guards every field. The thread (one) sleeps on ``room``, a
    :class:`_Signal`, while the queue is full: waking it is what the learner pays
    on every batch, so it is one C call. Consumers (any number of threads) sleep
    on ``cond``, a ``Condition`` of the same mutex, only when the queue is empty;
    the thread notifies them only if someone waits there.
    """

    __slots__ = ("cond", "consumers_waiting", "depth", "failure", "mutex", "ready", "room", "stopped")

    def __init__(self, depth: int) -> None:
        self.mutex = threading.Lock()
        self.depth = depth
        self.ready: deque[B] = deque()
        self.failure: BaseException | None = None
        self.stopped = False
        self.room = _Signal()  # the thread waits for room in the queue
        self.cond = threading.Condition(self.mutex)  # consumers wait for a batch (or an error, or the end)
        self.consumers_waiting = 0

    def wake_consumer(self) -> None:
        """Call holding ``mutex`` after a batch, an error or a stop."""
        if self.consumers_waiting:
            self.cond.notify_all()

    def stop(self) -> None:
        with self.mutex:
            self.stopped = True
            self.ready.clear()
            if self.room.waiting:
                self.room.wake()
            self.wake_consumer()


def _produce(shared: _Shared[B], sample: Callable[..., B], n: int) -> None:
    mutex = shared.mutex
    try:
        while True:
            with mutex:
                if shared.stopped:
                    return
                full = len(shared.ready) >= shared.depth
                if full:
                    shared.room.waiting = True
            if full:
                shared.room.wait()  # woken by the consumer taking a batch, or by stop()
                continue
            try:
                batch = sample(n, timeout=_WAIT_SLICE)
            except RateLimitTimeout:
                continue  # the limiter holds samples back: look at stopped, then wait again
            with mutex:
                if shared.stopped:
                    return
                shared.ready.append(batch)
                shared.wake_consumer()
    except BaseException as exc:  # every error is the consumer's to see
        with mutex:
            shared.failure = exc
            shared.wake_consumer()


class Prefetcher(Generic[B], Iterator[B]):
    """An iterator of batches of ``n`` sampled by a background thread (see the module docstring).

    Args:
        sample: the buffer's ``sample``; called as ``sample(n, timeout=...)``.
        n: items per batch.
        depth: batches kept ready (an integer >= 1).
    """

    def __init__(self, sample: Callable[..., B], n: int, depth: int = 2) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError("n", n, "a number of items per batch (an integer >= 0)")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigError("depth", depth, "a number of batches kept ready (an integer >= 1)")
        self.n = n
        self.depth = depth
        self._shared: _Shared[B] = _Shared(depth)
        self._thread = threading.Thread(target=_produce, args=(self._shared, sample, n),
                                        name="ReplayTables-prefetch", daemon=True)
        self._finalizer = weakref.finalize(self, self._shared.stop)
        self._thread.start()

    def __iter__(self) -> Prefetcher[B]:
        return self

    def __next__(self) -> B:
        shared = self._shared
        with shared.mutex:  # the plain lock of the condition: a C call, not Condition.__enter__
            while not shared.ready:
                if shared.failure is not None:
                    failure, shared.failure = shared.failure, None
                    shared.stopped = True
                    raise failure
                if shared.stopped:
                    raise StopIteration
                shared.consumers_waiting += 1
                try:
                    shared.cond.wait()  # woken by a batch, an error or stop()
                finally:
                    shared.consumers_waiting -= 1
            batch = shared.ready.popleft()
            if shared.room.waiting:
                shared.room.wake()
            return batch

    @property
    def ready(self) -> int:
        """Batches waiting in the queue now."""
        return len(self._shared.ready)

    @property
    def closed(self) -> bool:
        return self._shared.stopped and not self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread and join it (queued batches are dropped); closing twice is harmless."""
        self._shared.stop()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_SECONDS)

    def __enter__(self) -> Prefetcher[B]:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._shared.stopped else "running"
        return f"<Prefetcher n={self.n} depth={self.depth} ready={self.ready} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("a Prefetcher (a running thread) cannot be pickled or copied")
