"""ReplayTables.rllib single-policy buffers: storage units, true ring, hooks, state, bad input."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ReplayTables
from ReplayTables.errors import ConfigError, EmptyBufferError, SchemaError, StaleIdError
from ReplayTables.rllib import (
    FifoReplayBuffer,
    ReplayBuffer,
    ReservoirReplayBuffer,
    StorageUnit,
)


def rows(start: int, n: int) -> dict[str, np.ndarray]:
    k = np.arange(start, start + n)
    return {"obs": np.stack([k, -k], axis=1).astype(np.float32), "k": k.astype(np.int64)}


def episodes(lengths: list[int], first_id: int = 0, complete: bool = True) -> dict[str, np.ndarray]:
    eps = np.repeat(np.arange(first_id, first_id + len(lengths)), lengths)
    t = np.concatenate([np.arange(n) for n in lengths])
    term = np.zeros(sum(lengths), dtype=bool)
    if complete:
        term[np.cumsum(lengths) - 1] = True
    return {"obs": np.arange(sum(lengths), dtype=np.float64), "eps_id": eps, "t": t, "terminateds": term}


def snapshot(buffer: ReplayBuffer) -> tuple[object, ...]:
    return (len(buffer), buffer.num_timesteps, buffer.stats()["added_count"], repr(buffer._table.layout.state_dict()))


# ---------------------------------------------------------------- storage units
def test_storage_unit_accepts_enum_and_string() -> None:
    assert ReplayBuffer(10, "EPISODES").storage_unit is StorageUnit.EPISODES
    assert ReplayBuffer(10, StorageUnit.SEQUENCES).storage_unit.value == "sequences"
    with pytest.raises(ConfigError, match="storage_unit"):
        ReplayBuffer(10, "steps")


def test_timesteps_true_ring_and_counts() -> None:
    b = ReplayBuffer(capacity=10, seed=0)
    b.add(rows(0, 7))
    b.add(rows(7, 7))
    assert len(b) == 10 and b.num_timesteps == 10
    assert sorted(b.get(b.item_ids())["k"].tolist()) == list(range(4, 14))
    s = b.stats()
    assert s["added_count"] == 14 and s["evicted_count"] == 4 and s["eviction_started"]
    batch = b.sample(64)
    assert isinstance(batch, dict) and batch.count == 64      # ours, or RLlib's SampleBatch with Ray
    assert set(batch["k"].tolist()) <= set(range(4, 14))
    assert (batch["obs"][:, 0] == batch["k"]).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=25), st.integers(5, 30))
def test_variable_items_never_exceed_capacity(lengths: list[int], capacity: int) -> None:
    """A true ring: stored timesteps <= capacity; the kept items are the newest that fit."""
    b = ReplayBuffer(capacity=capacity, storage_unit="fragments", seed=0)
    start = 0
    for n in lengths:
        if n > capacity:
            with pytest.raises(SchemaError):
                b.add(rows(start, n))
            continue
        b.add(rows(start, n))
        start += n
    assert b.num_timesteps <= capacity
    kept = [n for n in lengths if n <= capacity]
    expect, total = [], 0
    for n in reversed(kept):
        if total + n > capacity:
            break
        expect.append(n)
        total += n
    assert len(b) == len(expect) and b.num_timesteps == total
    if len(b):
        got = b.get(b.item_ids())["k"].tolist()
        assert got == list(range(start - total, start))  # oldest first, contiguous newest rows


def test_sequences_by_seq_lens() -> None:
    b = ReplayBuffer(100, "sequences", seed=0)
    batch = rows(0, 6)
    batch["seq_lens"] = np.array([1, 2, 3])
    ids = b.add(batch)
    assert len(b) == 3 and ids.shape == (3,)
    got = b.get(ids[::-1])
    assert got["k"].tolist() == [3, 4, 5, 1, 2, 0] and got["seq_lens"].tolist() == [3, 2, 1]
    s = b.sample(5)
    assert s["seq_lens"].sum() == s.count


def test_episodes_keep_only_complete_ones() -> None:
    b = ReplayBuffer(100, "episodes", seed=0)
    batch = episodes([3, 2, 4])
    batch["t"][3] = 1                       # episode 1 does not start at t == 0
    batch["terminateds"][-1] = False        # episode 2 has no end
    batch["truncateds"] = np.zeros(9, dtype=bool)
    b.add(batch)
    assert len(b) == 1 and b.stats()["dropped_incomplete_episodes"] == 2
    batch = episodes([2], first_id=7, complete=False)
    batch["truncateds"] = np.array([False, True])   # truncated counts as an end
    b.add(batch)
    assert len(b) == 2
    assert 6 <= b.sample(3).count <= 9          # three episodes of 3 or 2 steps


def test_episodes_need_their_end_flags_and_split_as_rllib_without_eps_id_or_t() -> None:
    b = ReplayBuffer(100, "episodes")
    batch = episodes([2])
    del batch["terminateds"]
    with pytest.raises(SchemaError, match="terminateds"):
        b.add(batch)
    assert len(b) == 0
    # as RLlib's split_by_episode: without eps_id an episode ends at each end flag (the open tail is
    # dropped); without t every episode counts as starting at t == 0
    rows = {"obs": np.arange(7.0), "terminateds": np.array([0, 1, 0, 0, 1, 0, 0], bool)}
    b.add(rows)
    assert len(b) == 2 and b.stats()["dropped_incomplete_episodes"] == 1
    assert sorted(b.get(b.item_ids())["seq_lens"].tolist()) == [2, 3]
    timed = ReplayBuffer(100, "episodes")
    timed.add({**rows, "t": np.array([0, 1, 5, 6, 7, 0, 1])})       # the second starts at t=5: not whole
    assert len(timed) == 1 and timed.stats()["dropped_incomplete_episodes"] == 2


def test_fragments_are_whole_batches() -> None:
    b = ReplayBuffer(capacity=2, storage_unit=StorageUnit.FRAGMENTS, seed=0)
    b.add({"a": [1], "b": [2]})
    assert b.sample(2)["b"].tolist() == [2, 2]
    b.add({"a": [3, 4], "b": [5, 6]})                 # evicts the first fragment (true ring)
    assert len(b) == 1 and b.sample(1)["a"].tolist() == [3, 4]


def test_rllib_sample_batch_subclass_is_taken_as_is() -> None:
    class RLlibLikeSampleBatch(dict):
        """A dict subclass with extra attributes, like RLlib's SampleBatch."""

        zero_padded = False

    b = ReplayBuffer(10, seed=0)
    batch = RLlibLikeSampleBatch(rows(0, 3))
    batch["infos"] = np.array([{"x": 1}, {}, {}], dtype=object)   # Python objects: not stored
    b.add(batch)
    assert len(b) == 3 and set(b.sample(2)) == {"obs", "k"}


