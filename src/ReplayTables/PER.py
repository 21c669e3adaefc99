"""Front end A: prioritized experience replay (Schaul et al., ICLR 2016).

Stored priority ``q = p ** priority_exponent``; sampling probability
``P(i) = (1 - u) * q_i / sum(q) + u / size`` with ``u = uniform_probability``;
importance weights ``w_i = (size * P(i)) ** -beta`` normalised by the largest
weight any stored item could get. See ``docs/per.md`` for the maths.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.batch import Batch
from ReplayTables.engine.samplers import NEW_PRIORITY_MODES, PrioritizedSampler, Sampler
from ReplayTables.engine.state import Scalars
from ReplayTables.engine.state_checks import MAX_INT, integer, mapping
from ReplayTables.engine.table import check_count
from ReplayTables.engine.validators import number
from ReplayTables.errors import ConfigError
from ReplayTables.rate_limiters import RateLimiter
from ReplayTables.ReplayBuffer import ReplayBuffer

__all__ = ["PERConfig", "PrioritizedReplay"]


@dataclass(frozen=True)
class PERConfig:
    """Prioritized replay settings; every field is optional (defaults follow the paper).

    Attributes:
        new_priority_mode: priority of an item added without one: ``'max'`` (the
            running maximum, so new items are seen soon), ``'mean'`` (the current
            mean), or ``'given'`` (every add must pass ``priority=``).
        uniform_probability: weight of the uniform part of the sampling mixture.
        priority_exponent: ``q = p ** priority_exponent`` (the paper's alpha).
        max_decay: the running maximum decays by this factor at every priority
            setting call, so one outlier does not saturate it for ever (1 = no decay).
        beta: importance-sampling exponent at the start (0.4 in the paper).
        beta_final: where beta is annealed to (1.0 in the paper).
        beta_steps: number of ``sample`` calls over which beta moves linearly from
            ``beta`` to ``beta_final``; ``None`` keeps beta constant.
        stratified: draw the ``n`` samples from ``n`` equal slices of [0, 1) instead
            of independently: each draw still follows ``P`` exactly, but the batch
            covers the priority mass evenly (lower variance), and the number of
            uniform-mixture draws is ``n * uniform_probability`` rounded up or down
            rather than binomial.
    """

    new_priority_mode: str = "max"
    uniform_probability: float = 1e-3
    priority_exponent: float = 0.5
    max_decay: float = 1.0
    beta: float = 0.4
    beta_final: float = 1.0
    beta_steps: int | None = None
    stratified: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> PERConfig:
        # a misspelt setting must not silently fall back to its default
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError("PERConfig", unknown, f"only the settings {sorted(known)}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if self.new_priority_mode not in NEW_PRIORITY_MODES:
            raise ConfigError("new_priority_mode", self.new_priority_mode, f"one of {NEW_PRIORITY_MODES}")
        for name, lo, hi in (("uniform_probability", 0.0, 1.0), ("priority_exponent", 0.0, math.inf),
                             ("max_decay", 0.0, 1.0), ("beta", 0.0, math.inf), ("beta_final", 0.0, math.inf)):
            number(name, getattr(self, name), lo, hi)
        if self.beta_steps is not None and (isinstance(self.beta_steps, bool)
                                            or not isinstance(self.beta_steps, int) or self.beta_steps < 1):
            raise ConfigError("beta_steps", self.beta_steps, "None or a positive integer")
        if not isinstance(self.stratified, bool):
            raise ConfigError("stratified", self.stratified, "True or False")

    def beta_at(self, step: int) -> float:
        """Beta after ``step`` sample calls (linear annealing, then constant)."""
        if self.beta_steps is None:
            return self.beta
        frac = min(1.0, step / self.beta_steps)
        return self.beta + (self.beta_final - self.beta) * frac


class PrioritizedReplay(ReplayBuffer):
    """Replay buffer that samples items in proportion to their priorities.

    Args:
        max_size, structure, rng, rate_limiter, shared: as for :class:`~ReplayTables.ReplayBuffer.ReplayBuffer`.
        config: a :class:`PERConfig`; ``None`` uses the paper's defaults.
    """

    def __init__(self, max_size: int, structure: Any = None, rng: np.random.Generator | int | None = None,
                 config: PERConfig | None = None, *, rate_limiter: RateLimiter | None = None,
                 shared: bool = False) -> None:
        if config is None:
            config = PERConfig()
        if not isinstance(config, PERConfig):
            raise ConfigError("config", config, "a PERConfig or None")
        self.config = config
        self._calls = Scalars("frontend.sample_calls", [0], np.int64)  # samples so far: beta anneals with them
        super().__init__(max_size, structure, rng, rate_limiter=rate_limiter, shared=shared)

    def _bind_state(self) -> None:
        self._calls.bind(self._table.arena)

    @property
    def _sample_calls(self) -> int:
        return int(self._calls.view[0])

    @_sample_calls.setter
    def _sample_calls(self, value: int) -> None:
        self._calls.view[0] = value

    def _make_sampler(self, max_size: int) -> Sampler:
        c = self.config
        return PrioritizedSampler(max_size, priority_exponent=c.priority_exponent,
                                  uniform_probability=c.uniform_probability,
                                  new_priority_mode=c.new_priority_mode, max_decay=c.max_decay,
                                  stratified=c.stratified)

    @property
    def _sampler(self) -> PrioritizedSampler:
        sampler = self._table.sampler
        assert isinstance(sampler, PrioritizedSampler)
        return sampler

    # ------------------------------------------------------------ checkpoint
    def _init_args(self) -> dict[str, Any]:
        return {"max_size": self._table.capacity, "config": dataclasses.asdict(self.config), **self._limiter_init()}

    @classmethod
    def _construct(cls, init: dict[str, Any], structure: Any, rng: np.random.Generator) -> PrioritizedReplay:
        return cls(init["max_size"], structure, rng, PERConfig(**init["config"]), rate_limiter=cls._limiter_arg(init))

    def _frontend_state(self) -> dict[str, Any]:
        return {"sample_calls": self._sample_calls}

    def _check_frontend_state(self, state: Any) -> int:
        m = mapping("frontend", state, (), ("sample_calls",))
        return integer("frontend.sample_calls", m.get("sample_calls", 0), 0, MAX_INT)

    def _restore_frontend_state(self, checked: int) -> None:
        self._sample_calls = checked

    @classmethod
    def _check_init(cls, init: Any) -> dict[str, Any]:
        m = dict(mapping("init", init, ("max_size", "config"), ("rate_limiter",)))
        mapping("init.config", m["config"], closed=False)  # its keys and values are PERConfig's to check
        return cls._check_limiter_init(m)

    # ------------------------------------------------------------ writing
    def add(self, item: Any, /, priority: float | None = None, *, timeout: float | None = None) -> int:
        """Store one item; ``priority`` (raw, before the exponent) is required in 'given' mode.

        ``timeout``: as for :meth:`ReplayBuffer.add <ReplayTables.ReplayBuffer.ReplayBuffer.add>`.
        """
        if self._plain and timeout is None:  # the table's add holds the lock itself
            fast = self._table._add_fast  # the generated lane, called straight (see ReplayBuffer.add)
            if fast is not None and priority is None:
                new_id: int = fast(item)
                return new_id
            return self._table.add(item, priority)
        return self._add_admitted(item, priority, timeout)

    def add_batch(self, items: Any, priorities: Any = None, *, timeout: float | None = None) -> np.ndarray:
        """Store a batch; ``priorities`` is one raw priority per item (or ``None``)."""
        return self._add_batch(items, priorities, timeout)

    def update_priorities(self, ids: Any, priorities: Any) -> int:
        """Set new raw priorities for sampled items.

        ``ids`` is an id array or a :class:`Batch`. Ids whose items have since been
        overwritten or deleted are skipped (never touching the newcomer in their
        slot) and counted in ``stats()['stale_updates']``. Returns the number applied.
        """
        if isinstance(ids, Batch):
            ids = ids.ids
        return self._table.update_priorities(ids, priorities)  # one call of the table: it holds the lock itself

    @atomic
    def priorities(self, ids: Any) -> np.ndarray:
        """Stored priorities ``q = p ** priority_exponent`` of live items."""
        _, slots = self._table.locate(ids)
        stored: np.ndarray = self._sampler.tree.get(slots)
        return stored

    @property
    def max_priority(self) -> float:
        """The running maximum of stored priorities ``q`` used by 'max' mode."""
        return self._sampler.max_q

    # ------------------------------------------------------------ reading
    @property
    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` will use."""
        return self.config.beta_at(self._sample_calls)

    def sample(self, n: int, *, timeout: float | None = None) -> Batch:
        """``n`` items drawn in proportion to priority, with importance weights.

        ``timeout``: as for :meth:`ReplayBuffer.sample <ReplayTables.ReplayBuffer.ReplayBuffer.sample>`.
        """
        with self._lock:  # beta and the count of samples it anneals with change with this sample, atomically
            if self._plain and timeout is None:  # nothing to wait for or count (see ReplayBuffer.sample)
                s = self._table.sample(n, beta=self.config.beta_at(self._sample_calls))
                self._sample_calls += 1
                return self._batch(s)
            n = check_count("n", n)
            self._admission.sample(n, timeout)
            s = self._table.sample(n, beta=self.beta)
            self._sample_calls += 1
            self._admission.sampled(len(s.ids))
            return self._batch(s)

    @atomic
    def get(self, ids: Any) -> Batch:
        return self._batch(self._table.get(ids, beta=self.beta))
