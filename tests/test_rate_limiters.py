"""Rate limiters (SPEC 6.2), the table lock they wait on (SPEC 6.1) and the admission gate.

Groups marked "Reverb" port the facts (configurations, sequences of inserts,
samples and deletes, and the expected answers) of DeepMind Reverb's own tests:
``reverb/cc/rate_limiter_test.cc`` and ``reverb/rate_limiters_test.py``. Where
Reverb accepts a configuration that the SPEC makes a ConfigError, the test
checks that we refuse it and runs the same trace on the nearest accepted one.

Threads run against ``FakeTable``: a size counter under a :class:`TableLock`,
wired exactly as a table will be (admit, change, record, notify). Time bounds
are generous because the machine may be busy: "blocked" means still waiting
after 250 ms, "released" means done within 1 s.
"""
from __future__ import annotations

import copy
import json
import math
import pickle
import re
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReplayTables.engine.admission import admit_insert, admit_sample
from ReplayTables.engine.table_lock import TableLock, TableLockProtocol, check_timeout
from ReplayTables.errors import BufferClosedError, CheckpointError, ConfigError, RateLimitTimeout, ReplayTablesError
from ReplayTables.rate_limiters import MinSize, RateLimiter, SampleToInsertRatio

BLOCKED = 0.25  # a call still waiting after this long counts as blocked
RELEASED = 5.0  # a released call must finish within this long (generous: a loaded CI machine)


# ---------------------------------------------------------------- a fake table and a thread runner
class FakeTable:
    """A table reduced to its size, wired to a limiter the way the engine's table is."""

    def __init__(self, limiter: RateLimiter | None, capacity: int = 10_000) -> None:
        self.lock = TableLock()
        self.limiter = limiter
        self.capacity = capacity
        self.size = 0
        self.violations: list[str] = []

    def _size(self) -> int:
        return self.size

    def add(self, k: int = 1, timeout: float | None = None) -> None:
        with self.lock:
            admit_insert(self.lock, self.limiter, k, self._size, timeout)
            self._check_insert_allowed(k)
            self.size = min(self.size + k, self.capacity)  # evictions lower the size, not the counts
            if self.limiter is not None:
                self.limiter.record_insert(k)
            self.lock.notify()

    def sample(self, k: int = 1, timeout: float | None = None) -> int:
        with self.lock:
            admit_sample(self.lock, self.limiter, k, self._size, timeout)
            self._check_sample_allowed(k)
            if self.limiter is not None:
                self.limiter.record_sample(k)
            self.lock.notify()
            return k

    def delete(self, j: int = 1) -> None:
        with self.lock:
            self.size -= min(j, self.size)
            self.lock.notify()

    def stage_insert(self, k: int = 1, timeout: float | None = None) -> None:
        """Admission without the insert (Reverb's AwaitCanInsert with no Insert after it)."""
        with self.lock:
            admit_insert(self.lock, self.limiter, k, self._size, timeout)
            self.lock.notify()

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            assert self.limiter is not None
            return self.limiter.inserts, self.limiter.samples, self.size

    # the SPEC's conditions, re-checked independently at the moment of the change
    def _check_insert_allowed(self, k: int) -> None:
        lim = self.limiter
        if lim is not None and not (self.size + k <= lim.min_size_to_sample or
                                    (lim.inserts + k) * lim.samples_per_insert - lim.samples <= lim.max_diff):
            self.violations.append(f"insert of {k} admitted at {lim!r}, size {self.size}")

    def _check_sample_allowed(self, k: int) -> None:
        lim = self.limiter
        if lim is not None and not (self.size >= lim.min_size_to_sample and
                                    lim.inserts * lim.samples_per_insert - lim.samples - k >= lim.min_diff):
            self.violations.append(f"sample of {k} admitted at {lim!r}, size {self.size}")


