"""Front end A: the ReplayTables API (uniform replay).

    buffer = ReplayBuffer(max_size=100_000, structure=Data, rng=np.random.default_rng(0))
    buffer.add(Data(x, a, r))
    batch = buffer.sample(32)      # batch.x.shape == (32, d); batch.ids; batch.weights

A thin layer over one engine :class:`~ReplayTables.engine.table.Table` with a
FIFO writer and a uniform sampler.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.base import TableBuffer
from ReplayTables.batch import Batch
from ReplayTables.engine.samplers import Sampler, UniformSampler
from ReplayTables.engine.table import Sample, Table, check_capacity, check_count, check_reserved, check_table_bytes
from ReplayTables.rate_limiters import RateLimiter

__all__ = ["Batch", "ReplayBuffer"]

_BATCH_ATTRIBUTES = {"ids", "weights", "probabilities", "data", "fields"}


class ReplayBuffer(TableBuffer):
    """Fixed-size FIFO replay buffer with uniform sampling.

    Args:
        max_size: how many items it holds; the oldest is overwritten after that.
        structure: a ``NamedTuple`` class, a dataclass, or a dict of
            :class:`~ReplayTables.engine.schema.FieldSpec`; undeclared dtypes and
            shapes are taken from the first item added.
        rng: the ``numpy.random.Generator`` that drives sampling, or an int seed
            meaning ``np.random.default_rng(seed)`` (seed it for reproducible runs;
            its state is saved in checkpoints); ``None`` draws a fresh seed.
        rate_limiter: a :class:`~ReplayTables.rate_limiters.RateLimiter` that adds and
            samples wait for (``timeout=`` on each call); ``None``: nothing waits.
        shared: keep the whole state in shared memory, for other processes to
            :func:`~ReplayTables.shared.attach` via :meth:`handle` (every field's
            shape and dtype must be declared; see :mod:`ReplayTables.shared`).

    Every public call is atomic: it holds the buffer's lock for the whole call, so
    threads may share the buffer (see ``docs/concurrency.md``), and processes too
    when it is shared.
    """

    def __init__(self, max_size: int, structure: Any = None, rng: np.random.Generator | int | None = None, *,
                 rate_limiter: RateLimiter | None = None, shared: bool = False) -> None:
        max_size = check_capacity("max_size", max_size)
        check_table_bytes("max_size", max_size, 0, prioritized=True)  # before a sum tree is built (counts one)
        self._table = Table(max_size, structure, writer="fifo", sampler=self._make_sampler(max_size), rng=rng,
                            capacity_name="max_size", lazy_ids=True)
        # a field called e.g. ``weights`` would hide the batch's importance weights; fields
        # that come from the first dict added are checked when that add fixes them
        self._table.reserved_names = frozenset(_BATCH_ATTRIBUTES)
        check_reserved(self._table.schema, self._table.reserved_names)
        self._finish_init(shared, rate_limiter)

    def _make_sampler(self, max_size: int) -> Sampler:
        return UniformSampler()

    def _init_args(self) -> dict[str, Any]:
        return {"max_size": self._table.capacity, **self._limiter_init()}

    @property
    def structure(self) -> Any:
        return self._table.schema.structure

    # ------------------------------------------------------------ writing
    def add(self, item: Any, /, *, timeout: float | None = None) -> int:
        """Store one item (an instance of the structure); returns its id.

        With a rate limiter, waits until it allows the insert, at most ``timeout``
        seconds (``None``: no limit), then raises ``RateLimitTimeout`` having stored
        nothing.
        """
        if self._plain and timeout is None:  # no limiter, not closed: nothing to wait for or count
            fast = self._table._add_fast  # the generated lane, called straight: one Python frame less
            if fast is not None:
                new_id: int = fast(item)  # it checks the item and holds the table's lock itself
                return new_id
            return self._table.add(item)  # the table's add holds the (same) lock itself
        return self._add_admitted(item, None, timeout)

    def add_batch(self, items: Any, *, timeout: float | None = None) -> np.ndarray:
        """Store many items at once: a structure whose fields have a leading batch axis.

        Returns the int64 ids, in order. Faster than a loop of :meth:`add` (one
        vectorised write per field). A rate-limited batch waits until all of it may
        be inserted (``timeout`` as for :meth:`add`).
        """
        return self._add_batch(items, None, timeout)

    def _add_batch(self, items: Any, priorities: Any, timeout: float | None) -> np.ndarray:
        if self._plain and timeout is None:
            fast = self._table._add_batch_fast  # the generated lane, called straight (see add)
            if fast is not None and priorities is None:
                ids: np.ndarray = fast(items)
                return ids
            return self._table.add_batch(items, priorities)  # holds the table's lock itself
        table = self._table
        # a shared, rate-limited buffer checks the batch before it takes the lock (as its plain adds do)
        checked = table._check_batch(items, priorities) if self._shared is not None \
            and self._admission.limiter is not None else None
        with self._lock:
            admission = self._admission
            if admission.limiter is None:
                admission.insert(0, timeout)
                return table.add_batch(items, priorities)
            if checked is not None:
                admission.insert(checked[1], timeout)
                ids = table._add_batch_general(items, priorities, checked)
            else:
                # the batch's length, without storing it: the table's own checks of the items come after
                admission.insert(self._batch_length(items), timeout)
                ids = table.add_batch(items, priorities)
            admission.inserted(int(ids.shape[0]))
            return ids

    def _batch_length(self, items: Any) -> int:
        """How many items a batch holds, by the table's own checks (an error here changes nothing)."""
        schema = self._table._prepare(items, batched=True)
        m, _ = schema.coerce_batch(schema.values_of(items))
        return m

    @atomic
    def delete(self, ids: Any) -> None:
        """Remove items by id. Every id must be live; otherwise nothing is removed."""
        self._table.delete(ids)
        self._admission.changed()

    # ------------------------------------------------------------ reading
    def _batch(self, s: Sample) -> Batch:
        return Batch(self._table.schema, s.fields, s.ids, s.weights, s.probabilities)

    def sample(self, n: int, *, timeout: float | None = None) -> Batch:
        """``n`` items drawn uniformly with replacement; ``weights`` are all ones.

        With a rate limiter, waits until it allows a sample of ``n`` (``timeout`` as
        for :meth:`add`).
        """
        if self._plain and timeout is None:  # nothing to wait for or count: the table's call is the whole call
            return self._batch(self._table.sample(n))  # it checks n and holds the (same) lock itself
        with self._lock:
            n = check_count("n", n)
            self._admission.sample(n, timeout)
            s = self._table.sample(n)
            self._admission.sampled(len(s.ids))
            return self._batch(s)

    @atomic
    def get(self, ids: Any) -> Batch:
        """The items with these ids (an error naming any that were overwritten or deleted)."""
        return self._batch(self._table.get(ids))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size()}, max_size={self.max_size}, {self._table.schema!r})"
