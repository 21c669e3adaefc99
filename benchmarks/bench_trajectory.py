"""Benchmarks of the step-stream buffer (ReplayTables.trajectory).

    python benchmarks/bench_trajectory.py                 # everything (~2-3 min, ~2 GB RAM at peak)
    python benchmarks/bench_trajectory.py --only w5 seq   # a subset: w5, w5stack, memmap, seq
    python benchmarks/bench_trajectory.py --seq-steps 1000000   # a smaller sequence buffer

What is measured (W5 is the peer harness's Atari workload: 84x84 uint8 frames,
200,000 transitions, episodes of 1,000 steps, uniform samples of 32):

* ``w5`` / ``w5stack``: bytes per stored transition (RSS growth of the
  process from before the buffer exists to after it is full, divided by the
  transitions stored; each variant runs in its own process so RSS is clean),
  the time of ``sample(32)``, and the memcpy floor: ``np.copyto`` of the same
  number of bytes as the batch returns (obs, next_obs, action, reward, flags,
  returns, discount), from a contiguous slice of a buffer-sized array.
  ``w5stack`` uses ``frame_stack=4`` (the batch returns 4x the frame bytes).
* ``memmap``: the W5 sample with ``storage="memmap"`` (files in a temporary
  directory, warm page cache) against the same buffer in memory.
* ``seq``: ``sample_sequences(32)`` with ``T=80`` from 10M stored steps of
  17-float observations (100 streams).

Timing: ``time.perf_counter`` around a loop; median over 5 repeats after a
warm-up (W5: 7 repeats alternating with the memcpy floor; the ratio is the
median of the per-repeat ratios). The machine may be shared; treat a single run as indicative.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Any, iters: int, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` loops of ``iters`` calls."""
    for _ in range(max(1, iters // 10)):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) / iters)
    return statistics.median(runs)


def memcpy_op(nbytes: int, pool_bytes: int) -> Any:
    """An op that ``np.copyto``-s ``nbytes`` from a random offset of a ``pool_bytes`` array."""
    pool = np.ones(pool_bytes, dtype=np.uint8)
    out = np.empty(nbytes, dtype=np.uint8)
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, pool_bytes - nbytes, 64)
    i = [0]

    def op() -> None:
        o = offsets[i[0] & 63]
        i[0] += 1
        np.copyto(out, pool[o:o + nbytes])

    return op


def paired(op: Any, floor: Any, iters: int, repeats: int = 7) -> tuple[float, float, float]:
    """Median seconds of ``op`` and of ``floor``, and the median of their per-repeat ratio.

    The two loops alternate, so a neighbour's load on a shared machine hits both
    alike and the ratio is steadier than either time.
    """
    for _ in range(max(1, iters // 10)):
        op()
        floor()
    a, b, r = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            op()
        t1 = time.perf_counter()
        for _ in range(iters):
            floor()
        t2 = time.perf_counter()
        a.append((t1 - t0) / iters)
        b.append((t2 - t1) / iters)
        r.append((t1 - t0) / (t2 - t1))
    return statistics.median(a), statistics.median(b), statistics.median(r)


def batch_bytes(b: Any) -> int:
    arrays = [b.obs, b.next_obs, b.action, b.reward, b.terminated, b.truncated, b.returns, b.discount]
    return int(sum(a.nbytes for a in arrays))


def fill_w5(buf: Any, transitions: int) -> float:
    """The harness's W5 stream: 2,048 distinct frames, an episode ends every 1,000 steps."""
    rng = np.random.default_rng(12345)
    frames = rng.integers(0, 256, size=(2049, 84, 84), dtype=np.uint8)
    actions = rng.integers(0, 6, size=2048).astype(np.int32)
    rewards = rng.standard_normal(2048).astype(np.float32)
    t0 = time.perf_counter()
    buf.begin_episode(frames[0])
    t = 0
    for i in range(transitions):
        j = i % 2048
        t += 1
        end = t == 1000
        buf.add_step(actions[j], rewards[j], frames[j + 1], False, end)
        if end:
            t = 0
            buf.begin_episode(frames[(j + 1) % 2048])
    return (time.perf_counter() - t0) / transitions


def run_w5(stack: int, storage: str = "memory") -> dict[str, Any]:
    from ReplayTables.trajectory import TrajectoryReplay

    transitions = 200_000
    capacity = transitions + transitions // 1000 + 2  # the final frame of each episode is stored once
    before = rss()
    tmp = tempfile.mkdtemp() if storage == "memmap" else None
    buf = TrajectoryReplay(capacity, (84, 84), np.uint8, action_dtype=np.int32, frame_stack=stack,
                           storage=storage, path=None if tmp is None else os.path.join(tmp, "buf"),
                           rng=np.random.default_rng(0))
    add_s = fill_w5(buf, transitions)
    after = rss()
    stored = len(buf)
    b = buf.sample(32)
    nbytes = batch_bytes(b)
    sample_s, floor_s, ratio = paired(lambda: buf.sample(32), memcpy_op(nbytes, capacity * 84 * 84), 1000)
    out = {"variant": f"w5 stack={stack} storage={storage}", "stored": stored,
           "bytes_per_transition": (after - before) / stored, "add_step_us": add_s * 1e6,
           "sample32_us": sample_s * 1e6, "batch_bytes": nbytes, "memcpy_floor_us": floor_s * 1e6,
           "x_floor": ratio}
    if storage == "memmap":
        buf.flush()
    return out


def run_memmap() -> dict[str, Any]:
    mem = run_w5(1, "memory")
    mm = run_w5(1, "memmap")
    return {"variant": "memmap vs memory (W5 sample 32, warm cache)", "memory_us": mem["sample32_us"],
            "memmap_us": mm["sample32_us"], "ratio": mm["sample32_us"] / mem["sample32_us"]}


def run_seq(steps: int) -> dict[str, Any]:
    from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay

    streams = 100
    per = steps // streams
    buf = TrajectoryReplay(steps, (17,), np.float32, action_shape=(6,), action_dtype=np.float32,
                           num_streams=streams, sequence=SequenceConfig(80, burn_in=0),
                           rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((4096, streams, 17), dtype=np.float32)
    acts = rng.uniform(-1, 1, (4096, streams, 6)).astype(np.float32)
    rew = rng.standard_normal((4096, streams)).astype(np.float32)
    no = np.zeros(streams, dtype=bool)
    t0 = time.perf_counter()
    buf.begin_episodes(pool[0])
    for i in range(per - 1):
        j = i % 4095
        end = (i + 1) % 1000 == 0
        trunc = np.full(streams, end)
        buf.add_steps(acts[j], rew[j], pool[j + 1], no, trunc)
        if end:
            buf.begin_episodes(pool[j + 1])
    fill_s = time.perf_counter() - t0
    sample_s = timed(lambda: buf.sample_sequences(32), 500)
    small = TrajectoryReplay(100_000, (17,), np.float32, action_shape=(6,), action_dtype=np.float32,
                             num_streams=streams, sequence=SequenceConfig(80), rng=np.random.default_rng(0))
    small.begin_episodes(pool[0])
    for i in range(999 - 1):
        small.add_steps(acts[i], rew[i], pool[i + 1], no, no)
    small_s = timed(lambda: small.sample_sequences(32), 500)
    return {"variant": f"sequences B=32 T=80, {steps:,} stored steps of 17 floats",
            "records": buf.max_size, "windows": buf.num_sequences(), "fill_s": fill_s,
            "sample_us": sample_s * 1e6, "sample_us_at_100k": small_s * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["w5", "w5stack", "memmap", "seq"])
    ap.add_argument("--seq-steps", type=int, default=10_000_000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind = args.child
        if kind == "w5":
            res = run_w5(1)
        elif kind == "w5stack":
            res = run_w5(4)
        elif kind == "memmap":
            res = run_memmap()
        else:
            res = run_seq(args.seq_steps)
        print("RESULT " + json.dumps(res))
        return
    for kind in args.only:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--seq-steps", str(args.seq_steps)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(kind, "FAILED", out.stderr[-2000:])
            continue
        res = json.loads(line[0][len("RESULT "):])
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
