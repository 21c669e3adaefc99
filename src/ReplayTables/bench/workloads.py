"""The standard workloads, run in this process on this library.

=====  =================================================================  ============
id     operation timed                                                    front end
=====  =================================================================  ============
W1     add one transition: obs f32[17], action f32[6], reward f32,        ReplayBuffer
       next_obs f32[17], done bool
W2     add a batch of 64 such transitions                                 ReplayBuffer
W3     uniform sample of 256 from a full buffer                           ReplayBuffer
W4     PER (alpha 0.6, beta 0.4): sample 256, update their priorities     PrioritizedReplay
W5     uniform sample of 32 transitions of 84x84 uint8 frames (each       TrajectoryReplay
       frame stored once); also bytes per stored transition
SEQ    sample 32 windows of 80 steps (17-float observations, 100 streams) TrajectoryReplay
=====  =================================================================  ============

Data is a deterministic pool (seed 12345) laid out as a trajectory
(``next_obs[i] == obs[i + 1]``, an episode end every 1,000 steps). Buffer
fills for W3-W5 and SEQ are not timed. W1 and W2 add into a fresh buffer, as
the harness does, so at large capacities the timed adds include the first
touch of new memory pages. Each figure is the median over ``repeats`` timed
loops after a short warm-up.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["WORKLOADS", "Result", "Transition", "Unavailable", "Workload", "run_workload"]

POOL = 65_536
EPISODE = 1_000


class Transition(NamedTuple):
    """The W1-W4 transition (165 bytes of payload)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.float32
    next_obs: np.ndarray
    done: np.bool_


class Unavailable(Exception):
    """A workload this installation cannot run (the message says why)."""


@dataclass
class Result:
    """One workload at one capacity."""

    workload: str
    capacity: int
    seconds_per_op: float
    ops: int
    repeats: int
    items_per_op: int
    fill_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def us_per_op(self) -> float:
        return self.seconds_per_op * 1e6

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "capacity": self.capacity, "us_per_op": self.us_per_op,
                "ops": self.ops, "repeats": self.repeats, "items_per_op": self.items_per_op,
                "fill_seconds": self.fill_seconds, **self.extra}


@dataclass(frozen=True)
class Workload:
    """A named workload: what it times, how many ops at scale 1, and its runner."""

    id: str
    description: str
    ops: int
    items_per_op: int
    runner: Callable[[int, int, int], Result]
    max_capacity: int | None = None  # larger capacities are skipped (memory), see ``describe``


