"""Item ids: which item lives in which slot, and which slots are live.

An id carries its slot and a generation: ``id = generation * capacity + slot``,
where the generation counts earlier writes to that slot. With a FIFO writer the
ids are simply the insertion count (0, 1, 2, ...). That rule is written once,
here (:func:`next_ids`, :data:`NEXT_ID_SOURCE` for the generated add lanes).

A table that is one shard of a sharded buffer tags its ids with its shard
index in the top bits: ``tag_ids(id, shard) = id | shard << (63 - SHARD_BITS)``.
The directory itself stores untagged ids; the table tags what it gives out and
refuses ids of another shard (:func:`shard_of`, :func:`untag`). Because every slot remembers
the id of the item it holds, an id whose item has been overwritten or deleted
is recognised as stale in one vectorised comparison, and can never reach the
newcomer that took its slot.

``slot_id[s]`` is the live id in slot ``s``; ``-1`` if the slot was never
written; ``-(last_id + 2)`` if its item was deleted (so the next write still
knows the slot's generation).

A directory made with ``lazy=True`` (for tables whose writer fills slots in
order, 0, 1, 2, ..., until it is full) writes those ``-1`` markers only ahead of
the highest slot written so far, doubling as it goes: ``slot_id[filled:]`` is
still the zero memory the allocation returned, which the operating system does
not commit. So ``ReplayBuffer(2**28)`` costs a few pages, not 2 GB, until it
fills. The unfilled zeros are never mistaken for items: every slot written so
far is below ``filled``, an id lookup compares ``slot_id[id % capacity] == id``
(0 matches only id 0, whose slot 0 is always filled) and :meth:`state_dict` shows
them as ``-1``.

The directory also keeps a dense list of live slots for uniform draws. While
no item has been deleted, live slots are exactly ``0 .. count-1`` (both writers
fill slots in order), so the list is not materialised and a uniform draw is a
single ``rng.integers``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ReplayTables.engine.state import Arena, Scalars
from ReplayTables.engine.state_checks import MAX_INT, boolean, distinct, int_array, integer, mapping
from ReplayTables.errors import CheckpointError, StaleIdError

__all__ = ["LOCAL_ID_LIMIT", "MAX_SHARDS", "NEXT_ID_INPLACE_SOURCE", "NEXT_ID_SOURCE", "NOT_STORED", "SHARD_BITS",
           "SHARD_SHIFT", "DirectoryState", "SlotDirectory", "foreign_id_error", "local_ids", "next_id", "next_ids",
           "shard_of", "tag_ids", "untag"]

#: The id returned for an item that was offered but not stored (a reservoir
#: writer rejected it, or a batch larger than the capacity overwrote it).
NOT_STORED = -1

#: Bits of an id that name its shard (the top bits below the sign bit).
SHARD_BITS = 15
SHARD_SHIFT = 63 - SHARD_BITS
#: Shard indices run from 0 to ``MAX_SHARDS - 1``.
MAX_SHARDS = 1 << SHARD_BITS
#: Untagged ids stay below this: 2**48 writes per shard (nine years at a million adds a second).
LOCAL_ID_LIMIT = 1 << SHARD_SHIFT

#: The id rule for a write to a slot that holds ``{old}``, as Python source (the generated
#: add lanes inline it): the next generation in the same slot.
NEXT_ID_SOURCE = "{old} + {capacity}"
#: The same rule as an in-place statement on ``{old}`` (a view of the slots' ids): the batch lane
#: steps the directory's ids where they are and copies them out, one temporary fewer.
NEXT_ID_INPLACE_SOURCE = "{old} += {capacity}"


def next_id(old: int, slot: int, capacity: int) -> int:
    """The id rule: the id of a new item in ``slot``, whose ``slot_id`` entry was ``old``.

    A live slot's next id is ``old + capacity`` (one generation on); a never-written
    slot's is the slot itself; a deleted slot (``old = -(id + 2)``) continues from
    the deleted id, so generations never repeat.
    """
    if old >= 0:
        return old + capacity
    return slot if old == -1 else -old - 2 + capacity


def next_ids(old: np.ndarray, slots: np.ndarray, capacity: int) -> np.ndarray:
    """:func:`next_id` for arrays of slots."""
    result: np.ndarray = np.where(old >= 0, old + capacity, np.where(old == -1, slots, -old - 2 + capacity))
    return result


def tag_ids(ids: np.ndarray, shard: int) -> np.ndarray:
    """``ids`` tagged with ``shard`` (``NOT_STORED`` and other negative ids stay as they are)."""
    if shard == 0:
        return ids
    tag = np.int64(shard << SHARD_SHIFT)
    result: np.ndarray = np.where(ids >= 0, ids | tag, ids)
    return result


def shard_of(ids: np.ndarray) -> np.ndarray:
    """The shard each id names (-1 for a negative id, which names none)."""
    result: np.ndarray = np.where(ids >= 0, ids >> SHARD_SHIFT, -1)
    return result


def foreign_id_error(field: str, ids: np.ndarray, shard: int) -> StaleIdError:
    """The error for ids tagged with another shard than ``shard`` (``ids``: the offending ones)."""
    shards = sorted({int(s) for s in shard_of(ids[:8])})
    return StaleIdError(field, ids[:8].tolist(), f"ids of shard {shard} (these name shard(s) {shards})",
                        "an id of one shard cannot address another shard's table")


def local_ids(field: str, ids: np.ndarray, shard: int) -> np.ndarray:
    """``ids`` untagged, after checking that every non-negative one names ``shard``."""
    if shard == 0:
        if ids.shape[0] and int(ids.max()) >= LOCAL_ID_LIMIT:
            raise foreign_id_error(field, ids[ids >= LOCAL_ID_LIMIT], shard)
        return ids
    foreign = (ids >= 0) & ((ids >> SHARD_SHIFT) != shard)
    if foreign.any():
        raise foreign_id_error(field, ids[foreign], shard)
    return untag(ids)


def untag(ids: np.ndarray) -> np.ndarray:
    """``ids`` without their shard tag (negative ids stay as they are)."""
    result: np.ndarray = np.where(ids >= 0, ids & (LOCAL_ID_LIMIT - 1), ids)
    return result


def uniform_positions(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``n`` positions in ``0 .. count-1``, uniformly with replacement.

    ``floor(U * count)`` with a 53-bit uniform ``U`` is uniform up to a relative
    bias below ``count / 2**53`` (1e-10 at 10^6 items) and costs half of
    ``rng.integers``; the clamp guards the one rounding case ``U * count == count``.
    """
    return uniform_positions_of(rng.random(n), count)


