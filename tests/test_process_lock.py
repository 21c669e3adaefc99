"""ProcessLock: exclusion across processes and threads, a SIGKILLed holder, recovery, waiting and closing."""
from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from process_helpers import wait_for
from ReplayTables.engine.process_lock import ProcessLock, Recovery
from ReplayTables.engine.shared_memory import SharedArrays, SharedHandle
from ReplayTables.errors import BufferClosedError, ConfigError, RateLimitTimeout, ReplayTablesError

METHODS = ["fork", "spawn"]
OP_ADD = 3
# d: [a, b, victim pid (the "I hold it" signal), sibling's report, sibling's recovery pid, go]
LAYOUT = {"lock": ProcessLock.LAYOUT, "c": (4, np.int64), "d": (8, np.int64)}
WINDOW = 20e-6  # a sleep between reading and writing the counter: without the lock, updates are lost


@pytest.fixture
def seg() -> Iterator[SharedArrays]:
    s = SharedArrays.create(LAYOUT)
    yield s
    s.close()


@pytest.fixture
def lock(seg: SharedArrays) -> Iterator[ProcessLock]:
    lk = ProcessLock(seg)
    yield lk
    lk.close()


def _join(procs: list[Any], timeout: float = 60) -> None:
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"{p} exited with {p.exitcode}"


# ------------------------------------------------------------------ exclusion


def _bump(c: np.ndarray) -> None:
    v = int(c[0])
    time.sleep(WINDOW)  # another process that runs meanwhile reads the same v
    c[0] = v + 1


def _count(handle: SharedHandle, n: int, threads: int, use_lock: bool) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    c = seg.arrays["c"]
    while c[2] == 0:  # start together
        time.sleep(0.0005)

    def run() -> None:
        for _ in range(n):
            if use_lock:
                with lock:
                    _bump(c)
            else:
                _bump(c)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    lock.close()
    seg.close()


def _run_counters(seg: SharedArrays, method: str, procs: int, threads: int, n: int, use_lock: bool) -> int:
    ctx = mp.get_context(method)
    c = seg.arrays["c"]
    c[:] = 0
    ps = [ctx.Process(target=_count, args=(seg.handle(), n, threads, use_lock)) for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.05 if method == "fork" else 0.5)
    c[2] = 1
    _join(ps)
    return int(c[0])


@pytest.mark.parametrize("method, procs", [("fork", 4), ("spawn", 2)])
def test_processes_incrementing_under_the_lock_lose_nothing(seg: SharedArrays, method: str, procs: int) -> None:
    n = 150
    assert _run_counters(seg, method, procs, 1, n, use_lock=True) == procs * n


def test_processes_and_their_threads_together_lose_nothing(seg: SharedArrays) -> None:
    assert _run_counters(seg, "fork", 2, 3, 60, use_lock=True) == 2 * 3 * 60


def test_negative_control_without_the_lock_increments_are_lost(seg: SharedArrays) -> None:
    """The same workers without the lock: each sleeps between read and write, so overlapping workers
    overwrite each other. Not deterministic in principle (a scheduler could run them one after the
    other), but with both started together and each in its window most of the time, a run of 150
    increments each that loses none does not happen in practice."""
    n = 150
    total = _run_counters(seg, "fork", 2, 1, n, use_lock=False)
    assert total < 2 * n


def test_two_lock_objects_in_one_process_exclude_each_other(seg: SharedArrays, lock: ProcessLock) -> None:
    other = ProcessLock(SharedArrays.attach(seg.handle()))
    got = threading.Event()

    def take() -> None:
        with other:
            got.set()

    with lock:
        t = threading.Thread(target=take)
        t.start()
        time.sleep(0.1)
        assert not got.is_set()
    t.join(5)
    assert got.is_set()
    other.close()


def _report_when_held(handle: SharedHandle) -> None:
    seg = SharedArrays.attach(handle)
    with ProcessLock(seg):
        seg.arrays["d"][3] = 1