class Call(threading.Thread):
    """Runs ``fn`` in a daemon thread; ``done`` is set when it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def finish(self) -> None:
        assert self.done.wait(RELEASED), "the call was not released"
        self.join(RELEASED)


@pytest.fixture
def tables() -> Any:
    """Make FakeTables and close them all at the end, so no test leaves a thread waiting."""
    made: list[FakeTable] = []

    def make(limiter: RateLimiter | None, capacity: int = 10_000) -> FakeTable:
        made.append(FakeTable(limiter, capacity))
        return made[-1]

    yield make
    for table in made:
        table.lock.close()
        assert not table.violations, table.violations


# ---------------------------------------------------------------- Reverb: rate_limiter_test.cc
class TestReverbTraces:
    """Traces from reverb/cc/rate_limiter_test.cc (its TEST(RateLimiterTest, ...) named in each docstring)."""

    def test_blocks_samples_until_min_inserts_reached(self, tables: Any) -> None:
        """BlocksSamplesUntilMinInsertsReached. Reverb's (1, 2, -1, 1) has max_diff below
        spi * min_size = 2 (Reverb only warns): refused here; the trace runs on max_diff=2."""
        with pytest.raises(ConfigError, match="max_diff"):
            RateLimiter(1.0, 2, -1.0, 1.0)
        table = tables(RateLimiter(1.0, 2, -1.0, 2.0))
        sampler = Call(table.sample)
        assert not sampler.done.wait(BLOCKED)  # no inserts yet
        table.add()
        assert not sampler.done.wait(BLOCKED)  # one insert is not enough
        table.add()
        sampler.finish()  # two are
        assert sampler.error is None
        assert table.counts() == (2, 1, 2)

    def test_operations_within_the_buffer_are_not_blocked(self, tables: Any) -> None:
        """OperationsWithinTheBufferAreNotBlocked: (1.5, 1, -3.0, 3.1); timeout=0 proves nothing waits."""
        table = tables(RateLimiter(1.5, 1, -3.0, 3.1))
        table.add(timeout=0)  # below min size: always allowed; diff 1.5
        table.add(timeout=0)  # diff 3.0, inside the band
        for _ in range(6):  # diff 2, 1, 0, -1, -2, -3
            table.sample(timeout=0)
        with pytest.raises(RateLimitTimeout):  # (ours) a 7th would take diff to -4
            table.sample(timeout=0)
        assert table.counts() == (2, 6, 2)

    def test_unblocks_calls_when_cancelled(self, tables: Any) -> None:
        """UnblocksCallsWhenCancelled: Reverb's Cancel is our close(); (1, 2, -1, 1) -> max_diff 2 as above."""
        table = tables(RateLimiter(1.0, 2, -1.0, 2.0))
        sampler = Call(table.sample)
        assert not sampler.done.wait(BLOCKED)
        table.lock.close()
        sampler.finish()
        assert isinstance(sampler.error, BufferClosedError)
        assert table.counts() == (0, 0, 0)

    def test_blocks_calls_that_exceed_the_min_max_limits(self, tables: Any) -> None:
        """BlocksCallsThatExceedsTheMinMaxLimits: (1.5, 2, -1.0, 3.0), accepted as it is."""
        table = tables(RateLimiter(1.5, 2, -1.0, 3.0))
        sampler = Call(table.sample)
        assert not sampler.done.wait(BLOCKED)  # diff 0
        table.add()  # diff 1.5, size 1 < 2
        assert not sampler.done.wait(BLOCKED)
        table.add()  # diff 3.0
        sampler.finish()  # diff 2.0
        inserter = Call(table.add)  # would take diff to 3.5 > 3.0
        assert not inserter.done.wait(BLOCKED)
        table.sample()  # diff 1.0: the insert (to 2.5) may proceed
        inserter.finish()
        assert sampler.error is None and inserter.error is None
        assert table.counts() == (3, 2, 3)

    def test_can_sample(self) -> None:
        """CanSample: (1.0, 1, -1.0, 1.0)."""
        limiter = RateLimiter(1.0, 1, -1.0, 1.0)
        assert not limiter.can_sample(1, 0)  # min size not reached
        assert limiter.can_insert(1, 0)
        limiter.record_insert(1)
        assert limiter.can_sample(1, 1)  # diff 0
        assert limiter.can_sample(2, 1)  # diff -1
        assert not limiter.can_sample(3, 1)  # diff -2

    def test_can_insert(self) -> None:
        """CanInsert: (1.5, 2, 0.0, 5.0)."""
        limiter = RateLimiter(1.5, 2, 0.0, 5.0)
        assert limiter.can_insert(1, 0)  # below min size
        assert limiter.can_insert(2, 0)  # up to min size
        assert limiter.can_insert(3, 0)  # diff 4.5
        assert not limiter.can_insert(4, 0)  # diff 6.0
        for size in range(3):
            assert limiter.can_insert(1, size)
            limiter.record_insert(1)
        assert not limiter.can_insert(1, 3)  # diff 6.0
        limiter.record_sample(1)  # diff 3.5
        limiter.record_sample(1)  # diff 2.5
        assert limiter.can_insert(1, 3)  # diff 4.0
        assert not limiter.can_insert(2, 3)  # diff 5.5

    def test_checkpoint_sets_basic_options(self) -> None:
        """CheckpointSetsBasicOptions: the config holds the four numbers."""
        limiter = RateLimiter(1.5, 2, 0.0, 5.0)
        assert limiter.config() == {"samples_per_insert": 1.5, "min_size_to_sample": 2,
                                    "min_diff": 0.0, "max_diff": 5.0}

    def test_checkpoint_sets_insert_and_sample_count(self, tables: Any) -> None:
        """CheckpointSetsInsertAndDeleteAndSampleCount. Reverb also saves a delete count (its
        size is inserts - deletes); here the table owns the size, so deletes are not counted."""
        table = tables(RateLimiter(1.5, 2, 0.0, 5.0))
        assert table.limiter.state_dict() == {"inserts": 0, "samples": 0}
        table.add(timeout=0)
        table.add(timeout=0)
        table.sample(timeout=0)
        table.delete()
        assert table.limiter.state_dict() == {"inserts": 2, "samples": 1}

    def test_can_be_restored_from_checkpoint(self, tables: Any) -> None:
        """CanBeRestoredFromCheckpoint: a restored limiter goes on from the saved counts."""
        table = tables(RateLimiter(1.5, 2, 0.0, 5.0))
        table.add(timeout=0)
        table.add(timeout=0)
        table.sample(timeout=0)
        table.delete()
        config, state = table.limiter.config(), table.limiter.state_dict()
        assert config == {"samples_per_insert": 1.5, "min_size_to_sample": 2, "min_diff": 0.0, "max_diff": 5.0}
        assert state == {"inserts": 2, "samples": 1}
        restored = RateLimiter.from_config(json.loads(json.dumps(config)))
        restored.load_state_dict(json.loads(json.dumps(state)))
        again = tables(restored)
        again.size = table.size
        again.add(timeout=0)
        again.sample(timeout=0)
        assert restored.config() == config
        assert restored.state_dict() == {"inserts": 3, "samples": 2}

    def test_unblocks_inserts_if_deleted_items_bring_size_below_min_size(self, tables: Any) -> None:
        """UnblocksInsertsIfDeletedItemsBringsSizeBelowMinSize. Reverb's (5, 2, 0, 5) has a band
        narrower than 2 * spi = 10 and max_diff below spi * min_size = 10: refused; the trace runs
        on (5, 2, 0, 10)."""
        with pytest.raises(ConfigError):
            RateLimiter(5.0, 2, 0.0, 5.0)
        table = tables(RateLimiter(5.0, 2, 0.0, 10.0))
        table.add(timeout=0)
        table.add(timeout=0)  # diff 10, size 2 = min size
        inserter = Call(table.stage_insert)  # diff would be 15
        assert not inserter.done.wait(BLOCKED)
        table.sample(timeout=0)  # diff 9: still too high for an insert (14)
        assert not inserter.done.wait(BLOCKED)
        table.delete()  # size 1: filling up to min size is allowed again
        inserter.finish()
        assert inserter.error is None

    def test_blocks_samples_if_delete_brings_size_below_min_size(self, tables: Any) -> None:
        """BlocksSamplesIfDeleteBringsSizeBelowMinSize, on (5, 2, 0, 10) as above."""
        table = tables(RateLimiter(5.0, 2, 0.0, 10.0))
        table.add(timeout=0)
        table.add(timeout=0)
        table.sample(timeout=0)  # min size reached
        table.delete()  # size 1 < 2
        sampler = Call(table.sample)
        assert not sampler.done.wait(BLOCKED)
        table.stage_insert(timeout=0)  # admitting an insert is not inserting it
        assert not sampler.done.wait(BLOCKED)
        table.add(timeout=0)
        sampler.finish()
        assert sampler.error is None
        assert table.counts() == (3, 2, 2)

    def test_info(self) -> None:
        """Info: the numbers a limiter reports. Reverb's second example (1.5, 14, -10, 5.3) has
        max_diff below spi * min_size = 21 and is refused here."""
        assert RateLimiter(1, 1, 0, 5).config() == {"samples_per_insert": 1.0, "min_size_to_sample": 1,
                                                    "min_diff": 0.0, "max_diff": 5.0}
        with pytest.raises(ConfigError, match="max_diff"):
            RateLimiter(1.5, 14, -10, 5.3)

    @pytest.mark.parametrize("min_size", [0, -1])
    def test_refuses_non_positive_min_size_to_sample(self, min_size: int) -> None:
        """RateLimiterDeathTest.DiesIfMinSizeToSampleNonPositive: Reverb aborts; we raise."""
        with pytest.raises(ConfigError, match="min_size_to_sample"):
            RateLimiter(1, min_size, 0, 5)