def uniform_positions_of(points: np.ndarray, count: int) -> np.ndarray:
    """``floor(point * count)`` for points in [0, 1), clamped to ``count - 1`` (see :func:`uniform_positions`)."""
    positions = (points * count).astype(np.int64)
    np.minimum(positions, count - 1, out=positions)
    return positions


def close_gaps(members: np.ndarray, position: np.ndarray, count: int, removed: np.ndarray,
               marker: np.ndarray) -> int:
    """Keep a dense set dense after removing members; returns the new count.

    ``members[:count]`` is the set and ``position[x]`` the index of member ``x``;
    ``removed`` are the (unique) positions that were just vacated, and
    ``marker[x] >= 0`` must already be false for every removed member. Survivors
    from the tail move into the vacated positions below the new count, so removing
    ``k`` members costs ``O(k)``, not ``O(count)``.
    """
    new_count = count - removed.size
    holes = np.sort(removed[removed < new_count])
    tail = members[new_count:count]
    movers = tail[marker[tail] >= 0]
    members[holes] = movers
    position[movers] = holes
    return new_count


@dataclass(frozen=True)
class DirectoryState:
    """A checked directory state, ready to be put in place (see :meth:`SlotDirectory.check_state`)."""

    slot_id: np.ndarray
    live: np.ndarray
    position: np.ndarray
    count: int
    identity: bool
    #: ``slot_id >= 0``: which slots hold an item (other components check themselves against it)
    live_mask: np.ndarray


#: Slots whose ``-1`` marker a lazy directory writes up front (then it doubles as slots are written).
FIRST_FILL = 4096


