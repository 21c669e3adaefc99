"""ShardedReplay on a local Ray: shards, adds, writers, stats, priorities, checkpoints, faults.

Ray is started once for the module (``ray.init(num_cpus=2, include_dashboard=False)``);
a test that restarts Ray leaves it running. Items are the conftest's: every field
is a function of the item's key ``a``.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import ray

import ReplayTables
from conftest import Transition, check_fields, item, items
from ReplayTables.distributed import ShardedReplay, ShardWriter, shard_capacities
from ReplayTables.distributed.shard import Shard
from ReplayTables.distributed.tags import shard_index, tag_for, tag_ids, untag
from ReplayTables.errors import (
    CheckpointError,
    ConfigError,
    EmptyBufferError,
    PriorityError,
    RateLimitTimeout,
    SchemaError,
    StaleIdError,
)
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.rate_limiters import SampleToInsertRatio
from ReplayTables.ReplayBuffer import ReplayBuffer


def start_ray() -> None:
    # the workers unpickle the tests' structures, so they import this folder's conftest as the tests do
    path = os.pathsep.join([str(Path(__file__).parent), *sys.path])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_ray()
    yield
    ray.shutdown()


#: Tests other than the fault tests give shards this long to reply: on a shared CI machine a healthy
#: shard can take more than the default half second, and would then be left out of that call.
PATIENT = {"shard_timeout": 10.0}


def shard_sizes(buffer: ShardedReplay) -> list[int]:
    return [s["size"] for s in buffer.stats()["shards"]]


def shard_totals(buffer: ShardedReplay) -> list[float]:
    return [s["priority_total"] for s in buffer.stats()["shards"]]


# ---------------------------------------------------------------- pieces without Ray
def test_capacities_split_max_size_evenly():
    assert shard_capacities(10, 4) == [3, 3, 2, 2]
    assert shard_capacities(8, 4) == [2, 2, 2, 2]
    assert sum(shard_capacities(1_000_003, 7)) == 1_000_003


def test_tags_round_trip_and_route():
    raw = np.array([0, 5, 2**40, -1], dtype=np.int64)
    for shards, index, life in ((4, 3, 0), (4, 1, 7), (1, 0, 3)):
        tag = tag_for(index, shards, life)
        tagged = tag_ids(raw, tag)
        assert tagged[-1] == -1  # NOT_STORED stays as it is
        assert (tagged[:3] >= 0).all()
        assert (untag(tagged[:3]) == raw[:3]).all()
        assert (shard_index(tagged[:3], shards) == index).all()
    assert tag_for(1, 4, 1) != tag_for(1, 4, 0)  # a restart changes the tag ...
    assert tag_for(1, 4, 1) % 4 == 1  # ... but not the shard its ids route to
    assert tag_ids(np.array([1]), 3)[0] == 1 + (3 << 48)


def test_shard_counts_ids_of_an_earlier_life_as_stale(tmp_path: Path):
    shard = Shard(1, 4, 8, Transition, PERConfig(), np.random.default_rng(0), life=0)
    old, _ = shard.add_batch(items(range(4)))
    shard.save(str(tmp_path / "s"))
    restarted = Shard(1, 4, 8, Transition, PERConfig(), np.random.default_rng(0), life=1)
    restarted.restore(str(tmp_path / "s"), keep_tag=False)
    new, _ = restarted.add_batch(items(range(4, 6)))
    assert restarted.report().size == 6
    applied, report = restarted.update_priorities(old, np.full(4, 9.0))
    assert applied == 0 and report.stale == 4  # the same items, but ids of the old life: skipped
    assert report.priority_total == pytest.approx(6.0)  # nothing changed
    applied, report = restarted.update_priorities(new, np.full(2, 4.0))
    assert applied == 2 and report.stale == 4
    loaded = Shard(1, 4, 8, Transition, PERConfig(), np.random.default_rng(0), life=0)
    loaded.restore(str(tmp_path / "s"), keep_tag=True)  # a load keeps the saved ids
    applied, report = loaded.update_priorities(old, np.full(4, 9.0))
    assert applied == 4 and report.stale == 0


def test_bad_arguments_are_refused_before_anything_starts():
    for kwargs, field in (({"num_shards": 0}, "num_shards"), ({"num_shards": 11}, "num_shards"),
                          ({"num_shards": True}, "num_shards"), ({"max_size": 0}, "max_size"),
                          ({"config": {"beta": 1}}, "config"), ({"seed": -1}, "seed"),
                          ({"rate_limiter": 3}, "rate_limiter"), ({"max_restarts": -2}, "max_restarts"),
                          ({"shard_timeout": 0}, "shard_timeout"), ({"actor_options": []}, "actor_options")):
        args = {"num_shards": 2, "max_size": 10, "structure": Transition, **kwargs}
        with pytest.raises(ConfigError) as e:
            ShardedReplay(**args)
        assert e.value.field == field, kwargs


def test_package_imports_no_ray_and_needs_a_running_one():
    code = ("import sys, ReplayTables, ReplayTables.distributed as d\n"
            "assert 'ray' not in sys.modules\n"
            "try:\n"
            "    d.ShardedReplay(2, 10)\n"
            "except ReplayTables.ConfigError as e:\n"
            "    assert e.field == 'ray' and 'ray.init()' in str(e), e\n"
            "else:\n"
            "    raise SystemExit('no error')\n")
    env = {**os.environ, "PYTHONPATH": "src"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parent.parent, timeout=120)


# ---------------------------------------------------------------- adds, writers, stats
def test_adds_are_routed_to_the_emptiest_shard_and_ids_name_it():
    buffer = ShardedReplay(4, 40, Transition, PERConfig(), seed=1, **PATIENT)
    ids = [buffer.add(item(k)) for k in range(8)]
    assert sorted(shard_index(np.array(ids), 4).tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    batch_ids = buffer.add_batch(items(range(8, 14)))
    assert len(set(shard_index(batch_ids, 4).tolist())) == 1  # a batch goes to one shard, all or nothing
    assert buffer.size() == len(buffer) == 14
    assert sum(shard_sizes(buffer)) == 14
    stats = buffer.stats()
    assert stats["shards_up"] == 4 and stats["added"] == 14 and stats["max_size"] == 40
    assert [s["capacity"] for s in stats["shards"]] == [10, 10, 10, 10]
    assert all(s["alive"] and s["restarts"] == 0 for s in stats["shards"])
    buffer.close()


def test_refused_calls_change_no_shard():
    buffer = ShardedReplay(2, 10, Transition, PERConfig(new_priority_mode="given"), seed=2, **PATIENT)
    with pytest.raises(EmptyBufferError):
        buffer.sample(4)
    buffer.add_batch(items(range(4)), priorities=np.ones(4))
    before = (shard_sizes(buffer), shard_totals(buffer))
    with pytest.raises(SchemaError):
        buffer.add_batch({"x": np.zeros((2, 3))}, priorities=np.ones(2))
    with pytest.raises(SchemaError):  # the other shard is still empty, but the first add fixed every shard's fields
        buffer.add_batch(Transition(np.zeros((2, 4)), np.zeros(2, dtype=np.int64), np.zeros(2)), np.ones(2))
    with pytest.raises(PriorityError):
        buffer.add(item(9))  # 'given' mode needs a priority
    with pytest.raises(PriorityError):
        buffer.add_batch(items(range(2)), priorities=[1.0, float("nan")])
    for bad in (-1, 2.5, "3", None):
        with pytest.raises(ConfigError):
            buffer.sample(bad)
    w = buffer.writer(shard=1, max_in_flight=1)
    w.add_batch({"x": np.zeros((2, 3))}, np.ones(2))
    with pytest.raises(SchemaError):
        w.flush()  # the shard's error, raised where the writer waits for its reply
    w.add(item(0), priority=1.0)
    with pytest.raises(PriorityError):
        w.add(item(1))  # all queued items have a priority, or none
    for kwargs in ({"shard": 2}, {"shard": -1}, {"batch_size": 0}, {"max_in_flight": 0}):
        with pytest.raises(ConfigError):
            buffer.writer(**kwargs)
    assert (shard_sizes(buffer), shard_totals(buffer)) == before
    assert len(buffer.sample(0)) == 0
    assert buffer.sample(3).x.shape == (3, 3)
    with pytest.raises(ConfigError):
        ShardedReplay(2, 10, Transition, PERConfig(stratified=True))
    buffer.close()


def test_a_structure_defined_in_a_function_reaches_the_shards():
    # Ray sends a class it cannot import by name by value; its string annotations (this module has
    # ``from __future__ import annotations``) would not resolve over there, so the schema is sent
    class Local(NamedTuple):
        obs: np.ndarray
        count: int

    buffer = ShardedReplay(1, 10, Local, seed=14, **PATIENT)
    w = buffer.writer()
    for k in range(3):
        w.add(Local(np.full(2, k, dtype=np.float32), k))
    assert w.flush() == 3
    batch = buffer.sample(5)
    assert batch.obs.dtype == np.float32 and batch.count.dtype == np.int64
    assert (batch.obs[:, 0] == batch.count).all()
    buffer.close()


@ray.remote
def collect(writer: ShardWriter, start: int, n: int) -> dict[str, int]:
    for k in range(start, start + n):
        writer.add(item(k))
    writer.flush()
    return writer.stats()


def test_writers_add_straight_to_their_shards_from_ray_tasks():
    buffer = ShardedReplay(3, 300, Transition, PERConfig(), seed=4, **PATIENT)
    writers = [buffer.writer(batch_size=16, max_in_flight=2) for _ in range(3)]
    assert [w.index for w in writers] == [0, 1, 2]  # taken in turn
    results = ray.get([collect.remote(w, 100 * i, 50) for i, w in enumerate(writers)])
    assert [r["rows_stored"] for r in results] == [50, 50, 50]
    assert [r["rows_lost"] for r in results] == [0, 0, 0]
    assert shard_sizes(buffer) == [50, 50, 50]
    # the driver's writer, with batches and a pipeline bound
    w = buffer.writer(shard=1, batch_size=8, max_in_flight=3)
    for start in range(0, 40, 5):
        w.add_batch(items(range(start, start + 5)))
        assert w.stats()["in_flight"] <= 3
    assert w.flush() == 40
    assert shard_sizes(buffer) == [50, 90, 50]
    # pickle carries the shard and settings, never unsent rows
    w.add(item(1))
    copy = pickle.loads(pickle.dumps(w))
    assert (copy.index, copy.batch_size, copy.max_in_flight) == (1, 8, 3) and copy.stats()["queued"] == 0
    buffer.close()


# ---------------------------------------------------------------- sampling
SHARD_SIZES = (3, 7, 12, 20)  # four shards of unequal sizes ...
CONFIG = PERConfig(priority_exponent=0.7, uniform_probability=0.1, beta=0.5)


def raw_priority(keys: np.ndarray) -> np.ndarray:
    """... and unequal priorities: shard 0's items are heavy, shard 3's light."""
    return (1.0 + (keys * 7) % 11) * np.where(keys < 3, 30.0, np.where(keys >= 22, 0.2, 1.0))


def filled_pair(config: PERConfig | None) -> tuple[ShardedReplay, PrioritizedReplay | ReplayBuffer, dict[int, int]]:
    """A sharded buffer with SHARD_SIZES items on its shards, and one buffer holding the same items."""
    sharded = ShardedReplay(4, 80, Transition, config, seed=11, **PATIENT)
    single: PrioritizedReplay | ReplayBuffer = (ReplayBuffer(80, Transition, 0) if config is None
                                                else PrioritizedReplay(80, Transition, 0, config))
    start = 0
    for k, n in enumerate(SHARD_SIZES):
        keys = np.arange(start, start + n)
        w = sharded.writer(shard=k)
        w.add_batch(items(keys), None if config is None else raw_priority(keys))
        w.flush()
        start += n
    keys = np.arange(start)
    ids = single.add_batch(items(keys)) if config is None else single.add_batch(items(keys), raw_priority(keys))
    assert shard_sizes(sharded) == list(SHARD_SIZES)  # also refreshes the learner's reports
    return sharded, single, dict(zip(keys.tolist(), ids.tolist()))


def sample_counts(buffer: ShardedReplay, rounds: int = 60, n: int = 256) -> tuple[np.ndarray, list]:
    counts = np.zeros(sum(SHARD_SIZES))
    batches = []
    for _ in range(rounds):
        batch = buffer.sample(n)
        np.add.at(counts, batch.a, 1)
        batches.append(batch)
    return counts, batches


@pytest.fixture(scope="module")
def per_pair():
    pair = filled_pair(CONFIG)
    yield pair
    pair[0].close()


@pytest.fixture(scope="module")
def uniform_pair():
    pair = filled_pair(None)
    yield pair
    pair[0].close()


def test_prioritized_sample_matches_one_buffer_of_the_same_items(per_pair):
    from scipy.stats import chisquare

    sharded, single, id_of = per_pair
    keys = np.arange(sum(SHARD_SIZES))
    expected = single.get([id_of[k] for k in keys]).probabilities
    assert expected.sum() == pytest.approx(1.0)
    counts, batches = sample_counts(sharded)
    # fixed seeds: the test is deterministic; 1e-3 is the significance level it must pass at
    assert chisquare(counts, expected * counts.sum()).pvalue > 1e-3
    for batch in batches[:5]:
        reference = single.get([id_of[int(a)] for a in batch.a])
        np.testing.assert_allclose(batch.probabilities, reference.probabilities, rtol=1e-12)
        np.testing.assert_allclose(batch.weights, reference.weights, rtol=0, atol=1e-9)
        assert (shard_index(batch.ids, 4) == np.searchsorted(np.cumsum(SHARD_SIZES), batch.a, side="right")).all()
        check_fields(batch, batch.a)


def equal_split(rng: np.random.Generator, n: int, masses: list) -> list:
    """The negative control: every shard gets the same share, whatever its mass."""
    from ReplayTables.engine.draws import Draws

    shares = rng.multinomial(n, np.full(len(masses), 1.0 / len(masses)))
    u = masses[0].uniform_probability
    out = []
    for share in shares:
        n_uniform = int(rng.binomial(share, u))
        out.append(Draws(rng.random(int(share) - n_uniform), rng.random(n_uniform)))
    return out


def test_negative_control_an_equal_split_fails_the_same_test(per_pair, monkeypatch: pytest.MonkeyPatch):
    from scipy.stats import chisquare

    import ReplayTables.distributed.sharded as sharded_module

    sharded, single, id_of = per_pair
    expected = single.get([id_of[k] for k in range(sum(SHARD_SIZES))]).probabilities
    monkeypatch.setattr(sharded_module, "split_sample", equal_split)
    counts, _ = sample_counts(sharded)
    assert chisquare(counts, expected * counts.sum()).pvalue < 1e-6


def test_uniform_sample_is_uniform_over_all_items(uniform_pair):
    from scipy.stats import chisquare

    sharded = uniform_pair[0]
    counts, batches = sample_counts(sharded, rounds=30)
    assert chisquare(counts).pvalue > 1e-3
    assert all((b.weights == 1.0).all() for b in batches)
    np.testing.assert_allclose(batches[0].probabilities, 1.0 / sum(SHARD_SIZES), rtol=1e-12)
    ids = batches[0].ids
    with pytest.raises(ConfigError):
        sharded.add_batch(items(range(3)), priorities=np.ones(3))  # uniform replay has no priorities
    with pytest.raises(ConfigError):
        sharded.update_priorities(ids, np.ones(len(ids)))
    assert sharded.size() == sum(SHARD_SIZES)


# ---------------------------------------------------------------- priorities
def test_priority_updates_are_routed_and_stale_ids_counted_exactly():
    buffer = ShardedReplay(2, 8, Transition, PERConfig(priority_exponent=1.0), seed=6, **PATIENT)
    first = buffer.add_batch(items(range(4)))   # shard 0 (capacity 4)
    other = buffer.add_batch(items(range(4, 8)))  # shard 1
    assert buffer.update_priorities(np.concatenate([first, other]), np.full(8, 2.0)) == 8
    assert shard_totals(buffer) == [8.0, 8.0]
    w = buffer.writer(shard=0)
    w.add_batch(items(range(8, 11)))  # overwrites three of shard 0's four items
    w.flush()
    applied = buffer.update_priorities(np.concatenate([first, other]), np.full(8, 3.0))
    assert applied == 1 + 4
    assert shard_totals(buffer) == [3.0 + 3 * 2.0, 12.0]  # the newcomers kept the 'max' priority 2.0
    stats = buffer.stats()
    assert stats["shards"][0]["stale_updates"] == 3 and stats["shards"][1]["stale_updates"] == 0
    w.add_batch(items(range(11, 12)))
    w.flush()
    applied = buffer.update_priorities(first, np.full(4, 5.0))
    assert applied == 0
    assert buffer.stats()["shards"][0]["stale_updates"] == 3 + 4
    with pytest.raises(PriorityError):
        buffer.update_priorities(other, [1.0, 1.0, -1.0, 1.0])  # refused before any shard changes
    with pytest.raises(PriorityError):
        buffer.update_priorities(other, [1.0, 1.0])  # one priority per id
    with pytest.raises(StaleIdError):
        buffer.update_priorities([1.5, 2.5], [1.0, 1.0])  # ids are integers
    with pytest.raises(PriorityError):
        buffer.update_priorities(other, np.full(4, np.inf))
    assert shard_totals(buffer)[1] == 12.0
    assert buffer.stats()["shards"][1]["stale_updates"] == 0
    assert buffer.update_priorities(other, np.ones(4), wait=False) is None
    assert shard_totals(buffer)[1] == 4.0  # fire and forget, applied before the learner's next call
    buffer.close()


# ---------------------------------------------------------------- RLlib's num_shards
def test_rllib_num_shards_builds_the_rllib_buffer_on_shards():
    from ReplayTables.distributed.rllib_buffers import ShardedTimestepBuffer
    from ReplayTables.rllib import PrioritizedReplayBuffer, from_config

    local = from_config({"type": "PrioritizedReplayBuffer", "capacity": 40, "alpha": 0.6, "num_shards": 1})
    assert isinstance(local, PrioritizedReplayBuffer)
    sharded = from_config({"type": "PrioritizedReplayBuffer", "capacity": 40, "alpha": 0.6, "num_shards": 2,
                           "seed": 3})
    assert isinstance(sharded, ShardedTimestepBuffer) and sharded.buffer.num_shards == 2
    obs = np.arange(20, dtype=np.float32).reshape(10, 2)
    sharded.add({"obs": obs, "actions": np.arange(10), "weights": np.linspace(1.0, 10.0, 10)})  # initial priorities
    sharded.add({"obs": obs[:4] + 100, "actions": np.arange(10, 14)})  # new rows get the largest priority seen
    assert len(sharded) == 14
    batch = sharded.sample(64, beta=0.5)
    assert set(batch) == {"obs", "actions", "weights", "batch_indexes"} and batch["obs"].shape == (64, 2)
    assert (batch["obs"][:, 0] == np.where(batch["actions"] < 10, 2 * batch["actions"],
                                           2 * (batch["actions"] - 10) + 100)).all()
    # RLlib's weights: (P / P_min) ** -beta with P = p^alpha / sum p^alpha over both shards, no uniform part
    p = np.concatenate([np.linspace(1.0, 10.0, 10), np.full(4, 10.0)]) ** 0.6
    prob = p / p.sum()
    np.testing.assert_allclose(batch["weights"], (prob[batch["actions"]] / prob.min()) ** -0.5, rtol=1e-9)
    assert sharded.update_priorities(batch["batch_indexes"], np.ones(64)) == 64
    for bad in ({"type": "MultiAgentMixInReplayBuffer", "num_shards": 2},
                {"type": "MultiAgentPrioritizedReplayBuffer", "num_shards": 2, "storage_unit": "episodes"},
                {"type": "PrioritizedReplayBuffer", "num_shards": 2, "storage_unit": "episodes"},
                {"type": "ReplayBuffer", "num_shards": 2, "alpha": 0.5},
                {"type": "ReplayBuffer", "num_shards": 0}):
        with pytest.raises(ConfigError):
            from_config(bad)
    sharded.close()


# ---------------------------------------------------------------- the example
def test_the_example_runs_collectors_into_shards_and_a_learner():
    import importlib.util  # the example needs gymnasium: the examples extra, which the test command installs

    path = Path(__file__).resolve().parents[1] / "examples" / "ray_sharded_per.py"
    spec = importlib.util.spec_from_file_location("ray_sharded_per", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ray_sharded_per"] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)  # the workers cannot import it by name
    try:
        summary = module.main(["--smoke"])  # on this module's Ray
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["ray_sharded_per"]
    assert summary["round"] == 2 and summary["shards_up"] == 2
    assert summary["size"] == 2 * 2 * 100 and summary["shard_sizes"] == [200, 200]


# ---------------------------------------------------------------- rate limiting
@ray.remote
def add_later(writer: ShardWriter, keys: list[int], delay: float) -> int:
    time.sleep(delay)
    for k in keys:
        writer.add(item(k))
    return writer.flush()


def test_rate_limiter_counts_over_all_shards():
    limiter = SampleToInsertRatio(1.0, 10, 20.0)  # inserts - samples kept in [-10, 30]
    buffer = ShardedReplay(2, 200, Transition, PERConfig(), seed=13, rate_limiter=limiter, **PATIENT)
    with pytest.raises(RateLimitTimeout):
        buffer.sample(1, timeout=0)
    w = buffer.writer(shard=0, timeout=0.3)
    for start in (0, 10, 20):
        w.add_batch(items(range(start, start + 10)))
    assert w.flush() == 30
    w.add_batch(items(range(30, 40)))  # 40 - 0 > 30: held back until the learner samples
    with pytest.raises(RateLimitTimeout):
        w.flush()
    assert buffer.size() == 30
    assert len(buffer.sample(16)) == 16
    w.add_batch(items(range(30, 40)))  # 40 - 16 <= 30
    assert w.flush() == 40
    with pytest.raises(RateLimitTimeout):
        buffer.sample(40, timeout=0)  # 40 - 16 - 40 < -10
    assert sum(s["sampled"] for s in buffer.stats()["shards"]) == 16  # the refused sample took nothing
    assert len(buffer.sample(30)) == 30
    buffer.add_batch(items(range(40, 50)), timeout=0)  # 50 - 46 <= 30, on the other shard
    assert buffer.rate_limiter.samples == 46
    # a sample that waits is let through by a writer elsewhere in the cluster: 76 - 46 - 40 = -10,
    # and the writer may go that far: 76 - 46 <= 30
    task = add_later.remote(buffer.writer(shard=1, batch_size=2), list(range(100, 126)), 0.5)
    t0 = time.monotonic()
    assert len(buffer.sample(40, timeout=60)) == 40
    assert time.monotonic() - t0 >= 0.5 and ray.get(task) == 26
    with pytest.raises(ConfigError):
        ShardedReplay(2, 5, Transition, rate_limiter=SampleToInsertRatio(1.0, 10, 20.0))
    buffer.close()


# ---------------------------------------------------------------- checkpoints
def test_a_damaged_checkpoint_is_refused(tmp_path: Path):
    buffer = ShardedReplay(2, 10, Transition, PERConfig(), seed=8, **PATIENT)
    buffer.add_batch(items(range(4)))
    path = buffer.save(tmp_path / "c")
    buffer.close()
    (path / "shard-001" / "shard.json").write_text('{"tag": 5, "life": 0, "stale_other_life": 0}')
    with pytest.raises(CheckpointError):
        ReplayTables.load(tmp_path / "c")
    (path / "shard-001" / "shard.json").write_text("not json")
    with pytest.raises(CheckpointError):
        ReplayTables.load(tmp_path / "c")
    import shutil

    shutil.rmtree(path / "shard-001")
    with pytest.raises(CheckpointError):
        ReplayTables.load(tmp_path / "c")


# ---------------------------------------------------------------- faults
def kill(buffer: ShardedReplay, index: int) -> None:
    os.kill(ray.get(buffer.actors[index].pid.remote()), signal.SIGKILL)


def fault_trial(seed: int) -> dict[str, float]:
    """A learner samples and updates priorities; a seeded shard is killed at a seeded step.

    Checks that the learner never stops, that its first sample after the kill comes
    from the other shards within 1 s, that the shard rejoins (restarted empty), and
    that updates routed with ids from before the restart are all counted stale
    and never touch the newcomers.
    """
    rng = np.random.default_rng(seed)
    buffer = ShardedReplay(3, 300, Transition, PERConfig(priority_exponent=1.0), seed=seed)
    for k in range(3):
        w = buffer.writer(shard=k)
        w.add_batch(items(range(100 * k, 100 * k + 40)), np.ones(40))
        w.flush()
    assert buffer.size() == 120
    victim = int(rng.integers(3))
    seen_of_victim: set[int] = set()
    for _ in range(int(rng.integers(2, 8))):
        batch = buffer.sample(32)
        buffer.update_priorities(batch.ids, rng.uniform(0.5, 2.0, 32))
        seen_of_victim.update(batch.ids[shard_index(batch.ids, 3) == victim].tolist())
    kill(buffer, victim)
    t_kill = time.monotonic()
    batch = buffer.sample(32)  # the learner carries on
    out_after = time.monotonic() - t_kill
    assert out_after < 1.0, f"the dead shard held the learner for {out_after:.2f} s"
    assert not (shard_index(batch.ids, 3) == victim).any()
    ranges = [(100 * k, 100 * k + 40) for k in range(3) if k != victim]
    assert all(any(lo <= a < hi for lo, hi in ranges) for a in batch.a)
    while True:  # sampling and updating go on while Ray restarts the shard
        batch = buffer.sample(32)
        buffer.update_priorities(batch.ids, np.ones(32), wait=False)
        shard = buffer.stats()["shards"][victim]
        if shard["alive"]:
            break
        assert time.monotonic() - t_kill < 20, "the killed shard did not come back"
    back_after = time.monotonic() - t_kill
    assert shard["restarts"] == 1 and shard["size"] == 0 and shard["life"] == 1  # restarted empty
    w = buffer.writer(shard=victim)
    w.add_batch(items(range(1000, 1010)), np.ones(10))  # newcomers in the slots of the old items
    w.flush()
    old = np.array(sorted(seen_of_victim), dtype=np.int64)
    assert buffer.update_priorities(old, np.full(old.shape[0], 100.0)) == 0
    shard = buffer.stats()["shards"][victim]
    assert shard["stale_updates"] == old.shape[0]  # exactly the routed old ids, each once
    assert shard["priority_total"] == pytest.approx(10.0)  # the newcomers were not touched
    assert buffer.sample(300).a.max() >= 1000  # and they are sampled
    buffer.close()
    return {"out": out_after, "back": back_after}


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) if s >= 2 else s for s in range(20)])
def test_a_killed_shard_is_left_out_then_rejoins_and_old_ids_are_stale(seed: int):
    fault_trial(seed)


# ---------------------------------------------------------------- last: restarts Ray
def test_checkpoint_round_trip_across_a_ray_restart(tmp_path: Path):
    buffer = ShardedReplay(3, 30, Transition, PERConfig(priority_exponent=1.0), seed=7,
                           rate_limiter=SampleToInsertRatio(1.0, 2, 100.0), **PATIENT)
    ids = buffer.add_batch(items(range(6)), priorities=np.arange(1.0, 7.0))
    w = buffer.writer(shard=2)
    w.add_batch(items(range(6, 9)))
    w.flush()
    buffer.sample(5)
    stats = buffer.stats()
    path = buffer.save(tmp_path / "ckpt")
    assert path.parent == tmp_path / "ckpt"
    buffer.save(tmp_path / "ckpt")  # a second save replaces the first as a whole
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["LATEST", "snapshot-000002"]
    ray.shutdown()
    start_ray()
    loaded = ReplayTables.load(tmp_path / "ckpt")
    assert isinstance(loaded, ShardedReplay) and loaded.num_shards == 3 and loaded.config == buffer.config
    again = loaded.stats()
    for key in ("size", "added", "stale_updates"):
        assert again[key] == stats[key]
    for a, b in zip(again["shards"], stats["shards"]):
        assert (a["size"], a["priority_total"], a["life"]) == (b["size"], b["priority_total"], b["life"])
    assert loaded.update_priorities(ids, np.ones(6)) == 6  # the saved ids still name their items
    assert loaded.rate_limiter.config() == buffer.rate_limiter.config() and loaded.rate_limiter.samples == 5
    assert loaded._sample_calls == 1
    loaded.close()
