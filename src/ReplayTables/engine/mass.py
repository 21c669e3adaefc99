"""Mass: what a sampler's probabilities are relative to, reported so shards can be combined.

A prioritized sampler picks item ``i`` with probability
``P(i) = (1 - u) q_i / total + u / size`` where ``q`` are the stored
(exponentiated) priorities, ``total`` their sum over the stored items and ``u``
the weight of the uniform part of the mixture. A sharded buffer samples each
shard against the *global* ``size`` and ``total``, and normalises importance
weights by the global smallest probability; so every table reports its
:class:`Mass`, and :func:`combine_masses` sums them into the global one.
A uniform sampler is the case ``u = 1`` (every ``q`` is 1).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

__all__ = ["EMPTY_MASS", "Mass", "combine_masses", "probabilities_against"]


class Mass(NamedTuple):
    """The totals one table (or a set of shards) samples against.

    Attributes:
        size: stored items.
        priority_total: sum of their stored priorities ``q``.
        q_min: smallest ``q`` of an item a sample can return (a zero ``q`` counts
            only when ``uniform_probability > 0``; ``inf`` for an empty table).
        uniform_probability: the uniform part ``u`` of the sampling mixture.
    """

    size: int
    priority_total: float
    q_min: float
    uniform_probability: float

    def min_probability(self) -> float:
        """``(1 - u) q_min / total + u / size``: the smallest probability of any stored item
        (0 for an empty mass; ``1 / size`` when the total is 0, because then every item is
        drawn uniformly)."""
        if self.size <= 0:
            return 0.0
        u = self.uniform_probability
        if u >= 1.0 or not self.priority_total > 0.0:
            return 1.0 / self.size
        return (1.0 - u) * self.q_min / self.priority_total + u / self.size


#: The mass of an empty table.
EMPTY_MASS = Mass(0, 0.0, float("inf"), 1.0)


def combine_masses(masses: Iterable[Mass]) -> Mass:
    """The global mass of several tables: sizes and totals summed, the smallest ``q_min``.

    All parts must share one ``uniform_probability`` (the shards of one buffer
    do); empty parts are left out, so their ``u`` does not matter.
    """
    parts = [m for m in masses if m.size > 0]
    if not parts:
        return EMPTY_MASS
    u = parts[0].uniform_probability
    if any(m.uniform_probability != u for m in parts):
        from ReplayTables.errors import ConfigError

        raise ConfigError("uniform_probability", sorted({m.uniform_probability for m in parts}),
                          "one uniform_probability for every part of a combined mass")
    return Mass(sum(m.size for m in parts), float(sum(m.priority_total for m in parts)),
                min(m.q_min for m in parts), u)


def probabilities_against(q: np.ndarray, mass: Mass) -> np.ndarray:
    """``P = (1 - u) q / total + u / size`` of items with stored priorities ``q`` (``1 / size``
    for every item when the total is 0 or ``u`` is 1)."""
    size = max(mass.size, 1)
    u = mass.uniform_probability
    if u >= 1.0 or not mass.priority_total > 0.0:
        return np.full(q.shape[0], 1.0 / size)
    p: np.ndarray = q * ((1.0 - u) / mass.priority_total)
    p += u / size
    return p
