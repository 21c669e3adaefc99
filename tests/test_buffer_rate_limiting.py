"""Rate limiting in the buffers (SPEC 6.2): ReplayBuffer, PrioritizedReplay and the step-stream buffer.

The limiter's own rules and Reverb's test vectors are in ``test_rate_limiters.py``;
here the buffers use them: ``rate_limiter=``, ``timeout=`` on add, add_batch and
sample, ``can_insert`` / ``can_sample``, ``close()``, and the counts in checkpoints.
Time bounds are generous because the machine may be busy: "blocked" means still
waiting after 250 ms, "released" means done within 1 s of what releases it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ReplayTables
from conftest import Transition, item, items
from ReplayTables.checkpoint import read_checkpoint, write_checkpoint
from ReplayTables.errors import BufferClosedError, CheckpointError, ConfigError, RateLimitTimeout
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.rate_limiters import MinSize, RateLimiter, SampleToInsertRatio
from ReplayTables.ReplayBuffer import ReplayBuffer
from ReplayTables.trajectory import TrajectoryReplay

BLOCKED = 0.25
RELEASED = 1.0


class Kind:
    """One buffer kind, driven through one vocabulary: insert ``k`` items, sample ``n``."""

    def __init__(self, name: str, make: Callable[[RateLimiter | None], Any]) -> None:
        self.name = name
        self.make = make
        self._next = 0

    def insert(self, buffer: Any, k: int = 1, timeout: float | None = None) -> None:
        ks = np.arange(self._next, self._next + k)
        if isinstance(buffer, TrajectoryReplay):
            for j in ks:  # n_step=1: every step completes one transition
                buffer.add_step(int(j) % 4, float(j), np.full(2, j, np.float32), False, False, timeout=timeout)
        elif k == 1:
            buffer.add(item(int(ks[0])), timeout=timeout)
        else:
            buffer.add_batch(items(ks), timeout=timeout)
        self._next += k

    def insert_batch(self, buffer: Any, k: int, timeout: float | None = None) -> None:
        """``k`` items in one call (one add_batch, or one add_steps over ``k`` streams)."""
        ks = np.arange(self._next, self._next + k)
        if isinstance(buffer, TrajectoryReplay):
            buffer.add_steps(ks % 4, ks.astype(np.float32), np.repeat(ks[:, None], 2, 1).astype(np.float32),
                             np.zeros(k, bool), np.zeros(k, bool), streams=np.arange(k), timeout=timeout)
        else:
            buffer.add_batch(items(ks), timeout=timeout)
        self._next += k


def _trajectory(limiter: RateLimiter | None, streams: int = 4) -> TrajectoryReplay:
    buffer = TrajectoryReplay(64, obs_shape=(2,), obs_dtype=np.float32, num_streams=streams, rng=0,
                              rate_limiter=limiter)
    buffer.begin_episodes(np.zeros((streams, 2), np.float32))
    return buffer


KINDS = {
    "rb": Kind("rb", lambda lim: ReplayBuffer(64, Transition, 0, rate_limiter=lim)),
    "per": Kind("per", lambda lim: PrioritizedReplay(64, Transition, 0, PERConfig(), rate_limiter=lim)),
    "trajectory": Kind("trajectory", _trajectory),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    return Kind(request.param, KINDS[request.param].make)


def snapshot(buffer: Any) -> dict[str, Any]:
    """Everything observable about a buffer that a refused call must not change."""
    state = buffer.state_dict()
    limiter = buffer.rate_limiter
    return {"stats": buffer.stats(), "size": buffer.size(), "arrays": state["arrays"],
            "table": state["table"], "counts": None if limiter is None else limiter.state_dict()}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["stats"] == b["stats"] and a["size"] == b["size"] and a["counts"] == b["counts"]
    assert a["table"] == b["table"]
    assert a["arrays"].keys() == b["arrays"].keys()
    for key in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key], err_msg=key)


class Call(threading.Thread):
    """A call run in another thread; ``result`` or ``error`` once it returns."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # the test inspects it
            self.error = exc
        finally:
            self.done.set()


