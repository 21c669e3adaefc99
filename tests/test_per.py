"""Front end A: PERConfig and PrioritizedReplay rules (SPEC section 2), exactly."""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import pytest

from conftest import Transition, item, items
from ReplayTables.errors import StaleIdError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer


def per(capacity: int = 8, seed: int = 0, **config: object) -> PrioritizedReplay:
    return PrioritizedReplay(capacity, Transition, np.random.default_rng(seed), PERConfig(**config))  # type: ignore[arg-type]


def test_defaults_follow_the_readme_and_the_paper() -> None:
    c = PERConfig()
    assert (c.new_priority_mode, c.uniform_probability, c.priority_exponent, c.max_decay) == ("max", 1e-3, 0.5, 1)
    assert c.beta == 0.4 and c.beta_steps is None
    b = PrioritizedReplay(4, Transition, np.random.default_rng(0))
    assert b.config == PERConfig()
    assert isinstance(b, ReplayBuffer)


def test_stored_priority_is_p_to_the_exponent() -> None:
    b = per(priority_exponent=0.7)
    ids = b.add_batch(items(range(3)), priorities=[4.0, 0.0, 2.5])
    np.testing.assert_allclose(b.priorities(ids), [4.0**0.7, 0.0, 2.5**0.7], rtol=1e-15)
    b.update_priorities(ids[:1], [9.0])
    np.testing.assert_allclose(b.priorities(ids[:1]), [9.0**0.7], rtol=1e-15)
    i = b.add(item(5), priority=3.0)
    np.testing.assert_allclose(b.priorities([i]), [3.0**0.7], rtol=1e-15)


def test_max_mode_running_maximum() -> None:
    b = per()
    i0 = b.add(item(0))
    assert b.priorities([i0]).tolist() == [1.0]  # 1.0 before any priority is known
    b.update_priorities([i0], [16.0])  # q = 4
    assert b.max_priority == 4.0
    b.update_priorities([i0], [1.0])  # a smaller update never lowers the maximum
    assert b.max_priority == 4.0
    i1 = b.add(item(1))
    assert b.priorities([i0, i1]).tolist() == [1.0, 4.0]
    ids = b.add_batch(items([2, 3]))
    assert b.priorities(ids).tolist() == [4.0, 4.0]
    b.add(item(4), priority=100.0)  # an add with a priority raises it too
    assert b.max_priority == 10.0


def test_max_decay() -> None:
    b = per(max_decay=0.5, priority_exponent=1.0)
    ids = b.add_batch(items([0, 1]))
    b.update_priorities(ids[:1], [8.0])
    assert b.max_priority == 8.0
    b.update_priorities(ids[:1], [1.0])  # m = max(0.5 * 8, 1) = 4
    assert b.max_priority == 4.0
    b.update_priorities(ids[:1], [3.0])  # m = max(2, 3) = 3
    assert b.max_priority == 3.0
    b.add(item(2), priority=0.5)  # m = max(1.5, 0.5)
    assert b.max_priority == 1.5
    i = b.add(item(3))
    assert b.priorities([i]).tolist() == [1.5]


def test_mean_mode() -> None:
    b = per(new_priority_mode="mean", priority_exponent=1.0)
    i0 = b.add(item(0))
    assert b.priorities([i0]).tolist() == [1.0]  # empty buffer: 1.0
    i1 = b.add(item(1), priority=5.0)
    i2 = b.add(item(2))
    assert b.priorities([i0, i1, i2]).tolist() == [1.0, 5.0, 3.0]
    ids = b.add_batch(items([3, 4]))  # mean of the items stored before the batch
    assert b.priorities(ids).tolist() == [3.0, 3.0]


def test_given_mode_honours_priorities() -> None:
    b = per(new_priority_mode="given", priority_exponent=1.0)
    i = b.add(item(0), priority=1.3)
    ids = b.add_batch(items([1, 2]), priorities=[0.5, 2.0])
    assert b.priorities([i, *ids]).tolist() == [1.3, 0.5, 2.0]


def test_readme_priority_example_runs_in_every_mode() -> None:
    class Data(NamedTuple):
        a: float
        b: float

    for mode in ("max", "mean", "given"):
        b = PrioritizedReplay(100, Data, np.random.default_rng(0), PERConfig(new_priority_mode=mode))
        if mode != "given":
            b.add(Data(a=1, b=2))
        b.add(Data(a=1, b=2), priority=1.3)
        batch = b.sample(32)
        assert batch.a.shape == (32,) and batch.weights.shape == (32,)


def test_update_priorities_skips_and_counts_stale_ids() -> None:
    b = per(capacity=3, priority_exponent=1.0)
    old = b.add_batch(items([0, 1, 2]))
    new = b.add(item(3))  # takes the slot of old[0]
    applied = b.update_priorities([old[0], old[1], 10**6, -1], [50.0, 2.0, 3.0, 4.0])
    assert applied == 1
    assert b.stats()["stale_updates"] == 3
    assert b.priorities([new]).tolist() == [1.0]  # the newcomer is untouched
    assert b.priorities([old[1]]).tolist() == [2.0]
    assert b.max_priority == 2.0  # only applied priorities count


