"""Writers (ingress): which slot a new item takes, and so what it evicts.

A writer only chooses slots; it never touches data. ``place(m, rng)`` answers
for a batch of ``m`` offered items with ``(items, slots)``: item ``items[k]`` of
the batch goes to ``slots[k]``. Items not listed are not stored. Both may be
slices, so the common FIFO case writes contiguous memory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.engine.state import Arena, ScalarField, Scalars
from ReplayTables.engine.state_checks import MAX_INT, integer, mapping

__all__ = ["FifoWriter", "ReservoirWriter", "Writer", "make_writer"]

Index = slice | np.ndarray


class Writer:
    """Chooses slots. Its one scalar (a cursor, a count of offers) lives in ``scalars``,
    an arena array once the table binds it (see ``state.py``)."""

    name = "writer"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.scalars = Scalars("writer.position", [0], np.int64)

    def bind(self, arena: Arena) -> None:
        """Keep the writer's position in ``arena`` (see :class:`~ReplayTables.engine.state.Scalars`)."""
        self.scalars.bind(arena)

    def place_one(self, rng: np.random.Generator) -> int:
        """Slot for one offered item, or -1 if it is not stored."""
        raise NotImplementedError

    def place(self, m: int, rng: np.random.Generator) -> tuple[Index, Index]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def check_state(self, state: Any, where: str = "writer") -> dict[str, int]:
        """The checked values of a saved state (a ``name`` key is allowed); changes nothing."""
        raise NotImplementedError

    def restore(self, checked: dict[str, int]) -> None:
        """Put the values from :meth:`check_state` in place."""
        for key, value in checked.items():
            setattr(self, key, value)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(self.check_state(state))


class FifoWriter(Writer):
    """A ring: items go to consecutive slots and the oldest is overwritten.

    A deleted item leaves a hole that is refilled when the ring comes round
    again, which keeps eviction strictly oldest-first.
    """

    name = "fifo"

    @property
    def cursor(self) -> int:
        """The slot the next item takes."""
        cursor: int = self.scalars.view[0]
        return cursor

    @cursor.setter
    def cursor(self, value: int) -> None:
        self.scalars.view[0] = value

    def place_one(self, rng: np.random.Generator) -> int:
        view = self.scalars.view
        slot: int = view[0]
        view[0] = slot + 1 if slot + 1 < self.capacity else 0
        return slot

    def place(self, m: int, rng: np.random.Generator) -> tuple[Index, Index]:
        cap = self.capacity
        start = self.cursor
        self.cursor = (start + m) % cap
        if start + m <= cap:
            return slice(0, m), slice(start, start + m)
        keep = min(m, cap)
        first = m - keep
        slots = (np.arange(start + first, start + m, dtype=np.int64)) % cap
        return slice(first, m), slots

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def check_state(self, state: Any, where: str = "writer") -> dict[str, int]:
        m = mapping(where, state, ("cursor",), ("name",))
        return {"cursor": integer(f"{where}.cursor", m["cursor"], 0, self.capacity - 1)}


class ReservoirWriter(Writer):
    """Vitter's algorithm R: after ``t`` offers, each offered item is stored with
    probability ``capacity / t``, independently of when it came."""

    name = "reservoir"

    seen = ScalarField(0, doc="Items offered so far.")

    def place_one(self, rng: np.random.Generator) -> int:
        t = self.seen
        self.seen = t + 1
        if t < self.capacity:
            return t
        j = int(rng.integers(0, t + 1))
        return j if j < self.capacity else -1

    def place(self, m: int, rng: np.random.Generator) -> tuple[Index, Index]:
        t = self.seen + np.arange(m, dtype=np.int64)
        self.seen += m
        cap = self.capacity
        j = t.copy()
        over = t >= cap
        if over.any():
            j[over] = rng.integers(0, t[over] + 1)
        items = np.flatnonzero(j < cap)
        slots = j[items]
        # a slot chosen twice in one batch keeps the later item, as sequential adds would
        if slots.size > 1:
            _, last_rev = np.unique(slots[::-1], return_index=True)
            keep = np.sort(slots.size - 1 - last_rev)
            items, slots = items[keep], slots[keep]
        return items, slots

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def check_state(self, state: Any, where: str = "writer") -> dict[str, int]:
        m = mapping(where, state, ("seen",), ("name",))
        return {"seen": integer(f"{where}.seen", m["seen"], 0, MAX_INT)}


WRITERS: dict[str, type[Writer]] = {"fifo": FifoWriter, "reservoir": ReservoirWriter}


def make_writer(name: str, capacity: int) -> Writer:
    return WRITERS[name](capacity)
