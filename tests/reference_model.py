"""A tiny, obviously-correct model of the ReplayTables API, in plain Python.

It knows nothing about slots, packed rows or sum trees. It holds:

* ``order``: the FIFO ring as a list of entries, oldest first, at most
  ``capacity`` long; an entry is a live id or ``None`` (a deleted item's hole,
  which still takes its place in the ring until the ring comes round to it);
* ``items``: id -> the key ``k`` the item was made from;
* ``q``: id -> stored priority ``p ** exponent`` (prioritized mode);
* ``max_q`` and the counters, updated by the rules of SPEC section 2.

The model does not predict ids (that is the engine's business); it is told the
ids the buffer returned and checks that they are fresh.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PerRules:
    mode: str = "max"
    exponent: float = 0.5
    uniform: float = 1e-3
    decay: float = 1.0


@dataclass
class ReferenceModel:
    capacity: int
    per: PerRules | None = None
    order: list[int | None] = field(default_factory=list)
    items: dict[int, int] = field(default_factory=dict)
    q: dict[int, float] = field(default_factory=dict)
    max_q: float = 1.0
    issued: set[int] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=lambda: {
        "added": 0, "evicted": 0, "not_stored": 0, "sampled": 0, "deleted": 0, "stale_updates": 0})

    # ------------------------------------------------------------ queries
    def live_ids(self) -> list[int]:
        return [i for i in self.order if i is not None]

    def __len__(self) -> int:
        return len(self.items)

    def new_priority(self) -> float:
        """``q`` a new item without a priority gets (SPEC section 2)."""
        assert self.per is not None
        if self.per.mode == "mean":
            return math.fsum(self.q.values()) / len(self.q) if self.q else 1.0
        return self.max_q

    def _qf(self, p: float) -> float:
        assert self.per is not None
        return float(p) ** self.per.exponent

    def _raise_max(self, qs: list[float]) -> None:
        assert self.per is not None
        if qs:
            self.max_q = max(self.per.decay * self.max_q, max(qs))

    def probabilities(self) -> dict[int, float]:
        """P(i) = (1 - u) q_i / sum q + u / N (uniform if every q is 0)."""
        n = len(self.items)
        if self.per is None:
            return {i: 1.0 / n for i in self.items}
        total = math.fsum(self.q.values())
        u = self.per.uniform
        if total <= 0.0:
            return {i: 1.0 / n for i in self.items}
        return {i: (1 - u) * self.q[i] / total + u / n for i in self.items}

    def weights(self, ids: list[int], beta: float) -> list[float]:
        """Schaul et al.: (N P_i)^-beta / max_j (N P_j)^-beta over stored j with P_j > 0."""
        if self.per is None:
            return [1.0] * len(ids)
        probs = self.probabilities()
        n = len(self.items)
        p_min = min(p for p in probs.values() if p > 0)
        w_max = (n * p_min) ** -beta
        return [(n * probs[i]) ** -beta / w_max for i in ids]

    def can_sample(self, i: int) -> bool:
        """Whether ``i`` has a non-zero sampling probability."""
        return i in self.items and self.probabilities()[i] > 0.0

    # ------------------------------------------------------------ changes
    def _check_fresh(self, i: int) -> None:
        assert i >= 0, f"id {i} should be a stored id"
        assert i not in self.issued, f"id {i} was issued before"
        self.issued.add(i)

    def _push(self, entry: int | None, batch_ids: set[int]) -> None:
        self.order.append(entry)
        if len(self.order) > self.capacity:
            old = self.order.pop(0)
            if old is not None:
                del self.items[old]
                self.q.pop(old, None)
                if old in batch_ids:
                    self.counters["not_stored"] += 1
                else:
                    self.counters["evicted"] += 1

    def add(self, returned_id: int, k: int, priority: float | None = None) -> None:
        self._check_fresh(returned_id)
        if self.per is not None:
            if priority is None:
                q = self.new_priority()
            else:
                q = self._qf(priority)
                self._raise_max([q])
        self.counters["added"] += 1
        self._push(returned_id, set())
        self.items[returned_id] = k
        if self.per is not None:
            self.q[returned_id] = q

    def add_batch(self, returned_ids: list[int], ks: list[int], priorities: list[float] | None = None) -> None:
        m = len(ks)
        assert len(returned_ids) == m
        lost = max(0, m - self.capacity)
        assert list(returned_ids[:lost]) == [-1] * lost, f"first {lost} of {returned_ids} should be -1"
        if self.per is not None:
            if priorities is None:
                qs = [self.new_priority()] * m
            else:
                qs = [self._qf(p) for p in priorities]
                self._raise_max(qs[lost:])
        self.counters["added"] += m
        # items that never fit are placeholders, popped by the later items of this batch
        placeholders = [-(j + 1) - 10**12 for j in range(lost)]
        batch = set(placeholders)
        for j in range(m):
            i = placeholders[j] if j < lost else returned_ids[j]
            if j >= lost:
                self._check_fresh(i)
            self.items[i] = ks[j]
            if self.per is not None:
                self.q[i] = qs[j]
            self._push(i, batch)

    def delete(self, ids: list[int]) -> None:
        unique = set(ids)
        assert unique <= set(self.items)
        self.order = [None if e in unique else e for e in self.order]
        for i in unique:
            del self.items[i]
            self.q.pop(i, None)
        self.counters["deleted"] += len(unique)

    def update(self, ids: list[int], priorities: list[float]) -> int:
        applied = []
        for i, p in zip(ids, priorities):
            if i in self.items:
                q = self._qf(p)
                self.q[i] = q
                applied.append(q)
            else:
                self.counters["stale_updates"] += 1
        self._raise_max(applied)
        return len(applied)

    def sampled(self, n: int) -> None:
        self.counters["sampled"] += n

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["size"] = len(self.items)
        out["capacity"] = self.capacity
        return out