# ---------------------------------------------------------------- bad input
BAD_BATCHES = [
    ({"obs": np.zeros((3, 2), np.float32)}, "k"),                                  # missing column
    ({**rows(0, 3), "extra": np.zeros(3)}, "extra"),                               # unknown column
    ({"obs": np.zeros((3, 3), np.float32), "k": np.arange(3)}, "obs"),             # wrong shape
    ({"obs": np.zeros((3, 2), np.float32), "k": np.arange(3) + 0.5}, "k"),         # float into int
    ({"obs": np.zeros((3, 2), np.float32), "k": np.arange(4)}, "ragged"),          # ragged columns
    ({"obs": np.zeros((3, 2), np.float32), "k": 3}, "k"),                          # scalar column
    ([1, 2, 3], "batch"),                                                          # not a mapping
    ({"obs": [[1, 2], [3]], "k": [1, 2]}, "obs"),                                  # ragged rows
]


@pytest.mark.parametrize("batch,needle", BAD_BATCHES)
def test_bad_batches_raise_and_change_nothing(batch: object, needle: str) -> None:
    b = ReplayBuffer(10, seed=0)
    b.add(rows(0, 4))
    before = snapshot(b)
    with pytest.raises(SchemaError, match=needle):
        b.add(batch)
    assert snapshot(b) == before


def test_bad_sequences_and_lengths() -> None:
    b = ReplayBuffer(5, "sequences")
    for seq_lens in ([2, 3], [0, 4], [1.5, 2.5], [[4]]):
        batch = rows(0, 4)
        batch["seq_lens"] = np.array(seq_lens)
        with pytest.raises(SchemaError, match="seq_lens"):
            b.add(batch)
    with pytest.raises(SchemaError, match="seq_lens"):
        b.add(rows(0, 4))                                   # no seq_lens at all
    batch = rows(0, 6)
    batch["seq_lens"] = np.array([6])
    with pytest.raises(SchemaError, match="item length"):  # a sequence longer than the capacity
        b.add(batch)
    assert len(b) == 0 and b.stats()["added_count"] == 0


