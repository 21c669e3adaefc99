"""Cost of the cross-process lock (engine/process_lock.py), uncontended and contended.

    PYTHONPATH=src python benchmarks/bench_process_lock.py [--n 200000] [--seconds 2] [--work-us 0]

1. Uncontended, one process: ``with lock:``, ``with lock.operation(op):`` (what a
   mutating call of a shared buffer brackets itself with), and a plain
   ``threading.RLock`` for scale. Mean over ``--n`` iterations, best of 5 runs.
2. Contended: 2 processes (fork) each run ``with lock.operation(op): counter += 1``
   (plus ``--work-us`` of busy work inside, to stand in for a single add) for
   ``--seconds``. Reports holds per second summed over both, each process's share
   (fairness: ``flock`` is not FIFO) and the mean wall time per hold. The final
   counter is checked against the holds counted, so the figure is of a lock that
   excluded.

Numbers depend on the machine and its load; run it on a quiet machine for figures
to quote.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np

from ReplayTables.engine.process_lock import ProcessLock
from ReplayTables.engine.shared_memory import SharedArrays, SharedHandle

LAYOUT: dict[str, Any] = {"lock": ProcessLock.LAYOUT, "count": (4, np.int64)}


def _best_us(fn: Any, n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def uncontended(n: int) -> dict[str, float]:
    with SharedArrays.create(LAYOUT) as seg:
        lock = ProcessLock(seg)
        rlock = threading.RLock()

        def with_lock(k: int) -> None:
            for _ in range(k):
                with lock:
                    pass

        def with_operation(k: int) -> None:
            for _ in range(k):
                with lock.operation(1):
                    pass

        def with_rlock(k: int) -> None:
            for _ in range(k):
                with rlock:
                    pass

        result = {"with lock": _best_us(with_lock, n), "with lock.operation(op)": _best_us(with_operation, n),
                  "threading.RLock (scale)": _best_us(with_rlock, n)}
        lock.close()
        return result


def _spin(us: float) -> None:
    if us > 0:
        end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < end:
            pass


def _hammer(handle: SharedHandle, slot: int, seconds: float, work_us: float, out: Any) -> None:
    seg = SharedArrays.attach(handle)
    lock = ProcessLock(seg)
    count = seg.arrays["count"]
    while count[3] == 0:  # start together
        time.sleep(0.0005)
    holds = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        with lock.operation(1):
            count[0] += 1
            _spin(work_us)
        holds += 1
    out.put((slot, holds))
    lock.close()
    seg.close()


def contended(seconds: float, work_us: float, procs: int = 2) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    with SharedArrays.create(LAYOUT) as seg:
        out = ctx.Queue()
        workers = [ctx.Process(target=_hammer, args=(seg.handle(), i, seconds, work_us, out)) for i in range(procs)]
        for p in workers:
            p.start()
        time.sleep(0.2)
        seg.arrays["count"][3] = 1
        holds = dict(out.get(timeout=seconds + 60) for _ in workers)
        for p in workers:
            p.join()
        total = sum(holds.values())
        assert int(seg.arrays["count"][0]) == total, "the counter lost increments: the lock did not exclude"
        return {"holds/s (sum)": total / seconds, "us per hold": seconds / total * 1e6,
                "share per process": [round(holds[i] / total, 3) for i in range(procs)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="iterations per uncontended run")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each contended run")
    parser.add_argument("--work-us", type=float, nargs="*", default=[0.0, 2.0],
                        help="busy work inside each contended hold (one run per value)")
    args = parser.parse_args()
    print("uncontended acquire+release, one process (best of 5):")
    for name, us in uncontended(args.n).items():
        print(f"  {name:28s} {us:6.2f} us")
    for work in args.work_us:
        r = contended(args.seconds, work)
        print(f"contended, 2 processes, {work:g} us of work per hold: {r['holds/s (sum)']:,.0f} holds/s "
              f"({r['us per hold']:.2f} us each), shares {r['share per process']}")


if __name__ == "__main__":
    main()
