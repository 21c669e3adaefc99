"""Batch: what ``sample`` and ``get`` hand back.

Each field of the user's structure is an attribute holding the stacked array
(leading axis = batch), next to ``ids`` (int64 item ids, to pass back to
``update_priorities``) and ``weights`` (importance-sampling weights; ones for
uniform replay). ``batch.data`` is an instance of the user's own structure.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ReplayTables.engine.schema import Schema

__all__ = ["Batch"]


class Batch:
    """Stacked fields of sampled items plus their ``ids`` and ``weights``."""

    ids: np.ndarray
    weights: np.ndarray

    def __init__(self, schema: Schema, arrays: list[np.ndarray], ids: np.ndarray, weights: np.ndarray,
                 probabilities: np.ndarray | None = None) -> None:
        self._schema = schema
        self._arrays = arrays
        self.ids = ids
        self.weights = weights
        self.probabilities = probabilities
        assert schema.fields is not None
        if schema.kind == "dict":
            nested = schema.build(arrays)
            self.__dict__.update(nested)
        else:
            for f, a in zip(schema.fields, arrays):
                self.__dict__[f.path[0]] = a

    @property
    def data(self) -> Any:
        """The sampled fields as an instance of the buffer's structure (NamedTuple, dataclass or dict)."""
        return self._schema.build(self._arrays)

    @property
    def fields(self) -> dict[str, np.ndarray]:
        """Flat mapping of field name (``a/b`` for nested dicts) to array."""
        assert self._schema.fields is not None
        return {f.name: a for f, a in zip(self._schema.fields, self._arrays)}

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._arrays)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.fields.items())
        return f"Batch(n={len(self)}, {parts})"
