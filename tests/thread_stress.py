"""Mixed operations from several threads on one buffer, and an exact check of what is left.

Every stored row encodes a key that says which row it is (``x = [k, k + 0.5, -k]``,
``a = k``, ``r = k / 2`` for the ReplayTables API; ``obs = [k, -k]`` and ``k`` for
RLlib's; ``action = k`` and ``next_obs = [k, stream]`` for step streams), so a
reader can tell at once whether a row is whole, and afterwards whether it is the
row of its id. Each thread logs what the buffer told it (ids issued with their
keys, ids deleted, updates applied, rows read); :func:`check` then compares the
buffer's final state against those logs exactly:

- the counters (added, deleted, sampled, stale updates) equal the logged totals;
- the live ids are exactly the ids that must be live: for each slot the newest id
  issued on it, unless it was deleted (ids carry their slot: ``id % capacity``);
- ``size`` is the number of live ids and ``added - evicted - deleted``;
- every row ever read was the row of its id, and every live id's row still is;
- the sum tree is bit-identical to one rebuilt from its leaves, and its leaves are
  positive exactly on the live slots.

The checker is itself tested: ``corrupt_*`` break one invariant each and
:func:`check` must raise ``AssertionError`` for every one of them.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.errors import EmptyBufferError, StaleIdError

THREADS = 4


@dataclass
class Log:
    """What one thread was told by the buffer."""

    issued_ids: list[np.ndarray] = field(default_factory=list)
    issued_keys: list[np.ndarray] = field(default_factory=list)
    deleted: list[np.ndarray] = field(default_factory=list)
    read_ids: list[np.ndarray] = field(default_factory=list)
    read_keys: list[np.ndarray] = field(default_factory=list)
    handed_out: list[np.ndarray] = field(default_factory=list)
    sampled: int = 0
    updates: int = 0
    applied: int = 0
    saves: list[Path] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)

    def issue(self, ids: np.ndarray, keys: np.ndarray) -> None:
        keep = ids >= 0
        self.issued_ids.append(np.asarray(ids)[keep])
        self.issued_keys.append(np.asarray(keys)[keep])

    def read(self, ids: np.ndarray, keys: np.ndarray) -> None:
        self.read_ids.append(np.asarray(ids, dtype=np.int64))
        self.read_keys.append(np.asarray(keys, dtype=np.int64))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


@dataclass
class Totals:
    """All threads' logs joined."""

    ids: np.ndarray
    keys: np.ndarray
    deleted: np.ndarray
    read_ids: np.ndarray
    read_keys: np.ndarray
    handed_out: np.ndarray
    sampled: int
    stale: int
    saves: list[Path]
    ops: dict[str, int]

    @classmethod
    def of(cls, logs: list[Log]) -> Totals:
        ops: dict[str, int] = {}
        for log in logs:
            for k, v in log.ops.items():
                ops[k] = ops.get(k, 0) + v
        def joined(name: str) -> np.ndarray:
            return _cat([a for log in logs for a in getattr(log, name)])

        return cls(joined("issued_ids"), joined("issued_keys"), joined("deleted"), joined("read_ids"),
                   joined("read_keys"), joined("handed_out"), sum(log.sampled for log in logs),
                   sum(log.updates - log.applied for log in logs), [p for log in logs for p in log.saves], ops)

    def key_of(self, ids: np.ndarray) -> np.ndarray:
        """The key each id was issued with (an AssertionError for an id never issued)."""
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids[order], ids)
        pos = np.minimum(pos, max(len(order) - 1, 0))
        found = self.ids[order][pos] == ids if len(order) else np.zeros(len(ids), bool)
        assert found.all(), f"ids never issued: {ids[~found][:8].tolist()}"
        return self.keys[order][pos]


