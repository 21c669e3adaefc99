"""Sampling distributions against their exact values, with fixed seeds.

Tolerances: every chi-square goodness-of-fit test must give p > 1e-3 (seeds are
fixed, so a pass is deterministic; a correct sampler fails a given seed with
probability 1e-3). Expected counts are at least 20 per bin. Probabilities
reported in a batch must equal the exact ones to 1e-12 relative, and importance
weights must equal Schaul et al.'s formula to 1e-6 relative (they do to ~1e-15).
Expected distributions come from :mod:`reference_model`, fed the same calls.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats

from conftest import Transition, item, items
from reference_model import PerRules, ReferenceModel
from ReplayTables.engine.table import Table
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

P_MIN = 1e-3


def chi_square(ids: np.ndarray, probs: dict[int, float]) -> float:
    """p-value of the sampled ids against the exact probabilities (ids with P = 0 must not occur)."""
    keys = [i for i in probs if probs[i] > 0]
    assert set(np.unique(ids).tolist()) <= set(keys), "sampled an item with probability 0 or not stored"
    index = {k: j for j, k in enumerate(keys)}
    observed = np.bincount([index[i] for i in ids.tolist()], minlength=len(keys))
    p = np.array([probs[k] for k in keys])
    expected = ids.size * p / p.sum()
    assert expected.min() >= 20, "test design: too few expected draws per bin"
    return float(stats.chisquare(observed, expected).pvalue)


def draw(buffer: Any, total: int, n: int = 4096) -> tuple[np.ndarray, list[Any]]:
    ids, batches = [], []
    for _ in range(total // n):
        b = buffer.sample(n)
        ids.append(b.ids)
        batches.append(b)
    return np.concatenate(ids), batches


# ---------------------------------------------------------------- uniform
def test_uniform_is_uniform_over_live_items() -> None:
    b = ReplayBuffer(200, Transition, np.random.default_rng(10))
    ids = b.add_batch(items(range(150)))
    b.delete(ids[::7])  # holes: the dense live list is in use
    b.add_batch(items(range(150, 260)))  # wraps: some holes refilled, old items evicted
    live = [int(i) for i in b.get(_live_ids(b)).ids]
    assert len(live) == len(b)
    sampled, _ = draw(b, 4096 * 30)
    assert chi_square(sampled, {i: 1 / len(live) for i in live}) > P_MIN


def _live_ids(b: Any) -> np.ndarray:
    table = b._table  # test helper only: the ids of every stored item
    return table.directory.slot_id[table.directory.live_slots()]


# ---------------------------------------------------------------- prioritized
def build(config: PERConfig, calls: Callable[[Any, ReferenceModel], None], capacity: int = 64,
          seed: int = 0) -> tuple[PrioritizedReplay, ReferenceModel]:
    b = PrioritizedReplay(capacity, Transition, np.random.default_rng(seed), config)
    m = ReferenceModel(capacity, PerRules(config.new_priority_mode, config.priority_exponent,
                                          config.uniform_probability, config.max_decay))
    calls(b, m)
    live = _live_ids(b)
    np.testing.assert_allclose(b.priorities(live), [m.q[int(i)] for i in live], rtol=1e-12)
    return b, m


def add_batch(b: Any, m: ReferenceModel, ks: range, priorities: Any = None) -> np.ndarray:
    ids = b.add_batch(items(ks), priorities)
    m.add_batch(ids.tolist(), list(ks), None if priorities is None else list(priorities))
    return ids


def add(b: Any, m: ReferenceModel, k: int, priority: float | None = None) -> int:
    i = b.add(item(k), priority=priority)
    m.add(i, k, priority)
    return int(i)


def update(b: Any, m: ReferenceModel, ids: Any, priorities: Any) -> None:
    b.update_priorities(ids, priorities)
    m.update([int(i) for i in ids], list(priorities))


def scenario_exponent(b: Any, m: ReferenceModel) -> None:
    rng = np.random.default_rng(1)
    ids = add_batch(b, m, range(40))
    update(b, m, ids, rng.uniform(0.5, 20, size=40))


def scenario_max(b: Any, m: ReferenceModel) -> None:
    ids = add_batch(b, m, range(10), priorities=np.linspace(1, 30, 10))
    update(b, m, ids[:3], [2.0, 3.0, 4.0])
    for k in range(10, 20):  # these get the running maximum
        add(b, m, k)


def scenario_mean(b: Any, m: ReferenceModel) -> None:
    add_batch(b, m, range(10), priorities=np.linspace(1, 30, 10))
    for k in range(10, 16):  # each gets the mean of what is stored before it
        add(b, m, k)
    add_batch(b, m, range(16, 24))


def scenario_given(b: Any, m: ReferenceModel) -> None:
    add_batch(b, m, range(20), priorities=np.arange(1.0, 21.0))
    for k in range(20, 30):
        add(b, m, k, priority=float(k % 7 + 1))


def scenario_decay(b: Any, m: ReferenceModel) -> None:
    ids = add_batch(b, m, range(10), priorities=np.full(10, 2.0))
    update(b, m, ids[:1], [400.0])  # an outlier
    for j in range(1, 8):  # the maximum decays back down
        update(b, m, ids[j:j + 1], [1.0])
    for k in range(10, 18):
        add(b, m, k)


def scenario_evict_delete(b: Any, m: ReferenceModel) -> None:
    ids = add_batch(b, m, range(30), priorities=np.linspace(1, 9, 30))
    b.delete(ids[5:10])
    m.delete([int(i) for i in ids[5:10]])
    add_batch(b, m, range(30, 50))  # capacity 32 below: wraps and evicts


CASES = [
    ("exponent", PERConfig(priority_exponent=0.6, uniform_probability=0.0), scenario_exponent, 64),
    ("uniform-mixture", PERConfig(priority_exponent=0.6, uniform_probability=0.3), scenario_exponent, 64),
    ("max", PERConfig(uniform_probability=0.05), scenario_max, 64),
    ("mean", PERConfig(new_priority_mode="mean", priority_exponent=1.0, uniform_probability=0.0), scenario_mean,
     64),
    ("given", PERConfig(new_priority_mode="given", priority_exponent=0.8, uniform_probability=0.1),
     scenario_given, 64),
    ("max-decay", PERConfig(max_decay=0.5, priority_exponent=1.0, uniform_probability=0.0), scenario_decay, 64),
    ("evict-delete", PERConfig(priority_exponent=1.0, uniform_probability=0.2), scenario_evict_delete, 32),
    ("stratified", PERConfig(priority_exponent=0.6, uniform_probability=0.2, stratified=True), scenario_exponent,
     64),
]


@pytest.mark.parametrize(("name", "config", "scenario", "capacity"), CASES, ids=[c[0] for c in CASES])
def test_prioritized_distribution(name: str, config: PERConfig, scenario: Any, capacity: int) -> None:
    b, m = build(config, scenario, capacity)
    exact = m.probabilities()
    sampled, batches = draw(b, 4096 * 40, n=256)
    assert chi_square(sampled, exact) > P_MIN
    for batch in batches[:20]:
        np.testing.assert_allclose(batch.probabilities, [exact[int(i)] for i in batch.ids], rtol=1e-12)


def test_prioritized_distribution_on_a_deep_tree() -> None:
    """5,000 items: three internal levels of the wide tree."""
    rng = np.random.default_rng(3)
    b = PrioritizedReplay(5000, Transition, np.random.default_rng(4), PERConfig(uniform_probability=0.01))
    ids = b.add_batch(items(range(5000)), priorities=rng.uniform(1, 4, 5000))
    q = b.priorities(ids)
    p = 0.99 * q / q.sum() + 0.01 / 5000
    sampled, _ = draw(b, 4096 * 400)
    assert chi_square(sampled, dict(zip(ids.tolist(), p))) > P_MIN


def test_stratified_draws_one_per_stratum() -> None:
    """Four equal priorities, no uniform part, n = 4: stratum j is exactly item j."""
    b = PrioritizedReplay(4, Transition, np.random.default_rng(0),
                          PERConfig(uniform_probability=0.0, stratified=True))
    ids = b.add_batch(items(range(4)))
    for _ in range(200):
        assert sorted(b.sample(4).ids.tolist()) == sorted(ids.tolist())
    unstratified = PrioritizedReplay(4, Transition, np.random.default_rng(0), PERConfig(uniform_probability=0.0))
    unstratified.add_batch(items(range(4)))
    assert any(len(set(unstratified.sample(4).ids.tolist())) < 4 for _ in range(20))


# ---------------------------------------------------------------- reservoir
@pytest.mark.parametrize("chunk", [1, 7])
def test_reservoir_inclusion_is_equal_over_the_whole_history(chunk: int) -> None:
    """Capacity 10, 100 offered items, many independent runs: each item is kept
    with probability 10/100 whatever its position in the stream."""
    capacity, stream, runs = 10, 100, 2000 if chunk > 1 else 1500
    rng = np.random.default_rng(100 + chunk)
    counts = np.zeros(stream, dtype=np.int64)
    for _ in range(runs):
        t = Table(capacity, Transition, writer="reservoir", rng=rng)
        for start in range(0, stream, chunk):
            ks = range(start, min(stream, start + chunk))
            if chunk == 1:
                t.add(item(start))
            else:
                t.add_batch(items(ks))
        assert t.size == capacity
        kept = t.get(t.directory.slot_id[t.directory.live_slots()]).fields[1]
        counts[kept] += 1
    assert counts.sum() == runs * capacity
    assert stats.chisquare(counts).pvalue > P_MIN
    # early and late halves of the history are kept equally often (within 5 sigma)
    half = runs * capacity / 2
    assert abs(counts[:50].sum() - half) < 5 * np.sqrt(runs * capacity * 0.25)


# ---------------------------------------------------------------- importance weights
@pytest.mark.parametrize("u", [0.0, 1e-3, 0.3])
@pytest.mark.parametrize("beta", [0.4, 1.0, 0.7])
@pytest.mark.parametrize("with_zeros", [False, True])
def test_importance_weights_follow_schaul(u: float, beta: float, with_zeros: bool) -> None:
    rng = np.random.default_rng(7)
    b = PrioritizedReplay(300, Transition, np.random.default_rng(8),
                          PERConfig(uniform_probability=u, beta=beta, priority_exponent=0.6))
    p = rng.uniform(0.01, 50, 257)
    if with_zeros:
        p[::10] = 0.0
    ids = b.add_batch(items(range(257)), priorities=p)
    n = len(b)
    q = p**0.6
    probs = (1 - u) * q / q.sum() + u / n
    with np.errstate(divide="ignore"):  # P = 0 items get an infinite weight; never sampled
        w = (n * probs) ** -beta
    w_max = (n * probs[probs > 0].min()) ** -beta  # the largest weight any stored item could get
    expected = dict(zip(ids.tolist(), w / w_max))
    batch = b.sample(5000)
    np.testing.assert_allclose(batch.weights, [expected[i] for i in batch.ids.tolist()], rtol=1e-6)
    np.testing.assert_allclose(batch.probabilities, [dict(zip(ids.tolist(), probs))[i] for i in batch.ids.tolist()],
                               rtol=1e-12)
    assert batch.weights.max() <= 1.0 + 1e-12
    got = b.get(ids[probs > 0])
    np.testing.assert_allclose(got.weights, (w / w_max)[probs > 0], rtol=1e-6)


def test_weights_follow_the_beta_schedule() -> None:
    b = PrioritizedReplay(50, Transition, np.random.default_rng(9),
                          PERConfig(uniform_probability=0.0, priority_exponent=1.0, beta=0.2, beta_steps=5))
    p = np.arange(1.0, 21.0)
    ids = b.add_batch(items(range(20)), priorities=p)
    probs = dict(zip(ids.tolist(), p / p.sum()))
    for step in range(8):
        beta = 0.2 + 0.8 * min(1.0, step / 5)
        assert b.beta == pytest.approx(beta)
        batch = b.sample(64)
        expected = [(probs[i] / (1 / p.sum())) ** -beta for i in batch.ids.tolist()]
        np.testing.assert_allclose(batch.weights, expected, rtol=1e-6)
