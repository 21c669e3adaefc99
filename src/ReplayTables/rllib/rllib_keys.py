"""The keys of RLlib's ``replay_buffer_config`` that RLlib passes to every buffer constructor.

RLlib's old stack builds a buffer as ``Type(**replay_buffer_config)``: every key of
the config arrives as a keyword, whether the class uses it or not (RLlib's own
classes swallow the rest with ``**kwargs``). DQN's default config, for example,
carries ``prioritized_replay_alpha`` even when the user picks a uniform buffer.
So every buffer of this package accepts the keys below with RLlib's meaning,
and still refuses any other unknown key by name (RLlib would swallow a typo).

* ``type``: must name this class (or one it derives from).
* ``num_shards``: an integer >= 1. ``MultiAgentReplayBuffer`` and
  ``MultiAgentPrioritizedReplayBuffer`` of timesteps (independent mode, the default
  underlying class) take more: each policy's rows then live on that many Ray shard
  actors, started at the policy's first ``add``
  (:mod:`ReplayTables.distributed.rllib_buffers`); ``from_config`` builds them the
  same way. Every other class built directly takes 1 only; ``from_config`` with more
  builds ``ReplayBuffer`` / ``PrioritizedReplayBuffer`` of timesteps as a
  :class:`~ReplayTables.distributed.rllib_buffers.ShardedTimestepBuffer`.
* ``capacity_ts``: older RLlib spelling of ``capacity``.
* ``learning_starts``, ``num_steps_sampled_before_learning_starts``,
  ``replay_buffer_shards_colocated_with_driver``, ``no_local_replay_buffer``:
  read by the algorithm, not the buffer (their types are checked).
* ``worker_side_prioritization``: read by the algorithm; a prioritized buffer
  always takes a ``weights`` column as initial priorities, as RLlib's does;
  ``True`` on a uniform buffer is an error, as in RLlib.
* ``metrics_num_episodes_for_smoothing``: a new-stack metrics window; old-stack
  buffers keep no episode metrics.
* ``prioritized_replay_alpha`` / ``_beta`` / ``_eps``, ``alpha``, ``beta``: the
  prioritized buffers' settings; ignored by uniform ones.
* ``replay_sequence_override``, ``replay_sequence_length``, ``replay_burn_in``,
  ``replay_zero_init_states``, ``replay_mode``, ``underlying_buffer_config``:
  multi-agent settings; a single-agent buffer without such an argument ignores them.

Not a key of RLlib's: ``shared`` and ``columns``. The single-agent ring buffers
(``ReplayBuffer``, ``PrioritizedReplayBuffer``, ``FifoReplayBuffer``) take them as
arguments (shared memory, see docs/shared-memory.md); the multi-agent buffers refuse
``shared=`` by name with the reason (they make one table per policy as policies
appear, so nothing can be laid out in shared memory up front), pointing at the
single-agent buffers and at ``ReplayTables.ReplayBuffer`` / ``PrioritizedReplay``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.errors import ConfigError

__all__ = ["ALGORITHM_KEYS", "IGNORED_BY_UNIFORM", "RLLIB_KEYS", "check_rllib_keys"]

#: Keys the algorithm reads; a buffer only checks their type.
ALGORITHM_KEYS = frozenset({"learning_starts", "num_steps_sampled_before_learning_starts",
                            "replay_buffer_shards_colocated_with_driver", "no_local_replay_buffer",
                            "metrics_num_episodes_for_smoothing"})

#: Keys a class without the matching argument ignores (RLlib's classes swallow them).
IGNORED_BY_UNIFORM = frozenset({"prioritized_replay_alpha", "prioritized_replay_beta", "prioritized_replay_eps",
                                "alpha", "beta", "replay_sequence_override", "replay_sequence_length",
                                "replay_burn_in", "replay_zero_init_states", "replay_mode",
                                "underlying_buffer_config", "underlying_replay_buffer_config"})

RLLIB_KEYS = ALGORITHM_KEYS | IGNORED_BY_UNIFORM | {"type", "num_shards", "capacity_ts",
                                                    "worker_side_prioritization"}


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, value, f"an integer >= {lo}")


def check_rllib_keys(cls: type, options: Mapping[str, Any], capacity: Any, *, prioritized: bool,
                     shardable: bool = False) -> Any:
    """Check the RLlib keys given to ``cls``'s constructor; returns the capacity to use.

    An unknown key raises :class:`~ReplayTables.ConfigError` naming it. ``shardable``:
    ``cls`` builds its storage on Ray shards for ``num_shards > 1`` (it checks the rest).
    """
    if "shared" in options:  # ours, not RLlib's: refused with the reason rather than as an unknown key
        raise ConfigError("shared", options["shared"],
                          f"no shared argument for {cls.__name__}: a multi-agent buffer makes one table per "
                          "policy as policies appear, so it cannot be laid out in shared memory up front; share "
                          "a single-agent ReplayBuffer or PrioritizedReplayBuffer (shared=True, columns=...) or "
                          "ReplayTables.ReplayBuffer or PrioritizedReplay (shared=True) between processes instead "
                          "(docs/shared-memory.md)")
    unknown = sorted(k for k in options if k not in RLLIB_KEYS)
    if unknown:
        raise ConfigError(f"{cls.__name__}()", unknown,
                          "its own arguments or keys of RLlib's replay_buffer_config (see ReplayTables.rllib."
                          "rllib_keys)")
    if "type" in options:
        from ReplayTables.rllib.config import resolve_type

        named = resolve_type(options["type"])
        if not (isinstance(named, type) and issubclass(cls, named)):
            raise ConfigError("type", options["type"], f"{cls.__name__} (the class being built) or a base of it")
    if "num_shards" in options:
        _check_int("num_shards", options["num_shards"], 1)
        if options["num_shards"] != 1 and not shardable:
            raise ConfigError("num_shards", options["num_shards"],
                              f"1 for {cls.__name__} (one local buffer); MultiAgentReplayBuffer and "
                              "MultiAgentPrioritizedReplayBuffer take more (their policies' rows on Ray shards), "
                              "and ReplayTables.rllib.from_config with num_shards > 1 builds ReplayBuffer / "
                              "PrioritizedReplayBuffer of timesteps on Ray shards (ReplayTables.distributed)")
    for key in ALGORITHM_KEYS - {"replay_buffer_shards_colocated_with_driver", "no_local_replay_buffer"}:
        if key in options:
            _check_int(key, options[key], 1 if key == "metrics_num_episodes_for_smoothing" else 0)
    for key in ("replay_buffer_shards_colocated_with_driver", "no_local_replay_buffer", "worker_side_prioritization",
                "replay_sequence_override"):
        if key in options and not isinstance(options[key], (bool, np.bool_)):
            raise ConfigError(key, options[key], "True or False")
    if options.get("worker_side_prioritization") and not prioritized:
        raise ConfigError("worker_side_prioritization", True,
                          f"False for {cls.__name__}: worker-side priorities need a prioritized buffer")
    if "capacity_ts" in options:
        if capacity is not None and capacity != options["capacity_ts"]:
            raise ConfigError("capacity_ts", options["capacity_ts"],
                              f"the same value as capacity={capacity} (it is its older name), or only one of them")
        return options["capacity_ts"]
    return capacity
