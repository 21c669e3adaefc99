"""Our new-stack episode buffers against RLlib's on the same inputs, and our own rules.

Episodes here encode where every value came from: episode ``k`` has observations
``1000 k + t``, action ``t`` at observation ``t`` and reward ``0.1 t`` with
observation ``t``, so a sampled transition can be checked by its numbers alone.
They arrive in chunks (as RLlib's env runners send them), interleaved across
episodes, which makes the store link rows of one episode across chunks and
compact them as it evicts.
"""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer as RLlibEpisodeReplayBuffer
from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
    PrioritizedEpisodeReplayBuffer as RLlibPrioritizedEpisodeReplayBuffer,
)

from ReplayTables.errors import (
    ConfigError,
    EmptyBufferError,
    EpisodeError,
    PriorityError,
    ReplayTablesError,
    SchemaError,
)
from ReplayTables.rllib import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer

GAMMA = 0.9


def chunk(k: int, start: int, stop: int, length: int, terminated: bool = True, obs_dim: int = 0) -> SingleAgentEpisode:
    """Steps ``start..stop`` of episode ``k`` (``length`` steps in all) as an RLlib chunk."""
    t = np.arange(start, stop + 1)
    obs = 1000.0 * k + t
    observations = list(obs) if not obs_dim else list(np.repeat(obs[:, None], obs_dim, axis=1))
    end = stop == length
    return SingleAgentEpisode(
        id_=f"e{k}", observations=observations, actions=list(t[:-1]), rewards=list(0.1 * t[1:]),
        infos=[{} for _ in t], terminated=end and terminated, truncated=end and not terminated,
        t_started=start, len_lookback_buffer=0)


