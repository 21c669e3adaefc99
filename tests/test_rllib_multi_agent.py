"""ReplayTables.rllib multi-agent buffers: routing, sequences with burn-in, PER updates, mix-in, config."""
from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ReplayTables
from ReplayTables.errors import ConfigError, PriorityError, SchemaError
from ReplayTables.rllib import (
    MultiAgentMixInReplayBuffer,
    MultiAgentPrioritizedReplayBuffer,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    from_config,
)


def steps(start: int, n: int, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"obs": np.arange(start, start + n, dtype=np.float32), **extra}


class FakeMultiAgentBatch:
    """Stands in for RLlib's MultiAgentBatch: not a Mapping, has ``policy_batches``."""

    def __init__(self, policy_batches: dict, env_steps: int) -> None:
        self.policy_batches = policy_batches
        self.count = env_steps


# ---------------------------------------------------------------- routing
def test_routing_independent_mode() -> None:
    ma = MultiAgentReplayBuffer(capacity=100, seed=0)
    ma.add(steps(0, 5))                                               # plain batch -> default_policy
    ma.add(FakeMultiAgentBatch({"pi": steps(100, 3), "pj": {"x": np.ones((2, 2))}}, 3))
    ma.add({"pi": steps(103, 2)})                                     # a plain dict of policy batches
    assert sorted(ma.replay_buffers) == ["default_policy", "pi", "pj"]
    assert [len(ma.replay_buffers[k]) for k in ("default_policy", "pi", "pj")] == [5, 5, 2]
    sampled = ma.sample(4)
    out = sampled.policy_batches
    assert set(out) == {"default_policy", "pi", "pj"} and sampled.count == 12   # RLlib counts the sum
    assert all(b.count == 4 for b in out.values())
    assert set(out["pi"]["obs"].tolist()) <= set(range(100, 105))
    only = ma.sample(3, policy_id="pj").policy_batches
    assert list(only) == ["pj"] and only["pj"]["x"].shape == (3, 2)
    with pytest.raises(SchemaError, match="policy_id"):
        ma.sample(3, policy_id="nobody")


def test_bad_policy_batch_changes_nothing() -> None:
    ma = MultiAgentReplayBuffer(capacity=100, seed=0)
    ma.add({"pi": steps(0, 3)})
    before = (len(ma), sorted(ma.replay_buffers))
    with pytest.raises(SchemaError):
        ma.add({"pi": steps(3, 2), "new": steps(0, 2), "pk": {"obs": np.arange(2), "ragged": np.ones(3)}})
    with pytest.raises(SchemaError):
        ma.add({"new": steps(0, 2), "pi": {"wrong": np.ones(2)}})
    assert (len(ma), sorted(ma.replay_buffers)) == before
    empty = MultiAgentReplayBuffer(10).sample(1)           # as RLlib: an empty batch, not an error
    assert len(empty.policy_batches) == 0 and empty.count == 0


def test_lockstep_stores_whole_steps() -> None:
    ma = MultiAgentReplayBuffer(capacity=10, replay_mode="lockstep", seed=0)
    ma.add({"a": steps(0, 4), "b": {"obs": -np.arange(4, dtype=np.float32), "z": np.ones((4, 3))}})
    assert list(ma.replay_buffers) == ["__all__"] and len(ma) == 4
    assert ma.replay_buffers["__all__"].sample(3).count == 3
    out = ma.sample(6).policy_batches
    assert set(out) == {"a", "b"} and (out["a"]["obs"] == -out["b"]["obs"]).all()
    assert "z" not in out["a"] and out["b"]["z"].shape == (6, 3)            # each policy its own columns
    with pytest.raises(SchemaError, match="policy_batches"):               # a policy keeps its columns
        ma.add({"a": steps(0, 2), "b": {"obs": np.zeros(2, np.float32)}})
    ma.add({"b": {"obs": np.zeros(2, np.float32), "z": np.ones((2, 3))}})  # a step without policy a
    assert len(ma) == 6
    with pytest.raises(ConfigError, match="policy_id"):
        ma.sample(2, policy_id="a")
    with pytest.raises(SchemaError):
        ma.add({"a": steps(0, 3), "b": {"obs": np.zeros(2, np.float32), "z": np.ones((2, 3))}})
    with pytest.raises(ConfigError, match="lockstep"):
        MultiAgentReplayBuffer(10, storage_unit="sequences", replay_mode="lockstep")
    with pytest.raises(ConfigError, match="replay_mode"):
        MultiAgentReplayBuffer(10, replay_mode="together")


