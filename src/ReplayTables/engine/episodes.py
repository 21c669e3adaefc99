"""Episode rings: a step stream stored with every observation once.

Layout. The capacity is split into one ring per environment stream (``streams``
rings of ``per_stream`` records). A *record* is one observation plus the fields
of the step taken from it (action, reward, terminated, truncated, extras). An
episode of ``L`` steps takes ``L + 1`` consecutive records of its stream: the
first observation, then one record per step for the observation that step
produced (the last one is the final observation, kept once, with no step of
its own). So a transition never stores ``next_obs``: it is the next record of
the same stream. Frame stacks, n-step windows and sequences are offsets from
a record within its stream's ring, bounded by the record's step index in its
episode (``t_in_episode``), so nothing ever reaches into another episode.

Items. The engine :class:`~ReplayTables.engine.table.Table` holds the step fields
in its packed storage *at the slot of the step's observation*, and its slot
directory and sampler decide which transitions may be sampled. A transition
becomes an item (gets an id and a priority) only when it is complete: its
``n``-step window is stored or its episode has ended (see ``accumulators``).

Eviction. Writing a record overwrites the oldest record of its stream. The
transition there is removed, and so are the next few transitions of the same
episode whose frame stack would reach the lost frame, and the sequence anchors
whose burn-in would; so a sample never sees a frame that is not its own.
All of this is vectorised over the streams in a call.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.engine.accumulators import nstep_targets, ready_range
from ReplayTables.engine.sequences import StartIndex, expand_ranges, new_anchors, window_mask
from ReplayTables.engine.state_checks import MAX_INT, bool_array, int_array
from ReplayTables.engine.storage import FrameStore
from ReplayTables.engine.table import Table
from ReplayTables.errors import CheckpointError, ConfigError, EpisodeError

__all__ = ["STEP_FIELDS", "EpisodeRing", "FrameStore"]

_NO_IDS = np.empty(0, dtype=np.int64)
_NO_IDS.flags.writeable = False

#: The step fields every ring stores, in this order, before any extras.
STEP_FIELDS = ("action", "reward", "terminated", "truncated")


def min_per_stream(n_step: int, frame_stack: int, seq_length: int, burn_in: int) -> int:
    """The smallest ring per stream that can hold a complete item of every kind asked for."""
    return n_step + max(frame_stack, burn_in + seq_length) + 2


class EpisodeRing:
    """Per-stream rings of records; turns steps into table items; answers sample indices."""

    def __init__(self, table: Table, frames: FrameStore, streams: int, *, n_step: int = 1,
                 frame_stack: int = 1, zero_pad_stacks: bool = False, seq_length: int = 0,
                 burn_in: int = 0, pad_sequences: bool = False) -> None:
        capacity = table.capacity
        self.table = table
        self.frames = frames
        self.streams = streams
        self.per_stream = capacity // streams
        need = min_per_stream(n_step, frame_stack, seq_length, burn_in)
        if self.per_stream < need:
            raise ConfigError("capacity", capacity, f"at least {need} records per stream "
                                                    f"({streams} streams: capacity >= {need * streams})")
        self.n_step = n_step
        self.frame_stack = frame_stack
        self.zero_pad_stacks = zero_pad_stacks
        self.seq_length = seq_length
        self.burn_in = burn_in
        self.pad_sequences = pad_sequences
        self.t_in_episode = np.zeros(capacity, dtype=np.int32)
        self.next_pos = np.zeros(streams, dtype=np.int64)      # records written per stream
        self.episode_first = np.zeros(streams, dtype=np.int64)  # position of the open episode's first record
        self.open = np.zeros(streams, dtype=bool)               # an episode awaits its next step
        self.starts = StartIndex(capacity) if seq_length else None
        self._stack_back = np.arange(frame_stack - 1, -1, -1, dtype=np.int64)  # oldest frame first
        self._reach = np.arange(max(frame_stack - 1, burn_in) + 1, dtype=np.int64)
        self._nstep = np.arange(n_step, dtype=np.int64)

    # ------------------------------------------------------------ addressing
    def slot_of(self, streams: np.ndarray, positions: np.ndarray) -> np.ndarray:
        result: np.ndarray = streams * self.per_stream + positions % self.per_stream
        return result

    def _offset(self, slots: np.ndarray, offsets: Any) -> np.ndarray:
        """Slots ``offsets`` records after ``slots`` in the same stream's ring."""
        cs = self.per_stream
        base = slots - slots % cs
        result: np.ndarray = base + (slots - base + offsets) % cs
        return result

    # ------------------------------------------------------------ checks
    def check_open(self, streams: np.ndarray, want_open: bool) -> None:
        state = self.open[streams]
        bad = streams[state != want_open]
        if bad.size:
            if want_open:
                raise EpisodeError("stream", bad.tolist(), "streams with an open episode: after terminated or "
                                                           "truncated, call begin_episode(obs) before the next step")
            raise EpisodeError("stream", bad.tolist(), "streams whose last episode has ended (an open episode "
                                                       "ends with a step marked terminated or truncated)")

    # ------------------------------------------------------------ writing (inputs already validated)
    def begin(self, streams: np.ndarray, obs: np.ndarray) -> None:
        """First observations of new episodes on ``streams``."""
        pos = self.next_pos[streams]
        self._evict(streams, pos)
        slots = self.slot_of(streams, pos)
        self.frames.write(slots, obs)
        self.t_in_episode[slots] = 0
        self.episode_first[streams] = pos
        self.next_pos[streams] = pos + 1
        self.open[streams] = True

    def step(self, streams: np.ndarray, fields: list[np.ndarray], next_obs: np.ndarray,
             terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
        """One step on each of ``streams``; returns the ids of the transitions completed by it."""
        table = self.table
        assert table.storage is not None
        cur = self.next_pos[streams] - 1
        cur_slots = self.slot_of(streams, cur)
        table.storage.write(cur_slots, fields)
        new = cur + 1
        self._evict(streams, new)
        new_slots = self.slot_of(streams, new)
        self.frames.write(new_slots, next_obs)
        self.t_in_episode[new_slots] = self.t_in_episode[cur_slots] + 1
        self.next_pos[streams] = new + 1
        ended = terminated | truncated
        self.open[streams[ended]] = False
        first = self.episode_first[streams]
        lo, hi = ready_range(first, cur, ended, self.n_step)
        owner, positions = expand_ranges(lo, hi)
        ids = np.empty(0, dtype=np.int64)
        if positions.size:
            slots = self.slot_of(streams[owner], positions)
            ids = table.directory.assign(slots)
            if table.sampler.prioritized:
                table.sampler.on_insert(slots, None, table.directory)
            table.counters["added"] += int(slots.size)
        if self.starts is not None:
            alo, ahi = new_anchors(first, lo, hi, ended, self.seq_length, self.burn_in, self.pad_sequences)
            owner, anchors = expand_ranges(alo, ahi)
            if anchors.size:
                self.starts.add(self.slot_of(streams[owner], anchors))
        return ids

    def step_one(self, stream: int, fields: list[Any], next_obs: np.ndarray, terminated: bool,
                 truncated: bool) -> np.ndarray:
        """:meth:`step` for one stream with scalar bookkeeping (the per-env-step path).

        Same effect as ``step(np.array([stream]), ...)``; it only avoids building
        index arrays for a single record.
        """
        table = self.table
        storage = table.storage
        assert storage is not None
        cs = self.per_stream
        base = stream * cs
        cur = int(self.next_pos[stream]) - 1
        cur_slot = base + cur % cs
        for column, value in zip(storage.columns, fields):
            column[cur_slot] = value
        new = cur + 1
        new_slot = base + new % cs
        if new >= cs:
            if self._reach.size == 1:
                self._evict_slot(new_slot)
            else:
                self._evict(np.array([stream]), np.array([new]))
        self.frames.write(new_slot, next_obs)
        self.t_in_episode[new_slot] = self.t_in_episode[cur_slot] + 1
        self.next_pos[stream] = new + 1
        ended = terminated or truncated
        if ended:
            self.open[stream] = False
        first = int(self.episode_first[stream])
        n = self.n_step
        lo = max(cur - n + 1, first)
        hi = cur if ended else cur - n + 1
        ids = _NO_IDS
        if hi == lo:
            slot = base + lo % cs
            ids = np.array([table.directory.assign_one(slot)], dtype=np.int64)
            if table.sampler.prioritized:
                table.sampler.on_insert(np.array([slot], dtype=np.int64), None, table.directory)
            table.counters["added"] += 1
        elif hi > lo:
            slots = base + np.arange(lo, hi + 1, dtype=np.int64) % cs
            ids = table.directory.assign(slots)
            if table.sampler.prioritized:
                table.sampler.on_insert(slots, None, table.directory)
            table.counters["added"] += int(slots.size)
        if self.starts is not None and hi >= lo:
            alo, ahi = new_anchors(np.array([first]), np.array([lo]), np.array([hi]), np.array([ended]),
                                   self.seq_length, self.burn_in, self.pad_sequences)
            if ahi[0] >= alo[0]:
                self.starts.add(base + np.arange(alo[0], ahi[0] + 1, dtype=np.int64) % cs)
        return ids

    def _evict_slot(self, slot: int) -> None:
        """:meth:`_evict` when nothing reaches back past its own record (no stack, no burn-in)."""
        table = self.table
        if table.directory.slot_id[slot] >= 0:
            arr = np.array([slot], dtype=np.int64)
            table.directory.remove(arr)
            table.sampler.on_delete(arr)
            table.counters["evicted"] += 1
        if self.starts is not None and self.starts.where[slot] >= 0:
            self.starts.remove(np.array([slot], dtype=np.int64))

    def _evict(self, streams: np.ndarray, positions: np.ndarray) -> None:
        """Retire what depends on the records about to be overwritten at ``positions``."""
        wrapped = positions >= self.per_stream
        if not wrapped.any():
            return
        slots = self.slot_of(streams[wrapped], positions[wrapped])
        rel = self._reach
        cand = self._offset(slots[:, None], rel[None, :])
        same = self.t_in_episode[cand] >= rel[None, :]  # still the overwritten record's episode
        k = self.frame_stack
        items = cand[:, :k][same[:, :k]]
        table = self.table
        items = np.unique(items[table.directory.slot_id[items] >= 0])
        if items.size:
            table.directory.remove(items)
            table.sampler.on_delete(items)
            table.counters["evicted"] += int(items.size)
        if self.starts is not None:
            b = self.burn_in + 1
            self.starts.remove(cand[:, :b][same[:, :b]])

    # ------------------------------------------------------------ reading
    def transition_arrays(self, slots: np.ndarray, fields: list[np.ndarray], gamma: float) -> dict[str, Any]:
        """Frames, n-step targets and bootstrap frames of the transitions at ``slots``.

        ``fields`` are the table's step fields gathered at ``slots`` (in order).
        """
        n = self.n_step
        reward, terminated, truncated = fields[1], fields[2], fields[3]
        if n == 1:
            steps = np.ones(slots.shape[0], dtype=np.int64)
            returns = reward.astype(np.float64)
            discount = gamma * ~terminated
            end_term, end_trunc = terminated, truncated
        else:
            table = self.table
            assert table.storage is not None
            win = self._offset(slots[:, None], self._nstep[None, :])
            cols = table.storage.columns
            r, te, tr = cols[1][win], cols[2][win], cols[3][win]
            returns, discount, steps = nstep_targets(r, te, tr, gamma)
            rows = np.arange(slots.shape[0])
            end_term, end_trunc = te[rows, steps - 1], tr[rows, steps - 1]
        obs, next_obs = self._stacks(slots, steps)
        return {"obs": obs, "next_obs": next_obs, "returns": returns, "discount": discount, "steps": steps,
                "end_terminated": end_term, "end_truncated": end_trunc}

    def _stacks(self, slots: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame stacks of ``obs`` (at ``slots``) and of ``next_obs`` (``steps`` records later).

        Fast path: frames ``slot - k + 1 .. slot + n`` are one contiguous run in
        the ring, read with one gather per transition; ``obs`` and (for
        ``n_step=1``) ``next_obs`` are views of it. A stack that starts before its
        episode gets the episode's first frame (or zeros) in those places, which
        fixes obs and next_obs consistently because both are clipped at the same
        episode start. Runs that cross the end of a stream's ring take the
        general per-frame path.
        """
        k, n = self.frame_stack, self.n_step
        B = slots.shape[0]
        cs = self.per_stream
        length = k + n
        if k == 1 and n == 1:
            # the common DQN case: only a transition in a ring's last slot has its successor elsewhere
            crossing = (slots % cs) == cs - 1
            if not crossing.any():
                run = self.frames.read_runs(slots, 2)
                return run[:, 0], run[:, 1]
        else:
            local = slots % cs
            crossing = (local < k - 1) | (local + n >= cs)
        starts = slots - (k - 1)
        any_crossing = bool(crossing.any())
        if any_crossing:
            starts = np.where(crossing, 0, starts)  # placeholders; those rows are rebuilt below
        run = self.frames.read_runs(starts, length)
        if any_crossing:
            rows = np.flatnonzero(crossing)
            run[rows] = self.frames.gather(self._offset(slots[rows, None], np.arange(-(k - 1), n + 1)[None, :]))
        if k > 1:
            t = self.t_in_episode[slots].astype(np.int64)
            short = np.flatnonzero(t < k - 1)
            if short.size:
                before = (k - 1 - t[short])[:, None] > np.arange(length)[None, :]  # frames before the episode
                first = run[short, k - 1 - t[short]]
                fill = np.zeros_like(first) if self.zero_pad_stacks else first
                sub = run[short]
                sub[before] = np.repeat(fill, before.sum(axis=1), axis=0)
                run[short] = sub
        if k == 1:
            return run[:, 0], (run[:, 1] if n == 1 else run[np.arange(B), steps])
        if n == 1:
            return run[:, :k], run[:, 1:k + 1]
        pick = steps[:, None] + np.arange(k)[None, :]
        return run[:, :k], run[np.arange(B)[:, None], pick]

    def sequence_arrays(self, anchors: np.ndarray) -> dict[str, Any]:
        """Windows of ``burn_in + seq_length`` steps around ``anchors`` (slots of valid anchors)."""
        table = self.table
        assert table.storage is not None
        b, T = self.burn_in, self.seq_length
        offsets = np.arange(-b, T + 1, dtype=np.int64)
        frame_win = self._offset(anchors[:, None], offsets[None, :])
        steps_win = frame_win[:, :-1]
        fields = table.storage.gather(steps_win)
        frames = self.frames.gather(frame_win)
        if not self.pad_sequences:
            mask = np.ones(steps_win.shape, dtype=bool)
            return {"fields": fields, "obs": frames[:, :-1], "next_obs": frames[:, 1:], "mask": mask}
        ends = np.logical_or(fields[2], fields[3])
        mask = window_mask(self.t_in_episode[anchors], ends, b)
        out = [np.where(mask.reshape(mask.shape + (1,) * (f.ndim - 2)), f, np.zeros((), f.dtype)) for f in fields]
        fmask = mask.reshape(mask.shape + (1,) * (frames.ndim - 2))
        zero = np.zeros((), frames.dtype)
        return {"fields": out, "obs": np.where(fmask, frames[:, :-1], zero),
                "next_obs": np.where(fmask, frames[:, 1:], zero), "mask": mask}

    # ------------------------------------------------------------ state
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"t_in_episode": self.t_in_episode, "next_pos": self.next_pos,
               "episode_first": self.episode_first, "open": self.open}
        if self.starts is not None:
            out["starts"] = self.starts.keys()
        return out

    @staticmethod
    def nbytes_for(capacity: int, sequences: bool) -> int:
        """Bytes the ring's own arrays take for ``capacity`` records (step indices, sequence starts)."""
        return 4 * capacity + (16 * capacity if sequences else 0)

    def check_arrays(self, arrays: dict[str, Any], where: str = "ring_") -> dict[str, Any]:
        """The ring's saved arrays, checked against its layout; changes nothing.

        Step indices are non-negative; per stream, the number of records written
        is non-negative, an open episode has a first record (its first position is
        at most the last one written), and sequence anchors are distinct slots.
        """
        names = {"t_in_episode", "next_pos", "episode_first", "open"}
        if self.starts is not None:
            names.add("starts")
        if set(arrays) != names:
            raise CheckpointError(f"{where}arrays", sorted(arrays), f"exactly the arrays {sorted(names)}")
        S, cap = self.streams, self.table.capacity
        out: dict[str, Any] = {
            "t_in_episode": int_array(f"{where}t_in_episode", arrays["t_in_episode"], (cap,), 0, 2**31 - 1,
                                      dtype=np.int32),
            "next_pos": int_array(f"{where}next_pos", arrays["next_pos"], (S,), 0, MAX_INT),
            "episode_first": int_array(f"{where}episode_first", arrays["episode_first"], (S,), 0, MAX_INT),
            "open": bool_array(f"{where}open", arrays["open"], (S,)),
        }
        last = out["next_pos"] - 1
        bad = np.flatnonzero((out["open"] & (last < 0)) | ((last >= 0) & (out["episode_first"] > last)))
        if bad.size:
            j = int(bad[0])
            raise CheckpointError(f"{where}episode_first", f"stream {j}: first {int(out['episode_first'][j])}, "
                                                          f"{int(out['next_pos'][j])} records written",
                                  "an episode's first record among those written (an open episode has one)")
        if self.starts is not None:
            out["starts"] = self.starts.check_state({"members": arrays["starts"]}, f"{where}starts")
        return out

    def restore_arrays(self, checked: dict[str, Any]) -> None:
        """Put checked arrays in place (assignments only)."""
        self.t_in_episode = checked["t_in_episode"]
        self.next_pos = checked["next_pos"]
        self.episode_first = checked["episode_first"]
        self.open = checked["open"]
        if self.starts is not None:
            self.starts.restore(checked["starts"])

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.restore_arrays(self.check_arrays(arrays))
