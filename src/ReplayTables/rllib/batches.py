"""RLlib-shaped batches in and out, without importing Ray.

In: any mapping of column name to equal-length arrays (RLlib's ``SampleBatch``
is a ``dict`` subclass and is taken as is); a multi-agent batch is anything with
a ``policy_batches`` mapping (RLlib's ``MultiAgentBatch``) or a mapping of
policy id to such mappings. Out: :class:`SampleBatch` (a ``dict`` of numpy
arrays with ``count``) and :class:`MultiAgentBatch` (a ``dict`` of policy id to
``SampleBatch`` with ``policy_batches`` and ``count``), which are accepted back.
The ``infos`` column (Python dicts per step in RLlib) is not stored.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.errors import SchemaError

__all__ = ["DEFAULT_POLICY_ID", "MultiAgentBatch", "SampleBatch", "as_columns", "as_policy_batches"]

DEFAULT_POLICY_ID = "default_policy"

#: Columns that hold one value per sequence, not per row.
PER_SEQUENCE = ("seq_lens",)

#: RLlib columns of Python objects (dicts per step) that are not stored: a
#: columnar store keeps numbers, and replay does not use them.
IGNORED_COLUMNS = frozenset({"infos"})


class SampleBatch(dict):  # type: ignore[type-arg,unused-ignore]
    """A ``dict`` of column name to numpy array (RLlib's ``SampleBatch`` shape)."""

    @property
    def count(self) -> int:
        """Rows in the batch."""
        for key, value in self.items():
            if isinstance(value, Mapping):  # a lockstep batch nests policy columns
                return SampleBatch(value).count
            if key not in PER_SEQUENCE and not key.startswith("state_in_"):
                return int(np.shape(value)[0]) if np.ndim(value) else 0
        return 0

    def __len__(self) -> int:  # RLlib's len(batch) is the row count
        return self.count

    def __reduce__(self) -> tuple[Any, ...]:
        return (SampleBatch, (dict(self),))


class MultiAgentBatch(dict):  # type: ignore[type-arg,unused-ignore]
    """A ``dict`` of policy id to :class:`SampleBatch` (RLlib's ``MultiAgentBatch`` shape).

    ``env_steps`` is RLlib's count of environment steps; when not given it is
    the largest row count over the policies.
    """

    def __init__(self, policy_batches: Any = (), env_steps: int | None = None) -> None:
        super().__init__(policy_batches)
        self._env_steps = None if env_steps is None else int(env_steps)

    @property
    def policy_batches(self) -> dict[Any, SampleBatch]:
        return dict(self)

    @property
    def count(self) -> int:
        """Environment steps (RLlib's ``MultiAgentBatch.count``)."""
        if self._env_steps is not None:
            return self._env_steps
        return max((b.count for b in self.values()), default=0)

    def env_steps(self) -> int:
        return self.count

    def agent_steps(self) -> int:
        return sum(SampleBatch(b).count for b in self.values())

    def __reduce__(self) -> tuple[Any, ...]:
        return (MultiAgentBatch, (dict(self), self._env_steps))


def env_steps_of(batch: Any) -> int | None:
    """RLlib's env-step count of a multi-agent batch (``None`` if it does not say)."""
    count = getattr(batch, "env_steps", None)
    if callable(count):
        count = count()
    if isinstance(count, (int, np.integer)) and not isinstance(count, bool):
        return int(count)
    return None


def as_columns(batch: Any, field: str = "batch") -> dict[str, np.ndarray]:
    """``batch`` as a plain dict of numpy arrays; a :class:`SchemaError` if it is not a batch."""
    if hasattr(batch, "policy_batches") and not isinstance(batch, Mapping):
        raise SchemaError(field, batch, "a single-policy batch (a mapping of column name to arrays)")
    if not isinstance(batch, Mapping):
        raise SchemaError(field, batch, "a mapping of column name to equal-length arrays (e.g. a SampleBatch)")
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key in IGNORED_COLUMNS:
            continue
        if not isinstance(key, str):
            raise SchemaError(f"{field} key", key, "string column names")
        if isinstance(value, Mapping):
            out[key] = as_columns(value, f"{field}[{key!r}]")
        else:
            try:
                arr = np.asarray(value)
            except (TypeError, ValueError):
                raise SchemaError(key, value, "a numeric array") from None
            if arr.dtype == object:
                raise SchemaError(key, value, "a numeric array (not ragged, not objects)")
            out[key] = arr
    return out


def is_multi_agent(batch: Any) -> bool:
    if hasattr(batch, "policy_batches"):
        return True
    return isinstance(batch, Mapping) and len(batch) > 0 and all(isinstance(v, Mapping) for v in batch.values())


def as_policy_batches(batch: Any) -> dict[Any, dict[str, np.ndarray]]:
    """``{policy_id: columns}``; a plain batch goes to ``"default_policy"``."""
    if hasattr(batch, "policy_batches"):
        batches = batch.policy_batches
    elif is_multi_agent(batch):
        batches = batch
    else:
        return {DEFAULT_POLICY_ID: as_columns(batch)}
    if not isinstance(batches, Mapping):
        raise SchemaError("policy_batches", batches, "a mapping of policy id to batches")
    return {pid: as_columns(b, f"policy_batches[{pid!r}]") for pid, b in batches.items()}
