"""Shared-memory buffers under load: 2 writer processes + 1 learner process on one machine.

    PYTHONPATH=src python benchmarks/bench_shared_memory.py [--seconds 3] [--rounds 3]
        [--capacity 1000000] [--peer-python /work/peer-venvs/cpprb/bin/python]

Three phases, each with two writer processes (fork) adding for ``--seconds`` while
one learner process samples:

1. ``single``: every writer adds one transition per call; the learner samples
   256 uniformly. Reports single adds/s summed over the writers.
2. ``batch``: every writer adds batches of 64; the learner samples 256 uniformly.
   Reports rows/s summed over the writers.
3. ``per``: a prioritized buffer; writers add batches of 64; the learner samples
   256 and updates those 256 priorities. Reports the learner's sample+update
   latency.

The learner's latency is the median of its calls while the writers run (per
call wall time, so waiting for the lock counts). The transition is the harness's
W1 (obs f32[17], action f32[6], reward f32, next_obs f32[17], done bool); the
buffer holds ``--capacity`` items and is pre-filled with 100,000 before each
phase so the learner has something to sample from the start. Before forking, the
parent samples (and, for PER, updates priorities) three times, so the kernels are
compiled once and inherited by the children rather than compiled inside the
learner's first call while it holds the buffer's lock. Each round prints its
figures and the load average at its start to stderr.

With ``--peer-python`` (a Python that has ``cpprb``; by default the venv
``/work/peer-venvs/cpprb`` when it exists) the same phases run against cpprb's
``MPReplayBuffer`` / ``MPPrioritizedReplayBuffer`` in that interpreter, interleaved
with ours round by round, and the table gives both and the ratio. Without it only
our figures are printed. Numbers depend on the machine and its load: compare the
two columns of one run, not runs on different days.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PRE_FILL = 100_000
B = 64
N_SAMPLE = 256
DEFAULT_PEER = "/work/peer-venvs/cpprb/bin/python"


def transitions(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(n, 17)).astype(np.float32), "action": rng.normal(size=(n, 6)).astype(np.float32),
            "reward": rng.normal(size=n).astype(np.float32), "next_obs": rng.normal(size=(n, 17)).astype(np.float32),
            "done": rng.random(n) < 0.001}


# ---------------------------------------------------------------- the two implementations
class Ours:
    name = "ReplayTables"

    def make(self, capacity: int, per: bool) -> Any:
        from ReplayTables import PERConfig, PrioritizedReplay, ReplayBuffer
        from ReplayTables.engine.schema import FieldSpec

        fields = {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
                  "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
                  "done": FieldSpec((), np.bool_)}
        if per:
            return PrioritizedReplay(capacity, fields, rng=0, config=PERConfig(priority_exponent=0.6), shared=True)
        return ReplayBuffer(capacity, fields, rng=0, shared=True)

    def share(self, buffer: Any) -> Any:
        return buffer.handle()

    def open(self, shared: Any, seed: int) -> Any:
        import ReplayTables

        return ReplayTables.attach(shared, rng=seed)

    def add_one(self, buffer: Any, row: dict[str, Any]) -> None:
        buffer.add(row)

    def add_batch(self, buffer: Any, batch: dict[str, np.ndarray]) -> None:
        buffer.add_batch(batch)

    def sample(self, buffer: Any) -> None:
        buffer.sample(N_SAMPLE)

    def sample_update(self, buffer: Any, priorities: np.ndarray) -> None:
        batch = buffer.sample(N_SAMPLE)
        buffer.update_priorities(batch.ids, priorities)

    def close(self, buffer: Any) -> None:
        buffer.close()


class Cpprb:
    name = "cpprb"

    def make(self, capacity: int, per: bool) -> Any:
        import cpprb

        env = {"obs": {"shape": 17}, "action": {"shape": 6}, "reward": {}, "next_obs": {"shape": 17},
               "done": {"dtype": np.bool_}}
        ctx = mp.get_context("fork")
        if per:
            return cpprb.MPPrioritizedReplayBuffer(capacity, env, alpha=0.6, ctx=ctx)
        return cpprb.MPReplayBuffer(capacity, env, ctx=ctx)

    def share(self, buffer: Any) -> Any:
        return buffer  # cpprb's MP buffers are handed to forked children as they are

    def open(self, shared: Any, seed: int) -> Any:
        return shared

    def add_one(self, buffer: Any, row: dict[str, Any]) -> None:
        buffer.add(**row)

    def add_batch(self, buffer: Any, batch: dict[str, np.ndarray]) -> None:
        buffer.add(**batch)

    def sample(self, buffer: Any) -> None:
        buffer.sample(N_SAMPLE)

    def sample_update(self, buffer: Any, priorities: np.ndarray) -> None:
        batch = buffer.sample(N_SAMPLE, beta=0.4)
        buffer.update_priorities(batch["indexes"], priorities)

    def close(self, buffer: Any) -> None:
        pass


IMPLS = {"ours": Ours, "cpprb": Cpprb}


# ---------------------------------------------------------------- processes
def _writer(impl_name: str, shared: Any, w: int, batched: bool, go: Any, seconds: float, out: Any) -> None:
    impl = IMPLS[impl_name]()
    buffer = impl.open(shared, w + 1)
    data = transitions(4096, seed=w + 1)
    rows = [{k: (v[i] if v[i].ndim else v[i].item()) for k, v in data.items()} for i in range(256)]
    batches = [{k: v[j * B:(j + 1) * B] for k, v in data.items()} for j in range(4096 // B)]
    go.wait()
    calls = 0
    end = time.perf_counter() + seconds
    if batched:
        while time.perf_counter() < end:
            for batch in batches[:8]:
                impl.add_batch(buffer, batch)
            calls += 8
    else:
        while time.perf_counter() < end:
            for row in rows[:32]:
                impl.add_one(buffer, row)
            calls += 32
    out.put(("writer", calls * (B if batched else 1)))


def _learner(impl_name: str, shared: Any, per: bool, go: Any, seconds: float, out: Any) -> None:
    impl = IMPLS[impl_name]()
    buffer = impl.open(shared, 99)
    priorities = np.random.default_rng(7).random(N_SAMPLE) + 0.1
    go.wait()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        if per:
            impl.sample_update(buffer, priorities)
        else:
            impl.sample(buffer)
        times.append(time.perf_counter() - t0)
    out.put(("learner", statistics.median(times) * 1e6, len(times)))


def phase(impl_name: str, kind: str, capacity: int, seconds: float) -> dict[str, float]:
    impl = IMPLS[impl_name]()
    per = kind == "per"
    buffer = impl.make(capacity, per)
    fill = transitions(PRE_FILL, seed=123)
    for start in range(0, PRE_FILL, 10_000):
        impl.add_batch(buffer, {k: v[start:start + 10_000] for k, v in fill.items()})
    # warm up before forking: a first sample (and PER update) compiles its kernels, which the children
    # inherit; otherwise the learner compiles them inside its first call, holding the lock for seconds
    warm_priorities = np.random.default_rng(8).random(N_SAMPLE) + 0.1
    for _ in range(3):
        if per:
            impl.sample_update(buffer, warm_priorities)
        else:
            impl.sample(buffer)
    shared = impl.share(buffer)
    ctx = mp.get_context("fork")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(impl_name, shared, w, kind != "single", go, seconds, out))
             for w in range(2)]
    procs.append(ctx.Process(target=_learner, args=(impl_name, shared, per, go, seconds, out)))
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every child get ready
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(60)
    impl.close(buffer)
    written = sum(r[1] for r in results if r[0] == "writer")
    learner = next(r for r in results if r[0] == "learner")
    return {"writer_rate": written / seconds, "learner_us": learner[1], "learner_calls": learner[2]}


def run_impl(impl_name: str, capacity: int, seconds: float) -> dict[str, dict[str, float]]:
    return {kind: phase(impl_name, kind, capacity, seconds) for kind in ("single", "batch", "per")}


# ---------------------------------------------------------------- the report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--peer-python", default=DEFAULT_PEER if os.path.exists(DEFAULT_PEER) else None)
    parser.add_argument("--impl", choices=sorted(IMPLS), help=argparse.SUPPRESS)  # one run, JSON out (for the peer)
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_impl(args.impl, args.capacity, args.seconds)))
        return
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"ours": [], "cpprb": []}
    loads = []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        runs["ours"].append(run_impl("ours", args.capacity, args.seconds))
        if args.peer_python:
            done = subprocess.run([args.peer_python, str(Path(__file__).resolve()), "--impl", "cpprb",
                                   "--capacity", str(args.capacity), "--seconds", str(args.seconds)],
                                  capture_output=True, text=True, check=False)
            if done.returncode == 0:
                runs["cpprb"].append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:
                print(f"cpprb run failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        line = ", ".join(f"{impl} {kind} {v['writer_rate']:,.0f}/s {v['learner_us']:,.1f} us"
                         for impl in runs if len(runs[impl]) > r for kind, v in runs[impl][r].items())
        print(f"round {r + 1}: load {loads[-1]:.1f} at its start; {line}", file=sys.stderr)

    def med(impl: str, kind: str, key: str) -> float | None:
        values = [r[kind][key] for r in runs[impl]]
        return statistics.median(values) if values else None

    rows = [("single adds/s (2 writers, summed)", "single", "writer_rate", True),
            ("rows/s in batches of 64 (2 writers, summed)", "batch", "writer_rate", True),
            ("learner uniform sample(256), us, during single adds", "single", "learner_us", False),
            ("learner uniform sample(256), us, during batch adds", "batch", "learner_us", False),
            ("learner PER sample(256)+update, us, during batch adds", "per", "learner_us", False),
            ("rows/s in batches of 64 while the PER learner runs", "per", "writer_rate", True)]
    print(f"2 writer processes + 1 learner, capacity {args.capacity:,}, {args.seconds:g} s per phase, "
          f"median of {args.rounds} rounds (cpu count {os.cpu_count()}, 1-min load at the rounds' starts "
          f"{', '.join(f'{x:.1f}' for x in loads)}, now {os.getloadavg()[0]:.1f})")
    print(f"{'':58s} {'ReplayTables':>14s} {'cpprb':>14s} {'ratio':>8s}")
    for label, kind, key, higher in rows:
        ours, peer = med("ours", kind, key), med("cpprb", kind, key)
        assert ours is not None
        if peer is None:
            print(f"{label:58s} {ours:14,.1f} {'-':>14s} {'-':>8s}")
        else:
            ratio = ours / peer if higher else peer / ours
            print(f"{label:58s} {ours:14,.1f} {peer:14,.1f} {ratio:7.2f}x")
    print("ratio > 1: ReplayTables is better (higher rate, or lower latency)")


if __name__ == "__main__":
    main()