# ---------------------------------------------------------------- sequences
def seq_buffer(**kw: object) -> MultiAgentReplayBuffer:
    args = {"capacity": 100, "storage_unit": "sequences", "replay_sequence_length": 6, "replay_burn_in": 2,
            "seed": 0, "underlying_buffer_config": {"zero_pad": True}}     # fixed-length windows with a mask
    args.update(kw)
    return MultiAgentReplayBuffer(**args)  # type: ignore[arg-type]


def windows(ma: MultiAgentReplayBuffer, n: int = 200) -> tuple[np.ndarray, np.ndarray, dict]:
    batch = ma.sample(n).policy_batches["default_policy"]
    return batch["obs"].reshape(n, 6), batch["mask"].reshape(n, 6), batch


def test_burn_in_stops_at_episode_start_and_pads() -> None:
    ma = seq_buffer()
    # episode 7: 6 steps (chunks of 4: [0..3], [4, 5]); episode 8: 3 steps
    eps = np.array([7] * 6 + [8] * 3)
    ma.add(steps(0, 9, eps_id=eps))
    rows, mask, batch = windows(ma)
    seen = {tuple(r) for r in rows.tolist()}
    assert seen == {(0, 0, 0, 1, 2, 3), (2, 3, 4, 5, 0, 0), (0, 0, 6, 7, 8, 0)}
    for r, m in zip(rows.tolist(), mask.tolist()):
        if r[2] == 0:
            assert m == [False, False, True, True, True, True]
        if r[2] == 4:
            assert m == [True, True, True, True, False, False]
        if r[2] == 6:
            assert m == [False, False, True, True, True, False]
    assert set(batch["seq_lens"].tolist()) == {6, 4, 5}


def test_burn_in_continues_across_add_calls_and_not_after_overwrite() -> None:
    ma = seq_buffer(capacity=10)
    ma.add(steps(0, 4, eps_id=np.zeros(4, np.int64)))
    ma.add(steps(4, 4, eps_id=np.zeros(4, np.int64)))     # same episode, next chunk
    rows, mask, _ = windows(ma)
    assert (2, 3, 4, 5, 6, 7) in {tuple(r) for r in rows.tolist()}
    ma.add(steps(8, 4, eps_id=np.zeros(4, np.int64)))     # evicts chunk [0..3]: capacity 10
    rows, mask, _ = windows(ma)
    got = {tuple(r) for r in rows.tolist()}
    assert got == {(2, 3, 4, 5, 6, 7), (6, 7, 8, 9, 10, 11)}
    ma.add(steps(12, 4, eps_id=np.zeros(4, np.int64)))    # overwrites steps 4..7's slots partly
    rows, mask, _ = windows(ma)
    got = {tuple(r) for r in rows.tolist()}
    assert got == {(6, 7, 8, 9, 10, 11), (10, 11, 12, 13, 14, 15)} and mask.all()
    assert ma.replay_buffers["default_policy"].num_timesteps == 8


def test_burn_in_of_an_overwritten_step_is_zero() -> None:
    kept = seq_buffer(capacity=5, replay_sequence_length=5, replay_burn_in=1)
    kept.add(steps(0, 4, eps_id=np.zeros(4, np.int64)))
    kept.add(steps(4, 4, eps_id=np.zeros(4, np.int64)))  # wraps onto slots 4, 0, 1, 2: step 3 survives
    rows, mask, _ = windows_n(kept, 5)
    assert {tuple(r) for r in rows.tolist()} == {(3, 4, 5, 6, 7)} and mask.all()
    gone = seq_buffer(capacity=4, replay_sequence_length=5, replay_burn_in=1)
    gone.add(steps(0, 4, eps_id=np.zeros(4, np.int64)))
    gone.add(steps(4, 4, eps_id=np.zeros(4, np.int64)))  # step 3's slot now holds step 7
    rows, mask, _ = windows_n(gone, 5)
    assert {tuple(r) for r in rows.tolist()} == {(0, 4, 5, 6, 7)}
    assert (mask == [False, True, True, True, True]).all()


def windows_n(ma: MultiAgentReplayBuffer, length: int, n: int = 50) -> tuple[np.ndarray, np.ndarray, dict]:
    batch = ma.sample(n).policy_batches["default_policy"]
    return batch["obs"].reshape(n, length), batch["mask"].reshape(n, length), batch


