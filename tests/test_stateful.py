"""Hypothesis state machines: random sequences of add, add_batch, sample, get,
update_priorities, delete and save/load against :mod:`reference_model`.

After every step the buffer and the model must agree on contents (every live id
``get``s back its item), size, counters (``stats()``) and, for prioritized
replay, stored priorities; every sample must contain only live ids, never an
item whose sampling probability is 0, with probabilities and importance weights
equal to the model's. Capacities are small (1..6) so eviction and ring wrap-around
happen all the time. The structure is a NamedTuple or a dataclass.

Step counts: each test runs its machine with fixed settings and asserts how
many steps actually ran (``ReplayBuffer`` >= 4,000, ``PrioritizedReplay`` >= 7,000;
so >= 11,000 steps per CI run; about 14,000 ran when written, derandomized so every run is the same).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import ReplayTables
from conftest import DTransition, Transition, check_fields, item, items
from reference_model import PerRules, ReferenceModel
from ReplayTables.errors import EmptyBufferError, PriorityError, StaleIdError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

PRIORITIES = st.one_of(st.sampled_from([0.0, 1.0, 4.0]), st.floats(1e-3, 100.0, allow_nan=False))


class BufferMachine(RuleBasedStateMachine):
    """Drives one buffer and one model through the same calls."""

    prioritized = False
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="rt-stateful-", dir=_tmp_root())
        self.saves = 0
        self.next_k = 0
        self.sample_calls = 0
        self.buffer: Any = None
        self.model: ReferenceModel | None = None
        self.config: PERConfig | None = None
        self.structure: type = Transition

    def teardown(self) -> None:
        self._tmp.cleanup()

    def _count(self) -> None:
        type(self).steps += 1

    # ------------------------------------------------------------ setup
    @initialize(capacity=st.integers(1, 6), seed=st.integers(0, 2**32 - 1),
                mode=st.sampled_from(["max", "mean", "given"]),
                uniform=st.sampled_from([0.0, 1e-3, 0.5, 1.0]),
                exponent=st.sampled_from([0.5, 1.0, 0.7]),
                decay=st.sampled_from([1.0, 0.9]),
                stratified=st.booleans(), beta_steps=st.sampled_from([None, 3]),
                structure=st.sampled_from([Transition, DTransition]))
    def setup(self, capacity: int, seed: int, mode: str, uniform: float, exponent: float, decay: float,
              stratified: bool, beta_steps: int | None, structure: type) -> None:
        rng = np.random.default_rng(seed)
        self.structure = structure
        if self.prioritized:
            self.config = PERConfig(new_priority_mode=mode, uniform_probability=uniform,
                                    priority_exponent=exponent, max_decay=decay, stratified=stratified,
                                    beta_steps=beta_steps)
            self.buffer = PrioritizedReplay(capacity, structure, rng, self.config)
            self.model = ReferenceModel(capacity, PerRules(mode, exponent, uniform, decay))
        else:
            self.buffer = ReplayBuffer(capacity, structure, rng)
            self.model = ReferenceModel(capacity)

    @property
    def m(self) -> ReferenceModel:
        assert self.model is not None
        return self.model

    def _beta(self) -> float:
        c = self.config
        assert c is not None
        if c.beta_steps is None:
            return c.beta
        return c.beta + (c.beta_final - c.beta) * min(1.0, self.sample_calls / c.beta_steps)

    def _given(self) -> bool:
        return self.config is not None and self.config.new_priority_mode == "given"

    # ------------------------------------------------------------ rules
    @rule(priority=st.one_of(st.none(), PRIORITIES))
    def add(self, priority: float | None) -> None:
        self._count()
        k = self.next_k
        one = item(k, self.structure)
        if self.prioritized and priority is None and self._given():
            with pytest.raises(PriorityError, match="priority"):
                self.buffer.add(one)
            return
        self.next_k += 1
        if self.prioritized:
            i = self.buffer.add(one, priority=priority)
        else:
            i = self.buffer.add(one)
        assert isinstance(i, int)
        self.m.add(i, k, priority)

    @rule(m=st.integers(0, 8), data=st.data())
    def add_batch(self, m: int, data: st.DataObject) -> None:
        self._count()
        ks = list(range(self.next_k, self.next_k + m))
        priorities = None
        if self.prioritized:
            given = data.draw(st.booleans(), label="with priorities")
            if given:
                priorities = data.draw(st.lists(PRIORITIES, min_size=m, max_size=m), label="priorities")
            elif self._given():  # even an empty batch: 'given' needs priorities
                with pytest.raises(PriorityError):
                    self.buffer.add_batch(items(ks, self.structure))
                return
            ids = self.buffer.add_batch(items(ks, self.structure), priorities)
        else:
            ids = self.buffer.add_batch(items(ks, self.structure))
        self.next_k += m
        assert ids.dtype == np.int64 and ids.shape == (m,)
        self.m.add_batch(ids.tolist(), ks, priorities)

    @rule(n=st.integers(0, 12))
    def sample(self, n: int) -> None:
        self._count()
        if len(self.m) == 0:
            with pytest.raises(EmptyBufferError):
                self.buffer.sample(n if n else 1)
            return
        beta = self._beta() if self.prioritized else None
        batch = self.buffer.sample(n)
        self.sample_calls += 1
        self.m.sampled(n)
        ids = batch.ids.tolist()
        assert batch.ids.dtype == np.int64 and len(ids) == n
        for i in ids:
            assert self.m.can_sample(i), f"sampled id {i} is not live or has probability 0"
        check_fields(batch, [self.m.items[i] for i in ids])
        if beta is not None:
            probs = self.m.probabilities()
            np.testing.assert_allclose(batch.probabilities, [probs[i] for i in ids], rtol=1e-9)
            np.testing.assert_allclose(batch.weights, self.m.weights(ids, beta), rtol=1e-6)
        else:
            np.testing.assert_array_equal(batch.weights, np.ones(n))

    @precondition(lambda self: len(self.m.issued) > 0)
    @rule(data=st.data())
    def update_priorities(self, data: st.DataObject) -> None:
        self._count()
        if not self.prioritized:
            return
        issued = sorted(self.m.issued)
        ids = data.draw(st.lists(st.sampled_from(issued), min_size=0, max_size=8), label="ids")
        priorities = data.draw(st.lists(PRIORITIES, min_size=len(ids), max_size=len(ids)), label="p")
        applied = self.buffer.update_priorities(np.array(ids, dtype=np.int64), np.array(priorities))
        assert applied == self.m.update(ids, priorities)

    @precondition(lambda self: len(self.m) > 0)
    @rule(data=st.data(), with_stale=st.booleans())
    def delete(self, data: st.DataObject, with_stale: bool) -> None:
        self._count()
        live = self.m.live_ids()
        ids = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=4), label="ids")
        stale = sorted(self.m.issued - set(live))
        if with_stale and stale:
            bad = data.draw(st.sampled_from(stale), label="stale")
            with pytest.raises(StaleIdError, match=str(bad)):
                self.buffer.delete(np.array([*ids, bad], dtype=np.int64))
            return  # the invariants check that nothing was deleted
        self.buffer.delete(np.array(ids, dtype=np.int64))
        self.m.delete(ids)

    @precondition(lambda self: len(self.m.issued) > 0)
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        self._count()
        issued = sorted(self.m.issued)
        ids = data.draw(st.lists(st.sampled_from(issued), min_size=0, max_size=6), label="ids")
        if all(i in self.m.items for i in ids):
            batch = self.buffer.get(np.array(ids, dtype=np.int64))
            check_fields(batch, [self.m.items[i] for i in ids])
            np.testing.assert_array_equal(batch.ids, ids)
            if self.prioritized and ids:
                probs = self.m.probabilities()
                np.testing.assert_allclose(batch.probabilities, [probs[i] for i in ids], rtol=1e-9)
                positive = [j for j, i in enumerate(ids) if probs[i] > 0]
                np.testing.assert_allclose(batch.weights[positive],
                                           self.m.weights([ids[j] for j in positive], self._beta()), rtol=1e-6)
        else:
            with pytest.raises(StaleIdError):
                self.buffer.get(np.array(ids, dtype=np.int64))

    @rule()
    def save_and_load(self) -> None:
        self._count()
        path = Path(self._tmp.name) / "ckpt"
        self.buffer.save(path)
        loaded = ReplayTables.load(path)
        assert type(loaded) is type(self.buffer)
        assert loaded.structure is self.structure
        self.buffer = loaded

    # ------------------------------------------------------------ invariants
    @invariant()
    def agrees_with_model(self) -> None:
        if self.buffer is None:
            return
        stats = self.buffer.stats()
        expected = self.m.stats()
        assert {k: stats[k] for k in expected} == expected
        assert len(self.buffer) == self.buffer.size() == len(self.m)
        live = self.m.live_ids()
        batch = self.buffer.get(np.array(live, dtype=np.int64))
        check_fields(batch, [self.m.items[i] for i in live])
        if self.prioritized:
            got = self.buffer.priorities(np.array(live, dtype=np.int64))
            np.testing.assert_allclose(got, [self.m.q[i] for i in live], rtol=1e-9)
            np.testing.assert_allclose(self.buffer.max_priority, self.m.max_q, rtol=1e-12)


class PrioritizedMachine(BufferMachine):
    prioritized = True
    steps = 0


def _tmp_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_replay_buffer_against_model() -> None:
    BufferMachine.steps = 0
    run_state_machine_as_test(BufferMachine, settings=settings(max_examples=120, stateful_step_count=50,
                                                               **SETTINGS))
    assert BufferMachine.steps >= 4000, BufferMachine.steps


def test_prioritized_replay_against_model() -> None:
    PrioritizedMachine.steps = 0
    run_state_machine_as_test(PrioritizedMachine, settings=settings(max_examples=220, stateful_step_count=50,
                                                                    **SETTINGS))
    assert PrioritizedMachine.steps >= 7000, PrioritizedMachine.steps
