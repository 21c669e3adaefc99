"""ShardedReplay on a local Ray: sample latency, writer throughput, fault recovery, beside Ray's own floor.

    PYTHONPATH=src python benchmarks/bench_distributed.py [--shards 4] [--seconds 3] [--trials 3] [--json out.json]

Measured in one run, side by side (so the ratios hold even on a loaded machine):

1. Ray's floor: an empty actor call (round trip), an empty fan-out to every shard,
   and pipelined empty calls that carry a batch of 64 rows to a shard (at most 4 in
   flight, the writer's default) in rows per second.
2. ``buffer.sample(256)`` with importance weights from ``--shards`` prioritized
   shards of 10,000 items each: median and 90th percentile over 300 samples
   (goal: <= 5 ms), and its ratio to the empty fan-out.
3. ``writer.add_batch`` of 64 rows straight to one shard, pipelined: rows per
   second (goal: >= 80,000) and its ratio to the floor of item 1.
4. Faults, ``--trials`` times: a shard's process is killed (SIGKILL); "out" is the
   time until the learner's next sample has returned without it (goal: <= 1 s),
   "back" until it is up again and in the stats (goal: <= 3 s).

The rows are ``obs`` float32[8], ``action`` int64, ``reward`` float32 (48 bytes).
Ray's costs depend on the machine and its load: quote figures from a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import time
from typing import Any, NamedTuple

import numpy as np
import ray

from ReplayTables.distributed import ShardedReplay
from ReplayTables.distributed.tags import shard_index
from ReplayTables.PER import PERConfig

ROWS = 64
FILL = 10_000


class Row(NamedTuple):
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray


def rows(n: int, rng: np.random.Generator) -> Row:
    return Row(rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n), rng.random(n).astype(np.float32))


def percentiles(times_s: list[float]) -> dict[str, float]:
    ms = np.array(times_s) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}


def ray_floor(buffer: ShardedReplay, seconds: float, batch: Row) -> dict[str, Any]:
    actors = buffer.actors
    one = []
    for _ in range(300):
        t0 = time.perf_counter()
        ray.get(actors[0].ping.remote())
        one.append(time.perf_counter() - t0)
    fan = []
    for _ in range(300):
        t0 = time.perf_counter()
        ray.get([a.ping.remote() for a in actors])
        fan.append(time.perf_counter() - t0)
    sent, in_flight = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if len(in_flight) >= 4:
            ray.get(in_flight.pop(0))
        in_flight.append(actors[0].carry.remote(batch))
        sent += ROWS
    ray.get(in_flight)
    elapsed = time.perf_counter() - t0
    return {"empty_call": percentiles(one), "empty_fan_out": percentiles(fan),
            "carry_64_rows_per_s": sent / elapsed}


def sample_latency(buffer: ShardedReplay) -> dict[str, float]:
    for _ in range(20):
        buffer.sample(256)
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        batch = buffer.sample(256)
        times.append(time.perf_counter() - t0)
        assert batch.weights.shape == (256,)
    return percentiles(times)


def writer_throughput(buffer: ShardedReplay, seconds: float, batch: Row) -> float:
    writer = buffer.writer(shard=0, max_in_flight=4)
    writer.add_batch(batch)
    writer.flush()
    sent = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        writer.add_batch(batch)
        sent += ROWS
    writer.flush()
    elapsed = time.perf_counter() - t0
    assert writer.rows_lost == 0 and writer.rows_stored == sent + ROWS, writer.stats()  # every row stored
    return sent / elapsed


def fault_trials(buffer: ShardedReplay, trials: int) -> list[dict[str, float]]:
    out = []
    for trial in range(trials):
        victim = trial % buffer.num_shards
        w = buffer.writer(shard=victim)
        w.add_batch(rows(1000, np.random.default_rng(trial)))
        w.flush()
        buffer.sample(256)
        os.kill(ray.get(buffer.actors[victim].pid.remote()), signal.SIGKILL)
        t0 = time.perf_counter()
        batch = buffer.sample(256)
        gone = time.perf_counter() - t0
        assert not (shard_index(batch.ids, buffer.num_shards) == victim).any()
        while not buffer.stats()["shards"][victim]["alive"]:
            buffer.sample(256)
        back = time.perf_counter() - t0
        out.append({"shard": victim, "out_s": gone, "back_s": back})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    buffer = ShardedReplay(args.shards, args.shards * FILL * 2, Row, PERConfig(), seed=0)
    for k in range(args.shards):
        w = buffer.writer(shard=k)
        for _ in range(FILL // 1000):
            w.add_batch(rows(1000, rng), rng.uniform(0.1, 10.0, 1000))
        w.flush()
    assert buffer.size() == args.shards * FILL
    batch = rows(ROWS, rng)
    floor = ray_floor(buffer, args.seconds, batch)
    sample = sample_latency(buffer)
    writer = writer_throughput(buffer, args.seconds, batch)
    faults = fault_trials(buffer, args.trials)
    result = {"shards": args.shards, "ray_floor": floor, "sample_256": sample,
              "sample_over_fan_out": sample["median_ms"] / floor["empty_fan_out"]["median_ms"],
              "writer_64_rows_per_s": writer, "writer_over_floor": writer / floor["carry_64_rows_per_s"],
              "faults": faults, "load_average": os.getloadavg()[0]}
    print(f"Ray floor: empty call {floor['empty_call']['median_ms']:.2f} ms, empty fan-out to {args.shards} "
          f"{floor['empty_fan_out']['median_ms']:.2f} ms, pipelined 64-row calls "
          f"{floor['carry_64_rows_per_s']:,.0f} rows/s")
    print(f"sample(256) with weights from {args.shards} shards: median {sample['median_ms']:.2f} ms, p90 "
          f"{sample['p90_ms']:.2f} ms ({result['sample_over_fan_out']:.2f}x the empty fan-out; goal <= 5 ms)")
    print(f"writer, batches of 64 to one shard: {writer:,.0f} rows/s ({result['writer_over_floor']:.2f}x Ray's "
          f"floor; goal >= 80,000)")
    for f in faults:
        print(f"killed shard {f['shard']}: out of sampling after {f['out_s']:.2f} s (goal <= 1 s), back after "
              f"{f['back_s']:.2f} s (goal <= 3 s)")
    print(f"load average during the run: {result['load_average']:.1f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    buffer.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