# ---------------------------------------------------------------- Reverb: rate_limiters_test.py
class TestReverbPresetValidation:
    """The validation tables of reverb/rate_limiters_test.py (ValueError there, ConfigError here)."""

    # TestSampleToInsertRatio.test_validates_single_number_error_buffer (min_size_to_sample=10)
    @pytest.mark.parametrize(("spi", "error_buffer", "ok"), [
        (5, 4, False),  # less_than_samples_per_insert
        (0.5, 0.9, False),  # less_than_one
        (0.5, 1.1, True),  # valid
    ])
    def test_single_number_error_buffer(self, spi: float, error_buffer: float, ok: bool) -> None:
        if ok:
            limiter = SampleToInsertRatio(spi, 10, error_buffer)
            assert (limiter.min_diff, limiter.max_diff) == (spi * 10 - error_buffer, spi * 10 + error_buffer)
        else:
            with pytest.raises(ConfigError, match="error_buffer"):
                SampleToInsertRatio(spi, 10, error_buffer)

    # TestSampleToInsertRatio.test_validates_explicit_range_error_buffer
    @pytest.mark.parametrize(("min_size", "spi", "error_buffer", "ok"), [
        (10, 5, (8, 12), False),  # range_too_small_due_to_sample_per_insert_ratio
        (10, 0.1, (9.5, 10.5), False),  # range_smaller_than_2
        # range_below_min_size_to_sample: Reverb only warns (a deadlock unless sampling runs
        # concurrently); the SPEC makes it an error
        (10, 1, (5, 9), False),
        (10, 1, (11, 15), False),  # range_above_min_size_to_sample
        (0, 1, (-100, 100), False),  # min_size_to_sample_smaller_than_1
        (10, 1, (7, 12), True),  # valid
    ])
    def test_explicit_range_error_buffer(self, min_size: int, spi: float, error_buffer: tuple[float, float],
                                         ok: bool) -> None:
        if ok:
            limiter = SampleToInsertRatio(spi, min_size, error_buffer)
            assert (limiter.min_diff, limiter.max_diff) == error_buffer
        else:
            with pytest.raises(ConfigError):
                SampleToInsertRatio(spi, min_size, error_buffer)

    # TestMinSize.test_raises_if_min_size_lt_1
    @pytest.mark.parametrize(("min_size", "ok"), [(-1, False), (0, False), (1, True)])
    def test_min_size(self, min_size: int, ok: bool) -> None:
        if ok:
            assert MinSize(min_size).min_size_to_sample == min_size
        else:
            with pytest.raises(ConfigError, match="min_size_to_sample"):
                MinSize(min_size)


