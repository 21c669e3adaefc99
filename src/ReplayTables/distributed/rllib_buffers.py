"""RLlib's ``num_shards`` key: an RLlib-API replay buffer of timesteps on a :class:`ShardedReplay`.

``from_config({"type": "PrioritizedReplayBuffer", "capacity": ..., "alpha": 0.6, "num_shards": 4})``
(:func:`ReplayTables.rllib.from_config`) builds a :class:`ShardedTimestepBuffer`:
the same calls as the local ``ReplayTables.rllib.ReplayBuffer`` /
``PrioritizedReplayBuffer`` of timesteps (``add(batch)``, ``sample(num_items,
beta)`` with ``weights`` and ``batch_indexes`` columns, ``update_priorities``,
``len``, ``stats``), with the rows held by ``num_shards`` Ray actors and sampled
by global priority. The sampling is RLlib's: ``P(i) = p_i^alpha / sum_j p_j^alpha``
(no uniform part), new rows get the largest priority seen, a ``weights`` column
of an added batch is its rows' initial priorities (worker-side prioritization),
and weights are normalised by the buffer-wide largest weight.

Inside RLlib's own loop the key arrives as a constructor keyword instead:
``MultiAgentReplayBuffer(num_shards=4)`` / ``MultiAgentPrioritizedReplayBuffer(num_shards=4)``
stay those classes (RLlib's ``isinstance`` checks and attribute reads hold) and give
every policy a :class:`ShardedTimestepBuffer` built with ``lazy=True``: no actor starts
until the policy's first ``add`` (RLlib builds a throwaway buffer to validate its
config, and building the local buffer must not need Ray to be running yet).

Only timestep storage is sharded: sequences, episodes and fragments keep whole
items together, and the mix-in buffer mixes a local batch in; those refuse
``num_shards > 1`` by name.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.distributed.sharded import ShardedReplay
from ReplayTables.errors import ConfigError, PriorityError, SchemaError
from ReplayTables.PER import PERConfig

__all__ = ["ShardedTimestepBuffer", "sharded_from_config"]


class ShardedTimestepBuffer:
    """RLlib's (prioritized) replay buffer API over ``num_shards`` Ray actors, one row per timestep.

    Args:
        num_shards: how many shard actors.
        capacity: timesteps held in all.
        alpha: the priority exponent; ``None`` gives uniform replay (``ReplayBuffer``).
        seed: seeds the sample points and the shards.
        beta: the default ``beta`` of :meth:`sample`.
        lazy: start the shard actors on first use (``add``, ``sample``, ``writer``,
            ``update_priorities``) instead of now; ``len`` and ``stats`` of a buffer
            not started yet report it empty without starting it.
        **options: more :class:`ShardedReplay` keyword arguments (``shard_timeout``, ...).

    ``stats()`` adds this driver's counts, RLlib's names: ``added_count`` (rows
    added), ``sampled_count`` (rows sampled) and ``priority_updates`` (updates the
    shards applied); ``started`` says whether the actors run.
    """

    def __init__(self, num_shards: int, capacity: int = 10000, alpha: float | None = None, seed: int | None = None,
                 *, beta: float = 0.4, lazy: bool = False, **options: Any) -> None:
        from ReplayTables.rllib.prioritized_replay_buffer import check_number

        self.alpha = alpha
        self.beta = check_number("beta", beta, 0.0)
        self.num_shards = num_shards
        self.capacity = capacity
        self.seed = seed
        self._options = options
        self._config = None if alpha is None else PERConfig(priority_exponent=alpha, uniform_probability=0.0)
        self._buffer: ShardedReplay | None = None
        self._fields: set[str] | None = None   # the columns of the first batch stored
        self.added_count = 0
        self.sampled_count = 0
        self.priority_updates = 0
        if not lazy:
            self._start()

    def _start(self) -> ShardedReplay:
        if self._buffer is None:
            self._buffer = ShardedReplay(self.num_shards, self.capacity, None, self._config,
                                         0 if self.seed is None else self.seed, **self._options)
        return self._buffer

    @property
    def buffer(self) -> ShardedReplay:
        """The :class:`ShardedReplay` holding the rows (started now if it was not)."""
        return self._start()

    @property
    def started(self) -> bool:
        """Whether the shard actors have been started."""
        return self._buffer is not None

    @property
    def prioritized(self) -> bool:
        return self.alpha is not None

    def check(self, batch: Any, **kwargs: Any) -> None:
        """Refuse on the driver, storing nothing, what :meth:`add` would refuse for its shape: extra
        arguments, columns of unequal length, other columns than this buffer's first batch had, bad
        initial priorities (a multi-agent buffer checks every policy's part before it adds any)."""
        self._columns(batch, kwargs)

    def _columns(self, batch: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
        from ReplayTables.rllib.batches import as_columns

        if kwargs:
            raise ConfigError("add()", sorted(kwargs), "no extra arguments")
        columns = dict(as_columns(batch))
        priorities = columns.pop("weights", None) if self.prioritized else None
        lengths = {k: _rows(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise SchemaError("batch", lengths, "the same leading length for every column")
        if self._fields is not None and set(columns) != self._fields:
            raise SchemaError("batch", sorted(columns), f"the columns of this buffer's first batch "
                                                        f"{sorted(self._fields)}")
        if priorities is not None:
            try:
                priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise PriorityError("weights", priorities, "numbers (the rows' initial priorities)") from None
            n = next(iter(lengths.values()), 0)
            if priorities.shape[0] != n:
                raise PriorityError("weights", priorities.shape[0], f"one initial priority per row ({n})")
            if not (np.isfinite(priorities) & (priorities >= 0)).all():
                raise PriorityError("weights", priorities[~(np.isfinite(priorities) & (priorities >= 0))][:4].tolist(),
                                    "finite priorities >= 0")
        return columns, priorities

    def add(self, batch: Any, **kwargs: Any) -> np.ndarray:
        """Store every row of ``batch`` (a SampleBatch or dict of columns) on one shard; returns their ids."""
        columns, priorities = self._columns(batch, kwargs)
        ids = self.buffer.add_batch(columns, priorities)
        self._fields = set(columns)
        self.added_count += len(ids)
        return ids

    def sample(self, num_items: int, beta: float | None = None, **kwargs: Any) -> Any:
        """``num_items`` timesteps of the global distribution (``weights``, ``batch_indexes`` when prioritized)."""
        from ReplayTables.rllib.batches import SampleBatch

        if kwargs:
            raise ConfigError("sample()", sorted(kwargs), "only num_items and beta")
        if beta is None:
            beta = self.beta
        batch = self.buffer.sample(num_items, beta=beta if self.prioritized else None)
        self.sampled_count += len(batch.ids)
        out = SampleBatch(batch.fields)
        if self.prioritized:
            out["weights"] = batch.weights
            out["batch_indexes"] = batch.ids
        return out

    def update_priorities(self, batch_indexes: Any, priorities: Any) -> int:
        """New raw priorities by id (``batch_indexes`` of a sample); stale ids skipped and counted by their shard."""
        applied = self.buffer.update_priorities(batch_indexes, priorities)
        assert applied is not None
        self.priority_updates += applied
        return applied

    def writer(self, **kwargs: Any) -> Any:
        """A :class:`~ReplayTables.distributed.ShardWriter` for rollout workers (dicts of columns)."""
        return self.buffer.writer(**kwargs)

    def __len__(self) -> int:
        return 0 if self._buffer is None else self._buffer.size()

    def stats(self, debug: bool = False) -> dict[str, Any]:
        if self._buffer is None:
            out: dict[str, Any] = {"num_shards": self.num_shards, "shards_up": 0, "size": 0,
                                   "max_size": self.capacity, "added": 0, "stale_updates": 0, "shards": []}
        else:
            out = self._buffer.stats()
        out.update(started=self._buffer is not None, added_count=self.added_count,
                   sampled_count=self.sampled_count, priority_updates=self.priority_updates)
        return out

    def close(self) -> None:
        """Stop the shard actors, if they were started."""
        if self._buffer is not None:
            self._buffer.close()


def _rows(value: Any) -> int:
    """A column's leading length (a nested column: its first field's)."""
    if isinstance(value, Mapping):
        return _rows(next(iter(value.values()))) if value else 0
    return int(np.shape(value)[0]) if np.ndim(value) else 1


#: keys of a ``replay_buffer_config`` a sharded buffer takes (besides ``type`` and ``num_shards``)
_KEYS = {"capacity", "storage_unit", "alpha", "seed"}


def sharded_from_config(cls: type, num_shards: int, config: Mapping[str, Any]) -> ShardedTimestepBuffer:
    """The sharded buffer ``{"type": cls, "num_shards": num_shards, **config}`` asks for."""
    from ReplayTables.rllib import PrioritizedReplayBuffer, ReplayBuffer

    if cls not in (ReplayBuffer, PrioritizedReplayBuffer):
        raise ConfigError("num_shards", num_shards, f"1 for {cls.__name__} (sharded over Ray: ReplayBuffer and "
                                                    "PrioritizedReplayBuffer of timesteps)")
    allowed = _KEYS if cls is PrioritizedReplayBuffer else _KEYS - {"alpha"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError("replay_buffer_config", unknown, f"only {sorted(allowed)} for a sharded {cls.__name__}")
    unit = config.get("storage_unit", "timesteps")
    if getattr(unit, "value", unit) != "timesteps":
        raise ConfigError("storage_unit", unit, "'timesteps' with num_shards > 1 (an item of another unit spans "
                                                "rows that must stay on one shard)")
    alpha = config.get("alpha", 1.0) if cls is PrioritizedReplayBuffer else None
    return ShardedTimestepBuffer(num_shards, config.get("capacity", 10000), alpha, config.get("seed"))