def _timed(op: Callable[[int], Any], ops: int, repeats: int) -> float:
    """Median seconds per call of ``op(k)`` over ``repeats`` loops of ``ops`` calls."""
    for k in range(max(1, min(ops // 10, 1000))):
        op(k)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k in range(ops):
            op(k)
        runs.append((time.perf_counter() - t0) / ops)
    return statistics.median(runs)


class _Pool:
    """The shared deterministic data (built once per process)."""

    _cache: _Pool | None = None

    def __init__(self) -> None:
        rng = np.random.default_rng(12345)
        self.obs = rng.standard_normal((POOL + 1, 17), dtype=np.float32)
        self.action = rng.uniform(-1, 1, (POOL, 6)).astype(np.float32)
        self.reward = rng.standard_normal(POOL).astype(np.float32)
        self.done = (np.arange(POOL) + 1) % EPISODE == 0
        self.reward_py = self.reward.tolist()  # what a gym loop hands over: Python floats and bools
        self.done_py = self.done.tolist()

    @classmethod
    def get(cls) -> _Pool:
        if cls._cache is None:
            cls._cache = _Pool()
        return cls._cache

    def batch(self, start: int, n: int) -> Transition:
        s = slice(start, start + n)
        return Transition(self.obs[s], self.action[s], self.reward[s],  # type: ignore[arg-type]
                          self.obs[start + 1:start + 1 + n], self.done[s])

    def fill(self, buffer: Any, capacity: int, priorities: np.ndarray | None = None) -> float:
        """Fill ``buffer`` to ``capacity`` with pool batches; returns the seconds taken."""
        t0 = time.perf_counter()
        done = 0
        while done < capacity:
            n = min(POOL, capacity - done)
            if priorities is None:
                buffer.add_batch(self.batch(0, n))
            else:
                buffer.add_batch(self.batch(0, n), priorities[done:done + n])
            done += n
        return time.perf_counter() - t0


def _uniform(capacity: int) -> Any:
    from ReplayTables.ReplayBuffer import ReplayBuffer

    return ReplayBuffer(max_size=capacity, structure=Transition, rng=np.random.default_rng(0))


def run_w1(capacity: int, ops: int, repeats: int) -> Result:
    pool = _Pool.get()
    buf = _uniform(capacity)
    obs, act, rew, done = pool.obs, pool.action, pool.reward_py, pool.done_py
    mask = POOL - 1

    def op(k: int) -> None:
        j = k & mask
        buf.add(Transition(obs[j], act[j], rew[j], obs[j + 1], done[j]))

    return Result("W1", capacity, _timed(op, ops, repeats), ops, repeats, 1)


def run_w2(capacity: int, ops: int, repeats: int) -> Result:
    pool = _Pool.get()
    buf = _uniform(capacity)
    batches = [pool.batch(64 * i, 64) for i in range(POOL // 64)]
    mask = len(batches) - 1

    def op(k: int) -> None:
        buf.add_batch(batches[k & mask])

    return Result("W2", capacity, _timed(op, ops, repeats), ops, repeats, 64)


def run_w3(capacity: int, ops: int, repeats: int) -> Result:
    pool = _Pool.get()
    buf = _uniform(capacity)
    fill = pool.fill(buf, capacity)
    return Result("W3", capacity, _timed(lambda k: buf.sample(256), ops, repeats), ops, repeats, 256, fill)


def run_w4(capacity: int, ops: int, repeats: int) -> Result:
    from ReplayTables.PER import PERConfig, PrioritizedReplay

    pool = _Pool.get()
    rng = np.random.default_rng(7)
    buf = PrioritizedReplay(max_size=capacity, structure=Transition, rng=np.random.default_rng(0),
                            config=PERConfig(priority_exponent=0.6, beta=0.4))
    fill = pool.fill(buf, capacity, rng.uniform(0.01, 1.0, capacity))
    table = rng.uniform(0.01, 1.0, (64, 256))

    def op(k: int) -> None:
        batch = buf.sample(256)
        buf.update_priorities(batch.ids, table[k & 63])

    return Result("W4", capacity, _timed(op, ops, repeats), ops, repeats, 256, fill)


def _trajectory() -> Any:
    try:
        from ReplayTables import trajectory
    except ImportError as e:
        raise Unavailable(f"needs the step-stream front end (ReplayTables.trajectory), which is not "
                          f"importable here: {e}") from None
    return trajectory


def run_w5(capacity: int, ops: int, repeats: int) -> Result:
    traj = _trajectory()
    frames = np.random.default_rng(12345).integers(0, 256, (2048, 84, 84), dtype=np.uint8)
    buf = traj.TrajectoryReplay(capacity, (84, 84), np.uint8, action_dtype=np.int32,
                                rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    buf.begin_episode(frames[0])
    t = 0
    transitions = capacity - capacity // EPISODE - 2  # each episode's last frame takes a slot too
    for i in range(max(1, transitions)):
        t += 1
        end = t == EPISODE
        buf.add_step(i & 7, 1.0, frames[(i + 1) & 2047], False, end)
        if end:
            t = 0
            buf.begin_episode(frames[(i + 1) & 2047])
    fill = time.perf_counter() - t0
    stats = buf.stats()
    stored = max(len(buf), 1)
    extra = {"stored": len(buf)}
    if "frame_bytes" in stats:  # allocated bytes (rows + frames) over stored transitions, not RSS
        extra["storage_bytes_per_transition"] = (stats["storage_bytes"] + stats["frame_bytes"]) / stored
    return Result("W5", capacity, _timed(lambda k: buf.sample(32), ops, repeats), ops, repeats, 32, fill, extra)


def run_seq(capacity: int, ops: int, repeats: int) -> Result:
    traj = _trajectory()
    streams = max(1, min(100, capacity // 1000))
    per_stream = capacity // streams
    if per_stream < 81:
        raise Unavailable(f"capacity {capacity} is too small for windows of 80 steps")
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((4096, streams, 17), dtype=np.float32)
    acts = rng.uniform(-1, 1, (4096, streams, 6)).astype(np.float32)
    rew = rng.standard_normal((4096, streams)).astype(np.float32)
    no = np.zeros(streams, dtype=bool)
    buf = traj.TrajectoryReplay(capacity, (17,), np.float32, action_shape=(6,), action_dtype=np.float32,
                                num_streams=streams, sequence=traj.SequenceConfig(80),
                                rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    buf.begin_episodes(pool[0])
    for i in range(per_stream - 1):
        j = i % 4095
        end = (i + 1) % EPISODE == 0
        buf.add_steps(acts[j], rew[j], pool[j + 1], no, np.full(streams, end))
        if end:
            buf.begin_episodes(pool[j + 1])
    fill = time.perf_counter() - t0
    return Result("SEQ", capacity, _timed(lambda k: buf.sample_sequences(32), ops, repeats), ops, repeats, 32,
                  fill, {"streams": streams, "windows": int(buf.num_sequences())})


WORKLOADS: dict[str, Workload] = {w.id: w for w in (
    Workload("W1", "add one transition (165 B)", 200_000, 1, run_w1),
    Workload("W2", "add a batch of 64 transitions", 15_625, 64, run_w2),
    Workload("W3", "uniform sample of 256 (full buffer)", 5_000, 256, run_w3),
    Workload("W4", "PER sample 256 + update 256 priorities", 5_000, 256, run_w4),
    Workload("W5", "sample 32 of 84x84 uint8 frames (step stream)", 2_000, 32, run_w5, max_capacity=200_000),
    Workload("SEQ", "sample 32 sequences of 80 steps (step stream)", 500, 32, run_seq),
)}


def run_workload(workload: Workload, capacity: int, scale: float, repeats: int) -> Result:
    """Run one workload at one capacity with ``scale`` times its standard op count."""
    ops = max(1, round(workload.ops * scale))
    return workload.runner(capacity, ops, repeats)
