"""RLlib's ``MultiAgentPrioritizedReplayBuffer``: a prioritized buffer per policy.

``update_priorities({policy_id: (batch_indexes, td_errors)})`` stores
``|td_error| + eps``. A ``weights`` column in an added batch is its items'
initial priority (worker-side prioritization). Works with sequences: one
priority per sequence (R2D2), which RLlib refuses.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.errors import ConfigError, PriorityError, SchemaError
from ReplayTables.rllib.multi_agent_replay_buffer import ALL_POLICIES, MultiAgentReplayBuffer
from ReplayTables.rllib.prioritized_replay_buffer import PrioritizedReplayBuffer, check_number
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["MultiAgentPrioritizedReplayBuffer"]


class MultiAgentPrioritizedReplayBuffer(MultiAgentReplayBuffer):
    """Per-policy prioritized replay.

    Args:
        prioritized_replay_alpha: ``alpha`` of the underlying buffers.
        prioritized_replay_beta: default ``beta`` of their ``sample`` calls.
        prioritized_replay_eps: added to ``|td_error|`` in :meth:`update_priorities`.
        Others as for :class:`MultiAgentReplayBuffer`; the underlying ``type``
        must be a :class:`PrioritizedReplayBuffer` (or subclass). ``alpha`` and
        ``beta`` (RLlib config keys) are accepted as aliases of
        ``prioritized_replay_alpha`` / ``prioritized_replay_beta``.

    ``stats()["priority_updates"]`` counts the priority updates applied, per
    policy (``stats()["policies"][policy]["priority_updates"]``) and in all.
    """

    _default_type = PrioritizedReplayBuffer
    _prioritized = True

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps",
                 replay_mode: str = "independent", replay_sequence_length: int = 1, replay_burn_in: int = 0,
                 replay_zero_init_states: bool = True, underlying_buffer_config: Mapping[str, Any] | None = None,
                 prioritized_replay_alpha: float = 0.6, prioritized_replay_beta: float = 0.4,
                 prioritized_replay_eps: float = 1e-6, seed: int | None = None, **rllib_config: Any) -> None:
        for alias, name in (("alpha", "prioritized_replay_alpha"), ("beta", "prioritized_replay_beta")):
            if alias in rllib_config:
                value = rllib_config.pop(alias)
                given = prioritized_replay_alpha if alias == "alpha" else prioritized_replay_beta
                default = 0.6 if alias == "alpha" else 0.4
                if given != default and given != value:
                    raise ConfigError(alias, value, f"the same value as {name}={given} (an alias), or only one")
                if alias == "alpha":
                    prioritized_replay_alpha = value
                else:
                    prioritized_replay_beta = value
        self.prioritized_replay_alpha = check_number("prioritized_replay_alpha", prioritized_replay_alpha, 0.0)
        self.prioritized_replay_beta = check_number("prioritized_replay_beta", prioritized_replay_beta, 0.0)
        self.prioritized_replay_eps = check_number("prioritized_replay_eps", prioritized_replay_eps, 0.0)
        if underlying_buffer_config is None and "underlying_replay_buffer_config" in rllib_config:
            underlying_buffer_config = rllib_config.pop("underlying_replay_buffer_config")
        if not isinstance(underlying_buffer_config or {}, Mapping):
            raise ConfigError("underlying_buffer_config", underlying_buffer_config, "a dict (type and arguments)")
        cfg = dict(underlying_buffer_config or {})
        if "underlying_replay_buffer_config" in cfg:
            cfg["underlying_buffer_config"] = cfg.pop("underlying_replay_buffer_config")
        cfg.setdefault("alpha", prioritized_replay_alpha)
        cfg.setdefault("beta", prioritized_replay_beta)
        super().__init__(capacity, storage_unit, replay_mode, replay_sequence_length, replay_burn_in,
                         replay_zero_init_states, cfg, seed, **rllib_config)

    def _check_underlying_type(self, cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, PrioritizedReplayBuffer)):
            raise ConfigError("underlying_buffer_config.type", getattr(cls, "__name__", cls),
                              "a PrioritizedReplayBuffer (sub)class: priorities cannot be updated otherwise")

    def _init_args(self) -> dict[str, Any]:
        out = super()._init_args()
        out.update(prioritized_replay_alpha=self.prioritized_replay_alpha,
                   prioritized_replay_beta=self.prioritized_replay_beta,
                   prioritized_replay_eps=self.prioritized_replay_eps)
        return out

    @atomic
    def update_priorities(self, prio_dict: Mapping[Any, tuple[Any, Any]]) -> int:
        """Apply ``{policy_id: (batch_indexes, td_errors)}``; stores ``|td| + eps``.

        All entries are checked first (unknown policy, mismatched lengths, NaN or
        inf errors), so a bad one changes nothing. Stale indexes are skipped and
        counted. Returns the number of updates applied.
        """
        if not isinstance(prio_dict, Mapping):
            raise SchemaError("prio_dict", prio_dict, "a dict {policy_id: (batch_indexes, td_errors)}")
        plan = []
        for pid, entry in prio_dict.items():
            key = ALL_POLICIES if self.replay_mode == "lockstep" else pid
            if key not in self.replay_buffers:
                raise SchemaError("policy_id", pid, f"one of the policies seen so far {list(self.replay_buffers)}")
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise SchemaError(f"prio_dict[{pid!r}]", entry, "a pair (batch_indexes, td_errors)")
            idx = np.asarray(entry[0])
            try:
                td = np.asarray(entry[1], dtype=np.float64)
            except (TypeError, ValueError):
                raise PriorityError("td_errors", entry[1], "numbers") from None
            if idx.ndim != 1 or td.shape != idx.shape:
                raise PriorityError("td_errors", td,
                                    f"one td error per batch index ({idx.shape[0] if idx.ndim else 0})")
            if idx.size and idx.dtype.kind not in "iu":
                raise SchemaError("batch_indexes", idx, "integer item ids from a sample's 'batch_indexes'")
            if not np.isfinite(td).all():
                raise PriorityError("td_errors", td[~np.isfinite(td)][:4].tolist(), "finite numbers")
            plan.append((key, idx, np.abs(td) + self.prioritized_replay_eps))
        applied = 0
        for key, idx, prio in plan:
            buf = self.replay_buffers[key]   # a PrioritizedReplayBuffer, or its rows on shards (num_shards > 1)
            assert isinstance(buf, PrioritizedReplayBuffer) or self.sharded
            applied += buf.update_priorities(idx, prio)
        return applied

    def stats(self, debug: bool = False) -> dict[str, Any]:
        """As :meth:`MultiAgentReplayBuffer.stats`, plus ``priority_updates`` (all policies)."""
        out = super().stats(debug)
        out["priority_updates"] = sum(int(p.get("priority_updates", 0)) for p in out["policies"].values())
        return out
