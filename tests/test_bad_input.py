"""Bad input: every case of SPEC section 1 and more.

Each case must raise a :class:`ReplayTablesError` subclass whose message names the
field, the value and what was expected, and must leave the buffer exactly as it
was: same state dict (contents, ids, priorities, counters, rng state) and same
``stats()``. The check snapshots ``state_dict()`` before the call and compares
after it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

from conftest import DTransition, Transition, assert_unchanged, item, items, snapshot
from ReplayTables.errors import (
    ConfigError,
    EmptyBufferError,
    PriorityError,
    ReplayTablesError,
    SchemaError,
    StaleIdError,
)
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer


def check_message(exc: ReplayTablesError, field: str, value: str | None) -> None:
    """The message names the field, the value and what was expected."""
    msg = str(exc)
    assert field in msg, f"field {field!r} not named in {msg!r}"
    assert exc.field == field or field in exc.field, (exc.field, field)
    assert "got" in msg and "expected" in msg and exc.expected and exc.expected in msg, msg
    if value is not None:
        assert value in msg, f"value {value!r} not named in {msg!r}"


# ---------------------------------------------------------------- buffers
def make_rb() -> ReplayBuffer:
    b = ReplayBuffer(6, Transition, np.random.default_rng(3))
    b.add_batch(items(range(4)))
    b.add_batch(items(range(4, 8)))  # wrapped: ids 2..7 live, 0 and 1 overwritten
    b.sample(3)
    return b


def make_per(mode: str = "max") -> PrioritizedReplay:
    b = PrioritizedReplay(6, Transition, np.random.default_rng(4),
                          PERConfig(new_priority_mode=mode, uniform_probability=0.1))
    b.add_batch(items(range(4)), priorities=np.arange(1.0, 5.0))
    b.add_batch(items(range(4, 8)), priorities=np.arange(5.0, 9.0))  # ids 2..7 live
    b.update_priorities([3, 4], [0.0, 7.0])
    b.sample(3)
    return b


def make_dict() -> ReplayBuffer:
    b = ReplayBuffer(4, {"obs": {"pos": ((2,), np.float32), "vel": ((2,), np.float32)}, "a": ((), np.int64)},
                     np.random.default_rng(5))
    b.add({"obs": {"pos": np.zeros(2), "vel": np.ones(2)}, "a": 1})
    return b


def make_dc() -> ReplayBuffer:
    b = ReplayBuffer(4, DTransition, np.random.default_rng(6))
    b.add(item(1, DTransition))
    return b


def make_small() -> ReplayBuffer:
    b = ReplayBuffer(4, {"a": ((), np.int8), "u": ((), np.uint16)}, np.random.default_rng(9))
    b.add({"a": -128, "u": 65535})
    b.add_batch({"a": np.array([127, 0]), "u": np.array([0, 7])})  # int64 values that fit are fine
    return b


def make_empty_per() -> PrioritizedReplay:
    return PrioritizedReplay(4, Transition, np.random.default_rng(7))


def make_empty_rb() -> ReplayBuffer:
    return ReplayBuffer(4, Transition, np.random.default_rng(8))


BUFFERS: dict[str, Callable[[], Any]] = {
    "rb": make_rb, "per": make_per, "given": lambda: make_per("given"), "dict": make_dict, "dc": make_dc,
    "empty_per": make_empty_per, "empty_rb": make_empty_rb, "small": make_small,
}

T = Transition
X3 = np.zeros(3)
RAGGED = [[1.0, 2.0, 3.0], [1.0, 2.0]]


def ok_batch(m: int = 2) -> Transition:
    return items(range(100, 100 + m))


class Swapped(NamedTuple):
    """Another NamedTuple with the same fields in another order."""

    r: Any
    a: Any
    x: Any


class Obj:
    """An object numpy can only hold as dtype=object."""


# (buffer, call, error, field, value substring) -- value None when the value is a whole item
CASES: list[tuple[str, Callable[[Any], Any], type, str, str | None]] = [
    # ----- items against the schema
    ("rb", lambda b: b.add((X3, 1)), SchemaError, "item", None),
    ("rb", lambda b: b.add("not an item"), SchemaError, "item", "'not an item'"),
    ("rb", lambda b: b.add(Swapped(r=np.float32(1), a=np.int64(2), x=X3)), SchemaError, "item", "Swapped"),
    ("rb", lambda b: b.add_batch(Swapped(np.zeros(2, np.float32), np.arange(2), np.zeros((2, 3)))), SchemaError,
     "item", "Swapped"),
    ("rb", lambda b: b.add(T(np.zeros(4), 1, 1.0)), SchemaError, "x", "shape (3,)"),
    ("rb", lambda b: b.add(T(np.zeros((3, 1)), 1, 1.0)), SchemaError, "x", "shape (3,)"),
    ("rb", lambda b: b.add(T(X3, 2.5, 1.0)), SchemaError, "a", "2.5"),
    ("rb", lambda b: b.add(T(X3, np.float32(2.0), 1.0)), SchemaError, "a", "int64"),
    ("rb", lambda b: b.add(T(X3.astype(np.complex128), 1, 1.0)), SchemaError, "x", "float64"),
    ("rb", lambda b: b.add(T(np.array([Obj(), 1, 2], dtype=object), 1, 1.0)), SchemaError, "x", "object"),
    ("rb", lambda b: b.add(T(X3, 1, "abc")), SchemaError, "r", "'abc'"),
    ("rb", lambda b: b.add(T(X3, 2**70, 1.0)), SchemaError, "a", "1180591620717411303424"),
    ("rb", lambda b: b.add(T(X3, None, 1.0)), SchemaError, "a", "None"),
    ("rb", lambda b: b.add(T(RAGGED, 1, 1.0)), SchemaError, "x", None),
    ("dc", lambda b: b.add(T(X3, 1, 1.0)._asdict() | {"r": "x"}), SchemaError, "r", None),
    ("dc", lambda b: b.add(object()), SchemaError, "x", "<missing>"),
    ("dc", lambda b: b.add(DTransition(X3, 1.5, 1.0)), SchemaError, "a", "1.5"),
    ("dict", lambda b: b.add({"obs": {"pos": np.zeros(2)}, "a": 1}), SchemaError, "obs.vel", "<missing>"),
    ("dict", lambda b: b.add({"obs": {"pos": np.zeros(2), "vel": np.zeros(2)}}), SchemaError, "a", "<missing>"),
    ("dict", lambda b: b.add({"obs": {"pos": np.zeros(2), "vel": np.zeros(2)}, "a": 1, "extra": 2}),
     SchemaError, "item", "extra"),
    ("dict", lambda b: b.add({"obs": {"pos": np.zeros(2), "vel": np.zeros(2), "acc": 1}, "a": 1}),
     SchemaError, "item", "obs.acc"),
    ("dict", lambda b: b.add({"obs": {"pos": np.zeros(3), "vel": np.zeros(2)}, "a": 1}), SchemaError,
     "obs/pos", "shape (2,)"),
    ("dict", lambda b: b.add({"obs": np.zeros(4), "a": 1}), SchemaError, "obs.pos", None),
    ("dict", lambda b: b.add([1, 2]), SchemaError, "item", "[1, 2]"),
    ("small", lambda b: b.add({"a": 300, "u": 1}), SchemaError, "a", "[-128, 127]"),
    ("small", lambda b: b.add({"a": np.int64(-129), "u": 1}), SchemaError, "a", "-129"),
    ("small", lambda b: b.add({"a": 1, "u": -1}), SchemaError, "u", "[0, 65535]"),
    ("small", lambda b: b.add_batch({"a": np.array([1, 300]), "u": np.array([1, 2])}), SchemaError, "a",
     "[-128, 127]"),
    ("small", lambda b: b.add_batch({"a": np.array([1, 2]), "u": np.array([1, 70000])}), SchemaError, "u",
     "65535"),
    # ----- batches
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 3)), np.arange(3), np.zeros(2))), SchemaError, "batch", None),
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 4)), np.arange(2), np.zeros(2))), SchemaError, "x", "(2, 3)"),
    ("rb", lambda b: b.add_batch(T(np.zeros(3), np.arange(1), np.zeros(1))), SchemaError, "x", None),
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 3)), 5, np.zeros(2))), SchemaError, "a", None),
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 3)), np.array([1.5, 2.5]), np.zeros(2))), SchemaError, "a",
     "int64"),
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 3)), np.arange(2), np.array(["a", "b"]))), SchemaError, "r",
     None),
    ("rb", lambda b: b.add_batch(T([[1.0, 2.0, 3.0], [1.0, 2.0]], np.arange(2), np.zeros(2))), SchemaError, "x",
     None),
    ("rb", lambda b: b.add_batch(T(np.zeros((2, 3)), np.arange(2), np.array([Obj(), Obj()]))), SchemaError, "r",
     None),
    ("rb", lambda b: b.add_batch((np.zeros((2, 3)), np.arange(2))), SchemaError, "item", None),
    ("dict", lambda b: b.add_batch({"obs": {"pos": np.zeros((2, 2)), "vel": np.zeros((3, 2))},
                                    "a": np.arange(2)}), SchemaError, "batch", None),
    # ----- ids
    ("rb", lambda b: b.get([1]), StaleIdError, "ids", "[1]"),
    ("rb", lambda b: b.get([2, 10**9]), StaleIdError, "ids", "[1000000000]"),
    ("rb", lambda b: b.get([-5]), StaleIdError, "ids", "[-5]"),
    ("rb", lambda b: b.get([2.0]), StaleIdError, "ids", "[2.0]"),
    ("rb", lambda b: b.get(["2"]), StaleIdError, "ids", "['2']"),
    ("rb", lambda b: b.get([[2, 3]]), StaleIdError, "ids", "[[2, 3]]"),
    ("rb", lambda b: b.get([2, [3]]), StaleIdError, "ids", "[2, [3]]"),
    ("rb", lambda b: b.delete([2, [3, 4]]), StaleIdError, "ids", "[2, [3, 4]]"),
    ("per", lambda b: b.update_priorities([2, [3]], [1.0, 1.0]), StaleIdError, "ids", "[2, [3]]"),
    ("rb", lambda b: b.delete([0]), StaleIdError, "ids", "[0]"),
    ("rb", lambda b: b.delete([3, 4, 1]), StaleIdError, "ids", "[1]"),
    ("rb", lambda b: b.delete(np.array([3.0])), StaleIdError, "ids", None),
    ("per", lambda b: b.update_priorities([2.5], [1.0]), StaleIdError, "ids", "[2.5]"),
    ("per", lambda b: b.priorities([0]), StaleIdError, "ids", "[0]"),
    # ----- sampling
    ("empty_rb", lambda b: b.sample(1), EmptyBufferError, "size", "0"),
    ("empty_per", lambda b: b.sample(4), EmptyBufferError, "size", "0"),
    ("rb", lambda b: b.sample(-1), ConfigError, "n", "-1"),
    ("rb", lambda b: b.sample(2.5), ConfigError, "n", "2.5"),
    ("rb", lambda b: b.sample("3"), ConfigError, "n", "'3'"),
    ("per", lambda b: b.sample(-3), ConfigError, "n", "-3"),
    # ----- priorities on add
    ("per", lambda b: b.add(item(50), priority=float("nan")), PriorityError, "priority", "nan"),
    ("per", lambda b: b.add(item(50), priority=float("inf")), PriorityError, "priority", "inf"),
    ("per", lambda b: b.add(item(50), priority=-1.0), PriorityError, "priority", "-1.0"),
    ("per", lambda b: b.add(item(50), priority="high"), PriorityError, "priority", "'high'"),
    ("per", lambda b: b.add(item(50), priority=[1.0, 2.0]), PriorityError, "priority", "[1.0, 2.0]"),
    ("given", lambda b: b.add(item(50)), PriorityError, "priority", "None"),
    ("given", lambda b: b.add_batch(ok_batch()), PriorityError, "priorit", "None"),
    ("per", lambda b: b.add_batch(ok_batch(3), priorities=[1.0, 2.0]), PriorityError, "priorities", "[1.0, 2.0]"),
    ("per", lambda b: b.add_batch(ok_batch(2), priorities=[1.0, np.nan]), PriorityError, "priorities", "nan"),
    ("per", lambda b: b.add_batch(ok_batch(2), priorities=[1.0, -2.0]), PriorityError, "priorities", "-2.0"),
    ("per", lambda b: b.add_batch(ok_batch(2), priorities=[np.inf, 1.0]), PriorityError, "priorities", "inf"),
    ("per", lambda b: b.add_batch(T(np.zeros((2, 4)), np.arange(2), np.zeros(2)), priorities=[1.0, 1.0]),
     SchemaError, "x", None),
    ("empty_per", lambda b: b.add(item(1), priority=float("nan")), PriorityError, "priority", "nan"),
    ("empty_per", lambda b: b.add_batch(ok_batch(2), priorities=[1.0]), PriorityError, "priorities", "[1.0]"),
    # ----- priority updates
    ("per", lambda b: b.update_priorities([2, 3], [1.0, np.nan]), PriorityError, "priorities", "nan"),
    ("per", lambda b: b.update_priorities([2, 3], [np.inf, 1.0]), PriorityError, "priorities", "inf"),
    ("per", lambda b: b.update_priorities([2, 3], [1.0, -0.5]), PriorityError, "priorities", "-0.5"),
    ("per", lambda b: b.update_priorities([2, 1], [-1.0, 1.0]), PriorityError, "priorities", "-1.0"),
    ("per", lambda b: b.update_priorities([2, 3], [1.0]), PriorityError, "priorities", "[1.0]"),
    ("per", lambda b: b.update_priorities([2, 3], [[1.0, 2.0]]), PriorityError, "priorities", None),
    ("per", lambda b: b.update_priorities([2, 3], ["a", "b"]), PriorityError, "priorities", "['a', 'b']"),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: f"{i:02d}-{CASES[i][0]}-{CASES[i][3]}")
def test_bad_call_raises_and_leaves_buffer_unchanged(case: int) -> None:
    name, call, error, field, value = CASES[case]
    buffer = BUFFERS[name]()
    before = snapshot(buffer)
    with pytest.raises(error) as info:
        call(buffer)
    assert isinstance(info.value, ReplayTablesError)
    check_message(info.value, field, value)
    assert_unchanged(before, buffer)
    # and it still works normally afterwards
    if name in ("rb", "per", "given"):
        kwargs = {"priority": 1.0} if name == "given" else {}
        new = buffer.add(item(77), **kwargs)
        assert buffer.get([new]).a.tolist() == [77]


def test_at_least_thirty_call_cases() -> None:
    assert len(CASES) >= 30


# ---------------------------------------------------------------- constructors
class Plain(NamedTuple):
    a: float


@pytest.mark.parametrize("max_size", [0, -1, 2.5, True, "10", None, np.float64(3.0)])
@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplay])
def test_bad_max_size(cls: type, max_size: Any) -> None:
    with pytest.raises(ConfigError) as info:
        cls(max_size, Plain, np.random.default_rng(0))
    check_message(info.value, "max_size", repr(max_size))


@pytest.mark.parametrize("rng", [True, np.bool_(False), -1, 1.5, np.random.RandomState(0), "seed",
                                 np.random.PCG64(0)])
@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplay])
def test_bad_rng(cls: type, rng: Any) -> None:
    with pytest.raises(ConfigError) as info:
        cls(4, Plain, rng)
    check_message(info.value, "rng", None)
    assert "Generator" in info.value.expected


@pytest.mark.parametrize("structure", [42, "Data", [("a", float)], Plain(1.0)])
def test_bad_structure(structure: Any) -> None:
    with pytest.raises(SchemaError) as info:
        ReplayBuffer(4, structure, np.random.default_rng(0))
    check_message(info.value, "structure", None)


PER_BAD = [
    ("new_priority_mode", "min"), ("new_priority_mode", None), ("new_priority_mode", "MAX"),
    ("uniform_probability", -0.1), ("uniform_probability", 1.5), ("uniform_probability", float("nan")),
    ("uniform_probability", "0.1"), ("uniform_probability", True),
    ("priority_exponent", -1.0), ("priority_exponent", float("nan")), ("priority_exponent", float("inf")),
    ("priority_exponent", None),
    ("max_decay", -0.1), ("max_decay", 1.5), ("max_decay", float("nan")),
    ("beta", -0.1), ("beta", float("nan")), ("beta", float("inf")), ("beta", "0.4"),
    ("beta_final", -1.0), ("beta_final", float("inf")),
    ("beta_steps", 0), ("beta_steps", -3), ("beta_steps", 2.5), ("beta_steps", True),
    ("stratified", "yes"), ("stratified", 1),
]


@pytest.mark.parametrize(("field", "value"), PER_BAD, ids=[f"{f}={v!r}" for f, v in PER_BAD])
def test_bad_per_config_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        PERConfig(**{field: value})
    check_message(info.value, field, repr(value))


def test_every_per_config_field_is_validated() -> None:
    assert {f for f, _ in PER_BAD} == {f.name for f in dataclasses.fields(PERConfig)}


def test_unknown_per_config_key() -> None:
    with pytest.raises(ConfigError) as info:
        PERConfig(new_priority_mod="max")  # type: ignore[call-arg]
    check_message(info.value, "PERConfig", "new_priority_mod")


@pytest.mark.parametrize("config", [{"new_priority_mode": "max"}, "max", 1])
def test_config_must_be_a_perconfig(config: Any) -> None:
    with pytest.raises(ConfigError) as info:
        PrioritizedReplay(4, Plain, np.random.default_rng(0), config=config)
    check_message(info.value, "config", repr(config))


# ---------------------------------------------------------------- first add fixes the schema
def test_failed_first_add_does_not_fix_the_schema_of_a_dict_buffer() -> None:
    b = ReplayBuffer(4, None, np.random.default_rng(0))
    before = snapshot(b)
    with pytest.raises(SchemaError) as info:
        b.add({"a": Obj()})
    check_message(info.value, "a", None)
    assert_unchanged(before, b)
    i = b.add({"b": np.ones(2)})  # a different set of keys is fine: nothing was fixed
    np.testing.assert_array_equal(b.get([i]).b, [[1.0, 1.0]])


def test_failed_first_add_with_bad_priority_does_not_fix_the_schema() -> None:
    b = make_empty_per()
    with pytest.raises(PriorityError):
        b.add(Transition(np.zeros(5), 1, 1.0), priority=-1.0)
    i = b.add(item(3))  # x of shape (3,), not the (5,) of the refused item
    np.testing.assert_array_equal(b.get([i]).x, [[3.0, 3.5, -3.0]])


def test_failed_first_batch_does_not_fix_the_schema() -> None:
    b = make_empty_rb()
    with pytest.raises(SchemaError):
        b.add_batch(T(np.zeros((2, 5)), np.arange(3), np.zeros(2)))
    ids = b.add_batch(items([4, 5]))
    np.testing.assert_array_equal(b.get(ids).a, [4, 5])


def test_load_state_dict_of_another_buffer_leaves_buffer_unchanged() -> None:
    b = make_per()
    other = PrioritizedReplay(5, Transition, np.random.default_rng(0))
    other.add(item(1))
    before = snapshot(b)
    with pytest.raises(ReplayTablesError) as info:
        b.load_state_dict(other.state_dict())
    assert "expected" in str(info.value)
    assert_unchanged(before, b)
    with pytest.raises(ReplayTablesError):
        b.load_state_dict(make_rb().state_dict())
    assert_unchanged(before, b)


class Shadowing(NamedTuple):
    obs: float
    weights: float


@pytest.mark.parametrize("structure", [Shadowing, {"ids": ((), np.int64)}, {"data": {"x": ((), np.float32)}}])
@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplay])
def test_field_names_that_would_hide_batch_attributes(cls: type, structure: Any) -> None:
    with pytest.raises(SchemaError) as info:
        cls(4, structure, np.random.default_rng(0))
    check_message(info.value, "structure", None)


@pytest.mark.parametrize("call", ["add", "add_batch", "update"])
def test_priority_that_overflows_after_the_exponent_is_refused(call: str) -> None:
    """p = 1e200 is finite, but q = p ** 2 is inf: the tree total would be inf and
    every probability NaN. It must be refused like an infinite priority."""
    b = PrioritizedReplay(6, Transition, np.random.default_rng(0), PERConfig(priority_exponent=2.0))
    ids = b.add_batch(items(range(3)), priorities=[1.0, 2.0, 3.0])
    before = snapshot(b)
    with pytest.raises(PriorityError) as info:
        if call == "add":
            b.add(item(9), priority=1e200)
        elif call == "add_batch":
            b.add_batch(items([9, 10]), priorities=[1.0, 1e200])
        else:
            b.update_priorities(ids[:2], [1.0, 1e200])
    check_message(info.value, "priorit", "1e+200")
    assert_unchanged(before, b)
    assert np.isfinite(b.sample(8).probabilities).all()


class Empty(NamedTuple):
    pass


@pytest.mark.parametrize("first", [{}, {"a": {}}, Empty()])
def test_an_item_without_fields_is_refused(first: Any) -> None:
    b = ReplayBuffer(4, Empty if isinstance(first, Empty) else None, np.random.default_rng(0))
    before = snapshot(b)
    with pytest.raises(SchemaError) as info:
        b.add(first)
    check_message(info.value, "item", None)
    with pytest.raises(SchemaError):
        b.add_batch(first)
    assert_unchanged(before, b)
    if not isinstance(first, Empty):
        i = b.add({"a": {"b": 1.0}})
        assert b.get([i]).a["b"].tolist() == [1.0]


def test_reserved_names_from_a_first_dict_are_refused_and_fix_nothing() -> None:
    buffer = ReplayBuffer(8, None, np.random.default_rng(0))
    before = snapshot(buffer)
    with pytest.raises(SchemaError) as info:
        buffer.add({"weights": 1.0, "x": 2.0})
    message = str(info.value)
    assert "structure" in message and "weights" in message and "field names other than" in message
    assert_unchanged(before, buffer)
    buffer.add({"x": 1.0})  # a legal first dict still fixes the fields afterwards
    assert len(buffer) == 1


@pytest.mark.parametrize("call", ["sample", "max_size"])
def test_astronomical_sizes_are_config_errors(call: str) -> None:
    if call == "max_size":
        with pytest.raises(ConfigError, match="max_size"):
            ReplayBuffer(2**70, Transition, np.random.default_rng(0))
        return
    buffer = ReplayBuffer(8, Transition, np.random.default_rng(0))
    buffer.add(item(0))
    before = snapshot(buffer)
    with pytest.raises(ConfigError, match="n: got"):
        buffer.sample(2**70)
    assert_unchanged(before, buffer)
