"""RLlib front end vs front end A on the engine's workloads, plus R2D2-like sequences.

    python benchmarks/bench_rllib.py [--capacity 1000000] [--iters 2000]

Rows (all at ``capacity`` timesteps, buffer full):

* uniform sample of 256 (W3's transition: obs f32[17], action f32[6], reward
  f32, next_obs f32[17], done bool): ``ReplayTables.ReplayBuffer`` vs
  ``ReplayTables.rllib.ReplayBuffer(storage_unit="timesteps")``;
* PER (alpha 0.6, beta 0.4, no uniform mixing) sample 256 + update those 256
  priorities with random values: ``ReplayTables.PER.PrioritizedReplay`` vs
  ``ReplayTables.rllib.PrioritizedReplayBuffer``;
* R2D2-like: sequences of 80 rows (burn-in 40 + 40 steps, episodes of 400
  steps with ``eps_id``), ``capacity`` timesteps stored, sample 64 sequences,
  uniform (``ReplayBuffer``), prioritized (``PrioritizedReplayBuffer``) and the
  issue's config through ``MultiAgentPrioritizedReplayBuffer``.

Times are medians over blocks of calls (microseconds per call); A and rllib
blocks alternate so that load from other processes hits both alike. The machine is
shared: treat single runs as preliminary.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer as FrontA
from ReplayTables.rllib import MultiAgentPrioritizedReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer

SPEC = {"obs": ((17,), np.float32), "action": ((6,), np.float32), "reward": ((), np.float32),
        "next_obs": ((17,), np.float32), "done": ((), np.bool_)}


def columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: (rng.random((n, *shape)) < 0.01 if dt is np.bool_ else rng.random((n, *shape)).astype(dt))
            for k, (shape, dt) in SPEC.items()}


def per_call_us(fn: Callable[[], object], iters: int, blocks: int = 5) -> float:
    for _ in range(min(50, iters)):
        fn()
    times = []
    per_block = max(1, iters // blocks)
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        times.append((time.perf_counter() - t0) / per_block)
    return statistics.median(times) * 1e6


def paired_us(fa: Callable[[], object], fb: Callable[[], object], iters: int, blocks: int = 9) -> tuple[float, float]:
    """Median us per call of ``fa`` and ``fb``, measured in alternating blocks so that
    load from other processes on a shared machine hits both alike."""
    for _ in range(min(50, iters)):
        fa()
        fb()
    per_block = max(1, iters // blocks)
    ta, tb = [], []
    for _ in range(blocks):
        for fn, out in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            for _ in range(per_block):
                fn()
            out.append((time.perf_counter() - t0) / per_block)
    return statistics.median(ta) * 1e6, statistics.median(tb) * 1e6


def fill(add: Callable[[dict[str, np.ndarray]], object], capacity: int, rng: np.random.Generator,
         extra: Callable[[int], dict[str, np.ndarray]] | None = None) -> None:
    chunk = 100_000
    done = 0
    while done < capacity:
        m = min(chunk, capacity - done)
        cols = columns(m, rng)
        if extra is not None:
            cols.update(extra(done))
        add(cols)
        done += m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--iters", type=int, default=2000)
    args = parser.parse_args()
    cap, iters = args.capacity, args.iters
    rng = np.random.default_rng(0)
    structure = {k: FieldSpec(shape, np.dtype(dt)) for k, (shape, dt) in SPEC.items()}
    rows: list[tuple[str, float, float | None]] = []

    # uniform sample 256
    a = FrontA(cap, structure, np.random.default_rng(1))
    fill(a.add_batch, cap, rng)
    b = ReplayBuffer(cap, "timesteps", seed=1)
    fill(b.add, cap, rng)
    ta, tb = paired_us(lambda: a.sample(256), lambda: b.sample(256), iters)
    rows.append(("uniform sample 256", ta, tb))

    # PER sample + update 256
    pa = PrioritizedReplay(cap, structure, np.random.default_rng(2),
                           PERConfig(priority_exponent=0.6, uniform_probability=0.0, beta=0.4))
    fill(pa.add_batch, cap, rng)
    pa.update_priorities(np.arange(cap), rng.random(cap) + 1e-3)
    pb = PrioritizedReplayBuffer(cap, "timesteps", alpha=0.6, seed=2)
    fill(pb.add, cap, rng)
    pb.update_priorities(np.arange(cap), rng.random(cap) + 1e-3)
    p256 = rng.random(256) + 1e-3

    def step_a() -> None:
        batch = pa.sample(256)
        pa.update_priorities(batch.ids, p256)

    def step_b() -> None:
        batch = pb.sample(256, beta=0.4)
        pb.update_priorities(batch["batch_indexes"], p256)

    rows.append(("PER sample+update 256", *paired_us(step_a, step_b, iters)))

    # R2D2-like sequences
    episode = 400

    def eps(start: int) -> dict[str, np.ndarray]:
        return {"eps_id": (np.arange(start, start + 100_000) // episode).astype(np.int64)}

    for name, cls, kw in (("R2D2 64 seqs x 80, uniform", ReplayBuffer, {}),
                          ("R2D2 64 seqs x 80, PER", PrioritizedReplayBuffer, {"alpha": 0.9})):
        seq = cls(cap, "sequences", replay_sequence_length=80, replay_burn_in=40, seed=3, **kw)
        fill(seq.add, cap, rng, eps)
        sample = (lambda s=seq: s.sample(64, beta=0.6)) if kw else (lambda s=seq: s.sample(64))
        rows.append((name, per_call_us(sample, max(200, iters // 4)), None))

    # the R2D2 config through the multi-agent front (one policy)
    ma = MultiAgentPrioritizedReplayBuffer(cap, "sequences", replay_sequence_length=80, replay_burn_in=40,
                                           prioritized_replay_alpha=0.9, prioritized_replay_beta=0.6, seed=4)
    fill(ma.add, cap, rng, eps)
    rows.append(("R2D2 64 seqs x 80, MA PER", per_call_us(lambda: ma.sample(64), max(200, iters // 4)), None))

    print(f"capacity {cap:,} timesteps; median us per call")
    print(f"| {'workload':<28} | {'front end A':>12} | {'rllib':>10} | {'ratio':>6} |")
    print(f"|{'-' * 30}|{'-' * 14}|{'-' * 12}|{'-' * 8}|")
    for name, ta, tb in rows:
        if tb is None:
            print(f"| {name:<28} | {'-':>12} | {ta:>10.1f} | {'-':>6} |")
        else:
            print(f"| {name:<28} | {ta:>12.1f} | {tb:>10.1f} | {tb / ta:>6.2f} |")


if __name__ == "__main__":
    main()