# ---------------------------------------------------------------- presets and validation (ours)
class TestPresetsAndValidation:
    def test_min_size_is_reverbs_four_numbers(self) -> None:
        limiter = MinSize(3)
        assert isinstance(limiter, RateLimiter)
        assert limiter.config() == {"samples_per_insert": 1.0, "min_size_to_sample": 3,
                                    "min_diff": -sys.float_info.max, "max_diff": sys.float_info.max}
        assert not limiter.can_sample(1, 2) and limiter.can_sample(10**6, 3)
        limiter.record_insert(10**9)
        assert limiter.can_insert(10**6, 10**9)  # never blocks inserts

    def test_sample_to_insert_ratio_band(self) -> None:
        limiter = SampleToInsertRatio(2.0, 10, 5.0)
        assert (limiter.samples_per_insert, limiter.min_size_to_sample) == (2.0, 10)
        assert (limiter.min_diff, limiter.max_diff) == (15.0, 25.0)  # 2 * 10 -/+ 5
        # the smallest accepted error_buffer is max(1, spi), a band 2 * max(1, spi) wide
        assert SampleToInsertRatio(2.0, 10, 2.0).max_diff == 22.0
        with pytest.raises(ConfigError, match="error_buffer"):
            SampleToInsertRatio(2.0, 10, 1.99)

    @pytest.mark.parametrize(("args", "field"), [
        ((0.0, 1, -5.0, 5.0), "samples_per_insert"),
        ((-1.0, 1, -5.0, 5.0), "samples_per_insert"),
        ((math.nan, 1, -5.0, 5.0), "samples_per_insert"),
        ((math.inf, 1, -5.0, 5.0), "samples_per_insert"),
        (("1", 1, -5.0, 5.0), "samples_per_insert"),
        ((True, 1, -5.0, 5.0), "samples_per_insert"),
        ((1.0, 1.5, -5.0, 5.0), "min_size_to_sample"),
        ((1.0, True, -5.0, 5.0), "min_size_to_sample"),
        ((1.0, 2**63, -5.0, 5.0), "min_size_to_sample"),
        ((1.0, 1, -math.inf, 5.0), "min_diff"),
        ((1.0, 1, math.nan, 5.0), "min_diff"),
        ((1.0, 1, -5.0, math.inf), "max_diff"),
        ((1.0, 1, -5.0, None), "max_diff"),
        ((1.0, 1, 0.0, 1.5), "max_diff - min_diff"),  # band 1.5 < 2
        ((3.0, 1, 0.0, 5.0), "max_diff - min_diff"),  # band 5 < 2 * 3
        ((1.0, 4, 4.5, 10.0), "min_diff <="),  # min_diff above spi * m = 4
        ((1.0, 4, 0.0, 3.5), "max_diff >="),  # max_diff below spi * m = 4: Reverb's warning
    ])
    def test_bad_arguments_name_the_field(self, args: tuple[Any, ...], field: str) -> None:
        with pytest.raises(ConfigError) as info:
            RateLimiter(*args)
        assert field in str(info.value)

    def test_band_edges_are_accepted(self) -> None:
        RateLimiter(1.0, 4, 2.0, 4.0)  # band exactly 2, max_diff exactly spi * m
        RateLimiter(3.0, 2, 0.0, 6.0)  # band exactly 2 * spi, min_diff <= 6 <= max_diff
        RateLimiter(1.0, 4, 4.0, 6.0)  # min_diff exactly spi * m
        RateLimiter(np.float32(0.5), np.int64(3), np.int16(-1), np.float64(2.0))

    @pytest.mark.parametrize("error_buffer", ["2", (1.0,), (1.0, 2.0, 3.0), (0.0, math.nan), math.inf, None, True])
    def test_bad_error_buffer(self, error_buffer: Any) -> None:
        with pytest.raises(ConfigError, match="error_buffer"):
            SampleToInsertRatio(1.0, 10, error_buffer)

    def test_config_round_trips_through_json(self) -> None:
        for limiter in (MinSize(7), SampleToInsertRatio(0.25, 100, (20.0, 30.0)), RateLimiter(1.5, 2, -1.0, 3.0)):
            config = json.loads(json.dumps(limiter.config(), allow_nan=False))
            again = RateLimiter.from_config(config)
            assert again.config() == limiter.config()
            assert again.state_dict() == {"inserts": 0, "samples": 0}

    @pytest.mark.parametrize("config", [
        [1.0, 1, 0.0, 5.0],
        {"samples_per_insert": 1.0, "min_size_to_sample": 1, "min_diff": 0.0},
        {"samples_per_insert": 1.0, "min_size_to_sample": 1, "min_diff": 0.0, "max_diff": 5.0, "extra": 1},
        {"samples_per_insert": 1.0, "min_size_to_sample": 1, "min_diff": 0.0, "max_diff": 0.5},
    ])
    def test_from_config_refuses_bad_configs(self, config: Any) -> None:
        with pytest.raises(ConfigError):
            RateLimiter.from_config(config)

    @pytest.mark.parametrize("k", [0, -1, True, 1.0, "1", None])
    def test_bad_item_counts(self, k: Any) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 1.0)
        for method in (limiter.can_insert, limiter.can_sample):
            with pytest.raises(ConfigError, match="k"):
                method(k, 0)
        for record in (limiter.record_insert, limiter.record_sample):
            with pytest.raises(ConfigError, match="k"):
                record(k)
        assert limiter.state_dict() == {"inserts": 0, "samples": 0}

    def test_numpy_item_counts_are_accepted(self) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 1.0)
        assert limiter.can_insert(np.int64(1), 0)
        limiter.record_insert(np.int32(2))
        assert limiter.inserts == 2

    def test_repr_shows_numbers_and_counts(self) -> None:
        limiter = RateLimiter(1.5, 2, 0.0, 5.0)
        limiter.record_insert(3)
        assert repr(limiter) == ("RateLimiter(samples_per_insert=1.5, min_size_to_sample=2, min_diff=0.0, "
                                 "max_diff=5.0) with inserts=3, samples=0")