def test_empty_sample_and_bad_counts() -> None:
    b = ReplayBuffer(10)
    with pytest.raises(EmptyBufferError):
        b.sample(1)
    with pytest.raises(EmptyBufferError):
        b.draw(3)
    b.add(rows(0, 2))
    for n in (-1, 2.5, "3"):
        with pytest.raises(ConfigError):
            b.sample(n)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sample"):
        b.sample(2, beta=0.5)
    with pytest.raises(ConfigError, match="add"):
        b.add(rows(0, 1), weight=2.0)
    assert b.sample(0).count == 0


@pytest.mark.parametrize("kwargs", [
    {"capacity": 0}, {"capacity": 2.5}, {"capacity": True}, {"seed": "x"},
    {"replay_sequence_length": 4},                                       # not sequences
    {"storage_unit": "sequences", "replay_sequence_length": 4, "replay_burn_in": 4},
    {"storage_unit": "sequences", "replay_sequence_length": 0},
    {"storage_unit": "sequences", "replay_sequence_length": 40, "replay_burn_in": 2, "capacity": 10},
    {"replay_burn_in": -1}, {"replay_burn_in": 2},
    {"storage_unit": "sequences", "replay_sequence_length": 4, "replay_zero_init_states": "yes"},
])
def test_bad_constructor_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ReplayBuffer(**kwargs)


def test_shared_needs_columns_and_is_refused_where_it_cannot_work() -> None:
    from ReplayTables.rllib import MultiAgentReplayBuffer, PrioritizedReplayBuffer

    for cls in (ReplayBuffer, PrioritizedReplayBuffer, FifoReplayBuffer, ReservoirReplayBuffer):
        with pytest.raises(ConfigError, match=r"columns: got None, expected every column's \(shape, dtype\) with "
                                              r"shared=True"):
            cls(capacity=8, shared=True)
        with pytest.raises(ConfigError, match="shared: got 'yes', expected True or False"):
            cls(capacity=8, shared="yes")
        assert not cls(capacity=8, shared=False).shared
    with pytest.raises(ConfigError, match="max_item_length: got None, expected the longest item in timesteps with "
                                          "shared=True"):
        ReservoirReplayBuffer(capacity=8, storage_unit="episodes", shared=True, columns={"obs": ((), np.float32)})
    reservoir = ReservoirReplayBuffer(capacity=8, shared=True, columns={"obs": ((), np.float32)})  # timesteps: 1
    assert reservoir.shared
    reservoir.close()
    for value in (True, False):  # refused by name with the reason, whatever the value
        with pytest.raises(ConfigError, match=r"shared: got (True|False), expected no shared argument for "
                                              r"MultiAgentReplayBuffer: a multi-agent buffer makes one table per "
                                              r"policy.*PrioritizedReplay \(shared=True\)"):
            MultiAgentReplayBuffer(capacity=8, shared=value)
        with pytest.raises(ConfigError, match="expected no shared argument for MultiAgentReplayBuffer"):
            ReplayTables.rllib.from_config({"type": "MultiAgentReplayBuffer", "capacity": 8, "shared": value})
    with pytest.raises(ConfigError, match="columns: got None"):
        ReplayTables.rllib.from_config({"type": "ReplayBuffer", "capacity": 8, "shared": True})


# ---------------------------------------------------------------- hooks and ids
def test_hooks_hits_delete_and_stale_ids() -> None:
    b = ReplayBuffer(4, seed=0)
    ids = b.add(rows(0, 4))
    drawn = b.draw(100)
    hits = b.hit_counts(ids)
    assert hits.sum() == 100 and (hits == np.bincount(drawn % 4, minlength=4)).all()
    assert b.delete(ids[:2]) == 2 and len(b) == 2 and b.num_timesteps == 2
    assert set(b.sample(50)["k"].tolist()) == {2, 3}
    with pytest.raises(StaleIdError):
        b.get(ids[:1])
    with pytest.raises(StaleIdError):
        b.delete(ids[1:3])                  # one stale id: nothing is removed
    assert len(b) == 2
    new = b.add(rows(10, 3))                # the ring comes round over the holes, then evicts item 2
    assert len(b) == 4 and b.num_timesteps == 4
    with pytest.raises(StaleIdError):
        b.hit_counts(ids[2:3])
    assert (b.hit_counts(new) == 0).all() and b.hit_counts(ids[3:])[0] > hits[3]  # kept its count
    assert b.get(b.item_ids())["k"].tolist() == [3, 10, 11, 12]


