"""RLlib's ``PrioritizedReplayBuffer`` on the engine's sum-tree sampler.

One priority per *item* (a timestep, a sequence, an episode or a fragment), so
prioritized replay of sequences (R2D2) works. Stored priority ``p ** alpha``;
new items get the largest priority seen; ``sample(num_items, beta)`` adds the
importance ``weights`` (normalised by the largest weight any stored item could
get, as RLlib does) and ``batch_indexes`` (item ids, repeated over an item's rows).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.engine.samplers import PrioritizedSampler, Sampler
from ReplayTables.errors import ConfigError, PriorityError
from ReplayTables.rllib.replay_buffer import ReplayBuffer
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["PrioritizedReplayBuffer"]


def check_number(name: str, value: Any, lo: float, hi: float = math.inf) -> float:
    """``value`` as a float if it is a finite real number in ``[lo, hi]`` (``inf`` and NaN are refused:
    ``alpha=inf`` makes every stored priority 0 or inf, ``beta=inf`` every weight 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or not (lo <= float(value) <= hi):
        raise ConfigError(name, value, f"a finite number in [{lo}, {hi}]")
    return float(value)


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016) over items.

    Args:
        capacity, storage_unit, replay_sequence_length, replay_burn_in,
        replay_zero_init_states, seed: as for :class:`ReplayBuffer`.
        alpha: priority exponent (0 = uniform, 1 = fully proportional).
        beta: default ``beta`` of :meth:`sample` (RLlib passes ``beta`` from an
            underlying buffer config to the constructor).

    A ``weights`` column in an added batch is the items' initial priority (the
    mean over an item's rows; worker-side prioritization) and is not stored.
    """

    _prioritized = True

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps",
                 alpha: float = 1.0, beta: float = 0.4, **kwargs: Any) -> None:
        self.alpha = check_number("alpha", alpha, 0.0)
        self.beta = check_number("beta", beta, 0.0)
        super().__init__(capacity, storage_unit, **kwargs)

    def _make_sampler(self) -> Sampler:
        return PrioritizedSampler(self.capacity, priority_exponent=self.alpha, uniform_probability=0.0,
                                  new_priority_mode="max")

    @classmethod
    def _sampler_class(cls) -> type[Sampler]:
        return PrioritizedSampler

    @property
    def _sampler(self) -> PrioritizedSampler:
        sampler = self._table.sampler
        assert isinstance(sampler, PrioritizedSampler)
        return sampler

    def _consumed_columns(self) -> tuple[str, ...]:
        return ("seq_lens", "weights")

    def _init_args(self) -> dict[str, Any]:
        return {**super()._init_args(), "alpha": self.alpha, "beta": self.beta}

    def _priorities(self, plan: Any, columns: dict[str, np.ndarray], kwargs: dict[str, Any]) -> Any:
        weight = kwargs.pop("weight", None)
        if kwargs:
            raise ConfigError("add()", sorted(kwargs), "only weight= (initial priorities)")
        m = plan.lengths.shape[0]
        if weight is not None:
            w = np.asarray(weight, dtype=np.float64) if not isinstance(weight, str) else weight
            if isinstance(w, np.ndarray) and w.ndim == 0:
                w = np.full(m, float(w))
            return w
        if "weights" in columns:
            w = np.asarray(columns["weights"])
            if w.dtype.kind not in "fiub" or w.ndim != 1:
                raise PriorityError("weights", w, "a 1-d numeric column of initial priorities")
            w = w.astype(np.float64)
            if plan.rows is not None:
                w = w[plan.rows]
            if m == 0:
                return None
            starts = np.concatenate([[0], np.cumsum(plan.lengths)[:-1]])
            return np.add.reduceat(w, starts) / plan.lengths
        return None

    def sample(self, num_items: int, beta: float | None = None, **kwargs: Any) -> Any:
        """``num_items`` items in proportion to priority, with ``weights`` and ``batch_indexes``.

        ``beta`` defaults to the constructor's.
        """
        return super().sample(num_items, beta=beta, **kwargs)

    def _sample(self, num_items: int, beta: float | None = None, **kwargs: Any) -> Any:
        if kwargs:
            raise ConfigError("sample()", sorted(kwargs), "only num_items and beta")
        beta = self.beta if beta is None else check_number("beta", beta, 0.0)
        s = self._table.sample(num_items, beta, read=self._read)  # ids and their rows in one call
        ids, weights = s.ids, s.weights
        batch, rows = s.data
        if rows.shape[0] == batch.count:  # one row per item
            batch["weights"] = weights
            batch["batch_indexes"] = ids
        else:
            batch["weights"] = np.repeat(weights, rows)
            batch["batch_indexes"] = np.repeat(ids, rows)
        return self._finish(batch)

    @atomic
    def update_priorities(self, batch_indexes: Any, priorities: Any) -> int:
        """Set new raw priorities of items by id (``batch_indexes`` of a sample).

        Ids repeated over an item's rows are fine (the last value of an item wins;
        pass one priority per item for R2D2-style sequence priorities). Ids of
        items evicted or deleted since the sample are skipped and counted in
        ``stats()['stale_updates']``. Negative, NaN or infinite priorities raise
        :class:`~ReplayTables.PriorityError` and change nothing. Returns how many
        updates were applied.
        """
        applied = self._table.update_priorities(batch_indexes, priorities)
        self._rllib.priority_updates += applied
        return applied

    @atomic
    def priorities(self, ids: Any) -> np.ndarray:
        """Stored priorities ``p ** alpha`` of items by id."""
        _, slots = self._table.locate(ids)
        result: np.ndarray = self._sampler.tree.get(slots).copy()
        return result

    @atomic
    def stats(self, debug: bool = False) -> dict[str, Any]:
        out = super().stats(debug)
        out["priority_updates"] = self._rllib.priority_updates
        out["max_priority"] = self._sampler.max_q
        out["total_priority"] = self._sampler.tree.total
        return out