def chunked_stream(n_episodes: int, seed: int, max_len: int = 40, parallel: int = 3) -> list[list[SingleAgentEpisode]]:
    """Adds as an env runner with ``parallel`` envs makes them: lists of chunks of interleaved episodes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, size=n_episodes)
    pos = {k: 0 for k in range(min(parallel, n_episodes))}
    nxt = len(pos)
    adds = []
    while pos:
        batch = []
        for k in list(pos):
            stop = min(int(lengths[k]), pos[k] + int(rng.integers(1, 12)))
            batch.append(chunk(k, pos[k], stop, int(lengths[k]), terminated=bool(k % 3)))
            pos[k] = stop
            if stop == lengths[k]:
                del pos[k]
                if nxt < n_episodes:
                    pos[nxt] = 0
                    nxt += 1
        adds.append(batch)
    return adds


def seeded(cls: type, **kwargs: object) -> object:
    buf = cls(**kwargs)
    buf.rng = np.random.default_rng(0)  # type: ignore[attr-defined]
    return buf


def stored(buffer: object) -> list[tuple]:  # type: ignore[type-arg]
    return [(e.id_, np.asarray(e.get_observations()).tolist(), np.asarray(e.get_actions()).tolist(),
             np.round(np.asarray(e.get_rewards(), dtype=float), 9).tolist(), bool(e.is_terminated),
             bool(e.is_truncated)) for e in buffer.episodes]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ what RLlib stores, we store
@pytest.mark.parametrize("ours, theirs", [(EpisodeReplayBuffer, RLlibEpisodeReplayBuffer),
                                          (PrioritizedEpisodeReplayBuffer, RLlibPrioritizedEpisodeReplayBuffer)])
def test_chunked_interleaved_adds_store_what_rllib_stores(ours: type, theirs: type) -> None:
    """Chunks continue their episodes, evictions take the oldest whole, counters agree, after
    every add; 120 episodes through a 150-step buffer force many compactions of the rows."""
    a, b = ours(capacity=150), theirs(capacity=150)
    for batch in chunked_stream(120, seed=1):
        for eps in batch:  # RLlib's prioritized buffer cannot evict within one list; add one by one
            a.add(eps)
            b.add(eps)
        assert (a.get_num_timesteps(), a.get_num_episodes(), a.get_num_episodes_evicted(),
                a.get_added_timesteps()) == (b.get_num_timesteps(), b.get_num_episodes(),
                                             b.get_num_episodes_evicted(), b.get_added_timesteps())
    assert stored(a) == stored(b)
    assert a.get_num_episodes_evicted() > 50


def test_one_list_of_chunks_is_stored_like_rllib() -> None:
    a, b = EpisodeReplayBuffer(capacity=150), RLlibEpisodeReplayBuffer(capacity=150)
    for batch in chunked_stream(60, seed=2):
        a.add(batch)
        b.add(batch)
    assert stored(a) == stored(b)


# ------------------------------------------------------------------ samples
def _filled(cls: type, seed: int = 3, **kwargs: object) -> object:
    buf = seeded(cls, capacity=400, **kwargs)
    for batch in chunked_stream(40, seed=seed):
        buf.add(batch)  # type: ignore[attr-defined]
    return buf


def _check_transitions(buffer: object, sample: list, n_expected: np.ndarray | int, gamma: float,
                       cut_at_end: bool) -> None:  # type: ignore[type-arg]
    episodes = {e.id_: e for e in buffer.episodes}  # type: ignore[attr-defined]
    for eps, n in zip(sample, np.broadcast_to(n_expected, (len(sample),))):
        full = episodes[eps.id_]
        o0, o1 = eps.get_observations(0), eps.get_observations(-1)
        t = round(o0 % 1000)
        assert eps.t_started == t and eps.get_actions(0) == t
        m = min(int(n), len(full) - t) if cut_at_end else int(n)
        assert o1 == o0 + m
        expected = sum(gamma ** j * 0.1 * (t + 1 + j) for j in range(m))
        assert abs(eps.get_rewards(0) - expected) < 1e-9
        at_end = t + m == len(full)
        assert eps.is_terminated == (at_end and full.is_terminated)
        assert eps.is_truncated == (at_end and full.is_truncated)
        assert eps.get_extra_model_outputs("n_step", 0) == n


@pytest.mark.parametrize("n_step", [1, 3, (1, 6)])
def test_uniform_n_step_transitions(n_step: int | tuple[int, int]) -> None:
    """RLlib's uniform episode sample: the n-step is cut short at an episode's end."""
    buf = _filled(EpisodeReplayBuffer)
    sample = buf.sample(256, n_step=n_step, gamma=GAMMA, sample_episodes=True)  # type: ignore[attr-defined]
    assert len(sample) == 256
    n = np.array([e.get_extra_model_outputs("n_step", 0) for e in sample])
    if isinstance(n_step, tuple):
        assert set(n.tolist()) == set(range(*n_step))
    _check_transitions(buf, sample, n, GAMMA, cut_at_end=True)
    assert any(e.is_terminated for e in sample) and any(e.is_truncated for e in sample)


@pytest.mark.parametrize("to_numpy", [False, True])
def test_prioritized_n_step_transitions_fit_their_episode(to_numpy: bool) -> None:
    """RLlib's prioritized sample draws again a start too close to the end for the n-step."""
    buf = _filled(PrioritizedEpisodeReplayBuffer)
    sample = buf.sample(256, n_step=4, gamma=GAMMA, to_numpy=to_numpy)  # type: ignore[attr-defined]
    _check_transitions(buf, sample, 4, GAMMA, cut_at_end=False)
    assert buf.get_metrics()["num_resamples"] > 0  # type: ignore[attr-defined]
    if to_numpy:
        assert all(isinstance(e.get_observations(), np.ndarray) for e in sample)