@pytest.mark.parametrize("method", METHODS)
def test_reentrant_holds_keep_other_processes_out_until_the_outermost_release(
        seg: SharedArrays, lock: ProcessLock, method: str) -> None:
    d = seg.arrays["d"]
    lock.acquire()
    lock.acquire()
    assert lock.held
    p = mp.get_context(method).Process(target=_report_when_held, args=(seg.handle(),))
    p.start()
    time.sleep(0.3 if method == "fork" else 1.0)
    assert d[3] == 0
    lock.release()
    time.sleep(0.1)
    assert d[3] == 0 and lock.held  # still held once
    lock.release()
    assert not lock.held
    _join([p])
    assert d[3] == 1


def _report_with_inherited(lock: ProcessLock, d: np.ndarray) -> None:
    with lock:
        d[3] = 1


@pytest.mark.parametrize("attach", [False, True])
def test_a_fork_child_does_not_inherit_the_parents_hold(seg: SharedArrays, lock: ProcessLock, attach: bool) -> None:
    """The child uses the lock object it inherited, or attaches anew; either way it waits for the parent."""
    d = seg.arrays["d"]
    ctx = mp.get_context("fork")
    with lock:
        p = (ctx.Process(target=_report_when_held, args=(seg.handle(),)) if attach
             else ctx.Process(target=_report_with_inherited, args=(lock, d)))
        p.start()
        time.sleep(0.3)
        assert d[3] == 0  # the child waits for the parent
    _join([p])
    assert d[3] == 1


def _flock_inherited(fd: int, out: Any) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out.put("acquired")
    except BlockingIOError:
        out.put("blocked")


def test_negative_control_an_inherited_descriptor_shares_the_parents_flock(seg: SharedArrays) -> None:
    """Why each fork child reopens its descriptor: with the parent's, flock lets the child in."""
    fd = seg.open_file()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        p = ctx.Process(target=_flock_inherited, args=(fd, out))
        p.start()
        assert out.get(timeout=10) == "acquired"
        p.join(10)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ a SIGKILLed holder

STOPS = ("holding", "begun", "half", "written", "ended")  # where the victim stops; it holds the lock in every one
MID_OPERATION = {"begun", "half", "written"}


def _victim(handle: SharedHandle, prior: int, stop: str) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    d = seg.arrays["d"]
    for _ in range(prior):  # complete operations first
        with lock.operation(OP_ADD, arg=int(d[1])):
            d[0] += 1
            d[1] += 1
    lock.acquire()
    if stop != "holding":
        lock.begin(OP_ADD, arg=int(d[1]))
        if stop in ("half", "written", "ended"):
            d[0] += 1
        if stop in ("written", "ended"):
            d[1] += 1
        if stop == "ended":
            lock.end()
    d[2] = os.getpid()  # "I hold the lock, stopped at `stop`"
    time.sleep(60)


def _rollback(seg: SharedArrays, seen: list[Recovery]) -> Any:
    d = seg.arrays["d"]

    def repair(info: Recovery) -> None:
        seen.append(info)
        d[0] = d[1] = info.arg  # make the half-done operation invisible: back to before it began

    return repair


def _acquire_once(lock: ProcessLock, got: list[Recovery | None]) -> None:
    got.append(lock.acquire())
    lock.release()


def test_a_holder_sigkilled_at_random_moments_never_deadlocks_and_the_next_holder_recovers(
        seg: SharedArrays, lock: ProcessLock) -> None:
    d = seg.arrays["d"]
    seen: list[Recovery] = []
    lock.on_recover(_rollback(seg, seen))
    ctx = mp.get_context("fork")
    committed = 0
    stops_seen = set()
    for trial in range(20):
        rng = np.random.default_rng(1000 + trial)
        prior, stop, delay = int(rng.integers(0, 20)), str(rng.choice(STOPS)), float(rng.uniform(0, 0.003))
        stops_seen.add(stop)
        d[2] = 0
        victim = ctx.Process(target=_victim, args=(seg.handle(), prior, stop))
        victim.start()
        pid = victim.pid
        assert wait_for(lambda: d[2] == pid, timeout=10), f"trial {trial}: victim never held the lock"  # noqa: B023
        got: list[Recovery | None] = []
        waiter = threading.Thread(target=_acquire_once, args=(lock, got))
        waiter.start()
        time.sleep(delay)
        assert not got, f"trial {trial}: the lock let a second holder in"
        os.kill(victim.pid, signal.SIGKILL)
        waiter.join(10)
        assert not waiter.is_alive(), f"trial {trial}: deadlock after the holder was killed at {stop}"
        victim.join(10)
        committed += prior + (stop == "ended")
        rec = got[0]
        if stop in MID_OPERATION:
            assert rec is not None and rec == seen[-1], (trial, stop)
            assert (rec.pid, rec.op, rec.died) == (victim.pid, OP_ADD, True)
        else:
            assert rec is None, (trial, stop)
        assert int(d[0]) == int(d[1]) == committed, (trial, stop)
    assert stops_seen == set(STOPS)  # the seeds cover every stopping point
    assert lock.recoveries == len(seen) >= 5
    with lock:
        assert lock.pending is None


