"""Hostile input to the add, sample and priority paths of every front end.

Each case is an attack that was reproduced (or one of its kind): it must raise the
right :class:`ReplayTablesError` subclass, name the field, the value and what was
expected, and leave the buffer exactly as it was (contents, ids, priorities,
counters and rng state). The fast add lanes are warmed up first, so the cases run
through them, not only through the general path.

Load and checkpoint attacks are in ``test_hostile_load.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pytest

from conftest import assert_unchanged, snapshot
from ReplayTables.errors import ConfigError, PriorityError, ReplayTablesError, SchemaError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer
from ReplayTables.trajectory import TrajectoryReplay
from test_bad_input import check_message


class D(NamedTuple):
    """The README's kind of structure: annotated Python scalars."""

    a: float
    r: float


@dataclass
class DC:
    a: float
    r: float


class Small(NamedTuple):
    """Narrow dtypes, where a value can fail to fit."""

    f32: np.float32
    f16: np.float16
    i8: np.int8
    u8: np.uint8
    flag: bool


def warm(buffer: Any, make: Callable[[int], Any]) -> Any:
    """Add through both lanes a few times so the generated fast lanes exist and are used."""
    for k in range(3):
        buffer.add(make(k))
    buffer.add_batch(_batch_of(make, [10, 11]))
    buffer.sample(2)
    return buffer


def _batch_of(make: Callable[[int], Any], ks: list[int]) -> Any:
    rows = [make(k) for k in ks]
    first = rows[0]
    if isinstance(first, tuple):
        return type(first)(*(np.array(col) for col in zip(*rows)))
    return type(first)(**{f: np.array([getattr(r, f) for r in rows]) for f in vars(first)})


def nt_buffer() -> ReplayBuffer:
    return warm(ReplayBuffer(8, D, np.random.default_rng(0)), lambda k: D(float(k), k / 2))


def dc_buffer() -> ReplayBuffer:
    return warm(ReplayBuffer(8, DC, np.random.default_rng(1)), lambda k: DC(float(k), k / 2))


def per_buffer(**config: Any) -> PrioritizedReplay:
    b = PrioritizedReplay(8, D, np.random.default_rng(2), PERConfig(**config))
    return warm(b, lambda k: D(float(k), k / 2))


def small_buffer() -> ReplayBuffer:
    return warm(ReplayBuffer(8, Small, np.random.default_rng(3)),
                lambda k: Small(np.float32(k), np.float16(k), np.int8(k), np.uint8(k), bool(k % 2)))


def refused(buffer: Any, call: Callable[[Any], Any], error: type[ReplayTablesError], field: str,
            value: str | None = None) -> ReplayTablesError:
    """``call(buffer)`` raises ``error`` naming ``field`` (and ``value``) and changes nothing."""
    before = snapshot(buffer)
    with pytest.raises(error) as info:
        call(buffer)
    check_message(info.value, field, value)
    assert_unchanged(before, buffer)
    return info.value


# ---------------------------------------------------------------- the fast single-add lane
# Reproduced: fields a, r of float64, add(D(7.0, 10**400)) raised OverflowError after the
# cursor moved and ``a`` was written, so item 0 was gone and the new slot mixed new ``a``
# with the old ``r``.
@pytest.mark.parametrize("make", [nt_buffer, dc_buffer, lambda: per_buffer()], ids=["namedtuple", "dataclass", "per"])
@pytest.mark.parametrize("bad, field", [
    (lambda cls: cls(7.0, 10**400), "r"),
    (lambda cls: cls(10**400, 1.0), "a"),
    (lambda cls: cls(7.0, -(10**309)), "r"),
    (lambda cls: cls(7.0, "1.0"), "r"),
    (lambda cls: cls(7.0, None), "r"),
    (lambda cls: cls(7.0, [1.0, 2.0]), "r"),
    (lambda cls: cls(7.0, np.array([1.0])), "r"),
    (lambda cls: cls(7.0, 1 + 2j), "r"),
], ids=["huge-int-r", "huge-int-a", "huge-negative-int", "string", "none", "list", "shape-1", "complex"])
def test_single_add_refuses_whole(make: Callable[[], Any], bad: Callable[[type], Any], field: str) -> None:
    buffer = make()
    cls = type(buffer.get(np.array([0])).data)
    refused(buffer, lambda b: b.add(bad(cls)), SchemaError, field)


