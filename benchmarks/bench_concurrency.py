"""A learner and two writers on one prioritized buffer in one process (threads, SPEC 6.1).

    PYTHONPATH=src python benchmarks/bench_concurrency.py [--capacity 1000000] [--seconds 3] [--rounds 3]
                                                          [--writer-rate ROWS_PER_S] [--floor]

The learner thread does what a DQN learner does with PER: ``sample(256)`` then
``update_priorities`` of those ids. Two writer threads call ``add_batch`` of 64
transitions (the W1-W4 transition: 17 + 6 + 1 + 17 floats and a flag). Each
round runs, for ``--seconds`` each and one right after the other:

1. **solo**: the learner alone on the full buffer;
2. **shared**: the learner while both writers add as fast as they can, or, with
   ``--writer-rate R``, paced to ``R`` rows/s in all (each writer sleeps between
   batches to hold ``R / 2``);
3. with ``--floor``, **floor**: the learner while both writers do, at the same pace,
   only what numpy-ref does for those rows (one slice write per field into plain
   preallocated arrays, no buffer, no lock). That is the least Python a writer
   thread can run to move the rows, so its ratio is the most any buffer can reach
   on this machine and interpreter: the GIL hand-offs between three threads on two
   cores, not the buffer, set it.

Printed: the learner's steps/s solo and shared, their ratio (shared / solo, one
ratio per round, median and range), and the writers' rows/s. Both modes run in
the same process back to back, so the ratio compares like with like; the
absolute numbers depend on the machine and its load (``os.getloadavg()`` is
printed with them).

Threads share one interpreter: the buffer's lock makes each call atomic, and the
compiled kernels (sum-tree descent, gather, priority update) release the GIL, so
a writer's Python runs while the learner is inside a kernel and vice versa. The
Python parts of the calls still take turns on the GIL; that is what the ratio
measures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay

BATCH = 256
WRITE_BATCH = 64
POOL = 65_536
STRUCTURE = {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
             "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
             "done": FieldSpec((), np.bool_)}


def data(seed: int = 12345) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((POOL + 1, 17), dtype=np.float32)
    return {"obs": states[:-1], "action": rng.uniform(-1, 1, (POOL, 6)).astype(np.float32),
            "reward": rng.standard_normal(POOL).astype(np.float32), "next_obs": states[1:],
            "done": np.zeros(POOL, bool)}


def full_buffer(capacity: int, pool: dict[str, np.ndarray]) -> PrioritizedReplay:
    buffer = PrioritizedReplay(capacity, STRUCTURE, 0, PERConfig(priority_exponent=0.6, beta=0.4))
    done = 0
    while done < capacity:
        c = min(POOL, capacity - done)
        ids = buffer.add_batch({k: v[:c] for k, v in pool.items()})
        buffer.update_priorities(ids, np.random.default_rng(done).uniform(0.01, 2.0, c))
        done += c
    return buffer


def learner(buffer: PrioritizedReplay, stop: threading.Event, out: dict[str, Any]) -> None:
    prios = np.random.default_rng(1).uniform(0.01, 2.0, size=(64, BATCH))
    steps = 0
    start = time.perf_counter()
    while not stop.is_set():
        batch = buffer.sample(BATCH)
        buffer.update_priorities(batch.ids, prios[steps % 64])
        steps += 1
    out["learner_steps_per_s"] = steps / (time.perf_counter() - start)


def writer(buffer: Any, batches: list[dict[str, np.ndarray]], stop: threading.Event,
           rate: float | None, out: dict[str, Any], name: str) -> None:
    rows = 0
    start = time.perf_counter()
    interval = None if rate is None else WRITE_BATCH / rate
    next_at = start
    i = 0
    while not stop.is_set():
        buffer.add_batch(batches[i % len(batches)])
        rows += WRITE_BATCH
        i += 1
        if interval is not None:
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    out[name] = rows / (time.perf_counter() - start)


class NumpyRef:
    """numpy-ref's writes for the floor phase: plain arrays, one slice write per field, a ring cursor."""

    def __init__(self, capacity: int, pool: dict[str, np.ndarray]) -> None:
        self.capacity = capacity
        self.columns = {k: np.ones((capacity, *v.shape[1:]), v.dtype) for k, v in pool.items()}
        self.cursor = 0

    def add_batch(self, items: dict[str, np.ndarray]) -> None:
        s = self.cursor
        m = len(items["obs"])
        if s + m > self.capacity:
            s = 0
        for k, v in items.items():
            self.columns[k][s:s + m] = v
        self.cursor = s + m