# ---------------------------------------------------------------- counts: state, checkpoints, shared arrays
class TestCounts:
    def test_state_round_trip(self) -> None:
        limiter = SampleToInsertRatio(1.0, 2, 4.0)
        limiter.record_insert(5)
        limiter.record_sample(3)
        state = json.loads(json.dumps(limiter.state_dict()))
        assert state == {"inserts": 5, "samples": 3}
        fresh = RateLimiter.from_config(limiter.config())
        fresh.check_state(state)
        assert fresh.state_dict() == {"inserts": 0, "samples": 0}  # check_state changes nothing
        fresh.load_state_dict(state)
        assert fresh.state_dict() == state
        for k in range(1, 6):
            for size in range(4):
                assert fresh.can_insert(k, size) == limiter.can_insert(k, size)
                assert fresh.can_sample(k, size) == limiter.can_sample(k, size)

    def test_numpy_integers_are_a_good_state(self) -> None:
        limiter = MinSize(1)
        limiter.load_state_dict({"inserts": np.int64(4), "samples": np.uint8(2)})
        assert limiter.state_dict() == {"inserts": 4, "samples": 2}
        assert all(type(v) is int for v in limiter.state_dict().values())

    @pytest.mark.parametrize("state", [
        None,
        [1, 2],
        {"inserts": 1},
        {"inserts": 1, "samples": 2, "deletes": 0},
        {"inserts": -1, "samples": 0},
        {"inserts": 0, "samples": -5},
        {"inserts": 2**63, "samples": 0},
        {"inserts": 1.0, "samples": 0},
        {"inserts": True, "samples": 0},
        {"inserts": "3", "samples": 0},
        {"inserts": np.float64(3), "samples": 0},
    ])
    def test_bad_states_are_refused_unchanged(self, state: Any) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 2.0)
        limiter.record_insert(2)
        limiter.record_sample(1)
        with pytest.raises(CheckpointError):
            limiter.check_state(state)
        with pytest.raises(CheckpointError):
            limiter.load_state_dict(state)
        assert limiter.state_dict() == {"inserts": 2, "samples": 1}

    def test_bind_moves_the_counts_into_a_given_array(self) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 2.0)
        limiter.record_insert(2)
        shared = np.zeros(4, dtype=np.int64)[1:3]  # a view, as into a shared-memory block
        shared[:] = limiter.counts  # carry the counts over, then bind
        limiter.bind(shared)
        assert limiter.counts is shared
        limiter.record_sample(1)
        assert shared.tolist() == [2, 1]
        # a second limiter over the same memory (another process attaching) sees and moves the same counts
        other = RateLimiter.from_config(limiter.config())
        other.bind(shared)
        assert other.state_dict() == {"inserts": 2, "samples": 1}
        other.record_insert(1)
        assert limiter.inserts == 3
        limiter.load_state_dict({"inserts": 7, "samples": 4})
        assert shared.tolist() == [7, 4] and other.samples == 4

    def test_bind_adopts_the_arrays_values(self) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 2.0)
        limiter.record_insert(9)
        limiter.bind(np.array([3, 1], dtype=np.int64))
        assert limiter.state_dict() == {"inserts": 3, "samples": 1}

    @pytest.mark.parametrize("make", [
        lambda: [0, 0],
        lambda: np.zeros(2, dtype=np.float64),
        lambda: np.zeros(2, dtype=np.int32),
        lambda: np.zeros(2, dtype=">i8"),
        lambda: np.zeros(3, dtype=np.int64),
        lambda: np.zeros((2, 1), dtype=np.int64),
        lambda: np.zeros(4, dtype=np.int64)[::2],
        lambda: np.array([-1, 0], dtype=np.int64),
        lambda: np.zeros(2, dtype=np.int64).copy().view(np.int64)[:0],
    ])
    def test_bind_refuses_bad_arrays_unchanged(self, make: Callable[[], Any]) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 2.0)
        limiter.record_insert(2)
        own = limiter.counts
        with pytest.raises(ConfigError, match="counts"):
            limiter.bind(make())
        assert limiter.counts is own and limiter.state_dict() == {"inserts": 2, "samples": 0}

    def test_bind_refuses_a_read_only_array(self) -> None:
        limiter = RateLimiter(1.0, 1, -1.0, 2.0)
        frozen = np.zeros(2, dtype=np.int64)
        frozen.flags.writeable = False
        with pytest.raises(ConfigError, match="counts"):
            limiter.bind(frozen)

    def test_pickle_and_copy_own_their_counts(self) -> None:
        limiter = SampleToInsertRatio(1.0, 2, 3.0)
        shared = np.zeros(2, dtype=np.int64)
        limiter.bind(shared)
        limiter.record_insert(3)
        for clone in (pickle.loads(pickle.dumps(limiter)), copy.deepcopy(limiter), copy.copy(limiter)):
            assert clone.config() == limiter.config() and clone.state_dict() == limiter.state_dict()
            clone.record_sample(1)
            assert clone.counts is not shared and limiter.samples == 0

    def test_reset_zeroes_the_counts(self) -> None:
        limiter = MinSize(1)
        limiter.record_insert(4)
        limiter.record_sample(2)
        limiter.reset()
        assert limiter.state_dict() == {"inserts": 0, "samples": 0}


