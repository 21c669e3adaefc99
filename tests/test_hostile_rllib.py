"""Hostile input to the RLlib-style front end (``ReplayTables.rllib``).

Each case is an attack that was reproduced (or one of its kind): it must raise the
right :class:`ReplayTablesError` subclass, name the field, the value and what was
expected, and leave the buffer exactly as it was (``get_state()``: contents,
priorities, counters and rng state; ``stats()``; ``len``).

Load and ``set_state`` attacks on these buffers are in ``test_hostile_load.py``; the
ReplayTables-API front end's add, sample and priority paths in ``test_hostile_input.py``.
"""
from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_equal_state
from ReplayTables.errors import ConfigError, PriorityError, ReplayTablesError, SchemaError
from ReplayTables.rllib import (
    FifoReplayBuffer,
    MultiAgentMixInReplayBuffer,
    MultiAgentPrioritizedReplayBuffer,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReservoirReplayBuffer,
    from_config,
)
from ReplayTables.rllib import ReplayBuffer as RLReplayBuffer
from test_bad_input import check_message


def steps(k: int, n: int, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    return {"obs": np.arange(k, k + n, dtype=dtype), "rewards": np.full(n, 0.5, dtype=dtype)}


def rl_buffer() -> RLReplayBuffer:
    b = RLReplayBuffer(20, seed=0)
    b.add(steps(0, 4))
    b.sample(2)
    return b


def rl_f32() -> RLReplayBuffer:
    """Columns fixed as float32 by the first batch: where a float64 value can fail to fit."""
    b = RLReplayBuffer(20, seed=0)
    b.add(steps(0, 4, np.float32))
    return b


def rl_per(alpha: float = 0.6) -> PrioritizedReplayBuffer:
    b = PrioritizedReplayBuffer(20, alpha=alpha, seed=1)
    ids = b.add(steps(0, 6))
    b.update_priorities(ids, np.arange(1.0, 7.0))
    b.sample(3, beta=0.4)
    return b


def ma_per() -> MultiAgentPrioritizedReplayBuffer:
    b = MultiAgentPrioritizedReplayBuffer(capacity=20, seed=3)
    b.add({"p1": steps(0, 4), "p2": steps(10, 3)})
    return b


def snap(buffer: Any) -> dict[str, Any]:
    return {"state": copy.deepcopy(buffer.get_state()), "stats": buffer.stats(), "len": len(buffer)}


def refused(buffer: Any, call: Callable[[Any], Any], error: type[ReplayTablesError], field: str,
            value: str | None = None) -> ReplayTablesError:
    """``call(buffer)`` raises ``error`` naming ``field`` (and ``value``) and changes nothing."""
    before = snap(buffer)
    with pytest.raises(error) as info:
        call(buffer)
    check_message(info.value, field, value)
    assert_equal_state(before, snap(buffer))
    return info.value


# ---------------------------------------------------------------- from_config: type
# Reproduced: {"type": "subprocess.Popen", "args": [...]} ran the command and
# {"type": "collections.OrderedDict"} returned a non-buffer.
NOT_BUFFERS: list[tuple[str, Any]] = [
    ("popen", "subprocess.Popen"),
    ("ordered-dict", "collections.OrderedDict"),
    ("builtins-dict", "builtins.dict"),
    ("colon-path", "collections:OrderedDict"),
    ("a-function", "os.path.join"),
    ("class-object", dict),
    ("int-class", int),
    ("exception-class", ValueError),
    ("our-non-buffer", "ReplayTables.rllib.SampleBatch"),
    ("our-error-class", "ReplayTables.errors:ConfigError"),
]


@pytest.mark.parametrize(("label", "value"), NOT_BUFFERS, ids=[c[0] for c in NOT_BUFFERS])
def test_from_config_type_resolves_only_to_buffer_classes(label: str, value: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError) as info:
        from_config({"type": value, "args": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]})
    check_message(info.value, "type", None)
    assert "buffer class" in str(info.value)
    assert not marker.exists(), "the config ran a command"