def test_state_columns_per_sequence() -> None:
    state = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    zero = seq_buffer()
    zero.add(steps(0, 8, eps_id=np.zeros(8, np.int64), state_in_0=state))
    b = zero.sample(5).policy_batches["default_policy"]
    assert b["state_in_0"].shape == (5, 3) and not b["state_in_0"].any()
    keep = seq_buffer(replay_zero_init_states=False)
    keep.add(steps(0, 8, eps_id=np.zeros(8, np.int64), state_in_0=state))
    b = keep.sample(50).policy_batches["default_policy"]
    first_real = b["obs"].reshape(50, 6)[np.arange(50), np.argmax(b["mask"].reshape(50, 6), axis=1)]
    assert np.array_equal(b["state_in_0"][:, 0], first_real)


def test_sequence_edge_cases() -> None:
    ma = seq_buffer(capacity=8)
    too_long = steps(0, 5, eps_id=np.zeros(5, np.int64))
    too_long["seq_lens"] = np.array([5])                 # longer than the 4-step chunk
    with pytest.raises(SchemaError, match="seq_lens"):
        ma.add(too_long)
    given = steps(0, 5, eps_id=np.zeros(5, np.int64))
    given["seq_lens"] = np.array([2, 3])
    ma.add(given)
    assert len(ma) == 2
    with pytest.raises(ConfigError, match="replay_sequence_length"):
        seq_buffer(capacity=3)                            # a 4-step chunk cannot fit 3 timesteps
    with pytest.raises(ConfigError, match="replay_burn_in"):
        seq_buffer(replay_burn_in=6)
    with pytest.warns(UserWarning, match="replay_sequence_length"):   # RLlib ignores it, with a warning
        ignored = MultiAgentReplayBuffer(10, storage_unit="timesteps", replay_sequence_length=4)
    assert ignored.underlying_ctor_args.get("replay_sequence_length") is None
    plain = MultiAgentReplayBuffer(10, storage_unit="sequences")   # replay_sequence_length 1: seq_lens as given
    plain.add({"obs": np.arange(3.0), "seq_lens": np.array([1, 2])})
    out = plain.sample(4).policy_batches["default_policy"]
    assert len(plain) == 2 and out["seq_lens"].shape == (4,) and out["seq_lens"].sum() == out.count


# ---------------------------------------------------------------- prioritized
def test_multi_agent_priorities_updates() -> None:
    ma = MultiAgentPrioritizedReplayBuffer(capacity=50, prioritized_replay_alpha=0.5, prioritized_replay_eps=0.01,
                                           seed=0)
    ma.add({"p": steps(0, 4), "q": steps(10, 4, weights=np.array([4.0, 9.0, 16.0, 25.0]))})
    q = ma.replay_buffers["q"]
    assert isinstance(q, PrioritizedReplayBuffer)
    assert np.allclose(q.priorities(q.item_ids()), [2.0, 3.0, 4.0, 5.0])   # worker-side, ** alpha
    batch = ma.sample(3)
    idx = batch["p"]["batch_indexes"]
    assert ma.update_priorities({"p": (idx, np.array([-1.0, 2.0, 0.0]))}) == 3
    p = ma.replay_buffers["p"]
    expected = {int(i): (abs(t) + 0.01) ** 0.5 for i, t in zip(idx, [-1.0, 2.0, 0.0])}
    assert all(np.isclose(p.priorities([i])[0], v) for i, v in expected.items())
    before = [b.priorities(b.item_ids()).tolist() for b in (p, q)]
    bad = [{"nobody": (idx, np.ones(3))},
           {"p": (idx, np.ones(2))},
           {"p": (idx, np.array([1.0, np.nan, 1.0]))},
           {"p": (idx, np.ones(3)), "q": (np.array([0.5]), np.ones(1))},
           {"p": idx},
           [("p", (idx, np.ones(3)))]]
    for entry in bad:
        with pytest.raises((SchemaError, PriorityError)):
            ma.update_priorities(entry)  # type: ignore[arg-type]
    assert [b.priorities(b.item_ids()).tolist() for b in (p, q)] == before
    assert "weights" in batch["p"] and "batch_indexes" in batch["q"]


def test_beta_reaches_the_underlying_buffers() -> None:
    ma = MultiAgentPrioritizedReplayBuffer(capacity=50, prioritized_replay_beta=0.0, seed=0)
    ids = ma.add(steps(0, 4))["default_policy"]
    ma.update_priorities({"default_policy": (ids, np.array([1.0, 2.0, 3.0, 4.0]))})
    assert (ma.sample(20).policy_batches["default_policy"]["weights"] == 1.0).all()          # beta 0
    assert (ma.sample(20, beta=1.0).policy_batches["default_policy"]["weights"] < 1.0).any()  # a call argument wins
    with pytest.raises(ConfigError, match="PrioritizedReplayBuffer"):
        MultiAgentPrioritizedReplayBuffer(10, underlying_buffer_config={"type": ReplayBuffer})