def test_half_write_reproduction_leaves_item_zero() -> None:
    buffer = ReplayBuffer(2, D, np.random.default_rng(0))
    buffer.add(D(1.0, 2.0))
    buffer.add(D(3.0, 4.0))  # full: the next add would evict item 0
    with pytest.raises(SchemaError):
        buffer.add(D(7.0, 10**400))
    batch = buffer.get(np.array([0, 1]))
    np.testing.assert_array_equal(batch.a, [1.0, 3.0])
    np.testing.assert_array_equal(batch.r, [2.0, 4.0])
    assert buffer.stats()["added"] == 2 and buffer.stats()["evicted"] == 0
    assert buffer.add(D(5.0, 6.0)) == 2  # the ring did not move on the refused add


@pytest.mark.parametrize("bad, field", [
    (lambda: Small(np.float32(1), 1e300, np.int8(1), np.uint8(1), True), "f16"),
    (lambda: Small(1e300, np.float16(1), np.int8(1), np.uint8(1), True), "f32"),
    (lambda: Small(np.float64(1e300), np.float16(1), np.int8(1), np.uint8(1), True), "f32"),
    (lambda: Small(np.float32(1), 100000, np.int8(1), np.uint8(1), True), "f16"),
    (lambda: Small(np.float32(1), np.float16(1), 300, np.uint8(1), True), "i8"),
    (lambda: Small(np.float32(1), np.float16(1), -129, np.uint8(1), True), "i8"),
    (lambda: Small(np.float32(1), np.float16(1), np.int64(1000), np.uint8(1), True), "i8"),
    (lambda: Small(np.float32(1), np.float16(1), np.int8(1), -1, True), "u8"),
    (lambda: Small(np.float32(1), np.float16(1), np.int8(1), 256, True), "u8"),
    (lambda: Small(np.float32(1), np.float16(1), np.int8(1), np.uint8(1), 2), "flag"),
    (lambda: Small(np.float32(1), np.float16(1), 1.5, np.uint8(1), True), "i8"),
], ids=["f16-1e300", "f32-1e300", "f32-np-1e300", "f16-int-overflow", "i8-300", "i8-minus-129", "i8-np-1000",
        "u8-minus-1", "u8-256", "bool-2", "i8-float"])
def test_values_that_do_not_fit_are_refused(bad: Callable[[], Small], field: str) -> None:
    refused(small_buffer(), lambda b: b.add(bad()), SchemaError, field)


@pytest.mark.parametrize("column, values, field", [
    ("f32", np.array([1.0, 1e300]), "f32"),
    ("f16", np.array([1.0, 70000.0]), "f16"),
    ("i8", np.array([1, 300]), "i8"),
    ("u8", np.array([-1, 3]), "u8"),
], ids=["f32", "f16", "i8", "u8"])
def test_batches_that_do_not_fit_are_refused(column: str, values: np.ndarray, field: str) -> None:
    good = {"f32": np.zeros(2, np.float32), "f16": np.zeros(2, np.float16), "i8": np.zeros(2, np.int8),
            "u8": np.zeros(2, np.uint8), "flag": np.zeros(2, bool)}
    good[column] = values
    refused(small_buffer(), lambda b: b.add_batch(Small(**good)), SchemaError, field)


def test_nan_and_inf_given_as_such_are_stored() -> None:
    """The overflow rule refuses finite values that would become inf, not NaN/inf themselves."""
    b = small_buffer()
    i = b.add(Small(np.float32(np.nan), np.float16(np.inf), np.int8(1), np.uint8(1), True))
    got = b.get(np.array([i]))
    assert np.isnan(got.f32[0]) and np.isinf(got.f16[0])