def test_uniform_draws_are_uniform_over_steps() -> None:
    """Every stored step is a start with probability 1 / steps (chi-square at 16 seeds' worth of
    draws, 99.9% bound); the negative control (starts weighted by episode) must fail the bound."""
    buf = _filled(EpisodeReplayBuffer)
    counts: dict[tuple, int] = {}  # type: ignore[type-arg]
    draws = 40_000
    for _ in range(draws // 1000):
        for e in buf.sample(1000, n_step=1, sample_episodes=True):  # type: ignore[attr-defined]
            key = (e.id_, e.t_started)
            counts[key] = counts.get(key, 0) + 1
    steps = buf.get_num_timesteps()  # type: ignore[attr-defined]
    observed = np.array([counts.get((e.id_, t), 0) for e in buf.episodes for t in range(len(e))])  # type: ignore
    assert observed.size == steps
    from scipy import stats

    bound = stats.chi2.ppf(0.999, steps - 1)
    expected = np.full(steps, draws / steps)
    assert ((observed - expected) ** 2 / expected).sum() < bound
    lengths = np.array([len(e) for e in buf.episodes for _ in range(len(e))])  # type: ignore[attr-defined]
    wrong = draws / len(buf.episodes) / lengths  # type: ignore[attr-defined]
    assert ((observed - wrong) ** 2 / wrong).sum() > bound


def test_prioritized_draws_and_weights_follow_the_priorities() -> None:
    """One 10-step episode with priorities p_i: draws ~ p_i^alpha (chi-square, 99.9% bound;
    the uniform negative control fails it) and weights are exactly (q_i / q_min)^-beta."""
    alpha, beta = 0.7, 0.5
    buf = seeded(PrioritizedEpisodeReplayBuffer, capacity=100, alpha=alpha)
    buf.add(chunk(0, 0, 10, 10))  # type: ignore[attr-defined]
    p = np.linspace(0.1, 2.0, 10)
    for _ in range(20):  # every step gets its priority p_t (sampled steps are updated by t)
        s = buf.sample(10, n_step=1)  # type: ignore[attr-defined]
        buf.update_priorities(p[[e.t_started for e in s]])  # type: ignore[attr-defined]
    q = p ** alpha
    draws = 20_000
    s = buf.sample(draws, n_step=1, beta=beta)  # type: ignore[attr-defined]
    t = np.array([e.t_started for e in s])
    w = np.array([e.get_extra_model_outputs("weights", 0) for e in s])
    np.testing.assert_allclose(w, (q[t] / q.min()) ** -beta, rtol=1e-12)
    observed = np.bincount(t, minlength=10)
    from scipy import stats

    bound = stats.chi2.ppf(0.999, 9)
    expected = draws * q / q.sum()
    assert ((observed - expected) ** 2 / expected).sum() < bound
    uniform = np.full(10, draws / 10)
    assert ((observed - uniform) ** 2 / uniform).sum() > bound


def test_batch_sample_rows_continue_with_whole_episodes() -> None:
    buf = _filled(EpisodeReplayBuffer)
    out = buf.sample(batch_size_B=8, batch_length_T=50)  # type: ignore[attr-defined]
    obs, actions, rewards = out["obs"], out["actions"], out["rewards"]
    assert obs.shape == actions.shape == rewards.shape == (8, 50)
    t = np.round(obs % 1000).astype(int)
    starts = out["is_first"]
    # inside a segment, observations count up by one; a new segment after the first starts at t = 0
    inside = ~starts[:, 1:]
    assert np.all(np.where(inside, np.diff(obs, axis=1) == 1, True))
    assert np.all(t[:, 1:][starts[:, 1:]] == 0)
    np.testing.assert_allclose(rewards, 0.1 * t)
    assert np.all(np.where(out["is_last"], True, actions == t))


def test_sequences_with_lookback_are_rllib_slices() -> None:
    """``batch_length_T`` slices equal RLlib's ``episode.slice`` with the same lookback."""
    buf = _filled(EpisodeReplayBuffer)
    episodes = {e.id_: e for e in buf.episodes}  # type: ignore[attr-defined]
    sample = buf.sample(64, n_step=1, batch_length_T=5, lookback=2, sample_episodes=True)  # type: ignore
    assert sample
    for eps in sample:
        full = episodes[eps.id_]
        start = eps.t_started
        ref = full.slice(slice(start, min(start + 5, len(full))), len_lookback_buffer=2)
        for name in ("observations", "actions", "rewards"):
            got, want = getattr(eps, name), getattr(ref, name)
            assert got.lookback == want.lookback, name
            np.testing.assert_allclose(np.asarray(got.data, dtype=float), np.asarray(want.data, dtype=float))
        assert (eps.is_terminated, eps.is_truncated) == (ref.is_terminated, ref.is_truncated)
        assert len(eps.get_extra_model_outputs("n_step")) == len(eps)


def test_min_batch_length_rejects_short_starts() -> None:
    buf = _filled(EpisodeReplayBuffer)
    episodes = {e.id_: e for e in buf.episodes}  # type: ignore[attr-defined]
    sample = buf.sample(64, n_step=1, batch_length_T=4, min_batch_length_T=3, sample_episodes=True)  # type: ignore
    assert all(e.t_started + 3 < len(episodes[e.id_]) for e in sample)


# ------------------------------------------------------------------ priorities and ids
def test_update_priorities_skips_evicted_steps_and_counts_them() -> None:
    buf = seeded(PrioritizedEpisodeReplayBuffer, capacity=30)
    buf.add(chunk(0, 0, 20, 20))  # type: ignore[attr-defined]
    buf.sample(16, n_step=1)  # type: ignore[attr-defined]
    buf.add(chunk(1, 0, 25, 25))  # evicts episode 0: every sampled step is gone  # type: ignore[attr-defined]
    buf.update_priorities(np.full(16, 5.0))  # type: ignore[attr-defined]
    st = buf.stats()  # type: ignore[attr-defined]
    assert (st["priority_updates"], st["stale_updates"]) == (0, 16)
    assert buf._max_priority == 1.0  # type: ignore[attr-defined]
    buf.sample(16, n_step=1)  # type: ignore[attr-defined]
    buf.update_priorities(np.full(16, 5.0))  # type: ignore[attr-defined]
    assert buf.stats()["priority_updates"] == 16  # type: ignore[attr-defined]
    assert buf.get_metrics()["num_priority_updates_lifetime"] == 16  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad, error", [([np.nan] * 4, PriorityError), ([1.0, -1.0, 1.0, 1.0], PriorityError),
                                        ([1.0] * 3, PriorityError), (["x"] * 4, PriorityError)])
