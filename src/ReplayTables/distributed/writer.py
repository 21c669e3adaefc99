"""ShardWriter: the handle with which Ray tasks and actors add straight to one shard.

A writer sends batches to its shard's actor without going through the learner,
and keeps at most ``max_in_flight`` of them in flight: the next batch is sent
while earlier ones are being stored (pipelining), and a writer that gets ahead
of its shard waits for the oldest reply before sending more (so memory stays
bounded). Single items are stacked into batches of ``batch_size`` rows first.

Arrays are sent through Ray's object store as they are (numpy arrays are not
pickled element by element); the shard copies them once, into its storage.

Errors: a batch the shard refuses (a wrong field, shape or priority) is
reported by the writer call that waits for its reply (a later ``add`` or
``flush()``), as the shard's own error, and nothing of that batch is stored.
A batch the rate limiter holds back (see the distributed page) is offered
again until it is taken, or until ``timeout`` runs out: then the waiting call
raises :class:`~ReplayTables.errors.RateLimitTimeout` and that batch is dropped.
Rows sent to a shard that dies before storing them are lost with it; they are
counted in :meth:`ShardWriter.stats` and the writer carries on once the shard
is back.

Pickling a writer (to give it to a Ray task or actor) carries the shard's actor
handle and the settings, not rows that were not sent yet: call :meth:`flush`
first.
"""
from __future__ import annotations

import collections
import copy
import time
from typing import Any

import numpy as np

from ReplayTables.distributed.batch_rows import batch_rows
from ReplayTables.distributed.ray_api import ShardDown, get_one
from ReplayTables.engine.schema import Schema
from ReplayTables.engine.state_checks import MAX_INT
from ReplayTables.engine.table_lock import check_timeout
from ReplayTables.errors import ConfigError, PriorityError, RateLimitTimeout

#: How long a writer waits before offering a batch the rate limiter held back again (seconds).
RATE_LIMIT_POLL = 0.01

__all__ = ["ShardWriter"]


def _positive(name: str, value: Any, hi: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= hi:
        raise ConfigError(name, value, f"an integer from 1 to {hi}")
    return int(value)


class ShardWriter:
    """Adds to one shard of a :class:`~ReplayTables.distributed.ShardedReplay`.

    Get one from :meth:`ShardedReplay.writer`; use it in any Ray task or actor.

    Args:
        actor: the shard's Ray actor handle.
        index: which shard it is.
        structure: the buffer's structure or :class:`~ReplayTables.engine.schema.Schema` (to stack
            single items).
        batch_size: single items are sent in batches of this many rows.
        max_in_flight: how many batches may wait for the shard's reply.
    """

    def __init__(self, actor: Any, index: int, structure: Any, batch_size: int = 64, max_in_flight: int = 4,
                 timeout: float | None = None) -> None:
        self.actor = actor
        self.index = index
        self.structure = structure
        self.batch_size = _positive("batch_size", batch_size, 1 << 20)
        self.max_in_flight = _positive("max_in_flight", max_in_flight, 1024)
        self.timeout = check_timeout(timeout)
        self._reset()

    def _reset(self) -> None:
        self._items: list[Any] = []
        self._priorities: list[Any] = []
        #: (reply, rows, items, priorities, when the rate limiter first refused it)
        self._in_flight: collections.deque[tuple[Any, int, Any, Any, float | None]] = collections.deque()
        self._schema: Schema | None = None
        self.rows_sent = 0
        self.rows_stored = 0
        self.rows_lost = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ adding
    def add(self, item: Any, priority: float | None = None) -> None:
        """Queue one item; it is sent with the next full batch (or by :meth:`flush`)."""
        if self._items and (priority is None) != (self._priorities[0] is None):
            raise PriorityError("priority", priority, "a priority for every queued item or for none "
                                                      f"({len(self._items)} queued items have "
                                                      f"{'none' if self._priorities[0] is None else 'one'})")
        self._items.append(item)
        self._priorities.append(priority)
        if len(self._items) >= self.batch_size:
            self._send_queued()

    def add_batch(self, items: Any, priorities: Any = None) -> None:
        """Send a batch (every field with a leading axis) now; queued single items go first."""
        self._send_queued()
        self._send(items, priorities, batch_rows(items))

    def flush(self) -> int:
        """Send what is queued and wait for every reply; returns the rows stored so far."""
        self._send_queued()
        while self._in_flight:
            self._wait_oldest()
        return self.rows_stored

    def stats(self) -> dict[str, Any]:
        """Rows sent, stored by the shard, and lost with a shard that died (and why); what is queued or
        in flight."""
        return {"shard": self.index, "rows_sent": self.rows_sent, "rows_stored": self.rows_stored,
                "rows_lost": self.rows_lost, "queued": len(self._items), "in_flight": len(self._in_flight),
                "last_error": self.last_error}

    # ------------------------------------------------------------ sending
    def _send_queued(self) -> None:
        if not self._items:
            return
        items, priorities = self._items, self._priorities
        batch = self._stack(items)
        self._items, self._priorities = [], []
        p = None if priorities[0] is None else np.asarray(priorities, dtype=np.float64)
        self._send(batch, p, len(items))

    def _stack(self, items: list[Any]) -> Any:
        if self._schema is None:
            declared = self.structure
            schema = copy.copy(declared if isinstance(declared, Schema) else Schema.from_structure(declared))
            schema.resolve(items[0])
            self._schema = schema
        columns = zip(*(self._schema.values_of(i) for i in items))
        return self._schema.build([np.stack([np.asarray(v) for v in col]) for col in columns])

    def _send(self, items: Any, priorities: Any, rows: int) -> None:
        while len(self._in_flight) >= self.max_in_flight:
            self._wait_oldest()
        ref = self.actor.add_batch.remote(items, priorities)
        self._in_flight.append((ref, rows, items, priorities, None))
        self.rows_sent += rows

    def _wait_oldest(self) -> None:
        ref, rows, items, priorities, refused_at = self._in_flight.popleft()
        try:
            ids, _ = get_one(ref, self.index)
        except ShardDown as down:
            self.rows_lost += rows
            self.last_error = str(down.cause)[:300]
            return
        except RateLimitTimeout:
            # the rate limiter holds this batch back until the learner has sampled more: offer it again
            now = time.monotonic()
            refused_at = now if refused_at is None else refused_at
            if self.timeout is not None and now - refused_at >= self.timeout:
                self.rows_sent -= rows
                raise
            time.sleep(RATE_LIMIT_POLL)
            self._in_flight.appendleft((self.actor.add_batch.remote(items, priorities), rows, items, priorities,
                                        refused_at))
            return
        self.rows_stored += int(np.count_nonzero(ids >= 0))

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {"actor": self.actor, "index": self.index, "structure": self.structure,
                "batch_size": self.batch_size, "max_in_flight": self.max_in_flight, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        return f"ShardWriter(shard={self.index}, batch_size={self.batch_size}, max_in_flight={self.max_in_flight})"