# ---------------------------------------------------------------- state
@pytest.mark.parametrize("make", [
    lambda: ReplayBuffer(20, "timesteps", seed=3),
    lambda: ReplayBuffer(20, "fragments", seed=3),
    lambda: ReservoirReplayBuffer(20, seed=3),
    lambda: FifoReplayBuffer(20, seed=3),
])
def test_state_round_trips(make, tmp_path) -> None:
    b = make()
    for i in range(6):
        b.add(rows(5 * i, 5))
    b.draw(7)
    clones = [copy.deepcopy(b), pickle.loads(pickle.dumps(b))]
    b.save(tmp_path / "ck")
    clones.append(ReplayTables.load(tmp_path / "ck"))
    fresh = make()
    fresh.set_state(b.get_state())
    clones.append(fresh)
    stats = b.stats()
    assert all(type(c) is type(b) and c.stats() == stats for c in clones)
    expected = b.sample(5)
    for c in clones:
        got = c.sample(5)
        assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_get_state_is_a_snapshot() -> None:
    b = ReplayBuffer(10, seed=0)
    b.add(rows(0, 6))
    state = b.get_state()
    expected = copy.deepcopy(b).sample(4)
    b.add(rows(6, 8))                          # evicts and overwrites after the snapshot
    b.set_state(state)
    assert len(b) == 6 and b.sample(4)["k"].tolist() == expected["k"].tolist()


def test_set_state_refuses_other_buffers() -> None:
    b = ReplayBuffer(20, seed=0)
    with pytest.raises(ReplayTables.CheckpointError):
        b.set_state(ReplayBuffer(30).get_state())
    with pytest.raises(ReplayTables.CheckpointError):
        b.set_state(FifoReplayBuffer(20).get_state())


def test_empty_buffer_saves(tmp_path) -> None:
    ReplayBuffer(5, "episodes").save(tmp_path / "e")
    again = ReplayTables.load(tmp_path / "e")
    assert len(again) == 0
    again.add(episodes([2]))
    assert len(again) == 1


# ---------------------------------------------------------------- reservoir & fifo
def test_reservoir_is_uniform_over_history() -> None:
    """Every row ever added is kept with probability capacity / added (algorithm R)."""
    counts = np.zeros(200)
    trials = 400
    for seed in range(trials):
        b = ReservoirReplayBuffer(capacity=20, seed=seed)
        for i in range(10):
            b.add(rows(20 * i, 20))
        assert len(b) == 20 and b.num_timesteps == 20
        counts[b.get(b.item_ids())["k"]] += 1
    p = counts / trials                     # expected 0.1 each; binomial sd = 0.015
    assert abs(p.mean() - 0.1) < 1e-12
    assert np.abs(p - 0.1).max() < 0.075   # 5 sd
    assert abs(p[:100].mean() - p[100:].mean()) < 0.01   # old and new rows alike


def test_reservoir_items_of_fixed_region() -> None:
    b = ReservoirReplayBuffer(capacity=12, storage_unit="fragments", seed=0)
    b.add(rows(0, 3))                          # fixes the region to 3 steps: 4 items
    b.add(rows(3, 2))                          # shorter items are fine
    with pytest.raises(SchemaError, match="item length"):
        b.add(rows(5, 4))
    for i in range(20):
        b.add(rows(10 + 3 * i, 3))
    assert len(b) == 4 and b.num_timesteps <= 12
    with pytest.raises(ConfigError, match="burn"):
        ReservoirReplayBuffer(12, "sequences", replay_sequence_length=4, replay_burn_in=1)


def test_fifo_returns_oldest_items_once() -> None:
    b = FifoReplayBuffer(capacity=6)
    assert b.sample() == {}
    for i in range(4):
        b.add(rows(2 * i, 2))                  # 4 fragments of 2; capacity 6 keeps the last 3
    assert len(b) == 3
    first = b.sample()
    assert first["k"].tolist() == [2, 3] and first["weights"].tolist() == [1.0, 1.0]
    assert b.sample(2)["k"].tolist() == [4, 5, 6, 7]
    assert len(b) == 0 and b.update_priorities([1], [1.0]) == 0
    with pytest.raises(ConfigError):
        b.sample(-1)
    with pytest.raises(ConfigError):
        b.sample(1, beta=0.4)