# ---------------------------------------------------------------- mix-in
@pytest.mark.parametrize("ratio", [0.66, 0.33])
def test_mixin_ratio_on_average(ratio: float) -> None:
    mix = MultiAgentMixInReplayBuffer(capacity=100_000, replay_ratio=ratio, seed=0)
    old = new = 0
    start = 0
    for _ in range(600):
        pending = mix.stats()["new_items_pending"].get("default_policy", 0)
        mix.add(steps(start, 5))                 # more new items than a sample wants
        start += 5
        count = mix.sample(10).policy_batches["default_policy"].count
        returned_new = pending + 5 - mix.stats()["new_items_pending"]["default_policy"]
        new += returned_new
        old += count - returned_new
    assert abs(old / (old + new) - ratio) < 0.02   # 6000 rows; sd of the ratio is about 0.005


def test_mixin_extremes_and_few_new_items() -> None:
    mix = MultiAgentMixInReplayBuffer(capacity=1000, replay_ratio=0.0, seed=0)
    mix.add(steps(0, 3))
    assert mix.sample(10).policy_batches["default_policy"]["obs"].tolist() == [0.0, 1.0, 2.0]
    assert len(mix.sample(10).policy_batches) == 0   # nothing new: nothing ready
    only_old = MultiAgentMixInReplayBuffer(capacity=1000, replay_ratio=1.0, seed=0)
    only_old.add(steps(0, 3))
    assert only_old.sample(10).policy_batches["default_policy"].count == 10
    few = MultiAgentMixInReplayBuffer(capacity=1000, replay_ratio=0.5, seed=0)
    few.add(steps(0, 100))
    few.sample(100)                              # takes 50 new, 50 old
    few.sample(100)                              # the other 50 new
    counts = []
    for i in range(400):
        few.add(steps(1000 + i, 1))              # one new item, fewer than the ratio wants
        counts.append(few.sample(100).policy_batches["default_policy"].count)
    assert 1.8 < np.mean(counts) < 2.2           # 1 new + 1 old on average: the proportion holds
    with pytest.raises(ConfigError, match="replay_ratio"):
        MultiAgentMixInReplayBuffer(10, replay_ratio=1.5)
    assert len(MultiAgentMixInReplayBuffer(10).sample(2).policy_batches) == 0   # as RLlib: empty, no error


def test_mixin_drops_new_items_evicted_before_return() -> None:
    mix = MultiAgentMixInReplayBuffer(capacity=4, replay_ratio=0.0, seed=0)
    mix.add(steps(0, 3))
    mix.add(steps(3, 3))                         # evicts 0, 1 before they were returned
    assert mix.sample(10).policy_batches["default_policy"]["obs"].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert mix.stats()["new_items_dropped"] == 2


# ---------------------------------------------------------------- state
@pytest.mark.parametrize("make", [
    lambda: MultiAgentReplayBuffer(capacity=30, seed=5),
    lambda: MultiAgentReplayBuffer(capacity=30, replay_mode="lockstep", seed=5),
    lambda: MultiAgentPrioritizedReplayBuffer(capacity=30, storage_unit="sequences", replay_sequence_length=5,
                                              replay_burn_in=2, seed=5),
    lambda: MultiAgentMixInReplayBuffer(capacity=30, replay_ratio=0.5, seed=5),
])
def test_multi_agent_state_round_trips(make, tmp_path) -> None:
    ma = make()
    lock = ma.replay_mode == "lockstep"
    for i in range(5):
        ma.add({"a": steps(10 * i, 6, eps_id=np.full(6, i)), "b": steps(100 + 10 * i, 6, eps_id=np.full(6, i))})
    if isinstance(ma, MultiAgentMixInReplayBuffer):
        ma.sample(3)
    ma.save(tmp_path / "ma")
    clones = [ReplayTables.load(tmp_path / "ma"), pickle.loads(pickle.dumps(ma)), copy.deepcopy(ma)]
    fresh = make()
    fresh.set_state(ma.get_state())
    clones.append(fresh)
    stats = ma.stats()
    expected = ma.sample(4).policy_batches
    for c in clones:
        assert type(c) is type(ma) and c.stats() == stats
        got = c.sample(4).policy_batches
        assert set(got) == set(expected) == ({"a", "b"})
        for pid in got:
            assert all(np.array_equal(got[pid][k], expected[pid][k]) for k in expected[pid])
    assert lock == (list(ma.replay_buffers) == ["__all__"])