# ------------------------------------------------------------------ waiting for the limiter
def test_a_sampler_on_an_empty_buffer_waits_until_another_thread_inserts(kind: Kind) -> None:
    buffer = kind.make(MinSize(1))
    call = Call(lambda: buffer.sample(4))
    assert not call.done.wait(BLOCKED), "a sample of an empty buffer returned instead of waiting"
    kind.insert(buffer)
    released = time.monotonic()
    assert call.done.wait(RELEASED), "the sampler was not released within 1 s of the insert"
    assert time.monotonic() - released < RELEASED
    assert call.error is None and len(call.result.ids) == 4
    assert buffer.rate_limiter.state_dict() == {"inserts": 1, "samples": 4}


def test_without_a_limiter_an_empty_sample_raises_at_once(kind: Kind) -> None:
    """The negative control of the test above: no limiter, nothing waits."""
    buffer = kind.make(None)
    with pytest.raises(ReplayTables.EmptyBufferError):
        buffer.sample(4, timeout=5.0)


def inserts_blocked(kind: Kind) -> tuple[Any, RateLimiter]:
    """A buffer whose limiter forbids the next insert until something is sampled."""
    limiter = SampleToInsertRatio(samples_per_insert=1.0, min_size_to_sample=3, error_buffer=2.0)  # band [1, 5]
    buffer = kind.make(limiter)
    kind.insert(buffer, 5)  # (5 + 1) * 1 - 0 > 5: a sixth waits for a sample
    assert not buffer.can_insert(1) and buffer.can_sample(1)
    return buffer, limiter


def test_a_blocked_insert_times_out_and_changes_nothing(kind: Kind) -> None:
    buffer, _ = inserts_blocked(kind)
    before = snapshot(buffer)
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as err:
        kind.insert(buffer, 1, timeout=0.3)
    waited = time.monotonic() - start
    assert 0.3 <= waited < 0.3 + RELEASED
    assert isinstance(err.value, ReplayTables.ReplayTablesError) and isinstance(err.value, TimeoutError)
    assert "timeout" in str(err.value) and "0.3" in str(err.value)
    assert_same(before, snapshot(buffer))
    with pytest.raises(RateLimitTimeout):
        kind.insert(buffer, 1, timeout=0)  # timeout=0 never waits
    assert_same(before, snapshot(buffer))


def test_a_blocked_batch_waits_for_room_for_all_of_it(kind: Kind) -> None:
    limiter = SampleToInsertRatio(samples_per_insert=1.0, min_size_to_sample=3, error_buffer=2.0)
    buffer = kind.make(limiter)
    kind.insert_batch(buffer, 3)
    before = snapshot(buffer)
    with pytest.raises(RateLimitTimeout):
        kind.insert_batch(buffer, 3, timeout=0.05)  # (3 + 3) - 0 > 5: all three or none
    assert_same(before, snapshot(buffer))
    call = Call(lambda: kind.insert_batch(buffer, 3))
    assert not call.done.wait(BLOCKED)
    buffer.sample(1)  # (3 + 3) - 1 <= 5
    assert call.done.wait(RELEASED) and call.error is None
    assert buffer.rate_limiter.state_dict() == {"inserts": 6, "samples": 1}


def test_a_sample_from_another_thread_releases_a_waiting_insert(kind: Kind) -> None:
    buffer, limiter = inserts_blocked(kind)
    call = Call(lambda: kind.insert(buffer, 1))
    assert not call.done.wait(BLOCKED), "the insert did not wait for the limiter"
    buffer.sample(1)
    assert call.done.wait(RELEASED) and call.error is None
    assert limiter.state_dict() == {"inserts": 6, "samples": 1}


