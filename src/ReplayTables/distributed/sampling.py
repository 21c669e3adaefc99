"""How a sample of ``n`` is split over shards, and the global probability of what comes back.

The global distribution of a sharded buffer is that of one buffer holding all
items: ``P(i) = (1 - u) q_i / T + u / N`` with ``T`` the sum of every shard's
stored priorities and ``N`` the total size. A draw of that mixture is
prioritized with probability ``1 - u`` (then shard ``k`` holds it with
probability ``T_k / T``) or uniform (then shard ``k`` with ``N_k / N``). So a
sample of ``n`` splits as: ``Binomial(n, 1 - u)`` prioritized draws, spread over
the shards ``Multinomial(T_k / T)``; the rest spread ``Multinomial(N_k / N)``.
Each shard then resolves its points against its own mass, which gives every
item exactly ``P(i)`` (SPEC 6.4).

The split uses the shards' latest reports (every reply carries one). When a
shard has changed since its report (a writer added to it), the item's true
probability under this procedure is
``(1 - u) (T_k / T) q_i / T_k' + u (N_k / N) / N_k'`` with ``'`` the shard's mass
at sampling time, which is what :func:`probabilities` returns; with fresh
reports it is the global formula above.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ReplayTables.engine.draws import Draws
from ReplayTables.engine.mass import Mass, combine_masses

__all__ = ["global_mass", "probabilities", "split_sample"]


def global_mass(masses: Sequence[Mass]) -> Mass:
    """The mass of all these shards together (the empty ones left out)."""
    return combine_masses(masses)


def split_sample(rng: np.random.Generator, n: int, masses: Sequence[Mass]) -> list[Draws]:
    """``n`` draws of the global mixture, as each shard's points (shard ``k`` gets ``result[k]``).

    ``masses``: each shard's latest reported mass (an empty one gets no draws).
    """
    total = global_mass(masses)
    sizes = np.array([m.size for m in masses], dtype=np.float64)
    priority = np.array([m.priority_total if m.size > 0 else 0.0 for m in masses], dtype=np.float64)
    u = total.uniform_probability
    if u >= 1.0 or not total.priority_total > 0.0:
        n_prioritized = 0
    else:
        n_prioritized = int(rng.binomial(n, 1.0 - u))
    by_priority = (rng.multinomial(n_prioritized, priority / priority.sum()) if n_prioritized
                   else np.zeros(len(masses), dtype=np.int64))
    by_size = rng.multinomial(n - n_prioritized, sizes / sizes.sum())
    return [Draws(rng.random(int(a)), rng.random(int(b))) for a, b in zip(by_priority, by_size)]


def probabilities(q: np.ndarray, reported: Mass, now: Mass, total: Mass) -> np.ndarray:
    """The probability that the procedure above returns each item one shard sent back.

    ``q``: the stored priorities of the items it sent; ``reported``: the shard's mass
    the split used; ``now``: its mass when it sampled; ``total``: the global mass the
    split used.
    """
    u = total.uniform_probability
    uniform_part = (reported.size / total.size) / max(now.size, 1)
    if u >= 1.0 or not total.priority_total > 0.0:
        return np.full(q.shape[0], uniform_part)
    share = reported.priority_total / total.priority_total
    p: np.ndarray = q * ((1.0 - u) * share / now.priority_total) if now.priority_total > 0.0 \
        else np.zeros(q.shape[0])
    p += u * uniform_part
    return p
