"""Buffers in shared memory (``shared=True``, ``handle()``, ``ReplayTables.attach``) across real processes.

Every item's fields say which item it is (``x = [k, k + 0.5, -k]``, ``a = k``,
``r = k / 2``), so a reader can tell a whole row from a half-written or mixed
one. Proved here, in fork and spawn children: an attached buffer is the same
class with every method over the same memory; 2-4 writer processes and a
sampling learner leave exact accounting (every id a writer got back is either
present with its own data or counted as evicted; the sum tree equals one rebuilt
from its leaves); a writer SIGKILLed at a random moment (or, deterministically,
half-way through writing a batch's rows) leaves no half-written item visible and
does not stop the others; the creator's close and exit leave nothing in
``/dev/shm``; attaching after close is a clear error; a rate-limited sample
waits for another process's insert; the step-stream buffer shared by actor
processes on their own streams keeps every transition whole, and a writer
killed inside a step empties only its own stream.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ReplayTables
from process_helpers import Script, segments_of, wait_for
from ReplayTables import PERConfig, PrioritizedReplay, ReplayBuffer
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.engine.sumtree import SumTree
from ReplayTables.errors import BufferClosedError, ConfigError, SchemaError, SharedMemoryError, StaleIdError

METHODS = ["fork", "spawn"]
KINDS = ["uniform", "per"]
FIELDS = {"x": FieldSpec((3,), np.float64), "a": FieldSpec((), np.int64), "r": FieldSpec((), np.float32)}
WRITER_KEYS = 1_000_000  # writer w's i-th item is k = w * WRITER_KEYS + i


def batch_of(ks: Any) -> dict[str, np.ndarray]:
    ks = np.asarray(ks, dtype=np.int64)
    return {"x": np.stack([ks, ks + 0.5, -ks], axis=1).astype(np.float64), "a": ks, "r": (ks / 2).astype(np.float32)}


def item_of(k: int) -> dict[str, Any]:
    return {"x": np.array([k, k + 0.5, -k], dtype=np.float64), "a": k, "r": np.float32(k / 2)}


def whole(batch: Any) -> bool:
    """Every row of ``batch`` is one item's, whole."""
    a = np.asarray(batch.a)
    return bool(np.array_equal(batch.x, np.stack([a, a + 0.5, -a], axis=1))
                and np.array_equal(batch.r, (a / 2).astype(np.float32)))


def make(kind: str, capacity: int, rng: int = 0) -> Any:
    if kind == "per":
        return PrioritizedReplay(capacity, FIELDS, rng=rng, config=PERConfig(priority_exponent=1.0,
                                                                             uniform_probability=0.1), shared=True)
    return ReplayBuffer(capacity, FIELDS, rng=rng, shared=True)


def tree_is_rebuilt(buffer: Any) -> bool:
    """The sum tree's internal entries equal those rebuilt from its leaves (bit for bit)."""
    tree = getattr(buffer._table.sampler, "tree", None)
    if tree is None:
        return True
    fresh = SumTree(tree.capacity)
    fresh.leaves[:] = tree.leaves
    fresh.rebuild()
    live = buffer._table.directory.slot_id >= 0
    leaves = tree.leaves[: tree.capacity]
    return bool(np.array_equal(fresh.cum, tree.cum) and np.array_equal(fresh.sums, tree.sums)
                and (leaves[~live] == 0).all() and tree.zero_count == int(((leaves == 0) & np.signbit(leaves)).sum()))


def account(buffer: Any, ids_by_writer: dict[int, np.ndarray]) -> dict[str, int]:
    """Check every id a writer got back: present with its own item, or gone; return the counts."""
    present = gone = 0
    for w, ids in ids_by_writer.items():
        for i, item_id in enumerate(ids.tolist()):
            try:
                got = buffer.get(np.array([item_id]))
            except StaleIdError:
                gone += 1
                continue
            assert int(got.a[0]) == w * WRITER_KEYS + i and whole(got)
            present += 1
    return {"present": present, "gone": gone}


