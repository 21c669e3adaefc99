"""The old-stack DQN replay step, ours vs RLlib's own buffer, side by side in one run.

    python benchmarks/bench_rllib_old_stack_loop.py [--capacity 50000] [--iters 200]

Needs the ``rllib`` extra. Both buffers are ``MultiAgentPrioritizedReplayBuffer``
(alpha 0.6, beta 0.4, ``capacity`` timesteps, filled first with CartPole-shaped
steps: obs f32[4], actions int, rewards, terminateds, truncateds, eps_id, t). One
*step* is what RLlib's DQN does per training step on the old stack, through RLlib's
own utilities: add a 4-step ``MultiAgentBatch`` (``rollout_fragment_length=4``),
``sample_min_n_steps_from_buffer(buffer, 32)`` (32 calls of ``sample(num_items=1)``
and a concat) and ``update_priorities_in_replay_buffer`` with 32 td errors.
Reported: the median microseconds per step over alternating blocks (so that load
from other processes hits both alike) and their ratio. The machine is shared:
treat a single run as preliminary.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.replay_buffers import MultiAgentPrioritizedReplayBuffer as RLlibBuffer
from ray.rllib.utils.replay_buffers.utils import sample_min_n_steps_from_buffer, update_priorities_in_replay_buffer

from ReplayTables.rllib import MultiAgentPrioritizedReplayBuffer as OurBuffer


def steps(n: int, start: int, rng: np.random.Generator) -> MultiAgentBatch:
    t = np.arange(start, start + n)
    batch = SampleBatch({"obs": rng.random((n, 4), dtype=np.float32), "new_obs": rng.random((n, 4), dtype=np.float32),
                         "actions": rng.integers(0, 2, n), "rewards": np.ones(n, np.float32),
                         "terminateds": (t % 50) == 49, "truncateds": np.zeros(n, bool), "eps_id": t // 50,
                         "t": t % 50})
    return MultiAgentBatch({"default_policy": batch}, n)


def paired_us(fa: Callable[[], object], fb: Callable[[], object], iters: int, blocks: int = 7) -> tuple[float, float]:
    for _ in range(min(20, iters)):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=50_000)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ours = OurBuffer(capacity=args.capacity, prioritized_replay_alpha=0.6, prioritized_replay_beta=0.4, seed=0)
    theirs = RLlibBuffer(capacity=args.capacity, prioritized_replay_alpha=0.6, prioritized_replay_beta=0.4)
    for start in range(0, args.capacity, 1000):                 # full buffers, same data
        batch = steps(1000, start, rng)
        ours.add(batch)
        theirs.add(batch)
    fragments = [steps(4, args.capacity + 4 * i, rng) for i in range(64)]
    td = rng.normal(size=32)

    def step(buffer: object) -> Callable[[], None]:
        count = [0]

        def run() -> None:
            buffer.add(fragments[count[0] % len(fragments)])      # type: ignore[attr-defined]
            count[0] += 1
            train = sample_min_n_steps_from_buffer(buffer, 32, count_by_agent_steps=False)
            update_priorities_in_replay_buffer(buffer, {}, train, {"default_policy": {"td_error": td,
                                                                                        "learner_stats": {}}})
        return run

    ours_us, theirs_us = paired_us(step(ours), step(theirs), args.iters)
    print(f"old-stack DQN replay step (add 4 + 32 x sample(1) + update 32), capacity {args.capacity}:")
    print(f"  ReplayTables.rllib  {ours_us:9.0f} us")
    print(f"  RLlib 2.60          {theirs_us:9.0f} us")
    print(f"  RLlib / ours        {theirs_us / ours_us:9.2f}x")
    assert ours.stats()["priority_updates"] > 0


if __name__ == "__main__":
    main()
