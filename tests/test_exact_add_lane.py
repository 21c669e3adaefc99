"""The exact-layout single-add lane: the README's structures fed their own dtypes.

An item whose fields already have the stored dtypes and shapes is copied field by
field into a one-row scratch buffer (memoryview assignments, which refuse any
other format or shape by raising) and then into the table in one row copy. These
tests show that it stores exactly what the general path stores, that everything
else (casts, other shapes, byte orders, strided views, bad values) reaches the
lanes that handle it with the buffer unchanged on a refusal, and that its one
scratch row is safe with threads adding side by side.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ReplayTables.engine.table as table_module
from ReplayTables.errors import SchemaError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer


class T(NamedTuple):
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    done: bool


def t_of(k: float, dtype: Any = np.float32) -> T:
    return T(np.full(5, k, dtype), np.full(2, -k, dtype), float(k), np.full(5, k + 0.5, dtype), bool(int(k) % 2))


def readme_buffer(capacity: int = 4, cls: Any = ReplayBuffer) -> Any:
    b = cls(capacity, T, np.random.default_rng(0)) if cls is ReplayBuffer else \
        cls(capacity, T, np.random.default_rng(0), PERConfig())
    b.add(t_of(0.0))  # the first add fixes obs/action/next_obs as float32 and compiles the lanes
    return b


def lanes_off(capacity: int = 4, cls: Any = ReplayBuffer) -> Any:
    """The same buffer with its generated lanes switched off: the general path only."""
    saved = table_module.compile_add_one
    table_module.compile_add_one = lambda table: table._add_general  # type: ignore[assignment]
    try:
        b = readme_buffer(capacity, cls)
    finally:
        table_module.compile_add_one = saved  # type: ignore[assignment]
    return b


def contents(b: Any) -> dict[str, Any]:
    """Everything an add changes: ids, rows, counters."""
    ids = live_ids(b)
    batch = b.get(ids)
    return {"stats": b.stats(), "ids": ids.tolist(), "rows": {k: getattr(batch, k).tolist() for k in T._fields}}


def live_ids(b: Any) -> np.ndarray:
    table = b._table
    return np.sort(table.ids_of(table.directory.live_slots()))


def test_the_readme_structure_takes_the_exact_lane() -> None:
    b = readme_buffer()
    assert b._table._add_fast.__name__ == "add_exact"  # the lane the rest of this module exercises


def test_exact_items_store_what_the_general_path_stores() -> None:
    fast, slow = readme_buffer(), lanes_off()
    for k in range(1, 11):  # fills, then wraps: every later add evicts
        item = t_of(float(k))
        assert fast.add(item) == slow.add(item)
    assert contents(fast) == contents(slow)
    assert fast.stats()["evicted"] == 7


@pytest.mark.parametrize("variant", [
    "float64 obs", "strided obs", "reversed obs", "big-endian obs", "0-d reward", "np.float32 reward",
    "int reward", "np.bool_ done", "list obs", "float16 action",
])
def test_other_inputs_reach_the_lane_that_casts_them(variant: str) -> None:
    """Inputs the scratch row refuses, or that need a cast, are stored as the general path stores them."""
    wide = np.arange(10, dtype=np.float32) + 1
    base = t_of(3.0)
    changes: dict[str, Any] = {
        "float64 obs": {"obs": base.obs.astype(np.float64)},
        "strided obs": {"obs": wide[::2]},
        "reversed obs": {"obs": wide[:5][::-1]},
        "big-endian obs": {"obs": base.obs.astype(">f4")},
        "0-d reward": {"reward": np.array(2.5)},
        "np.float32 reward": {"reward": np.float32(2.5)},
        "int reward": {"reward": 7},
        "np.bool_ done": {"done": np.bool_(True)},
        "list obs": {"obs": [1.0, 2.0, 3.0, 4.0, 5.0]},
        "float16 action": {"action": np.array([1.5, -2.0], np.float16)},
    }
    item = base._replace(**changes[variant])
    fast, slow = readme_buffer(), lanes_off()
    assert fast.add(item) == slow.add(item)
    assert contents(fast) == contents(slow)


@pytest.mark.parametrize("variant", ["short obs", "2-D obs", "row obs", "overflowing obs", "huge int reward",
                                     "string done", "complex reward"])
def test_refused_items_leave_the_buffer_unchanged(variant: str) -> None:
    base = t_of(3.0)
    changes: dict[str, Any] = {
        "short obs": {"obs": np.zeros(4, np.float32)},
        "2-D obs": {"obs": np.zeros((5, 1), np.float32)},
        "row obs": {"obs": np.zeros((1, 5), np.float32)},
        "overflowing obs": {"obs": np.full(5, 1e300)},
        "huge int reward": {"reward": 10**400},
        "string done": {"done": "yes"},
        "complex reward": {"reward": 1 + 2j},
    }
    b = readme_buffer()
    for k in range(1, 6):  # a full ring: a half-done add would evict item 1
        b.add(t_of(float(k)))
    before = contents(b)
    with pytest.raises(SchemaError):
        b.add(base._replace(**changes[variant]))
    assert contents(b) == before
    assert b.add(t_of(9.0)) >= 0  # and the lane still works


def test_prioritized_buffer_takes_it_and_updates_its_tree() -> None:
    fast, slow = readme_buffer(8, PrioritizedReplay), lanes_off(8, PrioritizedReplay)
    assert fast._table._add_fast.__name__ == "add_exact"
    for b in (fast, slow):
        ids = [b.add(t_of(float(k))) for k in range(1, 8)]
        b.update_priorities(ids, np.arange(1, 8, dtype=np.float64))
        for k in range(8, 12):  # new items at the running max priority, evicting the oldest
            b.add(t_of(float(k)))
    assert contents(fast) == contents(slow)
    np.testing.assert_array_equal(fast._table.sampler.tree.leaves, slow._table.sampler.tree.leaves)
    np.testing.assert_array_equal(fast._table.sampler.tree.sums, slow._table.sampler.tree.sums)


def test_threads_adding_side_by_side_never_mix_rows() -> None:
    """Each thread adds rows whose every field holds its own number, into a buffer that keeps
    them all; afterwards every stored row is one thread's row whole, and each thread's number
    is on exactly as many rows as it added (a scratch row filled outside the lock would let one
    thread store another's row)."""
    n_threads, per_thread = 4, 5000
    b = readme_buffer(1 + n_threads * per_thread)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            item = T(np.full(5, k, np.float32), np.full(2, -k, np.float32), float(k), np.full(5, k + 0.5, np.float32),
                     bool(k % 2))
            for _ in range(per_thread):
                b.add(item)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(1, n_threads + 1)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: inside the scratch writes too
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert b.stats()["added"] == 1 + n_threads * per_thread
    rows = b.get(live_ids(b))
    k = rows.reward
    assert np.bincount(k.astype(np.int64)).tolist() == [1] + [per_thread] * n_threads  # the first add: 0.0
    np.testing.assert_array_equal(rows.obs, np.repeat(k[:, None], 5, 1))
    np.testing.assert_array_equal(rows.action, -np.repeat(k[:, None], 2, 1))
    np.testing.assert_array_equal(rows.next_obs, np.repeat(k[:, None] + 0.5, 5, 1))
    np.testing.assert_array_equal(rows.done, k.astype(int) % 2 == 1)


values = st.sampled_from([0.0, -1.5, 3.25, 1e30, -1e-30, float("inf"), float("nan")])
kinds = st.sampled_from(["exact", "float64", "strided", "int reward", "np scalar"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, kinds), min_size=1, max_size=12))
def test_any_sequence_of_adds_matches_the_general_path(adds: list[tuple[float, str]]) -> None:
    """Hypothesis: mixed inputs (exact, cast, strided, NaN and inf, values past float32's range)
    give the same ids, rows and counters, or the same refusal, as the general path."""
    fast, slow = readme_buffer(), lanes_off()
    for v, kind in adds:
        item = t_of(0.0)._replace(obs=np.full(5, v, np.float32), reward=v)
        if kind == "float64":
            item = item._replace(obs=np.full(5, v, np.float64))
        elif kind == "strided":
            item = item._replace(obs=np.full(10, v, np.float32)[::2])
        elif kind == "int reward":
            item = item._replace(reward=int(v) if np.isfinite(v) and abs(v) < 1e18 else 0)
        elif kind == "np scalar":
            item = item._replace(reward=np.float32(v), done=np.bool_(v > 0))
        outcomes = []
        for b in (fast, slow):
            try:
                outcomes.append(b.add(item))
            except SchemaError as e:
                outcomes.append(type(e))
        assert outcomes[0] == outcomes[1]
    a, b = contents(fast), contents(slow)
    assert a["stats"] == b["stats"] and a["ids"] == b["ids"]
    np.testing.assert_equal(a["rows"], b["rows"])  # NaN equals NaN here
