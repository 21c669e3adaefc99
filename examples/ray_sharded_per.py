"""Ray actors collect CartPole experience into a sharded prioritized buffer; a learner samples it.

    pip install -e '.[ray,examples]'
    python examples/ray_sharded_per.py            # 4 collectors, 4 shards, 20 rounds (about a minute here)
    python examples/ray_sharded_per.py --smoke    # seconds: the same code path, a tiny budget

What it shows (see docs/distributed.md):

* ``ShardedReplay(num_shards, max_size, Transition, PERConfig(...))`` puts one
  prioritized buffer on ``num_shards`` Ray actors;
* each collector (a Ray actor playing gymnasium's CartPole-v1) gets a
  ``buffer.writer()`` and adds every transition straight to its shard: the
  learner never handles the experience on its way in;
* the learner samples with ``buffer.sample(64)`` (the global prioritized
  distribution over all shards, with importance weights), takes a gradient step
  and sends the new priorities back with ``buffer.update_priorities(ids, |td|,
  wait=False)``, which routes each id to its shard.

The learner is a linear Q-function on hand-made features, trained with
importance-weighted TD(0): it is here to drive the buffer the way a DQN learner
does, not to be a strong agent (the DQN demo, ``examples/dqn_cartpole.py``, is
the one that learns CartPole).
"""
# no ``from __future__ import annotations``: Ray sends Transition to the shards by value, and
# the shards read its field annotations (strings would have to be resolved there)
import argparse
import time
from typing import Any, NamedTuple

import numpy as np


class Transition(NamedTuple):
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    done: np.ndarray


def features(obs: np.ndarray) -> np.ndarray:
    """``[1, obs, obs**2]`` per row (a linear Q-function on these is a quadratic one on obs)."""
    obs = np.atleast_2d(obs)
    return np.concatenate([np.ones((obs.shape[0], 1)), obs, obs**2], axis=1)


def q_values(weights: np.ndarray, obs: np.ndarray) -> np.ndarray:
    return features(obs) @ weights  # (rows, 2 actions)


def make_collector_class() -> Any:
    import ray

    @ray.remote
    class Collector:
        """Plays CartPole-v1 with an epsilon-greedy policy on the learner's latest weights."""

        def __init__(self, writer: Any, seed: int, epsilon: float) -> None:
            import gymnasium as gym

            self.writer = writer
            self.env = gym.make("CartPole-v1")
            self.obs, _ = self.env.reset(seed=seed)
            self.rng = np.random.default_rng(seed)
            self.epsilon = epsilon
            self.episode_return = 0.0
            self.returns: list[float] = []

        def run(self, steps: int, weights: np.ndarray) -> dict[str, Any]:
            for _ in range(steps):
                if self.rng.random() < self.epsilon:
                    action = int(self.rng.integers(2))
                else:
                    action = int(np.argmax(q_values(weights, self.obs)[0]))
                next_obs, reward, terminated, truncated, _ = self.env.step(action)
                self.writer.add(Transition(np.asarray(self.obs, np.float32), np.int64(action), np.float32(reward),
                                           np.asarray(next_obs, np.float32), np.float32(terminated)))
                self.episode_return += float(reward)
                self.obs = next_obs
                if terminated or truncated:
                    self.returns.append(self.episode_return)
                    self.episode_return = 0.0
                    self.obs, _ = self.env.reset()
            self.writer.flush()  # every row of this round is in the shard before the learner goes on
            returns, self.returns = self.returns, []
            return {"returns": returns, **self.writer.stats()}

    return Collector


def learn(buffer: Any, weights: np.ndarray, steps: int, lr: float, gamma: float = 0.99) -> dict[str, float]:
    """``steps`` importance-weighted TD(0) steps on prioritized samples; new priorities go back to the shards."""
    sample_ms = []
    td_abs = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = buffer.sample(64)
        sample_ms.append((time.perf_counter() - t0) * 1e3)
        q = q_values(weights, batch.obs)
        target = batch.reward + gamma * (1.0 - batch.done) * q_values(weights, batch.next_obs).max(axis=1)
        rows = np.arange(len(batch))
        td = target - q[rows, batch.action]
        grad = np.zeros_like(weights)
        phi = features(batch.obs)
        for a in (0, 1):
            taken = batch.action == a
            grad[:, a] = phi[taken].T @ (batch.weights[taken] * td[taken]) / len(batch)
        weights += lr * np.clip(grad, -10.0, 10.0)
        buffer.update_priorities(batch.ids, np.abs(td) + 1e-3, wait=False)  # routed per shard, no round trip
        td_abs.append(float(np.abs(td).mean()))
    return {"sample_ms": float(np.median(sample_ms)), "td": float(np.mean(td_abs))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny budget (seconds)")
    parser.add_argument("--collectors", type=int, default=4)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=500, help="environment steps per collector per round")
    parser.add_argument("--updates", type=int, default=100, help="learner steps per round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.collectors, args.shards, args.rounds, args.steps, args.updates = 2, 2, 2, 100, 10

    import ray

    from ReplayTables.distributed import ShardedReplay
    from ReplayTables.PER import PERConfig

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    buffer = ShardedReplay(args.shards, 100_000, Transition, PERConfig(priority_exponent=0.6, beta=0.4), seed=0)
    collector_cls = make_collector_class()
    # one writer per collector: writer() takes the shards in turn, so collectors spread over them
    collectors = [collector_cls.remote(buffer.writer(batch_size=64), seed=i, epsilon=0.1 + 0.1 * i)
                  for i in range(args.collectors)]
    weights = np.zeros((9, 2))
    summary: dict[str, Any] = {}
    for round_ in range(args.rounds):
        reports = ray.get([c.run.remote(args.steps, weights) for c in collectors])
        returns = [r for rep in reports for r in rep["returns"]]
        learned = learn(buffer, weights, args.updates, lr=0.01)
        stats = buffer.stats()
        summary = {"round": round_ + 1, "size": stats["size"], "shards_up": stats["shards_up"],
                   "shard_sizes": [s["size"] for s in stats["shards"]],
                   "mean_return": float(np.mean(returns)) if returns else float("nan"), **learned}
        print(f"round {round_ + 1:3d}  size {stats['size']:6d}  shard sizes {summary['shard_sizes']}  "
              f"mean return {summary['mean_return']:6.1f}  |td| {learned['td']:.3f}  "
              f"sample(64) {learned['sample_ms']:.2f} ms")
    buffer.close()
    return summary


if __name__ == "__main__":
    main()