def _sibling(handle: SharedHandle) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    d = seg.arrays["d"]
    seen: list[Recovery] = []
    lock.on_recover(_rollback(seg, seen))
    d[5] = 1  # about to block
    with lock:
        d[3] = 1 + len(seen)
        d[4] = seen[0].pid if seen else 0


@pytest.mark.parametrize("victim_method, sibling_method", [("fork", "fork"), ("fork", "spawn"), ("spawn", "fork")])
def test_another_process_waiting_for_a_killed_holder_gets_the_lock_and_recovers(
        seg: SharedArrays, victim_method: str, sibling_method: str) -> None:
    d = seg.arrays["d"]
    d[:] = 0
    d[0] = d[1] = 4
    victim = mp.get_context(victim_method).Process(target=_victim, args=(seg.handle(), 2, "half"))
    victim.start()
    assert wait_for(lambda: d[2] == victim.pid, timeout=30)
    sibling = mp.get_context(sibling_method).Process(target=_sibling, args=(seg.handle(),))
    sibling.start()
    assert wait_for(lambda: d[5] == 1, timeout=30)
    time.sleep(0.05)
    assert d[3] == 0  # blocked behind the victim
    os.kill(victim.pid, signal.SIGKILL)
    _join([sibling], timeout=30)
    victim.join(10)
    assert (d[3], d[4]) == (2, victim.pid)  # the sibling was told to recover, and repaired
    assert d[0] == d[1] == 6


# ------------------------------------------------------------------ recovery within one process


def test_an_exception_out_of_an_operation_leaves_it_marked_for_repair(lock: ProcessLock) -> None:
    with pytest.raises(ValueError), lock.operation(OP_ADD, arg=7):
        raise ValueError("stopped half-way")
    assert not lock.held
    with lock as rec:
        assert rec == Recovery(pid=os.getpid(), op=OP_ADD, arg=7, died=False)
        assert lock.pending == rec  # no callback: it stays until the holder says it repaired
    with lock as again:
        assert again == rec
        lock.recovered()
    with lock as after:
        assert after is None and lock.pending is None
    assert lock.recoveries == 1


def test_a_completed_operation_and_nested_begins_leave_no_mark(lock: ProcessLock) -> None:
    with lock.operation(OP_ADD):
        lock.begin(9)  # nested: the outer operation stays the marked one
        lock.end()
    with lock as rec:
        assert rec is None


def test_a_failing_repair_keeps_the_mark_and_releases_the_lock(lock: ProcessLock) -> None:
    with pytest.raises(KeyError), lock.operation(OP_ADD, arg=1):
        raise KeyError("x")
    calls: list[int] = []

    def repair(info: Recovery) -> None:
        calls.append(info.arg)
        if len(calls) == 1:
            raise RuntimeError("repair failed")

    lock.on_recover(repair)
    with pytest.raises(RuntimeError, match="repair failed"):
        lock.acquire()
    assert not lock.held
    with lock as rec:  # tried again, and this time it worked
        assert rec is not None and calls == [1, 1] and lock.pending is None


