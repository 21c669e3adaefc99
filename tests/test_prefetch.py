"""``buffer.prefetch(n, depth)`` (SPEC 6.1): batches sampled by a background thread.

Each test drives the public API only: the batches, the buffer's counters, and
the iterator's ``close()`` / context manager. Thread timing bounds are generous
(a busy machine): "released" means within 1 s.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Any

import numpy as np
import pytest

from conftest import Transition, items
from ReplayTables.batch import Batch
from ReplayTables.errors import BufferClosedError, ConfigError, EmptyBufferError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.prefetch import Prefetcher
from ReplayTables.rate_limiters import MinSize
from ReplayTables.ReplayBuffer import ReplayBuffer
from ReplayTables.trajectory import TrajectoryReplay, TransitionBatch

RELEASED = 1.0


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ReplayTables-prefetch"]


def filled_per(n: int = 100, seed: int = 0) -> PrioritizedReplay:
    buffer = PrioritizedReplay(128, Transition, seed, PERConfig(uniform_probability=0.0, priority_exponent=1.0))
    buffer.add_batch(items(np.arange(n)))
    return buffer


@pytest.mark.parametrize("make", [lambda: ReplayBuffer(64, Transition, 1), lambda: filled_per(0)],
                         ids=["rb", "per"])
def test_batches_are_samples_of_n_whose_rows_are_their_ids(make: Any) -> None:
    buffer = make()
    buffer.add_batch(items(np.arange(40)))
    with buffer.prefetch(16, depth=3) as batches:
        got = [next(batches) for _ in range(10)]
    for batch in got:
        assert isinstance(batch, Batch) and batch.ids.shape == (16,)
        stored = buffer.get(batch.ids)
        np.testing.assert_array_equal(batch.a, stored.a)  # each row is the row of its id
        np.testing.assert_array_equal(batch.x[:, 0], batch.a.astype(np.float64))
    assert buffer.stats()["sampled"] >= 10 * 16


def test_priority_updates_apply_to_every_batch_after_the_ones_already_drawn() -> None:
    depth = 2
    buffer = filled_per()
    target = 7
    with buffer.prefetch(32, depth=depth) as batches:
        first = next(batches)
        assert np.unique(first.ids).size > 5  # equal priorities: a spread of items (the control)
        others = np.setdiff1d(np.arange(100), [target])
        buffer.update_priorities(others, np.full(others.size, 1e-9))
        buffer.update_priorities(np.array([target]), np.array([1e6]))
        # at most depth queued + 1 being drawn were sampled before the update
        for _ in range(depth + 1):
            next(batches)
        later = [next(batches) for _ in range(5)]
    for batch in later:
        np.testing.assert_array_equal(batch.ids, np.full(32, target))


def test_an_error_in_the_thread_is_raised_by_next_and_ends_the_iterator() -> None:
    buffer = ReplayBuffer(8, Transition, 0)
    batches = buffer.prefetch(4)
    with pytest.raises(EmptyBufferError):
        next(batches)
    with pytest.raises(StopIteration):
        next(batches)
    batches.close()
    assert batches.closed


def test_close_joins_the_thread_and_ends_iteration() -> None:
    buffer = filled_per()
    before = len(prefetch_threads())
    batches = buffer.prefetch(8, depth=2)
    next(batches)
    assert len(prefetch_threads()) == before + 1
    batches.close()
    batches.close()  # twice is harmless
    assert batches.closed and len(prefetch_threads()) == before
    with pytest.raises(StopIteration):
        next(batches)
    with buffer.prefetch(8) as inner:
        next(inner)
    assert inner.closed and len(prefetch_threads()) == before


def test_closing_stops_a_thread_that_waits_for_the_rate_limiter() -> None:
    buffer = ReplayBuffer(16, Transition, 0, rate_limiter=MinSize(4))
    before = len(prefetch_threads())
    batches = buffer.prefetch(2)
    time.sleep(0.1)  # the thread is waiting for the limiter now
    start = time.monotonic()
    batches.close()
    assert time.monotonic() - start < RELEASED and len(prefetch_threads()) == before


def test_a_rate_limited_prefetch_starts_once_the_limiter_allows() -> None:
    buffer = ReplayBuffer(16, Transition, 0, rate_limiter=MinSize(4))
    with buffer.prefetch(2) as batches:
        time.sleep(0.1)
        assert batches.ready == 0
        buffer.add_batch(items(np.arange(4)))
        start = time.monotonic()
        batch = next(batches)
        assert time.monotonic() - start < RELEASED and batch.ids.shape == (2,)


def test_closing_the_buffer_surfaces_in_the_consumer() -> None:
    buffer = ReplayBuffer(16, Transition, 0, rate_limiter=MinSize(4))
    batches = buffer.prefetch(2)
    time.sleep(0.05)
    buffer.close()
    with pytest.raises(BufferClosedError):
        next(batches)
    batches.close()


def test_the_step_stream_buffer_prefetches_transitions() -> None:
    buffer = TrajectoryReplay(64, obs_shape=(2,), obs_dtype=np.float32, n_step=2, rng=0)
    buffer.begin_episode(np.zeros(2, np.float32))
    for t in range(20):
        buffer.add_step(t % 3, float(t), np.full(2, t + 1, np.float32), False, False)
    with buffer.prefetch(8) as batches:
        batch = next(batches)
    assert isinstance(batch, TransitionBatch) and batch.ids.shape == (8,)
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.obs[:, 0] + 2)  # n_step=2 and rows agree


def test_a_prefetcher_nobody_holds_stops_its_thread() -> None:
    buffer = filled_per()
    before = len(prefetch_threads())
    batches = buffer.prefetch(4)
    next(batches)
    del batches
    gc.collect()
    deadline = time.monotonic() + RELEASED
    while len(prefetch_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(prefetch_threads()) == before


@pytest.mark.parametrize("n, depth", [(-1, 2), (1.5, 2), (4, 0), (4, True), (4, "2")])
def test_bad_arguments_are_config_errors(n: Any, depth: Any) -> None:
    buffer = filled_per()
    with pytest.raises(ConfigError):
        buffer.prefetch(n, depth)


def test_a_prefetcher_cannot_be_pickled() -> None:
    import pickle

    with filled_per().prefetch(2) as batches, pytest.raises(TypeError):
        pickle.dumps(batches)
    assert isinstance(batches, Prefetcher)


def test_the_thread_refills_the_queue_after_every_batch_taken() -> None:
    """A learner faster than the thread (the queue empty) and one slower (the thread asleep on a full
    queue) both get every batch: no wake-up of either side is lost (20,000 hand-overs)."""
    buffer = filled_per()
    with buffer.prefetch(4, depth=1) as batches:
        for i in range(20_000):
            assert len(next(batches).ids) == 4
            if i % 1000 == 0:
                time.sleep(0.002)  # the thread fills the queue and goes to sleep on it
        assert buffer.stats()["sampled"] >= 4 * 20_000


def test_several_consumer_threads_share_one_prefetcher() -> None:
    """Two threads calling next() on one prefetcher each get whole batches and none waits forever."""
    buffer = filled_per()
    got: list[int] = []
    with buffer.prefetch(4, depth=2) as batches:
        def consume() -> None:
            for _ in range(2_000):
                got.append(len(next(batches).ids))

        threads = [threading.Thread(target=consume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    assert got == [4] * 4_000