def test_bad_priorities_change_nothing(bad: list, error: type) -> None:  # type: ignore[type-arg]
    buf = seeded(PrioritizedEpisodeReplayBuffer, capacity=30)
    buf.add(chunk(0, 0, 20, 20))  # type: ignore[attr-defined]
    buf.sample(4, n_step=1)  # type: ignore[attr-defined]
    before = pickle.dumps(buf.get_state())  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        buf.update_priorities(np.array(bad, dtype=object) if bad[0] == "x" else np.array(bad))  # type: ignore
    assert isinstance(info.value, ReplayTablesError) and "priorities" in str(info.value)
    assert pickle.dumps(buf.get_state()) == before  # type: ignore[attr-defined]


# ------------------------------------------------------------------ refused input changes nothing
@pytest.mark.parametrize("cls", [EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer])
@pytest.mark.parametrize("case", ["gap", "after_end", "gap_in_list", "obs_shape", "extra_keys"])
def test_refused_adds_change_nothing(cls: type, case: str) -> None:
    buf = seeded(cls, capacity=100)
    buf.add([chunk(0, 0, 5, 20), chunk(1, 0, 4, 4)])  # type: ignore[attr-defined]
    before = pickle.dumps(buf.get_state())  # type: ignore[attr-defined]
    bad: list = {  # type: ignore[type-arg]
        "gap": [chunk(0, 6, 9, 20)],  # episode 0 ends at t = 5 so far
        "after_end": [chunk(1, 4, 6, 6)],  # episode 1 already terminated
        "gap_in_list": [chunk(2, 0, 3, 9), chunk(0, 5, 8, 20), chunk(0, 9, 10, 20)],
        "obs_shape": [chunk(2, 0, 3, 3), chunk(3, 0, 3, 3, obs_dim=4)],
        "extra_keys": [SingleAgentEpisode(id_="x", observations=[0.0, 1.0], actions=[0], rewards=[0.0],
                                          extra_model_outputs={"logp": [0.0]}, len_lookback_buffer=0)],
    }[case]
    with pytest.raises((EpisodeError, SchemaError)) as info:
        buf.add(bad)  # type: ignore[attr-defined]
    assert isinstance(info.value, ReplayTablesError)
    assert pickle.dumps(buf.get_state()) == before  # type: ignore[attr-defined]


def test_errors_name_what_was_wrong() -> None:
    with pytest.raises(ConfigError, match="capacitty"):
        EpisodeReplayBuffer(capacitty=10)
    with pytest.raises(ConfigError, match="capacity"):
        EpisodeReplayBuffer(capacity=0)
    with pytest.raises(ConfigError, match="alpha"):
        PrioritizedEpisodeReplayBuffer(alpha=-1.0)
    with pytest.raises(EmptyBufferError):
        EpisodeReplayBuffer().sample(4, n_step=1, sample_episodes=True)
    with pytest.raises(EmptyBufferError):
        PrioritizedEpisodeReplayBuffer().sample(4, n_step=1)
    buf = EpisodeReplayBuffer()
    buf.add(chunk(0, 0, 5, 5))
    with pytest.raises(ConfigError, match="n_step"):
        buf.sample(4, sample_episodes=True)
    with pytest.raises(ConfigError, match="n_step"):
        buf.sample(4, n_step=3, batch_length_T=4, sample_episodes=True)


