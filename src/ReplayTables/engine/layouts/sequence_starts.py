"""Sequence starts of a step stream: which windows are valid, and where their steps are.

A front end that stores steps in time order (one ring per environment stream,
or one ring for everything) can sample fixed-length sequences with this module
without scanning the buffer:

* :class:`StartIndex` is a dense set of the keys (slots) of the valid window
  anchors. Adding and removing ``k`` keys costs ``O(k)`` and drawing ``B``
  anchors uniformly costs ``O(B)``, whatever the buffer size. (A sampler that
  rebuilds the list of valid starts from episode flags at every sample costs
  ``O(N)``; at 10^8 stored steps that is seconds per batch.)
* :func:`new_anchors` says which anchors become valid when an episode grows
  (work on insert, so sampling stays trivial).
* :func:`window_offsets` and :func:`window_mask` turn anchors into ``[B, L]``
  step offsets and a validity mask, with burn-in and optional padding.

Vocabulary (positions are absolute step counters of one stream, so they never
wrap; the caller maps them to slots):

* ``length`` ``T``: the steps a learner trains on; ``burn_in``: extra leading
  steps (to warm up a recurrent state). A window is ``burn_in + T`` steps;
  its *anchor* is its first non-burn-in step.
* Without padding, a window lies entirely inside one episode: anchor ``a`` is
  valid iff ``a - burn_in >= first`` and step ``a + T - 1`` is stored.
* With padding, any stored step of an episode may be an anchor; steps of the
  window before the episode's first step or after its last are padding
  (``mask`` False; the caller zeroes them). A window near the end of an episode
  that is still running is not valid until its ``T`` steps exist.

Everything here is plain numpy over small arrays; nothing knows about frames,
front ends or ids, which is why the RLlib front end can reuse it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.engine.ids import close_gaps, uniform_positions
from ReplayTables.engine.state_checks import distinct, int_array, mapping
from ReplayTables.errors import CheckpointError

__all__ = ["StartIndex", "expand_ranges", "new_anchors", "window_mask", "window_offsets"]


class StartIndex:
    """A set of integer keys in ``[0, capacity)`` with O(k) updates and O(n) uniform draws.

    ``members[:count]`` lists the keys densely; ``where[key]`` is a key's position
    in that list (``-1`` if absent). Removal moves tail members into the holes,
    so the list stays dense. Memory: two int32 (or int64 past 2^31) per key.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        dtype = np.int32 if self.capacity < 2**31 else np.int64
        self.members = np.empty(self.capacity, dtype=dtype)
        self.where = np.full(self.capacity, -1, dtype=dtype)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def contains(self, keys: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.where[keys] >= 0
        return result

    def add(self, keys: np.ndarray) -> None:
        """Insert ``keys`` (duplicates and keys already present are ignored)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if keys.size == 0:
            return
        keys = np.unique(keys[self.where[keys] < 0])
        k = keys.size
        pos = np.arange(self.count, self.count + k)
        self.members[pos] = keys
        self.where[keys] = pos
        self.count += k

    def remove(self, keys: np.ndarray) -> None:
        """Delete ``keys`` (keys not present are ignored)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if keys.size == 0:
            return
        keys = np.unique(keys[self.where[keys] >= 0])
        if keys.size == 0:
            return
        positions = self.where[keys]
        self.where[keys] = -1
        self.count = close_gaps(self.members, self.where, self.count, positions, self.where)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` keys drawn uniformly with replacement (the set must not be empty)."""
        keys: np.ndarray = self.members[uniform_positions(rng, n, self.count)].astype(np.int64)
        return keys

    def keys(self) -> np.ndarray:
        return self.members[: self.count].astype(np.int64)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "members": self.keys()}

    def check_state(self, state: Any, where: str = "starts") -> tuple[np.ndarray, np.ndarray, int]:
        """Saved members checked (distinct keys in ``[0, capacity)``); returns the new arrays."""
        m = mapping(where, state, ("members",), ("capacity",))
        keys = int_array(f"{where}.members", m["members"], None, 0, self.capacity - 1, ndim=1)
        if keys.size > self.capacity or not distinct(keys, self.capacity):
            raise CheckpointError(f"{where}.members", keys, f"distinct keys in [0, {self.capacity})")
        members = np.empty(self.capacity, dtype=self.members.dtype)
        position = np.full(self.capacity, -1, dtype=self.where.dtype)
        members[: keys.size] = keys  # same order as saved, so the next draws are the same
        position[keys] = np.arange(keys.size)
        return members, position, int(keys.size)

    def restore(self, checked: tuple[np.ndarray, np.ndarray, int]) -> None:
        self.members, self.where, self.count = checked

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(self.check_state(state))


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the inclusive ranges ``lo[i]..hi[i]`` (empty where ``hi < lo``).

    Returns ``(owner, values)``: ``values`` the concatenated integers and
    ``owner[j]`` the index ``i`` of the range each came from.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    counts = np.maximum(hi - lo + 1, 0)
    total = int(counts.sum())
    owner = np.repeat(np.arange(lo.size), counts)
    if total == 0:
        return owner, np.empty(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    values = np.arange(total, dtype=np.int64) - np.repeat(starts, counts) + np.repeat(lo, counts)
    return owner, values


def new_anchors(first: np.ndarray, ready_lo: np.ndarray, ready_hi: np.ndarray, ended: np.ndarray,
                length: int, burn_in: int, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive anchor ranges that become valid when steps ``ready_lo..ready_hi`` are stored.

    One entry per episode that grew: ``first`` is the episode's first step,
    steps up to ``ready_lo - 1`` were stored before, ``ended`` says whether the
    episode is now over. Returns ``(lo, hi)`` arrays (``hi < lo`` means none).
    """
    first = np.asarray(first, dtype=np.int64)
    lo = np.asarray(ready_lo, dtype=np.int64) - (length - 1)
    hi = np.asarray(ready_hi, dtype=np.int64) - (length - 1)
    if pad:
        # a finished episode: every remaining step may anchor a (tail-padded) window
        hi = np.where(ended, np.asarray(ready_hi, dtype=np.int64), hi)
        lo = np.maximum(lo, first)
    else:
        lo = np.maximum(lo, first + burn_in)
    empty = np.asarray(ready_hi) < np.asarray(ready_lo)
    hi = np.where(empty, lo - 1, hi)
    return lo, hi


def window_offsets(length: int, burn_in: int) -> np.ndarray:
    """Step offsets of a window relative to its anchor: ``-burn_in .. length - 1``."""
    return np.arange(-burn_in, length, dtype=np.int64)


def window_mask(steps_before: np.ndarray, ends: np.ndarray, burn_in: int) -> np.ndarray:
    """Which steps of each window belong to the anchor's episode.

    Args:
        steps_before: ``[B]`` how many steps of the anchor's episode precede the
            anchor (``a - first``); burn-in steps further back are padding.
        ends: ``[B, L]`` bool, True at a step that ends its episode (terminated
            or truncated); steps of the window after the first end at or after
            the anchor are padding.
        burn_in: leading burn-in steps in each window.

    Returns ``[B, L]`` bool, True for real steps.
    """
    back = np.arange(burn_in, 0, -1, dtype=np.int64)  # distance of each burn-in step before the anchor
    head = back[None, :] <= np.asarray(steps_before, dtype=np.int64)[:, None]
    tail_ends = ends[:, burn_in:]
    # a step is past the episode if an end flag occurred at an earlier step of the window
    past = (np.cumsum(tail_ends, axis=1) - tail_ends) > 0
    return np.concatenate([head, ~past], axis=1) if burn_in else ~past
