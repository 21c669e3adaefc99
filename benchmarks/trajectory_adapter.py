"""Peer-harness adapter for the step-stream buffer (``ReplayTables.trajectory.TrajectoryReplay``).

Loaded by the peer harness's ``$BENCH_DIR/worker.py`` by path (entries ``ReplayTables-next steps`` in
``benchmarks/peers.json``). The harness hands over transitions ``(obs, action,
reward, next_obs, done)`` of one trajectory (``next_obs[i] == obs[i + 1]``); this
adapter feeds them as a step stream, which is how an RL loop would use the buffer:

* ``add_one(t)``: ``begin_episode(t["obs"])`` when no episode is open, then
  ``add_step(action, reward, next_obs, terminated=done, truncated=False)``; so
  ``next_obs`` is stored once, and each episode's last frame once more than
  its steps (1 in 1,000 for W5).
* capacity: the harness's capacity counts transitions; the buffer's counts
  stored frames, so it gets ``capacity + capacity // 1000 + 2`` records and holds
  all of the harness's transitions (bytes per transition are over those).
* ``sample_uniform(n)`` -> ``buffer.sample(n)`` (a ``TransitionBatch``);
  ``sample_per(n, beta)`` -> ``(batch, batch.ids, batch.weights)`` with the
  config's beta (the workload's, 0.4).

Options (``peers.json`` ``options``): ``storage`` (``"memory"`` | ``"memmap"``: files in a
temporary directory | ``"zstd"``), ``frame_stack``, ``n_step``.
"""
from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from _base import Buffer  # provided by the harness (registered by path)

from ReplayTables.PER import PERConfig
from ReplayTables.trajectory import TrajectoryReplay

PACKAGES = ("ReplayTables", "numba")


class StepBuffer(Buffer):
    supports_add_batch = False

    def __init__(self, capacity: int, spec: dict[str, Any], seed: int = 0, per: dict[str, Any] | None = None,
                 beta: float = 0.4, storage: str = "memory", frame_stack: int = 1, n_step: int = 1,
                 **_: Any) -> None:
        (oshape, odtype), (ashape, adtype) = spec["obs"], spec["action"]
        self.per = per is not None
        cfg = None
        if per is not None:
            self.supports_per = True
            cfg = PERConfig(priority_exponent=float(per["alpha"]), beta=float(beta))
        path = tempfile.mkdtemp(prefix="rt-steps-") + "/buffer" if storage == "memmap" else None
        self.rb = TrajectoryReplay(capacity + capacity // 1000 + 2, tuple(oshape), np.dtype(odtype),
                                   action_shape=tuple(ashape), action_dtype=np.dtype(adtype),
                                   frame_stack=frame_stack, n_step=n_step, per=cfg, storage=storage, path=path,
                                   rng=np.random.default_rng(seed))
        self._open = False
        self.sample_uniform = self.rb.sample  # type: ignore[method-assign]
        if per is not None:
            self.update_priorities = self.rb.update_priorities  # type: ignore[method-assign]

    def add_one(self, t: dict[str, Any]) -> None:
        rb = self.rb
        if not self._open:
            rb.begin_episode(t["obs"])
            self._open = True
        done = t["done"]
        rb.add_step(t["action"], t["reward"], t["next_obs"], done, False)
        if done:
            self._open = False

    def fill(self, pool: Any, n: int) -> None:
        rows = pool.rows(pool.P)
        add = self.add_one
        for i in range(n):
            add(rows[i % len(rows)])

    def sample_per(self, n: int, beta: float) -> tuple[Any, np.ndarray, np.ndarray]:
        batch = self.rb.sample(n)
        return batch, batch.ids, batch.weights

    def size(self) -> int:
        return self.rb.size()

    def storage_nbytes(self) -> int:
        return int(self.rb.stats()["storage_bytes"] + self.rb.stats()["frame_bytes"])


def make(capacity: int, spec: dict[str, Any], *, seed: int = 0, per: dict[str, Any] | None = None,
         sample_batch_size: int | None = None, add_batch_size: int | None = None, **options: Any) -> StepBuffer:
    return StepBuffer(capacity, spec, seed=seed, per=per, **options)