def test_update_priorities_takes_a_batch_and_last_duplicate_wins() -> None:
    b = per(priority_exponent=1.0, uniform_probability=0.0)
    b.add_batch(items(range(4)))
    batch = b.sample(6)
    b.update_priorities(batch, np.arange(6.0) + 1)
    last = {int(i): float(p) for i, p in zip(batch.ids, np.arange(6.0) + 1)}
    np.testing.assert_array_equal(b.priorities(list(last)), list(last.values()))
    ids = batch.ids[:1]
    b.update_priorities([ids[0], ids[0]], [7.0, 3.0])
    assert b.priorities(ids).tolist() == [3.0]


def test_zero_priority_never_sampled_without_uniform_part() -> None:
    b = per(uniform_probability=0.0)
    ids = b.add_batch(items(range(5)), priorities=[0.0, 1.0, 0.0, 2.0, 0.0])
    drawn = b.sample(20000).ids
    assert set(drawn.tolist()) == {int(ids[1]), int(ids[3])}


def test_zero_priority_still_sampled_through_uniform_part() -> None:
    b = per(uniform_probability=0.5)
    ids = b.add_batch(items(range(2)), priorities=[0.0, 1.0])
    batch = b.sample(4000)
    assert int(ids[0]) in batch.ids.tolist()
    zero = batch.ids == ids[0]
    np.testing.assert_allclose(batch.probabilities[zero], 0.25)


def test_all_zero_priorities_fall_back_to_uniform() -> None:
    b = per(uniform_probability=0.0)
    ids = b.add_batch(items(range(4)), priorities=np.zeros(4))
    batch = b.sample(4000)
    assert set(batch.ids.tolist()) == set(ids.tolist())
    np.testing.assert_allclose(batch.probabilities, 0.25)
    np.testing.assert_allclose(batch.weights, 1.0)


def test_deleted_items_are_never_sampled() -> None:
    b = per()
    ids = b.add_batch(items(range(4)), priorities=[1.0, 100.0, 1.0, 1.0])
    b.delete([ids[1]])
    assert int(ids[1]) not in b.sample(5000).ids.tolist()
    with pytest.raises(StaleIdError):
        b.priorities([ids[1]])
    np.testing.assert_allclose(b.sample(100).probabilities.sum() / 100, 1 / 3, rtol=0.4)


def test_beta_annealing_schedule() -> None:
    b = per(beta=0.4, beta_final=1.0, beta_steps=4)
    b.add(item(0))
    seen = []
    for _ in range(7):
        seen.append(b.beta)
        b.sample(1)
    np.testing.assert_allclose(seen, [0.4, 0.55, 0.7, 0.85, 1.0, 1.0, 1.0])
    const = per(beta=0.6)
    const.add(item(0))
    for _ in range(3):
        const.sample(2)
    assert const.beta == 0.6
    assert PERConfig(beta=0.5, beta_final=0.9, beta_steps=10).beta_at(5) == pytest.approx(0.7)


def test_sample_weights_use_the_current_beta() -> None:
    b = per(capacity=4, priority_exponent=1.0, uniform_probability=0.0, beta=0.0, beta_final=1.0, beta_steps=1)
    ids = b.add_batch(items(range(2)), priorities=[1.0, 3.0])
    first = b.sample(50)
    np.testing.assert_array_equal(first.weights, np.ones(50))  # beta 0: no correction
    second = b.sample(200)  # beta 1: w = (P / P_min)^-1
    expected = np.where(second.ids == ids[0], 1.0, 1 / 3)
    np.testing.assert_allclose(second.weights, expected, rtol=1e-12)


def test_get_reports_probabilities_and_weights() -> None:
    b = per(priority_exponent=1.0, uniform_probability=0.2)
    ids = b.add_batch(items(range(4)), priorities=[1.0, 2.0, 3.0, 4.0])
    got = b.get(ids)
    p = 0.8 * np.array([1, 2, 3, 4]) / 10 + 0.2 / 4
    np.testing.assert_allclose(got.probabilities, p, rtol=1e-12)
    np.testing.assert_allclose(got.weights, (p / p.min()) ** -0.4, rtol=1e-12)


def test_config_is_frozen_and_round_trips_through_asdict() -> None:
    c = PERConfig(new_priority_mode="mean", beta_steps=10, stratified=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.beta = 1.0  # type: ignore[misc]
    assert PERConfig(**dataclasses.asdict(c)) == c


def test_uniform_probability_one_is_plain_uniform() -> None:
    b = per(uniform_probability=1.0)
    ids = b.add_batch(items(range(3)), priorities=[0.0, 0.0, 5.0])
    batch = b.sample(3000)
    assert set(batch.ids.tolist()) == set(ids.tolist())
    np.testing.assert_allclose(batch.probabilities, 1 / 3)
    np.testing.assert_allclose(batch.weights, 1.0)
    assert math.isclose(b.max_priority, math.sqrt(5.0))


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("u", [0.0, 0.5, 1.0])
def test_sample_zero_items(stratified: bool, u: float) -> None:
    b = per(stratified=stratified, uniform_probability=u)
    b.add_batch(items(range(3)), priorities=[1.0, 2.0, 3.0])
    batch = b.sample(0)
    assert len(batch) == 0 and batch.ids.shape == (0,) and batch.weights.shape == (0,)
    assert batch.x.shape == (0, 3)