# ------------------------------------------------------------------ running the threads
def run_threads(worker: Callable[[int, np.random.Generator, Log], None], seed: int) -> list[Log]:
    """``worker(thread, rng, log)`` in ``THREADS`` threads at once; re-raises the first error."""
    logs = [Log() for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def body(t: int) -> None:
        rng = np.random.default_rng([seed, t])
        try:
            start.wait()
            worker(t, rng, logs[t])
        except BaseException as exc:  # reported below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return logs


def schedule(rng: np.random.Generator, weights: dict[str, float], ops: int) -> list[str]:
    """``ops`` operation names drawn with these weights (drawn up front: one draw per op is slow)."""
    names = [n for n in weights if weights[n] > 0]
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return [names[i] for i in rng.choice(len(names), size=ops, p=p / p.sum())]


def recent(log: Log, rng: np.random.Generator, n: int) -> np.ndarray:
    """Up to ``n`` ids this thread was given lately (some may be gone by now)."""
    if not log.issued_ids:
        return np.empty(0, np.int64)
    if rng.random() < 0.25:  # now and then an old one, likely overwritten since (a stale id)
        pool = [log.issued_ids[int(rng.integers(0, len(log.issued_ids)))]]
    else:
        pool = log.issued_ids[-8:]
    ids = np.concatenate(pool)
    return ids[rng.integers(0, len(ids), size=min(n, len(ids)))] if len(ids) else ids


# ------------------------------------------------------------------ the ReplayTables API
def a_keys(batch: Any) -> np.ndarray:
    """The key of each row of a ReplayTables ``Batch``; an AssertionError for a torn row."""
    a = np.asarray(batch.a, dtype=np.int64)
    x = np.asarray(batch.x)
    assert (x[:, 0] == a).all() and (x[:, 1] == a + 0.5).all() and (x[:, 2] == -a).all(), "a torn row"
    assert (np.asarray(batch.r) == (a / 2).astype(np.float32)).all(), "a torn row"
    return a


def front_end_a_worker(buffer: Any, ops: int, save_dir: Path, prioritized: bool) -> Callable[[int, Any, Log], None]:
    from conftest import item, items

    weights = {"add": 30, "add_batch": 12, "sample": 20, "get": 10, "delete": 8, "save": 0.05,
               "update_priorities": 15 if prioritized else 0}

    def work(t: int, rng: np.random.Generator, log: Log) -> None:
        counter = 0
        for op in schedule(rng, weights, ops):
            log.ops[op] = log.ops.get(op, 0) + 1
            if op in ("add", "add_batch"):
                m = 1 if op == "add" else int(rng.integers(1, 17))
                keys = (np.arange(counter, counter + m) * THREADS + t).astype(np.int64)
                counter += m
                if op == "add":
                    ids = np.array([buffer.add(item(int(keys[0])))])
                else:
                    ids = buffer.add_batch(items(keys))
                log.issue(ids, keys)
            elif op == "sample":
                n = int(rng.integers(1, 33))
                try:
                    batch = buffer.sample(n)
                except EmptyBufferError:
                    continue
                log.sampled += n
                log.read(batch.ids, a_keys(batch))
            elif op == "get":
                ids = recent(log, rng, 8)
                if ids.size == 0:
                    continue
                try:
                    batch = buffer.get(ids)
                except StaleIdError:
                    continue
                log.read(batch.ids, a_keys(batch))
            elif op == "delete":
                ids = np.unique(recent(log, rng, 3))
                if ids.size == 0:
                    continue
                try:
                    buffer.delete(ids)
                except StaleIdError:
                    continue  # one of them was gone: nothing was removed
                log.deleted.append(ids)
            elif op == "update_priorities":
                ids = recent(log, rng, 16)
                log.updates += len(ids)
                log.applied += buffer.update_priorities(ids, rng.random(len(ids)) * 10 + 0.01)
            else:
                path = save_dir / f"thread{t}"
                buffer.save(path)
                log.saves.append(path)

    return work


def tree_of(buffer: Any) -> Any:
    sampler = buffer._table.sampler
    return getattr(sampler, "tree", None)


def live_slot_ids(buffer: Any) -> np.ndarray:
    """The ids the buffer's directory holds as live (from its public state)."""
    slot_id = np.asarray(buffer.state_dict()["arrays"]["directory.slot_id"])
    return np.sort(slot_id[slot_id >= 0])


def expected_live(totals: Totals, capacity: int) -> np.ndarray:
    """For each slot the newest id issued on it, unless that id was deleted."""
    if totals.ids.size == 0:
        return totals.ids
    slots = totals.ids % capacity
    order = np.lexsort((totals.ids, slots))
    last = np.r_[slots[order][1:] != slots[order][:-1], True]
    newest = totals.ids[order][last]
    return np.sort(np.setdiff1d(newest, totals.deleted))


def check_tree(buffer: Any, live_slots: np.ndarray) -> None:
    tree = tree_of(buffer)
    if tree is None:
        return
    rebuilt = copy.deepcopy(tree)
    rebuilt.rebuild()
    for name in ("sums", "cum", "mins"):
        assert np.array_equal(getattr(tree, name), getattr(rebuilt, name)), f"the sum tree's {name} drifted"
    assert tree.total == rebuilt.total
    leaves = np.asarray(tree.leaves[:tree.capacity])
    positive = np.zeros(tree.capacity, bool)
    positive[live_slots] = True
    assert (leaves[~positive] == 0).all(), "a leaf of an empty slot holds a priority"
    assert ((leaves[positive] > 0) | np.signbit(leaves[positive])).all(), "a live slot has no priority"


def check(buffer: Any, logs: list[Log]) -> Totals:
    """Everything the module docstring lists, for a ReplayTables-API buffer."""
    totals = Totals.of(logs)
    stats = buffer.stats()
    capacity = buffer.max_size
    assert np.unique(totals.ids).size == totals.ids.size, "an id was issued twice"
    assert stats["added"] == totals.ids.size, (stats["added"], totals.ids.size)
    assert stats["deleted"] == totals.deleted.size, (stats["deleted"], totals.deleted.size)
    assert stats["sampled"] == totals.sampled, (stats["sampled"], totals.sampled)
    assert stats["stale_updates"] == totals.stale, (stats["stale_updates"], totals.stale)
    live = live_slot_ids(buffer)
    want = expected_live(totals, capacity)
    assert np.array_equal(live, want), f"live ids differ: {np.setxor1d(live, want)[:8].tolist()}"
    assert buffer.size() == live.size == stats["added"] - stats["evicted"] - stats["deleted"]
    assert np.array_equal(totals.key_of(totals.read_ids), totals.read_keys), "a row read was not its id's row"
    if live.size:
        assert np.array_equal(a_keys(buffer.get(live)), totals.key_of(live)), "a live id's row is not its own"
    check_tree(buffer, live % capacity)
    return totals


# ------------------------------------------------------------------ corrupted buffers (negative controls)
def corrupt_row(buffer: Any) -> None:
    """One stored row changed behind the buffer's back (a field of another item)."""
    storage = buffer._table.storage
    slot = int(live_slot_ids(buffer)[0] % buffer.max_size)
    storage.columns[1][slot] += 4  # ``a`` of another key; x still says the old one


def corrupt_size(buffer: Any) -> None:
    """The directory loses a live item without the counters knowing (the issue's lost items)."""
    directory = buffer._table.directory
    directory.count -= 1


def corrupt_tree(buffer: Any) -> None:
    """One leaf changed without its sums (the issue's drifting total)."""
    tree = tree_of(buffer)
    slot = int(live_slot_ids(buffer)[0] % buffer.max_size)
    tree.leaves[slot] *= 1.5


def corrupt_counter(buffer: Any) -> None:
    buffer._table.counters["stale_updates"] += 1


CORRUPTIONS = {"row": corrupt_row, "size": corrupt_size, "tree": corrupt_tree, "counter": corrupt_counter}


# ------------------------------------------------------------------ the step-stream buffer
STREAMS_PER_THREAD = 2


def step_keys(batch: Any) -> np.ndarray:
    """``key = step * 8 + stream`` of each sampled transition; an AssertionError for a torn one.

    Step ``k`` of stream ``s`` has ``action = reward = k`` and ``next_obs = [k, s]``, and its
    ``obs`` is the previous step's ``next_obs`` (or an episode's first ``[k - 1, s]``), which
    lives in another array than the step's row: a torn transition mixes two steps.
    """
    a = np.asarray(batch.action, dtype=np.int64)
    nxt, obs = np.asarray(batch.next_obs), np.asarray(batch.obs)
    assert (nxt[:, 0] == a).all() and (obs[:, 0] == a - 1).all(), "a torn transition"
    assert (obs[:, 1] == nxt[:, 1]).all() and (np.asarray(batch.reward) == a).all(), "a torn transition"
    return a * 8 + nxt[:, 1].astype(np.int64)


def step_stream_worker(buffer: Any, ops: int, save_dir: Path, prioritized: bool) -> Callable[[int, Any, Log], None]:
    weights = {"add_step": 35, "add_steps": 15, "sample": 20, "get": 10, "sample_sequences": 5, "save": 0.05,
               "update_priorities": 15 if prioritized else 0}

    def work(t: int, rng: np.random.Generator, log: Log) -> None:
        mine = np.arange(STREAMS_PER_THREAD) + STREAMS_PER_THREAD * t
        k = np.zeros(STREAMS_PER_THREAD, np.int64)  # the next step of each of this thread's streams
        buffer.begin_episodes(np.stack([k - 1, mine], 1).astype(np.float32), streams=mine)

        def step(which: np.ndarray) -> None:
            ks, streams = k[which], mine[which]
            end = rng.random(len(which)) < 0.01  # an episode ends now and then (truncated)
            args = (ks, ks.astype(np.float32), np.stack([ks, streams], 1).astype(np.float32),
                    np.zeros(len(which), bool), end)
            if len(which) == 1:
                ids = buffer.add_step(int(ks[0]), float(ks[0]), args[2][0], False, bool(end[0]), stream=int(streams[0]))
            else:
                ids = buffer.add_steps(*args, streams=streams)
            log.issue(ids, ks * 8 + streams)  # n_step=1: each step completes its own transition
            k[which] += 1
            if end.any():
                buffer.begin_episodes(np.stack([k[which][end] - 1, streams[end]], 1).astype(np.float32),
                                      streams=streams[end])

        for op in schedule(rng, weights, ops):
            log.ops[op] = log.ops.get(op, 0) + 1
            if op == "add_step":
                step(np.array([int(rng.integers(0, STREAMS_PER_THREAD))]))
            elif op == "add_steps":
                step(np.arange(STREAMS_PER_THREAD))
            elif op == "sample":
                n = int(rng.integers(1, 33))
                try:
                    batch = buffer.sample(n)
                except EmptyBufferError:
                    continue
                log.sampled += n
                log.read(batch.ids, step_keys(batch))
            elif op == "get":
                ids = recent(log, rng, 8)
                if ids.size == 0:
                    continue
                try:
                    batch = buffer.get(ids)
                except StaleIdError:
                    continue
                log.read(batch.ids, step_keys(batch))
            elif op == "sample_sequences":
                try:
                    seq = buffer.sample_sequences(4)
                except EmptyBufferError:
                    continue
                valid = np.asarray(seq.mask, bool)
                assert (np.asarray(seq.next_obs)[..., 0][valid] == np.asarray(seq.action)[valid]).all(), \
                    "a torn sequence"
            elif op == "update_priorities":
                ids = recent(log, rng, 16)
                log.updates += len(ids)
                log.applied += buffer.update_priorities(ids, rng.random(len(ids)) * 10 + 0.01)
            else:
                path = save_dir / f"thread{t}"
                buffer.save(path)
                log.saves.append(path)

    return work


def check_step_stream(buffer: Any, logs: list[Log]) -> Totals:
    """The module docstring's checks for a step-stream buffer. A slot there can also hold an
    episode's first observation (no transition), so the live ids are a subset of the newest id
    per slot, and exactly the ones ``ids()`` lists."""
    totals = Totals.of(logs)
    stats = buffer.stats()
    capacity = buffer.max_size
    assert np.unique(totals.ids).size == totals.ids.size, "an id was issued twice"
    assert stats["added"] == totals.ids.size and stats["sampled"] == totals.sampled
    assert stats["stale_updates"] == totals.stale and stats["deleted"] == 0
    live = np.sort(buffer.ids())
    assert np.isin(live, expected_live(totals, capacity)).all(), "a live id that an overwrite must have evicted"
    assert np.array_equal(live, live_slot_ids(buffer))
    assert buffer.size() == live.size == stats["added"] - stats["evicted"]
    assert np.array_equal(totals.key_of(totals.read_ids), totals.read_keys), "a transition read was not its id's"
    if live.size:
        assert np.array_equal(step_keys(buffer.get(live)), totals.key_of(live)), "a live id's row is not its own"
    check_tree(buffer, live % capacity)
    return totals


# ------------------------------------------------------------------ the RLlib API
def row_keys(batch: Any) -> np.ndarray:
    """The ``k`` of each row of an RLlib batch (``obs = [k, -k]``); an AssertionError for a torn row."""
    k = np.asarray(batch["k"], dtype=np.int64)
    obs = np.asarray(batch["obs"])
    assert (obs[:, 0] == k).all() and (obs[:, 1] == -k).all(), "a torn row"
    return k


def rows(keys: np.ndarray) -> dict[str, np.ndarray]:
    return {"obs": np.stack([keys, -keys], axis=1).astype(np.float64), "k": keys.astype(np.int64)}


POLICIES = ("p0", "p1")


OFFSET = 2**40  # multi-agent logs: policy j's ids are logged as id + j * OFFSET (each policy issues its own)


def rllib_worker(buffer: Any, ops: int, save_dir: Path) -> Callable[[int, Any, Log], None]:
    """Mixed calls on an RLlib-API buffer (single- or multi-agent; items are timesteps)."""
    from ReplayTables.rllib import FifoReplayBuffer, MultiAgentPrioritizedReplayBuffer, PrioritizedReplayBuffer
    from ReplayTables.rllib.multi_agent_replay_buffer import MultiAgentReplayBuffer

    multi = isinstance(buffer, MultiAgentReplayBuffer)
    prioritized = isinstance(buffer, (PrioritizedReplayBuffer, MultiAgentPrioritizedReplayBuffer))
    fifo = isinstance(buffer, FifoReplayBuffer)
    weights = {"add": 40, "sample": 25, "get": 0 if multi else 10, "delete": 0 if multi else 8, "save": 0.05,
               "update_priorities": 15 if prioritized else 0}

    def work(t: int, rng: np.random.Generator, log: Log) -> None:
        counter = 0
        j = t % len(POLICIES)
        policy, offset = POLICIES[j], j * OFFSET if multi else 0
        for op in schedule(rng, weights, ops):
            log.ops[op] = log.ops.get(op, 0) + 1
            if op == "add":
                m = int(rng.integers(1, 9))
                keys = (np.arange(counter, counter + m) * THREADS + t).astype(np.int64)
                counter += m
                out = buffer.add({policy: rows(keys)} if multi else rows(keys))
                ids = out[policy] if multi else out
                log.issue(np.where(ids >= 0, ids + offset, ids), keys)
            elif op == "sample":
                n = int(rng.integers(1, 17))
                try:
                    batch = buffer.sample(n)
                except EmptyBufferError:
                    continue
                for pid, part in (batch.policy_batches.items() if multi else [(policy, batch)]):
                    if not len(part):
                        continue
                    keys = row_keys(part)
                    log.sampled += len(keys)
                    if "batch_indexes" in part:
                        log.read(np.asarray(part["batch_indexes"]) + POLICIES.index(pid) * OFFSET * multi, keys)
                    if fifo:
                        log.handed_out.append(keys)  # a queue hands each item out once
            elif op == "get":
                ids = recent(log, rng, 8)
                if ids.size == 0:
                    continue
                try:
                    batch = buffer.get(ids, with_indexes=True)
                except StaleIdError:
                    continue
                log.read(batch["batch_indexes"], row_keys(batch))
            elif op == "delete":
                ids = np.unique(recent(log, rng, 3))
                if ids.size == 0:
                    continue
                try:
                    buffer.delete(ids)
                except StaleIdError:
                    continue
                log.deleted.append(ids)
            elif op == "update_priorities":
                ids = recent(log, rng, 16) - offset
                if ids.size == 0:
                    continue
                p = rng.random(len(ids)) * 10 + 0.01
                log.updates += len(ids)
                log.applied += buffer.update_priorities({policy: (ids, p)}) if multi else \
                    buffer.update_priorities(ids, p)
            else:
                path = save_dir / f"thread{t}"
                buffer.save(path)
                log.saves.append(path)

    return work


def check_rllib_single(buffer: Any, totals: Totals) -> None:
    """One RLlib-API buffer of timesteps against its joined logs."""
    stats = buffer.stats()
    live = np.sort(buffer.item_ids())
    assert np.unique(totals.ids).size == totals.ids.size, "an id was issued twice"
    assert stats["added_count"] == totals.ids.size + stats["not_stored_count"]
    assert stats["deleted_count"] == totals.deleted.size + totals.handed_out.size
    assert len(buffer) == live.size == stats["num_entries"] == stats["num_timesteps"]
    assert stats["added_count"] - stats["not_stored_count"] - stats["evicted_count"] - stats["deleted_count"] \
        == live.size
    assert np.isin(live, totals.ids).all() and not np.isin(live, totals.deleted).any(), "a live id deleted or unknown"
    capacity = buffer._table.layout.directory.capacity
    assert np.isin(live, expected_live(totals, capacity)).all(), "a live id whose slot was written again"
    if totals.handed_out.size:
        assert np.unique(totals.handed_out).size == totals.handed_out.size, "a queue handed an item out twice"
        assert not np.isin(totals.key_of(live), totals.handed_out).any(), "an item handed out is still queued"
    if live.size:
        batch = buffer.get(live, with_indexes=True)
        assert np.array_equal(row_keys(batch), totals.key_of(batch["batch_indexes"])), "a live id's row is not its own"
    check_tree(buffer, buffer._table.layout.directory.live_slots())


def check_rllib(buffer: Any, logs: list[Log]) -> Totals:
    """The module docstring's checks for the RLlib API (per policy for the multi-agent buffers)."""
    from ReplayTables.rllib.multi_agent_replay_buffer import MultiAgentReplayBuffer

    totals = Totals.of(logs)
    assert np.array_equal(totals.key_of(totals.read_ids), totals.read_keys), "a row read was not its id's row"
    if not isinstance(buffer, MultiAgentReplayBuffer):
        stats = buffer.stats()
        assert stats["stale_updates"] == totals.stale and stats["sampled_count"] == totals.sampled
        check_rllib_single(buffer, totals)
        return totals
    subs = buffer.replay_buffers
    assert len(buffer) == sum(len(b) for b in subs.values())
    assert sum(b.stats()["stale_updates"] for b in subs.values()) == totals.stale
    assert sum(b.stats()["sampled_count"] for b in subs.values()) <= totals.sampled  # a mix-in adds new items by get
    for j, pid in enumerate(POLICIES):
        if pid not in subs:
            continue
        mine = (totals.ids >= j * OFFSET) & (totals.ids < (j + 1) * OFFSET)
        part = copy.copy(totals)
        part.ids, part.keys = totals.ids[mine] - j * OFFSET, totals.keys[mine]
        check_rllib_single(subs[pid], part)
    return totals
