"""Two actor processes play CartPole into one shared prioritized buffer; a learner samples it.

    pip install -e '.[examples]'                       # gymnasium
    python examples/shared_memory_actors.py            # a few seconds: 2 actors x 20,000 steps
    python examples/shared_memory_actors.py --steps 2000

The learner (this process) makes a ``PrioritizedReplay(shared=True)`` and hands
its ``handle()`` to two actor processes (spawned: nothing is inherited). Each
actor attaches the buffer with ``ReplayTables.attach(handle)`` and adds its
transitions straight into the shared memory, one ``add`` per environment step:
no batch is pickled through a queue. Meanwhile the learner samples prioritized
batches of 64, does a step of linear Q-learning on them (numpy: Q(s, a) = W[a] . s
on a few features of the state, with the importance weights in the update) and
writes the new |TD error| back as priorities. The actors follow a fixed noisy
policy (push the cart the way the pole falls, a random action 20% of the time),
so what the learner fits is that policy's action values.

At the end the learner prints what each actor added, how much it trained, and
checks the accounting: every step an actor took is in the buffer or was evicted.
Closing the learner's buffer unlinks the shared memory: nothing is left in
``/dev/shm``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np

import ReplayTables
from ReplayTables import PERConfig, PrioritizedReplay
from ReplayTables.engine.schema import FieldSpec

FIELDS = {"obs": FieldSpec((4,), np.float32), "action": FieldSpec((), np.int64), "reward": FieldSpec((), np.float32),
          "next_obs": FieldSpec((4,), np.float32), "terminated": FieldSpec((), np.bool_)}
GAMMA = 0.99


def actor(handle: Any, seed: int, steps: int, out: Any) -> None:
    import gymnasium as gym

    buffer = ReplayTables.attach(handle)  # the learner's buffer, same class, same memory
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    episodes, ret = 0, 0.0
    returns: list[float] = []
    for _ in range(steps):
        action = int(rng.integers(2)) if rng.random() < 0.2 else int(obs[2] + 0.5 * obs[3] > 0)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add({"obs": obs, "action": action, "reward": float(reward), "next_obs": next_obs,
                    "terminated": bool(terminated)})
        ret += float(reward)
        obs = next_obs
        if terminated or truncated:
            returns.append(ret)
            episodes, ret = episodes + 1, 0.0
            obs, _ = env.reset()
    out.put({"seed": seed, "steps": steps, "episodes": episodes,
             "mean_return": float(np.mean(returns[-20:])) if returns else 0.0})
    buffer.close()  # an attached process never unlinks: the learner's buffer stays


def features(obs: np.ndarray) -> np.ndarray:
    """A bias, the state and its squares: enough for a rough linear value of CartPole."""
    return np.concatenate([np.ones((obs.shape[0], 1)), obs, obs ** 2], axis=1)


def learn(buffer: PrioritizedReplay, w: np.ndarray, lr: float) -> float:
    """One step of linear Q-learning on a prioritized batch; returns the mean |TD error|."""
    batch = buffer.sample(64)
    x, x_next = features(batch.obs), features(batch.next_obs)
    q = np.einsum("bd,bd->b", w[batch.action], x)
    target = batch.reward + GAMMA * (~batch.terminated) * (x_next @ w.T).max(axis=1)
    td = target - q
    grad = (batch.weights * td)[:, None] * x
    np.add.at(w, batch.action, lr * grad)
    buffer.update_priorities(batch.ids, np.abs(td) + 1e-3)
    return float(np.abs(td).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per actor")
    parser.add_argument("--capacity", type=int, default=30_000)
    args = parser.parse_args()

    buffer = PrioritizedReplay(args.capacity, FIELDS, rng=0, config=PERConfig(priority_exponent=0.6), shared=True)
    w = np.zeros((2, 9))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    actors = [ctx.Process(target=actor, args=(buffer.handle(), seed, args.steps, out))
              for seed in (1, 2)]
    for p in actors:
        p.start()
    updates, td = 0, []
    start = time.perf_counter()
    while any(p.is_alive() for p in actors):
        if len(buffer) < 256:
            time.sleep(0.01)
            continue
        td.append(learn(buffer, w, lr=1e-3))
        updates += 1
    reports = sorted((out.get(timeout=60) for _ in actors), key=lambda r: r["seed"])
    for p in actors:
        p.join()
    elapsed = time.perf_counter() - start
    stats = buffer.stats()
    for r in reports:
        print(f"actor {r['seed']}: {r['steps']} steps, {r['episodes']} episodes, "
              f"mean return of the last 20 {r['mean_return']:.1f}")
    print(f"learner: {updates} prioritized batches of 64 in {elapsed:.1f} s while the actors ran, "
          f"mean |TD| first 100 {np.mean(td[:100]):.3f}, last 100 {np.mean(td[-100:]):.3f}")
    total = sum(r["steps"] for r in reports)
    assert stats["added"] == total and stats["size"] + stats["evicted"] == total, stats
    print(f"buffer: {stats['added']} added = {stats['size']} stored + {stats['evicted']} evicted")
    name = buffer._shared.segment.name
    buffer.close()
    print(f"/dev/shm/{name} exists after close: {os.path.exists('/dev/shm/' + name)}")


if __name__ == "__main__":
    main()
