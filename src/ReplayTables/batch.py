"""Batches: what ``sample`` and ``get`` of every front-end-A buffer hand back (one place for them).

:class:`Batch` (``ReplayBuffer``, ``PrioritizedReplay``): each field of the
user's structure is an attribute holding the stacked array (leading axis =
batch), next to ``ids`` (int64 item ids, to pass back to ``update_priorities``)
and ``weights`` (importance-sampling weights; ones for uniform replay).
``batch.data`` is an instance of the user's own structure.
:class:`TransitionBatch` and :class:`SequenceBatch` are what the step-stream
buffer (``TrajectoryReplay``) samples. The RLlib front end's batches are RLlib's
own types (``ReplayTables.rllib.batches``).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ReplayTables.engine.schema import Schema

if TYPE_CHECKING:
    from ReplayTables.interop import FrameworkBatch

__all__ = ["Batch", "FieldBatch", "SequenceBatch", "TransitionBatch"]


class FieldBatch:
    """The field plumbing a batch and its framework conversions share.

    One attribute per field of the structure (nested dicts become nested dicts),
    ``ids`` (numpy int64), ``weights`` and ``probabilities``, plus ``data``, ``fields``,
    ``len`` and iteration over the field arrays in schema order.
    """

    ids: np.ndarray
    weights: Any
    probabilities: Any

    def __init__(self, schema: Schema, arrays: list[Any], ids: np.ndarray, weights: Any,
                 probabilities: Any = None) -> None:
        self._schema = schema
        self._arrays = arrays
        self.ids = ids
        self.weights = weights
        self.probabilities = probabilities
        if schema.fields is None:
            return  # nothing stored yet (an empty ``get``): no field arrays to show
        if schema.kind == "dict":
            self.__dict__.update(schema.build(arrays))
        else:
            for f, a in zip(schema.fields, arrays):
                self.__dict__[f.path[0]] = a

    @property
    def data(self) -> Any:
        """The fields as an instance of the buffer's structure (NamedTuple, dataclass or dict)."""
        return self._schema.build(self._arrays)

    @property
    def fields(self) -> dict[str, Any]:
        """Flat mapping of field name (``a/b`` for nested dicts) to array."""
        if self._schema.fields is None:
            return {}
        return {f.name: a for f, a in zip(self._schema.fields, self._arrays)}

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self) -> Iterator[Any]:
        return iter(self._arrays)

    def _label(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.fields.items())
        return f"{self._label()}(n={len(self)}, {parts})"


class Batch(FieldBatch):
    """Stacked fields of sampled items plus their ``ids`` and ``weights``."""

    weights: np.ndarray

    def to_torch(self, device: Any = None) -> FrameworkBatch:
        """The fields, ``weights``, ``probabilities`` and ``ids`` (int64, on the CPU) as torch tensors.

        On the CPU (``device=None``) the tensors share memory with this batch; see
        :mod:`ReplayTables.interop` for when a copy happens. torch is imported here,
        not at ``import ReplayTables``; without it this raises a ConfigError naming
        the extra to install (``pip install 'ReplayTables[torch]'``).
        """
        from ReplayTables.interop import to_torch

        return to_torch(self, device)

    def to_jax(self) -> FrameworkBatch:
        """The fields, ``weights`` and ``probabilities`` as JAX CPU arrays (``ids`` stay numpy).

        Each strided field is copied once into an aligned buffer that JAX adopts
        through DLPack; see :mod:`ReplayTables.interop`. JAX is imported here (a
        ConfigError naming ``pip install 'ReplayTables[jax]'`` without it).
        """
        from ReplayTables.interop import to_jax

        return to_jax(self)


@dataclass
class TransitionBatch:
    """Sampled transitions. The learner's target is ``returns + discount * V(next_obs)``.

    ``obs`` / ``next_obs`` are ``[B, *obs_shape]``, or ``[B, k, *obs_shape]`` with
    ``frame_stack=k`` (oldest frame first). ``next_obs`` is the bootstrap
    observation ``steps`` steps ahead; ``discount`` is ``gamma ** steps``, or 0
    when the window ended by termination; ``terminated`` / ``truncated`` say how
    the window ended (both False when it ran ``n_step`` steps). ``reward`` is the
    first step's reward; ``returns`` the n-step discounted return (equal to
    ``reward`` for ``n_step=1``).
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    returns: np.ndarray
    discount: np.ndarray
    steps: np.ndarray
    extras: dict[str, np.ndarray]
    ids: np.ndarray
    weights: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class SequenceBatch:
    """Sampled windows, each ``[B, burn_in + T, ...]``; ``mask`` is False on padding steps."""

    obs: np.ndarray
    next_obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    extras: dict[str, np.ndarray]
    mask: np.ndarray
    burn_in: int

    def __len__(self) -> int:
        return int(self.mask.shape[0])