class SlotDirectory:
    """Slot ids and the dense live list; its two scalars (``count``, ``identity``) live in
    ``scalars``, an arena array once the table binds it (see ``state.py``)."""

    def __init__(self, capacity: int, lazy: bool = False) -> None:
        self.capacity = capacity
        if lazy:
            self.slot_id = np.zeros(capacity, dtype=np.int64)  # untouched pages stay uncommitted
            self.filled = min(capacity, FIRST_FILL)
            self.slot_id[:self.filled] = -1
        else:
            self.slot_id = np.full(capacity, -1, dtype=np.int64)
            self.filled = capacity
        self._live = np.empty(capacity, dtype=np.int64)
        self._position = np.empty(capacity, dtype=np.int64)
        # [count, identity]; identity is 1 while live slots are exactly 0..count-1 and _live/_position are not kept
        self.scalars = Scalars("directory.count", [0, 1], np.int64)

    def bind(self, arena: Arena) -> None:
        """Keep ``count`` and ``identity`` in ``arena``."""
        self.scalars.bind(arena)

    @property
    def count(self) -> int:
        """Live items."""
        count: int = self.scalars.view[0]  # a memoryview of int64 gives a Python int
        return count

    @count.setter
    def count(self, value: int) -> None:
        self.scalars.view[0] = value

    @property
    def identity(self) -> bool:
        """True while the live slots are exactly ``0 .. count-1`` (no deletions yet)."""
        return bool(self.scalars.view[1])

    @identity.setter
    def identity(self, value: bool) -> None:
        self.scalars.view[1] = 1 if value else 0

    # ------------------------------------------------------------ assignment
    def reach(self, stop: int) -> None:
        """Make ``slot_id`` exact (``-1`` where never written) below ``stop`` and at ``stop``.

        A lazy directory's writers call this before they read or write a slot at or
        beyond :attr:`filled`; slots below it are exact already."""
        if stop >= self.filled and self.filled < self.capacity:
            new = min(self.capacity, max(stop + 1, 2 * self.filled))
            self.slot_id[self.filled:new] = -1
            self.filled = new

    def assign_one(self, slot: int) -> int:
        """Give ``slot`` to a new item; returns its id."""
        if slot + 1 >= self.filled:
            self.reach(slot + 1)
        old = int(self.slot_id[slot])
        new = next_id(old, slot, self.capacity)
        if old < 0:
            if self.identity and slot == self.count:
                self.count += 1
            else:
                self._append(np.array([slot], dtype=np.int64))
        self.slot_id[slot] = new
        return new

    def assign_range(self, start: int, stop: int) -> np.ndarray:
        """Give the contiguous slots ``start..stop-1`` to new items; returns their ids."""
        self.reach(stop)
        if self.identity:
            # no deletions yet: slots below count are live, slots from count on never written
            if stop <= self.count:  # every slot live: the rule's first case
                new = self.slot_id[start:stop] + self.capacity
                self.slot_id[start:stop] = new
                return new
            if start == self.count:
                new = np.arange(start, stop, dtype=np.int64)
                self.slot_id[start:stop] = new
                self.count = stop
                return new
        return self.assign(np.arange(start, stop, dtype=np.int64))

    def assign(self, slots: np.ndarray) -> np.ndarray:
        """Give ``slots`` (unique) to new items; returns their ids."""
        if slots.size:
            self.reach(int(slots.max()) + 1)
        old = self.slot_id[slots]
        new = next_ids(old, slots, self.capacity)
        fresh = slots[old < 0]
        if fresh.size:
            self._append(fresh)
        self.slot_id[slots] = new
        return new

    def _append(self, fresh: np.ndarray) -> None:
        k = fresh.size
        if self.identity:
            if fresh[0] == self.count and (k == 1 or bool((np.diff(fresh) == 1).all())):
                self.count += k
                return
            self._materialise()
        pos = np.arange(self.count, self.count + k, dtype=np.int64)
        self._live[pos] = fresh
        self._position[fresh] = pos
        self.count += k

    def _materialise(self) -> None:
        n = self.count
        self._live[:n] = np.arange(n, dtype=np.int64)
        self._position[:n] = np.arange(n, dtype=np.int64)
        self.identity = False

    # ------------------------------------------------------------ removal
    def remove(self, slots: np.ndarray) -> None:
        """Delete the items in ``slots`` (unique, live)."""
        if slots.size == 0:
            return
        if self.identity:
            self._materialise()
        ids = self.slot_id[slots]
        self.slot_id[slots] = -ids - 2
        self.count = close_gaps(self._live, self._position, self.count, self._position[slots], self.slot_id)

    # ------------------------------------------------------------ lookup
    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots of ``ids`` and a mask of which ids are live (not stale, not unknown)."""
        slots = ids % self.capacity
        valid = (self.slot_id[slots] == ids) & (ids >= 0)
        return slots, valid

    def live_slots(self) -> np.ndarray:
        if self.identity:
            return np.arange(self.count, dtype=np.int64)
        return self._live[: self.count]

    def slots_at(self, positions: np.ndarray) -> np.ndarray:
        """The live slots at dense ``positions`` (``0 .. count-1``)."""
        return positions if self.identity else self._live[positions]

    def sample_uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` live slots, uniformly with replacement (see :func:`uniform_positions`)."""
        positions = uniform_positions(rng, n, self.count)
        return positions if self.identity else self._live[positions]

    def dense(self) -> tuple[np.ndarray, bool]:
        """The dense live-slot array (valid up to ``count``) and whether it is the identity.

        For compiled samplers that draw positions themselves; read-only.
        """
        return self._live, self.identity

    def is_live(self, slots: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.slot_id[slots] >= 0
        return result

    # ------------------------------------------------------------ state
    @staticmethod
    def nbytes_for(capacity: int) -> int:
        """Bytes a directory of ``capacity`` slots holds (three int64 per slot)."""
        return 24 * int(capacity)

    def state_dict(self) -> dict[str, Any]:
        slot_id = self.slot_id
        if self.filled < self.capacity:  # the unfilled tail reads as what it means: never written
            slot_id = slot_id.copy()
            slot_id[self.filled:] = -1
        return {"slot_id": slot_id, "live": self.live_slots().copy(), "count": self.count,
                "identity": self.identity}

    def check_state(self, state: Any, where: str = "directory") -> DirectoryState:
        """Check a saved state against this directory's capacity and itself; changes nothing.

        ``slot_id[s]`` must be an id of slot ``s`` (``id % capacity == s``), ``-1``
        (never written) or a deleted marker ``-(id + 2)`` of such an id; ``count``
        must be the number of live slots (``slot_id >= 0``) and ``live`` must list
        each of them once (``0 .. count-1`` in order when ``identity`` is true).
        """
        m = mapping(where, state, ("slot_id", "live", "count", "identity"))
        cap = self.capacity
        slot_id = int_array(f"{where}.slot_id", m["slot_id"], (cap,), -MAX_INT - 2, MAX_INT)
        live_mask = slot_id >= 0
        slots = np.arange(cap, dtype=np.int64)
        owner = np.where(live_mask, slot_id, np.where(slot_id <= -2, -slot_id - 2, slots)) % cap
        wrong = np.flatnonzero(owner != slots)
        if wrong.size:
            s = int(wrong[0])
            raise CheckpointError(f"{where}.slot_id", f"id {int(slot_id[s])} in slot {s}",
                                  f"in each slot s an id with id % {cap} == s, -1 (never written) or -(id + 2) "
                                  "(deleted)")
        live_count = int(live_mask.sum())
        count = integer(f"{where}.count", m["count"], 0, cap)
        if count != live_count:
            raise CheckpointError(f"{where}.count", count, f"{live_count}, the number of live slots (slot_id >= 0)")
        identity = boolean(f"{where}.identity", m["identity"])
        live = int_array(f"{where}.live", m["live"], (count,), 0, cap - 1)
        dense = np.empty(cap, dtype=np.int64)
        position = np.empty(cap, dtype=np.int64)
        if identity:
            if not live_mask[:count].all() or not np.array_equal(live, slots[:count]):
                raise CheckpointError(f"{where}.identity", True, f"false unless the live slots are exactly 0 .. "
                                                                 f"{count - 1} (listed in order in live)")
        else:
            if not distinct(live, cap) or not live_mask[live].all():
                raise CheckpointError(f"{where}.live", live, f"each of the {count} live slots (slot_id >= 0) "
                                                            "exactly once")
            dense[:count] = live
            position[live] = slots[:count]
        return DirectoryState(slot_id, dense, position, count, identity, live_mask)

    def restore(self, checked: DirectoryState) -> None:
        """Put a state from :meth:`check_state` in place (copies into the directory's own arrays, which
        may be views into shared memory; same shapes, so it cannot fail)."""
        self.slot_id[...] = checked.slot_id
        self.filled = self.capacity
        self._live[...] = checked.live
        self._position[...] = checked.position
        self.count = checked.count
        self.identity = checked.identity

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(self.check_state(state))

    def arrays(self) -> dict[str, np.ndarray]:
        """The directory's arrays by name (what a shared segment must hold besides its scalars)."""
        return {"slot_id": self.slot_id, "live": self._live, "position": self._position}

    def use_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Work on ``arrays`` (the names and shapes of :meth:`arrays`, e.g. views into shared memory)."""
        for name, a in arrays.items():
            if a.shape != (self.capacity,) or a.dtype != np.int64:
                raise ValueError(f"directory array {name}: {a.dtype}{a.shape}, expected int64({self.capacity},)")
        self.slot_id, self._live, self._position = arrays["slot_id"], arrays["live"], arrays["position"]

    def rebuild_live(self) -> None:
        """Recompute the dense live list, ``count`` and ``identity`` from ``slot_id`` alone (after a
        process died half-way through changing them; the live list's order may change)."""
        live = np.flatnonzero(self.slot_id >= 0)
        n = live.size
        self._live[:n] = live
        self._position[live] = np.arange(n, dtype=np.int64)
        self.count = n
        self.identity = bool(n == 0 or live[-1] == n - 1)