def test_popen_via_from_config_runs_nothing(tmp_path: Path) -> None:
    """The reproduction itself: a command in ``args`` is never started (checked after a pause)."""
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError):
        from_config({"type": "subprocess.Popen", "args": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]})
    time.sleep(0.5)  # a started child would have written the file by now
    assert not marker.exists()


@pytest.mark.parametrize("value", ["subprocess.Popen", "collections.OrderedDict", dict],
                         ids=["popen", "ordered-dict", "dict"])
def test_underlying_type_resolves_only_to_buffer_classes(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        MultiAgentReplayBuffer(capacity=20, underlying_buffer_config={"type": value})
    check_message(info.value, "underlying_buffer_config.type", None)
    with pytest.raises(ConfigError):
        from_config({"type": "MultiAgentReplayBuffer", "underlying_buffer_config": {"type": value}})


def test_buffer_classes_and_user_subclasses_still_resolve() -> None:
    """The refusal is not a blanket one: names, classes, dotted paths and subclasses work."""
    class MyBuffer(RLReplayBuffer):
        pass

    assert type(from_config({"type": "ReplayBuffer", "capacity": 5})) is RLReplayBuffer
    assert type(from_config({"type": MyBuffer, "capacity": 5})) is MyBuffer
    assert type(from_config({"type": "ReplayTables.rllib.FifoReplayBuffer", "capacity": 5})) is FifoReplayBuffer
    assert type(from_config({"type": "ray.rllib.utils.replay_buffers.ReservoirReplayBuffer",
                             "capacity": 5})) is ReservoirReplayBuffer
    assert type(from_config({"type": "MultiAgentMixInReplayBuffer", "capacity": 5})) is MultiAgentMixInReplayBuffer
    import ReplayTables.rllib as rllib_front_end
    from ReplayTables.rllib.config import resolve_type

    for name in ("EpisodeReplayBuffer", "PrioritizedEpisodeReplayBuffer"):  # the new stack's (load without Ray too)
        assert resolve_type(f"ReplayTables.rllib.{name}") is getattr(rllib_front_end, name)


# ---------------------------------------------------------------- alpha, beta, eps
# Reproduced: RLlib PER accepted beta=inf and alpha=inf.
@pytest.mark.parametrize("alpha", [float("inf"), float("-inf"), float("nan"), -1.0, "0.6", True, None],
                         ids=lambda v: repr(v))
def test_bad_alpha_is_refused(alpha: Any) -> None:
    with pytest.raises(ConfigError) as info:
        PrioritizedReplayBuffer(20, alpha=alpha)
    check_message(info.value, "alpha", repr(alpha))
    assert "finite" in str(info.value)


@pytest.mark.parametrize("beta", [float("inf"), float("nan"), -0.5, "0.4", True, np.array([0.4])],
                         ids=["inf", "nan", "negative", "string", "bool", "array"])
def test_bad_beta_is_refused_and_draws_nothing(beta: Any) -> None:
    refused(rl_per(), lambda b: b.sample(4, beta=beta), ConfigError, "beta")


@pytest.mark.parametrize("name", ["prioritized_replay_alpha", "prioritized_replay_beta", "prioritized_replay_eps"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0], ids=["inf", "nan", "negative"])
def test_bad_multi_agent_priority_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        MultiAgentPrioritizedReplayBuffer(capacity=20, **{name: value})
    check_message(info.value, name, repr(value))


def test_beta_inf_through_underlying_config_is_refused_at_construction() -> None:
    # the underlying buffers take RLlib's beta as a constructor argument, so it is checked there
    with pytest.raises(ConfigError) as info:
        MultiAgentPrioritizedReplayBuffer(capacity=20, seed=3, underlying_buffer_config={"beta": float("inf")})
    check_message(info.value, "beta", "inf")


# ---------------------------------------------------------------- priorities
@pytest.mark.parametrize("priorities, shown", [
    (["4", "4"], "'4'"),
    ([b"4", b"4"], None),
    ([True, False], "True"),
    ([float("inf"), 1.0], "inf"),
    ([float("nan"), 1.0], "nan"),
    ([-1.0, 1.0], "-1.0"),
    ([1e308, 1e308], "1e+308"),
    ([{"p": 1}, 1.0], None),
    ([1.0], None),
], ids=["str", "bytes", "bool", "inf", "nan", "negative", "overflow", "dict", "too-few"])
def test_bad_priorities_are_refused(priorities: list[Any], shown: str | None) -> None:
    b = rl_per(alpha=1.0)
    refused(b, lambda x: x.update_priorities(np.array([0, 1]), priorities), PriorityError, "priorities", shown)


def test_multi_agent_td_errors_that_overflow_are_refused() -> None:
    b = ma_per()
    ids = b.sample(2, policy_id="p1")["p1"]["batch_indexes"]
    refused(b, lambda x: x.update_priorities({"p1": (ids, np.full(ids.shape[0], 1e308))}), PriorityError,
            "priorities")


@pytest.mark.parametrize("priorities", [[5e-324, 10.0, 10.0, 10.0], [1e-300, 1e100, 1.0, 1.0],
                                        [1e-320] * 4], ids=["denormal", "wide", "all-tiny"])
@pytest.mark.parametrize("beta", [0.4, 1.0, 3.0])
def test_rllib_weights_stay_in_zero_one(priorities: list[float], beta: float) -> None:
    """The README-side reproduction (alpha 1, [5e-324, 10, 10, 10] gave weights of 0.0) on this front end."""
    b = PrioritizedReplayBuffer(20, alpha=1.0, seed=0)
    ids = b.add(steps(0, 4))
    b.update_priorities(ids, priorities)
    w = b.sample(512, beta=beta)["weights"]
    assert np.isfinite(w).all() and (w > 0).all() and (w <= 1).all(), w


# ---------------------------------------------------------------- sizes beyond the machine
@pytest.mark.parametrize("build", [
    lambda: RLReplayBuffer(2**40),
    lambda: PrioritizedReplayBuffer(2**40),
    lambda: ReservoirReplayBuffer(2**40),
    lambda: FifoReplayBuffer(2**40),
    lambda: MultiAgentReplayBuffer(capacity=2**40),
    lambda: MultiAgentPrioritizedReplayBuffer(capacity=2**40),
    lambda: from_config({"type": "MultiAgentMixInReplayBuffer", "capacity": 2**40}),
], ids=["rb", "per", "reservoir", "fifo", "multi-agent", "ma-per", "mixin"])
def test_capacities_beyond_memory_are_config_errors(build: Callable[[], Any]) -> None:
    """Reproduced: the buffer was built and its first add raised a bare MemoryError (8 TiB)."""
    with pytest.raises(ConfigError) as info:
        build()
    check_message(info.value, "capacity", str(2**40))
    assert "memory" in str(info.value)


def test_a_first_batch_whose_rows_cannot_fit_is_refused_and_fixes_nothing() -> None:
    """The index fits but 2**16 rows of 1 MB frames (64 GiB) do not: refused before anything is allocated."""
    b = RLReplayBuffer(2**16, seed=0)
    frames = {"obs": np.zeros((2, 1024, 1024), np.uint8)}
    refused(b, lambda x: x.add(frames), ConfigError, "capacity", str(2**16))
    refused(b, lambda x: x.check(frames), ConfigError, "capacity")


def test_a_sample_beyond_memory_is_a_config_error() -> None:
    refused(rl_buffer(), lambda b: b.sample(10**10), ConfigError, "num_items", str(10**10))
    refused(rl_per(), lambda b: b.sample(10**10, beta=0.4), ConfigError, "num_items")


# ---------------------------------------------------------------- columns
# Reproduced on the other front ends: 1e300 passed the finite check on float64 and was stored as inf in float32.
@pytest.mark.parametrize("make, batch, field", [
    (rl_f32, {"obs": np.zeros(2, np.float32), "rewards": np.array([1e300, 1.0])}, "rewards"),
    (rl_f32, {"obs": np.array([-1e39, 0.0]), "rewards": np.zeros(2, np.float32)}, "obs"),
    (rl_buffer, {"obs": np.zeros(2)}, "rewards"),
    (rl_buffer, {"obs": np.zeros(2), "rewards": np.zeros(2), "typo": np.zeros(2)}, "item"),
    (rl_buffer, {"obs": np.zeros(2), "rewards": np.zeros(3)}, "batch"),
    (rl_buffer, {"obs": np.zeros(2), "rewards": np.array(["a", "b"])}, "rewards"),
    (rl_buffer, {"obs": np.zeros(2), "rewards": np.array([object(), 1.0], dtype=object)}, "rewards"),
    (rl_buffer, {"obs": np.zeros((2, 3)), "rewards": np.zeros(2)}, "obs"),
    (rl_buffer, {"obs": np.zeros(2), "rewards": np.zeros(2, complex)}, "rewards"),
], ids=["reward-overflows-f32", "obs-overflows-f32", "missing", "unknown", "ragged", "strings", "objects",
        "wrong-shape", "complex"])
def test_bad_columns_are_refused_and_store_nothing(make: Callable[[], Any], batch: dict[str, Any],
                                                   field: str) -> None:
    refused(make(), lambda b: b.add(batch), SchemaError, field)


@pytest.mark.parametrize("capacity", ["x", float("inf"), 0, -1, True, 2.5], ids=lambda v: repr(v))
def test_bad_capacity_is_refused(capacity: Any) -> None:
    with pytest.raises(ConfigError) as info:
        RLReplayBuffer(capacity)
    check_message(info.value, "capacity", None)


def test_capacity_none_is_rllibs_default() -> None:
    # RLlib's buffers default to 10,000 (RLlib passes capacity=None through its config)
    assert RLReplayBuffer(None).capacity == 10000


# ---------------------------------------------------------------- multi-agent: all or nothing
def multi_agent(cls: type) -> Any:
    b = cls(capacity=20, seed=5)
    b.add({"p1": steps(0, 3), "p2": steps(10, 3)})
    return b


MULTI_AGENT = [MultiAgentReplayBuffer, MultiAgentPrioritizedReplayBuffer, MultiAgentMixInReplayBuffer]


@pytest.mark.parametrize("cls", MULTI_AGENT, ids=lambda c: c.__name__)
@pytest.mark.parametrize("batch, field", [
    ({"p1": steps(20, 3), "p2": {"obs": np.zeros(3)}}, "rewards"),
    ({"p1": steps(20, 3), "p3": {"obs": np.array(["x"]), "rewards": np.zeros(1)}}, "obs"),
    ({"p1": steps(20, 3), True: steps(0, 1)}, "policy_id"),
], ids=["second-policy-bad", "new-policy-bad", "bool-policy-id"])
def test_a_multi_agent_add_is_whole_or_nothing(cls: type, batch: dict[Any, Any], field: str) -> None:
    """A bad batch for one policy stores nothing for the others (and creates no buffer)."""
    refused(multi_agent(cls), lambda b: b.add(batch), SchemaError, field)


@pytest.mark.parametrize("cls", MULTI_AGENT[1:], ids=lambda c: c.__name__)
@pytest.mark.parametrize("second, field", [
    (("p2", (np.array([0]), np.array([np.nan]))), "td_errors"),
    (("zz", (np.array([0]), np.array([1.0]))), "policy_id"),
], ids=["nan-td-error", "unknown-policy"])
def test_a_multi_agent_priority_update_is_whole_or_nothing(cls: type, second: tuple[str, Any], field: str) -> None:
    b = multi_agent(cls)
    good = b.sample(2, policy_id="p1")["p1"]["batch_indexes"]
    update = {"p1": (good, np.full(good.shape[0], 3.0)), second[0]: second[1]}
    refused(b, lambda x: x.update_priorities(update), ReplayTablesError, field)