# ---------------------------------------------------------------- the lock
class TestTableLock:
    def test_is_a_re_entrant_lock_with_the_protocol(self) -> None:
        lock = TableLock()
        assert isinstance(lock, TableLockProtocol)
        with lock, lock:
            pass
        got = Call(lambda: lock.acquire(timeout=0.5))
        got.finish()
        assert got.result is True  # released fully after the nested hold

    def test_returns_at_once_when_the_predicate_holds(self) -> None:
        lock = TableLock()
        with lock:
            lock.wait_until(lambda: True, timeout=0)
            lock.wait_until(lambda: True, timeout=None)

    def test_timeout_zero_checks_once_and_never_waits(self) -> None:
        lock = TableLock()
        calls = []

        def predicate() -> bool:
            calls.append(1)
            return False

        start = time.monotonic()
        with lock, pytest.raises(RateLimitTimeout, match="timeout=0 never waits"):
            lock.wait_until(predicate, timeout=0, describe="the test's flag")
        assert len(calls) == 1
        assert time.monotonic() - start < BLOCKED

    def test_waits_without_spinning_and_times_out(self) -> None:
        lock = TableLock()
        calls = []

        def predicate() -> bool:
            calls.append(1)
            return False

        start = time.monotonic()
        with lock, pytest.raises(RateLimitTimeout) as info:
            lock.wait_until(predicate, timeout=0.3, describe=lambda: "the test's flag")
        waited = time.monotonic() - start
        assert 0.3 <= waited < 0.3 + 2.0
        # nobody notified: checked on entry and once more at the deadline, never polled in between
        assert calls == [1, 1]
        assert "the test's flag" in str(info.value) and "timeout" in str(info.value)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, ReplayTablesError)

    def test_notify_wakes_a_waiter_whose_predicate_became_true(self) -> None:
        lock = TableLock()
        flag = {"set": False}

        def wait() -> None:
            with lock:
                lock.wait_until(lambda: flag["set"], timeout=None)

        waiter = Call(wait)
        assert not waiter.done.wait(BLOCKED)
        with lock:
            lock.notify()  # a change that does not make it true: the waiter goes back to sleep
        assert not waiter.done.wait(BLOCKED)
        with lock:
            flag["set"] = True
            lock.notify()
        waiter.finish()
        assert waiter.error is None

    def test_the_deadline_holds_under_repeated_notifies(self) -> None:
        lock = TableLock()
        stop = threading.Event()

        def nag() -> None:
            while not stop.is_set():
                with lock:
                    lock.notify()
                time.sleep(0.02)

        nagger = Call(nag)
        start = time.monotonic()
        try:
            with lock, pytest.raises(RateLimitTimeout):
                lock.wait_until(lambda: False, timeout=0.3)
        finally:
            stop.set()
            nagger.finish()
        assert 0.3 <= time.monotonic() - start < 0.3 + 2.0

    def test_waiting_releases_a_re_entrant_hold(self) -> None:
        lock = TableLock()
        flag = {"set": False}

        def wait() -> None:
            with lock, lock:
                lock.wait_until(lambda: flag["set"], timeout=5.0)

        waiter = Call(wait)
        assert not waiter.done.wait(BLOCKED)
        assert lock.acquire(timeout=RELEASED)  # the waiter holds nothing while it waits
        flag["set"] = True
        lock.notify()
        lock.release()
        waiter.finish()
        assert waiter.error is None

    def test_close_wakes_every_waiter_and_refuses_later_waits(self) -> None:
        lock = TableLock()

        def wait() -> None:
            with lock:
                lock.wait_until(lambda: False, timeout=None, describe="nothing")

        waiters = [Call(wait) for _ in range(4)]
        time.sleep(BLOCKED)
        assert not any(w.done.is_set() for w in waiters)
        lock.close()
        for waiter in waiters:
            waiter.finish()
            assert isinstance(waiter.error, BufferClosedError)
            assert "while this call waited" in str(waiter.error)
        assert lock.closed
        with lock, pytest.raises(BufferClosedError, match="before this call"):
            lock.wait_until(lambda: True, timeout=0)  # closed wins over a true predicate
        lock.close()  # closing twice is harmless

    @pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, "1", True, [1]])
    def test_bad_timeouts(self, timeout: Any) -> None:
        lock = TableLock()
        with lock, pytest.raises(ConfigError, match="timeout"):
            lock.wait_until(lambda: True, timeout=timeout)

    def test_check_timeout(self) -> None:
        assert check_timeout(None) is None and check_timeout(math.inf) is None
        assert check_timeout(0) == 0.0 and check_timeout(np.float32(0.5)) == 0.5

    def test_a_pickled_or_copied_lock_is_a_new_lock(self) -> None:
        lock = TableLock()
        with lock:
            for clone in (pickle.loads(pickle.dumps(lock)), copy.deepcopy(lock)):
                assert isinstance(clone, TableLock) and clone is not lock
                got = Call(lambda c=clone: c.acquire(timeout=0.5))
                got.finish()
                assert got.result is True  # not held, although the original is
        lock.close()
        assert copy.deepcopy(lock).closed


