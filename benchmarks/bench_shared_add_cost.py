"""The CPU cost of one add and one add_batch(64) in a single process, shared and unshared.

    PYTHONPATH=src python benchmarks/bench_shared_add_cost.py

W1's transition (obs f32[17], action f32[6], reward f32, next_obs f32[17], done bool)
into a ReplayBuffer of 1M slots, ``shared=False`` and ``shared=True`` twice each in
turn; CPU time per call (``time.process_time``, so neighbours on a shared machine
count less than in wall time), best of 5 repeats of 20,000 adds and of 2,000 batches,
into a buffer filled first (every add evicts: the steady state, and no first touch of
fresh pages in the timing).
What a shared add pays on top: the process lock and the add journal.
"""
from __future__ import annotations

import time

import numpy as np

from ReplayTables import ReplayBuffer
from ReplayTables.engine.schema import FieldSpec

FIELDS = {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
          "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
          "done": FieldSpec((), np.bool_)}


def main() -> None:
    rng = np.random.default_rng(1)
    data = {"obs": rng.normal(size=(256, 17)).astype(np.float32),
            "action": rng.normal(size=(256, 6)).astype(np.float32),
            "reward": rng.normal(size=256).astype(np.float32),
            "next_obs": rng.normal(size=(256, 17)).astype(np.float32),
            "done": rng.random(256) < 0.001}
    rows = [{k: (v[i] if v[i].ndim else v[i].item()) for k, v in data.items()} for i in range(100)]
    batch = {k: v[:64] for k, v in data.items()}
    for shared in (False, True, False, True):
        buf = ReplayBuffer(1_000_000, FIELDS, rng=0, shared=shared)
        fill = {k: np.repeat(v[:1], 100_000, axis=0) for k, v in data.items()}
        for _ in range(10):
            buf.add_batch(fill)
        buf.add(rows[0])
        buf.add_batch(batch)  # the first calls compile the generated lanes
        one = many = float("inf")
        for _ in range(5):
            t = time.process_time()
            for _ in range(200):
                for row in rows:
                    buf.add(row)
            one = min(one, (time.process_time() - t) / 20_000)
            t = time.process_time()
            for _ in range(2000):
                buf.add_batch(batch)
            many = min(many, (time.process_time() - t) / 2000)
        print(f"shared={shared!s:5}  add {one * 1e6:5.2f} us   add_batch(64) {many * 1e6:5.2f} us")
        if shared:
            buf.close()


if __name__ == "__main__":
    main()
