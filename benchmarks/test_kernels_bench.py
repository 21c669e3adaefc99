"""pytest-benchmark micro-benchmarks of the engine's hot kernels, so regressions show.

    pytest benchmarks/ --benchmark-enable                 # run and report
    pytest benchmarks/ --benchmark-enable --benchmark-autosave     # keep a baseline
    pytest benchmarks/ --benchmark-enable --benchmark-compare      # compare with it

Not part of the normal test run: ``testpaths`` is ``tests/`` and ``addopts`` has
``--benchmark-disable`` (then each body runs once, as a smoke test). Sizes follow
the harness workloads: 1M slots, batches of 256, transitions of the mujoco spec
(obs f32[17], action f32[6], reward f32, next_obs f32[17], done bool).
Numba compiles (or loads from its cache) in the fixtures, outside the timings.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ReplayTables.engine.schema import Field, FieldSpec
from ReplayTables.engine.storage import PackedStorage
from ReplayTables.engine.sumtree import SumTree
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

CAPACITY = 1_000_000
BATCH = 256
# distinct random index sets cycled through: 4096 x 256 = 1M draws, so the rows and
# tree nodes a call touches are mostly not in cache (64 sets would stay in L2/L3
# and make gathers and descents look several times faster than in real use)
SETS = 4096

SPEC: dict[str, tuple[tuple[int, ...], Any]] = {
    "obs": ((17,), np.float32), "action": ((6,), np.float32), "reward": ((), np.float32),
    "next_obs": ((17,), np.float32), "done": ((), np.bool_),
}


def structure() -> dict[str, FieldSpec]:
    return {k: FieldSpec(s, d) for k, (s, d) in SPEC.items()}


def transitions(m: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((m, 17), dtype=np.float32),
            "action": rng.uniform(-1, 1, (m, 6)).astype(np.float32),
            "reward": rng.standard_normal(m, dtype=np.float32),
            "next_obs": rng.standard_normal((m, 17), dtype=np.float32),
            "done": rng.random(m) < 0.001}


# ---------------------------------------------------------------- sum tree
@pytest.fixture(scope="module")
def tree() -> SumTree:
    t = SumTree(CAPACITY)
    rng = np.random.default_rng(0)
    t.set(np.arange(CAPACITY, dtype=np.int64), rng.uniform(0.01, 2.0, CAPACITY))  # also compiles
    t.find(rng.random(BATCH) * t.total)
    return t


def test_sumtree_set_256_at_1M(benchmark: Any, tree: SumTree) -> None:
    rng = np.random.default_rng(1)
    slots = rng.integers(0, CAPACITY, size=(SETS, BATCH))
    values = rng.uniform(0.01, 2.0, size=(SETS, BATCH))
    i = iter(range(10**12))

    def step() -> None:
        k = next(i) % SETS
        tree.set(slots[k], values[k])

    benchmark(step)
    assert tree.total > 0


def test_sumtree_find_256_at_1M(benchmark: Any, tree: SumTree) -> None:
    rng = np.random.default_rng(2)
    targets = rng.random((SETS, BATCH)) * tree.total
    i = iter(range(10**12))

    def step() -> np.ndarray:
        return tree.find(targets[next(i) % SETS])

    out = benchmark(step)
    assert out.shape == (BATCH,) and out.min() >= 0 and out.max() < CAPACITY


# ---------------------------------------------------------------- storage
@pytest.fixture(scope="module")
def storage() -> PackedStorage:
    fields = [Field((k,), s, np.dtype(d)) for k, (s, d) in SPEC.items()]
    st = PackedStorage(fields, CAPACITY)
    st.rows[:] = 1  # touch every page, as a full buffer would have
    return st


def test_packed_gather_256_at_1M(benchmark: Any, storage: PackedStorage) -> None:
    rng = np.random.default_rng(3)
    slots = rng.integers(0, CAPACITY, size=(SETS, BATCH))
    i = iter(range(10**12))

    def step() -> list[np.ndarray]:
        return storage.gather(slots[next(i) % SETS])

    out = benchmark(step)
    assert len(out) == len(SPEC) and out[0].shape == (BATCH, 17)


# ---------------------------------------------------------------- front end adds
def test_add_one(benchmark: Any) -> None:
    buf = ReplayBuffer(CAPACITY, structure(), np.random.default_rng(0))
    data = transitions(1024)
    rows = [{"obs": data["obs"][j], "action": data["action"][j], "reward": float(data["reward"][j]),
             "next_obs": data["next_obs"][j], "done": bool(data["done"][j])} for j in range(1024)]
    buf.add(rows[0])  # builds the generated fast path
    i = iter(range(10**12))
    add = buf.add

    def step() -> int:
        return add(rows[next(i) % 1024])

    benchmark(step)
    assert buf.size() > 1


def test_add_batch_64(benchmark: Any) -> None:
    buf = ReplayBuffer(CAPACITY, structure(), np.random.default_rng(0))
    data = transitions(64 * 128)
    batches = [{k: v[s:s + 64] for k, v in data.items()} for s in range(0, 64 * 128, 64)]
    buf.add_batch(batches[0])
    i = iter(range(10**12))
    add_batch = buf.add_batch

    def step() -> np.ndarray:
        return add_batch(batches[next(i) % 128])

    ids = benchmark(step)
    assert ids.shape == (64,)


def test_per_sample_and_update_256_at_1M(benchmark: Any) -> None:
    buf = PrioritizedReplay(CAPACITY, structure(), np.random.default_rng(0), PERConfig(priority_exponent=0.6))
    data = transitions(65_536)
    ids = np.concatenate([buf.add_batch(data) for _ in range(CAPACITY // 65_536 + 1)])[-CAPACITY:]
    rng = np.random.default_rng(4)
    buf.update_priorities(ids, rng.uniform(0.01, 2.0, CAPACITY))
    prios = rng.uniform(0.01, 2.0, size=(SETS, BATCH))
    i = iter(range(10**12))

    def step() -> None:
        b = buf.sample(BATCH)
        buf.update_priorities(b.ids, prios[next(i) % SETS])

    benchmark(step)
    assert buf.stats()["stale_updates"] == 0
