"""The Ray actors of a sharded buffer: the shards, and the ledger their restarts read.

A shard actor is a :class:`~ReplayTables.distributed.shard.Shard` in a Ray actor,
created with ``max_restarts`` (Ray restarts a dead one) and ``max_task_retries=0``
(the call that was running when it died is not run again: it may be what
killed it, and a re-run add would store its items twice).

When Ray restarts a shard it runs the constructor again with the same
arguments; the constructor asks the :class:`ShardLedger` which life this is
and which checkpoint to start from. The ledger is bookkeeping, not a
supervisor: it never watches, starts or stops anything.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ReplayTables.distributed.ray_api import ray
from ReplayTables.distributed.shard import Shard, ShardReport, ShardSample, make_buffer
from ReplayTables.engine.draws import Draws
from ReplayTables.engine.schema import Schema
from ReplayTables.errors import ReplayTablesError
from ReplayTables.PER import PERConfig, PrioritizedReplay

__all__ = ["ShardActor", "ShardLedger", "remote_classes"]


class ShardLedger:
    """Per shard: the life it is in, and the checkpoint its next start restores.

    The first start of a shard gets ``lives[index]`` and restores
    ``checkpoints[index]`` keeping its saved tag (a load keeps the ids); every
    later start is a restart: the next life, from the last checkpoint if any, and
    every id handed out before is stale from then on.
    """

    def __init__(self, lives: list[int], checkpoints: list[str | None]) -> None:
        self.lives = list(lives)
        self.checkpoints = list(checkpoints)
        self.started = [False] * len(lives)
        self.schema: Schema | None = None

    def agree_schema(self, proposal: Schema) -> Schema:
        """The fields all shards store: the first proposal (the first add anywhere) fixes them."""
        if self.schema is None:
            self.schema = proposal
        return self.schema

    def begin(self, index: int) -> tuple[int, str | None, bool]:
        """``(life, checkpoint directory or None, keep the saved tag)`` for a shard that is starting."""
        first = not self.started[index]
        if not first:
            self.lives[index] += 1
        self.started[index] = True
        return self.lives[index], self.checkpoints[index], first

    def set_checkpoints(self, directories: list[str]) -> None:
        """A save completed: restarts from now on restore these."""
        self.checkpoints = list(directories)


def warm_up(config: PERConfig | None) -> None:
    """Run every compiled kernel a shard uses once, on a throw-away buffer, so that the first real
    sample does not spend seconds compiling (and time out on the learner)."""
    buffer = make_buffer(4, None, config, np.random.default_rng(0))
    if isinstance(buffer, PrioritizedReplay):
        ids = buffer.add_batch({"x": np.zeros((2, 1))}, np.ones(2))
        buffer.add({"x": np.zeros(1)}, 1.0)
        buffer.update_priorities(ids, np.ones(2))
    else:
        buffer.add_batch({"x": np.zeros((2, 1))})
        buffer.add({"x": np.zeros(1)})
    buffer.sample(2)
    points = np.array([0.25, 0.75])
    for draws in (Draws(points, points), Draws(points, points[:0]), Draws(points[:0], points)):
        buffer._table.sample_from(draws)


class ShardActor:
    """A :class:`Shard` behind Ray: every method returns its result with the shard's report."""

    def __init__(self, index: int, num_shards: int, capacity: int, structure: Any, config: PERConfig | None,
                 rng: np.random.Generator, ledger: str, limiter_config: dict[str, Any] | None = None) -> None:
        # the ledger by name: a handle among the constructor arguments would live in the object store,
        # and Ray could not restart the actor once that copy were lost
        r = ray()
        self.ledger = r.get_actor(ledger)
        life, checkpoint, keep_tag = r.get(self.ledger.begin.remote(index))
        self.shard = Shard(index, num_shards, capacity, structure, config, rng, life)
        self.shard.limit(limiter_config)
        warm_up(config)
        self.load_error: ReplayTablesError | None = None
        if checkpoint is not None:
            try:
                self.shard.restore(checkpoint, keep_tag)
            except ReplayTablesError as exc:
                # a load reports it (see started); a restart starts empty rather than fail again and again
                if keep_tag:
                    self.load_error = exc
                else:
                    self.shard.restored_from = f"nothing: {checkpoint} was refused ({str(exc)[:200]})"
        if self.shard.schema().resolved:  # restored items fix the fields of every shard
            self.shard.adopt_schema(r.get(self.ledger.agree_schema.remote(self.shard.schema())))

    def _agree(self, item: Any, batched: bool) -> None:
        """Before this shard's first add: make every shard's fields the same (first add wins)."""
        proposal = self.shard.proposed_schema(item, batched)
        if proposal is not None:
            self.shard.adopt_schema(ray().get(self.ledger.agree_schema.remote(proposal)))

    def started(self) -> ShardReport:
        """The first report; raises the error that refused the checkpoint this shard was loaded from."""
        if self.load_error is not None:
            raise self.load_error
        return self.shard.report()

    def add(self, item: Any, priority: Any = None) -> tuple[int, ShardReport]:
        self._agree(item, batched=False)
        return self.shard.add(item, priority)

    def add_batch(self, items: Any, priorities: Any = None) -> tuple[np.ndarray, ShardReport]:
        self._agree(items, batched=True)
        return self.shard.add_batch(items, priorities)

    def sample_from(self, draws: Draws, counts: tuple[int, int, int] | None = None) -> tuple[
            ShardSample | None, ShardReport]:
        if counts is not None:
            self.shard.note_counts(*counts)
        return self.shard.sample_from(draws)

    def raise_max(self, q: float) -> None:
        self.shard.raise_max(q)

    def note_counts(self, inserts: int, samples: int, size: int) -> None:
        self.shard.note_counts(inserts, samples, size)

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> tuple[int, ShardReport]:
        return self.shard.update_priorities(ids, priorities)

    def report(self) -> ShardReport:
        return self.shard.report()

    def schema(self) -> Any:
        return self.shard.schema()

    def save(self, directory: str) -> ShardReport:
        return self.shard.save(directory)

    def ping(self) -> None:
        """An empty call (the benchmark's measure of Ray's own cost)."""

    def carry(self, items: Any) -> int:
        """Receive a batch and do nothing with it (the benchmark's floor for a writer's add)."""
        return 0

    def pid(self) -> int:
        """The actor's process id (tests kill it to test restarts)."""
        return os.getpid()


_REMOTE: dict[str, Any] = {}


def remote_classes() -> tuple[Any, Any]:
    """``(ShardActor, ShardLedger)`` as Ray actor classes (made once, on first use)."""
    if not _REMOTE:
        r = ray()
        _REMOTE["shard"] = r.remote(ShardActor)
        _REMOTE["ledger"] = r.remote(ShardLedger)
    return _REMOTE["shard"], _REMOTE["ledger"]
