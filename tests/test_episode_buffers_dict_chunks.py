"""The new-stack episode buffers on our own dict chunks: no Ray needed, same results with it.

These tests import nothing from Ray, so they run in a venv without it and in the
normal one alike; ``test_without_ray_*`` also runs the buffers in a subprocess
where ``import ray`` fails, so the no-Ray path is exercised where Ray is installed.
Episode ``k`` has observations ``1000 k + t`` and reward ``0.1 (t + 1)`` for step
``t``, so every sampled value can be checked against :func:`reference`.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ReplayTables.errors import EpisodeError, ReplayTablesError, SchemaError
from ReplayTables.rllib import (
    EpisodeReplayBuffer,
    MultiAgentEpisodeReplayBuffer,
    MultiAgentPrioritizedEpisodeReplayBuffer,
    PrioritizedEpisodeReplayBuffer,
)

GAMMA = 0.9


def chunk(k: int, start: int, stop: int, length: int, terminated: bool = True, **extra: object) -> dict:
    """Steps ``start..stop`` of episode ``k`` (``length`` steps in all) as a dict chunk."""
    t = np.arange(start, stop + 1)
    out = {"id": f"ep{k}", "obs": 1000.0 * k + t, "actions": t[:-1].copy(), "rewards": 0.1 * (t[:-1] + 1),
           "terminated": terminated and stop == length, "t_started": start}
    out.update(extra)
    return out


def reference(k: int, t: int, n: int, length: int, terminated: bool = True) -> tuple[float, float, bool]:
    """The n-step return from step ``t`` of episode ``k``, the next observation and whether it is terminal."""
    m = min(n, length - t)
    ret = sum(GAMMA ** j * 0.1 * (t + j + 1) for j in range(m))
    return ret, 1000.0 * k + t + m, terminated and t + m == length


def check_transitions(batch: dict, n: int, lengths: dict[str, int]) -> None:
    for i, eid in enumerate(batch["episode_ids"]):
        k = int(str(eid).removeprefix("ep"))
        t = int(batch["t"][i])
        assert batch["obs"][i] == 1000.0 * k + t and batch["actions"][i] == t
        ret, nxt, term = reference(k, t, n, lengths[eid])
        assert batch["rewards"][i] == pytest.approx(ret)
        assert batch["next_obs"][i] == nxt and bool(batch["terminateds"][i]) == term
        assert batch["n_step"][i] == n


def test_uniform_n_step_against_reference() -> None:
    buffer = EpisodeReplayBuffer(1000, seed=1)
    buffer.add([chunk(0, 0, 4, 7), chunk(1, 0, 6, 6)])
    buffer.add(chunk(0, 4, 7, 7))  # continues episode 0
    assert buffer.get_num_timesteps() == 13 and buffer.get_num_episodes() == 2
    for n in (1, 3):
        batch = buffer.sample(64, n_step=n, gamma=GAMMA, sample_episodes=True)
        assert batch["obs"].shape == (64,) and batch["ids"].dtype == np.int64
        np.testing.assert_array_equal(batch["weights"], np.ones(64))
        check_transitions(batch, n, {"ep0": 7, "ep1": 6})


def test_t_started_defaults_to_continuing_the_episode() -> None:
    buffer = EpisodeReplayBuffer(100, seed=0)
    first, rest = chunk(0, 0, 3, 6), chunk(0, 3, 6, 6)
    del first["t_started"], rest["t_started"]
    buffer.add([first, rest])
    assert buffer.get_num_timesteps() == 6 and buffer.get_num_episodes() == 1
    stored = buffer.episodes[0]
    np.testing.assert_array_equal(stored["obs"], np.arange(7.0))
    assert stored["terminated"] and stored["t_started"] == 0


def test_prioritized_n_step_weights_and_update_priorities() -> None:
    buffer = PrioritizedEpisodeReplayBuffer(1000, alpha=0.5, seed=2)
    buffer.add([chunk(0, 0, 8, 8), chunk(1, 0, 5, 5)])
    batch = buffer.sample(32, n_step=2, gamma=GAMMA, beta=0.4)
    check_transitions(batch, 2, {"ep0": 8, "ep1": 5})
    np.testing.assert_array_equal(batch["weights"], np.ones(32))  # every new step has the max priority
    prio = np.arange(1.0, 33.0)
    buffer.update_priorities(prio)
    # the last write of a step id wins; the others keep priority 1
    expect = {int(i): p for i, p in zip(batch["ids"], prio)}
    for step_id, p in expect.items():
        assert buffer._sum_segment[step_id] == pytest.approx(p ** 0.5)
    again = buffer.sample(64, n_step=2, gamma=GAMMA, beta=0.4)
    check_transitions(again, 2, {"ep0": 8, "ep1": 5})
    leaves = np.array([buffer._sum_segment[int(i)] for i in again["ids"]])
    np.testing.assert_allclose(again["weights"], (leaves / 1.0) ** -0.4)  # min leaf is 1 ** 0.5
    # by ids, for a batch other than the last one
    buffer.update_priorities([9.0], ids=batch["ids"][:1])
    assert buffer._sum_segment[int(batch["ids"][0])] == pytest.approx(3.0)


def test_sequences_with_lookback() -> None:
    buffer = EpisodeReplayBuffer(1000, seed=3)
    buffer.add([chunk(0, 0, 9, 9), chunk(1, 0, 4, 4)])
    slices = buffer.sample(20, n_step=1, batch_length_T=3, lookback=2, sample_episodes=True)
    assert slices and all(isinstance(s, dict) for s in slices)
    for s in slices:
        k = int(s["id"].removeprefix("ep"))
        lb = s["lookback"]
        t0 = s["t_started"] - lb  # time of the first observation held
        L = len(s["rewards"])
        assert lb <= 2 and L - lb <= 3
        np.testing.assert_array_equal(s["obs"], 1000.0 * k + np.arange(t0, t0 + L + 1))
        np.testing.assert_array_equal(s["actions"], np.arange(t0, t0 + L))
        np.testing.assert_allclose(s["rewards"], 0.1 * (np.arange(t0, t0 + L) + 1))
        np.testing.assert_array_equal(s["extra_model_outputs"]["n_step"], np.ones(L))
        assert s["terminated"] == (t0 + L == {0: 9, 1: 4}[k])


def test_get_state_set_state_round_trip() -> None:
    for cls in (EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer):
        buffer = cls(1000, seed=4)
        buffer.add([chunk(0, 0, 6, 6), chunk(1, 0, 3, 5)])
        state = pickle.loads(pickle.dumps(buffer.get_state()))
        restored = cls(1000)
        restored.set_state(state)
        a = buffer.sample(16, n_step=2, gamma=GAMMA, sample_episodes=True)
        b = restored.sample(16, n_step=2, gamma=GAMMA, sample_episodes=True)
        for key in ("obs", "rewards", "next_obs", "ids", "weights"):
            np.testing.assert_array_equal(a[key], b[key])
        restored.add(chunk(1, 3, 5, 5))  # the restored buffer continues episode 1 as dicts
        assert restored.get_num_timesteps() == 11


def test_extra_model_outputs_and_infos() -> None:
    buffer = EpisodeReplayBuffer(100, seed=5)
    c = chunk(0, 0, 4, 4, extra_model_outputs={"logp": -0.5 * np.arange(4)}, infos=[{"i": i} for i in range(5)])
    buffer.add(c)
    batch = buffer.sample(8, n_step=1, sample_episodes=True, include_extra_model_outputs=True, include_infos=True)
    np.testing.assert_allclose(batch["extra_model_outputs"]["logp"], -0.5 * batch["t"])
    assert [i["i"] for i in batch["infos"][0]] == batch["t"].tolist()


def ma_chunk(k: int, length: int, agents: dict[str, str]) -> dict:
    return {"id": k, "agents": {aid: {**{key: v for key, v in chunk(k, 0, length, length).items() if key != "id"},
                                      "module_id": mid} for aid, mid in agents.items()}}


def test_multi_agent_uniform_and_prioritized() -> None:
    buffer = MultiAgentEpisodeReplayBuffer(1000, seed=6)
    buffer.add([ma_chunk(0, 5, {"a": "m0", "b": "m1"}), ma_chunk(1, 4, {"a": "m0"})])
    assert sorted(buffer.get_module_ids()) == ["m0", "m1"]
    assert buffer.get_num_timesteps() == 9 and buffer.get_num_timesteps("m0") == 9
    out = buffer.sample(16, n_step=2, gamma=GAMMA)
    assert set(out) == {"m0", "m1"}
    for batch in out.values():
        for i, (k, _aid) in enumerate(batch["episode_ids"]):
            ret, nxt, term = reference(k, int(batch["t"][i]), 2, {0: 5, 1: 4}[k])
            assert batch["rewards"][i] == pytest.approx(ret) and batch["next_obs"][i] == nxt
            assert bool(batch["terminateds"][i]) == term
    prio = MultiAgentPrioritizedEpisodeReplayBuffer(1000, alpha=1.0, seed=7)
    prio.add([ma_chunk(0, 5, {"a": "m0", "b": "m1"})])
    first = prio.sample(4, n_step=1, beta=0.5)
    prio.update_priorities(np.full(4, 5.0), module_id="m0")
    assert prio.stats()["per_module"]["m0"]["priority_updates"] == 4
    assert prio._module_to_sum_segment["m0"][int(first["m0"]["ids"][0])] == pytest.approx(5.0)
    state = pickle.loads(pickle.dumps(prio.get_state()))
    restored = MultiAgentPrioritizedEpisodeReplayBuffer(1000, alpha=1.0)
    restored.set_state(state)
    a, b = prio.sample(8, n_step=1, beta=0.5), restored.sample(8, n_step=1, beta=0.5)
    for mid in a:
        np.testing.assert_array_equal(a[mid]["ids"], b[mid]["ids"])
        np.testing.assert_array_equal(a[mid]["weights"], b[mid]["weights"])


BAD = [
    ("missing column", lambda c: c.pop("rewards"), "chunk", "rewards"),
    ("obs too short", lambda c: c.update(obs=c["obs"][:-1]), "['obs']", "leading axis"),
    ("actions too long", lambda c: c.update(actions=np.arange(9)), "['actions']", "leading axis"),
    ("unknown key", lambda c: c.update(next_obs=1), "['next_obs']", "one of the keys"),
    ("text rewards", lambda c: c.update(rewards=np.array(["a"] * 4)), "['rewards']", "numbers"),
    ("flag not bool", lambda c: c.update(terminated="yes"), "['terminated']", "True or False"),
    ("both flags", lambda c: c.update(terminated=True, truncated=True), "['truncated']", "False"),
    ("extras length", lambda c: c.update(extra_model_outputs={"logp": np.ones(2)}), "logp", "leading axis"),
    ("infos length", lambda c: c.update(infos=[{}]), "['infos']", "5 dicts"),
]


@pytest.mark.parametrize(("name", "spoil", "field", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_chunks_are_refused_and_change_nothing(name: str, spoil, field: str, expected: str) -> None:
    for cls in (EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer):
        buffer = cls(100, seed=8)
        buffer.add(chunk(0, 0, 3, 3))
        before = pickle.dumps(buffer.get_state())
        bad = chunk(1, 0, 4, 4)
        spoil(bad)
        with pytest.raises(SchemaError) as info:
            buffer.add([chunk(2, 0, 2, 2), bad])  # the good chunk before it is not stored either
        err = info.value
        assert isinstance(err, ReplayTablesError) and "episodes[1]" in err.field and field in str(err)
        assert expected in err.expected
        assert pickle.dumps(buffer.get_state()) == before


def test_other_refusals_change_nothing() -> None:
    buffer = EpisodeReplayBuffer(100, seed=9)
    buffer.add(chunk(0, 0, 3, 5, terminated=False))
    before = pickle.dumps(buffer.get_state())
    with pytest.raises(EpisodeError, match="t_started"):
        buffer.add(chunk(0, 2, 5, 5))  # does not continue where the stored chunk ends
    with pytest.raises(SchemaError, match="shape"):
        buffer.add({**chunk(1, 0, 2, 2), "obs": np.zeros((3, 2))})  # another observation shape
    with pytest.raises(SchemaError, match="dict chunks"):
        buffer.add([object()])  # not a dict chunk in a buffer of dict chunks (with or without Ray)
    assert pickle.dumps(buffer.get_state()) == before
    ma = MultiAgentEpisodeReplayBuffer(100)
    with pytest.raises(SchemaError, match="agents"):
        ma.add({"id": 0, "agents": {"a": {"obs": np.zeros(2), "actions": [0, 1], "rewards": [0.0]}}})
    with pytest.raises(SchemaError, match="agents"):
        ma.add({"id": 0, "agent": {}})
    assert ma.get_num_timesteps() == 0 and ma.get_module_ids() == []


NO_RAY = textwrap.dedent("""
    import sys
    sys.modules["ray"] = None  # import ray raises ImportError, as in an environment without Ray
    import numpy as np
    import ReplayTables.rllib as rl
    b = rl.PrioritizedEpisodeReplayBuffer(100, alpha=0.6, seed=0)
    b.add([{"id": 0, "obs": np.arange(6.0), "actions": np.arange(5), "rewards": np.ones(5), "terminated": True}])
    batch = b.sample(4, n_step=2, gamma=0.5, beta=0.4)
    assert np.allclose(batch["rewards"], 1.5), batch
    b.update_priorities(np.ones(4))
    u = rl.EpisodeReplayBuffer(100, seed=0)
    u.add(b.episodes)  # stored episodes come back as dict chunks that can be added again
    assert u.get_num_timesteps() == 5
    assert len(u.sample(3, n_step=1, batch_length_T=2, lookback=1, sample_episodes=True)) >= 1
    m = rl.MultiAgentPrioritizedEpisodeReplayBuffer(100, seed=0)
    m.add({"id": 0, "agents": {"a": {"obs": np.arange(3.0), "actions": [0, 1], "rewards": [1.0, 1.0]}}})
    assert set(m.sample(2, n_step=1)) == {"a"}
    m.update_priorities(np.ones(2), module_id="a")
    from ReplayTables.errors import SchemaError
    try:
        rl.EpisodeReplayBuffer(10).add([object()])
        raise AssertionError("an object that is not a dict chunk was taken")
    except SchemaError as e:
        assert "dict chunks" in e.expected, e
    assert not b.get_metrics()
    assert [k for k in sys.modules if k == "ray" or k.startswith("ray.")] == ["ray"] and sys.modules["ray"] is None
    print("ok")
