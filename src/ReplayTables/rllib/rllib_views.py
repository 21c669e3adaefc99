"""RLlib's observable buffer attributes, as read-only compatibility views.

RLlib's subclasses, tests and algorithms read private attributes of its
``ReplayBuffer`` (``_num_timesteps_added``, ``_storage``, ``_next_idx``,
``_hit_count``, ...). Our storage is different (columnar, a true ring), so these
are *views*: computed from our state, read-only (assigning one raises
``AttributeError``), documented here.

The counters follow RLlib's arithmetic over the same adds, so code that reads
them sees RLlib's numbers: an item counts its rows (a multi-agent item its env
steps); ``_num_timesteps_added_wrap`` grows by each item's count and returns to
0, with ``_next_idx``, when it reaches ``capacity`` (which also sets
``_eviction_started``). They describe RLlib's ring; where our true ring keeps a
different set of items (variable-length items), ``len()`` and ``_storage`` tell
what is stored.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ReplayTables.engine.state import Arena, ScalarField, Scalars, flag
from ReplayTables.engine.state_checks import MAX_INT, integer, mapping
from ReplayTables.errors import CheckpointError

__all__ = ["RLlibCounters", "RLlibViews", "StorageView"]


class RLlibCounters:
    """RLlib's add/sample counters, updated with RLlib's arithmetic (no Python loop per item).

    Their values live in one int64 arena array (``rllib.counters``, see
    :mod:`ReplayTables.engine.state`), bound to the buffer's table arena, so a
    buffer in shared memory shares them and a repaired add restores them."""

    NAMES = ("added", "wrap", "next_idx", "eviction_started", "sampled", "priority_updates", "dropped_episodes")

    def __init__(self) -> None:
        self.scalars = Scalars("rllib.counters", [0] * len(self.NAMES), np.int64)

    def bind(self, arena: Arena) -> None:
        """Keep the counters in ``arena`` (adopting what it holds if it has them)."""
        self.scalars.bind(arena)

    def copy_from(self, other: RLlibCounters) -> None:
        """Take ``other``'s values (in place: views of this array stay valid)."""
        self.scalars.array[...] = other.scalars.array

    added = ScalarField(0)
    wrap = ScalarField(1)
    next_idx = ScalarField(2)
    eviction_started = ScalarField(3, bool, flag)
    sampled = ScalarField(4)
    priority_updates = ScalarField(5, doc="Ours, not RLlib's: priority updates applied.")
    dropped_episodes = ScalarField(6, doc="Ours: incomplete episodes an episodes-unit add dropped.")

    def on_add(self, counts: Any, capacity: int) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        m = counts.shape[0]
        if m == 0:
            return
        self.added += int(counts.sum())
        start = 0
        while start < m:  # one pass per wrap of RLlib's ring, not per item
            reached = np.flatnonzero(self.wrap + np.cumsum(counts[start:]) >= capacity)
            if reached.size == 0:
                self.wrap += int(counts[start:].sum())
                self.next_idx += m - start
                return
            self.wrap, self.next_idx, self.eviction_started = 0, 0, True
            start += int(reached[0]) + 1

    def state_dict(self) -> dict[str, Any]:
        return {"added": self.added, "wrap": self.wrap, "next_idx": self.next_idx,
                "eviction_started": self.eviction_started, "sampled": self.sampled,
                "priority_updates": self.priority_updates}

    @classmethod
    def check_state(cls, state: Any, where: str) -> RLlibCounters:
        out = cls()
        if state is None:  # a checkpoint written before these counters existed
            return out
        m = mapping(where, state, ("added", "wrap", "next_idx", "eviction_started", "sampled"),
                    ("priority_updates",))
        out.priority_updates = integer(f"{where}.priority_updates", m.get("priority_updates", 0), 0, MAX_INT)
        out.added = integer(f"{where}.added", m["added"], 0, MAX_INT)
        out.wrap = integer(f"{where}.wrap", m["wrap"], 0, MAX_INT)
        out.next_idx = integer(f"{where}.next_idx", m["next_idx"], 0, MAX_INT)
        out.sampled = integer(f"{where}.sampled", m["sampled"], 0, MAX_INT)
        if not isinstance(m["eviction_started"], bool):
            raise CheckpointError(f"{where}.eviction_started", m["eviction_started"], "true or false")
        out.eviction_started = m["eviction_started"]
        return out


class StorageView(Sequence[Any]):
    """RLlib's ``_storage`` list, read-only: the stored items as batches, oldest first.

    Equality compares the items' columns by value (RLlib compares the lists).
    """

    def __init__(self, buffer: Any) -> None:
        self._buffer = buffer
        self._ids = buffer.item_ids()

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]  # IndexError as a list gives it
        return self._buffer.get(self._ids[i:i + 1])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(_same_batch(a, b) for a, b in zip(self, other))

    def __hash__(self) -> int:  # a view of mutable state
        raise TypeError("unhashable type: 'StorageView'")

    def __repr__(self) -> str:
        return f"StorageView({len(self)} items of {type(self._buffer).__name__})"


def _same_batch(a: Any, b: Any) -> bool:
    a = getattr(a, "policy_batches", a)
    b = getattr(b, "policy_batches", b)
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if hasattr(x, "keys"):
            if not (hasattr(y, "keys") and _same_batch(x, y)):
                return False
        elif not np.array_equal(np.asarray(x), np.asarray(y)):
            return False
    return True


class RLlibViews:
    """Read-only views of RLlib's ``ReplayBuffer`` attributes (see module docstring)."""

    _rllib: RLlibCounters

    @property
    def _num_timesteps_added(self) -> int:
        """Timesteps added so far (RLlib's count: a multi-agent item counts its env steps)."""
        return self._rllib.added

    @property
    def _num_timesteps_added_wrap(self) -> int:
        """Timesteps added since RLlib's ring last wrapped."""
        return self._rllib.wrap

    @property
    def _next_idx(self) -> int:
        """Where RLlib's ring would write the next item."""
        return self._rllib.next_idx

    @property
    def _eviction_started(self) -> bool:
        """Whether the added timesteps have reached ``capacity`` once."""
        return self._rllib.eviction_started

    @property
    def _num_timesteps_sampled(self) -> int:
        """Timesteps returned by ``sample`` so far (RLlib's count)."""
        return self._rllib.sampled

    @property
    def _storage(self) -> StorageView:
        """The stored items as batches, oldest first (a fresh read-only view)."""
        return StorageView(self)

    @property
    def _hit_count(self) -> np.ndarray:
        """How often each stored item was sampled, in ``_storage`` order (a copy)."""
        buffer: Any = self
        hits: np.ndarray = buffer.hit_counts(buffer.item_ids())
        return hits

    @property
    def _est_size_bytes(self) -> int:
        """Estimated bytes of the stored timesteps (``stats()['est_size_bytes']``)."""
        buffer: Any = self
        return int(buffer.stats()["est_size_bytes"])
