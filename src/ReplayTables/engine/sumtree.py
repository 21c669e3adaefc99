"""A sum tree with wide nodes for prioritized sampling at large capacities.

Why wide nodes: a binary tree over 10^6 leaves is 20 levels deep and a
root-to-leaf walk pays a cache miss at most of them. Blocks of 16 float64 (two
cache lines, allocated on 128-byte boundaries so a block never straddles a third
line) make it 4 internal levels deep, the top two of which stay in L1, and the
batched descent overlaps the misses of all walks in a batch (see
``kernels.descend``). A parallel tree of minima gives the smallest positive
priority, which importance-weight normalisation needs, without a search.

Accuracy: every internal sum is recomputed from its children whenever one of
them changes (never adjusted by a delta), so the total stays within a few ulps
of the exact sum of the leaves after any number of updates, and an updated tree
is bit-identical to one rebuilt from its leaves.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ReplayTables.engine.state import Arena, Scalars
from ReplayTables.engine.state_checks import array, bool_array, mapping
from ReplayTables.errors import CheckpointError

__all__ = ["SumTree"]

_kernels: ModuleType | None = None


def kernels() -> ModuleType:
    """The numba kernels, imported (and loaded from numba's cache) on first use."""
    global _kernels
    if _kernels is None:
        from ReplayTables.engine import kernels as k

        _kernels = k
    return _kernels


BRANCHING = 16  # must equal kernels.BRANCHING; kept here so the layout needs no numba import
BLOCK_ALIGNMENT = 128  # bytes: one block of 16 float64 is exactly two whole cache lines


def aligned_full(n: int, value: float, dtype: Any = np.float64) -> np.ndarray:
    """``np.full(n, value)`` whose data starts on a ``BLOCK_ALIGNMENT`` boundary.

    numpy's allocator only promises 16-byte alignment; a tree block that starts
    16 bytes into a cache line spans three lines, and the third is a miss the
    touch passes do not prefetch.
    """
    itemsize = np.dtype(dtype).itemsize
    # zeros come from calloc: the operating system maps pages only when they are first written,
    # so a large, mostly empty tree does not commit its memory up front
    raw = (np.zeros if value == 0 else np.empty)(n * itemsize + BLOCK_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % BLOCK_ALIGNMENT
    out: np.ndarray = raw[start:start + n * itemsize].view(dtype)
    if value != 0:
        out[:] = value
    return out


def _layout(capacity: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Padded leaf count, internal level sizes (top first) and their offsets."""
    B = BRANCHING
    leaf_n = -(-max(capacity, 1) // B) * B
    n = -(-(leaf_n // B) // B) * B
    sizes = [n]
    while n > B:
        n = -(-(n // B) // B) * B
        sizes.insert(0, n)
    sizes_arr = np.array(sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes_arr)[:-1]]).astype(np.int64)
    return leaf_n, sizes_arr, offsets


class TreeState(NamedTuple):
    """Checked leaves of a saved tree (see :meth:`SumTree.check_state`)."""

    leaves: np.ndarray  # float64[capacity], live zeros already as -0.0
    zero_count: int


class SumTree:
    """Non-negative leaf values with batched update and batched prefix-sum search."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        leaf_n, self.sizes, self.offsets = _layout(capacity)
        self.depth = len(self.sizes)
        total = int(self.sizes.sum())
        self.sums = aligned_full(total, 0.0)  # entry totals
        self.cum = aligned_full(total, 0.0)  # running sums inside each block
        self.mins = aligned_full(total, np.inf)
        self.leaves = aligned_full(leaf_n, 0.0)
        self.scalars = Scalars("tree.zero_count", [0], np.int64)  # live leaves of priority 0
        self._marks = np.zeros(total, dtype=np.int64)  # per-call visit codes (see kernels._repair)
        self._stamp = 0
        self._all_live = np.ones(256, dtype=np.bool_)
        self._scratch = np.empty(256, dtype=np.int64)

    @property
    def zero_count(self) -> int:
        """Live leaves holding priority 0 (stored as -0.0)."""
        return int(self.scalars.view[0])

    @zero_count.setter
    def zero_count(self, value: int) -> None:
        self.scalars.view[0] = value

    def bind(self, arena: Arena) -> None:
        """Keep ``zero_count`` in ``arena`` (see ``state.py``)."""
        self.scalars.bind(arena)

    def arrays(self) -> dict[str, np.ndarray]:
        """The tree's arrays by name (what a shared segment must hold besides ``zero_count``)."""
        return {"sums": self.sums, "cum": self.cum, "mins": self.mins, "leaves": self.leaves}

    def use_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Work on ``arrays`` (the names and shapes of :meth:`arrays`, e.g. views into shared memory)."""
        mine = self.arrays()
        for name, a in arrays.items():
            if a.shape != mine[name].shape or a.dtype != mine[name].dtype:
                raise ValueError(f"tree array {name}: {a.dtype}{a.shape}, expected {mine[name].dtype}"
                                 f"{mine[name].shape}")
        for name, a in arrays.items():
            setattr(self, name, a)

    def copy_from(self, other: SumTree) -> None:
        """Take ``other``'s leaves, sums and zero count into this tree's own arrays (same capacity)."""
        for name, a in other.arrays().items():
            getattr(self, name)[...] = a
        self.zero_count = other.zero_count

    # ------------------------------------------------------------ queries
    @property
    def total(self) -> float:
        """Sum of all leaves (the running sum of the top block)."""
        return float(self.cum[BRANCHING - 1])

    @property
    def min_positive(self) -> float:
        """Smallest positive leaf (inf if none)."""
        smallest: float = min(self.mins[:BRANCHING].tolist())
        return smallest

    def get(self, slots: np.ndarray) -> np.ndarray:
        """Leaf values (a live zero comes back as +0.0)."""
        result: np.ndarray = self.leaves[slots] + 0.0
        return result

    # ------------------------------------------------------------ updates
    def set(self, slots: np.ndarray, values: np.ndarray | float, live: np.ndarray | bool = True) -> None:
        """Set leaves (a later duplicate slot wins) and repair the sums above them."""
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        n = slots.shape[0]
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != (n,):
            vals = np.full(n, vals, dtype=np.float64)
        if live is True:
            if self._all_live.shape[0] < n:
                self._all_live = np.ones(max(n, 2 * self._all_live.shape[0]), dtype=np.bool_)
            live_arr = self._all_live[:n]
        else:
            live_arr = np.asarray(live, dtype=np.bool_)
            if live_arr.shape != (n,):
                live_arr = np.full(n, live_arr, dtype=np.bool_)
        self._stamp += 1
        delta, _ = kernels().set_leaves(self.sums, self.cum, self.mins, self._marks, self._stamp, self.leaves,
                                        self.offsets, self.depth, slots,
                                        np.ascontiguousarray(vals), live_arr)
        self.zero_count += int(delta)

    def update_by_ids(self, slot_id: np.ndarray, ids: np.ndarray, priorities: np.ndarray,
                      stored: np.ndarray, shard: int = 0) -> tuple[int, int, float]:
        """Fused priority update by (shard-tagged) item id (see ``kernels.update_by_ids``).

        Returns ``(bad, applied, q_max)``; ``bad >= 0`` names the first invalid
        priority, ``bad <= -2`` the id ``-bad - 2`` of another shard; then nothing changed.
        """
        if self._scratch.shape[0] < ids.shape[0]:
            self._scratch = np.empty(max(ids.shape[0], 2 * self._scratch.shape[0]), dtype=np.int64)
        self._stamp += 1
        bad, applied, delta, q_max = kernels().update_by_ids(
            self.sums, self.cum, self.mins, self._marks, self._stamp, self.leaves,
            self.offsets, self.depth, slot_id, ids, priorities, stored, self._scratch, shard)
        if bad == -1:
            self.zero_count += int(delta)
        return int(bad), int(applied), float(q_max)

    def probabilities(self, slots: np.ndarray, uniform: float, count: int) -> np.ndarray:
        """Sampling probabilities ``(1-u) q / total + u / count`` of ``slots`` (total must be > 0)."""
        out = np.empty(slots.shape[0], dtype=np.float64)
        kernels().probabilities(self.leaves, slots, self.total, float(uniform), int(count), out)
        return out

    def sample_points(self, prioritized: np.ndarray, uniform: np.ndarray, mask: np.ndarray, count: int,
                      live: np.ndarray, identity: bool, slot_id: np.ndarray, scale: float,
                      base: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(slots, ids, q, probabilities)`` of the items given points select (one kernel,
        see ``kernels.sample_points``); ``P = q * scale + base``. The tree's total must be
        positive if there are prioritized points."""
        n = prioritized.shape[0] + uniform.shape[0]
        slots = np.empty(n, dtype=np.int64)
        q = np.empty(n, dtype=np.float64)
        probs = np.empty(n, dtype=np.float64)
        ids = np.empty(n, dtype=np.int64)
        kernels().sample_points(self.cum, self.leaves, self.offsets, self.depth, prioritized, uniform, mask,
                                int(count), live, bool(identity), slot_id, float(scale), float(base),
                                slots, q, probs, ids)
        return slots, ids, q, probs

    def rebuild(self) -> None:
        """Recompute every internal entry from the leaves (used after bulk loads)."""
        kernels().rebuild(self.sums, self.cum, self.mins, self.leaves, self.offsets, self.sizes, self.depth)

    # ------------------------------------------------------------ search
    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf index holding each prefix-sum target in ``[0, total)``."""
        targets = np.ascontiguousarray(targets, dtype=np.float64)
        out = np.empty(targets.shape[0], dtype=np.int64)
        kernels().descend(self.cum, self.leaves, self.offsets, self.depth, targets, out)
        return out

    # ------------------------------------------------------------ state
    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickled (or deep-copied) arrays lose the block alignment: copy them back onto it
        state.pop("zero_count", None)
        for name in ("sums", "cum", "mins", "leaves"):
            arr = state[name]
            state[name] = aligned_full(arr.shape[0], 0.0)
            state[name][:] = arr
        self.__dict__.update(state)

    @staticmethod
    def nbytes_for(capacity: int) -> int:
        """Bytes a tree over ``capacity`` leaves holds (leaves, three float64 levels and the marks)."""
        leaf_n, sizes, _ = _layout(capacity)
        return 8 * leaf_n + 32 * int(sizes.sum()) + 3 * BLOCK_ALIGNMENT

    def state_dict(self) -> dict[str, Any]:
        n = self.capacity
        leaves = self.leaves[:n]
        live_zero = (leaves == 0.0) & np.signbit(leaves)
        return {"leaves": leaves + 0.0, "live_zero": live_zero.astype(np.uint8)}

    def check_state(self, state: Any, where: str = "tree", live: np.ndarray | None = None) -> TreeState:
        """Check saved leaves; changes nothing.

        Leaves are finite and non-negative with a finite sum; ``live_zero`` flags
        only zero leaves. With ``live`` (which slots hold an item), a slot without
        an item has a zero, unflagged leaf and a slot with one has a positive leaf
        or a flagged zero, so the tree agrees with the directory.
        """
        m = mapping(where, state, ("leaves", "live_zero"))
        n = self.capacity
        raw = array(f"{where}.leaves", m["leaves"], (n,), "fiu")
        leaves = np.array(raw, dtype=np.float64, copy=True)
        ok = np.isfinite(leaves) & (leaves >= 0)
        if not ok.all():
            s = int(np.flatnonzero(~ok)[0])
            raise CheckpointError(f"{where}.leaves", f"{leaves[s]} at slot {s}", "finite non-negative priorities")
        with np.errstate(over="ignore"):
            total = float(leaves.sum())
        if not np.isfinite(total):
            raise CheckpointError(f"{where}.leaves", f"a sum of {total}", "priorities with a finite sum")
        flags = bool_array(f"{where}.live_zero", m["live_zero"], (n,))
        flagged_positive = np.flatnonzero(flags & (leaves != 0.0))
        if flagged_positive.size:
            s = int(flagged_positive[0])
            raise CheckpointError(f"{where}.live_zero", f"a flag at slot {s} (leaf {leaves[s]})",
                                  "flags only at zero leaves")
        if live is not None:
            live = np.asarray(live, dtype=bool)
            bad = np.flatnonzero(~live & ((leaves != 0.0) | flags))
            if bad.size:
                s = int(bad[0])
                raise CheckpointError(f"{where}.leaves", f"leaf {leaves[s]} (live_zero {bool(flags[s])}) at empty "
                                                         f"slot {s}", "an unflagged zero at every slot without an item")
            bad = np.flatnonzero(live & (leaves == 0.0) & ~flags)
            if bad.size:
                s = int(bad[0])
                raise CheckpointError(f"{where}.live_zero", f"no flag at slot {s} (an item of priority 0)",
                                      "a positive priority or a live_zero flag at every slot with an item")
        leaves += 0.0
        leaves[flags] = -0.0
        return TreeState(leaves, int(flags.sum()))

    def restore(self, checked: TreeState) -> None:
        """Put checked leaves in place and rebuild the sums above them."""
        self.leaves[:] = 0.0
        self.leaves[: self.capacity] = checked.leaves
        self.zero_count = checked.zero_count
        self.rebuild()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(self.check_state(state))
