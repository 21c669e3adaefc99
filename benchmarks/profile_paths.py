"""Where our time goes on the harness workloads W1-W4 (a tool for optimising, not a result).

    python benchmarks/profile_paths.py [--workloads W2 W3 W4] [--cprofile]

For each workload it builds the buffer the way ``benchmarks/replaytables_adapter.py``
does (dict structure of declared ``FieldSpec``, 1M slots, full for W3/W4) and times
the whole public call (median of 5 loops). Then:

* W3/W4: the engine pieces on the path (sampler draw, tree kernels, gather, Batch,
  update by id) are wrapped *in place* with timers and the real loop runs again, so
  each piece is timed in context, on fresh random slots (a piece timed alone on the
  same slots every call would run from cache and look cheaper than it is). The
  wrappers cost ~0.2 µs each; "rest" is the whole call minus the wrapped pieces
  (front-end glue: argument checks, counters, dataclass construction) and minus
  the wrappers' own overhead, which is estimated and removed.
* W1/W2: the generated add paths are one function each; their steps are timed
  separately (fresh slots every call) and compared with the numpy reference.
* W1lane: the generated single-add lanes of a README ``NamedTuple`` buffer (float32
  arrays, Python float and bool; a full ring, so every add evicts), the exact-layout
  lane these inputs take and the checked lane behind it, each recompiled from its
  own source with one part left out at a time (the field checks, the lock, the ring
  cursor with the id and counters, the copies of the fields); the difference to the whole lane
  is what that part costs in context. The variants are for timing only (without the
  checks or the lock they are not safe), interleaved over 7 rounds, best round each.

``--cprofile`` adds cProfile's top functions by own time (cProfile inflates cheap
calls; use it for the ranking, not the microseconds).
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

from readme_api_adds import T  # the README's structure, as the README-API benchmark defines it
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


def w1_lane() -> None:
    import ReplayTables.engine.fast_add as fast_add

    generated: dict[str, tuple[list[str], dict[str, Any]]] = {}
    build = fast_add._build

    def keep_source(name: str, lines: list[str], env: dict[str, Any], schema: Any) -> Any:
        generated[name] = (list(lines), env)
        return build(name, lines, env, schema)

    fast_add._build = keep_source  # type: ignore[assignment]
    try:
        cap = 1 << 17
        buf = ReplayBuffer(cap, T, 0)
        d = pool()
        rows = [T(d["obs"][j], d["action"][j], float(d["reward"][j]), d["next_obs"][j], bool(d["done"][j]))
                for j in range(1024)]
        for j in range(cap + 1):
            buf.add(rows[j % 1024])
    finally:
        fast_add._build = build  # type: ignore[assignment]
    for lane in ("add_exact", "add_fast"):
        if lane in generated:
            ablate(lane, *generated[lane], rows)


def ablate(lane: str, lines: list[str], env: dict[str, Any], rows: list[Any]) -> None:
    """Time the generated ``lane`` whole and with each of its parts left out (see the module docstring)."""
    import timeit

    def where(test: Callable[[str], bool]) -> list[int]:
        return [i for i, line in enumerate(lines) if test(line.strip())]

    checks = where(lambda line: line.startswith("if not ("))[0]
    lock_at, release = where(lambda line: line == "ACQUIRE()")[0], where(lambda line: line == "RELEASE()")[0]
    # the copies: into the columns (checked lane), or into the scratch row and the row into the table (exact)
    writes = where(lambda line: ("[slot] = v" in line or line.startswith("X") or line.startswith("ROWS[")))
    placed = where(lambda line: line.startswith("slot = "))[0]
    place_end = where(lambda line: line.startswith("ROWS[") or line.startswith("C0[slot]"))[0]
    indent = lines[placed][: len(lines[placed]) - len(lines[placed].lstrip())]

    def variant(replace: dict[int, str]) -> Callable[[Any], Any]:
        """The lane's own source and globals with the lines in ``replace`` replaced (``""``: left out)."""
        scope = dict(env)
        exec("\n".join(replace.get(i, line) for i, line in enumerate(lines) if replace.get(i, line)), scope)
        fn: Callable[[Any], Any] = scope[lane]
        return fn

    def keep(i: int) -> str:
        return lines[i][: len(lines[i]) - len(lines[i].lstrip())] + "pass"

    variants = {
        "whole lane": variant({}),
        "without the field checks": variant({checks: ""}),
        "without the lock (acquire, release)": variant({lock_at: keep(lock_at), release: keep(release)}),
        "without cursor, id and counters": variant({i: "" for i in range(placed + 1, place_end)}
                                                   | {placed: indent + "slot = 7; new_id = 7"}),
        "without the copies of the fields": variant({i: keep(i) for i in writes}),
        "call and unpack only": variant({i: "" for i in range(checks, len(lines))} | {checks: "    return 0"}),
    }
    assert all(f(rows[1]) is not None for f in variants.values())
    best = {name: float("inf") for name in variants}
    n = 100_000
    for _ in range(7):
        for name, f in variants.items():
            t = timeit.timeit(lambda f=f: f(rows[5]), number=n) / n * 1e9
            best[name] = min(best[name], t)
    whole = best["whole lane"]
    print(f"\nW1lane: {lane}, a single add of a README NamedTuple buffer, best of 7 rounds (ns/call)")
    for name, t in best.items():
        print(f"  {t:7.0f} ns  {name:40s}" + ("" if name in ("whole lane", "call and unpack only")
                                                 else f"  (the part: {whole - t:5.0f} ns)"))


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