# ---------------------------------------------------------------- the admission gate, with real threads
class TestAdmission:
    def test_a_sampler_waits_for_an_insert(self, tables: Any) -> None:
        table = tables(MinSize(1))
        sampler = Call(table.sample)
        assert not sampler.done.wait(BLOCKED)
        table.add()
        sampler.finish()
        assert sampler.error is None and sampler.result == 1

    def test_a_blocked_insert_times_out_and_changes_nothing(self, tables: Any) -> None:
        table = tables(SampleToInsertRatio(1.0, 2, 1.0))  # band (1, 3)
        for _ in range(3):
            table.add(timeout=0)
        before = table.counts()
        start = time.monotonic()
        with pytest.raises(RateLimitTimeout) as info:
            table.add(timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 0.3 + 2.0
        assert table.counts() == before == (3, 0, 3)
        assert "insert of 1 item(s) with 3 stored" in str(info.value)
        table.sample(timeout=0)  # the limiter still works afterwards: diff 2 lets one insert in
        table.add(timeout=0)
        assert table.counts() == (4, 1, 4)

    def test_timeout_zero_never_waits(self, tables: Any) -> None:
        table = tables(MinSize(2))
        table.add(timeout=0)
        later = threading.Timer(0.1, table.add)  # would make the sample possible, were it waiting
        later.start()
        start = time.monotonic()
        with pytest.raises(RateLimitTimeout):
            table.sample(timeout=0)
        assert time.monotonic() - start < BLOCKED
        later.join()
        assert table.counts() == (2, 0, 2)
        assert table.sample(timeout=0) == 1

    def test_close_releases_every_waiter(self, tables: Any) -> None:
        table = tables(SampleToInsertRatio(1.0, 2, 1.0))
        for _ in range(3):
            table.add(timeout=0)
        while table.limiter.can_sample(1, table.size):
            table.sample(timeout=0)
        table.delete(3)  # empty: samples wait for min size; inserts are free again, so fill it back
        blocked_samplers = [Call(lambda: table.sample(timeout=None)) for _ in range(3)]
        time.sleep(BLOCKED)
        assert not any(c.done.is_set() for c in blocked_samplers)
        inserts, samples, size = table.counts()
        start = time.monotonic()
        table.lock.close()
        for call in blocked_samplers:
            call.finish()
            assert isinstance(call.error, BufferClosedError)
        assert time.monotonic() - start < RELEASED
        assert table.counts() == (inserts, samples, size)
        with pytest.raises(BufferClosedError):
            table.sample(timeout=0)
        with pytest.raises(BufferClosedError):
            table.add(timeout=0)  # allowed by the limiter, but the buffer is closed

    def test_close_releases_blocked_inserters(self, tables: Any) -> None:
        table = tables(SampleToInsertRatio(1.0, 1, 1.0))  # band (0, 2)
        table.add(timeout=0)
        table.add(timeout=0)
        inserters = [Call(lambda: table.add(timeout=30.0)) for _ in range(2)]
        time.sleep(BLOCKED)
        assert not any(c.done.is_set() for c in inserters)
        table.lock.close()
        for call in inserters:
            call.finish()
            assert isinstance(call.error, BufferClosedError)
        assert table.counts() == (2, 0, 2)

    def test_a_batch_waits_until_all_of_it_is_allowed(self, tables: Any) -> None:
        table = tables(SampleToInsertRatio(1.0, 1, 3.0))  # band (-2, 4)
        table.add(timeout=0)
        sampler = Call(lambda: table.sample(4))  # needs inserts - samples - 4 >= -2
        assert not sampler.done.wait(BLOCKED)
        table.add()
        sampler.finish()
        assert sampler.error is None and table.counts() == (2, 4, 2)

    def test_no_limiter_admits_everything(self, tables: Any) -> None:
        table = tables(None)
        assert table.sample(5, timeout=0) == 5
        table.add(3, timeout=0)

    def test_bad_arguments_are_refused_even_when_admitted(self, tables: Any) -> None:
        table = tables(MinSize(1))
        with pytest.raises(ConfigError, match="timeout"):
            table.add(timeout=-1)
        with pytest.raises(ConfigError, match="k"):
            table.add(0)
        assert table.counts() == (0, 0, 0)

    def test_many_threads_keep_the_ratio(self, tables: Any) -> None:
        """Two inserters and two samplers at once: every admitted change met the SPEC's
        conditions at the moment it happened (the fixture checks ``violations``)."""
        table = tables(SampleToInsertRatio(2.0, 4, 3.0), capacity=16)
        n_inserts = 150

        def insert() -> None:
            for _ in range(n_inserts):
                table.add(timeout=10.0)

        def sample() -> None:
            while True:
                try:
                    table.sample(2, timeout=10.0)
                except BufferClosedError:
                    return

        inserters = [Call(insert) for _ in range(2)]
        samplers = [Call(sample) for _ in range(2)]
        for call in inserters:
            assert call.done.wait(30.0)
            assert call.error is None
        # let the samplers take what the ratio still allows, then release them
        deadline = time.monotonic() + 10.0
        while table.limiter.can_sample(2, table.size) and time.monotonic() < deadline:
            time.sleep(0.01)
        table.lock.close()
        for call in samplers:
            call.finish()
        inserts, samples, size = table.counts()
        assert inserts == 2 * n_inserts and size == 16
        # band (5, 11): samples never take the diff below 5, and the samplers stopped
        # only when a sample of 2 was no longer allowed, i.e. diff - 2 < 5
        diff = inserts * 2.0 - samples
        assert 5.0 <= diff < 7.0
        assert not table.violations


# ---------------------------------------------------------------- property: the limiter is the SPEC's text
def spec_config_ok(spi: Fraction, m: int, lo: Fraction, hi: Fraction) -> bool:
    """SPEC 6.2's validation, written out: spi > 0, m >= 1, a band at least 2 * max(1, spi) wide,
    min_diff <= spi * m, and max_diff >= spi * m (Reverb's warning, an error here)."""
    return spi > 0 and m >= 1 and hi - lo >= 2 * max(1, spi) and lo <= spi * m <= hi


class SpecModel:
    """SPEC 6.2's counting and conditions, in exact arithmetic."""

    def __init__(self, spi: Fraction, m: int, lo: Fraction, hi: Fraction) -> None:
        self.spi, self.m, self.lo, self.hi = spi, m, lo, hi
        self.inserts = self.samples = self.size = 0

    def can_sample(self, k: int) -> bool:
        return self.size >= self.m and self.inserts * self.spi - self.samples - k >= self.lo

    def can_insert(self, k: int) -> bool:
        return self.size + k <= self.m or (self.inserts + k) * self.spi - self.samples <= self.hi


eighths = st.integers(-400, 400).map(lambda n: Fraction(n, 8))  # dyadic: exact in float64 too


@settings(max_examples=300, deadline=None)
@given(spi=eighths, m=st.integers(-1, 12), lo=eighths, hi=eighths)
def test_validation_is_the_spec_text(spi: Fraction, m: int, lo: Fraction, hi: Fraction) -> None:
    if spec_config_ok(spi, m, lo, hi):
        RateLimiter(float(spi), m, float(lo), float(hi))
    else:
        with pytest.raises(ConfigError):
            RateLimiter(float(spi), m, float(lo), float(hi))


@st.composite
def valid_configs(draw: Any) -> tuple[Fraction, int, Fraction, Fraction]:
    spi = Fraction(draw(st.integers(1, 40)), 8)
    m = draw(st.integers(1, 10))
    below = Fraction(draw(st.integers(0, 120)), 8)
    above = Fraction(draw(st.integers(0, 120)), 8)
    short = 2 * max(1, spi) - (below + above)
    if short > 0:
        above += short
    return spi, m, spi * m - below, spi * m + above


operations = st.lists(st.tuples(st.sampled_from(["insert", "sample", "delete"]), st.integers(1, 6)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(config=valid_configs(), extra_capacity=st.integers(0, 8), ops=operations)
def test_decisions_are_the_spec_text(config: tuple[Fraction, int, Fraction, Fraction], extra_capacity: int,
                                     ops: list[tuple[str, int]]) -> None:
    spi, m, lo, hi = config
    assert spec_config_ok(spi, m, lo, hi)
    limiter = RateLimiter(float(spi), m, float(lo), float(hi))
    model = SpecModel(spi, m, lo, hi)
    capacity = m + extra_capacity
    for op, k in ops:
        for probe in (1, 2, 5):
            assert limiter.can_insert(probe, model.size) == model.can_insert(probe)
            assert limiter.can_sample(probe, model.size) == model.can_sample(probe)
        if op == "insert" and model.can_insert(k):
            limiter.record_insert(k)
            model.inserts += k
            model.size = min(model.size + k, capacity)  # eviction: size drops, counts do not
        elif op == "sample" and model.can_sample(k):
            limiter.record_sample(k)
            model.samples += k
        elif op == "delete":
            model.size -= min(k, model.size)
    assert limiter.state_dict() == {"inserts": model.inserts, "samples": model.samples}


# ---------------------------------------------------------------- the docs page
def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/rate-limiting.md: its Python blocks run in order, in one namespace, as written."""
    page = Path(__file__).resolve().parents[1] / "docs" / "rate-limiting.md"
    code = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(code) >= 3
    namespace: dict[str, Any] = {}
    for i, block in enumerate(code):
        exec(compile(block, f"docs/rate-limiting.md block {i + 1}", "exec"), namespace)
    assert "rate_limiter.inserts: got -1" in capsys.readouterr().out
