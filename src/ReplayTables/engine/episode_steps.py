"""EpisodeSteps: columnar storage of whole episodes, one row per observation.

What RLlib's new-stack episode buffers need from a store, without a Python
object per step:

* **rows**: an episode of ``L`` steps takes ``L + 1`` rows, one per observation;
  row ``t`` holds observation ``t``, the reward that came with it (0 at ``t = 0``)
  and the action and extra model outputs chosen at it (the last row repeats the
  last action, as RLlib's batches do, until a later chunk brings the real one).
  Every field lives in one engine
  :class:`~ReplayTables.engine.storage.PackedStorage` (each step stored once).
* **chunks**: a later chunk of a stored episode continues it: its first step
  goes into the episode's last row (the same observation), its other rows are
  appended. ``next_row`` links the rows of one episode, so a walk of ``k`` steps
  is ``k`` vectorised look-ups over the whole batch, however the chunks of
  interleaved episodes were laid out.
* **episode index**: per stored episode its first and last row, length,
  ``t_started`` and terminal flags; episodes leave in FIFO order of their first
  chunk, whole (RLlib's eviction).
* **valid sample starts**: rows that hold a step (``t < L`` of a live episode);
  a uniform draw is a draw over written rows with the others drawn again (exact,
  and no list of starts to keep); with ``prioritized=True`` a
  :class:`~ReplayTables.engine.sumtree.SumTree` holds one leaf per row (zero for
  rows that are not a step), so a prioritized draw is one batched tree descent.
* **step ids**: ``episode number * 2**32 + t``, where episodes are numbered in
  order of arrival; an id of an evicted step is detected, never mistaken for the
  step now in its row.

Per row the store keeps the packed fields and 12 bytes of bookkeeping (episode
slot, ``t``, next row; int32).

Rows are appended; when the arrays are full, live rows are compacted to the
front (order kept, links remapped) and the arrays double if still more than
nine tenths full, so the cost per appended row stays constant.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ReplayTables.engine.schema import Field
from ReplayTables.engine.storage import PackedStorage
from ReplayTables.engine.sumtree import SumTree
from ReplayTables.errors import ConfigError, EmptyBufferError, EpisodeError, SchemaError

__all__ = ["EpisodeSteps", "flatten_fields"]

#: Rows allocated per timestep of capacity (an episode takes one row more than its steps).
ROW_SLACK = 1.15
#: Step ids are ``episode number << ID_SHIFT | t``.
ID_SHIFT = 32


def flatten_fields(prefix: str, value: Any, n: int) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Leaves of ``value`` (an array with a leading axis of ``n``, or nested dicts of them)
    as ``(path, array)`` pairs, in sorted key order."""
    if isinstance(value, dict):
        out: list[tuple[tuple[str, ...], np.ndarray]] = []
        for key in sorted(value, key=str):
            for path, arr in flatten_fields(str(key), value[key], n):
                out.append(((prefix, *path), arr))
        return out
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise SchemaError(prefix, f"dtype {arr.dtype}", "numeric or boolean values (arrays of numbers per step)")
    if arr.shape[:1] != (n,):
        raise SchemaError(prefix, f"shape {arr.shape}", f"{n} values, one per row")
    return [((prefix,), arr)]