def test_a_sample_timeout_changes_nothing(kind: Kind) -> None:
    buffer = kind.make(MinSize(3))
    kind.insert(buffer, 2)
    before = snapshot(buffer)
    with pytest.raises(RateLimitTimeout):
        buffer.sample(2, timeout=0.05)
    assert_same(before, snapshot(buffer))


def test_can_insert_and_can_sample_answer_without_waiting(kind: Kind) -> None:
    buffer = kind.make(MinSize(2))
    assert buffer.can_insert(1) and not buffer.can_sample(1)
    kind.insert(buffer, 2)
    assert buffer.can_sample(5)
    plain = kind.make(None)
    assert plain.can_insert(100) and not plain.can_sample(1)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="k"):
            buffer.can_sample(bad)


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", True])
def test_a_bad_timeout_is_refused_and_changes_nothing(kind: Kind, bad: Any) -> None:
    for limiter in (None, MinSize(1)):
        buffer = kind.make(limiter)
        kind.insert(buffer, 1)
        before = snapshot(buffer)
        with pytest.raises(ConfigError, match="timeout"):
            kind.insert(buffer, 1, timeout=bad)
        with pytest.raises(ConfigError, match="timeout"):
            buffer.sample(1, timeout=bad)
        assert_same(before, snapshot(buffer))


def test_rate_limiter_must_be_a_rate_limiter() -> None:
    for make in (lambda: ReplayBuffer(4, rate_limiter={"min_size": 1}),  # type: ignore[arg-type]
                 lambda: PrioritizedReplay(4, rate_limiter=5),  # type: ignore[arg-type]
                 lambda: TrajectoryReplay(4, obs_shape=(2,), rate_limiter="MinSize(1)")):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="rate_limiter"):
            make()


# ------------------------------------------------------------------ close
def test_close_wakes_a_waiting_sampler_and_a_waiting_inserter(kind: Kind) -> None:
    buffer, _ = inserts_blocked(kind)
    empty = kind.make(MinSize(1))
    inserter = Call(lambda: kind.insert(buffer, 1))
    sampler = Call(lambda: empty.sample(1))
    assert not inserter.done.wait(BLOCKED) and not sampler.done.wait(0.01)
    before = snapshot(buffer)
    buffer.close()
    empty.close()
    assert inserter.done.wait(RELEASED) and sampler.done.wait(RELEASED)
    assert isinstance(inserter.error, BufferClosedError) and isinstance(sampler.error, BufferClosedError)
    assert "close()" in str(inserter.error)
    assert_same(before, snapshot(buffer))


def test_a_closed_buffer_refuses_adds_and_samples_but_can_be_read_and_saved(kind: Kind, tmp_path: Path) -> None:
    for limiter in (None, MinSize(1)):
        buffer = kind.make(limiter)
        kind.insert(buffer, 3)
        ids = buffer.sample(2).ids
        buffer.close()
        buffer.close()  # twice is harmless
        assert buffer.closed and not buffer.can_insert(1) and not buffer.can_sample(1)
        with pytest.raises(BufferClosedError):
            kind.insert(buffer, 1)
        with pytest.raises(BufferClosedError):
            kind.insert_batch(buffer, 2)
        with pytest.raises(BufferClosedError):
            buffer.sample(1)
        assert len(buffer.get(ids).ids) == 2 and buffer.size() == 3
        buffer.save(tmp_path / f"closed-{limiter is None}")


# ------------------------------------------------------------------ counts in checkpoints
def exercised(kind: Kind) -> Any:
    limiter = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=2, error_buffer=50.0)
    buffer = kind.make(limiter)
    kind.insert(buffer, 7)
    buffer.sample(5)
    buffer.sample(3)
    assert limiter.state_dict() == {"inserts": 7, "samples": 8}
    return buffer