# ---------------------------------------------------------------- from_config
def test_from_config_strict_keys_and_types() -> None:
    with pytest.raises(ConfigError, match="capacty"):
        from_config({"type": "ReplayBuffer", "capacty": 10})
    with pytest.raises(ConfigError, match="worker_side_prioritization"):   # RLlib refuses it without PER too
        from_config({"type": "MultiAgentReplayBuffer", "worker_side_prioritization": True})
    with pytest.raises(ConfigError, match="algorithm settings"):              # not an RLlib key, not an argument
        from_config({"type": "ReplayBuffer", "replay_batch_size": 32})
    with pytest.raises(ConfigError, match="type"):
        from_config({"capacity": 10})
    for bad_type in ("NoSuchBuffer", "ray.rllib.utils.replay_buffers.NoSuch", "no_such_module.Buffer", 3,
                     "ReplayTables.rllib:Nope"):
        with pytest.raises(ConfigError, match="type"):
            from_config({"type": bad_type})
    with pytest.raises(ConfigError):
        from_config(["type", "ReplayBuffer"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alias"):
        from_config({"type": "MultiAgentReplayBuffer", "underlying_buffer_config": {},
                     "underlying_replay_buffer_config": {}})
    with pytest.raises(ConfigError, match="evict"):
        from_config({"type": "MultiAgentReplayBuffer", "underlying_replay_buffer_config": {"evict": 3}})
    with pytest.raises(ConfigError, match="storage_unit"):
        from_config({"type": "PrioritizedReplayBuffer", "storage_unit": "steps"})
    b = from_config({"type": "ReplayTables.rllib:PrioritizedReplayBuffer", "alpha": 0.3, "capacity": 7})
    assert isinstance(b, PrioritizedReplayBuffer) and b.alpha == 0.3 and b.capacity == 7
    ma = from_config({"type": "MultiAgentReplayBuffer", "underlying_replay_buffer_config": {
        "type": "PrioritizedReplayBuffer", "alpha": 0.7, "beta": 0.0, "capacity": 20}})
    ma.add(steps(0, 3))
    assert ma.replay_buffers["default_policy"].alpha == 0.7 and ma.replay_buffers["default_policy"].capacity == 20
    assert (ma.sample(5).policy_batches["default_policy"]["weights"] == 1.0).all()


@settings(max_examples=int(os.environ.get("RT_EXAMPLES", "40")), deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6), st.lists(st.integers(1, 15), min_size=1, max_size=6),
       st.integers(1, 5), st.integers(0, 3))
def test_sequence_windows_match_a_slicing_model(episode_lengths: list[int], add_sizes: list[int], chunk: int,
                                                 burn_in: int) -> None:
    """Every stored window equals the model: B steps before the chunk from the same episode
    (zeros otherwise), the chunk, zero padding; chunks restart at each add's episode runs."""
    eps = np.repeat(np.arange(len(episode_lengths)), episode_lengths)
    total = eps.shape[0]
    L = chunk + burn_in
    assume(L > 1)                                  # replay_sequence_length=1 means "as seq_lens says"
    ma = MultiAgentReplayBuffer(capacity=1000, storage_unit="sequences", replay_sequence_length=L,
                                replay_burn_in=burn_in, seed=0, underlying_buffer_config={"zero_pad": True})
    expected = []
    start = 0
    sizes = list(add_sizes)
    while start < total:
        n = min(sizes.pop(0) if sizes else total, total - start)
        ma.add({"obs": np.arange(start, start + n, dtype=np.float64) + 1, "eps_id": eps[start:start + n]})
        run_start = start
        for i in range(start, start + n + 1):
            if i == start + n or eps[i] != eps[run_start]:
                for c in range(run_start, i, chunk):
                    c_end = min(c + chunk, i)
                    window = [float(j + 1) if j >= 0 and eps[j] == eps[c] else 0.0 for j in range(c - burn_in, c)]
                    window += [float(j + 1) for j in range(c, c_end)]
                    window += [0.0] * (L - len(window))
                    expected.append(window)
                run_start = i
        start += n
    buf = ma.replay_buffers["default_policy"]
    got = buf.get(buf.item_ids())
    assert got["obs"].reshape(-1, L).tolist() == expected
    assert (got["mask"].reshape(-1, L) == (got["obs"].reshape(-1, L) != 0)).all()