def test_misuse_is_refused(seg: SharedArrays, lock: ProcessLock) -> None:
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    with pytest.raises(RuntimeError, match="held"):
        lock.begin(OP_ADD)
    with pytest.raises(RuntimeError, match="begin"):
        lock.end()
    with pytest.raises(RuntimeError, match="held"):
        lock.wait_until(lambda: True)
    with lock:
        with pytest.raises(ConfigError, match="op"):
            lock.begin(0)
        with lock.operation(OP_ADD), pytest.raises(RuntimeError, match="half-done"):
            lock.wait_until(lambda: True)
    assert not lock.held and lock.pending is None
    with pytest.raises(ConfigError, match="words"):
        ProcessLock(seg, "missing")
    with pytest.raises(ConfigError, match=r"layout\['c'\]"):
        ProcessLock(seg, "c")


# ------------------------------------------------------------------ waiting


def test_wait_until_returns_at_once_when_true_and_times_out_with_the_limiters_error(lock: ProcessLock) -> None:
    with lock:
        lock.wait_until(lambda: True, timeout=0)
        with pytest.raises(RateLimitTimeout, match="two items") as info:
            lock.wait_until(lambda: False, timeout=0, describe="two items")
        assert isinstance(info.value, ReplayTablesError) and isinstance(info.value, TimeoutError)
        start = time.monotonic()
        with pytest.raises(RateLimitTimeout, match="three items"):
            lock.wait_until(lambda: False, timeout=0.05, describe=lambda: "three items")
        assert 0.05 <= time.monotonic() - start < 5.0
        assert lock.held  # it comes back holding the lock
        for bad in (-1, float("nan"), "1", True):
            with pytest.raises(ConfigError, match="timeout"):
                lock.wait_until(lambda: True, timeout=bad)  # type: ignore[arg-type]
        lock.wait_until(lambda: True, timeout=float("inf"))


def _producer(handle: SharedHandle, n: int) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    c = seg.arrays["c"]
    for _ in range(n):
        time.sleep(0.002)
        with lock:
            c[3] += 1
            lock.notify()


@pytest.mark.parametrize("method", METHODS)
def test_wait_until_sees_another_process_make_it_true(seg: SharedArrays, lock: ProcessLock, method: str) -> None:
    c = seg.arrays["c"]
    p = mp.get_context(method).Process(target=_producer, args=(seg.handle(), 5))
    with lock:
        p.start()
        lock.wait_until(lambda: c[3] >= 5, timeout=30, describe="five items")
        assert lock.held and c[3] == 5
    _join([p])


def test_close_from_another_thread_wakes_a_waiter(lock: ProcessLock) -> None:
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            with lock:
                lock.wait_until(lambda: False, timeout=30, describe="forever")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    lock.close()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], BufferClosedError)
    assert lock.closed
    with pytest.raises(BufferClosedError):
        lock.acquire()


def _wait_in_child(handle: SharedHandle) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    d = seg.arrays["d"]
    d[5] = 1
    try:
        with lock:
            lock.wait_until(lambda: False, timeout=30)
    except BufferClosedError:
        d[3] = 1
    try:
        lock.acquire()
    except BufferClosedError:
        d[4] = 1


def test_the_creator_closing_the_lock_wakes_waiters_in_other_processes(seg: SharedArrays,
                                                                       lock: ProcessLock) -> None:
    d = seg.arrays["d"]
    p = mp.get_context("fork").Process(target=_wait_in_child, args=(seg.handle(),))
    p.start()
    assert wait_for(lambda: d[5] == 1, timeout=10)
    time.sleep(0.05)
    lock.close()
    _join([p], timeout=10)
    assert (d[3], d[4]) == (1, 1)


def _create_and_hang(out: Any) -> None:
    seg = SharedArrays.create(LAYOUT)
    out.put(seg.handle())
    time.sleep(60)


def test_a_waiter_stops_when_the_segments_creator_dies() -> None:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    creator = ctx.Process(target=_create_and_hang, args=(out,))
    creator.start()
    seg = SharedArrays.attach(out.get(timeout=10))
    lock = ProcessLock(seg)
    threading.Timer(0.1, os.kill, (creator.pid, signal.SIGKILL)).start()
    start = time.monotonic()
    with lock, pytest.raises(BufferClosedError):
        lock.wait_until(lambda: False, timeout=30)
    assert time.monotonic() - start < 5
    creator.join(10)
    lock.close()
    seg.close()
