"""StorageUnit: what one *item* of an RLlib buffer is, and how a batch splits into items.

``TIMESTEPS``: every row (a batch that has a ``seq_lens`` column is cut along its
sequences instead, as RLlib's ``SampleBatch.timeslices(1)`` cuts a sequenced
batch). ``SEQUENCES``: runs of rows given by the ``seq_lens``
column (or, when the buffer has a ``replay_sequence_length``, chunks of each
episode). ``EPISODES``: complete episodes by ``eps_id`` (first ``t == 0``, last
row terminated or truncated); incomplete ones are dropped and counted. As in
RLlib, without ``eps_id`` an episode ends at each terminated or truncated row,
and without ``t`` it counts as starting at ``t == 0``.
``FRAGMENTS``: the whole ``add()`` batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ReplayTables.errors import ConfigError, SchemaError

__all__ = ["ItemPlan", "StorageUnit", "split_items"]


class StorageUnit(str, Enum):
    """The unit a buffer stores and samples; ``num_items`` counts these."""

    TIMESTEPS = "timesteps"
    SEQUENCES = "sequences"
    EPISODES = "episodes"
    FRAGMENTS = "fragments"

    @classmethod
    def of(cls, value: Any) -> StorageUnit:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ConfigError("storage_unit", value, f"one of {[u.value for u in cls]} (or StorageUnit)") from None


@dataclass
class ItemPlan:
    """Which rows of a batch are kept (``rows``: ``None`` = all) and the item lengths."""

    rows: np.ndarray | None
    lengths: np.ndarray
    dropped_episodes: int = 0
    #: RLlib's count of each item (its rows; env steps for a multi-agent item)
    counts: np.ndarray | None = None
    #: the buffer's policy ids (and their columns) once multi-agent items of this batch are stored
    policy_ids: list[Any] | None = None
    policy_columns: list[list[str]] | None = None


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of runs of equal consecutive values (rows of a column)."""
    n = values.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    flat = values.reshape(n, -1)
    change = np.flatnonzero((flat[1:] != flat[:-1]).any(axis=1)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
    return starts, lengths


def _episode_ends(columns: dict[str, np.ndarray]) -> np.ndarray:
    flags = [columns[k] for k in ("terminateds", "truncateds", "dones") if k in columns]
    if not flags:
        raise SchemaError("terminateds", "<missing>", "a 'terminateds'/'truncateds' (or 'dones') column to "
                                                       "find complete episodes")
    end = np.zeros(flags[0].shape[0], dtype=bool)
    for f in flags:
        end |= np.asarray(f).reshape(f.shape[0], -1).astype(bool).any(axis=1)
    return end


def _seq_lens(columns: dict[str, np.ndarray], rows: int, chunk: int | None) -> np.ndarray:
    """The checked ``seq_lens`` column: positive lengths adding up to ``rows``, each at most ``chunk``."""
    lens = np.asarray(columns["seq_lens"])
    if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu") or (lens.size and lens.min() < 1):
        raise SchemaError("seq_lens", lens, "a 1-d array of positive integer sequence lengths")
    lens = lens.astype(np.int64)
    if int(lens.sum()) != rows:
        raise SchemaError("seq_lens", int(lens.sum()), f"sequence lengths adding up to the {rows} rows")
    if chunk is not None and lens.size and int(lens.max()) > chunk:
        raise SchemaError("seq_lens", int(lens.max()),
                          f"sequences of at most replay_sequence_length - replay_burn_in = {chunk} steps")
    return lens


def split_items(columns: dict[str, np.ndarray], unit: StorageUnit, rows: int,
                chunk: int | None = None) -> ItemPlan:
    """Split a batch of ``rows`` rows into items of ``unit`` (validation only, no side effects).

    ``chunk`` (sequences with a ``replay_sequence_length``): without ``seq_lens``,
    each episode (``eps_id`` runs, else the whole batch) is cut into chunks of at
    most ``chunk`` steps; with ``seq_lens`` every sequence must fit in ``chunk``.
    """
    if unit is StorageUnit.TIMESTEPS:
        if "seq_lens" in columns:
            return ItemPlan(None, _seq_lens(columns, rows, None))
        return ItemPlan(None, np.ones(rows, dtype=np.int64))
    if unit is StorageUnit.FRAGMENTS:
        return ItemPlan(None, np.array([rows] if rows else [], dtype=np.int64))
    if unit is StorageUnit.SEQUENCES:
        if "seq_lens" in columns:
            return ItemPlan(None, _seq_lens(columns, rows, chunk))
        if chunk is None:
            raise SchemaError("seq_lens", "<missing>", "a 'seq_lens' column for storage_unit='sequences'")
        if "eps_id" in columns:
            _, run_lens = _runs(columns["eps_id"])
        else:
            run_lens = np.array([rows] if rows else [], dtype=np.int64)
        pieces = -(-run_lens // chunk)
        lens = np.full(int(pieces.sum()), chunk, dtype=np.int64)
        last = np.cumsum(pieces) - 1
        lens[last] = run_lens - (pieces - 1) * chunk
        return ItemPlan(None, lens)
    # episodes
    if rows == 0:
        return ItemPlan(None, np.empty(0, np.int64))
    ends = _episode_ends(columns)
    if "eps_id" in columns:
        starts, lens = _runs(columns["eps_id"])
    else:  # as RLlib's split_by_episode: an episode ends at each terminated / truncated row
        stops = np.concatenate([np.flatnonzero(ends) + 1, [rows] if not ends[-1] else []]).astype(np.int64)
        starts = np.concatenate([[0], stops[:-1]]).astype(np.int64)
        lens = stops - starts
    # as RLlib: an episode starts at t == 0 (a batch without `t` counts as starting there)
    t = np.asarray(columns["t"]).reshape(rows, -1)[:, 0] if "t" in columns else np.zeros(rows, np.int64)
    complete = (t[starts] == 0) & ends[starts + lens - 1]
    dropped = int((~complete).sum())
    if dropped == 0:
        return ItemPlan(None, lens)
    keep = np.repeat(complete, lens)
    return ItemPlan(np.flatnonzero(keep), lens[complete], dropped)
