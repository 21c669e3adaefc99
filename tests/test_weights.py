"""Importance weights: one function, ``(P / P_min) ** -beta``, always finite and in (0, 1].

Exact values are checked against Schaul et al.'s normalised formula to 1e-12
relative where that formula is itself finite; at the extremes of the accepted
priority range (stored priorities 2**-400 .. 2**400) the naive formula gives 0,
inf or NaN (the negative controls assert that it does), and ours stays in (0, 1].
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Transition, items
from ReplayTables.engine.mass import Mass
from ReplayTables.engine.weights import MIN_WEIGHT, importance_weights
from ReplayTables.PER import PERConfig, PrioritizedReplay


def test_weights_equal_schauls_normalised_formula() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 1.0, 50)
    p /= p.sum()
    n, beta = p.size, 0.6
    expected = (n * p) ** -beta / ((n * p.min()) ** -beta)
    np.testing.assert_allclose(importance_weights(p, float(p.min()), beta), expected, rtol=1e-12)


def test_beta_zero_and_an_empty_mass_give_ones() -> None:
    p = np.array([0.1, 0.2, 0.7])
    np.testing.assert_array_equal(importance_weights(p, 0.1, 0.0), np.ones(3))
    np.testing.assert_array_equal(importance_weights(p, 0.0, 0.5), np.ones(3))


def test_a_probability_below_the_minimum_gives_one_not_more() -> None:
    w = importance_weights(np.array([0.0, 0.05, 0.1]), 0.1, 2.0)
    np.testing.assert_array_equal(w, [1.0, 1.0, 1.0])


def test_underflow_gives_the_smallest_weight_not_zero() -> None:
    p = np.array([1.0, 2.0**-800])
    ratio_w = importance_weights(p, 2.0**-800, 3.0)
    assert ratio_w[0] == MIN_WEIGHT and ratio_w[1] == 1.0
    # negative control: the naive (N P)^-beta / max formula underflows to 0 here
    with np.errstate(all="ignore"):
        naive = (2 * p) ** -3.0 / ((2 * p.min()) ** -3.0)
    assert naive[0] == 0.0 or not np.isfinite(naive).all()


@settings(max_examples=200, deadline=None)
@given(exponents=st.lists(st.floats(-400.0, 400.0), min_size=1, max_size=40),
       u=st.sampled_from([0.0, 1e-3, 0.5]), beta=st.floats(0.0, 5.0))
def test_weights_are_finite_and_in_unit_interval_for_every_accepted_priority(exponents: list[float], u: float,
                                                                           beta: float) -> None:
    q = np.exp2(np.array(exponents))  # stored priorities over the whole accepted range
    mass = Mass(q.size, float(q.sum()), float(q.min()), u)
    probs = (1 - u) * q / mass.priority_total + u / mass.size
    w = importance_weights(probs, mass.min_probability(), beta)
    assert np.isfinite(w).all()
    assert (w > 0).all() and (w <= 1.0).all()


def test_per_buffer_at_the_extremes_of_the_priority_range() -> None:
    b = PrioritizedReplay(64, Transition, np.random.default_rng(0),
                          PERConfig(priority_exponent=1.0, uniform_probability=0.0, beta=4.0))
    p = np.array([2.0**-399, 1.0, 2.0**399] * 10)
    ids = b.add_batch(items(range(30)), priorities=p)
    batch = b.sample(2000)
    assert np.isfinite(batch.weights).all() and (batch.weights > 0).all() and (batch.weights <= 1).all()
    got = b.get(ids)
    assert np.isfinite(got.weights).all() and (got.weights > 0).all() and (got.weights <= 1).all()
    assert got.weights[0] == pytest.approx(1.0)  # the least likely item has the largest weight
