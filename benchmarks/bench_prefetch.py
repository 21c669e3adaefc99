"""How long a learner waits for its batch with ``buffer.prefetch`` (SPEC 6.1).

    PYTHONPATH=src python benchmarks/bench_prefetch.py [--capacity 1000000] [--steps 3000] [--work-us 200]
                                                       [--work sleep|numpy] [--depth 2] [--rounds 3]

A learner loop on a full prioritized buffer: take a batch of 256, spend
``--work-us`` microseconds on its own work that releases the GIL (``sleep``:
``time.sleep``; ``numpy``: a float32 matrix product sized to take that long, as
a torch or numpy training step would), then ``update_priorities`` of the batch.
It runs twice per round, one right after the other:

1. **direct**: ``batch = buffer.sample(256)`` in the loop;
2. **prefetch**: ``batch = next(batches)`` from ``buffer.prefetch(256, depth)``;
3. **floor**: the same loop fed by the least a prefetching thread can do: it
   gathers 256 random rows of the buffer's size with numpy (no buffer, no lock)
   into a deque of ``depth`` under a plain lock, and sleeps on a C lock while
   the deque is full; taking a batch is a ``popleft`` and one wake-up. Its wait
   is what handing a batch from one thread to another costs on this machine.

Printed per mode: the wait for the batch (the time ``sample`` or ``next`` takes)
per step, median and 90th percentile, and the whole step. The prefetch wait is
what the learner still pays; the goal is a few microseconds (taking a batch off
the queue), against the full sample cost of the direct loop. Medians of rounds;
the machine's load is printed with them.
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

from bench_concurrency import BATCH, data, full_buffer
from ReplayTables.PER import PrioritizedReplay


def make_work(kind: str, micros: float) -> Callable[[], None]:
    """A function that takes about ``micros`` µs and releases the GIL while it runs."""
    if kind == "sleep":
        seconds = micros / 1e6
        return lambda: time.sleep(seconds)
    size = 32
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    while True:  # grow the product until one call takes the time asked for
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        start = time.perf_counter()
        for _ in range(20):
            a @ a
        if (time.perf_counter() - start) / 20 * 1e6 >= micros or size > 4096:
            break
        size = int(size * 1.25) + 1
    return lambda: (a @ a, None)[1]


def floor_loop(capacity: int, steps: int, work: Callable[[], None], depth: int) -> dict[str, float]:
    """The ``floor`` mode: a bare producer thread of numpy gathers and the learner loop around it."""
    rows = np.random.default_rng(0).standard_normal((capacity, 42), dtype=np.float32)  # the buffer's row bytes
    picks = np.random.default_rng(1).integers(0, capacity, (64, BATCH))
    ready: collections.deque[np.ndarray] = collections.deque()
    mutex, room = threading.Lock(), threading.Lock()
    room.acquire()  # released once per wake-up of the sleeping producer
    state = {"waiting": False, "stop": False}

    def produce() -> None:
        i = 0
        while not state["stop"]:
            with mutex:
                full = len(ready) >= depth
                if full:
                    state["waiting"] = True
            if full:
                room.acquire()
                continue
            batch = rows[picks[i % 64]]
            i += 1
            with mutex:
                ready.append(batch)

    def take() -> np.ndarray:
        while True:
            with mutex:
                if ready:
                    batch = ready.popleft()
                    if state["waiting"]:
                        state["waiting"] = False
                        room.release()
                    return batch

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    take()
    waits = np.empty(steps)
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        take()
        waits[i] = time.perf_counter() - t0
        work()
    total = time.perf_counter() - start
    with mutex:
        state["stop"] = True
        if state["waiting"]:
            room.release()
    thread.join()
    return {"wait_median_us": float(np.median(waits) * 1e6), "wait_p90_us": float(np.percentile(waits, 90) * 1e6),
            "wait_mean_us": float(waits.mean() * 1e6), "step_us": total / steps * 1e6}


def loop(buffer: PrioritizedReplay, steps: int, work: Callable[[], None], depth: int | None) -> dict[str, float]:
    prios = np.random.default_rng(1).uniform(0.01, 2.0, size=(64, BATCH))
    waits = np.empty(steps)
    start = time.perf_counter()
    if depth is None:
        for i in range(steps):
            t0 = time.perf_counter()
            batch = buffer.sample(BATCH)
            waits[i] = time.perf_counter() - t0
            work()
            buffer.update_priorities(batch.ids, prios[i % 64])
    else:
        with buffer.prefetch(BATCH, depth=depth) as batches:
            next(batches)  # the thread is running and the queue filling
            start = time.perf_counter()
            for i in range(steps):
                t0 = time.perf_counter()
                batch = next(batches)
                waits[i] = time.perf_counter() - t0
                work()
                buffer.update_priorities(batch.ids, prios[i % 64])
    total = time.perf_counter() - start
    return {"wait_median_us": float(np.median(waits) * 1e6), "wait_p90_us": float(np.percentile(waits, 90) * 1e6),
            "wait_mean_us": float(waits.mean() * 1e6), "step_us": total / steps * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--work-us", type=float, default=200.0)
    parser.add_argument("--work", choices=("sleep", "numpy"), default="sleep")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    buffer = full_buffer(args.capacity, data())
    work = make_work(args.work, args.work_us)
    loop(buffer, 200, work, None)  # warm-up
    loop(buffer, 200, work, args.depth)
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "prefetch": [], "floor": []}
    for r in range(args.rounds):
        rows["direct"].append(loop(buffer, args.steps, work, None))
        rows["prefetch"].append(loop(buffer, args.steps, work, args.depth))
        rows["floor"].append(floor_loop(args.capacity, args.steps, work, args.depth))
        print(f"round {r + 1}/{args.rounds}: wait direct {rows['direct'][-1]['wait_median_us']:.1f} µs, prefetch "
              f"{rows['prefetch'][-1]['wait_median_us']:.1f} µs, floor {rows['floor'][-1]['wait_median_us']:.1f} µs "
              f"(median); load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nPER batches of {BATCH} from {args.capacity:,} items; learner work {args.work_us:g} µs per step "
          f"({args.work}); prefetch depth {args.depth}")
    print("| mode | wait per batch, median µs | wait p90 µs | wait mean µs | whole step µs |")
    print("|---|---|---|---|---|")
    for mode, rs in rows.items():
        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)
        print(f"| {mode} | {med('wait_median_us'):.1f} | {med('wait_p90_us'):.1f} | {med('wait_mean_us'):.1f} "
              f"| {med('step_us'):.1f} |")


if __name__ == "__main__":
    main()
