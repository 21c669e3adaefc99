"""What the table lock and the rate limiter add to one table call, uncontended.

    PYTHONPATH=src python benchmarks/lock_cost.py [--rounds 7]

Every public table call holds its lock, and a rate-limited add also asks the
limiter, records the insert and notifies, so these costs land on every single
add (W1 is about 1.7 us per add in all). Each figure is the best of ``--rounds``
interleaved rounds (the best, not the mean: on a shared machine the other
rounds measure the neighbours), in nanoseconds per operation.
"""
from __future__ import annotations

import argparse
import threading
import timeit

from ReplayTables.engine.admission import admit_insert
from ReplayTables.engine.table_lock import TableLock
from ReplayTables.rate_limiters import MinSize, SampleToInsertRatio


class _WrappedRLock:
    """The alternative TableLock avoids: an RLock behind Python __enter__/__exit__."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()

    lock = TableLock()
    ratio = SampleToInsertRatio(1.0, 10, 1e12)  # admits every insert: the fast path
    size = [50]  # above min_size_to_sample, so decisions take the band test

    def size_fn() -> int:
        return size[0]

    cases = {
        "threading.RLock: with lock: pass": ("with l: pass", {"l": threading.RLock()}),
        "RLock behind Python __enter__/__exit__": ("with l: pass", {"l": _WrappedRLock()}),
        "TableLock: with lock: pass": ("with l: pass", {"l": lock}),
        "TableLock: with lock: lock.notify()": ("with l: l.notify()", {"l": lock}),
        "limiter.can_insert(1, size) (the band test)": ("r.can_insert(1, 50)", {"r": ratio}),
        "limiter.record_insert(1)": ("r.record_insert(1)", {"r": MinSize(1)}),
        "admit_insert (admitted at once)": ("a(l, r, 1, s, None)",
                                            {"a": admit_insert, "l": lock, "r": ratio, "s": size_fn}),
        "whole gate: with + admit + record + notify": (
            "with l:\n    a(l, r, 1, s, None)\n    q(1)\n    l.notify()",
            {"a": admit_insert, "l": lock, "r": ratio, "s": size_fn, "q": MinSize(1).record_insert}),
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds):
        for name, (stmt, env) in cases.items():
            t = timeit.timeit(stmt, globals=env, number=args.number)
            best[name] = min(best[name], t / args.number * 1e9)
    width = max(map(len, cases))
    for name, ns in best.items():
        print(f"{name:<{width}}  {ns:7.1f} ns")


if __name__ == "__main__":
    main()
