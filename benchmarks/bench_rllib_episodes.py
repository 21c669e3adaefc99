"""New-stack episode buffers: ours beside RLlib's own, in one run.

    python benchmarks/bench_rllib_episodes.py [--steps 100000 1000000] [--iters 30]

For each size (timesteps stored, buffer full, episodes of 20..200 steps with
17-float32 observations, int actions, float rewards, as CartPole-like env runners
send them):

* ``EpisodeReplayBuffer.sample(256, n_step=3, sample_episodes=True)``;
* ``PrioritizedEpisodeReplayBuffer.sample(256, n_step=3, beta=0.4)`` followed by
  ``update_priorities`` of those 256 with random values;
* bytes per stored step: Python heap growth while the buffer is filled
  (``tracemalloc``, which sees numpy's allocations too), divided by the steps;
* the floor: what building the 256 returned ``SingleAgentEpisode`` objects costs alone.
  The inputs of one of our ``sample(256, n_step=3)`` calls (the gathered observations,
  actions, n-step returns, ids, ...) are captured, then two builders are timed on them:
  ours (``episode_compat.make_episodes``, field by field, what our sample runs) and RLlib's
  public ``SingleAgentEpisode(...)`` constructor called 256 times as RLlib's buffer calls it.
  Any buffer that returns RLlib's episodes pays at least one of these per sample, so
  ``RLlib / floor`` caps the speed-up over RLlib and ``ours / floor`` says how much of our
  sample is anything but the building.

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

import ReplayTables.rllib.episode_replay_buffer as episode_module
from ReplayTables.rllib import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer
from ReplayTables.rllib.episode_compat import make_episodes as build_fields


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


def interleaved_ms(fns: list[Callable[[], object]], iters: int, blocks: int = 5) -> list[float]:
    """Median ms per call of each of ``fns`` over blocks that take turns."""
    for fn in fns:
        fn()
    acc: list[list[float]] = [[] for _ in fns]
    per = max(1, iters // blocks)
    for _ in range(blocks):
        for fn, times in zip(fns, acc):
            t0 = time.perf_counter()
            for _ in range(per):
                fn()
            times.append((time.perf_counter() - t0) / per * 1e3)
    return [statistics.median(times) for times in acc]


def captured_build(buf: Any, **sample_kwargs: Any) -> dict[str, Any]:
    """The keyword arguments one ``buf.sample(**sample_kwargs)`` passes to the episode builder."""
    seen: list[dict[str, Any]] = []

    def spy(**kwargs: Any) -> list[Any]:
        seen.append(kwargs)
        return build_fields(**kwargs)

    episode_module.make_episodes = spy  # type: ignore[attr-defined]
    try:
        buf.sample(**sample_kwargs)
    finally:
        episode_module.make_episodes = build_fields  # type: ignore[attr-defined]
    assert len(seen) == 1
    return seen[0]


def floor_builders(kw: dict[str, Any]) -> tuple[Callable[[], object], Callable[[], object]]:
    """Build the captured 256 episodes field by field (ours) and with RLlib's constructor."""
    B = len(kw["ids"])
    obs0, obs1 = kw["obs"]
    rows = [dict(id_=kw["ids"][i], agent_id=kw["metas"][i].get("agent_id"),
                 module_id=kw["metas"][i].get("module_id"),
                 observation_space=kw["metas"][i].get("observation_space"),
                 action_space=kw["metas"][i].get("action_space"),
                 o=(obs0[i], obs1[i]), a=kw["actions"][i], r=float(kw["rewards"][i]),
                 infos=[{}, {}] if kw["infos"] is None else [kw["infos"][0][i] or {}, kw["infos"][1][i] or {}],
                 terminated=bool(kw["terminated"][i]), truncated=bool(kw["truncated"][i]),
                 w=float(kw["weights"][i]), n=int(kw["n_steps"][i]), t=int(kw["t_started"][i]))
            for i in range(B)]

    def constructor() -> list[Any]:
        # what RLlib's _sample_episodes does per sampled transition (n_step and weights are
        # then added to extra_model_outputs, which this leaves out: the floor is lower still)
        return [SingleAgentEpisode(id_=r["id_"], agent_id=r["agent_id"], module_id=r["module_id"],
                                   observation_space=r["observation_space"], action_space=r["action_space"],
                                   observations=list(r["o"]), actions=[r["a"]], rewards=[r["r"]],
                                   infos=r["infos"], terminated=r["terminated"], truncated=r["truncated"],
                                   extra_model_outputs={}, t_started=r["t"], len_lookback_buffer=0)
                for r in rows]

    return (lambda: build_fields(**kw)), constructor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    print(f"{'steps':>9} {'what':<38} {'RLlib':>10} {'ours':>10} {'ratio':>7}  (ratio: RLlib / ours; "
          "bytes: ours / RLlib)")
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
                kw = captured_build(ours, num_items=256, n_step=3, sample_episodes=True)
            else:
                def sample(b: Any) -> Callable[[], object]:
                    def run() -> None:
                        b.sample(256, n_step=3, beta=0.4)
                        b.update_priorities(rng.random(256))
                    return run
                what = "PER sample(256, n_step=3) + update ms"
                kw = captured_build(ours, num_items=256, n_step=3, beta=0.4)
                ours.update_priorities(rng.random(256))
            fields, constructor = floor_builders(kw)
            t_theirs, t_ours, t_fields, t_ctor = interleaved_ms(
                [sample(theirs), sample(ours), fields, constructor], args.iters)
            print(f"{steps:>9} {what:<38} {t_theirs:>10.2f} {t_ours:>10.2f} {t_theirs / t_ours:>6.1f}x")
            for label, t_floor in (("field by field", t_fields), ("RLlib's constructor", t_ctor)):
                print(f"{steps:>9}   floor: 256 episodes, {label:<19} {t_floor:>8.2f} ms   "
                      f"RLlib / floor {t_theirs / t_floor:>5.1f}x   ours / floor {t_ours / t_floor:>5.2f}x")
            b_theirs, b_ours = theirs_bytes / steps, ours_bytes / steps
            print(f"{steps:>9} {name + ' bytes/step':<38} {b_theirs:>10.0f} {b_ours:>10.0f} "
                  f"{b_ours / b_theirs:>6.2f}x")
            del theirs, ours
            gc.collect()


if __name__ == "__main__":
    main()
