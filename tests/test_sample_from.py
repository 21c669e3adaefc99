"""Table.sample_from: given points, the items they select, against given totals.

Tolerances as in test_statistics: chi-square p > 1e-3 with fixed seeds (expected
counts >= 20 per bin); probabilities equal the exact ones to 1e-12 relative. The
negative control feeds the same counts to the test against a wrong distribution
and requires it to fail.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from conftest import Transition, assert_equal_state, items
from ReplayTables.engine.draws import Draws, split_draws
from ReplayTables.engine.mass import Mass, combine_masses
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.table import Table
from ReplayTables.errors import ConfigError, EmptyBufferError

P_MIN = 1e-3


def prioritized_table(n: int, u: float, seed: int = 0) -> Table:
    return Table(n, Transition, sampler=PrioritizedSampler(n, priority_exponent=1.0, uniform_probability=u), rng=seed)


def counts_of(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    index = {int(k): j for j, k in enumerate(keys)}
    return np.bincount([index[int(i)] for i in ids], minlength=len(keys))


def test_prioritized_points_follow_priorities_and_uniform_points_follow_positions() -> None:
    t = prioritized_table(30, 0.25)
    p = np.arange(1.0, 21.0)
    ids = t.add_batch(items(range(20)), priorities=p)
    t.delete(ids[3:5])  # a dense live list with holes
    live = np.array([i for i in ids if i not in ids[3:5]])
    q = p[np.isin(ids, live)]
    rng = np.random.default_rng(5)
    n = 40_000
    # prioritized points alone: P(i) proportional to q
    s = t.sample_from(Draws(rng.random(n), np.empty(0)))
    pvalue = stats.chisquare(counts_of(s.ids, live), n * q / q.sum()).pvalue
    assert pvalue > P_MIN
    # negative control: the same counts against uniform probabilities fail
    assert stats.chisquare(counts_of(s.ids, live), np.full(live.size, n / live.size)).pvalue < P_MIN
    # uniform points alone: every live item equally likely
    s = t.sample_from(Draws(np.empty(0), rng.random(n)))
    assert stats.chisquare(counts_of(s.ids, live), np.full(live.size, n / live.size)).pvalue > P_MIN


def test_sample_distribution_is_the_exact_mixture() -> None:
    t = prioritized_table(40, 0.3, seed=11)
    p = np.random.default_rng(2).uniform(0.5, 10.0, 32)
    ids = t.add_batch(items(range(32)), priorities=p)
    exact = 0.7 * p / p.sum() + 0.3 / 32
    s = t.sample(60_000)
    assert stats.chisquare(counts_of(s.ids, ids), 60_000 * exact).pvalue > P_MIN
    np.testing.assert_allclose(s.probabilities, exact[s.ids], rtol=1e-12)
    wrong = 0.7 * p**0.9 / (p**0.9).sum() + 0.3 / 32  # negative control: a slightly different exponent
    assert stats.chisquare(counts_of(s.ids, ids), 60_000 * wrong).pvalue < P_MIN


def test_sample_is_split_draws_then_sample_from_in_draw_order() -> None:
    t = prioritized_table(64, 0.2, seed=3)
    t.add_batch(items(range(50)), priorities=np.arange(1.0, 51.0))
    state = t.rng.bit_generator.state
    s = t.sample(257, beta=0.5)
    t.rng.bit_generator.state = state
    draws, order = split_draws(t.rng, 257, 0.2)
    assert order is not None  # both kinds occur with this seed
    f = t.sample_from(draws, beta=0.5)  # prioritized items first, then uniform ones
    np.testing.assert_array_equal(s.ids[~order], f.ids[: draws.prioritized.size])
    np.testing.assert_array_equal(s.ids[order], f.ids[draws.prioritized.size:])
    np.testing.assert_array_equal(s.weights[~order], f.weights[: draws.prioritized.size])


def test_probabilities_and_weights_against_given_totals() -> None:
    """A shard samples against the global mass: P = (1-u) q / T + u / N with global T, N."""
    a, b = prioritized_table(20, 0.1), prioritized_table(20, 0.1)
    a.add_batch(items(range(10)), priorities=np.arange(1.0, 11.0))
    b.add_batch(items(range(15)), priorities=np.full(15, 0.5))
    g = combine_masses([a.mass(), b.mass()])
    assert g == Mass(25, 55.0 + 7.5, 0.5, 0.1)
    s = a.sample_from(Draws(np.linspace(0, 0.999, 50), np.empty(0)), beta=1.0, totals=g)
    expected_p = 0.9 * s.q / g.priority_total + 0.1 / g.size
    np.testing.assert_allclose(s.probabilities, expected_p, rtol=1e-12)
    np.testing.assert_allclose(s.weights, g.min_probability() / expected_p, rtol=1e-12)
    assert s.mass == g and s.size == 10
    # the table's own totals give other numbers (negative control)
    own = a.sample_from(Draws(np.linspace(0, 0.999, 50), np.empty(0)), beta=1.0)
    assert not np.allclose(own.probabilities, s.probabilities)


def test_uniform_table_sample_from() -> None:
    t = Table(10, Transition, rng=0)
    t.add_batch(items(range(8)))
    s = t.sample_from(Draws(np.array([0.0, 0.5]), np.array([0.99, 0.125])), beta=0.7)
    np.testing.assert_array_equal(s.ids, [0, 4, 7, 1])
    np.testing.assert_array_equal(s.fields[1], [0, 4, 7, 1])
    np.testing.assert_array_equal(s.probabilities, np.full(4, 1 / 8))
    np.testing.assert_array_equal(s.weights, np.ones(4))
    s = t.sample_from(Draws(np.array([0.5]), np.empty(0)), totals=Mass(32, 32.0, 1.0, 1.0))
    assert s.probabilities.tolist() == [1 / 32]


@pytest.mark.parametrize("bad", [np.array([1.0]), np.array([-0.1]), np.array([np.nan]), np.zeros((2, 2)), "x"])
def test_bad_points_are_refused_and_change_nothing(bad: object) -> None:
    t = prioritized_table(10, 0.1)
    t.add_batch(items(range(5)))
    before = copy.deepcopy(t.state_dict())
    with pytest.raises(ConfigError, match=r"draws\.prioritized"):
        t.sample_from(Draws(bad, np.empty(0)))  # type: ignore[arg-type]
    assert_equal_state(t.state_dict(), before)
    with pytest.raises(ConfigError, match="totals"):
        t.sample_from(Draws(np.array([0.5]), np.empty(0)), totals=(1, 2.0, 1.0, 0.0))  # type: ignore[arg-type]
    assert_equal_state(t.state_dict(), before)


def test_sample_from_an_empty_table_is_an_error() -> None:
    with pytest.raises(EmptyBufferError):
        prioritized_table(10, 0.1).sample_from(Draws(np.array([0.5]), np.empty(0)))


def test_segment_table_sample_from_reads_in_the_same_call() -> None:
    from ReplayTables.engine.segment_table import SegmentTable

    t = SegmentTable(20, sampler=PrioritizedSampler(20, priority_exponent=1.0, uniform_probability=0.0),
                     rng=np.random.default_rng(0))
    ids = t.add({"v": np.arange(6)}, [2, 2, 2], priorities=[1.0, 1.0, 2.0])
    g = Mass(6, 8.0, 1.0, 0.0)  # as if another shard held 3 more items of total 4
    s = t.sample_from(Draws(np.array([0.1, 0.9]), np.empty(0)), beta=1.0, totals=g, read=t.read)
    np.testing.assert_array_equal(s.ids, [ids[0], ids[2]])
    np.testing.assert_array_equal(s.data[0][0], [0, 1, 4, 5])  # the items' rows, read under the lock
    np.testing.assert_allclose(s.probabilities, [1 / 8, 2 / 8])
    np.testing.assert_allclose(s.weights, [1.0, 0.5])
    assert s.size == 3 and s.mass == g
