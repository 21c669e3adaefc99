"""New-stack episode buffers: ours beside RLlib's own, in one run.

    python benchmarks/bench_rllib_episodes.py [--steps 100000 1000000] [--iters 30]

For each size (timesteps stored, buffer full, episodes of 20..200 steps with
17-float32 observations, int actions, float rewards, as CartPole-like env runners
send them):

* ``EpisodeReplayBuffer.sample(256, n_step=3, sample_episodes=True)``;
* ``PrioritizedEpisodeReplayBuffer.sample(256, n_step=3, beta=0.4)`` followed by
  ``update_priorities`` of those 256 with random values;
* bytes per stored step: Python heap growth while the buffer is filled
  (``tracemalloc``, which sees numpy's allocations too), divided by the steps.

Times are medians of blocks of calls, RLlib and ours alternating so that load
from other processes hits both alike; ratios are RLlib / ours from the same run.
The machine may be shared: treat a single run as preliminary.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer as RLlibEpisodeReplayBuffer
from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
    PrioritizedEpisodeReplayBuffer as RLlibPrioritizedEpisodeReplayBuffer,
)

from ReplayTables.rllib import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer


def make_episodes(steps: int, seed: int = 0) -> list[Any]:
    """Complete numpy episodes of 20..200 steps adding up to ``steps``."""
    rng = np.random.default_rng(seed)
    out, total, i = [], 0, 0
    while total < steps:
        n = min(int(rng.integers(20, 200)), steps - total)
        obs = rng.standard_normal((n + 1, 17)).astype(np.float32)
        eps = SingleAgentEpisode(id_=f"e{i}", observations=list(obs), actions=list(rng.integers(0, 2, n)),
                                 rewards=list(rng.random(n)), infos=[{} for _ in range(n + 1)],
                                 terminated=bool(i % 2), truncated=not i % 2, len_lookback_buffer=0)
        out.append(eps.to_numpy())
        total += n
        i += 1
    return out


def warm_up(cls: type, episodes: list[Any]) -> None:
    """One small buffer of ``cls`` filled, sampled and updated, so that imports and compiled
    kernels loaded on first use are not counted as the memory of the measured buffer."""
    buf = cls(capacity=1000)
    for eps in episodes[:5]:
        buf.add(eps)
    buf.sample(8, n_step=3, sample_episodes=True, beta=0.4)
    if hasattr(buf, "update_priorities"):
        buf.update_priorities(np.ones(8))


def filled(cls: type, episodes: list[Any], capacity: int) -> tuple[Any, int]:
    """A buffer holding ``episodes`` and the heap bytes it took to hold them."""
    warm_up(cls, episodes)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buf = cls(capacity=capacity)
    for eps in episodes:  # one chunk per add, as RLlib's prioritized buffer needs (it cannot evict within a list)
        buf.add(eps)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return buf, used


def paired_ms(fa: Callable[[], object], fb: Callable[[], object], iters: int, blocks: int = 5) -> tuple[float, float]:
    """Median ms per call of ``fa`` and ``fb`` over alternating blocks."""
    fa()
    fb()
    ta, tb = [], []
    per = max(1, iters // blocks)
    for _ in range(blocks):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            for _ in range(per):
                fn()
            acc.append((time.perf_counter() - t0) / per * 1e3)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    print(f"{'steps':>9} {'what':<38} {'RLlib':>10} {'ours':>10} {'ratio':>7}")
    for steps in args.steps:
        episodes = make_episodes(steps)
        for name, theirs_cls, ours_cls in (("EpisodeReplayBuffer", RLlibEpisodeReplayBuffer, EpisodeReplayBuffer),
                                           ("PrioritizedEpisodeReplayBuffer", RLlibPrioritizedEpisodeReplayBuffer,
                                            PrioritizedEpisodeReplayBuffer)):
            theirs, theirs_bytes = filled(theirs_cls, episodes, steps)
            ours, ours_bytes = filled(ours_cls, episodes, steps)
            assert theirs.get_num_timesteps() == ours.get_num_timesteps() == steps
            if name == "EpisodeReplayBuffer":
                def sample(b: Any) -> Callable[[], object]:
                    return lambda: b.sample(256, n_step=3, sample_episodes=True)
                what = "sample(256, n_step=3) ms"
            else:
                def sample(b: Any) -> Callable[[], object]:
                    def run() -> None:
                        b.sample(256, n_step=3, beta=0.4)
                        b.update_priorities(rng.random(256))
                    return run
                what = "PER sample(256, n_step=3) + update ms"
            t_theirs, t_ours = paired_ms(sample(theirs), sample(ours), args.iters)
            print(f"{steps:>9} {what:<38} {t_theirs:>10.2f} {t_ours:>10.2f} {t_theirs / t_ours:>6.1f}x")
            b_theirs, b_ours = theirs_bytes / steps, ours_bytes / steps
            print(f"{steps:>9} {name + ' bytes/step':<38} {b_theirs:>10.0f} {b_ours:>10.0f} "
                  f"{b_ours / b_theirs:>6.2f}x")
            del theirs, ours
            gc.collect()


if __name__ == "__main__":
    main()
