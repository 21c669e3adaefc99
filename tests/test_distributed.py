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

import numpy as np
import pytest
import ray

import ReplayTables
from conftest import Transition, item, items
from ReplayTables.distributed import ShardedReplay, ShardWriter, shard_capacities
from ReplayTables.distributed.shard import Shard
from ReplayTables.distributed.tags import TAG_SHIFT, shard_index, tag_for, tag_ids, untag
from ReplayTables.errors import CheckpointError, ConfigError, PriorityError, SchemaError
from ReplayTables.PER import PERConfig


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
    assert TAG_SHIFT == 48


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
    buffer = ShardedReplay(4, 40, Transition, PERConfig(), seed=1)
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


def test_a_refused_add_changes_no_shard():
    buffer = ShardedReplay(2, 10, Transition, PERConfig(new_priority_mode="given"), seed=2)
    buffer.add_batch(items(range(4)), priorities=np.ones(4))
    before = (shard_sizes(buffer), shard_totals(buffer))
    with pytest.raises(SchemaError):
        buffer.add_batch({"x": np.zeros((2, 3))}, priorities=np.ones(2))
    with pytest.raises(SchemaError):
        buffer.add_batch(Transition(np.zeros((2, 4)), np.zeros(2, dtype=np.int64), np.zeros(2)), np.ones(2))
    with pytest.raises(PriorityError):
        buffer.add(item(9))  # 'given' mode needs a priority
    with pytest.raises(PriorityError):
        buffer.add_batch(items(range(2)), priorities=[1.0, float("nan")])
    assert (shard_sizes(buffer), shard_totals(buffer)) == before
    buffer.close()


def test_uniform_buffer_refuses_priorities():
    buffer = ShardedReplay(2, 10, Transition, seed=3)
    ids = buffer.add_batch(items(range(3)))
    with pytest.raises(ConfigError):
        buffer.add_batch(items(range(3)), priorities=np.ones(3))
    with pytest.raises(ConfigError):
        buffer.update_priorities(ids, np.ones(3))
    assert buffer.size() == 3
    buffer.close()


@ray.remote
def collect(writer: ShardWriter, start: int, n: int) -> dict[str, int]:
    for k in range(start, start + n):
        writer.add(item(k))
    writer.flush()
    return writer.stats()


def test_writers_add_straight_to_their_shards_from_ray_tasks():
    buffer = ShardedReplay(3, 300, Transition, PERConfig(), seed=4)
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


def test_writer_reports_a_refused_batch_and_checks_its_arguments():
    buffer = ShardedReplay(2, 20, Transition, PERConfig(), seed=5)
    w = buffer.writer(shard=0, max_in_flight=1)
    w.add_batch({"x": np.zeros((2, 3))})
    with pytest.raises(SchemaError):
        w.flush()
    assert shard_sizes(buffer) == [0, 0]
    w.add(item(0), priority=1.0)
    with pytest.raises(PriorityError):
        w.add(item(1))  # all queued items have a priority, or none
    for kwargs in ({"shard": 2}, {"shard": -1}, {"batch_size": 0}, {"max_in_flight": 0}):
        with pytest.raises(ConfigError):
            buffer.writer(**kwargs)
    buffer.close()


# ---------------------------------------------------------------- priorities
def test_priority_updates_are_routed_and_stale_ids_counted_exactly():
    buffer = ShardedReplay(2, 8, Transition, PERConfig(priority_exponent=1.0), seed=6)
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
    assert shard_totals(buffer)[1] == 12.0
    assert buffer.update_priorities(other, np.ones(4), wait=False) is None
    assert shard_totals(buffer)[1] == 4.0  # fire and forget, applied before the learner's next call
    buffer.close()


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_across_a_ray_restart(tmp_path: Path):
    buffer = ShardedReplay(3, 30, Transition, PERConfig(priority_exponent=1.0), seed=7)
    ids = buffer.add_batch(items(range(6)), priorities=np.arange(1.0, 7.0))
    w = buffer.writer(shard=2)
    w.add_batch(items(range(6, 9)))
    w.flush()
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
    loaded.close()


def test_a_damaged_checkpoint_is_refused(tmp_path: Path):
    buffer = ShardedReplay(2, 10, Transition, PERConfig(), seed=8)
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


def test_a_killed_shard_is_left_out_then_rejoins_and_old_ids_are_stale():
    buffer = ShardedReplay(2, 20, Transition, PERConfig(), seed=9)
    old = buffer.add_batch(items(range(5)))
    assert shard_index(old, 2)[0] == 0
    buffer.add_batch(items(range(5, 8)))
    kill(buffer, 0)
    t0 = time.monotonic()
    stats = buffer.stats()
    assert time.monotonic() - t0 < 1.0
    assert not stats["shards"][0]["alive"] and stats["size"] == 3  # the learner carries on with the rest
    assert buffer.add(item(99)) >= 0  # routed to the shard that is up
    deadline = time.monotonic() + 10
    while not buffer.stats()["shards"][0]["alive"]:
        assert time.monotonic() < deadline, "shard 0 did not come back"
        time.sleep(0.05)
    stats = buffer.stats()["shards"][0]
    assert stats["restarts"] == 1 and stats["size"] == 0  # restarted empty (no checkpoint)
    new = buffer.add_batch(items(range(20, 25)))  # the emptiest shard: the restarted one
    assert shard_index(new, 2)[0] == 0 and (untag(new) == untag(old)).all()  # same raw ids, other life
    assert buffer.update_priorities(old, np.full(5, 7.0)) == 0
    stats = buffer.stats()["shards"][0]
    assert stats["stale_updates"] == 5 and stats["priority_total"] == pytest.approx(5.0)  # newcomers untouched
    buffer.close()
