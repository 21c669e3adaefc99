"""Batch: what ``sample`` and ``get`` hand back.

Each field of the user's structure is an attribute holding the stacked array
(leading axis = batch), next to ``ids`` (int64 item ids, to pass back to
``update_priorities``) and ``weights`` (importance-sampling weights; ones for
uniform replay). ``batch.data`` is an instance of the user's own structure.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ReplayTables.engine.schema import Schema

if TYPE_CHECKING:
    from ReplayTables.interop import FrameworkBatch

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
        if schema.fields is None:
            return  # nothing stored yet (an empty ``get``): no field arrays to show
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
        if self._schema.fields is None:
            return {}
        return {f.name: a for f, a in zip(self._schema.fields, self._arrays)}

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._arrays)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.fields.items())
        return f"Batch(n={len(self)}, {parts})"

    def to_torch(self, device: Any = None) -> FrameworkBatch:
        """The fields, ``weights`` and ``probabilities`` as torch tensors (``ids`` stay numpy).

        On the CPU (``device=None``) the tensors share memory with this batch; see
        :mod:`ReplayTables.interop` for when a copy happens. torch is imported here,
        not at ``import ReplayTables``.
        """
        from ReplayTables.interop import to_torch

        return to_torch(self, device)

    def to_jax(self) -> FrameworkBatch:
        """The fields, ``weights`` and ``probabilities`` as JAX CPU arrays (``ids`` stay numpy).

        Each strided field is copied once into an aligned buffer that JAX adopts
        through DLPack; see :mod:`ReplayTables.interop`. JAX is imported here.
        """
        from ReplayTables.interop import to_jax

        return to_jax(self)
