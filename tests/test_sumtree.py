"""The wide sum tree: totals, prefix-sum search, minima, zero counts, rebuilds, accuracy.

References are plain numpy: ``math.fsum`` of the leaves for totals and
``np.searchsorted(np.cumsum(leaves), target, side="right")`` for the search.
Integer-valued leaves keep every partial sum exact, so those comparisons are exact.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ReplayTables.engine.sumtree import SumTree

CAPACITIES = [1, 2, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097]


def filled(capacity: int, rng: np.random.Generator, zeros: float = 0.2,
           integer: bool = True) -> tuple[SumTree, np.ndarray]:
    tree = SumTree(capacity)
    if integer:
        values = rng.integers(1, 50, size=capacity).astype(np.float64)
    else:
        values = 10.0 ** rng.uniform(-3, 3, size=capacity)
    values[rng.random(capacity) < zeros] = 0.0
    tree.set(np.arange(capacity), values)
    return tree, values


def reference_find(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(values), targets, side="right")


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_total_min_and_get(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree, values = filled(capacity, rng, integer=False)
    assert tree.total == pytest.approx(math.fsum(values), rel=1e-13)
    positive = values[values > 0]
    assert tree.min_positive == (positive.min() if positive.size else math.inf)
    np.testing.assert_array_equal(tree.get(np.arange(capacity)), values)
    assert tree.zero_count == int((values == 0).sum())


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_find_matches_searchsorted(capacity: int) -> None:
    rng = np.random.default_rng(100 + capacity)
    tree, values = filled(capacity, rng)
    if values.sum() == 0:
        values[0] = 3.0
        tree.set(np.array([0]), np.array([3.0]))
    total = float(values.sum())
    assert tree.total == total
    targets = rng.random(5000) * total
    np.testing.assert_array_equal(tree.find(targets), reference_find(values, targets))
    # exactly on every boundary: a boundary belongs to the next non-empty leaf
    bounds = np.cumsum(values)[:-1]
    bounds = np.unique(np.concatenate([[0.0], bounds[bounds < total]]))
    np.testing.assert_array_equal(tree.find(bounds), reference_find(values, bounds))
    # the found leaves are never empty
    assert (values[tree.find(targets)] > 0).all()


@pytest.mark.parametrize("capacity", [17, 4097])
def test_find_with_real_valued_leaves(capacity: int) -> None:
    rng = np.random.default_rng(7)
    tree, values = filled(capacity, rng, integer=False)
    cum = np.cumsum(values)
    targets = rng.random(20000) * tree.total
    found = tree.find(targets)
    assert (values[found] > 0).all()
    lo = cum[found] - values[found]
    # the target lies in the found leaf's interval, up to rounding of the prefix sums
    tol = 1e-12 * cum[-1]
    assert (targets >= lo - tol).all() and (targets <= cum[found] + tol).all()
    # where the reference is unambiguous, the leaf is the same
    margin = np.minimum(np.abs(targets - lo), np.abs(cum[found] - targets))
    clear = margin > tol
    np.testing.assert_array_equal(found[clear], reference_find(values, targets[clear]))


def test_find_near_the_total_returns_the_last_nonempty_leaf() -> None:
    tree = SumTree(40)
    values = np.zeros(40)
    values[[3, 20]] = [1.0, 2.0]
    tree.set(np.arange(40), values)
    total = tree.total
    found = tree.find(np.array([total, np.nextafter(total, 0), total * (1 - 1e-16), 0.0]))
    assert found.tolist() == [20, 20, 20, 3]


@pytest.mark.parametrize("capacity", [1, 16, 17, 257, 4097])
def test_min_positive_and_zero_count_follow_updates(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    values = np.zeros(capacity)
    live = np.zeros(capacity, dtype=bool)
    for _ in range(30):
        k = int(rng.integers(1, capacity + 1))
        slots = rng.choice(capacity, size=k, replace=False)
        new = np.where(rng.random(k) < 0.3, 0.0, rng.uniform(0.1, 10, k))
        alive = rng.random(k) < 0.8
        new[~alive] = 0.0
        tree.set(slots, new, live=alive)
        values[slots] = new
        live[slots] = alive
        positive = values[values > 0]
        assert tree.min_positive == (positive.min() if positive.size else math.inf)
        assert tree.zero_count == int((live & (values == 0)).sum())
        assert tree.total == pytest.approx(math.fsum(values), rel=1e-12, abs=0)


def test_later_duplicate_slot_wins() -> None:
    tree = SumTree(20)
    tree.set(np.array([3, 5, 3, 3]), np.array([1.0, 2.0, 7.0, 4.0]))
    assert tree.get(np.array([3, 5])).tolist() == [4.0, 2.0]
    assert tree.total == 6.0


@pytest.mark.parametrize("capacity", [1, 17, 300, 4097])
def test_rebuild_gives_the_same_tree(capacity: int) -> None:
    rng = np.random.default_rng(11)
    tree, _ = filled(capacity, rng, integer=False)
    for _ in range(20):
        slots = rng.integers(0, capacity, size=min(64, capacity))
        tree.set(slots, rng.uniform(0, 5, size=slots.size))
    targets = rng.random(3000) * tree.total
    before = (tree.total, tree.min_positive, tree.zero_count, tree.find(targets))
    tree.rebuild()
    after = (tree.total, tree.min_positive, tree.zero_count, tree.find(targets))
    assert after[0] == pytest.approx(before[0], rel=1e-14)
    assert after[1:3] == before[1:3]
    np.testing.assert_array_equal(after[3], before[3])


def test_state_round_trip() -> None:
    rng = np.random.default_rng(5)
    tree, _ = filled(1000, rng, integer=False)
    tree.set(np.array([1, 2]), np.array([0.0, 0.0]), live=np.array([True, False]))
    other = SumTree(1000)
    other.load_state_dict(tree.state_dict())
    assert other.total == tree.total and other.min_positive == tree.min_positive
    assert other.zero_count == tree.zero_count
    targets = rng.random(1000) * tree.total
    np.testing.assert_array_equal(other.find(targets), tree.find(targets))


def test_accuracy_after_ten_million_updates() -> None:
    """10^7 random leaf updates (2442 batches of 4096, values over 6 decades, a
    tenth set to 0): relative drift of the total against ``math.fsum`` of the
    leaves stays below 1e-9 (a delta-updated tree drifts far more)."""
    capacity = 100_000
    rng = np.random.default_rng(2024)
    tree = SumTree(capacity)
    values = 10.0 ** rng.uniform(-3, 3, size=capacity)
    tree.set(np.arange(capacity), values)
    batch = 4096
    batches = -(-10_000_000 // batch)
    for _ in range(batches):
        slots = rng.integers(0, capacity, size=batch)
        new = 10.0 ** rng.uniform(-3, 3, size=batch)
        new[rng.random(batch) < 0.1] = 0.0
        tree.set(slots, new)
    assert batches * batch >= 10_000_000
    leaves = tree.get(np.arange(capacity))
    exact = math.fsum(leaves)
    drift = abs(tree.total - exact) / exact
    assert drift < 1e-9, drift
    assert tree.min_positive == leaves[leaves > 0].min()


def test_find_at_a_million_leaves() -> None:
    capacity = 2**20 + 3
    rng = np.random.default_rng(99)
    values = rng.integers(0, 8, size=capacity).astype(np.float64)
    tree = SumTree(capacity)
    tree.set(np.arange(capacity), values)
    assert tree.total == values.sum()
    targets = rng.random(100_000) * tree.total
    np.testing.assert_array_equal(tree.find(targets), reference_find(values, targets))
    slots = rng.integers(0, capacity, size=4096)
    new = rng.integers(0, 8, size=4096).astype(np.float64)
    tree.set(slots, new)
    values[slots] = new  # numpy fancy assignment: the last duplicate wins too
    assert tree.total == values.sum()
    np.testing.assert_array_equal(tree.find(targets * values.sum() / (targets.max() + 1)),
                                  reference_find(values, targets * values.sum() / (targets.max() + 1)))


@pytest.mark.parametrize("capacity", [1, 17, 300, 4097, 70_000])
def test_updates_leave_the_tree_bit_identical_to_a_rebuild(capacity: int) -> None:
    """Repairs recompute only what changed (minima stop where they no longer change);
    the result must equal a from-scratch rebuild exactly, entry for entry."""
    rng = np.random.default_rng(7 + capacity)
    tree, _ = filled(capacity, rng, integer=False)
    for step in range(60):
        n = int(rng.integers(1, 300))
        slots = rng.integers(0, capacity, size=n)
        values = 10.0 ** rng.uniform(-4, 4, size=n)
        values[rng.random(n) < 0.2] = 0.0
        live = rng.random(n) < 0.9 if step % 3 == 0 else True
        tree.set(slots, values, live=live)
    arrays = {name: getattr(tree, name).copy() for name in ("sums", "cum", "mins", "leaves")}
    tree.rebuild()
    for name, before in arrays.items():
        np.testing.assert_array_equal(getattr(tree, name), before, err_msg=name)


def test_pickled_tree_keeps_block_alignment() -> None:
    import pickle

    tree, _ = filled(5000, np.random.default_rng(3))
    for copy in (pickle.loads(pickle.dumps(tree)), __import__("copy").deepcopy(tree), tree):
        for name in ("sums", "cum", "mins", "leaves"):
            assert getattr(copy, name).ctypes.data % 128 == 0, name
        assert copy.total == tree.total
