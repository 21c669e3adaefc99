"""The step-range layout: variable-length items kept as ranges of timestep slots.

A :class:`StepRanges` knows nothing about data. It hands out *step slots*
(rows of a storage of ``steps`` timesteps) to items of any length, and gives
every item an *item slot* in a :class:`~ReplayTables.engine.ids.SlotDirectory`,
so items have ids with generations (stale ids are detected) and the engine's
samplers can draw item slots exactly as they draw rows of a :class:`Table`.

Two placements:

``"ring"`` (a true ring of timesteps)
    Items are laid out back to back in write order. A new item takes the next
    ``length`` step slots (wrapping round the end) and every older item that
    overlaps them is evicted whole, oldest first, so the stored timestep count
    never exceeds ``steps``. Eviction needs no search: items are in write
    order, so the evicted ones are a prefix of the live ones, found by one
    vectorised comparison of their absolute start positions.

``"reservoir"`` (Vitter's algorithm R over items)
    The steps are cut into ``steps // region`` regions of ``region`` steps; an
    item lives in one region and the engine's :class:`ReservoirWriter` decides
    which region a new item takes (or that it is not stored), so every item
    ever offered is kept with the same probability.

Every step slot remembers the absolute write position of the step it holds
(``step_stamp``). A reader can therefore tell whether the steps written just
before an item are still there (used for burn-in), without any bookkeeping
per item pair.

All of the layout's state is arrays, as the engine's other components' is: the
five arrays by item or step slot (:meth:`StepRanges.arrays`, which a shared
segment must hold) and its scalars (``head``, ``issued``, ``oldest``,
``live_steps``, ``unit_lengths``, ``region``, and the reservoir writer's count of
offers) in arena arrays once the table binds it (:meth:`StepRanges.bind`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ReplayTables.engine.ids import NOT_STORED, SlotDirectory
from ReplayTables.engine.state import Arena, ScalarField, Scalars, flag, int_or_none, zero_for_none
from ReplayTables.engine.state_checks import MAX_INT, boolean, int_array, integer, mapping
from ReplayTables.engine.writers import ReservoirWriter
from ReplayTables.errors import CheckpointError, ConfigError, SchemaError

__all__ = ["PLACEMENTS", "Placement", "StepRanges"]

PLACEMENTS = ("ring", "reservoir")

#: ``(rows of the offered batch, step slots)`` pairs to copy; either may be a slice.
Placement = list[tuple[slice | np.ndarray, slice | np.ndarray]]


class StepRanges:
    """Items as ranges of step slots in a store of ``steps`` timesteps.

    Arrays by item slot: ``start`` (first step slot), ``length``, ``origin``
    (absolute write position of the first step) and ``hits`` (how often the
    item was drawn since it was stored); by step slot: ``step_stamp``.

    Scalars (arena array ``ranges.scalars``): ``head`` (absolute steps offered
    so far), ``issued`` (items stored so far; ring: item slot = insertion number
    % steps), ``oldest`` (insertion number of the oldest item that may still be
    live; ring), ``live_steps``, ``unit_lengths`` (every item stored so far has
    length 1) and ``region`` (0 while a reservoir has not fixed it).
    """

    ARRAYS = ("start", "length", "origin", "hits", "step_stamp")

    def __init__(self, steps: int, placement: str = "ring", region: int | None = None) -> None:
        if placement not in PLACEMENTS:
            raise ConfigError("placement", placement, f"one of {PLACEMENTS}")
        if region is not None and (region < 1 or region > steps):
            raise ConfigError("region", region, f"an item length from 1 to the capacity {steps}")
        self.steps = int(steps)
        self.placement = placement
        self.directory = SlotDirectory(self.steps)
        self.start = np.zeros(self.steps, dtype=np.int64)
        self.length = np.zeros(self.steps, dtype=np.int64)
        self.origin = np.zeros(self.steps, dtype=np.int64)
        self.hits = np.zeros(self.steps, dtype=np.int64)
        self.step_stamp = np.full(self.steps, -1, dtype=np.int64)
        # head, issued, oldest, live_steps, unit_lengths (0/1), region (0: none)
        self.scalars = Scalars("ranges.scalars", [0, 0, 0, 0, 1, region or 0], np.int64)
        self._arena: Arena | None = None
        self.writer: ReservoirWriter | None = None
        #: called by a reservoir insert with ``(item slots, how many of them hold items)`` once it has chosen
        #: its slots and before its first write (a shared table journals them there); ``None``: nobody
        self.on_placed: Callable[[np.ndarray, int], None] | None = None
        if placement == "reservoir" and region:
            self._make_writer(region)

    # ------------------------------------------------------------ scalars (elements of the arena array)
    head = ScalarField(0)
    issued = ScalarField(1)
    oldest = ScalarField(2)
    live_steps = ScalarField(3)
    unit_lengths = ScalarField(4, bool, flag)
    region = ScalarField(5, int_or_none, zero_for_none, doc="Steps of one reservoir region (``None`` until a "
                                                            "reservoir without one sees its first item).")

    def _make_writer(self, region: int) -> None:
        writer = ReservoirWriter(self.steps // region)
        writer.scalars.name = "ranges.writer.position"  # beside the table's own writer in one arena
        if self._arena is not None:
            writer.bind(self._arena)
        self.writer = writer

    def bind(self, arena: Arena) -> None:
        """Keep the layout's scalars (and its reservoir writer's) in ``arena`` (see ``state.py``)."""
        self.scalars.bind(arena)
        if self.writer is not None:
            self.writer.bind(arena)
        self._arena = arena

    def arrays(self) -> dict[str, np.ndarray]:
        """The layout's arrays by name (what a shared segment must hold besides the directory and scalars)."""
        return {name: getattr(self, name) for name in self.ARRAYS}

    def use_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Work on ``arrays`` (the names and shapes of :meth:`arrays`, e.g. views into shared memory)."""
        for name in self.ARRAYS:
            a = arrays[name]
            if a.shape != (self.steps,) or a.dtype != np.int64:
                raise ConfigError(f"ranges.{name}", f"{a.dtype}{list(a.shape)}", f"int64[{self.steps}]")
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])

    @property
    def aligned(self) -> bool:
        """Item slot == step slot for every item (ring of one-step items, none dropped)."""
        return self.unit_lengths and self.placement == "ring" and self.head == self.issued

    # ------------------------------------------------------------ checks
    def check_lengths(self, lengths: np.ndarray) -> None:
        """An error (and nothing changed) if some length cannot be stored."""
        if lengths.size == 0:
            return
        lo = int(lengths.min())
        hi = int(lengths.max())
        if lo < 1:
            raise SchemaError("item length", lo, "items of at least one timestep")
        limit = self.region if self.placement == "reservoir" and self.region else self.steps
        if hi > limit:
            what = "the capacity" if limit == self.steps else "the reservoir's item length"
            raise SchemaError("item length", hi, f"at most {limit} timesteps ({what})")

    # ------------------------------------------------------------ insert
    def insert(self, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Placement, int]:
        """Place items of ``lengths`` (checked) offered as consecutive rows.

        Returns ``(ids, evicted_slots, placement, evicted_count)``: one id per item
        (``NOT_STORED`` for items not kept), the item slots whose items left the
        index and are not reused (for the sampler's ``on_delete``), and where to
        copy the kept rows. The caller must tell the sampler about the new ids'
        slots (``ids % steps``).
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        if self.placement == "reservoir":
            return self._insert_reservoir(lengths, rng)
        return self._insert_ring(lengths)

    def _insert_ring(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, Placement, int]:
        m = lengths.shape[0]
        n = int(lengths.sum())
        T = self.steps
        unit = n == m
        if unit:
            offsets = np.arange(m, dtype=np.int64)
        else:
            offsets = np.zeros(m, dtype=np.int64)
            np.cumsum(lengths[:-1], out=offsets[1:])
        head = self.head
        cut = head + n - T  # every item (old or new) starting before this is overwritten
        first = int(np.searchsorted(offsets, cut - head, side="left")) if cut > head else 0
        kept = m - first
        ev_slots = self.evicted_by(n)
        n_ev = int(ev_slots.size)
        live = self.directory.is_live(ev_slots)
        ev_live = ev_slots[live]
        evicted_count = int(ev_live.size)
        self.live_steps -= int(self.length[ev_live].sum())
        self.oldest += n_ev
        # new items' slots
        new_slots = (self.issued + np.arange(kept, dtype=np.int64)) % T
        if ev_live.size:
            reused = np.isin(ev_live, new_slots, assume_unique=True)
            gone = ev_live[~reused]
            if gone.size:
                self.directory.remove(gone)
        else:
            gone = ev_live
        k_off = offsets[first:]
        k_len = lengths[first:]
        origin = head + k_off
        if kept and new_slots[0] + kept <= T:
            ids = self.directory.assign_range(int(new_slots[0]), int(new_slots[0]) + kept)
        else:
            ids = self.directory.assign(new_slots) if kept else np.empty(0, dtype=np.int64)
        self.start[new_slots] = origin % T
        self.length[new_slots] = k_len
        self.origin[new_slots] = origin
        self.hits[new_slots] = 0
        self.issued += kept
        self.head = head + n
        self.live_steps += int(k_len.sum())
        self.unit_lengths = self.unit_lengths and unit
        out = ids
        if first:
            out = np.full(m, NOT_STORED, dtype=np.int64)
            out[first:] = ids
        placement: Placement = []
        if kept:
            row0 = int(offsets[first])
            a0 = head + row0
            count = n - row0
            p0 = a0 % T
            if p0 + count <= T:
                placement.append((slice(row0, n), slice(p0, p0 + count)))
                self.step_stamp[p0:p0 + count] = np.arange(a0, a0 + count, dtype=np.int64)
            else:
                k = T - p0
                placement.append((slice(row0, row0 + k), slice(p0, T)))
                placement.append((slice(row0 + k, n), slice(0, count - k)))
                self.step_stamp[p0:T] = np.arange(a0, a0 + k, dtype=np.int64)
                self.step_stamp[:count - k] = np.arange(a0 + k, a0 + count, dtype=np.int64)
        return out, gone, placement, evicted_count

    def evicted_by(self, n: int) -> np.ndarray:
        """Item slots of the old items (live or not) that ``n`` more steps overwrite, oldest first (ring).

        They are a prefix, in write order, of the items not yet passed: those starting
        before ``head + n - steps``."""
        T = self.steps
        slots = np.arange(self.oldest, min(self.issued, self.oldest + n), dtype=np.int64) % T
        return slots[:int((self.origin[slots] < self.head + n - T).sum())]

    def _insert_reservoir(self, lengths: np.ndarray,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Placement, int]:
        m = lengths.shape[0]
        if self.writer is None:
            self.region = int(lengths.max()) if m else 1
            self._make_writer(self.region)
        assert self.writer is not None
        R = int(self.region or 1)
        offsets = np.zeros(m, dtype=np.int64)
        if m:
            np.cumsum(lengths[:-1], out=offsets[1:])
        items, slots = self.writer.place(m, rng)
        items_a = np.arange(m, dtype=np.int64)[items] if isinstance(items, slice) else np.asarray(items, np.int64)
        slots_a = (np.arange(slots.start, slots.stop, dtype=np.int64) if isinstance(slots, slice)
                   else np.asarray(slots, np.int64))
        live = self.directory.is_live(slots_a)
        evicted_count = int(live.sum())
        if self.on_placed is not None:
            self.on_placed(slots_a, evicted_count)
        self.live_steps -= int(self.length[slots_a[live]].sum())
        ids = self.directory.assign(slots_a) if slots_a.size else np.empty(0, dtype=np.int64)
        k_len = lengths[items_a]
        origin = self.head + offsets[items_a]
        self.start[slots_a] = slots_a * R
        self.length[slots_a] = k_len
        self.origin[slots_a] = origin
        self.hits[slots_a] = 0
        self.issued += int(slots_a.size)
        self.head += int(lengths.sum())
        self.live_steps += int(k_len.sum())
        self.unit_lengths = self.unit_lengths and bool((lengths == 1).all())
        out = np.full(m, NOT_STORED, dtype=np.int64)
        out[items_a] = ids
        placement: Placement = []
        if slots_a.size:
            rows = _ranges(offsets[items_a], k_len)
            steps = _ranges(slots_a * R, k_len)
            placement.append((rows, steps))
            self.step_stamp[steps] = _ranges(origin, k_len)
        return out, np.empty(0, dtype=np.int64), placement, evicted_count

    # ------------------------------------------------------------ read
    def steps_of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step slots of items in ``slots`` (concatenated, in order) and their lengths."""
        if self.unit_lengths:
            if self.aligned:
                return slots, np.ones(slots.shape[0], dtype=np.int64)
            return self.start[slots], np.ones(slots.shape[0], dtype=np.int64)
        lengths = self.length[slots]
        return _ranges(self.start[slots], lengths) % self.steps, lengths

    def windows(self, slots: np.ndarray, before: int, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fixed-size windows over items: ``before`` steps ahead of each item, then the
        item, padded to ``total`` steps.

        Returns ``(step_slots, valid, in_item)``, each ``(len(slots), total)``. A
        burn-in position is valid when the step written just there before the item
        is still stored (same absolute write position); padding is never valid.
        Invalid positions point at the item's first step (callers zero them).
        """
        origin = self.origin[slots][:, None]
        length = self.length[slots][:, None]
        rel = np.arange(total, dtype=np.int64)[None, :] - before
        in_item = (rel >= 0) & (rel < length)
        pos = origin + rel
        if self.placement == "ring":
            phys = pos % self.steps
            valid = in_item.copy()
            if before:
                burn = (rel < 0) & (pos >= 0)
                valid |= burn & (self.step_stamp[phys] == pos)
        else:
            phys = self.start[slots][:, None] + rel
            valid = in_item
        phys = np.where(valid, phys, self.start[slots][:, None])
        return phys, valid, in_item

    def oldest_slots(self, k: int) -> np.ndarray:
        """Item slots of the (up to) ``k`` oldest live items, oldest first."""
        if self.placement != "ring":
            live = self.directory.live_slots()
            order = np.argsort(self.origin[live], kind="stable")
            return live[order[:k]]
        T = self.steps
        out: list[np.ndarray] = []
        found = 0
        q = self.oldest
        step = max(2 * k, 64)
        while found < k and q < self.issued:
            qs = np.arange(q, min(self.issued, q + step), dtype=np.int64)
            slots = qs % T
            live = self.directory.is_live(slots)
            if found == 0 and not live.any():
                self.oldest = int(qs[-1]) + 1  # a dead prefix never needs eviction again
            out.append(slots[live][: k - found])
            found += int(out[-1].size)
            q = int(qs[-1]) + 1
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def record_hits(self, slots: np.ndarray) -> None:
        np.add.at(self.hits, slots, 1)

    # ------------------------------------------------------------ delete
    def remove(self, slots: np.ndarray) -> None:
        """Delete the live items in ``slots`` (unique)."""
        self.live_steps -= int(self.length[slots].sum())
        self.directory.remove(slots)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything that changes as items come and go (arrays included)."""
        return {"steps": self.steps, "placement": self.placement, "region": self.region, "head": self.head,
                "issued": self.issued, "oldest": self.oldest, "live_steps": self.live_steps,
                "unit_lengths": self.unit_lengths, "directory": self.directory.state_dict(),
                "writer": self.writer.state_dict() if self.writer is not None else None,
                "start": self.start, "length": self.length, "origin": self.origin, "hits": self.hits,
                "step_stamp": self.step_stamp}

    @staticmethod
    def nbytes_for(steps: int) -> int:
        """Bytes an index over ``steps`` timesteps holds (five int64 arrays and the directory)."""
        return 40 * int(steps) + SlotDirectory.nbytes_for(steps)

    def check_state(self, state: Any, where: str = "index") -> dict[str, Any]:
        """Check a saved state against this index (same steps and placement) and itself; changes nothing.

        Every live item has a length from 1 to the longest storable, its steps in
        range (ring: ``start == origin % steps`` and ``origin + length <= head``;
        reservoir: its region ``slot * region``), ``live_steps`` is the sum of the
        live lengths, and the counters ``head >= issued >= live items``,
        ``oldest <= issued`` hold. Returns the values :meth:`restore` puts in place.
        """
        m = mapping(where, state, ("steps", "placement", "region", "head", "issued", "oldest", "live_steps",
                                   "unit_lengths", "directory", "writer", "start", "length", "origin", "hits",
                                   "step_stamp"))
        steps = integer(f"{where}.steps", m["steps"], 1, MAX_INT)
        if steps != self.steps or m["placement"] != self.placement:
            raise ConfigError(where, {"steps": m["steps"], "placement": m["placement"]},
                              f"steps={self.steps}, placement={self.placement!r} (this buffer's)")
        T = self.steps
        region = m["region"]
        if region is not None:
            region = integer(f"{where}.region", region, 1, T)
        if self.region is not None and region != self.region:
            raise ConfigError(f"{where}.region", region, f"{self.region} (this buffer's item length bound)")
        out: dict[str, Any] = {"region": region}
        for key in ("head", "issued", "oldest", "live_steps"):
            out[key] = integer(f"{where}.{key}", m[key], 0, MAX_INT)
        out["unit_lengths"] = boolean(f"{where}.unit_lengths", m["unit_lengths"])
        for key, lo in (("start", 0), ("length", 0), ("origin", -MAX_INT), ("hits", 0), ("step_stamp", -1)):
            out[key] = int_array(f"{where}.{key}", m[key], (T,), lo, MAX_INT)
        directory = self.directory.check_state(m["directory"], f"{where}.directory")
        out["directory"] = directory
        live = np.flatnonzero(directory.live_mask)
        length, start, origin = out["length"][live], out["start"][live], out["origin"][live]
        limit = region if self.placement == "reservoir" and region else T
        bad = np.flatnonzero((length < 1) | (length > limit) | (start >= T))
        if bad.size:
            s = int(live[bad[0]])
            raise CheckpointError(f"{where}.length", f"item slot {s}: start {int(out['start'][s])} length "
                                                     f"{int(out['length'][s])}",
                                  f"live items of 1 to {limit} steps starting at a step slot below {T}")
        if self.placement == "ring":
            bad = np.flatnonzero((origin < 0) | (start != origin % T) | (origin + length > out["head"]))
            what = f"origin >= 0, start == origin % {T} and origin + length <= head ({out['head']})"
        else:
            per = T // region if region else 0
            bad = np.flatnonzero((live >= per) | (start != live * (region or 0)))
            what = f"item slots below {per} whose steps start at slot * region ({region})"
        if bad.size:
            s = int(live[bad[0]])
            raise CheckpointError(f"{where}.origin", f"item slot {s}: start {int(out['start'][s])} origin "
                                                     f"{int(out['origin'][s])} length {int(out['length'][s])}",
                                  f"live items with {what}")
        total = int(length.sum())
        if total != out["live_steps"] or total > T:
            raise CheckpointError(f"{where}.live_steps", out["live_steps"],
                                  f"{total}, the steps of the live items (at most {T})")
        if out["unit_lengths"] and length.size and int(length.max()) != 1:
            raise CheckpointError(f"{where}.unit_lengths", True, "false (some live item is longer than one step)")
        if not directory.count <= out["issued"] <= out["head"] or out["oldest"] > out["issued"]:
            raise CheckpointError(f"{where}.issued", {k: out[k] for k in ("head", "issued", "oldest")},
                                  f"head >= issued >= the {directory.count} live items and oldest <= issued")
        writer = None
        if self.placement == "reservoir" and region is not None:
            writer = ReservoirWriter(T // region)
            writer.restore(writer.check_state(m["writer"], f"{where}.writer"))
        elif m["writer"] is not None:
            raise CheckpointError(f"{where}.writer", m["writer"], "None (only a reservoir with a region has a writer)")
        out["writer"] = writer
        return out

    def restore(self, checked: dict[str, Any]) -> None:
        """Put the values from :meth:`check_state` in place (copies into the layout's own arrays and
        scalars, of shapes already checked: it cannot fail half-way, and views of them stay valid)."""
        for name in self.ARRAYS:
            getattr(self, name)[...] = checked[name]
        for key in ("head", "issued", "oldest", "live_steps", "unit_lengths", "region"):
            setattr(self, key, checked[key])
        writer = checked["writer"]
        if writer is None:
            self.writer = None
        else:
            if self.writer is None or self.writer.capacity != writer.capacity:
                self._make_writer(int(checked["region"]))
            assert self.writer is not None
            self.writer.seen = writer.seen
        self.directory.restore(checked["directory"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same steps and placement); checked before anything changes."""
        self.restore(self.check_state(state))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + l) for s, l in zip(starts, lengths)])``, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64)
