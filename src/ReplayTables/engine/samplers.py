"""Samplers: which slots a sample returns, and with what probability.

A sampler hears about inserts, priority updates and deletes (by slot) and
answers ``sample(n, rng, directory) -> (slots, probabilities)``. It never
touches stored data. :class:`UniformSampler` keeps no state; the
:class:`PrioritizedSampler` keeps a :class:`~ReplayTables.engine.sumtree.SumTree`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ReplayTables.engine.ids import SlotDirectory
from ReplayTables.engine.state import Arena, Scalars
from ReplayTables.engine.state_checks import mapping, number
from ReplayTables.engine.sumtree import SumTree
from ReplayTables.errors import ConfigError, PriorityError

__all__ = ["PrioritizedSampler", "Sampler", "UniformSampler", "check_priorities", "priority_array"]

_FLOAT64 = np.dtype(np.float64)


def priority_array(priorities: Any, n: int, field: str = "priorities") -> np.ndarray:
    """``priorities`` as a contiguous float64[n] (a scalar applies to all); values are not checked."""
    if type(priorities) is np.ndarray and priorities.dtype is _FLOAT64 and priorities.shape == (n,) \
            and priorities.flags.c_contiguous:
        return priorities  # the common case: nothing to convert
    try:
        raw = np.asarray(priorities)
    except (TypeError, ValueError):
        raise PriorityError(field, priorities, f"{n} non-negative finite numbers") from None
    if raw.dtype.kind not in "iuf":  # strings ("4"), bools and objects are not priorities
        raise PriorityError(field, priorities, f"{n} non-negative finite numbers (got dtype {raw.dtype})")
    p = np.ascontiguousarray(raw, dtype=np.float64)
    if p.ndim == 0:
        p = np.full(n, float(p))
    if p.shape != (n,):
        raise PriorityError(field, priorities, f"{n} priorities, one per id (got shape {p.shape})")
    return p


def check_priorities(priorities: Any, n: int, field: str = "priorities") -> np.ndarray:
    """``priorities`` as float64[n]; a :class:`PriorityError` if any is negative, NaN or inf."""
    p = priority_array(priorities, n, field)
    if n and not (np.isfinite(p).all() and (p >= 0).all()):
        bad = p[~(np.isfinite(p) & (p >= 0))]
        raise PriorityError(field, bad[:4].tolist(), "non-negative finite numbers (no NaN, inf or < 0)")
    return p


class Sampler:
    name = "sampler"
    #: does the sampler need priorities at all (so the front end may skip them)?
    prioritized = False
    #: must every insert come with a priority?
    requires_priority = False

    def bind(self, arena: Arena) -> None:
        """Keep the sampler's scalars in ``arena`` (see ``state.py``); a uniform sampler has none."""

    def validate(self, priorities: np.ndarray, field: str = "priorities") -> None:
        """Refuse checked raw priorities this sampler cannot store (called before any change)."""

    def on_insert(self, slots: np.ndarray, priorities: np.ndarray | None, directory: SlotDirectory) -> None:
        """``slots`` now hold new items; ``priorities`` are raw (validated) or ``None``."""

    def on_update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """New raw priorities for live ``slots`` (validated)."""

    def on_delete(self, slots: np.ndarray) -> None:
        """``slots`` no longer hold items."""

    def sample(self, n: int, rng: np.random.Generator, directory: SlotDirectory) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def probabilities(self, slots: np.ndarray, directory: SlotDirectory) -> np.ndarray:
        raise NotImplementedError

    def sample_weighted(self, n: int, rng: np.random.Generator, directory: SlotDirectory,
                        beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`sample`, plus importance weights for exponent ``beta``."""
        slots, probs = self.sample(n, rng, directory)
        return slots, probs, self.importance_weights(probs, directory, beta)

    def draw(self, n: int, rng: np.random.Generator, directory: SlotDirectory,
             beta: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """One sample as ``(ids, slots, probabilities, weights)``; weights only with ``beta``.

        What a table needs from a sample in one call, so a compiled sampler can
        produce all of it in one pass.
        """
        weights = None
        if beta is None:
            slots, probs = self.sample(n, rng, directory)
        else:
            slots, probs, weights = self.sample_weighted(n, rng, directory, beta)
        ids: np.ndarray = directory.slot_id[slots]
        return ids, slots, probs, weights

    def importance_weights(self, probabilities: np.ndarray, directory: SlotDirectory, beta: float) -> np.ndarray:
        return np.ones(probabilities.shape[0], dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes as the sampler runs (arrays included)."""
        return {}

    @staticmethod
    def nbytes_for(capacity: int) -> int:
        """Bytes the sampler's own state takes for ``capacity`` slots."""
        return 0

    def check_state(self, state: Any, live: np.ndarray | None = None, where: str = "sampler") -> Any:
        """Check a saved state (``name`` and ``config`` keys allowed; ``live``: which slots
        hold an item); returns what :meth:`restore` puts in place; changes nothing."""
        mapping(where, state, (), ("name", "config"))
        return None

    def restore(self, checked: Any) -> None:
        """Put a state from :meth:`check_state` in place (assignments only)."""

    def load_state_dict(self, state: dict[str, Any], live: np.ndarray | None = None) -> None:
        self.restore(self.check_state(state, live))


class UniformSampler(Sampler):
    """Every live item equally likely, drawn with replacement."""

    name = "uniform"

    def sample(self, n: int, rng: np.random.Generator, directory: SlotDirectory) -> tuple[np.ndarray, np.ndarray]:
        slots = directory.sample_uniform(rng, n)
        return slots, np.full(n, 1.0 / directory.count)

    def probabilities(self, slots: np.ndarray, directory: SlotDirectory) -> np.ndarray:
        return np.full(slots.shape[0], 1.0 / max(directory.count, 1))


NEW_PRIORITY_MODES = ("max", "mean", "given")

#: Largest stored priority ``q = p ** priority_exponent`` accepted: 2**400 (about 2.6e120).
#: With at most 2**40 items the total priority mass stays below 2**440, far from overflow.
MAX_STORED_PRIORITY = 2.0**400
#: Positive stored priorities below 2**-400 (about 3.9e-121) are stored as 2**-400, so every
#: positive priority keeps a positive probability and importance weights stay finite.
MIN_STORED_PRIORITY = 2.0**-400
#: Smallest importance weight reported (numpy's smallest normal float64): a weight that would
#: underflow to 0 (beta > 1 over a huge priority range) is reported as this instead.
MIN_WEIGHT = float(np.finfo(np.float64).tiny)


class PrioritizedSampler(Sampler):
    """Proportional prioritized replay (Schaul et al., 2016) mixed with uniform.

    Stored priority ``q = p ** priority_exponent``; sampling probability
    ``P(i) = (1 - u) * q_i / sum(q) + u / size``. New items without a priority get
    the running maximum of ``q`` (``'max'``), the current mean ``q`` (``'mean'``),
    or are refused (``'given'``). Each draw is one uniform number in [0, 1): below
    ``u`` it picks a live item uniformly, above it a point of the priority mass.
    With ``stratified=True`` the ``n`` numbers come one from each of ``n`` equal
    slices of [0, 1) (lower variance, same marginal distribution per draw).
    """

    name = "prioritized"
    prioritized = True

    def __init__(self, capacity: int, priority_exponent: float = 0.5, uniform_probability: float = 1e-3,
                 new_priority_mode: str = "max", max_decay: float = 1.0, stratified: bool = False) -> None:
        _check_range("priority_exponent", priority_exponent, 0.0, math.inf)
        _check_range("uniform_probability", uniform_probability, 0.0, 1.0)
        _check_range("max_decay", max_decay, 0.0, 1.0)
        if new_priority_mode not in NEW_PRIORITY_MODES:
            raise ConfigError("new_priority_mode", new_priority_mode, f"one of {NEW_PRIORITY_MODES}")
        self.priority_exponent = float(priority_exponent)
        self.uniform_probability = float(uniform_probability)
        self.new_priority_mode = new_priority_mode
        self.max_decay = float(max_decay)
        self.stratified = bool(stratified)
        self.requires_priority = new_priority_mode == "given"
        self.tree = SumTree(capacity)
        self.scalars = Scalars("sampler.max_q", [1.0], np.float64)

    def bind(self, arena: Arena) -> None:
        """Keep the running maximum ``max_q`` and the tree's zero count in ``arena``."""
        self.scalars.bind(arena)
        self.tree.bind(arena)

    @property
    def max_q(self) -> float:
        """The running maximum of stored priorities (new items get it in ``'max'`` mode)."""
        return float(self.scalars.view[0])

    @max_q.setter
    def max_q(self, value: float) -> None:
        self.scalars.array[0] = value

    def _q(self, p: np.ndarray) -> np.ndarray:
        """Raw stored priorities ``p ** priority_exponent`` (not yet bounded, see :meth:`_stored`);
        an overflow gives inf without a warning (callers check). ``p ** a`` cannot overflow for
        ``a <= 1``, so numpy's error-state switch (~1 us) is only paid above."""
        a = self.priority_exponent
        if a == 1.0:
            return p
        if a < 1.0:
            result: np.ndarray = np.power(p, a)
            return result
        with np.errstate(over="ignore"):
            result = np.power(p, a)
        return result

    def _stored(self, p: np.ndarray) -> np.ndarray:
        """What the tree stores for validated raw priorities: ``p ** a`` with positive values
        below :data:`MIN_STORED_PRIORITY` raised to it."""
        q = self._q(p)
        tiny = (q > 0.0) & (q < MIN_STORED_PRIORITY)
        if tiny.any():
            q = np.where(tiny, MIN_STORED_PRIORITY, q)
        return q

    def expected(self) -> str:
        """What a valid raw priority is, for error messages."""
        return (f"non-negative finite numbers whose p ** {self.priority_exponent} is at most 2**400 "
                f"(about {MAX_STORED_PRIORITY:.3g})")

    def validate(self, priorities: np.ndarray, field: str = "priorities") -> None:
        q = self._q(priorities)
        ok = q <= MAX_STORED_PRIORITY  # False for NaN too
        if not ok.all():
            raise PriorityError(field, priorities[~ok][:4].tolist(), self.expected(),
                                "larger ones would let the total priority overflow")

    def _raise_max(self, q: np.ndarray) -> None:
        if q.size:
            self.max_q = max(self.max_decay * self.max_q, float(q.max()))

    def on_insert(self, slots: np.ndarray, priorities: np.ndarray | None, directory: SlotDirectory) -> None:
        if priorities is not None:
            q = self._stored(priorities)
            self._raise_max(q)
            self.tree.set(slots, q)
            return
        if self.new_priority_mode == "mean":
            # mean over the items stored before this insert (slots being overwritten included);
            # the directory already counts the new items, so take away those that filled a free
            # slot (a free slot's leaf is +0.0; a live zero-priority item's is -0.0)
            leaves = self.tree.leaves[slots]
            fresh = int(np.count_nonzero((leaves == 0.0) & ~np.signbit(leaves)))
            count = directory.count - fresh
            value = self.tree.total / count if count > 0 else 1.0
            if 0.0 < value < MIN_STORED_PRIORITY:
                value = MIN_STORED_PRIORITY
        else:
            value = self.max_q
        self.tree.set(slots, value)

    def on_update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        q = self._stored(priorities)
        self._raise_max(q)
        self.tree.set(slots, q)

    def update_by_ids(self, directory: SlotDirectory, ids: np.ndarray, priorities: Any) -> int:
        """Validated priority update by id in one compiled pass; returns how many applied.

        Stale ids are skipped. Raises :class:`PriorityError` (changing nothing) for a
        negative, NaN or infinite priority or a length that does not match ``ids``.
        """
        p = priority_array(priorities, ids.shape[0])
        q = self._q(np.abs(p))  # a negative p or an overflow is reported by the kernel
        bad, applied, q_max = self.tree.update_by_ids(directory.slot_id, np.ascontiguousarray(ids), p, q)
        if bad >= 0:
            raise PriorityError("priorities", float(p[bad]), self.expected(), f"at position {bad}")
        if applied:
            self.max_q = max(self.max_decay * self.max_q, q_max)
        return applied

    def on_delete(self, slots: np.ndarray) -> None:
        self.tree.set(slots, 0.0, live=False)

    def sample(self, n: int, rng: np.random.Generator, directory: SlotDirectory) -> tuple[np.ndarray, np.ndarray]:
        slots, probs, _ = self.sample_weighted(n, rng, directory, 0.0)
        return slots, probs

    def probabilities(self, slots: np.ndarray, directory: SlotDirectory) -> np.ndarray:
        count = max(directory.count, 1)
        total = self.tree.total
        u = self.uniform_probability
        if total <= 0.0:
            return np.full(slots.shape[0], 1.0 / count)
        return self.tree.probabilities(np.ascontiguousarray(slots, dtype=np.int64), u, count)  # as a sample does

    def sample_weighted(self, n: int, rng: np.random.Generator, directory: SlotDirectory,
                        beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, slots, probs, weights = self.draw(n, rng, directory, beta)
        assert weights is not None
        return slots, probs, weights

    def draw(self, n: int, rng: np.random.Generator, directory: SlotDirectory,
             beta: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        total = self.tree.total
        u = self.uniform_probability
        if total <= 0.0 or u >= 1.0 or n == 0:
            slots = directory.sample_uniform(rng, n)
            probs = self.probabilities(slots, directory)
            ids: np.ndarray = directory.slot_id[slots]
        else:
            if self.stratified:
                draws = (np.arange(n) + rng.random(n)) * (1.0 / max(n, 1))  # n = 0: no draws
            else:
                draws = rng.random(n)
            live, identity = directory.dense()
            slots, probs, ids = self.tree.sample_mixture(draws, u, directory.count, live, identity, directory.slot_id)
        # every sampled item has P > 0, so no zero-division guard is needed here
        weights = None if beta is None else self._weights(probs, directory, beta)
        return ids, slots, probs, weights

    def min_probability(self, directory: SlotDirectory) -> float:
        """The smallest non-zero sampling probability of any stored item."""
        count = max(directory.count, 1)
        total = self.tree.total
        u = self.uniform_probability
        if total <= 0.0:
            return 1.0 / count
        if u > 0.0 and self.tree.zero_count > 0:
            return u / count
        return (1.0 - u) * self.tree.min_positive / total + u / count

    def importance_weights(self, probabilities: np.ndarray, directory: SlotDirectory, beta: float) -> np.ndarray:
        """``w_i = (N P(i))^-beta / max_j (N P(j))^-beta`` over stored ``j`` (Schaul et al.), in (0, 1]."""
        return self._weights(probabilities, directory, beta)

    def _weights(self, probabilities: np.ndarray, directory: SlotDirectory, beta: float) -> np.ndarray:
        """``(P(i) / P_min) ** -beta``, which equals the normalised weight above, kept in
        ``[MIN_WEIGHT, 1]``: the stored-priority bounds keep ``P / P_min`` finite, and the clip
        catches the two edge cases (an underflow for ``beta > 1`` over a huge priority range,
        and ``get`` of an item whose probability is 0, which no sample can return)."""
        if beta == 0.0:
            return np.ones(probabilities.shape[0], dtype=np.float64)
        weights: np.ndarray = np.divide(probabilities, self.min_probability(directory))
        with np.errstate(divide="ignore", over="ignore"):
            np.power(weights, -beta, out=weights)
        np.clip(weights, MIN_WEIGHT, 1.0, out=weights)
        return weights

    def config(self) -> dict[str, Any]:
        return {"priority_exponent": self.priority_exponent, "uniform_probability": self.uniform_probability,
                "new_priority_mode": self.new_priority_mode, "max_decay": self.max_decay,
                "stratified": self.stratified}

    def state_dict(self) -> dict[str, Any]:
        return {"max_q": self.max_q, "tree": self.tree.state_dict()}

    @staticmethod
    def nbytes_for(capacity: int) -> int:
        return SumTree.nbytes_for(capacity)

    def check_state(self, state: Any, live: np.ndarray | None = None,
                    where: str = "sampler") -> tuple[float, SumTree]:
        """``max_q`` (finite, >= 0: 0 is reached with ``max_decay=0`` and zero priorities) and
        a new tree built from the checked leaves (swapped in by :meth:`restore`)."""
        m = mapping(where, state, ("max_q", "tree"), ("name", "config"))
        max_q = number(f"{where}.max_q", m["max_q"], 0.0)
        tree = SumTree(self.tree.capacity)
        tree.restore(tree.check_state(m["tree"], f"{where}.tree", live))
        return max_q, tree

    def restore(self, checked: tuple[float, SumTree]) -> None:
        max_q, tree = checked
        self.max_q = max_q
        self.tree.copy_from(tree)  # in place: the tree's arrays may be views into shared memory


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not (lo <= float(value) <= hi):
        raise ConfigError(name, value, f"a number in [{lo}, {hi}]")


SAMPLERS: dict[str, type[Sampler]] = {"uniform": UniformSampler, "prioritized": PrioritizedSampler}