# ------------------------------------------------------------------ state
@pytest.mark.parametrize("cls", [EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer])
def test_state_round_trip_gives_the_same_next_samples(cls: type) -> None:
    buf = _filled(cls, seed=5)
    state = pickle.loads(pickle.dumps(buf.get_state()))  # type: ignore[attr-defined]
    other = cls(capacity=400)
    other.set_state(state)
    assert stored(other) == stored(buf)
    for b in (buf, other):
        b.add(chunk(99, 0, 7, 7))  # type: ignore[attr-defined]
    s1 = buf.sample(32, n_step=2, sample_episodes=True)  # type: ignore[attr-defined]
    s2 = other.sample(32, n_step=2, sample_episodes=True)
    assert [(e.id_, e.t_started, e.get_rewards(0)) for e in s1] == [(e.id_, e.t_started, e.get_rewards(0))
                                                                     for e in s2]


@pytest.mark.parametrize("ours, theirs", [(EpisodeReplayBuffer, RLlibEpisodeReplayBuffer),
                                          (PrioritizedEpisodeReplayBuffer, RLlibPrioritizedEpisodeReplayBuffer)])
def test_set_state_takes_an_rllib_buffers_state(ours: type, theirs: type) -> None:
    rllib = theirs(capacity=200)
    for batch in chunked_stream(20, seed=6):
        for eps in batch:
            rllib.add(eps)
    buf = ours(capacity=200)
    buf.set_state(rllib.get_state())
    assert stored(buf) == stored(rllib)
    assert buf.get_added_timesteps() == rllib.get_added_timesteps()


def test_capacity_mismatch_in_state_is_refused() -> None:
    buf = _filled(EpisodeReplayBuffer)
    with pytest.raises(ConfigError, match="capacity"):
        EpisodeReplayBuffer(capacity=10).set_state(buf.get_state())  # type: ignore[attr-defined]


# ------------------------------------------------------------------ RLlib's checks and the import rule
def test_classes_are_rllibs_types() -> None:
    assert issubclass(EpisodeReplayBuffer, RLlibEpisodeReplayBuffer)
    assert issubclass(PrioritizedEpisodeReplayBuffer, RLlibPrioritizedEpisodeReplayBuffer)
    assert isinstance(PrioritizedEpisodeReplayBuffer(), RLlibEpisodeReplayBuffer)


def test_importing_replaytables_does_not_import_ray() -> None:
    code = "import sys, ReplayTables, ReplayTables.rllib; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ multi-agent
def ma_episode(id_: str, length: int, module_of: dict[str, str] | None = None) -> object:
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

    module_of = module_of or {"a": "m1", "b": "m2"}
    eps = MultiAgentEpisode(id_=id_, observations=[{"a": 0.0, "b": 100.0}], infos=[{"a": {}, "b": {}}],
                            agent_module_ids=module_of)
    for t in range(length):
        eps.add_env_step(observations={"a": float(t + 1), "b": 100.0 + t + 1}, actions={"a": t, "b": 100 + t},
                         rewards={"a": 0.1 * (t + 1), "b": 1.0}, infos={"a": {}, "b": {}})
    eps.is_terminated = True
    return eps


def test_multi_agent_modules_sample_their_agents_and_count_updates() -> None:
    from ReplayTables.rllib import MultiAgentPrioritizedEpisodeReplayBuffer

    buf = MultiAgentPrioritizedEpisodeReplayBuffer(capacity=100, seed=0)
    for i in range(5):
        buf.add(ma_episode(f"x{i}", 30))
    assert (buf.get_num_episodes(), buf.get_num_timesteps(), buf.get_num_episodes_evicted()) == (3, 90, 2)
    sample = buf.sample(8, n_step=2, beta=0.4)
    by_module = {m: [e for e in sample if e.module_id == m] for m in ("m1", "m2")}
    assert all(len(v) == 8 for v in by_module.values())
    for e in by_module["m1"]:  # agent a: observation t, action t
        assert e.get_observations(-1) == e.get_observations(0) + 2 and e.get_actions(0) == e.get_observations(0)
        assert e.multi_agent_episode_id in {"x2", "x3", "x4"}
    for e in by_module["m2"]:  # agent b: observation 100 + t, action 100 + t, reward 1 each step
        assert abs(e.get_rewards(0) - (1 + 0.99)) < 1e-12 and e.get_actions(0) == e.get_observations(0)
    buf.update_priorities(np.full(8, 2.0), "m1")
    buf.add(ma_episode("y", 100))  # evicts everything sampled from m2
    buf.update_priorities(np.full(8, 2.0), "m2")
    per = buf.stats()["per_module"]
    assert (per["m1"]["priority_updates"], per["m1"]["stale_updates"]) == (8, 0)
    assert (per["m2"]["priority_updates"], per["m2"]["stale_updates"]) == (0, 8)


