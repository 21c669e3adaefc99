"""One shard of a sharded buffer: an engine buffer plus its tag, its life and its reports.

This is plain Python (no Ray import): :mod:`ReplayTables.distributed.actors` runs
it inside a Ray actor, and tests can drive it directly. Every reply carries a
:class:`ShardReport`, so the learner always has the shard's latest size and
priority mass without asking for them separately.

Ids leave the shard tagged (see :mod:`ReplayTables.distributed.tags`); ids that
come back with another tag (an earlier life of this shard) are stale: skipped
and counted, exactly as one buffer counts an overwritten item's id.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ReplayTables.distributed.batch_rows import batch_rows
from ReplayTables.distributed.tags import tag_for, tag_ids, tags_of, untag
from ReplayTables.engine.draws import Draws
from ReplayTables.engine.mass import Mass
from ReplayTables.engine.schema import Schema
from ReplayTables.errors import RateLimitTimeout
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.rate_limiters import RateLimiter
from ReplayTables.ReplayBuffer import ReplayBuffer

__all__ = ["Shard", "ShardReport", "ShardSample", "make_buffer"]


class ShardReport(NamedTuple):
    """What a shard says about itself in every reply.

    ``priority_total`` and ``q_min`` are of the stored priorities ``q`` (a uniform
    shard reports ``size`` and 1.0); ``added`` counts every item offered to this
    life of the shard; ``stale`` the priority updates it skipped.
    """

    shard: int
    tag: int
    life: int
    size: int
    capacity: int
    priority_total: float
    q_min: float
    uniform_probability: float
    added: int
    sampled: int
    stale: int
    restored_from: str | None
    #: the running maximum of stored priorities new items get in 'max' mode (1.0 for uniform)
    max_q: float = 1.0

    @property
    def mass(self) -> Mass:
        """The mass a sample of this shard is relative to."""
        return Mass(self.size, self.priority_total, self.q_min, self.uniform_probability)


class ShardSample(NamedTuple):
    """What a shard sends back for its share of a sample."""

    ids: np.ndarray
    fields: list[np.ndarray]
    q: np.ndarray
    mass: Mass


def make_buffer(capacity: int, structure: Any, config: PERConfig | None,
                rng: np.random.Generator) -> ReplayBuffer:
    """The engine buffer of one shard: prioritized with a config, uniform without."""
    if config is None:
        return ReplayBuffer(capacity, structure, rng)
    return PrioritizedReplay(capacity, structure, rng, config)


class Shard:
    """One engine buffer of ``capacity`` items, the ``index``-th of ``num_shards``, in its ``life``-th life.

    Args:
        index, num_shards: which shard this is.
        capacity, structure, config: of its buffer (see :func:`make_buffer`).
        rng: the buffer's generator (only writers that draw use it: the learner
            sends the sample points).
        life: how many times this shard was started before (0 the first time).
        checkpoint: a directory written by :meth:`save` to start from, or ``None``.
        keep_tag: start from ``checkpoint`` with the tag it was saved with
            (loading a saved buffer keeps its ids); otherwise every id of an
            earlier life is stale from now on (a restart).
    """

    def __init__(self, index: int, num_shards: int, capacity: int, structure: Any, config: PERConfig | None,
                 rng: np.random.Generator, life: int = 0) -> None:
        self.index = index
        self.num_shards = num_shards
        self.config = config
        self.life = life
        self.tag = tag_for(index, num_shards, life)
        self.buffer = make_buffer(capacity, structure, config, rng)
        self.stale_other_life = 0
        self.restored_from: str | None = None
        self.limiter: RateLimiter | None = None
        #: the learner's latest global counts: (inserts, samples, size), and this shard's (added, size) then
        self.learner_counts = (0, 0, 0)
        self.own_at_counts = (0, 0)

    # ------------------------------------------------------------ rate limiting
    def limit(self, limiter_config: dict[str, Any] | None) -> None:
        """Admit inserts by this rate limiter over the whole buffer (see :meth:`admit_insert`)."""
        self.limiter = None if limiter_config is None else RateLimiter.from_config(limiter_config)

    def note_counts(self, inserts: int, samples: int, size: int) -> None:
        """The learner's global counts (sent with every sample)."""
        self.learner_counts = (inserts, samples, size)
        self.own_at_counts = (self.buffer._table.counters["added"], self.buffer.size())

    def admit_insert(self, k: int) -> None:
        """Refuse (``RateLimitTimeout``, nothing changed) an insert of ``k`` that the limiter forbids now.

        The counts are the learner's latest global ones plus what this shard
        inserted since (inserts by other shards since then are not known here: the
        band can be overshot by what the other writers have in flight). The caller
        (a writer, or the learner's ``add``) waits and sends it again."""
        if self.limiter is None or k == 0:
            return
        inserts, samples, size = self.learner_counts
        added, own_size = self.own_at_counts
        table = self.buffer._table
        est_inserts = inserts + table.counters["added"] - added
        est_size = max(0, size + self.buffer.size() - own_size)
        self.limiter.counts[:] = (est_inserts, samples)
        if not self.limiter.can_insert(k, est_size):
            raise RateLimitTimeout("rate_limiter", f"an insert of {k} item(s)",
                                   f"the learner to sample more first ({est_inserts} inserted, {samples} sampled "
                                   f"over all shards; {self.limiter!r})")

    # ------------------------------------------------------------ reports
    def report(self) -> ShardReport:
        b = self.buffer
        counters = b._table.counters
        mass = b._table.mass()
        return ShardReport(self.index, self.tag, self.life, mass.size, b.max_size, mass.priority_total,
                           mass.q_min, mass.uniform_probability, counters["added"], counters["sampled"],
                           counters["stale_updates"] + self.stale_other_life, self.restored_from,
                           b.max_priority if isinstance(b, PrioritizedReplay) else 1.0)

    def schema(self) -> Schema:
        """The buffer's schema (fixed by the first add when the structure left parts open)."""
        return self.buffer._table.schema

    def proposed_schema(self, item: Any, batched: bool) -> Schema | None:
        """The schema ``item`` would fix, if this shard's is still open (``None`` if it is fixed).

        Changes nothing; an item that fixes nothing valid is refused here (``SchemaError``)."""
        current = self.schema()
        if current.resolved:
            return None
        proposal = copy.copy(current)
        proposal.resolve(item, batched=batched)
        return proposal

    def adopt_schema(self, schema: Schema) -> None:
        """Take the fields every shard agreed on (the first add anywhere fixed them).

        Only while this shard's own fields are open (so it stores nothing yet): its
        empty buffer is rebuilt on the agreed schema, and an item that does not fit
        it is refused as it would be by one buffer."""
        if self.schema().resolved:
            return
        b = self.buffer
        self.buffer = make_buffer(b.max_size, schema, self.config, b._table.rng)
        if isinstance(b, PrioritizedReplay):
            self.raise_max(b.max_priority)  # what the learner shared before this shard's first add

    # ------------------------------------------------------------ adds
    def add(self, item: Any, priority: Any = None) -> tuple[int, ShardReport]:
        """Store one item; its tagged id and the report."""
        self.admit_insert(1)
        if priority is None or self.config is None:
            raw = self.buffer.add(item) if priority is None else self._refuse_priorities(priority)
        else:
            assert isinstance(self.buffer, PrioritizedReplay)
            raw = self.buffer.add(item, priority)
        return (int(tag_ids(np.array([raw], dtype=np.int64), self.tag)[0]), self.report())

    def add_batch(self, items: Any, priorities: Any = None) -> tuple[np.ndarray, ShardReport]:
        """Store a batch; the tagged ids and the report."""
        if self.limiter is not None:
            self.admit_insert(batch_rows(items))
        if priorities is None:
            raw = self.buffer.add_batch(items)
        elif self.config is None:
            raw = self._refuse_priorities(priorities)
        else:
            assert isinstance(self.buffer, PrioritizedReplay)
            raw = self.buffer.add_batch(items, priorities)
        return tag_ids(np.asarray(raw, dtype=np.int64), self.tag), self.report()

    def _refuse_priorities(self, priorities: Any) -> Any:
        from ReplayTables.errors import ConfigError

        raise ConfigError("priorities", priorities, "None: a uniform sharded buffer (config=None) has no priorities")

    # ------------------------------------------------------------ sampling
    def mass(self) -> Mass:
        return self.buffer._table.mass()

    def sample_from(self, draws: Draws) -> tuple[ShardSample | None, ShardReport]:
        """The items the learner's points select, with their stored priorities and this shard's mass
        when it sampled; ``None`` if it holds no item any more (it restarted since its last report)."""
        if self.buffer.size() == 0:
            return None, self.report()
        s = self.buffer._table.sample_from(draws)
        return ShardSample(tag_ids(s.ids, self.tag), s.fields, s.q, s.mass), self.report()

    # ------------------------------------------------------------ priorities
    def raise_max(self, q: float) -> None:
        """Raise the running maximum new items get in 'max' mode to the buffer-wide one."""
        if isinstance(self.buffer, PrioritizedReplay):
            sampler = self.buffer._sampler
            sampler.max_q = max(sampler.max_q, float(q))

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> tuple[int, ShardReport]:
        """Apply checked priorities to this shard's ids; ids of another life are stale.

        Returns how many were applied, and the report.
        """
        assert isinstance(self.buffer, PrioritizedReplay)
        mine = tags_of(ids) == self.tag
        self.stale_other_life += int(ids.shape[0] - np.count_nonzero(mine))
        applied = self.buffer.update_priorities(untag(ids[mine]), priorities[mine]) if mine.any() else 0
        return applied, self.report()

    # ------------------------------------------------------------ checkpoints
    def save(self, directory: str) -> ShardReport:
        """Save the buffer (a normal buffer checkpoint) and this shard's own counts into ``directory``."""
        path = Path(directory)
        self.buffer.save(path / "buffer")
        extra = {"tag": self.tag, "life": self.life, "stale_other_life": self.stale_other_life}
        tmp = path / ".shard.json.partial"
        import json

        tmp.write_text(json.dumps(extra))
        os.replace(tmp, path / "shard.json")
        return self.report()

    def restore(self, directory: str, keep_tag: bool) -> None:
        """Replace the buffer by the one saved in ``directory`` (checked by the buffer's own loader).

        With ``keep_tag`` the saved tag and counts come back too (a load); otherwise
        this life keeps its own tag, so ids handed out before are stale (a restart).
        """
        from ReplayTables.checkpoint import load
        from ReplayTables.distributed.shard_files import read_shard_file

        path = Path(directory)
        saved = read_shard_file(path / "shard.json", self.num_shards, self.index)
        buffer = load(path / "buffer", structure=self.buffer.structure)
        if type(buffer) is not type(self.buffer) or buffer.max_size != self.buffer.max_size:
            from ReplayTables.errors import CheckpointError

            raise CheckpointError(f"shard {self.index}", f"{type(buffer).__name__}({buffer.max_size})",
                                  f"{type(self.buffer).__name__}({self.buffer.max_size}) as this shard")
        if isinstance(buffer, PrioritizedReplay) and buffer.config != self.config:
            from ReplayTables.errors import CheckpointError

            raise CheckpointError(f"shard {self.index}.config", dataclasses.asdict(buffer.config),
                                  f"{self.config} as this shard")
        self.buffer = buffer
        if keep_tag:
            self.tag, self.life, self.stale_other_life = saved["tag"], saved["life"], saved["stale_other_life"]
        self.restored_from = str(path)
