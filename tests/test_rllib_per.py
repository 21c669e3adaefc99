"""ReplayTables.rllib prioritized replay: proportions, weights, updates, sequences, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import ReplayTables
from ReplayTables.errors import ConfigError, PriorityError, SchemaError, StaleIdError
from ReplayTables.rllib import PrioritizedReplayBuffer


def steps(start: int, n: int) -> dict[str, np.ndarray]:
    return {"k": np.arange(start, start + n, dtype=np.int64)}


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_sampling_proportions_follow_priorities(alpha: float) -> None:
    b = PrioritizedReplayBuffer(capacity=8, alpha=alpha, seed=1)
    ids = b.add(steps(0, 4))
    p = np.array([1.0, 2.0, 3.0, 4.0])
    b.update_priorities(ids, p)
    n = 40_000
    k = b.sample(n, beta=0.0)["k"]
    freq = np.bincount(k, minlength=4) / n
    expected = p ** alpha / (p ** alpha).sum()
    # binomial sd <= 0.0025 at n = 40000: 0.01 is 4 sd
    assert np.abs(freq - expected).max() < 0.01


def test_importance_weights_match_schaul_normalised_by_buffer_max() -> None:
    b = PrioritizedReplayBuffer(capacity=8, alpha=0.6, seed=0)
    ids = b.add(steps(0, 5))
    p = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    b.update_priorities(ids, p)
    beta = 0.4
    batch = b.sample(200, beta=beta)
    q = p ** 0.6
    P = q / q.sum()
    w = (len(p) * P) ** -beta
    expected = w / w.max()                # the largest weight any stored item could get
    got = batch["weights"]
    assert np.allclose(got, expected[batch["k"]])
    assert batch["batch_indexes"].tolist() == ids[batch["k"]].tolist()
    assert b.sample(10, beta=0.0)["weights"].tolist() == [1.0] * 10


def test_new_items_get_the_max_priority_seen() -> None:
    b = PrioritizedReplayBuffer(capacity=10, alpha=0.5, seed=0)
    ids = b.add(steps(0, 3))
    assert np.allclose(b.priorities(ids), 1.0)
    b.update_priorities(ids, [9.0, 0.25, 1.0])
    b.update_priorities(ids[:1], [0.01])            # a later small update does not lower the max
    new = b.add(steps(3, 2))
    assert np.allclose(b.priorities(new), 3.0)      # 9 ** 0.5


def test_initial_priorities_from_weights_column_and_weight_argument() -> None:
    b = PrioritizedReplayBuffer(capacity=20, alpha=1.0, seed=0)
    ids = b.add({"k": np.arange(3), "weights": np.array([0.5, 2.0, 4.0])})
    assert b.priorities(ids).tolist() == [0.5, 2.0, 4.0]
    assert "weights" not in b.get(ids)              # consumed, not stored
    ids = b.add(steps(3, 2), weight=7.0)
    assert b.priorities(ids).tolist() == [7.0, 7.0]
    seq = PrioritizedReplayBuffer(capacity=20, storage_unit="sequences", alpha=1.0)
    ids = seq.add({"k": np.arange(5), "seq_lens": np.array([2, 3]), "weights": np.array([1.0, 3.0, 2.0, 2.0, 5.0])})
    assert seq.priorities(ids).tolist() == [2.0, 3.0]   # mean over each sequence's rows


def test_bad_priorities_change_nothing() -> None:
    b = PrioritizedReplayBuffer(capacity=10, alpha=1.0, seed=0)
    ids = b.add(steps(0, 4))
    b.update_priorities(ids, [1.0, 2.0, 3.0, 4.0])
    before = b.priorities(ids).tolist(), b.stats()
    for bad in ([1.0, np.nan, 1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [np.inf, 1.0, 1.0, 1.0], [1.0, 2.0], "x"):
        with pytest.raises(PriorityError):
            b.update_priorities(ids, bad)
    with pytest.raises(StaleIdError):
        b.update_priorities(np.array([0.5, 1.5]), [1.0, 1.0])
    for bad_w in ({"k": np.arange(2), "weights": np.array([1.0, -2.0])},
                  {"k": np.arange(2), "weights": np.array([1.0, np.nan])}):
        with pytest.raises(PriorityError):
            b.add(bad_w)
    with pytest.raises(PriorityError):
        b.add(steps(0, 2), weight=[1.0, 2.0, 3.0])
    with pytest.raises(SchemaError):
        b.add({"k": np.arange(2), "weights": np.ones(3)})   # ragged
    assert (b.priorities(ids).tolist(), b.stats()) == before
    with pytest.raises(ConfigError, match="beta"):
        b.sample(2, beta=-0.5)
    with pytest.raises(ConfigError, match="alpha"):
        PrioritizedReplayBuffer(10, alpha=-1)


def test_stale_indexes_are_skipped_and_counted() -> None:
    b = PrioritizedReplayBuffer(capacity=4, alpha=1.0, seed=0)
    b.add(steps(0, 4))
    batch = b.sample(4)
    new = b.add(steps(4, 2))                        # evicts the two oldest items
    applied = b.update_priorities(batch["batch_indexes"], np.full(4, 50.0))
    stale = int(np.isin(batch["k"], [0, 1]).sum())
    assert applied == 4 - stale and b.stats()["stale_updates"] == stale
    assert np.allclose(b.priorities(new), 1.0)      # the newcomers were not touched


def test_per_over_sequences_one_priority_per_sequence(tmp_path) -> None:
    b = PrioritizedReplayBuffer(capacity=100, storage_unit="sequences", alpha=1.0, replay_sequence_length=6,
                                replay_burn_in=2, seed=0, zero_pad=True)
    ids = b.add({"k": np.arange(12), "eps_id": np.zeros(12, dtype=np.int64)})   # chunks of 4 steps: 3 sequences
    assert len(b) == 3
    b.update_priorities(ids, [1.0, 0.0, 3.0])
    batch = b.sample(2000, beta=0.5)
    idx = batch["batch_indexes"].reshape(2000, 6)
    assert (idx == idx[:, :1]).all()                # one id repeated over a sequence's rows
    freq = np.bincount(np.searchsorted(ids, idx[:, 0]), minlength=3) / 2000
    assert freq[1] == 0 and abs(freq[2] - 0.75) < 0.04
    # per-row updates: the last value of each sequence wins
    b.update_priorities(batch["batch_indexes"][:12], np.arange(12, dtype=np.float64))
    assert b.priorities(idx[:2, 0]).tolist() == [5.0, 11.0] or idx[0, 0] == idx[1, 0]
    b.save(tmp_path / "per")
    again = ReplayTables.load(tmp_path / "per")
    assert np.array_equal(again.priorities(ids), b.priorities(ids))
    a, c = again.sample(3, beta=0.5), b.sample(3, beta=0.5)
    assert all(np.array_equal(a[k], c[k]) for k in a)
