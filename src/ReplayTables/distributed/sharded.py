"""ShardedReplay: one replay buffer split over many Ray actors (SPEC 6.4).

``max_size`` items in all, split over ``num_shards`` shard actors, each an
engine buffer (prioritized with a :class:`~ReplayTables.PER.PERConfig`, uniform
with ``config=None``). The learner (the process that built the buffer) adds,
samples and updates priorities; actors anywhere in the cluster add straight to
a shard through :meth:`ShardedReplay.writer`.

Ids name their shard (see :mod:`ReplayTables.distributed.tags`). A shard that
dies is left out until Ray has restarted it (see
:mod:`ReplayTables.distributed.health`); the learner carries on with the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.batch import Batch
from ReplayTables.distributed.actors import remote_classes
from ReplayTables.distributed.health import ShardHealth
from ReplayTables.distributed.ray_api import ShardDown, get_one, ray, require_running, unwrap
from ReplayTables.distributed.sampling import global_mass, probabilities, split_sample
from ReplayTables.distributed.shard import ShardReport, ShardSample
from ReplayTables.distributed.tags import MAX_TAG, shard_index
from ReplayTables.distributed.writer import ShardWriter
from ReplayTables.engine.mass import Mass
from ReplayTables.engine.samplers import PrioritizedSampler, check_priorities
from ReplayTables.engine.schema import Schema
from ReplayTables.engine.state_checks import MAX_INT
from ReplayTables.engine.table import check_capacity, check_count, check_ids
from ReplayTables.engine.table_lock import check_timeout
from ReplayTables.engine.weights import importance_weights
from ReplayTables.errors import ConfigError, EmptyBufferError, RateLimitTimeout
from ReplayTables.PER import PERConfig
from ReplayTables.rate_limiters import RateLimiter

__all__ = ["ShardedReplay", "shard_capacities"]

#: How long a learner call waits for a shard's reply before leaving the shard out (seconds).
DEFAULT_SHARD_TIMEOUT = 0.5
#: How often a call the rate limiter holds back asks again (seconds).
RATE_LIMIT_POLL = 0.01


def shard_capacities(max_size: int, num_shards: int) -> list[int]:
    """``max_size`` split over ``num_shards`` as evenly as integers allow (the first ones get one more)."""
    base, extra = divmod(max_size, num_shards)
    return [base + (1 if k < extra else 0) for k in range(num_shards)]


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_INT:
        raise ConfigError("seed", seed, f"an integer from 0 to {MAX_INT}")
    return int(seed)


class ShardedReplay:
    """A replay buffer of ``max_size`` items held by ``num_shards`` Ray actors.

    Args:
        num_shards: how many shard actors (1 to 32767, at most ``max_size``).
        max_size: how many items all shards hold together; shard ``k`` holds
            ``max_size // num_shards`` (the first ``max_size % num_shards`` one more).
        structure: the items' NamedTuple class, dataclass or dict of fields, as for
            one buffer.
        config: a :class:`~ReplayTables.PER.PERConfig` for prioritized replay, or
            ``None`` for uniform replay.
        seed: seeds the learner's sample points and every shard's generator.
        rate_limiter: a :class:`~ReplayTables.rate_limiters.RateLimiter` over the
            whole buffer (see the "Rate limiting" section of the distributed page).
        max_restarts: how many times Ray restarts a shard that died (-1: always).
        shard_timeout: seconds a learner call waits for a shard before leaving it out.
        actor_options: more ``.options()`` for the shard actors (resources,
            ``scheduling_strategy``, ...).

    Needs a running Ray (``ray.init()``); Ray is imported only by this package.
    """

    _checkpoint_has_parts = True

    def __init__(self, num_shards: int, max_size: int, structure: Any = None, config: PERConfig | None = None,
                 seed: int = 0, rate_limiter: RateLimiter | None = None, *, max_restarts: int = -1,
                 shard_timeout: float = DEFAULT_SHARD_TIMEOUT, actor_options: dict[str, Any] | None = None) -> None:
        self._setup(num_shards, max_size, structure, config, seed, rate_limiter, max_restarts, shard_timeout,
                    actor_options)
        self._start([0] * self.num_shards, [None] * self.num_shards)

    def _setup(self, num_shards: Any, max_size: Any, structure: Any, config: Any, seed: Any, rate_limiter: Any,
               max_restarts: Any, shard_timeout: Any, actor_options: Any) -> None:
        max_size = check_capacity("max_size", max_size)
        if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) \
                or not 1 <= num_shards <= min(MAX_TAG, max_size):
            raise ConfigError("num_shards", num_shards, f"an integer from 1 to {min(MAX_TAG, max_size)} "
                                                        f"(at most max_size={max_size}, one item per shard)")
        if config is not None and not isinstance(config, PERConfig):
            raise ConfigError("config", config, "a PERConfig (prioritized replay) or None (uniform replay)")
        if config is not None and config.stratified:
            raise ConfigError("config.stratified", True, "False: a sharded sample draws its points independently "
                                                         "(strata would have to span the shards)")
        if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
            raise ConfigError("rate_limiter", rate_limiter, "a ReplayTables.rate_limiters.RateLimiter or None")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
            raise ConfigError("max_restarts", max_restarts, "an integer >= -1 (-1: restart a dead shard always)")
        if isinstance(shard_timeout, bool) or not isinstance(shard_timeout, (int, float)) \
                or not 0 < shard_timeout < 3600:
            raise ConfigError("shard_timeout", shard_timeout, "a number of seconds in (0, 3600)")
        if rate_limiter is not None and rate_limiter.min_size_to_sample > max_size:
            raise ConfigError("rate_limiter.min_size_to_sample", rate_limiter.min_size_to_sample,
                              f"at most max_size={max_size} (no sample could ever be allowed)")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise ConfigError("actor_options", actor_options, "a dict of Ray actor options or None")
        require_running("ReplayTables.distributed.ShardedReplay")
        self.num_shards = int(num_shards)
        self.max_size = max_size
        self.structure = structure
        # the fields are read from the structure here, where its module is: shards and writers get the
        # schema (a class Ray sends by value may not resolve its annotations over there)
        self._declared = structure if isinstance(structure, Schema) else Schema.from_structure(structure)
        self.config = config
        self.seed = _seed(seed)
        self.rate_limiter = rate_limiter
        self.max_restarts = max_restarts
        self.shard_timeout = float(shard_timeout)
        self.actor_options = dict(actor_options or {})
        self.capacities = shard_capacities(max_size, self.num_shards)
        sequence = np.random.SeedSequence(self.seed)
        learner, *shards = sequence.spawn(self.num_shards + 1)
        self._rng = np.random.default_rng(learner)
        self._shard_rngs = [np.random.default_rng(s) for s in shards]
        # the driver's copy of the priority checks, so a refused update changes no shard
        self._checker = None if config is None else PrioritizedSampler(
            1, priority_exponent=config.priority_exponent, uniform_probability=config.uniform_probability)
        self._next = itertools.count()

    def _start(self, lives: list[int], checkpoints: list[str | None]) -> None:
        shard_cls, ledger_cls = remote_classes()
        name = f"ReplayTables-shard-ledger-{uuid.uuid4().hex}"
        self._ledger = ledger_cls.options(num_cpus=0, name=name).remote(lives, checkpoints)
        options = {"num_cpus": 0, "max_restarts": self.max_restarts, "max_task_retries": 0, **self.actor_options}
        self._actors = [shard_cls.options(**options).remote(k, self.num_shards, self.capacities[k], self._declared,
                                                            self.config, self._shard_rngs[k], name,
                                                            None if self.rate_limiter is None
                                                            else self.rate_limiter.config())
                        for k in range(self.num_shards)]
        r = ray()
        try:
            reports = r.get([a.started.remote() for a in self._actors])
        except r.exceptions.RayTaskError as exc:  # a shard refused its checkpoint
            for a in [*self._actors, self._ledger]:
                r.kill(a, no_restart=True)
            raise unwrap(exc) from None
        self._health = ShardHealth(self._actors, reports)
        self._schema: Any = None
        self._sample_calls = 0

    # ------------------------------------------------------------ shards
    @property
    def actors(self) -> list[Any]:
        """The shard actors' handles (shard ``k`` is ``actors[k]``)."""
        return list(self._actors)

    def _up(self) -> list[int]:
        self._health.poll()
        return self._health.up

    def _route(self, exclude: set[int]) -> int:
        """The up shard with the most free room (by the latest reports); ties go round-robin."""
        up = [k for k in self._up() if k not in exclude]
        if not up:
            raise EmptyBufferError("shards", f"{self.num_shards} shards, none up",
                                   "at least one shard up (Ray is restarting them)")
        start = next(self._next)
        reports = self._health.reports
        return min(up, key=lambda k: (reports[k].size / reports[k].capacity, (k - start) % self.num_shards))

    def _share_max(self) -> None:
        """'max' mode over the whole buffer: a shard whose running maximum is below the largest any shard
        reported is raised to it (fire and forget; it applies before this learner's next call there)."""
        if self.config is None or self.config.new_priority_mode != "max":
            return
        reports = self._health.reports
        up = self._health.up
        top = max((reports[k].max_q for k in up), default=1.0)
        for k in up:
            if reports[k].max_q < top:
                self._actors[k].raise_max.remote(top)
                reports[k] = reports[k]._replace(max_q=top)

    def _call_one(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on a routed shard; a shard that is down is left out and the next one tried.

        A shard whose rate limiter refuses the insert is asked again (any shard) until
        ``timeout`` runs out."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        tried: set[int] = set()
        while True:
            k = self._route(tried)
            try:
                result, report = get_one(getattr(self._actors[k], method).remote(*args), k)
            except ShardDown as down:
                self._health.lost(k, down.cause)
                tried.add(k)
                continue
            except RateLimitTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(RATE_LIMIT_POLL)
                continue
            self._health.heard(k, report)
            self._share_max()
            return result

    # ------------------------------------------------------------ adding
    def add(self, item: Any, /, priority: float | None = None, *, timeout: float | None = None) -> int:
        """Store one item on a shard; returns its (shard-tagged) id. :meth:`writer` is the fast path.

        ``timeout``: how long to wait for the rate limiter (``None``: no limit); then
        :class:`~ReplayTables.errors.RateLimitTimeout`, nothing stored."""
        return int(self._call_one("add", item, priority, timeout=timeout))

    def add_batch(self, items: Any, priorities: Any = None, *, timeout: float | None = None) -> np.ndarray:
        """Store a batch on one shard (the emptiest), all or nothing; returns the tagged ids."""
        ids: np.ndarray = self._call_one("add_batch", items, priorities, timeout=timeout)
        return ids

    def writer(self, shard: int | None = None, batch_size: int = 64, max_in_flight: int = 4,
               timeout: float | None = None) -> ShardWriter:
        """A picklable handle that adds straight to one shard, for Ray tasks and actors.

        Args:
            shard: which shard; ``None`` takes them in turn (one writer per actor spreads
                the actors over the shards).
            batch_size: single ``add`` calls are sent in batches of this many rows.
            max_in_flight: how many batches may be on their way at once.
            timeout: how long a batch the rate limiter holds back is offered again before the
                writer raises :class:`~ReplayTables.errors.RateLimitTimeout` (``None``: no limit).
        """
        if shard is None:
            shard = next(self._next) % self.num_shards
        elif isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) \
                or not 0 <= shard < self.num_shards:
            raise ConfigError("shard", shard, f"None or a shard index from 0 to {self.num_shards - 1}")
        return ShardWriter(self._actors[int(shard)], int(shard), self._declared, batch_size, max_in_flight, timeout)

    # ------------------------------------------------------------ sampling
    @property
    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` uses (annealed as the config says)."""
        return 0.0 if self.config is None else self.config.beta_at(self._sample_calls)

    def sample(self, n: int, *, timeout: float | None = None, beta: float | None = None) -> Batch:
        """``n`` items of the global distribution (with replacement), with global importance weights.

        ``P(i) = (1 - u) q_i / sum of all q + u / total size`` over the shards that are
        up, weights ``(P(i) / P_min) ** -beta`` with the smallest probability of any
        stored item of any shard (all ones for uniform replay). The draws are split
        over the shards by their latest reported mass and sampled in parallel. A
        shard that does not reply within ``shard_timeout`` is left out and the
        sample drawn again from the others. The batch's arrays may be read-only
        (Ray hands out arrays from its object store without copying them).

        ``beta``: this sample's importance-sampling exponent instead of the config's
        (RLlib's ``sample(num_items, beta)``).

        With a rate limiter, waits up to ``timeout`` seconds (``None``: no limit,
        ``0``: never) until it allows ``n`` samples, then raises
        :class:`~ReplayTables.errors.RateLimitTimeout` having changed nothing.
        """
        n = check_count("n", n)
        timeout = check_timeout(timeout)
        if self.rate_limiter is not None and n:
            self._admit_sample(n, timeout)
        if beta is None:
            beta = self.beta
        elif isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < float("inf"):
            raise ConfigError("beta", beta, "a finite number >= 0")
        for attempt in range(self.num_shards + 2):
            up = [k for k in self._up() if self._health.reports[k].size > 0]
            if not up and attempt == 0:  # the latest reports may predate the writers' adds
                self._refresh()
                up = [k for k in self._up() if self._health.reports[k].size > 0]
            if not up:  # every shard with items is down or slow: give them one more timeout to answer
                self._health.wait_for_any(self.shard_timeout)
                up = [k for k in self._up() if self._health.reports[k].size > 0]
            if not up:
                raise EmptyBufferError("size", 0, "at least one stored item on a shard that is up")
            reported = [self._health.reports[k].mass for k in up]
            total = global_mass(reported)
            draws = split_sample(self._rng, n, reported)
            counts = self._counts_after(n)
            refs = {k: self._actors[k].sample_from.remote(d, counts) for k, d in zip(up, draws) if d.n}
            replies = self._gather(refs)
            if replies is None or any(r is None for r in replies.values()):
                continue  # a shard is down or emptied since its report: draw again from the fresh reports
            batch = self._assemble(up[0], replies, dict(zip(up, reported)), total, beta)
            self._share_max()
            self._sample_calls += 1
            if self.rate_limiter is not None and n:
                self.rate_limiter.record_sample(n)
                assert counts is not None
                for k in self._health.up:  # the shards that had no draws hear the new counts too
                    if k not in refs:
                        self._actors[k].note_counts.remote(*counts)
            return batch
        raise EmptyBufferError("shards", "no complete reply", "shards that stay up for the length of a sample")

    # ------------------------------------------------------------ rate limiting
    def _counts_after(self, n: int) -> tuple[int, int, int] | None:
        """``(inserts, samples, size)`` over all shards once this sample of ``n`` is counted."""
        if self.rate_limiter is None:
            return None
        size = sum(self._health.reports[k].size for k in self._health.up)
        return self._health.inserts(), self.rate_limiter.samples + n, size

    def _admit_sample(self, n: int, timeout: float | None) -> None:
        """Return once the limiter allows a sample of ``n`` with the global counts; else RateLimitTimeout."""
        limiter = self.rate_limiter
        assert limiter is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            size = sum(r.size for r in self._refresh() if r is not None)
            limiter.counts[0] = self._health.inserts()
            if limiter.can_sample(n, size):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise RateLimitTimeout("timeout", timeout, f"the rate limiter to allow a sample of {n} item(s) "
                                                           f"with {size} stored over all shards; {limiter!r}")
            time.sleep(RATE_LIMIT_POLL)

    def _gather(self, refs: dict[int, Any]) -> dict[int, Any] | None:
        """Every shard's result, or ``None`` once one of them failed or timed out (it is then down)."""
        r = ray()
        ready, _ = r.wait(list(refs.values()), num_returns=len(refs), timeout=self.shard_timeout)
        out: dict[int, Any] = {}
        if len(ready) == len(refs):  # the common case: every reply in one get (a get per shard costs ~0.1 ms)
            try:
                values = r.get(list(refs.values()))
            except r.exceptions.RayError:
                pass  # one of them failed: sort them out one by one below
            else:
                for k, (result, report) in zip(refs, values):
                    self._health.heard(k, report)
                    out[k] = result
                return out
        ready_set = set(ready)
        complete = True
        for k, ref in refs.items():
            if ref not in ready_set:
                self._health.lost(k, f"no reply within {self.shard_timeout} s")
                complete = False
                continue
            try:
                result, report = get_one(ref, k)
            except ShardDown as down:
                self._health.lost(k, down.cause)
                complete = False
                continue
            self._health.heard(k, report)
            out[k] = result
        return out if complete else None

    def _assemble(self, some_shard: int, replies: dict[int, ShardSample], reported: dict[int, Mass], total: Mass,
                  beta: float) -> Batch:
        if self._schema is None:  # every shard has the same fields (the first add fixed them)
            self._schema = get_one(self._actors[some_shard].schema.remote(), some_shard)
        if not replies:  # n == 0
            empty = np.empty(0)
            return Batch(self._schema, [np.empty((0, *f.shape), f.dtype) for f in self._schema.fields],
                         np.empty(0, dtype=np.int64), empty, empty)
        parts = list(replies.items())
        ids = np.concatenate([s.ids for _, s in parts])
        probs = np.concatenate([probabilities(s.q, reported[k], s.mass, total) for k, s in parts])
        fields = [s.fields for _, s in parts]
        arrays = fields[0] if len(fields) == 1 else [np.concatenate(col) for col in zip(*fields)]
        weights = importance_weights(probs, total.min_probability(), beta)
        return Batch(self._schema, arrays, ids, weights, probs)

    # ------------------------------------------------------------ priorities
    def update_priorities(self, ids: Any, priorities: Any, wait: bool = True) -> int | None:
        """Set new raw priorities, one call per shard holding some of the ids.

        ``ids`` is an id array or a batch. Ids of items since overwritten, or handed
        out by a shard before it restarted, are skipped and counted by their shard
        (``stats()``). All priorities are checked first: a bad one changes no shard.
        ``wait=False`` sends the updates and returns ``None`` at once (fire and forget:
        the shards apply them in order with this learner's later calls).
        Returns the number applied.
        """
        if self.config is None or self._checker is None:
            raise ConfigError("update_priorities", "config=None", "a prioritized buffer (pass a PERConfig): "
                                                                  "uniform replay has no priorities")
        arr = check_ids(getattr(ids, "ids", ids))
        p = check_priorities(priorities, arr.shape[0])
        self._checker.validate(p)
        valid = arr >= 0
        where = shard_index(np.where(valid, arr, 0), self.num_shards)
        refs: dict[int, Any] = {}
        for k in range(self.num_shards):
            mask = valid & (where == k)
            if mask.any():
                refs[k] = self._actors[k].update_priorities.remote(arr[mask], p[mask])
        if not wait:
            return None
        applied = 0
        for k, ref in refs.items():
            try:
                n, report = get_one(ref, k)  # no timeout: a shard compiling its first update is not down
            except ShardDown as down:
                self._health.lost(k, down.cause)
                continue
            self._health.heard(k, report)
            applied += int(n)
        self._share_max()
        return applied

    # ------------------------------------------------------------ reports
    def _refresh(self) -> list[ShardReport | None]:
        """A fresh report from every shard that is up (``None`` for the others)."""
        up = self._up()
        refs = {k: self._actors[k].report.remote() for k in up}
        out: list[ShardReport | None] = [None] * self.num_shards
        r = ray()
        ready, _ = r.wait(list(refs.values()), num_returns=len(refs), timeout=self.shard_timeout)
        ready_set = set(ready)
        for k, ref in refs.items():
            if ref not in ready_set:
                self._health.lost(k, f"no reply within {self.shard_timeout} s")
                continue
            try:
                report = get_one(ref, k)
            except ShardDown as down:
                self._health.lost(k, down.cause)
                continue
            self._health.heard(k, report)
            out[k] = report
        return out

    def size(self) -> int:
        """Items that can be sampled now: the sum over the shards that are up (asks each of them)."""
        return sum(r.size for r in self._refresh() if r is not None)

    def __len__(self) -> int:
        return self.size()

    def stats(self) -> dict[str, Any]:
        """Totals, and per shard: up, size, capacity, priority mass, stale updates, restarts."""
        fresh = self._refresh()
        shards = []
        for k in range(self.num_shards):
            report = self._health.reports[k]
            shards.append({"shard": k, "alive": fresh[k] is not None, "size": report.size if fresh[k] else 0,
                           "capacity": report.capacity, "priority_total": report.priority_total,
                           "added": report.added, "sampled": report.sampled, "stale_updates": report.stale,
                           "restarts": self._health.restarts(k), "life": report.life,
                           "restored_from": report.restored_from, "last_error": self._health.last_error[k]})
        up = [s for s in shards if s["alive"]]
        return {"num_shards": self.num_shards, "shards_up": len(up), "size": sum(s["size"] for s in up),
                "max_size": self.max_size, "added": sum(s["added"] for s in up),
                "stale_updates": sum(s["stale_updates"] for s in up), "shards": shards}

    # ------------------------------------------------------------ checkpoints
    def _init_args(self) -> dict[str, Any]:
        return {"num_shards": self.num_shards, "max_size": self.max_size, "seed": self.seed,
                "config": None if self.config is None else dataclasses.asdict(self.config),
                "max_restarts": self.max_restarts, "shard_timeout": self.shard_timeout,
                "rate_limiter": None if self.rate_limiter is None else self.rate_limiter.config()}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save every shard and a manifest into directory ``path``, atomically as a whole.

        Every shard writes its part into the new snapshot folder (in parallel, from its
        own process: on a cluster ``path`` must be a file system every node sees); the
        snapshot becomes current only once all parts and the manifest are complete.
        A shard that is down cannot be saved: the save is refused (a
        :class:`~ReplayTables.errors.CheckpointError`) and the previous checkpoint stays.
        Later restarts of a shard start from this checkpoint.
        """
        from ReplayTables.distributed.checkpoint import save_sharded

        return save_sharded(self, path)

    @classmethod
    def _from_snapshot(cls, snapshot: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                       structure: Any) -> ShardedReplay:
        from ReplayTables.distributed.checkpoint import load_sharded

        return load_sharded(cls, snapshot, manifest, arrays, structure)

    def close(self) -> None:
        """Stop the shard actors (their items are gone; a saved checkpoint is not)."""
        r = ray()
        for a in [*self._actors, self._ledger]:
            with contextlib.suppress(r.exceptions.RayError, ValueError):  # gone already, or Ray restarted since
                r.kill(a, no_restart=True)

    def __repr__(self) -> str:
        kind = "uniform" if self.config is None else "prioritized"
        return f"ShardedReplay({kind}, num_shards={self.num_shards}, max_size={self.max_size})"


