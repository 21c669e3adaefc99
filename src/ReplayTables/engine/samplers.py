"""Samplers: which slots a sample returns, and with what probability.

A sampler hears about inserts, priority updates and deletes (by slot), reports
the :class:`~ReplayTables.engine.mass.Mass` its probabilities are relative to,
splits ``n`` draws into prioritized and uniform points (:meth:`Sampler.split`)
and turns given points into slots, ids, stored priorities and probabilities
against given totals (:meth:`Sampler.select`). It never touches stored data;
importance weights are :func:`~ReplayTables.engine.weights.importance_weights`.
:class:`UniformSampler` keeps no state; the :class:`PrioritizedSampler` keeps a
:class:`~ReplayTables.engine.sumtree.SumTree`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ReplayTables.engine.draws import Draws, split_draws
from ReplayTables.engine.ids import SlotDirectory, foreign_id_error, uniform_positions_of
from ReplayTables.engine.mass import Mass
from ReplayTables.engine.state import Arena, Scalars
from ReplayTables.engine.state_checks import mapping
from ReplayTables.engine.state_checks import number as saved_number
from ReplayTables.engine.sumtree import SumTree, kernels
from ReplayTables.engine.validators import number
from ReplayTables.engine.weights import MIN_WEIGHT
from ReplayTables.errors import ConfigError, PriorityError

__all__ = ["MIN_WEIGHT", "PrioritizedSampler", "Sampler", "UniformSampler", "check_priorities", "priority_array"]

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

    #: the uniform part ``u`` of the sampling mixture (1: every live item equally likely)
    uniform_probability = 1.0

    def mass(self, directory: SlotDirectory) -> Mass:
        """The totals this sampler's probabilities are relative to (``q = 1`` for every item)."""
        count = directory.count
        return Mass(count, float(count), 1.0 if count else math.inf, 1.0)

    def split(self, n: int, rng: np.random.Generator, directory: SlotDirectory) -> tuple[Draws, np.ndarray | None]:
        """``n`` draws from ``rng`` against this sampler's own mass (see :func:`split_draws`):
        here all uniform."""
        return Draws(_NO_POINTS, rng.random(n)), None

    def select(self, draws: Draws, order: np.ndarray | None, directory: SlotDirectory,
               totals: Mass) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(slots, ids, q, probabilities)`` of the items the points select (``directory.count > 0``).

        Here every ``q`` is 1, so a prioritized point selects live item
        ``floor(point * size)`` just as a uniform one does. ``order``: the positions
        of the uniform points among all (``None``: prioritized ones first).
        """
        points = draws.uniform if order is None and not draws.prioritized.shape[0] else _in_order(draws, order)
        n = points.shape[0]
        slots = directory.slots_at(uniform_positions_of(points, directory.count))
        ids: np.ndarray = directory.slot_id[slots]
        probabilities = np.empty(n)  # np.full, without its Python wrapper
        probabilities.fill(1.0 / max(totals.size, 1))
        return slots, ids, ones(n), probabilities

    def stored(self, slots: np.ndarray) -> np.ndarray:
        """Stored priorities ``q`` of live ``slots`` (1 for a sampler without priorities)."""
        return ones(slots.shape[0])

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


NEW_PRIORITY_MODES = ("max", "mean", "given")

#: Largest stored priority ``q = p ** priority_exponent`` accepted: 2**400 (about 2.6e120).
#: With at most 2**40 items the total priority mass stays below 2**440, far from overflow.
MAX_STORED_PRIORITY = 2.0**400
#: Positive stored priorities below 2**-400 (about 3.9e-121) are stored as 2**-400, so every
#: positive priority keeps a positive probability and importance weights stay finite.
MIN_STORED_PRIORITY = 2.0**-400


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
        number("priority_exponent", priority_exponent, 0.0)
        number("uniform_probability", uniform_probability, 0.0, 1.0)
        number("max_decay", max_decay, 0.0, 1.0)
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

    def update_by_ids(self, directory: SlotDirectory, ids: np.ndarray, priorities: Any, shard: int = 0) -> int:
        """Validated priority update by (shard-tagged) id in one compiled pass; returns how many applied.

        Stale ids are skipped. Raises :class:`PriorityError` (changing nothing) for a
        negative, NaN or infinite priority or a length that does not match ``ids``,
        and :class:`StaleIdError` for an id of another shard than ``shard``.
        """
        p = priority_array(priorities, ids.shape[0])
        q = self._q(np.abs(p))  # a negative p or an overflow is reported by the kernel
        bad, applied, q_max = self.tree.update_by_ids(directory.slot_id, np.ascontiguousarray(ids), p, q, shard)
        if bad >= 0:
            raise PriorityError("priorities", float(p[bad]), self.expected(), f"at position {bad}")
        if bad <= -2:
            raise foreign_id_error("ids", ids[-bad - 2:-bad - 1], shard)
        if applied:
            self.max_q = max(self.max_decay * self.max_q, q_max)
        return applied

    def on_delete(self, slots: np.ndarray) -> None:
        self.tree.set(slots, 0.0, live=False)

    def mass(self, directory: SlotDirectory) -> Mass:
        """``(size, sum of q, q_min, u)``; ``q_min`` is 0 when an item of priority 0 is stored and
        ``u > 0`` (such an item can be drawn by the uniform part), else the smallest positive ``q``."""
        tree = self.tree
        u = self.uniform_probability
        q_min = 0.0 if (u > 0.0 and tree.zero_count > 0) else tree.min_positive
        return Mass(directory.count, tree.total, q_min, u)

    def split(self, n: int, rng: np.random.Generator, directory: SlotDirectory) -> tuple[Draws, np.ndarray | None]:
        """Draws of the mixture; all uniform while the total priority is 0 (nothing to weigh by)."""
        u = self.uniform_probability
        if self.tree.total <= 0.0 or u >= 1.0 or n == 0:
            return split_draws(rng, n, 1.0)
        if u <= 0.0:
            return split_draws(rng, n, u, self.stratified)
        # split_draws in one compiled pass (the same numbers; numpy's masks cost ~3 us per call)
        if self.stratified:
            d = (np.arange(n) + rng.random(n)) * (1.0 / n)
        else:
            d = rng.random(n)
        prioritized = np.empty(n, dtype=np.float64)
        uniform = np.empty(n, dtype=np.float64)
        is_uniform = np.empty(n, dtype=np.bool_)
        ku = int(kernels().split_mixture(d, u, prioritized, uniform, is_uniform))
        return Draws(prioritized[:n - ku], uniform[:ku]), (is_uniform if 0 < ku < n else None)

    def select(self, draws: Draws, order: np.ndarray | None, directory: SlotDirectory,
               totals: Mass) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(slots, ids, q, probabilities)`` in one compiled pass (``directory.count > 0``).

        While this tree's total is 0 a prioritized point has no mass to search and
        selects by position, as a uniform one does.
        """
        count = directory.count
        if self.tree.total <= 0.0:
            points = _in_order(draws, order)
            draws, order = Draws(points[:0], points), None
        size = max(totals.size, 1)
        u = totals.uniform_probability
        if u >= 1.0 or not totals.priority_total > 0.0:
            scale, base = 0.0, 1.0 / size
        else:
            scale, base = (1.0 - u) / totals.priority_total, u / size
        live, identity = directory.dense()
        mask = _NO_ORDER if order is None else order
        return self.tree.sample_points(np.ascontiguousarray(draws.prioritized, dtype=np.float64),
                                       np.ascontiguousarray(draws.uniform, dtype=np.float64), mask, count, live,
                                       identity, directory.slot_id, scale, base)

    def stored(self, slots: np.ndarray) -> np.ndarray:
        return self.tree.get(slots)

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
        max_q = saved_number(f"{where}.max_q", m["max_q"], 0.0)
        tree = SumTree(self.tree.capacity)
        tree.restore(tree.check_state(m["tree"], f"{where}.tree", live))
        return max_q, tree

    def restore(self, checked: tuple[float, SumTree]) -> None:
        max_q, tree = checked
        self.max_q = max_q
        self.tree.copy_from(tree)  # in place: the tree's arrays may be views into shared memory


_NO_ORDER = np.empty(0, dtype=np.bool_)
_NO_POINTS = np.empty(0, dtype=np.float64)
_NO_POINTS.flags.writeable = False
_ONES = np.ones(0)


def ones(n: int) -> np.ndarray:
    """A read-only float64 array of ``n`` ones (a view of one shared array: the ``q`` of
    items of a sampler without priorities, in every sample)."""
    global _ONES
    if _ONES.shape[0] < n:
        _ONES = np.ones(max(n, 2 * _ONES.shape[0], 1024))
        _ONES.flags.writeable = False
    return _ONES[:n]


def _in_order(draws: Draws, order: np.ndarray | None) -> np.ndarray:
    """All points of ``draws`` in output order (``order``: where the uniform ones go)."""
    if order is None:
        if not draws.uniform.shape[0]:
            return draws.prioritized
        if not draws.prioritized.shape[0]:
            return draws.uniform
        return np.concatenate([draws.prioritized, draws.uniform])
    points = np.empty(order.shape[0], dtype=np.float64)
    points[order] = draws.uniform
    points[~order] = draws.prioritized
    return points


SAMPLERS: dict[str, type[Sampler]] = {"uniform": UniformSampler, "prioritized": PrioritizedSampler}
