"""Actors and a learner in threads, sharing one prioritized buffer kept in step by a rate limiter.

    python examples/actor_learner_threads.py [--actors 2] [--steps 2000]

Each actor thread runs its own small environment (a noisy random walk on a
line, standing in for a simulator) and adds one transition per step. The
learner thread takes prefetched batches of 64, computes stand-in TD errors and
updates their priorities. The buffer's rate limiter keeps about
``SAMPLES_PER_INSERT`` sampled items per inserted one once ``WARM_UP`` items are
in: when the actors run ahead their adds wait, when the learner does its
samples wait. When the learner is done it closes the buffer, which wakes the
actors waiting to add with ``BufferClosedError``, and they stop.

Printed at the end: the inserts and samples the limiter counted, and the
samples per insert after the warm-up, which stays within the limiter's band.
"""
from __future__ import annotations

import argparse
import threading
from typing import NamedTuple

import numpy as np

from ReplayTables.errors import BufferClosedError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.rate_limiters import SampleToInsertRatio

SAMPLES_PER_INSERT = 8.0
WARM_UP = 1_000
BATCH = 64
# a learner sampling 64 at a time and actors adding 1 need a band of at least 64 + 1 * 8 (docs/rate-limiting.md)
ERROR_BUFFER = 200.0


class Transition(NamedTuple):
    obs: np.ndarray
    action: np.int64
    reward: np.float32
    next_obs: np.ndarray
    done: np.bool_


def actor(buffer: PrioritizedReplay, seed: int) -> int:
    """Step a random walk and add every transition until the buffer is closed; returns the adds."""
    rng = np.random.default_rng(seed)
    position = np.zeros(1, dtype=np.float32)
    added = 0
    while True:
        action = np.int64(rng.integers(0, 2))
        nxt = position + np.float32(1.0 if action else -1.0) + rng.normal(0, 0.1, 1).astype(np.float32)
        done = np.bool_(abs(float(nxt[0])) > 10)
        try:
            buffer.add(Transition(position, action, np.float32(-abs(float(nxt[0]))), nxt, done))
        except BufferClosedError:
            return added  # the learner is done
        added += 1
        position = np.zeros(1, dtype=np.float32) if done else nxt


def learner(buffer: PrioritizedReplay, steps: int) -> None:
    """``steps`` updates on prefetched batches, then close the buffer."""
    rng = np.random.default_rng(0)
    with buffer.prefetch(BATCH, depth=2) as batches:
        for _ in range(steps):
            batch = next(batches)
            td_error = batch.reward - 0.99 * batch.next_obs[:, 0] + rng.normal(0, 0.1, BATCH)  # a stand-in
            buffer.update_priorities(batch, np.abs(td_error) + 1e-3)
    buffer.close()


def main(actors: int = 2, steps: int = 2000) -> dict[str, float]:
    limiter = SampleToInsertRatio(samples_per_insert=SAMPLES_PER_INSERT, min_size_to_sample=WARM_UP,
                                  error_buffer=ERROR_BUFFER)
    buffer = PrioritizedReplay(100_000, Transition, rng=0, config=PERConfig(), rate_limiter=limiter)
    threads = [threading.Thread(target=actor, args=(buffer, seed), name=f"actor-{seed}") for seed in range(actors)]
    threads.append(threading.Thread(target=learner, args=(buffer, steps), name="learner"))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the prefetch thread may have sampled up to ``depth + 1`` batches the learner never took
    ratio = limiter.samples / (limiter.inserts - WARM_UP)
    print(f"inserts {limiter.inserts}, samples {limiter.samples}, size {buffer.size()}")
    print(f"samples per insert after the warm-up: {ratio:.2f} (target {SAMPLES_PER_INSERT:g})")
    return {"inserts": limiter.inserts, "samples": limiter.samples, "ratio": ratio}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    main(args.actors, args.steps)