def test_multi_agent_two_agents_on_one_module() -> None:
    from ReplayTables.rllib import MultiAgentEpisodeReplayBuffer

    buf = MultiAgentEpisodeReplayBuffer(capacity=1000, seed=1)
    buf.add(ma_episode("s", 40, {"a": "shared", "b": "shared"}))
    assert buf.get_module_ids() == ["shared"] and buf.get_num_timesteps("shared") == 80
    agents = {e.agent_id for e in buf.sample(64, n_step=1)}
    assert agents == {"a", "b"}


def test_multi_agent_refused_add_changes_nothing() -> None:
    from ReplayTables.rllib import MultiAgentEpisodeReplayBuffer

    buf = MultiAgentEpisodeReplayBuffer(capacity=1000, seed=1)
    buf.add(ma_episode("s", 10))
    before = pickle.dumps(buf.get_state())
    with pytest.raises(EpisodeError):
        buf.add([ma_episode("t", 5), ma_episode("s", 3)])  # "s" already terminated
    assert pickle.dumps(buf.get_state()) == before
    with pytest.raises(ConfigError, match="replay_mode"):
        buf.sample(4, replay_mode="synchronized")


def test_dict_chunks_with_ray_match_rllib_episodes() -> None:
    """With Ray installed a buffer also takes dict chunks, and returns what it was given:
    the same stored steps sample the same transitions either way."""
    eps = [chunk(0, 0, 6, 6), chunk(1, 0, 4, 4)]
    dicts = [{"id": e.id_, "obs": np.asarray(e.get_observations()), "actions": np.asarray(e.get_actions()),
              "rewards": np.asarray(e.get_rewards()), "terminated": e.is_terminated, "truncated": e.is_truncated}
             for e in eps]
    for cls in (EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer):
        ours, theirs = cls(100, seed=3), cls(100, seed=3)
        ours.add(dicts)
        theirs.add(eps)
        batch = ours.sample(16, n_step=2, gamma=GAMMA, sample_episodes=True)
        episodes = theirs.sample(16, n_step=2, gamma=GAMMA, sample_episodes=True)
        assert isinstance(batch, dict) and all(isinstance(e, SingleAgentEpisode) for e in episodes)
        np.testing.assert_allclose(batch["rewards"], [e.get_rewards()[0] for e in episodes])
        np.testing.assert_array_equal(batch["next_obs"], [e.get_observations()[-1] for e in episodes])
        np.testing.assert_array_equal(batch["terminateds"], [e.is_terminated for e in episodes])
        before = pickle.dumps(theirs.get_state())
        with pytest.raises(SchemaError, match="rllib chunks only"):
            theirs.add(dicts)  # one kind per buffer: it returns what it holds
        assert pickle.dumps(theirs.get_state()) == before


def test_multi_agent_state_round_trip_with_rllib_episodes() -> None:
    """A module's store starts smaller than a single-agent one; restoring it used to fail
    (``from_state`` shrank the default allocation to the saved size)."""
    from ReplayTables.rllib import MultiAgentPrioritizedEpisodeReplayBuffer

    buf = MultiAgentPrioritizedEpisodeReplayBuffer(capacity=1000, seed=2)
    buf.add(ma_episode("s", 10))
    restored = MultiAgentPrioritizedEpisodeReplayBuffer(capacity=1000)
    restored.set_state(pickle.loads(pickle.dumps(buf.get_state())))
    a, b = buf.sample(8, n_step=1), restored.sample(8, n_step=1)
    assert [e.get_observations(0) for e in a] == [e.get_observations(0) for e in b]
    restored.add(ma_episode("t", 5))
    assert restored.get_num_timesteps() == 15