def run(buffer: PrioritizedReplay, batches: list[dict[str, np.ndarray]], seconds: float, writers: int,
        rate: float | None, sink: Any = None) -> dict[str, Any]:
    """One phase: the learner on ``buffer``; ``writers`` threads adding to ``sink`` (default: the buffer)."""
    stop = threading.Event()
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=learner, args=(buffer, stop, out))]
    for w in range(writers):
        per_writer = None if rate is None else rate / writers
        threads.append(threading.Thread(target=writer, args=(buffer if sink is None else sink, batches[w::writers],
                                                             stop, per_writer, out, f"writer{w}")))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    out["writer_rows_per_s"] = sum(v for k, v in out.items() if k.startswith("writer") and k != "writer_rows_per_s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writer-rate", type=float, default=None, help="rows/s of both writers together (paced)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval(seconds) for the run (CPython's default is 0.005)")
    parser.add_argument("--json", action="store_true", help="print the per-round figures as JSON too")
    parser.add_argument("--floor", action="store_true",
                        help="also run the learner beside numpy-ref writers at the same pace (the machine's floor)")
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    pool = data()
    buffer = full_buffer(args.capacity, pool)
    batches = [{k: v[s:s + WRITE_BATCH] for k, v in pool.items()} for s in range(0, POOL - WRITE_BATCH + 1,
                                                                                 WRITE_BATCH)]
    floor_sink = NumpyRef(args.capacity, pool) if args.floor else None
    run(buffer, batches, min(0.5, args.seconds), 2, args.writer_rate)  # warm-up (kernels compiled, pages touched)
    rounds = []
    for r in range(args.rounds):
        solo = run(buffer, batches, args.seconds, 0, None)
        shared = run(buffer, batches, args.seconds, 2, args.writer_rate)
        rounds.append({"solo": solo["learner_steps_per_s"], "shared": shared["learner_steps_per_s"],
                       "ratio": shared["learner_steps_per_s"] / solo["learner_steps_per_s"],
                       "writer_rows_per_s": shared["writer_rows_per_s"], "load": os.getloadavg()[0]})
        line = (f"round {r + 1}/{args.rounds}: learner solo {solo['learner_steps_per_s']:.0f} steps/s, shared "
                f"{shared['learner_steps_per_s']:.0f} steps/s (ratio {rounds[-1]['ratio']:.2f}); writers "
                f"{shared['writer_rows_per_s'] / 1e6:.2f} M rows/s")
        if args.floor:
            floor = run(buffer, batches, args.seconds, 2, args.writer_rate, sink=floor_sink)
            rounds[-1].update(floor_ratio=floor["learner_steps_per_s"] / solo["learner_steps_per_s"],
                              floor_writer_rows_per_s=floor["writer_rows_per_s"])
            line += (f"; floor (numpy-ref writers) ratio {rounds[-1]['floor_ratio']:.2f} at "
                     f"{floor['writer_rows_per_s'] / 1e6:.2f} M rows/s")
        print(f"{line}; load {rounds[-1]['load']:.1f}", flush=True)
    ratios = [r["ratio"] for r in rounds]
    mode = "as fast as they can" if args.writer_rate is None else f"paced to {args.writer_rate:,.0f} rows/s"
    mode += f"; switch interval {sys.getswitchinterval() * 1e3:g} ms"
    print(f"\nPER sample+update of {BATCH} on {args.capacity:,} items; 2 writers of {WRITE_BATCH}-row batches, {mode}")
    print("| learner solo steps/s | learner shared steps/s | shared / solo (median, min-max) | writers rows/s |")
    print("|---|---|---|---|")
    solo, shared = statistics.median(r["solo"] for r in rounds), statistics.median(r["shared"] for r in rounds)
    print(f"| {solo:,.0f} | {shared:,.0f} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
          f"| {statistics.median(r['writer_rows_per_s'] for r in rounds):,.0f} |")
    if args.floor:
        floors = [r["floor_ratio"] for r in rounds]
        print(f"\nfloor: the same learner beside numpy-ref writers at the same pace: shared / solo "
              f"{statistics.median(floors):.2f} ({min(floors):.2f}-{max(floors):.2f}), writers "
              f"{statistics.median(r['floor_writer_rows_per_s'] for r in rounds):,.0f} rows/s")
    if args.json:
        print(json.dumps(rounds))


if __name__ == "__main__":
    main()
