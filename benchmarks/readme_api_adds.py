"""Adds through the README's API next to plain numpy, measured side by side in one process.

    python benchmarks/readme_api_adds.py [--rounds 15] [--n1 10000] [--n2 1000]

The structure is the README's kind, ``T(obs, action, reward: float, next_obs, done: bool)``
(unannotated fields take float32 from the first item), fed what a gym loop hands over:
W1 single adds of float32 arrays with a Python float reward and a Python bool done;
W2 batches of 64 as float32/bool arrays (so ``reward`` is cast float32 -> float64).
Every buffer (and numpy's arrays) is filled once before timing, so the adds overwrite
memory that is already committed: the figures are the per-call cost in steady state
(the harness's W1s/W2s), without the page faults of a first fill, which cost everyone
alike and dominate a batched add into fresh memory. Each row below is timed in the same
rounds, interleaved (round-robin); the median and the best per-op time over rounds
are reported (the best round is the least disturbed by other processes), so a busy
machine slows every row alike and the ratios stay comparable:

* ``numpy-ref``: preallocated arrays, one row (W1) or slice (W2) write per field; what
  the peer harness's numpy reference does;
* ``README NamedTuple, float32 in``: ``buffer.add(T(...))`` / ``buffer.add_batch(T(...))``;
* ``README NamedTuple, float64 in``: the same with float64 observations and actions,
  a narrowing ``same_kind`` cast into the float32 fields (range-checked);
* ``FieldSpec dict``: a dict structure of declared ``FieldSpec`` (the benchmark adapter's
  default), fed dicts;
* ``general path``: the NamedTuple buffer with its generated lanes switched off, i.e.
  what an add costs when it misses them;
* floor parts: building ``T`` and ``dict`` items, the five writes into one of our
  packed rows alone (the data movement an add cannot avoid), and building ``T``,
  the exact type/shape/dtype test of each field that keeps a bad value from failing
  mid-write, and the writes, straight-line with nothing else (the least a checked add
  through the README's API costs in Python; the rest of an add is the ring cursor,
  the id, the counters and the table lock).
  For W2 the same checks are also timed with the writes going into numpy-ref's own
  contiguous arrays (the floor of a checked batch add in any layout, packed or not),
  and that again holding a lock and making and recording the 64 ids an add returns.

Run against another checkout with ``PYTHONPATH=<checkout>/src``.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import ReplayTables.engine.table as table_module
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.ReplayBuffer import ReplayBuffer

CAP = 1 << 17  # slots; filled before timing
POOL = 16_384
B = 64


class T(NamedTuple):
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    done: bool


def pool(dtype: Any = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12345)
    states = rng.standard_normal((POOL + 1, 17)).astype(dtype)
    done = np.zeros(POOL, dtype=bool)
    done[999::1000] = True
    return {"obs": states[:-1], "action": rng.uniform(-1, 1, (POOL, 6)).astype(dtype),
            "reward": rng.standard_normal(POOL).astype(np.float32), "next_obs": states[1:], "done": done}


def fieldspec() -> dict[str, FieldSpec]:
    return {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
            "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
            "done": FieldSpec((), np.bool_)}


def first(buffer: ReplayBuffer) -> ReplayBuffer:
    """The first add fixes the unannotated fields as float32 (as a gym loop's first step does),
    then the buffer is filled to capacity (its memory committed, the ring full)."""
    z17, z6 = np.zeros(17, np.float32), np.zeros(6, np.float32)
    buffer.add(T(z17, z6, 0.0, z17, False))
    return full(buffer)


def full(buffer: ReplayBuffer) -> ReplayBuffer:
    d = pool()
    names = ("obs", "action", "reward", "next_obs", "done")
    while len(buffer) < CAP:
        c = min(POOL, CAP - len(buffer))
        chunk = [d[k][:c] for k in names]
        buffer.add_batch(T(*chunk) if buffer.structure is T else dict(zip(names, chunk)))
    return buffer


def numpy_arrays(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """numpy-ref's preallocated arrays, touched once (as a full buffer's are)."""
    return {k: np.ones((CAP, *v.shape[1:]), v.dtype) for k, v in d.items()}


def w1_cases(general_buffer: ReplayBuffer) -> dict[str, Callable[[int], Any]]:
    d32, d64 = pool(), pool(np.float64)
    rows32 = [(d32["obs"][j], d32["action"][j], float(d32["reward"][j]), d32["next_obs"][j], bool(d32["done"][j]))
              for j in range(POOL)]
    rows64 = [(d64["obs"][j], d64["action"][j], r, d64["next_obs"][j], dn) for j, (_, _, r, _, dn) in
              enumerate(rows32)]
    ref = numpy_arrays(d32)
    cols = [ref[k] for k in ("obs", "action", "reward", "next_obs", "done")]
    nt_buffer = first(ReplayBuffer(CAP, T, 0))
    nt32 = nt_buffer.add
    nt64 = first(ReplayBuffer(CAP, T, 0)).add
    storage = nt_buffer._table.storage  # floor part only: the same writes without anything around them
    assert storage is not None
    packed = list(storage.columns)
    fs = full(ReplayBuffer(CAP, fieldspec(), 0)).add
    slow = general_buffer.add

    def numpy_ref(i: int) -> None:
        r = rows32[i % POOL]
        s = i % CAP
        for c, v in zip(cols, r):
            c[s] = v

    def packed_writes(i: int) -> None:
        r = rows32[i % POOL]
        s = i % CAP
        for c, v in zip(packed, r):
            c[s] = v

    nd, f32, s17, s6 = np.ndarray, np.dtype(np.float32), (17,), (6,)

    def checked_writes(i: int) -> None:
        """The least a checked add through the README's API does: build ``T``, test each field's exact
        type (and shape and dtype) so nothing can fail mid-write, and write the row (no lock, id or count)."""
        t = T(*rows32[i % POOL])
        o, a, r, n, d = t
        if not (type(o) is nd and o.shape == s17 and o.dtype is f32 and type(a) is nd and a.shape == s6
                and a.dtype is f32 and type(r) is float and type(n) is nd and n.shape == s17 and n.dtype is f32
                and type(d) is bool):
            raise TypeError(t)
        s = i % CAP
        packed[0][s] = o
        packed[1][s] = a
        packed[2][s] = r
        packed[3][s] = n
        packed[4][s] = d

    def dict_of(r: tuple[Any, ...]) -> dict[str, Any]:
        return {"obs": r[0], "action": r[1], "reward": r[2], "next_obs": r[3], "done": r[4]}

    return {
        "numpy-ref": numpy_ref,
        "README NamedTuple, float32 in": lambda i: nt32(T(*rows32[i % POOL])),
        "README NamedTuple, float64 in": lambda i: nt64(T(*rows64[i % POOL])),
        "FieldSpec dict": lambda i: fs(dict_of(rows32[i % POOL])),
        "general path (lanes off)": lambda i: slow(T(*rows32[i % POOL])),
        "floor: the 5 writes into our packed row only": packed_writes,
        "floor: build T, check its fields' types, write the row": checked_writes,
        "floor: build T(...) only": lambda i: T(*rows32[i % POOL]),
        "floor: build the dict only": lambda i: dict_of(rows32[i % POOL]),
    }


def w2_cases(general_buffer: ReplayBuffer) -> dict[str, Callable[[int], Any]]:
    d32, d64 = pool(), pool(np.float64)
    names = ("obs", "action", "reward", "next_obs", "done")
    b32 = [tuple(d32[k][s:s + B] for k in names) for s in range(0, POOL - B + 1, B)]
    b64 = [(d64["obs"][s:s + B], d64["action"][s:s + B], d32["reward"][s:s + B], d64["next_obs"][s:s + B],
            d32["done"][s:s + B]) for s in range(0, POOL - B + 1, B)]
    nb = len(b32)
    ref = numpy_arrays(d32)
    cols = [ref[k] for k in names]
    nt_buffer = first(ReplayBuffer(CAP, T, 0))
    nt32 = nt_buffer.add_batch
    nt64 = first(ReplayBuffer(CAP, T, 0)).add_batch
    storage = nt_buffer._table.storage  # floor part only: the same writes without anything around them
    assert storage is not None
    packed = list(storage.columns)
    fs = full(ReplayBuffer(CAP, fieldspec(), 0)).add_batch
    slow = general_buffer.add_batch

    def numpy_ref(i: int) -> None:
        b = b32[i % nb]
        s = (i * B) % (CAP - B)
        for c, v in zip(cols, b):
            c[s:s + B] = v

    def packed_writes(i: int) -> None:
        b = b32[i % nb]
        s = (i * B) % (CAP - B)
        for c, v in zip(packed, b):
            c[s:s + B] = v

    nd, f32, b_ = np.ndarray, np.dtype(np.float32), np.dtype(np.bool_)
    safe_reward = frozenset({f32, np.dtype(np.float64)})  # the float field takes float32 by a safe cast
    s17, s6, s1 = (B, 17), (B, 6), (B,)

    def checked_writes_into(columns: list[np.ndarray]) -> Callable[[int], None]:
        def checked_writes(i: int) -> None:
            """The least a checked batch add through the README's API does: build ``T``, test each field's
            exact type, shape (batch length included) and dtype so nothing can fail mid-write, and write the
            rows into ``columns`` (no lock, ids or counts)."""
            t = T(*b32[i % nb])
            o, a, r, n, d = t
            if not (type(o) is nd and o.shape == s17 and o.dtype is f32 and type(a) is nd and a.shape == s6
                    and a.dtype is f32 and type(r) is nd and r.shape == s1 and r.dtype in safe_reward
                    and type(n) is nd and n.shape == s17 and n.dtype is f32 and type(d) is nd and d.shape == s1
                    and d.dtype is b_):
                raise TypeError(t)
            s = (i * B) % (CAP - B)
            columns[0][s:s + B] = o
            columns[1][s:s + B] = a
            columns[2][s:s + B] = r
            columns[3][s:s + B] = n
            columns[4][s:s + B] = d
        return checked_writes

    into_numpy_refs = checked_writes_into(cols)
    lock = threading.RLock()
    slot_ids = np.full(CAP, -1, dtype=np.int64)

    def locked_with_ids(i: int) -> np.ndarray:
        """The checked writes into contiguous arrays plus the least a batch add must also do: hold a
        lock, and make and record the batch's ids (no eviction rule, cursor or counters)."""
        with lock:
            into_numpy_refs(i)
            s = (i * B) % (CAP - B)
            ids = np.arange(s, s + B, dtype=np.int64)
            slot_ids[s:s + B] = ids
        return ids

    return {
        "numpy-ref": numpy_ref,
        "README NamedTuple, float32 in": lambda i: nt32(T(*b32[i % nb])),
        "README NamedTuple, float64 in": lambda i: nt64(T(*b64[i % nb])),
        "FieldSpec dict": lambda i: fs(dict(zip(names, b32[i % nb]))),
        "general path (lanes off)": lambda i: slow(T(*b32[i % nb])),
        "floor: the 5 strided writes into our packed rows only": packed_writes,
        "floor: build T, check its fields, write the rows": checked_writes_into(packed),
        "floor: build T, check its fields, write numpy-ref's own arrays": into_numpy_refs,
        "floor: the same, holding a lock, returning 64 new ids": locked_with_ids,
    }


