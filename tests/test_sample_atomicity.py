"""Atomic samples and the table lock.

1. Every public call of ``Table`` (one row per item, and step ranges) holds ``table.lock``: while
   another thread holds it, the call does not finish (checked after 100 ms) and
   it finishes within 5 s of the release. Negative control: ``size`` (a plain
   attribute read, no lock) finishes while the lock is held, so the probe can tell.
2. A sample's rows are the rows of its ids at one instant, with a writer thread
   overwriting the ring all the while (FIFO: item ``k`` has id ``k``, so every
   sampled row must equal its id). Negative control: reading the sampled slots in
   a second call after the ring has moved on returns other items' rows.
"""
from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conftest import Transition, item, items
from ReplayTables.engine.draws import Draws
from ReplayTables.engine.layouts.step_ranges import StepRanges
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.table import Table
from ReplayTables.engine.table_lock import TableLock
from ReplayTables.errors import StaleIdError
from ReplayTables.rllib import FifoReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer

HELD = 0.1  # seconds a call must stay blocked while the lock is held
RELEASED = 5.0  # seconds within which it must finish once the lock is free


def blocks_while_locked(lock: Any, call: Callable[[], Any]) -> bool:
    """True if ``call`` waits for ``lock`` held by this thread, and finishes once it is released."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        done.set()

    with lock:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        blocked = not done.wait(HELD)
    assert done.wait(RELEASED), "the call did not finish after the lock was released"
    worker.join(RELEASED)
    if errors:
        raise errors[0]
    return blocked


def table(prioritized: bool) -> Table:
    sampler = PrioritizedSampler(16, uniform_probability=0.1) if prioritized else None
    return Table(16, Transition, sampler=sampler, rng=0)


@pytest.mark.parametrize("prioritized", [False, True])
def test_every_public_table_call_holds_the_lock(prioritized: bool) -> None:
    t = table(prioritized)
    assert isinstance(t.lock, TableLock)
    assert blocks_while_locked(t.lock, lambda: t.add(item(0)))  # general lane (compiles the fast one)
    assert t._add_fast is not None
    assert blocks_while_locked(t.lock, lambda: t.add(item(1)))  # generated lane
    assert blocks_while_locked(t.lock, lambda: t.add_batch(items(range(2, 4))))  # general batch lane
    assert t._add_batch_fast is not None
    assert blocks_while_locked(t.lock, lambda: t.add_batch(items(range(4, 6))))  # generated batch lane
    ids = t.sample(4).ids
    state = copy.deepcopy(t.state_dict())
    calls: list[Callable[[], Any]] = [
        lambda: t.sample(4), lambda: t.sample_from(Draws(np.array([0.5]), np.array([0.5]))),
        lambda: t.get(ids), lambda: t.locate(ids), lambda: t.mass(), lambda: t.state_dict(),
        lambda: t.load_state_dict(state), lambda: t.delete(ids[:1])]
    if prioritized:
        calls.append(lambda: t.update_priorities(ids, np.ones(ids.size)))
    for call in calls:
        assert blocks_while_locked(t.lock, call)
    # negative control: a call that takes no lock is seen to finish while the lock is held
    assert not blocks_while_locked(t.lock, lambda: t.size)


def test_every_public_step_range_table_call_holds_the_lock() -> None:
    t = Table(32, layout=StepRanges(32), sampler=PrioritizedSampler(32), rng=0)
    columns = {"v": np.arange(6)}
    assert blocks_while_locked(t.lock, lambda: t.add_items(columns, [2, 2, 2]))
    ids = t.oldest(3)
    _, slots = t.locate(ids)
    state = copy.deepcopy(t.state_dict())
    for call in (lambda: t.sample(2), lambda: t.update_priorities(ids, [1.0, 2.0, 3.0]), lambda: t.mass(),
                 lambda: t.check_items(columns, [6]), lambda: t.read(slots), lambda: t.read_windows(slots, 1, 3),
                 lambda: t.hit_counts(ids), lambda: t.ids_of(slots), lambda: t.get(ids),
                 lambda: t.state_dict(), lambda: t.load_state_dict(state), lambda: t.oldest(1),
                 lambda: t.take_oldest(1, t.read), lambda: t.delete(t.oldest(1))):
        assert blocks_while_locked(t.lock, call)
    assert not blocks_while_locked(t.lock, lambda: t.size)


def hammer(add: Callable[[int], None], check: Callable[[], None], *, checks_wanted: int = 60,
           adds_wanted: int = 60, timeout: float = 120.0) -> int:
    """Run ``add(k)`` for k = 0, 1, ... in a thread while ``check()`` runs here.

    Both loops run until each has done its wanted count, so the overlap a test relies on is
    counted, not timed: a loaded machine makes the run longer, never weaker. Returns the
    checks done; fails if the counts are not reached within ``timeout`` seconds.
    """
    stop = threading.Event()
    errors: list[BaseException] = []
    adds = [0]

    def writer() -> None:
        try:
            while not stop.is_set():
                add(adds[0])
                adds[0] += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    checks = 0
    try:
        while not errors and (checks < checks_wanted or adds[0] < adds_wanted):
            assert time.monotonic() < deadline, f"{checks} checks and {adds[0]} adds in {timeout} s"
            check()
            checks += 1
    finally:
        stop.set()
        thread.join(10)
    if errors:
        raise errors[0]
    return checks


@pytest.mark.parametrize("prioritized", [False, True])
def test_sampled_rows_are_the_rows_of_their_ids_under_concurrent_adds(prioritized: bool) -> None:
    t = table(prioritized)
    t.add_batch(items(range(16)))
    next_k = [16]

    def add(_: int) -> None:
        k = next_k[0]
        if k % 3:
            t.add(item(k))
            next_k[0] = k + 1
        else:
            t.add_batch(items(range(k, k + 5)))
            next_k[0] = k + 5

    def check() -> None:
        s = t.sample(32)
        np.testing.assert_array_equal(s.fields[1], s.ids)  # item k has id k (FIFO)
        np.testing.assert_array_equal(s.fields[0][:, 0], s.ids)
        try:
            g = t.get(s.ids[:4])
        except StaleIdError:  # overwritten since the sample: refused, never someone else's row
            return
        np.testing.assert_array_equal(g.fields[1], g.ids)

    assert hammer(add, check) >= 60


def test_negative_control_a_second_read_sees_other_items() -> None:
    t = table(False)
    t.add_batch(items(range(16)))
    s = t.sample(8)
    t.add_batch(items(range(16, 32)))  # the ring moves on between sampling and reading
    assert t.storage is not None
    later = t.storage.gather(s.slots)[1]
    assert not np.array_equal(later, s.ids)  # the check above would catch a non-atomic sample
    np.testing.assert_array_equal(s.fields[1], s.ids)  # the atomic sample still holds its own rows


@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplayBuffer])
def test_rllib_samples_are_atomic_under_concurrent_adds(cls: type) -> None:
    b = cls(capacity=32)
    for k in range(32):
        b.add({"obs": np.array([k]), "k": np.array([k])})

    def add(k: int) -> None:
        b.add({"obs": np.array([32 + k]), "k": np.array([32 + k])})

    def check() -> None:
        s = b.sample(16)
        np.testing.assert_array_equal(s["obs"], s["k"])
        if "batch_indexes" in s:
            np.testing.assert_array_equal(s["batch_indexes"], s["k"])  # item k has id k here

    assert hammer(add, check) >= 60


def test_fifo_pop_is_atomic_under_concurrent_adds() -> None:
    b = FifoReplayBuffer(capacity=64, storage_unit="timesteps")
    seen: list[int] = []

    def add(k: int) -> None:
        b.add({"k": np.array([k])})

    def check() -> None:
        s = b.sample(4)
        if len(s):
            seen.extend(s["k"].tolist())

    hammer(add, check)
    # each item is returned at most once, in order (evicted ones are skipped, never repeated)
    assert seen == sorted(set(seen))
