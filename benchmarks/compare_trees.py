"""W1-W4 of two source trees side by side, interleaved, through the public API only.

    python benchmarks/compare_trees.py BASELINE_SRC CANDIDATE_SRC [--rounds 5] [--workloads W1 W3]

Each round runs every workload once per tree, alternating the trees, each in a
fresh process with ``PYTHONPATH`` set to that tree's ``src`` folder (so both
trees are measured under the same machine load, close together in time). A
workload times the whole public call per operation; the buffers are built as in
``benchmarks/profile_paths.py`` (a dict structure of declared fields, 1M slots,
full for W3/W4). Printed per workload: each tree's median over rounds and the
ratio of the candidate to the baseline per round (median, min-max). A ratio
above 1 means the candidate is slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import json, statistics, sys, time
import numpy as np
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

CAP, B, POOL = 1_000_000, 256, 65_536
S = {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
     "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32), "done": FieldSpec((), np.bool_)}
rng = np.random.default_rng(12345)
states = rng.standard_normal((POOL + 1, 17), dtype=np.float32)
D = {"obs": states[:-1], "action": rng.uniform(-1, 1, (POOL, 6)).astype(np.float32),
     "reward": rng.standard_normal(POOL).astype(np.float32), "next_obs": states[1:], "done": np.zeros(POOL, bool)}

def per_op(fn, n, loops=3):
    fn(0)
    out = []
    for _ in range(loops):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out.append((time.perf_counter() - t0) / n * 1e6)
    return min(out)

def full(per):
    buf = (PrioritizedReplay(CAP, S, np.random.default_rng(0), PERConfig(priority_exponent=0.6, beta=0.4)) if per
           else ReplayBuffer(CAP, S, np.random.default_rng(0)))
    done, ids = 0, []
    while done < CAP:
        c = min(POOL, CAP - done)
        ids.append(buf.add_batch({k: v[:c] for k, v in D.items()}))
        done += c
    if per:
        buf.update_priorities(np.concatenate(ids), np.random.default_rng(1).uniform(0.01, 2.0, CAP))
    return buf

w = sys.argv[1]
if w == "W1":
    buf = ReplayBuffer(CAP, S, np.random.default_rng(0))
    rows = [{"obs": D["obs"][j], "action": D["action"][j], "reward": float(D["reward"][j]),
             "next_obs": D["next_obs"][j], "done": bool(D["done"][j])} for j in range(16_384)]
    add = buf.add
    r = per_op(lambda i: add(rows[i % 16_384]), 100_000)
elif w == "W2":
    batches = [{k: v[s:s + 64] for k, v in D.items()} for s in range(0, POOL - 63, 64)]
    buf = ReplayBuffer(CAP, S, np.random.default_rng(0))
    add_batch = buf.add_batch
    r = per_op(lambda i: add_batch(batches[i % len(batches)]), 10_000)
elif w == "W3":
    buf = full(False)
    r = per_op(lambda i: buf.sample(B), 3000)
else:
    buf = full(True)
    prios = np.random.default_rng(1).uniform(0.01, 2.0, size=(1024, B))
    def op(i):
        b = buf.sample(B)
        buf.update_priorities(b.ids, prios[i % 1024])
    r = per_op(op, 2000)
print(json.dumps(r))
'''


def run(src: str, workload: str) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", WORKER, workload], env=env, check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("baseline")
    ap.add_argument("candidate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workloads", nargs="*", default=["W1", "W2", "W3", "W4"])
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {w: {"baseline": [], "candidate": []} for w in args.workloads}
    for r in range(args.rounds):
        for w in args.workloads:
            order = ("baseline", "candidate") if r % 2 == 0 else ("candidate", "baseline")
            for name in order:
                results[w][name].append(run(getattr(args, name), w))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print("| workload | baseline µs/op | candidate µs/op | ratio candidate/baseline (median, min-max) |")
    print("|---|---|---|---|")
    for w, res in results.items():
        ratios = [c / b for b, c in zip(res["baseline"], res["candidate"])]
        print(f"| {w} | {statistics.median(res['baseline']):.2f} | {statistics.median(res['candidate']):.2f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