def general_path_buffer() -> ReplayBuffer:
    """A NamedTuple buffer that never builds its generated lanes."""
    saved = table_module.compile_add_one, table_module.compile_add_batch
    table_module.compile_add_one = lambda table: table._add_general  # type: ignore[assignment]
    table_module.compile_add_batch = lambda table: None  # type: ignore[assignment]
    try:
        buffer = first(ReplayBuffer(CAP, T, 0))  # its fill goes through the general path too
    finally:
        table_module.compile_add_one, table_module.compile_add_batch = saved
    return buffer


def interleaved(cases: dict[str, Callable[[int], Any]], n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(median, best) over ``rounds`` of µs per call; every round runs each case once, in turn.

    On a shared machine the best round is the one least disturbed by the neighbours,
    so it is the closer estimate of the cost itself; the median shows the typical run."""
    for fn in cases.values():
        for i in range(200):
            fn(i)  # warm: compiled lanes, caches
    times: dict[str, list[float]] = {name: [] for name in cases}
    start = 0
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for i in range(start, start + n):
                fn(i)
            times[name].append((time.perf_counter() - t0) / n * 1e6)
        start += n
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def print_table(title: str, result: dict[str, tuple[float, float]]) -> None:
    ref_median, ref_best = result["numpy-ref"]
    print(f"\n{title}")
    print("| path | median µs/op | / numpy-ref | best µs/op | / numpy-ref |")
    print("|---|---|---|---|---|")
    for name, (median, best) in result.items():
        print(f"| {name} | {median:.2f} | {median / ref_median:.2f}x | {best:.2f} | {best / ref_best:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--n1", type=int, default=10_000, help="single adds per case per round")
    p.add_argument("--n2", type=int, default=1_000, help="batched adds per case per round")
    a = p.parse_args()
    general = general_path_buffer()
    print_table(f"W1 single add (median of {a.rounds} interleaved rounds of {a.n1})",
                interleaved(w1_cases(general), a.n1, a.rounds))
    print_table(f"W2 add_batch of {B} (median of {a.rounds} interleaved rounds of {a.n2})",
                interleaved(w2_cases(general), a.n2, a.rounds))


if __name__ == "__main__":
    main()