""")


def test_without_ray_in_a_subprocess() -> None:
    """With ``import ray`` failing, the package and all four classes load and work on dict chunks."""
    out = subprocess.run([sys.executable, "-c", NO_RAY], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_docs_without_ray_snippet_runs() -> None:
    """The "Without Ray" example of docs/rllib-inside.md runs as written (it imports no Ray)."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "rllib-inside.md").read_text()
    block = page.split("### Without Ray", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert not [line for line in block.splitlines() if line.startswith(("import ray", "from ray"))]
    exec(compile(block, "docs/rllib-inside.md Without Ray", "exec"), {})


def test_nested_observations_and_the_batch_of_sequences() -> None:
    """Dict observations come back as dicts; ``sample()`` without ``sample_episodes`` is RLlib's [B, T] batch."""
    buffer = EpisodeReplayBuffer(100, seed=10)
    t = np.arange(5)
    buffer.add({"id": 0, "obs": {"pos": np.stack([t, -t], axis=1).astype(np.float32), "step": t},
                "actions": t[:-1], "rewards": 0.1 * (t[:-1] + 1), "terminated": True})
    batch = buffer.sample(6, n_step=1, gamma=GAMMA, sample_episodes=True)
    assert set(batch["obs"]) == {"pos", "step"} and batch["obs"]["pos"].shape == (6, 2)
    np.testing.assert_array_equal(batch["next_obs"]["step"], batch["t"] + 1)
    assert "infos" not in batch
    bt = buffer.sample(3, batch_length_T=4)
    assert bt["obs"]["step"].shape == (3, 4) and bt["rewards"].shape == (3, 4)
    assert bt["is_first"][:, 0].all()


def test_multi_agent_flags_are_checked() -> None:
    ma = MultiAgentEpisodeReplayBuffer(100)
    agent = {"obs": np.zeros(3), "actions": [0, 1], "rewards": [0.0, 1.0]}
    with pytest.raises(SchemaError, match="terminated"):
        ma.add({"id": 0, "agents": {"a": agent}, "terminated": "no"})
    with pytest.raises(SchemaError, match="env_steps"):
        ma.add({"id": 0, "agents": {"a": agent}, "env_steps": 1})
    assert ma.get_num_timesteps() == 0
    ma.add({"id": 0, "agents": {"a": {**agent, "terminated": True}}})
    with pytest.raises(EpisodeError):
        ma.add({"id": 0, "agents": {"a": agent}})  # the episode ended with its only agent
    assert ma.get_num_timesteps() == 2
