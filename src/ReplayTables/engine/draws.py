"""Draws: the random points a sample is made of, apart from the items they select.

A sample of ``n`` from a mixture of prioritized and uniform sampling is ``n``
points in ``[0, 1)``, each either *prioritized* (it selects the item whose
cumulative-priority interval holds ``point * total``) or *uniform* (it selects
live item ``floor(point * size)``). Keeping the points apart from the table
lets a sharded buffer draw them once against the global mass and hand each
shard its share (``Table.sample_from``); one table draws them from its own rng
(:func:`split_draws`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Draws", "split_draws"]

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.flags.writeable = False


class Draws(NamedTuple):
    """Points in ``[0, 1)`` (float64): ``prioritized`` ones search the priority mass,
    ``uniform`` ones pick a live item by position."""

    prioritized: np.ndarray
    uniform: np.ndarray

    @property
    def n(self) -> int:
        return int(self.prioritized.shape[0] + self.uniform.shape[0])


def split_draws(rng: np.random.Generator, n: int, uniform_probability: float,
                stratified: bool = False) -> tuple[Draws, np.ndarray | None]:
    """``n`` draws of the mixture with uniform part ``u``, and where the uniform ones go.

    One number ``d`` in ``[0, 1)`` per draw decides both halves: below ``u`` it is
    the uniform point ``d / u``, otherwise the prioritized point
    ``(d - u) / (1 - u)`` (conditioned on its half, each rescaled number is
    uniform, so the split is Binomial(n, u) and the points independent). With
    ``stratified`` the numbers come one from each of ``n`` equal slices of
    ``[0, 1)``. The second result is ``None`` when the draws are all of one kind,
    else a boolean mask of the ``n`` positions that are uniform, in draw order
    (``Table.sample`` uses it to keep the draw order of the items).
    """
    if stratified:
        d = (np.arange(n) + rng.random(n)) * (1.0 / max(n, 1))
    else:
        d = rng.random(n)
    u = uniform_probability
    if u >= 1.0:
        return Draws(_EMPTY, d), None
    if u <= 0.0:
        return Draws(d, _EMPTY), None
    mask = d < u
    k = int(np.count_nonzero(mask))
    if k == 0:
        d -= u
        d /= 1.0 - u
        return Draws(d, _EMPTY), None
    prioritized = (d[~mask] - u) / (1.0 - u)
    uniform = d[mask] / u
    return Draws(prioritized, uniform), (mask if k < n else None)