def test_safe_casts_take_the_fast_lanes_and_store_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 inputs into the README's float fields take the fast lanes (the general path's
    checks are made to fail, so only a fast lane can store them) and store what it would."""
    fast = ReplayBuffer(8, D, np.random.default_rng(0))
    fast.add(D(0.0, 0.0))  # builds the single-add lane
    fast.add_batch(D(np.zeros(1), np.zeros(1)))  # builds the batched lane

    def general(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the general path was taken")

    schema = fast._table.schema
    monkeypatch.setattr(schema, "coerce", general)
    monkeypatch.setattr(schema, "coerce_batch", general)
    ids = fast.add_batch(D(np.arange(3, dtype=np.float32), np.arange(3, dtype=np.float32) / 2))
    one = fast.add(D(np.float32(0.25), np.float16(0.5)))
    two = fast.add(D(1, True))  # Python int and bool into float fields: exact
    with pytest.raises(AssertionError):
        fast.add(D(1.0, 10**400))  # does not fit: the lane hands it to the general path
    monkeypatch.undo()
    got = fast.get(np.concatenate([ids, [one, two]]))
    np.testing.assert_array_equal(got.a, [0.0, 1.0, 2.0, 0.25, 1.0])
    np.testing.assert_array_equal(got.r, [0.0, 0.5, 1.0, 0.5, 1.0])
    assert got.a.dtype == np.float64


# ---------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("make", [nt_buffer, dc_buffer], ids=["namedtuple", "dataclass"])
@pytest.mark.parametrize("call", [
    lambda b: b.add({"a": 1.0, "r": 2.0, "typo_field": 2.0}),
    lambda b: b.add_batch({"a": np.ones(2), "r": np.ones(2), "typo_field": np.ones(2)}),
    lambda b: b.add({"a": 1.0, "r": 2.0, "nested": {"x": 1.0}}),
], ids=["add", "add_batch", "nested"])
def test_unknown_dict_keys_are_refused(make: Callable[[], Any], call: Callable[[Any], Any]) -> None:
    err = refused(make(), call, SchemaError, "item")
    assert "typo_field" in str(err) or "nested" in str(err)


# ---------------------------------------------------------------- priorities
def test_priority_sum_cannot_overflow() -> None:
    """Reproduced: four priorities of 1e308 (alpha 1) made the total inf, weights NaN."""
    b = per_buffer(priority_exponent=1.0, uniform_probability=0.0)
    ids = b.add_batch(D(np.zeros(4), np.zeros(4)))
    refused(b, lambda x: x.update_priorities(ids, np.full(4, 1e308)), PriorityError, "priorities", "1e+308")
    refused(b, lambda x: x.add(D(0.0, 0.0), priority=1e200), PriorityError, "priority")
    refused(b, lambda x: x.add_batch(D(np.zeros(2), np.zeros(2)), priorities=[1.0, 1e150]), PriorityError,
            "priorities")


def test_largest_accepted_priority_keeps_the_total_finite() -> None:
    b = PrioritizedReplay(64, D, np.random.default_rng(0), PERConfig(priority_exponent=1.0, uniform_probability=0.0))
    ids = b.add_batch(D(np.zeros(64), np.zeros(64)))
    b.update_priorities(ids, np.full(64, 2.0**400))
    s = b.sample(256)
    assert np.isfinite(s.probabilities).all() and np.isfinite(s.weights).all()
    np.testing.assert_allclose(s.probabilities, 1 / 64)
    assert b.stats()["stale_updates"] == 0


@pytest.mark.parametrize("priorities, u", [
    ([5e-324, 10.0, 10.0, 10.0], 0.0),
    ([1e-300, 1e100, 1.0, 1.0], 0.0),
    ([0.0, 1e-310, 1e120, 1.0], 1e-3),
    ([1e-320, 1e-320, 1e-320, 1e-320], 0.0),
])
@pytest.mark.parametrize("beta", [0.4, 1.0, 3.0])
def test_weights_stay_in_zero_one(priorities: list[float], u: float, beta: float) -> None:
    """Reproduced: alpha 1, u 0 and [5e-324, 10, 10, 10] gave weights of exactly 0.0."""
    b = PrioritizedReplay(8, D, np.random.default_rng(0),
                          PERConfig(priority_exponent=1.0, uniform_probability=u, beta=beta))
    ids = b.add_batch(D(np.zeros(4), np.zeros(4)))
    b.update_priorities(ids, priorities)
    for w in (b.sample(512).weights, b.get(ids).weights):
        assert np.isfinite(w).all() and (w > 0).all() and (w <= 1).all(), w


def test_weights_over_a_huge_priority_range_are_never_nan() -> None:
    """Reproduced: priorities across 1e-300..1e306 gave 543 NaN weights of 1000 in get()."""
    b = PrioritizedReplay(1000, D, np.random.default_rng(0), PERConfig(priority_exponent=1.0, uniform_probability=0.0))
    ids = b.add_batch(D(np.zeros(1000), np.zeros(1000)))
    p = 10.0 ** np.random.default_rng(1).uniform(-300, 120, 1000)
    b.update_priorities(ids, p)
    w = b.get(ids).weights
    assert np.isfinite(w).all() and (w > 0).all() and (w <= 1).all()
    assert b.get(ids).probabilities.max() > 0.01


@pytest.mark.parametrize("priority", ["4", b"4", True, np.array(["4"]), {"p": 1}, object()],
                         ids=["str", "bytes", "bool", "str-array", "dict", "object"])
def test_non_numeric_priorities_are_refused(priority: Any) -> None:
    b = per_buffer()
    refused(b, lambda x: x.update_priorities(np.array([1]), [priority] if not isinstance(priority, np.ndarray)
                                             else priority), PriorityError, "priorities")
    refused(b, lambda x: x.add(D(0.0, 0.0), priority=priority), PriorityError, "priority")


def test_update_with_deleted_ids_still_raises_the_running_max() -> None:
    """Found by the property test: a deleted id in an update made the kernel report a
    maximum of -1, so the running maximum was not raised (or decayed)."""
    b = PrioritizedReplay(2, D, np.random.default_rng(0), PERConfig(uniform_probability=0.0))
    ids = b.add_batch(D(np.zeros(2), np.zeros(2)))
    b.delete(ids[:1])
    assert b.update_priorities(np.array([0, 0, 1]), np.array([0.0, 0.0, 2.0])) == 1
    assert b.max_priority == pytest.approx(2.0**0.5)
    assert b.stats()["stale_updates"] == 2


# ---------------------------------------------------------------- sizes beyond the machine
@pytest.mark.parametrize("build, field", [
    (lambda: ReplayBuffer(2**40, D), "max_size"),
    (lambda: PrioritizedReplay(2**39, D), "max_size"),
    (lambda: ReplayBuffer(2**34, {"obs": ((84, 84), np.uint8)}), "max_size"),
    (lambda: TrajectoryReplay(2**36, (84, 84)), "capacity"),
    (lambda: TrajectoryReplay(2**31, (84, 84), np.float64, per=PERConfig()), "capacity"),
], ids=["rb-2**40", "per-2**39", "pixels-2**34", "trajectory-2**36", "trajectory-per"])
def test_capacities_beyond_memory_are_config_errors(build: Callable[[], Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    check_message(info.value, field, None)
    assert "memory" in str(info.value)


def test_a_sample_beyond_memory_is_a_config_error() -> None:
    refused(nt_buffer(), lambda b: b.sample(10**9), ConfigError, "n", "1000000000")
    refused(per_buffer(), lambda b: b.sample(10**11), ConfigError, "n")


# ---------------------------------------------------------------- step-stream constructor and steps
@pytest.mark.parametrize("kwargs, field", [
    ({"obs_shape": "abc"}, "obs_shape"),
    ({"obs_shape": (-1,)}, "obs_shape"),
    ({"obs_shape": (1.5,)}, "obs_shape"),
    ({"obs_shape": (True,)}, "obs_shape"),
    ({"obs_shape": 4}, "obs_shape"),
    ({"obs_dtype": "bogus"}, "obs_dtype"),
    ({"obs_dtype": object}, "obs_dtype"),
    ({"obs_dtype": "U5"}, "obs_dtype"),
    ({"obs_dtype": "V8"}, "obs_dtype"),
    ({"action_dtype": "datetime64[s]"}, "action_dtype"),
    ({"action_shape": "x"}, "action_shape"),
    ({"extras": {"logp": ((), object)}}, "extras.logp.dtype"),
    ({"extras": {"logp": (("a",), np.float32)}}, "extras.logp.shape"),
    ({"compression_level": "x"}, "compression_level"),
    ({"compression_level": 0}, "compression_level"),
    ({"compression_level": True, "storage": "zstd"}, "compression_level"),
], ids=lambda v: str(v))
def test_trajectory_constructor_refuses_bad_shapes_and_dtypes(kwargs: dict[str, Any], field: str) -> None:
    args = {"obs_shape": (2,), **kwargs}
    with pytest.raises(ConfigError) as info:
        TrajectoryReplay(16, **args)
    check_message(info.value, field, None)


def _stream() -> TrajectoryReplay:
    b = TrajectoryReplay(16, (2,), np.float32, rng=np.random.default_rng(0))
    b.begin_episode(np.zeros(2, np.float32))
    for t in range(3):
        b.add_step(0, 1.0, np.full(2, t, np.float32), False, False)
    return b


@pytest.mark.parametrize("call, field", [
    (lambda b: b.add_step(0, 1e300, np.zeros(2, np.float32), False, False), "reward"),
    (lambda b: b.add_step(0, np.float64(-1e300), np.zeros(2, np.float32), False, False), "reward"),
    (lambda b: b.add_steps(np.zeros(1, np.int64), np.array([1e300]), np.zeros((1, 2), np.float32),
                           np.zeros(1, bool), np.zeros(1, bool)), "reward"),
    (lambda b: b.add_step(0, 1.0, np.full(2, 1e300), False, False), "next_obs"),
], ids=["reward-float", "reward-np", "reward-batch", "obs-overflow"])
def test_step_values_that_overflow_float32_are_refused(call: Callable[[Any], Any], field: str) -> None:
    """Reproduced: a reward of 1e300 passed the finite check on float64 and was stored as inf."""
    refused(_stream(), call, SchemaError, field)
