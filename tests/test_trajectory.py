"""Step-stream replay: frames stored once, frame stacks, n-step targets, sequences.

Every observation is ``[stream, episode, t]`` (float32), so each sampled frame
says exactly which step of which episode it is; a reference model of the
episodes (plain Python lists) then gives the expected stack, return, discount
and bootstrap frame of every stored transition, whatever was evicted.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ReplayTables
from ReplayTables.errors import ConfigError, EmptyBufferError, EpisodeError, ReplayTablesError, SchemaError
from ReplayTables.PER import PERConfig
from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay


# ---------------------------------------------------------------- reference model
class Episodes:
    """The steps fed to a buffer, per stream and episode, in plain lists."""

    def __init__(self, streams: int) -> None:
        self.eps: list[list[dict]] = [[] for _ in range(streams)]
        self.open = [False] * streams

    def begin(self, s: int) -> np.ndarray:
        e = len(self.eps[s])
        self.eps[s].append({"rewards": [], "term": [], "trunc": [], "actions": []})
        return np.array([s, e, 0], dtype=np.float32)

    def step(self, s: int, action: int, reward: float, term: bool, trunc: bool) -> np.ndarray:
        ep = self.eps[s][-1]
        ep["actions"].append(action)
        ep["rewards"].append(reward)
        ep["term"].append(term)
        ep["trunc"].append(trunc)
        return np.array([s, len(self.eps[s]) - 1, len(ep["rewards"])], dtype=np.float32)

    def stack(self, s: int, e: int, t: int, k: int, zeros: bool) -> np.ndarray:
        out = []
        for back in range(k - 1, -1, -1):
            j = t - back
            if j < 0:
                out.append(np.zeros(3, np.float32) if zeros else np.array([s, e, 0], np.float32))
            else:
                out.append(np.array([s, e, j], np.float32))
        return np.stack(out)

    def expected(self, s: int, e: int, t: int, n: int, gamma: float, k: int, zeros: bool) -> dict:
        ep = self.eps[s][e]
        m, ret = n, 0.0
        for j in range(n):
            ret += gamma ** j * ep["rewards"][t + j]
            if ep["term"][t + j] or ep["trunc"][t + j]:
                m = j + 1
                break
        last = t + m - 1
        term = ep["term"][last]
        return {"obs": self.stack(s, e, t, k, zeros), "next_obs": self.stack(s, e, t + m, k, zeros),
                "action": ep["actions"][t], "returns": ret, "discount": 0.0 if term else gamma ** m,
                "steps": m, "terminated": term, "truncated": ep["trunc"][last]}

    def complete(self, n: int) -> int:
        total = 0
        for eps in self.eps:
            for ep in eps:
                L = len(ep["rewards"])
                ended = L > 0 and (ep["term"][-1] or ep["trunc"][-1])
                total += L if ended else max(0, L - (n - 1))
        return total


def run(buffer: TrajectoryReplay, model: Episodes, rng: np.random.Generator, steps: int, p_end: float,
        p_trunc: float = 0.5) -> None:
    """Drive ``buffer`` and ``model`` with the same random step stream (random stream subsets)."""
    S = buffer.num_streams
    model_open = model.open
    for _ in range(steps):
        closed = [s for s in range(S) if not model_open[s]]
        if closed:
            obs = np.stack([model.begin(s) for s in closed])
            buffer.begin_episodes(obs, streams=np.array(closed))
            for s in closed:
                model_open[s] = True
        chosen = np.flatnonzero(rng.random(S) < 0.8)
        if chosen.size == 0:
            continue
        ends = rng.random(chosen.size) < p_end
        trunc = ends & (rng.random(chosen.size) < p_trunc)
        term = ends & ~trunc
        actions = rng.integers(0, 100, chosen.size)
        rewards = np.round(rng.normal(size=chosen.size), 3).astype(np.float32)
        nxt = np.stack([model.step(int(s), int(a), float(r), bool(te), bool(tr))
                        for s, a, r, te, tr in zip(chosen, actions, rewards, term, trunc)])
        buffer.add_steps(actions, rewards, nxt, term, trunc, streams=chosen)
        for s, end in zip(chosen, ends):
            if end:
                model_open[int(s)] = False


def check_all(buffer: TrajectoryReplay, model: Episodes) -> int:
    ids = buffer.ids()
    if ids.size == 0:
        return 0
    b = buffer.get(ids)
    k, n, g = buffer.frame_stack, buffer.n_step, buffer.gamma
    zeros = buffer.stack_padding == "zeros"
    for i in range(len(ids)):
        last = b.obs[i] if k == 1 else b.obs[i][-1]
        s, e, t = (int(v) for v in last)
        exp = model.expected(s, e, t, n, g, k, zeros)
        obs = b.obs[i] if k > 1 else b.obs[i][None]
        nxt = b.next_obs[i] if k > 1 else b.next_obs[i][None]
        np.testing.assert_array_equal(obs, exp["obs"])
        np.testing.assert_array_equal(nxt, exp["next_obs"])
        assert b.action[i] == exp["action"]
        assert b.returns[i] == pytest.approx(exp["returns"], rel=1e-5, abs=1e-5)
        assert b.discount[i] == pytest.approx(exp["discount"], rel=1e-12)
        assert b.steps[i] == exp["steps"]
        assert bool(b.terminated[i]) == exp["terminated"]
        assert bool(b.truncated[i]) == exp["truncated"]
    return len(ids)


# ---------------------------------------------------------------- n-step, stacks: property tests
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=st.integers(1, 3), n=st.integers(1, 4), k=st.integers(1, 4), zeros=st.booleans(),
       gamma=st.sampled_from([0.0, 0.5, 0.9, 1.0]), p_end=st.sampled_from([0.05, 0.3, 0.7]),
       seed=st.integers(0, 2**16))
def test_nstep_and_stacks_match_reference_without_eviction(streams, n, k, zeros, gamma, p_end, seed):
    rng = np.random.default_rng(seed)
    buf = TrajectoryReplay(400 * streams, (3,), np.float32, num_streams=streams, n_step=n, gamma=gamma,
                           frame_stack=k, stack_padding="zeros" if zeros else "repeat", rng=rng)
    model = Episodes(streams)
    run(buf, model, rng, 60, p_end)
    assert check_all(buf, model) == model.complete(n) == len(buf)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=st.integers(1, 3), n=st.integers(1, 4), k=st.integers(1, 4), extra=st.integers(0, 12),
       p_end=st.sampled_from([0.02, 0.2, 0.6]), seed=st.integers(0, 2**16))
def test_every_stored_transition_is_right_after_eviction(streams, n, k, extra, p_end, seed):
    rng = np.random.default_rng(seed)
    per_stream = n + k + 2 + extra
    buf = TrajectoryReplay(per_stream * streams, (3,), np.float32, num_streams=streams, n_step=n, gamma=0.9,
                           frame_stack=k, rng=rng)
    model = Episodes(streams)
    run(buf, model, rng, 150, p_end)
    check_all(buf, model)
    assert buf.stats()["evicted"] > 0


def test_stack_at_episode_start_repeats_first_frame_or_zeros():
    for padding, fill in (("repeat", 0.0), ("zeros", None)):
        buf = TrajectoryReplay(50, (3,), np.float32, frame_stack=4, stack_padding=padding)
        model = Episodes(1)
        buf.begin_episode(model.begin(0))
        buf.add_step(1, 1.0, model.step(0, 1, 1.0, False, False), False, False)
        # second episode: its first stack must not show frames of the first
        buf.add_step(2, 1.0, model.step(0, 2, 1.0, True, False), True, False)
        buf.begin_episode(model.begin(0))
        ids = buf.add_step(3, 1.0, model.step(0, 3, 1.0, False, False), False, False)
        b = buf.get(ids)
        first = np.array([0, 1, 0], np.float32)
        expected = np.stack([first if fill is not None else np.zeros(3, np.float32)] * 3 + [first])
        np.testing.assert_array_equal(b.obs[0], expected)
        assert b.next_obs[0][-1].tolist() == [0, 1, 1]
        assert b.next_obs[0][-2].tolist() == ([0, 1, 0])


def test_truncation_bootstraps_from_final_obs_and_termination_does_not():
    buf = TrajectoryReplay(50, (3,), np.float32, n_step=3, gamma=0.5)
    model = Episodes(1)
    buf.begin_episode(model.begin(0))
    buf.add_step(0, 1.0, model.step(0, 0, 1.0, False, False), False, False)
    ids = buf.add_step(0, 2.0, model.step(0, 0, 2.0, False, True), False, True)
    b = buf.get(ids)
    assert b.returns.tolist() == [1.0 + 0.5 * 2.0, 2.0]
    assert b.discount.tolist() == [0.25, 0.5]
    assert b.truncated.all() and not b.terminated.any()
    assert b.next_obs[:, 2].tolist() == [2, 2]  # the final observation, stored once
    buf.begin_episode(model.begin(0))
    buf.add_step(0, 1.0, model.step(0, 0, 1.0, False, False), False, False)
    ids = buf.add_step(0, 4.0, model.step(0, 0, 4.0, True, False), True, False)
    b = buf.get(ids)
    assert b.returns.tolist() == [3.0, 4.0]
    assert b.discount.tolist() == [0.0, 0.0]
    assert b.terminated.all()


def test_next_obs_is_stored_once():
    """An episode of L steps takes L + 1 frames: bytes per transition stay near one frame."""
    buf = TrajectoryReplay(10_000, (84, 84), np.uint8)
    frame = np.zeros((84, 84), np.uint8)
    buf.begin_episode(frame)
    for t in range(999):
        buf.add_step(0, 0.0, frame, False, t == 998)
    assert buf.stats()["frame_bytes"] == 10_000 * 84 * 84  # one frame per record, no next_obs array
    assert len(buf) == 999


# ---------------------------------------------------------------- prioritized
def test_prioritized_nstep_update_and_stale_ids():
    rng = np.random.default_rng(1)
    buf = TrajectoryReplay(40, (3,), np.float32, n_step=2, per=PERConfig(priority_exponent=1.0,
                                                                         uniform_probability=0.0), rng=rng)
    model = Episodes(1)
    run(buf, model, rng, 30, 0.1)
    ids = buf.ids()
    weights = np.full(ids.size, 1e-3)
    weights[0] = 1.0
    assert buf.update_priorities(ids, weights) == ids.size
    b = buf.sample(2000)
    share = float((b.ids == ids[0]).mean())
    expected = 1.0 / (1.0 + 1e-3 * (ids.size - 1))
    assert abs(share - expected) < 0.03  # binomial sd < 0.011 at n=2000
    assert b.weights.min() > 0 and b.weights.max() <= 1.0 + 1e-12
    run(buf, model, rng, 80, 0.1)  # overwrite everything
    applied = buf.update_priorities(ids, np.ones(ids.size))
    live = np.isin(ids, buf.ids()).sum()
    assert applied == live
    assert buf.stats()["stale_updates"] == ids.size - live
    with pytest.raises(ReplayTablesError):
        buf.get(ids[~np.isin(ids, buf.ids())][:1])


def test_given_priority_mode_is_refused():
    with pytest.raises(ConfigError):
        TrajectoryReplay(40, (3,), per=PERConfig(new_priority_mode="given"))


# ---------------------------------------------------------------- sequences
def seq_run(pad: bool, burn_in: int, T: int, per_stream: int, seed: int, steps: int = 200):
    rng = np.random.default_rng(seed)
    buf = TrajectoryReplay(per_stream * 2, (3,), np.float32, num_streams=2,
                           sequence=SequenceConfig(T, burn_in=burn_in, pad=pad), rng=rng)
    model = Episodes(2)
    run(buf, model, rng, steps, 0.08)
    return buf, model


@pytest.mark.parametrize("burn_in", [0, 3])
@pytest.mark.parametrize("per_stream", [30, 1000])
def test_sequences_never_cross_episodes(burn_in, per_stream):
    buf, model = seq_run(False, burn_in, 5, per_stream, seed=per_stream + burn_in)
    b = buf.sample_sequences(300)
    L = burn_in + 5
    assert b.obs.shape == (300, L, 3) and b.mask.all()
    for i in range(300):
        s, e = b.obs[i, 0, 0], b.obs[i, 0, 1]
        assert (b.obs[i, :, 0] == s).all() and (b.obs[i, :, 1] == e).all()
        t = b.obs[i, :, 2]
        np.testing.assert_array_equal(t, t[0] + np.arange(L))
        np.testing.assert_array_equal(b.next_obs[i, :, 2], t + 1)
        ep = model.eps[int(s)][int(e)]
        np.testing.assert_array_equal(b.action[i], ep["actions"][int(t[0]):int(t[0]) + L])
    if per_stream == 1000:  # nothing evicted: the index holds exactly the valid windows
        expected = 0
        for eps in model.eps:
            for ep in eps:
                expected += max(0, len(ep["rewards"]) - (L - 1))
        assert buf.num_sequences() == expected


@pytest.mark.parametrize("per_stream", [30, 1000])
def test_padded_sequences_mask_and_zero_outside_the_episode(per_stream):
    burn_in, T = 4, 6
    buf, model = seq_run(True, burn_in, T, per_stream, seed=7)
    b = buf.sample_sequences(400)
    assert (~b.mask).any()
    for i in range(400):
        m = b.mask[i]
        assert m[burn_in]  # the anchor is a real step
        assert (b.obs[i][~m] == 0).all() and (b.action[i][~m] == 0).all() and (b.reward[i][~m] == 0).all()
        real = b.obs[i][m]
        s, e = real[0, 0], real[0, 1]
        assert (real[:, 0] == s).all() and (real[:, 1] == e).all()
        np.testing.assert_array_equal(real[:, 2], real[0, 2] + np.arange(len(real)))
        ep = model.eps[int(s)][int(e)]
        first = int(real[0, 2])
        # padding only where the episode really starts or ends
        if not m[0]:
            assert first == 0
        if not m[-1]:
            last = first + len(real) - 1
            assert ep["term"][last] or ep["trunc"][last]


def test_sequence_sampling_errors():
    buf = TrajectoryReplay(100, (3,), sequence=SequenceConfig(5))
    with pytest.raises(EmptyBufferError):
        buf.sample_sequences(4)
    with pytest.raises(ConfigError):
        TrajectoryReplay(100, (3,)).sample_sequences(4)
    with pytest.raises(ConfigError):
        SequenceConfig(0)


# ---------------------------------------------------------------- bad input leaves the buffer unchanged
def snapshot(buf: TrajectoryReplay) -> tuple:
    state = buf.state_dict()
    arrays = {k: np.array(v, copy=True) for k, v in state.pop("arrays").items()}
    return state, arrays


def assert_same(buf: TrajectoryReplay, snap: tuple) -> None:
    state, arrays = snapshot(buf)
    assert state == snap[0]
    assert arrays.keys() == snap[1].keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], snap[1][key], err_msg=key)


def make_two_stream() -> TrajectoryReplay:
    buf = TrajectoryReplay(60, (2, 2), np.uint8, num_streams=2, n_step=2, frame_stack=2,
                           extras={"logp": ((), np.float32)}, sequence=SequenceConfig(2))
    buf.begin_episodes(np.zeros((2, 2, 2), np.uint8))
    for t in range(5):
        buf.add_steps([1, 2], [0.5, 0.5], np.full((2, 2, 2), t, np.uint8), [False, t == 4], [False, False],
                      logp=np.zeros(2, np.float32))
    return buf


BAD_CALLS = {
    "step after terminal": lambda b: b.add_steps([1, 2], [0.0, 0.0], np.zeros((2, 2, 2), np.uint8),
                                                 [False, False], [False, False], logp=np.zeros(2)),
    "begin twice": lambda b: b.begin_episode(np.zeros((2, 2), np.uint8), stream=0),
    "stream count": lambda b: b.add_steps([1, 2, 3], [0.0, 0.0, 0.0], np.zeros((3, 2, 2), np.uint8),
                                          [False] * 3, [False] * 3, streams=[0], logp=np.zeros(3)),
    "obs rows vs streams": lambda b: b.add_steps([1], [0.0], np.zeros((2, 2, 2), np.uint8), [False], [False],
                                                 streams=[0], logp=np.zeros(1)),
    "frame shape": lambda b: b.add_step(1, 0.0, np.zeros((3, 2), np.uint8), False, False, logp=0.0),
    "frame dtype": lambda b: b.add_step(1, 0.0, np.zeros((2, 2), np.float64), False, False, logp=0.0),
    "begin frame shape": lambda b: b.begin_episode(np.zeros((2, 3), np.uint8), stream=1),
    "missing extra": lambda b: b.add_step(1, 0.0, np.zeros((2, 2), np.uint8), False, False),
    "unknown extra": lambda b: b.add_step(1, 0.0, np.zeros((2, 2), np.uint8), False, False, logp=0.0, v=1.0),
    "nan reward": lambda b: b.add_step(1, float("nan"), np.zeros((2, 2), np.uint8), False, False, logp=0.0),
    "float action": lambda b: b.add_step(1.5, 0.0, np.zeros((2, 2), np.uint8), False, False, logp=0.0),
    "flag not bool": lambda b: b.add_step(1, 0.0, np.zeros((2, 2), np.uint8), 2, False, logp=0.0),
    "stream out of range": lambda b: b.add_step(1, 0.0, np.zeros((2, 2), np.uint8), False, False, stream=2,
                                                logp=0.0),
    "duplicate streams": lambda b: b.add_steps([1, 2], [0.0, 0.0], np.zeros((2, 2, 2), np.uint8),
                                               [False, False], [False, False], streams=[0, 0], logp=np.zeros(2)),
    "bad mask": lambda b: b.begin_episodes(np.zeros((1, 2, 2), np.uint8), streams=np.array([True])),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input_raises_and_leaves_buffer_unchanged(name):
    buf = make_two_stream()
    snap = snapshot(buf)
    with pytest.raises(ReplayTablesError) as info:
        BAD_CALLS[name](buf)
    assert isinstance(info.value, (EpisodeError, SchemaError))
    assert_same(buf, snap)


def test_mixed_batch_with_one_closed_stream_changes_nothing():
    buf = make_two_stream()  # stream 1 terminated
    snap = snapshot(buf)
    with pytest.raises(EpisodeError, match="stream"):
        buf.add_steps([1, 2], [0.0, 0.0], np.zeros((2, 2, 2), np.uint8), [False, False], [False, False],
                      logp=np.zeros(2))
    assert_same(buf, snap)
    buf.begin_episodes(np.ones((1, 2, 2), np.uint8), streams=[1])  # the fix
    buf.add_steps([1, 2], [0.0, 0.0], np.zeros((2, 2, 2), np.uint8), [False, False], [False, False],
                  logp=np.zeros(2))


@pytest.mark.parametrize("kwargs", [{"capacity": 3}, {"frame_stack": 0}, {"n_step": 0}, {"gamma": 1.5},
                                    {"stack_padding": "edge"}, {"storage": "disk"}, {"storage": "memmap"},
                                    {"num_streams": 0}, {"extras": {"reward": ((), np.float32)}},
                                    {"extras": {"x": 3}}])
def test_bad_config(kwargs):
    args = {"capacity": 100, "obs_shape": (3,)}
    args.update(kwargs)
    with pytest.raises(ConfigError):
        TrajectoryReplay(**args)


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("per", [None, PERConfig()])
def test_save_load_round_trip(tmp_path, per):
    rng = np.random.default_rng(3)
    buf = TrajectoryReplay(80, (3,), np.float32, num_streams=2, n_step=3, frame_stack=2, per=per,
                           sequence=SequenceConfig(4, burn_in=2, pad=True), rng=rng)
    model = Episodes(2)
    run(buf, model, rng, 120, 0.1)
    if per is not None:
        buf.update_priorities(buf.ids(), rng.random(len(buf)))
    buf.save(tmp_path / "ck")
    back = ReplayTables.load(tmp_path / "ck")
    assert type(back) is TrajectoryReplay and len(back) == len(buf)
    a, b = buf.sample(16), back.sample(16)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.weights, b.weights)
    sa, sb = buf.sample_sequences(8), back.sample_sequences(8)
    np.testing.assert_array_equal(sa.obs, sb.obs)
    np.testing.assert_array_equal(sa.mask, sb.mask)
    check_all(back, model)
    # the loaded buffer carries on the open episodes exactly like the original
    clone = Episodes(2)
    clone.eps = [[{k: list(v) for k, v in ep.items()} for ep in eps] for eps in model.eps]
    clone.open = list(model.open)
    run(buf, model, np.random.default_rng(9), 40, 0.1)
    run(back, clone, np.random.default_rng(9), 40, 0.1)
    np.testing.assert_array_equal(buf.ids(), back.ids())
    check_all(back, clone)


def test_pickle_round_trip():
    import pickle

    buf = make_two_stream()
    back = pickle.loads(pickle.dumps(buf))
    np.testing.assert_array_equal(back.get(buf.ids()).obs, buf.get(buf.ids()).obs)


# ---------------------------------------------------------------- the single-step path equals the batched one
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), k=st.integers(1, 3), burn_in=st.integers(0, 2), pad=st.booleans(),
       prioritized=st.booleans(), seed=st.integers(0, 2**16))
def test_add_step_matches_add_steps(n, k, burn_in, pad, prioritized, seed):
    def make():
        return TrajectoryReplay(2 * (n + max(k, burn_in + 3) + 6), (3,), np.float32, num_streams=2, n_step=n,
                                frame_stack=k, sequence=SequenceConfig(3, burn_in=burn_in, pad=pad),
                                per=PERConfig() if prioritized else None, rng=np.random.default_rng(0))
    one, many = make(), make()
    rng = np.random.default_rng(seed)
    for target in (one, many):
        target.begin_episodes(np.zeros((2, 3), np.float32))
    for t in range(120):
        s = int(rng.integers(2))
        end = bool(rng.random() < 0.15)
        trunc = end and bool(rng.random() < 0.5)
        obs = np.array([s, t, 1], np.float32)
        a = one.add_step(t, 0.5, obs, end and not trunc, trunc, stream=s)
        b = many.add_steps([t], [0.5], obs[None], [end and not trunc], [trunc], streams=[s])
        np.testing.assert_array_equal(a, b)
        if end:
            for target in (one, many):
                target.begin_episode(np.array([s, t, 2], np.float32), stream=s)
    sa, sb = snapshot(one), snapshot(many)
    assert sa[0] == sb[0]
    for key in sa[1]:
        np.testing.assert_array_equal(sa[1][key], sb[1][key], err_msg=key)