class Timers:
    """Wrap callables in place with accumulating timers; ``restore()`` undoes it."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.parent: dict[str, str | None] = {}
        self._undo: list[tuple[Any, str, Any, bool]] = []
        self._stack: list[str] = []

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        orig = getattr(obj, attr)
        had_own = attr in getattr(obj, "__dict__", {})
        self.total[label] = 0.0
        stack = self._stack
        total = self.total
        parent = self.parent
        pc = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            parent.setdefault(label, stack[-1] if stack else None)
            stack.append(label)
            t0 = pc()
            try:
                return orig(*args, **kwargs)
            finally:
                total[label] += pc() - t0
                stack.pop()

        setattr(obj, attr, timed)
        self._undo.append((obj, attr, orig, had_own))

    def restore(self) -> None:
        for obj, attr, orig, had_own in reversed(self._undo):
            if had_own:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)
        self._undo.clear()


def wrapper_overhead() -> float:
    """µs one Timers wrapper adds to a call (measured on a trivial function)."""
    class Obj:
        def f(self) -> None:
            return None

    o = Obj()
    plain = per_op(lambda i: o.f(), 200_000)
    t = Timers()
    t.wrap(o, "f", "f")
    wrapped = per_op(lambda i: o.f(), 200_000)
    return max(0.0, wrapped - plain)


def in_context(title: str, loop: Callable[[int], Any], n: int, pieces: list[tuple[Any, str, str]]) -> None:
    whole = per_op(loop, n)
    overhead = wrapper_overhead()
    t = Timers()
    for obj, attr, label in pieces:
        t.wrap(obj, attr, label)
    loop(0)
    for k in t.total:
        t.total[k] = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        loop(i)
    wrapped_whole = (time.perf_counter() - t0) / n * 1e6
    t.restore()
    per = {k: v / n * 1e6 for k, v in t.total.items()}
    # self time: inclusive minus the children (and the children's wrappers)
    own = dict(per)
    for k, p in t.parent.items():
        if p is not None:
            own[p] -= per[k] + overhead
    top = sum(per[k] for k, p in t.parent.items() if p is None)
    n_wrapped_calls = len(t.parent)
    rest = wrapped_whole - top - overhead * n_wrapped_calls
    print(f"\n{title}: whole call {whole:.2f} µs/op; loop with timers {wrapped_whole:.2f} µs/op "
          f"(timer overhead ~{overhead:.2f} µs per wrapped call, removed); pieces timed in that loop:")
    # pieces never called on this path (the engine changed) have no parent entry: left out
    rows = [(own[k], k + (f"   [inside {t.parent[k]}]" if t.parent.get(k) else "")) for k in per if k in t.parent]
    rows.append((rest, "rest: front-end glue (checks, counters, Sample/Batch plumbing)"))
    for us, name in sorted(rows, key=lambda r: -r[0]):
        print(f"  {us:8.2f} µs  {100 * us / wrapped_whole:5.1f}%  {name}")


def w3() -> None:
    buf, _ = full_buffer(per=False)
    table = buf._table
    assert table.storage is not None
    import ReplayTables.ReplayBuffer as rb_mod

    pieces = [(table.sampler, "sample", "sampler.sample (draw slots + probabilities)"),
              (table.directory, "sample_uniform", "directory.sample_uniform (rng.random -> slots)"),
              (table.storage, "gather", "storage.gather (np.take of packed rows + field views)"),
              (rb_mod, "Batch", "Batch(...) construction (schema.build of the dict)")]
    in_context("W3 uniform sample 256 at 1M (buffer.sample)", lambda i: buf.sample(B), 3000, pieces)


def w4() -> None:
    buf, _ = full_buffer(per=True)
    assert isinstance(buf, PrioritizedReplay)
    prios = np.random.default_rng(1).uniform(0.01, 2.0, size=(1024, B))

    def op(i: int) -> None:
        b = buf.sample(B)
        buf.update_priorities(b.ids, prios[i % 1024])

    s_only = per_op(lambda i: buf.sample(B), 2000)
    b = buf.sample(B)
    u_only = per_op(lambda i: buf.update_priorities(b.ids, prios[i % 1024]), 2000)
    table = buf._table
    sampler = buf._sampler
    tree = sampler.tree
    assert table.storage is not None
    import ReplayTables.engine.table as table_mod
    import ReplayTables.PER as per_mod
    import ReplayTables.ReplayBuffer as rb_mod

    pieces = [(sampler, "split", "sample: sampler.split (rng, mixture split)"),
              (sampler, "select", "sample: sampler.select (kernel call and its arrays)"),
              (tree, "sample_points", "sample: tree.sample_points (descent, ids, q, probabilities)"),
              (table.directory, "dense", "sample: directory.dense"),
              (sampler, "mass", "sample: sampler.mass"),
              (table_mod, "importance_weights", "sample: importance_weights"),
              (table.storage, "gather", "sample: storage.gather (np.take of packed rows + views)"),
              (rb_mod, "Batch", "sample: Batch(...) construction"),
              (per_mod, "Batch", "update: isinstance(ids, Batch) check (PER module's Batch name)"),
              (sampler, "update_by_ids", "update: sampler.update_by_ids (validation + q = p**alpha)"),
              (tree, "update_by_ids", "update: tree.update_by_ids (numba fused lookup + set + repair)")]
    # PER.update_priorities does isinstance(ids, Batch): wrapping that name would break it
    pieces = [pc for pc in pieces if pc[1] != "Batch" or pc[0] is rb_mod]
    in_context("W4 PER sample 256 + update 256 at 1M", op, 2000, pieces)
    print(f"  split: sample alone {s_only:.2f} µs, update alone {u_only:.2f} µs")


WORKLOADS = {"W1": w1, "W1lane": w1_lane, "W2": w2, "W3": w3, "W4": w4}


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