# ---------------------------------------------------------------- children (module level: spawn imports them)
def _child_uses_every_method(handle: Any, kind: str, path: str, out: Any) -> None:
    try:
        buf = ReplayTables.attach(handle, rng=5)
        report: dict[str, Any] = {"class": type(buf).__name__, "shared": buf.shared, "len": len(buf)}
        new = buf.add(item_of(100))
        ids = buf.add_batch(batch_of([101, 102, 103]))
        report["get"] = buf.get(np.concatenate([[new], ids])).a.tolist()
        sample = buf.sample(8)
        report["sample_whole"] = whole(sample)
        if kind == "per":
            report["applied"] = buf.update_priorities(ids, np.array([5.0, 6.0, 7.0]))
            report["priorities"] = buf.priorities(ids).tolist()
        buf.delete(np.array([new]))
        report["stats"] = buf.stats()
        buf.save(path)
        buf.close()
        out.put(report)
    except BaseException as exc:  # the parent asserts on the report
        out.put({"error": repr(exc)})


def _writer(handle: Any, w: int, n: int, batch: int, out: Any) -> None:
    buf = ReplayTables.attach(handle, rng=w)
    ids = []
    for start in range(0, n, batch):
        ks = np.arange(start, min(n, start + batch)) + w * WRITER_KEYS
        if batch == 1:
            ids.append(np.array([buf.add(item_of(int(ks[0])))]))
        else:
            ids.append(buf.add_batch(batch_of(ks)))
    out.put((w, np.concatenate(ids)))
    buf.close()


def _learner(handle: Any, kind: str, ready: Any, stop: Any, out: Any) -> None:
    buf = ReplayTables.attach(handle, rng=99)
    samples = bad = 0
    rng = np.random.default_rng(0)
    ready.set()
    while not stop.is_set() or samples < 20:
        if len(buf) == 0:
            time.sleep(0.001)
            continue
        b = buf.sample(32)
        samples += 1
        bad += not whole(b)
        if kind == "per":
            buf.update_priorities(b.ids, rng.random(len(b.ids)) + 0.5)
    out.put(("learner", samples, bad))
    buf.close()


def _dies_half_way_through_a_batch(handle: Any, ks: np.ndarray) -> None:
    buf = ReplayTables.attach(handle, rng=3)
    storage = buf._table.storage
    real_write = storage.write

    def write_then_die(slots: Any, values: list[np.ndarray]) -> None:
        real_write(slots, values[:1])  # the first field of every row written, the others not
        os.kill(os.getpid(), signal.SIGKILL)

    storage.write = write_then_die  # fault injection: the general batch path writes through storage.write
    buf.add_batch(batch_of(ks))
    os._exit(3)  # not reached


def _keeps_adding(handle: Any, w: int, batch: int, batches: int, started: Any) -> None:
    buf = ReplayTables.attach(handle, rng=w)
    data = [batch_of(np.arange(j * batch, (j + 1) * batch) + w * WRITER_KEYS) for j in range(batches)]
    started.set()
    for items in data:  # nothing but adds, so a kill most likely lands inside one
        buf.add_batch(items)
    time.sleep(60)  # until killed


def live_ids(buffer: Any) -> np.ndarray:
    """The ids of every stored item (from the saved directory: a slot holds a live id when it is >= 0)."""
    slot_id = buffer.state_dict()["arrays"]["directory.slot_id"]
    ids: np.ndarray = slot_id[slot_id >= 0]
    return ids


# ---------------------------------------------------------------- one child, every method
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_an_attached_buffer_is_the_same_class_with_every_method(method: str, kind: str, tmp_path: Path) -> None:
    buf = make(kind, 64)
    buf.add_batch(batch_of(np.arange(10)))
    handle = buf.handle()
    assert len(pickle.dumps(handle)) < 4096  # small: no array data
    ctx = mp.get_context(method)
    out = ctx.Queue()
    p = ctx.Process(target=_child_uses_every_method, args=(handle, kind, str(tmp_path / "ck"), out))
    p.start()
    report = out.get(timeout=60)
    p.join(30)
    assert "error" not in report, report
    assert report["class"] == type(buf).__name__ and report["shared"] and report["len"] == 10
    assert report["get"] == [100, 101, 102, 103] and report["sample_whole"]
    # the parent sees the child's changes, and the child's view of the counters was the shared one
    assert len(buf) == 13 and buf.stats()["added"] == 14 and buf.stats()["deleted"] == 1
    assert report["stats"]["added"] == 14
    if kind == "per":
        assert report["applied"] == 3 and report["priorities"] == [5.0, 6.0, 7.0]
        np.testing.assert_array_equal(buf.priorities(np.array([11, 12, 13])), [5.0, 6.0, 7.0])
    loaded = ReplayTables.load(tmp_path / "ck")  # the child's save is an ordinary checkpoint
    assert type(loaded) is type(buf) and not loaded.shared and len(loaded) == 13
    assert tree_is_rebuilt(buf)
    name = buf._shared.segment.name
    buf.close()
    assert not os.path.exists(f"/dev/shm/{name}")


