"""A multi-agent batch stored as rows of one single-agent table.

RLlib stores a ``MultiAgentBatch`` given to a single-agent buffer as one item, and
its lockstep mode stores whole multi-agent steps. Here such an item is the rows of
all its policies, one after another, with two bookkeeping columns: which policy a
row belongs to (an index into the buffer's list of policy ids, so the set of
policies may change from batch to batch) and RLlib's env-step count of the item
(on its first row, zero on the others, so that any selection of whole items sums
to its env steps). Every policy batch must have the same columns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

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


def _same_keys(a: Any, b: Any) -> bool:
    if isinstance(a, dict) != isinstance(b, dict):
        return False
    if not isinstance(a, dict):
        return True
    return a.keys() == b.keys() and all(_same_keys(a[k], b[k]) for k in a)


def flatten(policy_batches: dict[Any, dict[str, Any]], rows: dict[Any, int], policy_ids: list[Any],
            env_steps: int | None, per_step: bool) -> tuple[dict[str, Any], np.ndarray, list[Any]]:
    """``(columns, item lengths, policy ids after this batch)``; changes nothing.

    ``per_step``: one item per env step (row ``k`` of every policy; all policies
    need the same row count), else the whole batch is one item.
    """
    pids = list(policy_batches)
    if not pids:
        return {}, np.empty(0, np.int64), policy_ids
    first = policy_batches[pids[0]]
    for pid in pids[1:]:
        if not _same_keys(first, policy_batches[pid]):
            raise SchemaError(f"policy_batches[{pid!r}]", sorted(policy_batches[pid]),
                              f"the columns of policy {pids[0]!r}: {sorted(first)} (stored as one item)")
    for key in (POLICY_COLUMN, ENV_STEPS_COLUMN):
        if key in first:
            raise SchemaError(key, "<present>", "a column name that is not reserved for multi-agent items")
    known = list(policy_ids)
    codes = []
    for pid in pids:
        if pid not in known:
            known.append(pid)
        codes.append(known.index(pid))
    counts = np.array([rows[p] for p in pids], dtype=np.int64)
    parts = [policy_batches[p] for p in pids]
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
    return columns, lengths, known


def _take(columns: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: (_take(v, rows) if isinstance(v, dict) else v[rows]) for k, v in columns.items()}


def unflatten(columns: dict[str, Any], policy_ids: list[Any]) -> MultiAgentBatch:
    """The :class:`MultiAgentBatch` of rows read back (policies in first-seen order)."""
    policy = np.asarray(columns.pop(POLICY_COLUMN))
    steps = np.asarray(columns.pop(ENV_STEPS_COLUMN))
    out = MultiAgentBatch({}, int(steps.sum()))
    for code in np.unique(policy):
        out[policy_ids[int(code)]] = SampleBatch(_take(columns, np.flatnonzero(policy == code)))
    return out