class EpisodeSteps:
    """Episodes of steps in columnar rows (see module docstring).

    Args:
        capacity: timesteps (actions) stored before the oldest episodes are evicted;
            the store keeps at least one episode however long it is (as RLlib does).
        prioritized: keep a sum tree of per-step priorities.
        initial_rows: rows allocated up front (default: ``capacity`` and some slack); they grow as needed.
    """

    def __init__(self, capacity: int, prioritized: bool = False, initial_rows: int | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ConfigError("capacity", capacity, "a positive integer number of timesteps")
        self.capacity = int(capacity)
        self.prioritized = prioritized
        self.fields: list[Field] | None = None
        self.field_names: list[tuple[str, ...]] = []
        self.storage: PackedStorage | None = None
        self.rows = 0  # allocated rows
        self.end = 0  # rows written (live or dead) from the front
        self.live_rows = 0
        self.compactions = 0
        self.ep = np.zeros(0, np.int32)  # episode slot of each row, -1 for a dead row
        self.t = np.zeros(0, np.int32)  # observation index of the row in its episode
        self.next_row = np.zeros(0, np.int32)  # the episode's next row, -1 at its (current) end
        self.infos: np.ndarray | None = None  # per row: a non-empty info dict, made on the first one
        self.tree = SumTree(1)
        self._allocate_rows(int(self.capacity * ROW_SLACK) + 16 if initial_rows is None else int(initial_rows))
        # episode index (by episode slot; Python containers are per episode, not per step)
        self.slot_of: dict[Any, int] = {}
        self.order: deque[int] = deque()  # live episode slots, oldest first
        self.ep_id: list[Any] = []
        self.ep_uid = np.zeros(0, np.int64)  # arrival number of the episode (part of its step ids)
        self.ep_first = np.zeros(0, np.int64)
        self.ep_last = np.zeros(0, np.int64)
        self.ep_len = np.zeros(0, np.int64)
        self.ep_t_started = np.zeros(0, np.int64)
        self.ep_terminated = np.zeros(0, bool)
        self.ep_truncated = np.zeros(0, bool)
        self.ep_ranges: list[list[list[int]]] = []  # row ranges [start, stop) per episode, in step order
        self.ep_meta: list[dict[str, Any]] = []  # spaces, agent and module ids (as given)
        self.free_slots: list[int] = []
        self.next_uid = 0
        self.num_steps = 0
        self._order_cache: tuple[Any, np.ndarray] | None = None

    # ------------------------------------------------------------ allocation
    def _allocate_rows(self, rows: int) -> None:
        old = self.rows
        self.rows = rows

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            new = np.full(rows, fill, dtype=a.dtype)
            new[:old] = a[:old]
            return new

        self.ep = grow(self.ep, -1)
        self.t = grow(self.t, 0)
        self.next_row = grow(self.next_row, -1)
        if self.infos is not None:
            infos = np.empty(rows, dtype=object)
            infos[:old] = self.infos[:old]
            self.infos = infos
        if self.storage is not None and self.fields is not None:
            storage = PackedStorage(self.fields, rows)
            storage.rows[:old] = self.storage.rows[:old]
            self.storage = storage
        if self.prioritized:
            tree = SumTree(rows)
            if old:
                tree.leaves[:old] = self.tree.leaves[:old]
                tree.rebuild()
            self.tree = tree

    def _episode_slot(self) -> int:
        if self.free_slots:
            return self.free_slots.pop()
        slot = len(self.ep_id)
        if slot >= self.ep_first.shape[0]:
            n = max(16, 2 * slot)
            for name in ("ep_uid", "ep_first", "ep_last", "ep_len", "ep_t_started", "ep_terminated",
                         "ep_truncated"):
                old = getattr(self, name)
                new = np.zeros(n, dtype=old.dtype)
                new[:old.shape[0]] = old
                setattr(self, name, new)
        self.ep_id.append(None)
        self.ep_ranges.append([])
        self.ep_meta.append({})
        return slot

    def _reserve(self, n: int) -> np.ndarray | None:
        """Make room for ``n`` appended rows (compact, then grow if still too full).

        Returns the compaction's map from old to new rows (``None`` if rows did not move).
        """
        if self.end + n <= self.rows:
            return None
        moved = self._compact()
        if self.end + n > self.rows or self.live_rows > 0.9 * self.rows:
            self._allocate_rows(max(int(self.rows * ROW_SLACK) + 16, self.end + n + 16))
        return moved

    def _compact(self) -> np.ndarray:
        """Move live rows to the front, in order, and remap every row reference."""
        end = self.end
        live = self.ep[:end] >= 0
        new_index = np.cumsum(live) - 1
        keep = np.flatnonzero(live)
        k = keep.shape[0]
        nxt = self.next_row[keep]
        self.next_row[:k] = np.where(nxt >= 0, new_index[np.maximum(nxt, 0)], -1)
        self.ep[:k] = self.ep[keep]
        self.t[:k] = self.t[keep]
        self.ep[k:end] = -1
        self.next_row[k:end] = -1
        if self.infos is not None:
            self.infos[:k] = self.infos[keep]
            self.infos[k:end] = None
        if self.storage is not None:
            self.storage.rows[:k] = self.storage.rows[keep]
        if self.prioritized:
            leaves = self.tree.leaves[keep].copy()
            self.tree.leaves[:] = 0.0
            self.tree.leaves[:k] = leaves
            self.tree.rebuild()
        for slot in self.order:
            self.ep_first[slot] = new_index[self.ep_first[slot]]
            self.ep_last[slot] = new_index[self.ep_last[slot]]
            merged: list[list[int]] = []
            for start, stop in self.ep_ranges[slot]:
                a, b = int(new_index[start]), int(new_index[stop - 1]) + 1
                if merged and merged[-1][1] == a:
                    merged[-1][1] = b
                else:
                    merged.append([a, b])
            self.ep_ranges[slot] = merged
        self.end = k
        self.compactions += 1
        result: np.ndarray = np.where(live, new_index, -1)
        return result

    @staticmethod
    def describe(obs: list[tuple[tuple[str, ...], np.ndarray]],
                 steps: list[tuple[tuple[str, ...], np.ndarray]]) -> list[Field]:
        """The fields a first chunk fixes: path, per-step shape and dtype of every column."""
        return [Field(path, tuple(a.shape[1:]), a.dtype) for path, a in obs + steps]

    @staticmethod
    def check_fields(fields: list[Field], obs: list[tuple[tuple[str, ...], np.ndarray]],
                     steps: list[tuple[tuple[str, ...], np.ndarray]]) -> None:
        """A :class:`SchemaError` unless a chunk's columns fit ``fields`` (names, shapes, dtypes)."""
        given = obs + steps
        names = [p for p, _ in given]
        if names != [f.path for f in fields]:
            raise SchemaError("episode", [".".join(p) for p in names],
                              f"the fields of the stored episodes: {['.'.join(f.path) for f in fields]}")
        for f, (_, a) in zip(fields, given):
            if tuple(a.shape[1:]) != f.shape:
                raise SchemaError(".".join(f.path), f"shape {a.shape[1:]}", f"shape {f.shape} per step")
            if not np.can_cast(a.dtype, f.dtype, "same_kind"):
                raise SchemaError(".".join(f.path), f"dtype {a.dtype}", f"values that fit {f.dtype}")

    # ------------------------------------------------------------ add
    def check_chunk(self, id_: Any, length: int, t_started: int) -> bool:
        """Whether a chunk continues a stored episode; an :class:`EpisodeError` if it cannot."""
        slot = self.slot_of.get(id_)
        if slot is None:
            return False
        if self.ep_terminated[slot] or self.ep_truncated[slot]:
            raise EpisodeError("episode.id_", id_, "a chunk of an episode that has not ended (the stored episode "
                                                   "with this id is already terminated or truncated)")
        expected = int(self.ep_t_started[slot] + self.ep_len[slot])
        if t_started != expected:
            raise EpisodeError("episode.t_started", t_started, f"{expected} (where the stored chunks of episode "
                                                               f"{id_!r} end)")
        return True

    def add_chunk(self, id_: Any, obs: list[tuple[tuple[str, ...], np.ndarray]],
                  steps: list[tuple[tuple[str, ...], np.ndarray]], infos: list[Any], terminated: bool,
                  truncated: bool, t_started: int, meta: dict[str, Any], priority: float = 1.0) -> bool:
        """Store a chunk of ``L >= 1`` steps (``L + 1`` observations; actions, rewards and
        the other step fields ``L`` each, in that order: ``steps[1]`` is the reward).

        Returns whether it started a new episode. Inputs must have been checked with
        :meth:`check_chunk` (and :meth:`check_fields`, which is repeated here before any change).
        """
        L = int(steps[0][1].shape[0])
        if self.fields is None:
            self.fields = self.describe(obs, steps)
            self.field_names = [f.path for f in self.fields]
            self.storage = PackedStorage(self.fields, self.rows)
        else:
            self.check_fields(self.fields, obs, steps)
        cont = id_ in self.slot_of
        # a new episode writes L + 1 rows; a continuation L (its first step goes into the
        # stored last row, which already holds that observation)
        new_rows = L if cont else L + 1
        self._reserve(new_rows)
        assert self.storage is not None
        start = self.end
        rows = np.arange(start, start + new_rows, dtype=np.int64)
        if cont:
            slot = self.slot_of[id_]
            all_rows = np.concatenate(([self.ep_last[slot]], rows))
            t0 = int(self.ep_len[slot])
        else:
            slot = self._episode_slot()
            self.slot_of[id_] = slot
            self.order.append(slot)
            self.ep_id[slot] = id_
            self.ep_uid[slot] = self.next_uid
            self.next_uid += 1
            self.ep_meta[slot] = meta
            self.ep_first[slot] = start
            self.ep_len[slot] = 0
            self.ep_t_started[slot] = t_started
            self.ep_ranges[slot] = []
            all_rows = rows
            t0 = 0
        cols = self.storage.columns
        nobs = len(obs)
        for j, (_, a) in enumerate(obs):  # row i holds observation i of the chunk
            cols[j][rows] = a[1:] if cont else a
        # actions (and extras) at the observation they were chosen at; the last row repeats the
        # last action until a later chunk brings the real one
        for j, (_, a) in enumerate(steps):
            if j == 1:  # rewards: with the observation they came with
                cols[nobs + 1][all_rows[1:]] = a
                if not cont:
                    cols[nobs + 1][all_rows[0]] = 0
            else:
                cols[nobs + j][all_rows[:L]] = a
                cols[nobs + j][all_rows[L]] = a[L - 1]
        if len(infos) == L + 1:  # only chunks with a non-empty info are given (see the front end)
            if self.infos is None:
                self.infos = np.empty(self.rows, dtype=object)
            info_arr = np.empty(L + 1, dtype=object)
            info_arr[:] = [i or None for i in infos]
            self.infos[all_rows] = info_arr  # a continuation's first info replaces the stored last one
        self.ep[rows] = slot
        self.t[all_rows] = t0 + np.arange(L + 1)
        self.next_row[all_rows[:-1]] = all_rows[1:]
        self.next_row[all_rows[-1]] = -1
        if self.prioritized:
            self.tree.set(all_rows[:L], float(priority))
        ranges = self.ep_ranges[slot]
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + new_rows
        else:
            ranges.append([start, start + new_rows])
        self.ep_last[slot] = all_rows[-1]
        self.ep_len[slot] += L
        self.ep_terminated[slot] = terminated
        self.ep_truncated[slot] = truncated
        self.end += new_rows
        self.live_rows += new_rows
        self.num_steps += L
        return not cont

    def evict_oldest(self) -> tuple[Any, int]:
        """Remove the oldest episode whole; returns its id and number of steps."""
        return self.evict(self.ep_id[self.order[0]])

    def evict(self, id_: Any) -> tuple[Any, int]:
        """Remove a stored episode whole; returns its id and number of steps."""
        slot = self.slot_of[id_]
        if self.order[0] == slot:
            self.order.popleft()
        else:
            self.order.remove(slot)
        del self.slot_of[id_]
        rows = self.episode_rows(slot)
        self.ep[rows] = -1
        self.next_row[rows] = -1
        if self.infos is not None:
            self.infos[rows] = None
        if self.prioritized:
            self.tree.set(rows, 0.0, live=False)
        steps = int(self.ep_len[slot])
        self.live_rows -= rows.shape[0]
        self.num_steps -= steps
        self.ep_id[slot] = None
        self.ep_ranges[slot] = []
        self.ep_meta[slot] = {}
        self.free_slots.append(slot)
        return id_, steps

    @property
    def num_episodes(self) -> int:
        return len(self.order)

    # ------------------------------------------------------------ read
    def is_start(self, rows: np.ndarray) -> np.ndarray:
        """Whether each row holds a step of a live episode (a valid sample start)."""
        ep = self.ep[rows]
        ok: np.ndarray = (ep >= 0) & (self.t[rows] < self.ep_len[np.maximum(ep, 0)])
        return ok

    def uniform_rows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` step rows uniformly with replacement: rows drawn over the written ones, and
        those that are not a step drawn again (most rows are steps, so few rounds)."""
        if self.num_steps == 0:
            raise EmptyBufferError("size", 0, "at least one stored timestep to sample from")
        rows = rng.integers(0, self.end, size=n)
        bad = np.flatnonzero(~self.is_start(rows))
        while bad.size:
            rows[bad] = rng.integers(0, self.end, size=bad.size)
            bad = bad[~self.is_start(rows[bad])]
        return rows

    def prioritized_rows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` step rows drawn proportionally to their tree leaves."""
        targets = rng.random(n) * self.tree.total
        rows = self.tree.find(targets)
        # a target that rounds onto the last boundary can land on a zero leaf: draw that one again
        bad = np.flatnonzero(~self.is_start(rows))
        while bad.size:
            rows[bad] = self.tree.find(rng.random(bad.size) * self.tree.total)
            bad = bad[~self.is_start(rows[bad])]
        return rows

    def walk(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Rows ``k`` steps later in the same episode (``k`` vectorised look-ups); -1 past the end."""
        out: np.ndarray = rows.astype(np.int64, copy=True)
        for _ in range(k):
            ok = out >= 0
            out[ok] = self.next_row[out[ok]]
        return out

    def walk_matrix(self, rows: np.ndarray, k: int) -> np.ndarray:
        """``(len(rows), k + 1)`` rows: each start and the ``k`` following ones; -1 past the end."""
        out = np.full((rows.shape[0], k + 1), -1, dtype=np.int64)
        out[:, 0] = rows
        cur = rows.astype(np.int64, copy=True)
        for j in range(1, k + 1):
            ok = cur >= 0
            cur[ok] = self.next_row[cur[ok]]
            out[:, j] = cur
        return out

    def gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """Every field at ``rows`` (any shape of row indices), in field order."""
        assert self.storage is not None
        flat = rows.reshape(-1)
        return [a.reshape(rows.shape + a.shape[1:]) for a in self.storage.gather(flat)]

    def infos_at(self, rows: np.ndarray) -> np.ndarray:
        """The info dicts at ``rows`` (``None`` where empty)."""
        if self.infos is None:
            return np.full(rows.shape, None, dtype=object)
        out: np.ndarray = self.infos[rows]
        return out

    def episode_rows(self, slot: int) -> np.ndarray:
        """Rows of a stored episode in step order."""
        if not self.ep_ranges[slot]:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.ep_ranges[slot]])

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """Step ids of (live) rows."""
        ids: np.ndarray = (self.ep_uid[self.ep[rows]] << ID_SHIFT) | self.t[rows].astype(np.int64)
        return ids

    def _order_array(self) -> np.ndarray:
        """The live episode slots, oldest first, as an array (cached until episodes change)."""
        key = (self.next_uid, len(self.order), self.order[0] if self.order else -1)
        if self._order_cache is None or self._order_cache[0] != key:
            self._order_cache = (key, np.fromiter(self.order, dtype=np.int64, count=len(self.order)))
        return self._order_cache[1]

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of step ids and whether each id names a step still stored."""
        ids = np.asarray(ids, dtype=np.int64)
        uid, t = ids >> ID_SHIFT, ids & ((1 << ID_SHIFT) - 1)
        order = self._order_array()
        live_uids = self.ep_uid[order]  # increasing: episodes are numbered in arrival order
        pos = np.minimum(np.searchsorted(live_uids, uid), max(order.shape[0] - 1, 0))
        found = (order.shape[0] > 0) & (live_uids[pos] == uid) if order.shape[0] else np.zeros(ids.shape, bool)
        slots = order[pos] if order.shape[0] else np.zeros(ids.shape, np.int64)
        valid = found & (t < self.ep_len[slots])
        rows = np.where(valid, self.ep_first[slots] + t, 0)
        rows = np.minimum(rows, max(self.end - 1, 0))
        # episodes laid out in one run of rows: ep_first + t; others: through their ranges
        direct = valid & (self.ep[rows] == slots) & (self.t[rows] == t)
        for i in np.flatnonzero(valid & ~direct).tolist():
            rows[i] = self.episode_rows(int(slots[i]))[int(t[i])]
        return rows, valid

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the store (arrays trimmed to the written rows)."""
        end = self.end
        return {
            "capacity": self.capacity, "prioritized": self.prioritized, "end": end, "rows": self.rows,
            "live_rows": self.live_rows, "next_uid": self.next_uid, "num_steps": self.num_steps,
            "fields": None if self.fields is None else [(list(f.path), list(f.shape), f.dtype.str)
                                                        for f in self.fields],
            "ep": self.ep[:end].copy(), "t": self.t[:end].copy(), "next_row": self.next_row[:end].copy(),
            "infos": None if self.infos is None else list(self.infos[:end]),
            "storage": None if self.storage is None else self.storage.rows[:end].copy(),
            "leaves": self.tree.leaves[:end].copy() if self.prioritized else None,
            "episodes": [
                {"slot": s, "id": self.ep_id[s], "uid": int(self.ep_uid[s]), "first": int(self.ep_first[s]),
                 "last": int(self.ep_last[s]), "len": int(self.ep_len[s]), "t_started": int(self.ep_t_started[s]),
                 "terminated": bool(self.ep_terminated[s]), "truncated": bool(self.ep_truncated[s]),
                 "ranges": [list(r) for r in self.ep_ranges[s]],
                 "meta": {k: v for k, v in self.ep_meta[s].items() if not k.startswith("_")}}
                for s in self.order],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpisodeSteps:
        """A store rebuilt from :meth:`state_dict`."""
        end = int(state["end"])
        # allocated at the saved size: a store made smaller than the default (a multi-agent
        # module's) would otherwise be "grown" from the default down to it
        out = cls(int(state["capacity"]), bool(state["prioritized"]), initial_rows=max(int(state["rows"]), end + 16))
        if state["fields"] is not None:
            out.fields = [Field(tuple(p), tuple(s), np.dtype(d)) for p, s, d in state["fields"]]
            out.field_names = [f.path for f in out.fields]
            out.storage = PackedStorage(out.fields, out.rows)
            out.storage.rows[:end] = state["storage"]
        for name in ("ep", "t", "next_row"):
            getattr(out, name)[:end] = state[name]
        if state["infos"] is not None:
            out.infos = np.empty(out.rows, dtype=object)
            infos = np.empty(end, dtype=object)
            infos[:] = list(state["infos"])
            out.infos[:end] = infos
        if out.prioritized:
            out.tree.leaves[:end] = state["leaves"]
            out.tree.rebuild()
        out.end = end
        out.live_rows = int(state["live_rows"])
        out.next_uid = int(state["next_uid"])
        out.num_steps = int(state["num_steps"])
        slots = [e["slot"] for e in state["episodes"]]
        n = max(slots, default=-1) + 1
        for _ in range(n):
            out._episode_slot()
        out.free_slots = sorted(set(range(n)) - set(slots), reverse=True)
        for e in state["episodes"]:
            s = e["slot"]
            out.slot_of[e["id"]] = s
            out.order.append(s)
            out.ep_id[s] = e["id"]
            out.ep_uid[s] = e["uid"]
            out.ep_first[s], out.ep_last[s], out.ep_len[s] = e["first"], e["last"], e["len"]
            out.ep_t_started[s] = e["t_started"]
            out.ep_terminated[s], out.ep_truncated[s] = e["terminated"], e["truncated"]
            out.ep_ranges[s] = [list(r) for r in e["ranges"]]
            out.ep_meta[s] = dict(e["meta"])
        return out

    def nbytes(self) -> int:
        """Bytes of every array the store holds (rows, bookkeeping, tree, episode index)."""
        total = self.ep.nbytes + self.t.nbytes + self.next_row.nbytes
        if self.infos is not None:
            total += self.infos.nbytes
        if self.storage is not None:
            total += self.storage.nbytes
        if self.prioritized:
            total += SumTree.nbytes_for(self.rows)
        total += sum(getattr(self, n).nbytes for n in ("ep_uid", "ep_first", "ep_last", "ep_len", "ep_t_started",
                                                        "ep_terminated", "ep_truncated"))
        return int(total)
