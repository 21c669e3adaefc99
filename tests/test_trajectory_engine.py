"""The front-end-agnostic engine pieces behind step streams: sequences and accumulators.

These are plain functions and one small index, meant to be reused by any front
end (the RLlib one included), so they are tested on their own against brute force.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ReplayTables.engine.layouts.nstep import nstep_targets, ready_range
from ReplayTables.engine.layouts.sequence_starts import (
    StartIndex,
    expand_ranges,
    new_anchors,
    window_mask,
    window_offsets,
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 63), max_size=10)), max_size=40))
def test_start_index_matches_a_set(ops):
    index, ref = StartIndex(64), set()
    for add, keys in ops:
        arr = np.array(keys, dtype=np.int64)
        if add:
            index.add(arr)
            ref |= set(keys)
        else:
            index.remove(arr)
            ref -= set(keys)
        assert len(index) == len(ref)
        assert set(index.keys().tolist()) == ref
        assert (index.where[index.members[: index.count]] == np.arange(index.count)).all()


def test_start_index_draws_uniformly():
    index = StartIndex(1000)
    index.add(np.arange(0, 1000, 10))
    index.remove(np.arange(0, 500, 10))
    draws = index.sample(np.random.default_rng(0), 50_000)
    assert set(np.unique(draws).tolist()) == set(range(500, 1000, 10))
    counts = np.bincount(draws // 10 - 50, minlength=50)
    # 50 keys, 1000 expected each; chi-square with 49 dof: 99.9th percentile is about 85
    chi2 = (((counts - 1000) ** 2) / 1000).sum()
    assert chi2 < 85


def test_expand_ranges():
    owner, values = expand_ranges(np.array([3, 5, 10]), np.array([5, 4, 11]))
    assert values.tolist() == [3, 4, 5, 10, 11]
    assert owner.tolist() == [0, 0, 0, 2, 2]
    owner, values = expand_ranges(np.array([1]), np.array([0]))
    assert values.size == 0 and owner.size == 0


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 6), burn_in=st.integers(0, 4), pad=st.booleans(), L=st.integers(1, 20),
       n=st.integers(1, 4), ends=st.booleans())
def test_anchors_and_ready_ranges_match_brute_force(length, burn_in, pad, L, n, ends):
    """Grow one episode (first step 100) step by step; the union of anchor ranges is the valid set."""
    first = 100
    ready_all: list[int] = []
    anchors: list[int] = []
    for step in range(first, first + L):
        ended = ends and step == first + L - 1
        lo, hi = ready_range(np.array([first]), np.array([step]), np.array([ended]), n)
        ready = list(range(int(lo[0]), int(hi[0]) + 1))
        ready_all += ready
        alo, ahi = new_anchors(np.array([first]), lo, hi, np.array([ended]), length, burn_in, pad)
        anchors += list(range(int(alo[0]), int(ahi[0]) + 1))
    # ready transitions: all steps if the episode ended, else all but the last n - 1
    expected_ready = list(range(first, first + L)) if ends else list(range(first, first + max(0, L - (n - 1))))
    assert ready_all == expected_ready
    last_ready = first + len(expected_ready) - 1
    if pad:
        valid = [a for a in range(first, first + L) if a + length - 1 <= last_ready or (ends and a <= last_ready)]
    else:
        valid = [a for a in range(first, first + L) if a - burn_in >= first and a + length - 1 <= last_ready]
    assert sorted(anchors) == valid
    assert len(set(anchors)) == len(anchors)


def test_window_mask_pads_before_start_and_after_end():
    ends = np.zeros((2, 6), dtype=bool)
    ends[1, 3] = True  # second window: its episode ends at window step 3
    mask = window_mask(np.array([1, 5]), ends, burn_in=2)
    assert mask[0].tolist() == [False, True, True, True, True, True]
    assert mask[1].tolist() == [True, True, True, True, False, False]
    assert window_offsets(3, 2).tolist() == [-2, -1, 0, 1, 2]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 5), gamma=st.sampled_from([0.0, 0.3, 0.99, 1.0]), seed=st.integers(0, 10_000))
def test_nstep_targets_match_a_loop(n, gamma, seed):
    rng = np.random.default_rng(seed)
    B = 16
    rewards = rng.normal(size=(B, n))
    term = rng.random((B, n)) < 0.2
    trunc = rng.random((B, n)) < 0.2
    returns, discount, steps = nstep_targets(rewards, term, trunc, gamma)
    for b in range(B):
        ret, m = 0.0, n
        for j in range(n):
            ret += gamma ** j * rewards[b, j]
            if term[b, j] or trunc[b, j]:
                m = j + 1
                break
        assert steps[b] == m
        assert np.isclose(returns[b], ret)
        assert np.isclose(discount[b], 0.0 if term[b, m - 1] else gamma ** m, rtol=1e-14, atol=0)