# ---------------------------------------------------------------- writers and a learner at once
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_writers_and_a_learner_leave_exact_accounting(method: str, kind: str) -> None:
    writers, n, capacity = 3, 600, 1000  # 1800 items into 1000 slots: the oldest are evicted
    buf = make(kind, capacity)
    ctx = mp.get_context(method)
    out, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    learner = ctx.Process(target=_learner, args=(buf.handle(), kind, ready, stop, out))
    procs = [ctx.Process(target=_writer, args=(buf.handle(), w, n, [1, 16, 64][w], out)) for w in range(writers)]
    learner.start()
    assert ready.wait(60)  # the learner samples from the writers' first item on
    for p in procs:
        p.start()
    ids = dict(out.get(timeout=120) for _ in procs)
    stop.set()
    _, samples, bad = out.get(timeout=60)
    for p in [*procs, learner]:
        p.join(30)
        assert p.exitcode == 0
    assert samples > 0 and bad == 0  # every sampled row was whole while the writers ran
    stats = buf.stats()
    assert stats["added"] == writers * n and stats["size"] == len(buf) == capacity
    counts = account(buf, ids)
    assert counts["present"] == capacity and counts["gone"] == stats["evicted"] == writers * n - capacity
    assert tree_is_rebuilt(buf)
    buf.close()


def test_the_accounting_check_catches_a_corrupted_buffer() -> None:
    """Negative control: a row overwritten behind the buffer's back is caught by ``account``."""
    buf = make("uniform", 16)
    ids = buf.add_batch(batch_of(np.arange(5)))
    buf._table.storage.columns[2][3] = 99.0  # r of item 3 no longer says it is item 3
    with pytest.raises(AssertionError):
        account(buf, {0: ids})
    tree_buf = make("per", 16)
    tree_buf.add_batch(batch_of(np.arange(5)))
    tree_buf._table.sampler.tree.cum[0] += 1.0
    assert not tree_is_rebuilt(tree_buf)
    buf.close()
    tree_buf.close()


# ---------------------------------------------------------------- a writer that dies inside an add
@pytest.mark.parametrize("kind", KINDS)
def test_a_writer_killed_half_way_through_its_rows_leaves_nothing_visible(kind: str) -> None:
    buf = make(kind, 100)
    before_ids = buf.add_batch(batch_of(np.arange(90)))  # the batch below wraps onto items 0..19
    before = buf.stats()
    p = mp.get_context("fork").Process(target=_dies_half_way_through_a_batch,
                                       args=(buf.handle(), np.arange(30) + WRITER_KEYS))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    # the next call repairs: the half-written batch is not visible, the items it was evicting are gone
    assert len(buf) == 70
    stats = buf.stats()
    assert stats["added"] == before["added"] and stats["evicted"] == before["evicted"] + 20
    assert buf._shared.lock.recoveries == 1
    counts = account(buf, {0: before_ids})
    assert counts == {"present": 70, "gone": 20}
    assert whole(buf.sample(500))
    assert tree_is_rebuilt(buf)
    # and the buffer goes on: the next add takes the slots the dead one had
    new = buf.add_batch(batch_of(np.arange(30) + 2 * WRITER_KEYS))
    assert len(buf) == 100 and whole(buf.get(new))
    assert stats["added"] + 30 == buf.stats()["added"]
    buf.close()


