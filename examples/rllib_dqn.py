"""RLlib DQN on CartPole-v1 (Ray's new API stack) with our prioritized episode buffer and with RLlib's own.

    python examples/rllib_dqn.py [--iterations 20] [--seeds 0 1]

The only change between the two runs is one config line:

    replay_buffer_config={"type": "ReplayTables.rllib.PrioritizedEpisodeReplayBuffer", ...}

versus RLlib's default ``"PrioritizedEpisodeReplayBuffer"``. Both runs use the same seeds
and settings. The script prints, per buffer and seed, the mean episode return of the last
iteration and the wall time spent inside the buffer's ``add``, ``sample`` and
``update_priorities`` (measured by wrapping those three methods of the built buffer).
Returns of one short run are noisy: compare them over several seeds.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

OURS = "ReplayTables.rllib.PrioritizedEpisodeReplayBuffer"
RLLIBS = "PrioritizedEpisodeReplayBuffer"


def timed(buffer: Any, spent: dict[str, float]) -> None:
    """Wrap the buffer's add, sample and update_priorities to add up their wall time."""
    for name in ("add", "sample", "update_priorities"):
        method: Callable[..., Any] = getattr(buffer, name)

        def wrapper(*args: Any, _method: Callable[..., Any] = method, _name: str = name, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - t0

        setattr(buffer, name, wrapper)


def run(buffer_type: str, seed: int, iterations: int) -> tuple[float, dict[str, float]]:
    from ray.rllib.algorithms.dqn import DQNConfig

    config = (DQNConfig()
              .environment("CartPole-v1")
              .env_runners(num_env_runners=0)
              .training(replay_buffer_config={"type": buffer_type, "capacity": 50_000, "alpha": 0.6, "beta": 0.4},
                        n_step=3, train_batch_size=32, num_steps_sampled_before_learning_starts=1000)
              .reporting(min_sample_timesteps_per_iteration=1000, min_time_s_per_iteration=0)
              .debugging(seed=seed))
    algo = config.build_algo()
    spent = {"add": 0.0, "sample": 0.0, "update_priorities": 0.0}
    timed(algo.local_replay_buffer, spent)
    ret = float("nan")
    try:
        for _ in range(iterations):
            result = algo.train()
            ret = result["env_runners"].get("episode_return_mean", ret)
    finally:
        algo.stop()
    return ret, spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=20, help="training iterations of 1000 env steps each")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        print(f"{'buffer':<48} {'seed':>4} {'return':>8} {'add s':>7} {'sample s':>9} {'update s':>9} {'total s':>8}")
        for seed in args.seeds:
            for buffer_type in (RLLIBS, OURS):
                ret, spent = run(buffer_type, seed, args.iterations)
                total = sum(spent.values())
                print(f"{buffer_type:<48} {seed:>4} {ret:>8.1f} {spent['add']:>7.2f} {spent['sample']:>9.2f} "
                      f"{spent['update_priorities']:>9.2f} {total:>8.2f}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
