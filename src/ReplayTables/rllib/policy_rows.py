"""A multi-agent batch stored as rows of one single-agent table.

RLlib stores a ``MultiAgentBatch`` given to a single-agent buffer as one item, and
its lockstep mode stores whole multi-agent steps. Here such an item is the rows of
all its policies, one after another, with two bookkeeping columns: which policy a
row belongs to (an index into the buffer's list of policy ids, so the set of
policies may change from batch to batch) and RLlib's env-step count of the item
(on its first row, zero on the others, so that any selection of whole items sums
to its env steps). Policies may have different columns: a row has every column
of every policy seen so far (zeros in those its policy lacks), and each policy's
batch is read back with its own columns only; a policy keeps its columns from
batch to batch, and a column shared by two policies has one shape and dtype.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.engine.schema import Field
from ReplayTables.errors import SchemaError
from ReplayTables.rllib.batches import MultiAgentBatch, SampleBatch

__all__ = ["ENV_STEPS_COLUMN", "POLICY_COLUMN", "flatten", "unflatten"]

POLICY_COLUMN = "__policy__"
ENV_STEPS_COLUMN = "__env_steps__"


def _concat(parts: list[Any], order: np.ndarray | None) -> Any:
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts], order) for k in parts[0]}
    try:
        out = np.concatenate([np.asarray(p) for p in parts])
    except ValueError as exc:
        raise SchemaError("policy_batches", [np.shape(p) for p in parts],
                          "the same column shapes in every policy batch", str(exc)) from None
    return out if order is None else out[order]


def _zeros_like(value: Any, n: int) -> Any:
    if isinstance(value, dict):
        return {k: _zeros_like(v, n) for k, v in value.items()}
    arr = np.asarray(value)
    return np.zeros((n, *arr.shape[1:]), dtype=arr.dtype)


def _zeros_of(fields: list[Field], key: str, n: int) -> Any:
    """Zeros for the stored column ``key`` (nested columns rebuilt from their field paths)."""
    mine = [f for f in fields if f.path[0] == key]
    if len(mine) == 1 and len(mine[0].path) == 1:
        return np.zeros((n, *mine[0].shape), dtype=mine[0].dtype)
    out: dict[str, Any] = {}
    for f in mine:
        node = out
        for part in f.path[1:-1]:
            node = node.setdefault(part, {})
        node[f.path[-1]] = np.zeros((n, *f.shape), dtype=f.dtype)
    return out


def flatten(policy_batches: dict[Any, dict[str, Any]], rows: dict[Any, int], policy_ids: list[Any],
            policy_columns: list[list[str]], env_steps: int | None, per_step: bool,
            fields: list[Field]) -> tuple[dict[str, Any], np.ndarray, list[Any], list[list[str]]]:
    """``(columns, item lengths, policy ids and their columns after this batch)``; changes nothing.

    ``per_step``: one item per env step (row ``k`` of every policy; all policies
    need the same row count), else the whole batch is one item. ``fields``: the
    table's stored fields (zeros for columns of policies not in this batch).
    """
    pids = list(policy_batches)
    if not pids:
        return {}, np.empty(0, np.int64), policy_ids, policy_columns
    known, known_columns = list(policy_ids), list(policy_columns)
    codes = []
    for pid in pids:
        names = sorted(policy_batches[pid])
        for key in (POLICY_COLUMN, ENV_STEPS_COLUMN):
            if key in names:
                raise SchemaError(key, "<present>", "a column name that is not reserved for multi-agent items")
        if pid in known:
            if known_columns[known.index(pid)] != names:
                raise SchemaError(f"policy_batches[{pid!r}]", names,
                                  f"the columns policy {pid!r} had before: {known_columns[known.index(pid)]}")
        else:
            known.append(pid)
            known_columns.append(names)
        codes.append(known.index(pid))
    every = sorted(set().union(*map(set, known_columns)))
    counts = np.array([rows[p] for p in pids], dtype=np.int64)
    parts = []
    for pid in pids:
        part = dict(policy_batches[pid])
        for key in every:
            if key not in part:
                donor = next((policy_batches[q][key] for q in pids if key in policy_batches[q]), None)
                part[key] = _zeros_like(donor, rows[pid]) if donor is not None else \
                    _zeros_of(fields, key, rows[pid])
        parts.append({k: part[k] for k in every})
    policy = np.repeat(np.array(codes, dtype=np.int64), counts)
    if per_step:
        n = int(counts[0])
        if (counts != n).any():
            raise SchemaError("policy_batches", dict(zip(pids, counts.tolist())),
                              "the same number of rows (env steps) in every policy batch in lockstep mode")
        # step-major order: step k of every policy, then step k + 1
        order = np.arange(n * len(pids)).reshape(len(pids), n).T.reshape(-1)
        lengths = np.full(n, len(pids), dtype=np.int64)
        steps = np.zeros(n * len(pids), dtype=np.int64)
        steps[::len(pids)] = 1
    else:
        order = None
        total = int(counts.sum())
        lengths = np.array([total] if total else [], dtype=np.int64)
        steps = np.zeros(total, dtype=np.int64)
        if total:
            steps[0] = int(counts.max()) if env_steps is None else env_steps
    columns = _concat(parts, order) if len(parts) > 1 else dict(parts[0])
    columns[POLICY_COLUMN] = policy if order is None else policy[order]
    columns[ENV_STEPS_COLUMN] = steps
    return columns, lengths, known, known_columns


def _take(columns: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: (_take(v, rows) if isinstance(v, dict) else v[rows]) for k, v in columns.items()}


#: Columns added to every row at sampling time (kept for every policy).
SAMPLE_COLUMNS = ("weights", "batch_indexes", "seq_lens")


def unflatten(columns: dict[str, Any], policy_ids: list[Any], policy_columns: list[list[str]]) -> MultiAgentBatch:
    """The :class:`MultiAgentBatch` of rows read back (policies in first-seen order), each
    policy with its own columns."""
    policy = np.asarray(columns.pop(POLICY_COLUMN))
    steps = np.asarray(columns.pop(ENV_STEPS_COLUMN))
    out = MultiAgentBatch({}, int(steps.sum()))
    for code in np.unique(policy):
        own = set(policy_columns[int(code)]) | set(SAMPLE_COLUMNS)
        rows = np.flatnonzero(policy == code)
        out[policy_ids[int(code)]] = SampleBatch(_take({k: v for k, v in columns.items() if k in own}, rows))
    return out
