"""The CPU cost of one add and one add_batch(64) in a single process, shared and unshared.

    PYTHONPATH=src python benchmarks/bench_shared_add_cost.py          # front end A
    PYTHONPATH=src python benchmarks/bench_shared_add_cost.py --rllib  # RLlib's ring and reservoir

W1's transition (obs f32[17], action f32[6], reward f32, next_obs f32[17], done bool)
into a ReplayBuffer of 1M slots, ``shared=False`` and ``shared=True`` twice each in
turn; CPU time per call (``time.process_time``, so neighbours on a shared machine
count less than in wall time), best of 5 repeats of 20,000 adds and of 2,000 batches,
into a buffer filled first (every add evicts: the steady state, and no first touch of
fresh pages in the timing).
What a shared add pays on top: the process lock and the add journal.

``--rllib``: the same transition as RLlib columns (obs, actions, rewards, new_obs,
terminateds) into ``ReplayTables.rllib.ReplayBuffer`` and ``ReservoirReplayBuffer``
(timesteps, capacity 100,000, filled first: every ring add evicts, most reservoir
offers are declined or replace a row), ``add`` of 1 row and of 64 rows, private and
shared in turn, best of 5 repeats of 5,000 and 2,000 adds.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ReplayTables import ReplayBuffer
from ReplayTables.engine.schema import FieldSpec

FIELDS = {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
          "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
          "done": FieldSpec((), np.bool_)}


def cpu_per_call(calls: int, fn: Callable[..., object], *args: object, repeats: int = 5) -> float:
    """Best over ``repeats`` of the CPU seconds per call of ``calls`` calls of ``fn(*args)``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(calls):
            fn(*args)
        best = min(best, (time.process_time() - t) / calls)
    return best


def add_each(add: Callable[[object], object], rows: list[dict[str, object]]) -> None:
    for row in rows:
        add(row)


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
        one = cpu_per_call(200, add_each, buf.add, rows) / len(rows)
        many = cpu_per_call(2000, buf.add_batch, batch)
        print(f"shared={shared!s:5}  add {one * 1e6:5.2f} us   add_batch(64) {many * 1e6:5.2f} us")
        if shared:
            buf.close()


def rllib_main() -> None:
    from ReplayTables.rllib import ReplayBuffer as RLlibReplayBuffer
    from ReplayTables.rllib import ReservoirReplayBuffer

    columns = {"obs": ((17,), np.float32), "actions": ((6,), np.float32), "rewards": ((), np.float32),
               "new_obs": ((17,), np.float32), "terminateds": ((), np.bool_)}
    rng = np.random.default_rng(1)
    data = {name: rng.normal(size=(64, *shape)).astype(dtype) for name, (shape, dtype) in columns.items()}
    one = {k: v[:1] for k, v in data.items()}
    for cls in (RLlibReplayBuffer, ReservoirReplayBuffer):
        for shared in (False, True, False, True):
            buf = cls(capacity=100_000, storage_unit="timesteps", seed=0, shared=shared, columns=columns)
            fill = {k: np.repeat(v[:1], 100_000, axis=0) for k, v in data.items()}
            for _ in range(3):
                buf.add(fill)
            best_one = cpu_per_call(5000, buf.add, one)
            best_many = cpu_per_call(2000, buf.add, data)
            print(f"{cls.__name__:22} shared={shared!s:5}  add 1 row {best_one * 1e6:6.2f} us   "
                  f"add 64 rows {best_many * 1e6:6.2f} us")
            if shared:
                buf.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rllib", action="store_true", help="time the RLlib front end's ring and reservoir")
    if parser.parse_args().rllib:
        rllib_main()
    else:
        main()