def test_the_limiters_config_and_counts_survive_save_and_load(kind: Kind, tmp_path: Path) -> None:
    buffer = exercised(kind)
    buffer.save(tmp_path / "ckpt")
    loaded = ReplayTables.load(tmp_path / "ckpt")
    assert type(loaded) is type(buffer)
    assert loaded.rate_limiter is not None and loaded.rate_limiter is not buffer.rate_limiter
    assert loaded.rate_limiter.config() == buffer.rate_limiter.config()
    assert loaded.rate_limiter.state_dict() == {"inserts": 7, "samples": 8}
    assert loaded.stats()["rate_limiter"] == buffer.stats()["rate_limiter"]
    # it goes on limiting from there: d = 7 * 2 - 8 = 6 now, min_diff = 4 - 50
    assert loaded.can_sample(52) and not loaded.can_sample(53)
    assert loaded.can_sample(52) == buffer.can_sample(52) and loaded.can_sample(53) == buffer.can_sample(53)


def test_counts_round_trip_through_state_dict_and_roll_back(kind: Kind) -> None:
    buffer = exercised(kind)
    state = buffer.state_dict()
    assert state["frontend"]["rate_limiter"] == {"inserts": 7, "samples": 8}
    buffer.sample(4)
    kind.insert(buffer, 1)
    buffer.load_state_dict(state)
    assert buffer.rate_limiter.state_dict() == {"inserts": 7, "samples": 8}


def test_bad_saved_counts_are_refused_and_change_nothing(kind: Kind) -> None:
    buffer = exercised(kind)
    good = buffer.state_dict()
    before = snapshot(buffer)
    for counts in ({"inserts": -1, "samples": 0}, {"inserts": 1}, {"inserts": 1.5, "samples": 0}, "many"):
        bad = {**good, "frontend": {**good["frontend"], "rate_limiter": counts}}
        with pytest.raises(CheckpointError, match="rate_limiter"):
            buffer.load_state_dict(bad)
        assert_same(before, snapshot(buffer))
    missing = {**good, "frontend": {k: v for k, v in good["frontend"].items() if k != "rate_limiter"}}
    with pytest.raises(CheckpointError, match="rate_limiter"):
        buffer.load_state_dict(missing)
    assert_same(before, snapshot(buffer))


def test_a_buffer_without_a_limiter_refuses_saved_counts(kind: Kind) -> None:
    plain = kind.make(None)
    kind.insert(plain, 2)
    state = plain.state_dict()
    assert "rate_limiter" not in state["frontend"] and "rate_limiter" not in state["init"]
    bad = {**state, "frontend": {**state["frontend"], "rate_limiter": {"inserts": 1, "samples": 0}}}
    with pytest.raises(CheckpointError, match="rate_limiter"):
        plain.load_state_dict(bad)


def test_a_saved_limiter_config_that_is_not_valid_is_a_checkpoint_error(kind: Kind, tmp_path: Path) -> None:
    buffer = exercised(kind)
    buffer.save(tmp_path / "ckpt")
    manifest, arrays = read_checkpoint(tmp_path / "ckpt")
    assert manifest["init"]["rate_limiter"]["samples_per_insert"] == 2.0
    manifest = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "arrays")}
    manifest["init"]["rate_limiter"]["max_diff"] = -1e9  # below min_diff: no limiter has that band
    write_checkpoint(tmp_path / "bad", manifest, arrays)
    with pytest.raises(CheckpointError, match="rate_limiter"):
        ReplayTables.load(tmp_path / "bad")


def test_a_pickled_buffer_has_its_own_lock_and_limiter(kind: Kind) -> None:
    import pickle

    buffer = exercised(kind)
    copy = pickle.loads(pickle.dumps(buffer))
    assert copy.rate_limiter.state_dict() == buffer.rate_limiter.state_dict()
    assert copy._lock is not buffer._lock and copy._table.lock is copy._lock
    copy.sample(1)
    assert copy.rate_limiter.samples == buffer.rate_limiter.samples + 1
