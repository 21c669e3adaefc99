"""Where our time goes on the harness workloads W1-W4 (a tool for optimising, not a result).

    python benchmarks/profile_paths.py [--workloads W2 W3 W4] [--cprofile]

For each workload it builds the buffer the way ``benchmarks/replaytables_adapter.py``
does (dict structure of declared ``FieldSpec``, 1M slots, full for W3/W4), times
the whole public call, then times each step of that call on its own by calling the
same engine pieces in the same order (``time per op``, median of 5 loops), and
ranks them. The steps' sum differs from the whole call by the Python glue between
them (reported as "rest"). ``--cprofile`` adds cProfile's top functions by own time
(cProfile inflates cheap calls; use it for the ranking, not the microseconds).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ReplayTables.batch import Batch
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

CAP = 1_000_000
B = 256
POOL = 65_536


def structure() -> dict[str, FieldSpec]:
    return {"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
            "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
            "done": FieldSpec((), np.bool_)}


def pool() -> dict[str, np.ndarray]:
    """Same shapes and kinds as the harness pool (trajectory: next_obs[i] == obs[i+1])."""
    rng = np.random.default_rng(12345)
    states = rng.standard_normal((POOL + 1, 17), dtype=np.float32)
    done = np.zeros(POOL, dtype=bool)
    done[999::1000] = True
    return {"obs": states[:-1], "action": rng.uniform(-1, 1, (POOL, 6)).astype(np.float32),
            "reward": rng.standard_normal(POOL).astype(np.float32), "next_obs": states[1:], "done": done}


def per_op(fn: Callable[[int], Any], n: int, loops: int = 5) -> float:
    """Median over ``loops`` of the mean µs per call of ``fn(i)`` for i in range(n)."""
    fn(0)
    times = []
    for _ in range(loops):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def report(title: str, whole: float, steps: list[tuple[str, float]]) -> None:
    print(f"\n{title}: whole call {whole:.2f} µs/op")
    rest = whole - sum(t for _, t in steps)
    ranked = sorted([*steps, ("rest (glue between the steps, not separately timed)", rest)], key=lambda s: -s[1])
    for name, t in ranked:
        print(f"  {t:8.2f} µs  {100 * t / whole:5.1f}%  {name}")


def full_buffer(per: bool) -> tuple[ReplayBuffer, np.ndarray]:
    rng = np.random.default_rng(0)
    if per:
        buf: ReplayBuffer = PrioritizedReplay(CAP, structure(), rng, PERConfig(priority_exponent=0.6, beta=0.4))
    else:
        buf = ReplayBuffer(CAP, structure(), rng)
    data = pool()
    ids = []
    done = 0
    while done < CAP:
        c = min(POOL, CAP - done)
        ids.append(buf.add_batch({k: v[:c] for k, v in data.items()}))
        done += c
    all_ids = np.concatenate(ids)
    if per:
        assert isinstance(buf, PrioritizedReplay)
        buf.update_priorities(all_ids, np.random.default_rng(12346).uniform(0.01, 2.0, CAP))
    return buf, all_ids


def w1() -> None:
    buf = ReplayBuffer(CAP, structure(), np.random.default_rng(0))
    d = pool()
    rows = [{"obs": d["obs"][j], "action": d["action"][j], "reward": float(d["reward"][j]),
             "next_obs": d["next_obs"][j], "done": bool(d["done"][j])} for j in range(16_384)]
    add = buf.add
    whole = per_op(lambda i: add(rows[i % 16_384]), 100_000)
    table = buf._table
    directory, writer, rng = table.directory, table.writer, table.rng
    cols = table.storage.columns if table.storage is not None else []
    row = rows[1]
    vals = [row[k] for k in ("obs", "action", "reward", "next_obs", "done")]
    steps = [
        ("writer.place_one(rng)", per_op(lambda i: writer.place_one(rng), 100_000)),
        ("directory.assign_one(slot) (slot already used here)",
         per_op(lambda i: directory.assign_one(i % 1000), 100_000)),
        ("5 column setitems C[slot] = v", per_op(lambda i: [c.__setitem__(7, v) for c, v in zip(cols, vals)], 100_000)),
    ]
    report("W1 add one (buffer.add(dict))", whole, steps)


def w2() -> None:
    d = pool()
    batches = [{k: v[s:s + 64] for k, v in d.items()} for s in range(0, POOL - 63, 64)]
    nb = len(batches)
    buf = ReplayBuffer(CAP, structure(), np.random.default_rng(0))
    add_batch = buf.add_batch
    whole = per_op(lambda i: add_batch(batches[i % nb]), 10_000)
    table = buf._table
    assert table.storage is not None
    cols = table.storage.columns
    names = ("obs", "action", "reward", "next_obs", "done")
    ref = {k: np.zeros((CAP, *v.shape[1:]), v.dtype) for k, v in d.items()}

    def numpy_ref(i: int) -> None:  # what numpy-ref does: one contiguous array per field
        b = batches[i % nb]
        s = (i * 64) % (CAP - 64)
        for k in names:
            ref[k][s:s + 64] = b[k]

    def packed_writes(i: int) -> None:  # the 5 strided slice writes into the packed rows
        b = batches[i % nb]
        s = (i * 64) % (CAP - 64)
        for c, k in zip(cols, names):
            c[s:s + 64] = b[k]

    def ids(i: int) -> None:
        s = (i * 64) % (CAP - 64)
        table.directory.slot_id[s:s + 64] = np.arange(s, s + 64, dtype=np.int64)

    def checks(i: int) -> None:  # the generated identity checks, as plain Python
        b = batches[i % nb]
        v = [b[k] for k in names]
        all(type(x) is np.ndarray and x.dtype is f.dtype and x.ndim == len(f.shape) + 1 and x.shape[1:] == f.shape
            for x, f in zip(v, table.fields))

    steps = [
        ("5 strided column writes into packed rows", per_op(packed_writes, 10_000)),
        ("ids: np.arange + slot_id slice write", per_op(ids, 10_000)),
        ("dict lookups + dtype/shape identity checks (approx.)", per_op(checks, 10_000)),
    ]
    report("W2 add batch of 64 (buffer.add_batch(dict))", whole, steps)
    print(f"  reference: numpy-ref's 5 contiguous slice writes {per_op(numpy_ref, 10_000):.2f} µs/op")


def w3() -> None:
    buf, _ = full_buffer(per=False)
    whole = per_op(lambda i: buf.sample(B), 3000)
    table = buf._table
    storage = table.storage
    assert storage is not None
    directory, rng, schema = table.directory, table.rng, table.schema
    slots = directory.sample_uniform(rng, B)
    records = np.take(storage._records, slots)
    arrays = storage.gather(slots)
    probs = np.full(B, 1.0 / CAP)
    ids = directory.slot_id[slots]
    steps = [
        ("draw slots: rng.random*count, astype, clamp", per_op(lambda i: directory.sample_uniform(rng, B), 3000)),
        ("gather rows: np.take(records, slots)", per_op(lambda i: np.take(storage._records, slots), 3000)),
        ("5 field views records[name]", per_op(lambda i: [records[n] for n in storage._names], 3000)),
        ("ids = slot_id[slots]", per_op(lambda i: directory.slot_id[slots], 3000)),
        ("probabilities np.full + weights np.ones", per_op(lambda i: (np.full(B, 1.0 / CAP), np.ones(B)), 3000)),
        ("Batch(...) incl. schema.build of the dict", per_op(lambda i: Batch(schema, arrays, ids, probs, probs), 3000)),
    ]
    report("W3 uniform sample 256 at 1M (buffer.sample)", whole, steps)


def w4() -> None:
    buf, _ = full_buffer(per=True)
    assert isinstance(buf, PrioritizedReplay)
    prios = np.random.default_rng(1).uniform(0.01, 2.0, size=(1024, B))

    def op(i: int) -> None:
        b = buf.sample(B)
        buf.update_priorities(b.ids, prios[i % 1024])

    whole = per_op(op, 2000)
    s_only = per_op(lambda i: buf.sample(B), 2000)
    b = buf.sample(B)
    u_only = per_op(lambda i: buf.update_priorities(b.ids, prios[i % 1024]), 2000)
    table = buf._table
    sampler = buf._sampler
    tree = sampler.tree
    directory, rng, schema = table.directory, table.rng, table.schema
    storage = table.storage
    assert storage is not None
    total = tree.total
    targets = rng.random(B) * total
    slots = tree.find(targets)
    records = np.take(storage._records, slots)
    arrays = storage.gather(slots)
    ids = directory.slot_id[slots]
    p_min = sampler.min_probability(directory)
    probs, weights = tree.probabilities_and_weights(slots, 1e-3, CAP, p_min, 0.4)
    q = np.power(prios[0], 0.6)
    def t(fn: Callable[[int], Any]) -> float:
        return per_op(fn, 2000)

    p_mix = 1 - (1 - 1e-3) ** B  # chance that a sample has at least one uniform draw to concatenate
    steps = [
        ("sample: rng.binomial + rng.random(256) * total", t(lambda i: (rng.binomial(B, 1e-3), rng.random(B) * total))),
        ("sample: tree.find (numba batched descent)", t(lambda i: tree.find(targets))),
        ("sample: concatenate uniform draws (expected cost)",
         t(lambda i: np.concatenate([slots, directory.sample_uniform(rng, 1)])) * p_mix),
        ("sample: min_probability (mins[:16].min() etc.)", t(lambda i: sampler.min_probability(directory))),
        ("sample: probabilities_and_weights kernel",
         t(lambda i: tree.probabilities_and_weights(slots, 1e-3, CAP, p_min, 0.4))),
        ("sample: gather rows np.take(records)", t(lambda i: np.take(storage._records, slots))),
        ("sample: 5 field views", t(lambda i: [records[n] for n in storage._names])),
        ("sample: ids = slot_id[slots]", t(lambda i: directory.slot_id[slots])),
        ("sample: Batch(...) incl. schema.build", t(lambda i: Batch(schema, arrays, ids, weights, probs))),
        ("update: check_ids + ascontiguousarray",
         t(lambda i: np.ascontiguousarray(np.asarray(ids).astype(np.int64, copy=False)))),
        ("update: q = p ** 0.6 (np.power)", t(lambda i: np.power(prios[i % 1024], 0.6))),
        ("update: update_by_ids kernel (fused lookup + leaf set + repair)",
         t(lambda i: tree.update_by_ids(directory.slot_id, ids, prios[i % 1024], q))),
    ]
    report("W4 PER sample 256 + update 256 at 1M", whole, steps)
    print(f"  split: sample alone {s_only:.2f} µs, update alone {u_only:.2f} µs")


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    ap.add_argument("--cprofile", action="store_true")
    a = ap.parse_args(argv)
    for w in a.workloads:
        WORKLOADS[w]()
        if a.cprofile:
            prof = cProfile.Profile()
            prof.enable()
            WORKLOADS[w]()
            prof.disable()
            print(f"\ncProfile {w} (top 12 by own time; includes the setup above):")
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
