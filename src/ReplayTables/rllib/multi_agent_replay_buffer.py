"""RLlib's ``MultiAgentReplayBuffer``: one underlying buffer per policy id.

Underlying buffers are created on a policy's first batch from
``underlying_buffer_config``: its ``type`` (default :class:`ReplayBuffer`), its
constructor arguments (defaults: this buffer's ``capacity``, ``storage_unit`` and
sequence settings) and default call arguments of ``sample`` (e.g. ``beta``).
``"independent"`` mode samples ``num_items`` per policy (or from one, with
``policy_id=``); ``"lockstep"`` stores whole multi-agent steps in one buffer
(every policy batch must then have the same number of rows).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic, new_lock
from ReplayTables.checkpoint import class_name, resolve_class
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.state_checks import MAX_INT, as_checkpoint_error, integer, mapping
from ReplayTables.engine.table import MAX_COUNT
from ReplayTables.errors import CheckpointError, ConfigError, ReplayTablesError, SchemaError
from ReplayTables.rllib.batches import MultiAgentBatch, SampleBatch, as_policy_batches, env_steps_of
from ReplayTables.rllib.checkpointable import Checkpointable, same_json
from ReplayTables.rllib.config import (
    check_keys,
    constructor_params,
    method_params,
    normalise,
    resolve_type,
)
from ReplayTables.rllib.ray_interop import register_with_rllib, to_rllib
from ReplayTables.rllib.replay_buffer import ReplayBuffer, _check_sequence_args
from ReplayTables.rllib.rllib_keys import check_rllib_keys
from ReplayTables.rllib.storage_unit import StorageUnit

__all__ = ["ALL_POLICIES", "MultiAgentReplayBuffer", "ReplayMode"]

ALL_POLICIES = "__all__"
REPLAY_MODES = ("independent", "lockstep")
#: More policies than this in one saved state is not a real run.
MAX_POLICIES = 100_000
ReplayMode = REPLAY_MODES


class LockstepBatch:
    """A multi-agent batch on its way to the lockstep buffer: one item per env step
    (``storage_unit="timesteps"``) or one item for the whole batch (``"fragments"``)."""

    def __init__(self, policy_batches: dict[Any, Any], env_steps: int | None, per_step: bool) -> None:
        self.policy_batches = policy_batches
        self.env_steps = env_steps
        self.per_step = per_step


class MultiAgentReplayBuffer(Checkpointable):
    """A replay buffer per policy, created on first use (see module docstring).

    Args:
        capacity: timesteps per underlying buffer.
        storage_unit: as for :class:`ReplayBuffer`.
        replay_mode: ``"independent"`` or ``"lockstep"``.
        replay_sequence_length: sequence length in rows, burn-in included
            (``storage_unit="sequences"``); 1 means "as given by ``seq_lens``".
        replay_burn_in: leading steps before each sequence from the same episode.
        replay_zero_init_states: zero ``state_in_*`` columns of sampled sequences.
        underlying_buffer_config: ``type`` + constructor and ``sample`` arguments
            of the underlying buffers (``underlying_replay_buffer_config`` is an alias).
        seed: seeds the underlying buffers (policy ``k`` in creation order gets ``seed + k``).
        replay_sequence_override: sequences only: ``True`` (RLlib's default) cuts
            added batches along their ``seq_lens``; ``False`` ignores ``seq_lens`` and
            cuts each episode into chunks of ``replay_sequence_length - replay_burn_in``.
        rllib_config: the other keys of RLlib's ``replay_buffer_config``
            (see :mod:`ReplayTables.rllib.rllib_keys`). ``num_shards=N > 1`` keeps the
            class and puts each policy's rows on ``N`` Ray shard actors (a
            :class:`~ReplayTables.distributed.rllib_buffers.ShardedTimestepBuffer`),
            started at the policy's first ``add`` (RLlib's own loop passes the key
            here; its config check builds a buffer it drops, which starts nothing).
            Timesteps in independent mode with the default underlying class only;
            ``get_state`` / ``set_state`` / ``save`` are then refused.

    As in RLlib, ``replay_sequence_length > 1`` with a storage unit other than
    ``"sequences"`` is ignored with a warning; in lockstep mode ``capacity``
    counts env steps (the table holds ``capacity`` times the number of policies
    of the first batch in agent steps); sampling a buffer with nothing stored
    returns an empty ``MultiAgentBatch``.

    Every public call is atomic: it holds this buffer's own lock around its calls of
    the per-policy buffers (each of which holds its own), so threads may share it.
    """

    _default_type: type = ReplayBuffer

    def __init__(self, capacity: int | None = None, storage_unit: str | StorageUnit = "timesteps",
                 replay_mode: str = "independent", replay_sequence_length: int = 1, replay_burn_in: int = 0,
                 replay_zero_init_states: bool = True, underlying_buffer_config: Mapping[str, Any] | None = None,
                 seed: int | None = None, replay_sequence_override: bool = True, **rllib_config: Any) -> None:
        self._lock = new_lock()
        if "underlying_replay_buffer_config" in rllib_config:
            if underlying_buffer_config is not None:
                raise ConfigError("underlying_replay_buffer_config", rllib_config["underlying_replay_buffer_config"],
                                  "only one of it and its alias 'underlying_buffer_config'")
            underlying_buffer_config = rllib_config.pop("underlying_replay_buffer_config")
        capacity = check_rllib_keys(type(self), rllib_config, capacity, prioritized=self._prioritized,
                                    shardable=self._shardable)
        num_shards = int(rllib_config.get("num_shards", 1))
        self.capacity = 10000 if capacity is None else capacity
        capacity = self.capacity
        self.storage_unit = StorageUnit.of(storage_unit)
        if not isinstance(replay_sequence_override, (bool, np.bool_)):
            raise ConfigError("replay_sequence_override", replay_sequence_override, "True or False")
        self.replay_sequence_override = bool(replay_sequence_override)
        if self.storage_unit is not StorageUnit.SEQUENCES and replay_sequence_length != 1 \
                and not isinstance(replay_sequence_length, bool) and isinstance(replay_sequence_length, int) \
                and replay_sequence_length > 1 and not replay_burn_in:
            warnings.warn(f"replay_sequence_length={replay_sequence_length} is ignored with storage_unit="
                          f"{self.storage_unit.value!r} (as RLlib does); use storage_unit='sequences'", stacklevel=2)
            replay_sequence_length = 1
        if replay_mode not in REPLAY_MODES:
            raise ConfigError("replay_mode", replay_mode, f"one of {REPLAY_MODES}")
        self.replay_mode = replay_mode
        if self.replay_mode == "lockstep" and self.storage_unit not in (StorageUnit.TIMESTEPS, StorageUnit.FRAGMENTS):
            raise ConfigError("storage_unit", self.storage_unit.value,
                              "'timesteps' or 'fragments' in lockstep mode (a lockstep item is a multi-agent step "
                              "or batch; episodes and sequences are per policy)")
        self.replay_sequence_length = replay_sequence_length
        self.replay_burn_in = replay_burn_in
        self.replay_zero_init_states = replay_zero_init_states
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError("seed", seed, "None or a non-negative integer (numpy's seeds are)")
        self.seed = seed
        cfg = normalise(underlying_buffer_config or {}, "underlying_buffer_config")
        underlying = resolve_type(cfg.pop("type", self._default_type), "underlying_buffer_config.type")
        self._check_underlying_type(underlying)
        self._underlying_type: type[ReplayBuffer] = underlying
        ctor_names = constructor_params(self._underlying_type)
        call_names = method_params(self._underlying_type, "sample") - {"num_items"}
        check_keys(self._underlying_type, cfg, ctor_names | call_names, "underlying_buffer_config")
        self.underlying_call_args = {k: v for k, v in cfg.items() if k in call_names and k not in ctor_names}
        ctor: dict[str, Any] = {"capacity": capacity, "storage_unit": self.storage_unit.value}
        seq = _check_sequence_args(int(capacity), self.storage_unit,
                                   None if replay_sequence_length == 1 and not replay_burn_in
                                   else replay_sequence_length, replay_burn_in)
        if seq is not None:
            ctor.update(replay_sequence_length=seq, replay_burn_in=replay_burn_in,
                        replay_zero_init_states=replay_zero_init_states)
        ctor.update({k: v for k, v in cfg.items() if k in ctor_names})
        self.underlying_ctor_args = ctor
        self._underlying_config = {"type": self._underlying_type, **cfg}
        if num_shards > 1:
            self._check_sharded(num_shards, int(capacity), ctor)
        #: how many Ray shard actors hold each policy's rows (1: a local buffer per policy)
        self.num_shards = num_shards
        self.replay_buffers: dict[Any, Any] = {}
        self._make_underlying(ALL_POLICIES)  # constructor errors surface now, not at first add
        self._num_added = 0
        register_with_rllib()

    _prioritized = False
    #: whether ``num_shards > 1`` puts the policies' rows on Ray shards (a subclass that
    #: changes how items are stored or sampled sets False)
    _shardable = True

    # ------------------------------------------------------------ underlying buffers
    def _check_underlying_type(self, cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, ReplayBuffer)):
            raise ConfigError("underlying_buffer_config.type", cls, "a ReplayTables.rllib.ReplayBuffer subclass")

    def _check_sharded(self, num_shards: int, capacity: int, ctor: dict[str, Any]) -> None:
        """Refuse, before anything is built, what the sharded storage cannot hold."""
        if self.storage_unit is not StorageUnit.TIMESTEPS:
            raise ConfigError("storage_unit", self.storage_unit.value,
                              f"'timesteps' with num_shards={num_shards} (an item of another unit spans rows that "
                              "must stay on one shard)")
        if self.replay_mode != "independent":
            raise ConfigError("replay_mode", self.replay_mode,
                              f"'independent' with num_shards={num_shards} (a lockstep item is a whole multi-agent "
                              "step)")
        if self._underlying_type is not self._default_type:
            raise ConfigError("underlying_buffer_config.type", self._underlying_type.__name__,
                              f"{self._default_type.__name__} with num_shards={num_shards} (the shards hold plain "
                              "timesteps; a subclass's own storage or sampling would not run there)")
        extra = sorted(set(ctor) - {"capacity", "storage_unit", "alpha", "beta", "seed"})
        if extra:
            raise ConfigError("underlying_buffer_config", extra,
                              f"only capacity, alpha, seed and beta with num_shards={num_shards}")
        if num_shards > capacity:
            raise ConfigError("num_shards", num_shards, f"at most capacity={capacity} (one row per shard at least)")
        from ReplayTables.distributed.ray_api import ray

        ray()  # Ray must be importable now (the actors start on first add, when it must be running)

    def _make_underlying(self, policy_id: Any, pending: int = 0, agents: int = 1) -> Any:
        ctor = dict(self.underlying_ctor_args)
        if "seed" not in ctor and self.seed is not None:
            ctor["seed"] = int(self.seed) + len(self.replay_buffers) + pending
        if agents > 1:  # lockstep: capacity counts env steps of `agents` agent steps each
            ctor["capacity"] = int(ctor["capacity"]) * agents
        if self.num_shards > 1:  # the policy's rows on Ray shards, started at its first add
            from ReplayTables.distributed.rllib_buffers import ShardedTimestepBuffer

            return ShardedTimestepBuffer(self.num_shards, int(ctor["capacity"]), ctor.get("alpha"),
                                         ctor.get("seed"), beta=ctor.get("beta", 0.4), lazy=True)
        return self._underlying_type(**ctor)

    @property
    def sharded(self) -> bool:
        """Whether the policies' rows live on Ray shard actors (``num_shards > 1``)."""
        return self.num_shards > 1

    def close(self) -> None:
        """Stop the shard actors of every policy (``num_shards > 1``); nothing to do for local buffers."""
        for buf in self.replay_buffers.values():
            close = getattr(buf, "close", None)
            if callable(close):
                close()

    def _key(self, policy_id: Any) -> Any:
        return ALL_POLICIES if self.replay_mode == "lockstep" else policy_id

    def _route(self, batch: Any) -> dict[Any, Any]:
        """``{buffer key: batch}`` for an added (single- or multi-agent) batch."""
        pbs = as_policy_batches(batch)
        if self.replay_mode == "lockstep":
            per_step = self.storage_unit is StorageUnit.TIMESTEPS
            return {ALL_POLICIES: LockstepBatch(pbs, env_steps_of(batch), per_step)}
        if self.storage_unit is StorageUnit.SEQUENCES and not self.replay_sequence_override:
            pbs = {pid: {k: v for k, v in cols.items() if k != "seq_lens"} for pid, cols in pbs.items()}
        for pid in pbs:
            if not isinstance(pid, (str, int)) or isinstance(pid, bool):
                raise SchemaError("policy_id", pid, "a str or int policy id")
        return pbs

    # ------------------------------------------------------------ add / sample
    @atomic
    def add(self, batch: Any, **kwargs: Any) -> dict[Any, np.ndarray]:
        """Route ``batch`` to the policies' buffers; returns ``{policy_id: item ids}``.

        Every policy batch is checked before any is stored, so a bad one leaves
        the whole buffer unchanged.
        """
        routed = self._route(batch)
        buffers: dict[Any, Any] = {}  # ReplayBuffer, or ShardedTimestepBuffer with num_shards > 1
        for key, pb in routed.items():
            buf = self.replay_buffers.get(key)
            if buf is None:
                agents = len(pb.policy_batches) if isinstance(pb, LockstepBatch) and pb.per_step else 1
                buf = self._make_underlying(key, pending=sum(k not in self.replay_buffers for k in buffers),
                                            agents=agents)
            buf.check(pb, **kwargs)
            buffers[key] = buf
        out = {}
        for key, pb in routed.items():
            buf = buffers[key]
            try:
                out[key] = buf.add(pb, **kwargs)
            except BaseException:
                # a new policy's buffer whose add failed is not kept: with num_shards > 1 its shards
                # start in that add (and need a running Ray), so a refused start leaves no trace
                if key not in self.replay_buffers and callable(getattr(buf, "close", None)):
                    buf.close()
                raise
            self.replay_buffers.setdefault(key, buf)
        self._num_added += _count(batch)
        return out

    def _call_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.underlying_call_args, **kwargs}

    def _policies(self, policy_id: Any) -> list[Any]:
        if self.replay_mode == "lockstep":
            if policy_id is not None:
                raise ConfigError("policy_id", policy_id, "None in lockstep mode (items are whole multi-agent steps)")
            keys = [ALL_POLICIES] if ALL_POLICIES in self.replay_buffers else []
        elif policy_id is not None:
            if policy_id not in self.replay_buffers:
                raise SchemaError("policy_id", policy_id,
                                  f"one of the policies seen so far {list(self.replay_buffers)}")
            keys = [policy_id]
        else:
            keys = list(self.replay_buffers)
        return keys

    @atomic
    def sample(self, num_items: int, policy_id: Any = None, **kwargs: Any) -> Any:
        """``num_items`` items from each policy's buffer (or from ``policy_id``'s only).

        A ``MultiAgentBatch`` (RLlib's when Ray is importable); an empty one when
        nothing is stored, as RLlib returns.
        """
        keys = [k for k in self._policies(policy_id) if len(self.replay_buffers[k])]
        args = self._call_args(kwargs)
        return to_rllib(self._as_multi_agent({k: _sample_of(self.replay_buffers[k], num_items, args) for k in keys}))

    def _as_multi_agent(self, samples: dict[Any, Any]) -> Any:
        """Per-policy samples as one multi-agent batch (RLlib counts the sum of their steps)."""
        if self.replay_mode == "lockstep":
            return next(iter(samples.values())) if samples else MultiAgentBatch({}, 0)
        batches = {k: (v if isinstance(v, SampleBatch) else SampleBatch(dict(v))) for k, v in samples.items()}
        return MultiAgentBatch(batches, sum(b.count for b in batches.values()))

    # ------------------------------------------------------------ size, stats, state
    @atomic
    def __len__(self) -> int:
        """Items over all policies."""
        return sum(len(b) for b in self.replay_buffers.values())

    @atomic
    def stats(self, debug: bool = False) -> dict[str, Any]:
        return {"num_policies": len(self.replay_buffers), "num_entries": len(self),
                "policies": {str(k): b.stats(debug) for k, b in self.replay_buffers.items()}}

    def _init_args(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self._underlying_config.items() if k != "type"}
        cfg["type"] = class_name(self._underlying_type)
        return {"capacity": self.capacity, "storage_unit": self.storage_unit.value, "replay_mode": self.replay_mode,
                "replay_sequence_length": self.replay_sequence_length, "replay_burn_in": self.replay_burn_in,
                "replay_zero_init_states": self.replay_zero_init_states, "underlying_buffer_config": cfg,
                "seed": self.seed, **({"num_shards": self.num_shards} if self.sharded else {})}

    def set_state(self, state: dict[str, Any]) -> None:
        """As :meth:`Checkpointable.set_state`; refused (nothing changes) when ``num_shards > 1``."""
        self._refuse_if_sharded("set its state")
        super().set_state(state)

    def _refuse_if_sharded(self, what: str) -> None:
        if self.sharded:
            raise CheckpointError("num_shards", self.num_shards,
                                  f"1 to {what} (this buffer's rows live in Ray shard actors: save each policy's "
                                  "ShardedReplay, replay_buffers[policy_id].buffer.save(path), instead)")

    def _state_dict(self) -> dict[str, Any]:
        self._refuse_if_sharded("get or save its state")
        policies = []
        for key, buf in self.replay_buffers.items():
            with buf._lock:
                policies.append({"policy_id": key, "init": buf._init_args(), "state": buf._state_dict()})
        return {"policies": policies, "num_added": self._num_added, **self._extra_state()}

    def _check_state_dict(self, state: Any, where: str = "state") -> tuple[dict[Any, ReplayBuffer], int, Any]:
        """Every policy's saved buffer checked and built into a new buffer (this one is not touched),
        then the extra state against the new policy ids."""
        self._refuse_if_sharded("set its state")
        m = mapping(where, state, ("policies",), ("num_added", *self._extra_state()))
        num_added = integer(f"{where}.num_added", m.get("num_added", 0), 0, MAX_INT)
        entries = m["policies"]
        if not isinstance(entries, list) or len(entries) > MAX_POLICIES:
            raise CheckpointError(f"{where}.policies", entries, f"a list of at most {MAX_POLICIES} policy states")
        capacity = integer("capacity", self.underlying_ctor_args.get("capacity"), 1, MAX_COUNT)
        check_allocation(f"{where}.policies", f"{len(entries)} policies",
                         len(entries) * self._underlying_type.nbytes_for(capacity),
                         f"{len(entries)} buffers of {capacity} timesteps", error=CheckpointError)
        buffers: dict[Any, ReplayBuffer] = {}
        for i, entry in enumerate(entries):
            here = f"{where}.policies[{i}]"
            e = mapping(here, entry, ("policy_id", "init", "state"))
            pid = e["policy_id"]
            if isinstance(pid, bool) or not isinstance(pid, (str, int)) or (isinstance(pid, str) and len(pid) > 1000) \
                    or (isinstance(pid, int) and not -MAX_INT <= pid <= MAX_INT):
                raise CheckpointError(f"{here}.policy_id", pid, "a str or int policy id")
            if self.replay_mode == "lockstep" and pid != ALL_POLICIES:
                raise CheckpointError(f"{here}.policy_id", pid, f"{ALL_POLICIES!r} (lockstep mode keeps one buffer)")
            if pid in buffers:
                raise CheckpointError(f"{here}.policy_id", pid, "a policy id no other entry has")
            init = self._check_underlying_init(e["init"], f"{here}.init")
            self._underlying_type._check_before_construction(init, e["state"], f"{here}.state", f"{here}.init")
            try:
                buf = self._underlying_type._from_init(init)
            except ReplayTablesError as exc:  # a saved argument the constructor refuses
                raise as_checkpoint_error(exc, f"{here}.init") from None
            buf._restore_state(buf._check_state_dict(e["state"], f"{here}.state"))  # a new buffer: nothing shared
            buffers[pid] = buf
        return buffers, num_added, self._check_extra_state(dict(m), list(buffers))

    def _check_underlying_init(self, init: Any, where: str) -> dict[str, Any]:
        """An underlying buffer's saved arguments: its class's parameters, with every argument this
        buffer gives its underlying buffers equal to what it gives (only ``seed`` differs per policy)."""
        m = self._underlying_type._check_init(init, where)
        for key, value in self.underlying_ctor_args.items():
            if key == "capacity" and self.replay_mode == "lockstep" and isinstance(m.get(key), int) \
                    and m[key] > 0 and m[key] % value == 0:
                continue  # lockstep: capacity env steps times the agents per step
            if key != "seed" and not same_json(m.get(key), value):
                raise CheckpointError(f"{where}.{key}", m.get(key), f"{value!r} (what this buffer gives its "
                                                                   "underlying buffers)")
        seed = m.get("seed")
        if seed is not None:
            integer(f"{where}.seed", seed, 0, MAX_INT)
        return m

    def _restore_state(self, checked: tuple[dict[Any, ReplayBuffer], int, Any]) -> None:
        buffers, num_added, extra = checked
        self.replay_buffers = buffers
        self._num_added = num_added
        self._load_extra_state(extra)

    @classmethod
    def _from_init(cls, init: dict[str, Any]) -> Any:
        """A buffer from saved arguments; the underlying ``type`` named in them comes from the registry
        of buffer classes (never from an import of the name)."""
        args = dict(init)
        cfg = args.get("underlying_buffer_config")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("type"), str):
            args["underlying_buffer_config"] = {**cfg, "type": resolve_class(cfg["type"],
                                                                             "init.underlying_buffer_config.type")}
        return cls(**args)

    @classmethod
    def _check_before_construction(cls, init: dict[str, Any], state: Any, where: str = "state",
                                   init_where: str = "init") -> None:
        """The buffer built from ``init`` holds one underlying buffer from the start: its memory first."""
        capacity = integer(f"{init_where}.capacity", init.get("capacity", 10000), 1, MAX_COUNT)
        check_allocation(f"{init_where}.capacity", capacity, ReplayBuffer.nbytes_for(capacity),
                         f"a buffer of {capacity} timesteps", error=CheckpointError)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(replay_mode={self.replay_mode!r}, storage_unit={self.storage_unit.value!r}, "
                f"policies={list(self.replay_buffers)}, items={len(self)})")


def _count(batch: Any) -> int:
    """RLlib's ``batch.count``: env steps of a multi-agent batch, rows of a single one."""
    steps = env_steps_of(batch) if hasattr(batch, "policy_batches") else None
    if steps is not None:
        return steps
    return max((SampleBatch(b).count for b in as_policy_batches(batch).values()), default=0)


def _sample_of(buffer: Any, num_items: int, args: dict[str, Any]) -> Any:
    """An underlying buffer's sample: through its ``sample`` if a subclass overrides it (the hook
    users write), else straight from ``_sample`` (our own batch types, converted once by the caller)."""
    if (getattr(type(buffer).sample, "__module__", None) or "").startswith("ReplayTables.rllib."):
        return buffer._sample(num_items, **args)
    return buffer.sample(num_items, **args)
