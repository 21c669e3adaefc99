"""Mass: what probabilities are relative to, and how shards' masses combine."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import Transition, items
from ReplayTables.engine.mass import EMPTY_MASS, Mass, combine_masses
from ReplayTables.engine.samplers import PrioritizedSampler
from ReplayTables.engine.table import Table
from ReplayTables.errors import ConfigError, ReplayTablesError


def test_min_probability_is_the_formula() -> None:
    m = Mass(10, 50.0, 2.0, 0.1)
    assert m.min_probability() == pytest.approx(0.9 * 2.0 / 50.0 + 0.1 / 10)


def test_min_probability_edge_cases() -> None:
    assert Mass(4, 4.0, 1.0, 1.0).min_probability() == 0.25  # uniform
    assert Mass(4, 0.0, 0.0, 0.3).min_probability() == 0.25  # all priorities 0: drawn uniformly
    assert EMPTY_MASS.min_probability() == 0.0


def test_uniform_table_reports_size_as_total() -> None:
    t = Table(20, Transition, rng=0)
    assert t.mass() == EMPTY_MASS
    t.add_batch(items(range(7)))
    assert t.mass() == Mass(7, 7.0, 1.0, 1.0)


def test_prioritized_table_reports_its_tree() -> None:
    t = Table(20, Transition, sampler=PrioritizedSampler(20, priority_exponent=1.0, uniform_probability=0.2), rng=0)
    t.add_batch(items(range(4)), priorities=[1.0, 2.0, 3.0, 4.0])
    assert t.mass() == Mass(4, 10.0, 1.0, 0.2)
    t.add_batch(items(range(4, 5)), priorities=[0.0])  # a zero priority can be drawn by the uniform part
    m = t.mass()
    assert (m.size, m.priority_total, m.q_min) == (5, 10.0, 0.0)
    assert m.min_probability() == pytest.approx(0.2 / 5)


def test_zero_priority_with_no_uniform_part_is_left_out_of_q_min() -> None:
    t = Table(20, Transition, sampler=PrioritizedSampler(20, priority_exponent=1.0, uniform_probability=0.0), rng=0)
    t.add_batch(items(range(3)), priorities=[0.0, 2.0, 4.0])
    assert t.mass().q_min == 2.0  # the zero item is never drawn, so it does not set the largest weight


def test_combine_sums_sizes_and_totals_and_takes_the_smallest_q_min() -> None:
    parts = [Mass(3, 6.0, 1.5, 0.1), Mass(5, 20.0, 0.5, 0.1), EMPTY_MASS]
    assert combine_masses(parts) == Mass(8, 26.0, 0.5, 0.1)
    assert combine_masses([]) == EMPTY_MASS
    # negative control: the global minimum probability is not any one part's
    g = combine_masses(parts)
    assert all(g.min_probability() != p.min_probability() for p in parts[:2])


def test_combine_refuses_mixed_uniform_parts() -> None:
    with pytest.raises(ConfigError, match="uniform_probability") as e:
        combine_masses([Mass(3, 6.0, 1.5, 0.1), Mass(5, 20.0, 0.5, 0.2)])
    assert isinstance(e.value, ReplayTablesError)


def test_combined_mass_of_tables_equals_the_mass_of_one_table_with_all_items() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.1, 5.0, 40)

    def make(n: int) -> Table:
        return Table(n, Transition, sampler=PrioritizedSampler(n, priority_exponent=0.7, uniform_probability=0.01),
                     rng=0)

    whole = make(40)
    whole.add_batch(items(range(40)), priorities=p)
    a, b = make(25), make(15)
    a.add_batch(items(range(25)), priorities=p[:25])
    b.add_batch(items(range(25, 40)), priorities=p[25:])
    g, w = combine_masses([a.mass(), b.mass()]), whole.mass()
    assert (g.size, g.q_min, g.uniform_probability) == (w.size, w.q_min, w.uniform_probability)
    assert g.priority_total == pytest.approx(w.priority_total, rel=1e-12)