def _dies_inside_a_fast_lane(handle: Any, lane: str, ks: np.ndarray) -> None:
    from ReplayTables.engine.fast_add import compile_add_batch, compile_add_one

    buf = ReplayTables.attach(handle, rng=3)
    table, shared = buf._table, buf._shared
    buf.add_batch(batch_of(ks[:1]))  # the general path: it compiles the lanes
    buf.add(item_of(int(ks[1])))

    def die() -> None:  # fault injection: every row written, the add not yet committed
        os.kill(os.getpid(), signal.SIGKILL)

    shared.close_add = die  # the lanes bind the journal's commit when they are compiled
    if lane == "add":
        table._add_fast = compile_add_one(table)
        buf.add(item_of(int(ks[2])))
    else:
        table._add_batch_fast = compile_add_batch(table)
        buf.add_batch(batch_of(ks[2:]))
    os._exit(3)  # not reached: a lane that does not journal its writes never calls close_add


@pytest.mark.parametrize("lane", ["add", "add_batch"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_writer_killed_inside_a_fast_lane_has_its_add_rolled_back(kind: str, lane: str) -> None:
    buf = make(kind, 100)
    buf.add_batch(batch_of(np.arange(10)))
    p = mp.get_context("fork").Process(target=_dies_inside_a_fast_lane,
                                       args=(buf.handle(), lane, np.arange(20) + WRITER_KEYS))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL  # it died inside the lane's journalled add
    # the two committed adds stay, the lane's add is rolled back: nothing of it visible
    assert len(buf) == 12 and buf.stats()["added"] == 12
    assert buf._shared.lock.recoveries == 1
    keys = np.sort(np.asarray(buf.get(live_ids(buf)).a))
    np.testing.assert_array_equal(keys, [*range(10), WRITER_KEYS, WRITER_KEYS + 1])
    assert whole(buf.sample(200)) and tree_is_rebuilt(buf)
    buf.close()


@pytest.mark.parametrize("limited", [False, True])
def test_an_add_checks_and_converts_before_it_takes_the_lock(limited: bool) -> None:
    from ReplayTables.rate_limiters import MinSize

    config = PERConfig(priority_exponent=1.0)
    buf = PrioritizedReplay(64, FIELDS, rng=0, config=config, rate_limiter=MinSize(1) if limited else None,
                            shared=True)
    table, lock = buf._table, buf._shared.lock
    held: list[bool] = []
    for name in ("_check_one", "_check_batch"):
        real = getattr(table, name)

        def spy(*args: Any, real: Any = real) -> Any:
            held.append(lock.held)
            return real(*args)

        setattr(table, name, spy)
    lists = {"x": [[1.0, 1.5, -1.0], [2.0, 2.5, -2.0]], "a": [1, 2], "r": [0.5, 1.0]}  # lists: the general path
    buf.add_batch(lists)
    buf.add_batch(batch_of([3, 4]), priorities=np.array([1.0, 2.0]))
    buf.add({"x": [5.0, 5.5, -5.0], "a": 5, "r": 2.5})
    buf.add(item_of(6), priority=3.0)
    assert held == [False, False, False, False]
    assert len(buf) == 6 and whole(buf.get(live_ids(buf)))
    buf.close()


VICTIM_BATCH, VICTIM_BATCHES = 8192, 16


def _sigkill_trial(seed: int, kind: str) -> int:
    """One trial; returns how many unfinished operations were repaired (1 when the kill landed inside an add)."""
    rng = np.random.default_rng(seed)
    capacity = 200_000  # more than the trial adds: nothing is evicted, so every item is accounted for exactly
    buf = make(kind, capacity, rng=seed)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    started = ctx.Event()
    victim = ctx.Process(target=_keeps_adding, args=(buf.handle(), 9, VICTIM_BATCH, VICTIM_BATCHES, started))
    others = [ctx.Process(target=_writer, args=(buf.handle(), w, 3000, 100, out)) for w in (1, 2)]
    victim.start()
    assert started.wait(60)
    for p in others:
        p.start()
    time.sleep(float(rng.uniform(0.0, 0.015)))
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(30)
    ids = dict(out.get(timeout=120) for _ in others)
    for p in others:
        p.join(30)
        assert p.exitcode == 0
    counts = account(buf, ids)
    assert counts == {"present": 6000, "gone": 0}  # the others carried on and lost nothing
    # the victim's items: whole batches only, exactly the first ones it added
    batch = buf.get(live_ids(buf))
    assert whole(batch)
    keys = np.asarray(batch.a)
    victim_keys = np.sort(keys[keys >= 9 * WRITER_KEYS]) - 9 * WRITER_KEYS
    assert victim_keys.size % VICTIM_BATCH == 0 and np.array_equal(victim_keys, np.arange(victim_keys.size))
    stats = buf.stats()
    assert stats["added"] == stats["size"] == len(buf) == 6000 + victim_keys.size and stats["evicted"] == 0
    assert tree_is_rebuilt(buf)
    repaired: int = buf._shared.lock.recoveries
    buf.close()
    return repaired


SIGKILL_TRIALS = [(seed, kind) for seed in range(20) for kind in (["uniform", "per"][seed % 2],)]


@pytest.mark.parametrize(("seed", "kind"), [pytest.param(s, k, marks=() if s < 3 else pytest.mark.slow)
                                            for s, k in SIGKILL_TRIALS])
def test_a_writer_sigkilled_at_a_random_moment_leaves_the_others_and_the_data_whole(seed: int, kind: str) -> None:
    _sigkill_trial(seed, kind)


# ---------------------------------------------------------------- lifetime and refusals
def test_attach_after_close_is_a_clear_error_and_calls_after_it_too() -> None:
    buf = make("per", 32)
    buf.add(item_of(1))
    handle = buf.handle()
    twin = ReplayTables.attach(handle)
    buf.close()
    with pytest.raises(SharedMemoryError) as info:
        ReplayTables.attach(handle)
    assert handle.segment.name in str(info.value)
    with pytest.raises(BufferClosedError):
        twin.sample(1)
    with pytest.raises(BufferClosedError):
        buf.add(item_of(2))
    assert not os.path.exists(f"/dev/shm/{handle.segment.name}")
    twin.close()


def test_shared_needs_declared_fields_and_leaves_no_segment_when_refused() -> None:
    before = segments_of(os.getpid())
    with pytest.raises(ConfigError) as info:
        ReplayBuffer(16, None, shared=True)
    assert "structure" in str(info.value)
    with pytest.raises(ConfigError):
        ReplayBuffer(16, FIELDS, shared="yes")  # type: ignore[arg-type]
    assert segments_of(os.getpid()) == before


def test_a_refused_add_changes_nothing_and_needs_no_repair() -> None:
    buf = make("per", 16)
    buf.add_batch(batch_of(np.arange(4)))
    before = buf.state_dict()
    with pytest.raises(SchemaError):
        buf.add_batch({"x": np.zeros((2, 4)), "a": np.arange(2), "r": np.zeros(2, np.float32)})
    with pytest.raises(SchemaError):
        buf.add({"x": np.zeros(3), "a": 1.5, "r": 0.0})
    after = buf.state_dict()
    assert set(after["arrays"]) == set(before["arrays"])
    for name, array in before["arrays"].items():
        np.testing.assert_array_equal(after["arrays"][name], array)
    assert after["table"] == before["table"] and len(buf) == 4
    assert buf._shared.lock.recoveries == 0
    buf.close()


def test_a_shared_buffer_is_not_pickled_and_its_samples_are_copies() -> None:
    buf = make("uniform", 8)
    buf.add_batch(batch_of(np.arange(8)))
    with pytest.raises(ConfigError) as info:
        pickle.dumps(buf)
    assert "handle" in str(info.value)
    sample = buf.get(np.arange(8))
    buf.add_batch(batch_of(np.arange(8) + 50))  # overwrites every slot
    np.testing.assert_array_equal(sample.a, np.arange(8))
    buf.close()
    np.testing.assert_array_equal(sample.x[:, 0], np.arange(8))  # still readable after the memory is gone


CREATOR = """
import sys, signal, time
import numpy as np
from ReplayTables import PrioritizedReplay
from ReplayTables.engine.schema import FieldSpec
buf = PrioritizedReplay(1000, {"x": FieldSpec((3,), np.float64)}, shared=True)
buf.add_batch({"x": np.ones((10, 3))})
print(buf._shared.segment.name, flush=True)
how = sys.argv[1]
if how == "close":
    buf.close()
elif how == "raise":
    raise RuntimeError("the creator fails")
elif how == "sigterm":
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["close", "exit", "raise", "sigterm"])
def test_every_exit_of_the_creator_leaves_nothing_in_dev_shm(how: str, tmp_path: Path) -> None:
    script = Script(tmp_path, CREATOR, how)
    name = script.read_line(60)
    assert name.startswith("replaytables_")
    if how == "sigterm":
        assert os.path.exists(f"/dev/shm/{name}")
        script.send_signal(signal.SIGTERM)
    script.finish(timeout=30)
    assert wait_for(lambda: not os.path.exists(f"/dev/shm/{name}"), 10)


# ---------------------------------------------------------------- the docs and the example
REPO = Path(__file__).resolve().parents[1]


def test_the_shared_buffer_docs_example_runs_as_written(tmp_path: Path) -> None:
    page = (REPO / "docs" / "shared-memory.md").read_text()
    blocks = [b.split("```", 1)[0] for b in page.split("```py\n")[1:]]
    assert len(blocks) == 1
    script = Script(tmp_path, blocks[0], name="shared_example.py")
    rc, out, err = script.finish(timeout=120)
    assert rc == 0, err
    assert out.strip() == "300 300"
    assert not segments_of(script.pid)


def test_the_actor_learner_example_runs_and_accounts_for_every_step(tmp_path: Path) -> None:
    import subprocess
    import sys

    from process_helpers import ENV

    done = subprocess.run([sys.executable, str(REPO / "examples" / "shared_memory_actors.py"), "--steps", "1500",
                           "--capacity", "2000"], capture_output=True, text=True, timeout=300, env=ENV, check=False)
    assert done.returncode == 0, done.stderr
    assert "buffer: 3000 added = 2000 stored + 1000 evicted" in done.stdout
    assert "exists after close: False" in done.stdout


# ---------------------------------------------------------------- rate limiting across processes
def _adds_after(handle: Any, delay: float) -> None:
    buf = ReplayTables.attach(handle)
    time.sleep(delay)
    buf.add_batch(batch_of(np.arange(3)))
    buf.close()


@pytest.mark.parametrize("method", METHODS)
def test_a_sample_waits_for_an_insert_by_another_process_and_the_counts_are_shared(method: str) -> None:
    from ReplayTables.rate_limiters import MinSize

    buf = ReplayBuffer(64, FIELDS, rng=0, rate_limiter=MinSize(2), shared=True)
    assert not buf.can_sample(1)
    p = mp.get_context(method).Process(target=_adds_after, args=(buf.handle(), 0.3))
    start = time.monotonic()
    p.start()
    batch = buf.sample(4, timeout=60)  # waits on the process lock until the child's add makes it possible
    waited = time.monotonic() - start
    p.join(30)
    assert p.exitcode == 0 and waited >= 0.3 and whole(batch)
    assert buf.rate_limiter is not None
    assert (buf.rate_limiter.inserts, buf.rate_limiter.samples) == (3, 4)  # the child's insert counted here
    twin = ReplayTables.attach(buf.handle())
    assert twin.rate_limiter is not None and (twin.rate_limiter.inserts, twin.rate_limiter.samples) == (3, 4)
    twin.close()
    buf.close()
    buf.close()  # closing twice is harmless


# ---------------------------------------------------------------- the step-stream buffer
def step_buffer(kind: str = "uniform", capacity: int = 400) -> Any:
    from ReplayTables.trajectory import TrajectoryReplay

    per = PERConfig(priority_exponent=1.0) if kind == "per" else None
    return TrajectoryReplay(capacity, (2,), np.float32, num_streams=2, per=per, rng=0, shared=True)


def frame(stream: int, t: int) -> np.ndarray:
    return np.full(2, stream * 1000 + t, np.float32)


def whole_steps(batch: Any) -> bool:
    """Each transition's fields agree: obs says (stream, t), next_obs is t + 1, reward and action follow."""
    v = batch.obs[:, 0]
    return bool(np.array_equal(batch.next_obs[:, 0], v + 1) and np.array_equal(batch.reward, v)
                and np.array_equal(batch.action, v.astype(np.int64) % 1000) and (batch.obs[:, 1] == v).all())


def _actor(handle: Any, stream: int, steps: int, episode: int, out: Any) -> None:
    buf = ReplayTables.attach(handle, rng=stream)
    t = 0
    buf.begin_episode(frame(stream, 0), stream=stream)
    for _ in range(steps):
        end = (t + 1) % episode == 0
        buf.add_step(t, float(stream * 1000 + t), frame(stream, t + 1), end, False, stream=stream)
        t += 1
        if end:
            t = 0
            buf.begin_episode(frame(stream, 0), stream=stream)
    out.put(stream)
    buf.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_step_stream_actors_on_their_own_streams_and_a_sampling_parent(method: str, kind: str) -> None:
    buf = step_buffer(kind)
    ctx = mp.get_context(method)
    out = ctx.Queue()
    actors = [ctx.Process(target=_actor, args=(buf.handle(), s, 500, 37, out)) for s in (0, 1)]
    for p in actors:
        p.start()
    samples = 0
    while any(p.is_alive() for p in actors) or samples < 5:
        if len(buf):
            batch = buf.sample(16)
            assert whole_steps(batch)
            if kind == "per":
                buf.update_priorities(batch.ids, np.full(16, 2.0))
            samples += 1
    assert sorted(out.get(timeout=60) for _ in actors) == [0, 1]
    for p in actors:
        p.join(30)
        assert p.exitcode == 0
    stats = buf.stats()
    assert stats["added"] == 1000 and stats["added"] == stats["size"] + stats["evicted"]
    everything = buf.get(buf.ids())
    assert whole_steps(everything) and len(everything.ids) == len(buf)
    assert tree_is_rebuilt(buf)
    buf.close()


def _dies_inside_a_step(handle: Any) -> None:
    buf = ReplayTables.attach(handle, rng=4)
    frames = buf._ring.frames

    def die(slots: Any, values: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    frames.write = die  # fault injection: the step's row is written, its next frame never is
    buf.add_step(5, 1005.0, frame(1, 6), False, False, stream=1)
    os._exit(3)  # not reached


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_stream_writer_killed_inside_a_step_empties_only_its_stream(kind: str) -> None:
    buf = step_buffer(kind)
    for s in (0, 1):
        buf.begin_episode(frame(s, 0), stream=s)
        for t in range(5):
            buf.add_step(t, float(s * 1000 + t), frame(s, t + 1), False, False, stream=s)
    before = buf.stats()
    p = mp.get_context("fork").Process(target=_dies_inside_a_step, args=(buf.handle(),))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert len(buf) == 5  # stream 1's items are gone, stream 0's are whole
    stats = buf.stats()
    assert stats["evicted"] == before["evicted"] + 5 and stats["added"] == stats["size"] + stats["evicted"]
    assert buf._shared.lock.recoveries == 1
    everything = buf.get(buf.ids())
    assert whole_steps(everything) and set((everything.obs[:, 0] // 1000).tolist()) == {0}
    assert tree_is_rebuilt(buf)
    # stream 1's episode was cut: it begins a new one and goes on
    buf.begin_episode(frame(1, 0), stream=1)
    buf.add_step(0, 1000.0, frame(1, 1), False, False, stream=1)
    assert len(buf) == 6 and whole_steps(buf.get(buf.ids()))
    buf.close()


def test_a_shared_step_stream_buffer_needs_frames_in_memory_and_no_sequences() -> None:
    from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay

    with pytest.raises(ConfigError):
        TrajectoryReplay(100, (2,), np.float32, storage="zstd", shared=True)
    with pytest.raises(ConfigError):
        TrajectoryReplay(100, (2,), np.float32, sequence=SequenceConfig(4), shared=True)


def test_a_step_checks_and_converts_before_it_takes_the_lock() -> None:
    buf = step_buffer()
    lock = buf._shared.lock
    held: list[bool] = []
    real = buf._obs

    def spy(*args: Any) -> Any:
        held.append(lock.held)
        return real(*args)

    buf._obs = spy
    buf.begin_episode(frame(0, 0), stream=0)
    buf.begin_episode(frame(1, 0), stream=1)
    held.clear()  # (starting an episode checks under the lock: not an add)
    buf.add_steps(np.array([0, 0]), np.array([0.0, 1000.0]), np.stack([frame(0, 1), frame(1, 1)]),
                  np.array([False, False]), np.array([False, False]))
    buf.add_step(1, 1.0, frame(0, 2).astype(np.float64), False, False, stream=0)  # float64: checked by _obs
    assert held == [False, False]  # every step's observation check ran with the lock free
    with pytest.raises(SchemaError):
        buf.add_step(2, float("nan"), frame(0, 3), False, False, stream=0)
    assert len(buf) == 3 and buf._shared.lock.recoveries == 0 and whole_steps(buf.sample(16))
    buf.close()
