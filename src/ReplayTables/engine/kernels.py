"""Compiled kernels for the sum tree (numba, cached on disk).

This module is the only place that imports numba, and it is imported lazily on
the first prioritized operation, so ``import ReplayTables`` stays fast and JIT-free.

Tree layout (see ``sumtree.py``): ``leaves`` holds the raw priorities, padded to
a whole number of blocks of ``BRANCHING``. Internal levels ``0..D-1`` live in
the flat arrays ``sums``, ``cum`` and ``mins`` (level 0 on top, one block);
entry ``e`` of level ``l`` stands for block ``e`` of the level below (level
``D`` = the leaves): ``sums`` holds that block's total, ``mins`` its smallest
positive leaf, and ``cum`` the running sum of ``sums`` inside the block of
level ``l`` that holds ``e``. The total of an internal block is the last running
sum of that block, so refreshing a block's running sums also yields its parent's
entry. A live item whose priority is zero is stored as ``-0.0`` (an empty slot as
``+0.0``): both add and compare as zero, and the sign tells them apart without
another array.

Random access into a tree of millions of leaves is bound by memory latency, not
arithmetic, so each kernel first *touches* the cache lines it is about to use in
a tight loop with no dependencies (the CPU then has many misses in flight at
once), and only then does the arithmetic on data that is already in cache.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

BRANCHING = 16  # 16 float64 = two cache lines per block: 4 internal levels for 10^6 leaves
MAX_STORED = 2.0**400  # = samplers.MAX_STORED_PRIORITY (kept here so kernels need no import)
MIN_STORED = 2.0**-400  # = samplers.MIN_STORED_PRIORITY
SHARD_SHIFT = 48  # = ids.SHARD_SHIFT: the shard tag of an id sits in the bits from here up
LOCAL_MASK = (1 << SHARD_SHIFT) - 1

# ``marks`` codes for one repair call with stamp ``s``: entry visited (2s) or visited
# with a child whose minimum changed (2s + 1), so its own minimum must be recomputed.
# Anything below 2s means "not visited in this call".


@nb.njit(cache=True, nogil=True, inline="always")
def _leaf_block(leaves, base):
    """Total and smallest positive value of the leaf block at ``base``.

    Four independent partial sums keep the add latency chain short.
    """
    B = BRANCHING
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    m = np.inf
    for j in range(0, B, 4):
        v0 = leaves[base + j]
        v1 = leaves[base + j + 1]
        v2 = leaves[base + j + 2]
        v3 = leaves[base + j + 3]
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        m = min(m, min(v0 if v0 > 0.0 else np.inf, v1 if v1 > 0.0 else np.inf))
        m = min(m, min(v2 if v2 > 0.0 else np.inf, v3 if v3 > 0.0 else np.inf))
    return (a0 + a1) + (a2 + a3), m


@nb.njit(cache=True, nogil=True, inline="always")
def _block_min(mins, base):
    """Smallest of the 16 minima of an internal block."""
    m = np.inf
    for j in range(0, BRANCHING, 4):
        m = min(m, min(min(mins[base + j], mins[base + j + 1]), min(mins[base + j + 2], mins[base + j + 3])))
    return m


@nb.njit(cache=True, nogil=True, inline="always")
def _refresh_block(sums, cum, base):
    """Running sums of the internal block at ``base``; returns the block total."""
    acc = 0.0
    for j in range(BRANCHING):
        acc += sums[base + j]
        cum[base + j] = acc
    return acc


@nb.njit(cache=True, nogil=True, inline="always")
def _is_live_zero(v):
    """Live items of priority zero are stored as -0.0, empty slots as +0.0."""
    return 1 if (v == 0.0 and math.copysign(1.0, v) < 0.0) else 0


@nb.njit(cache=True, nogil=True, inline="always")
def _repair(sums, cum, mins, marks, stamp, leaves, offsets, depth, slots, n):
    """Recompute every internal entry above the leaves ``slots[:n]`` from its children.

    Sums are recomputed (never adjusted by a delta), so rounding errors do not
    accumulate however many updates are made; the result is bit-identical to
    :func:`rebuild`. A minimum is recomputed only where a child's minimum changed.
    ``marks``/``stamp`` let each level above the lowest visit an entry once per call
    without sorting (``stamp`` must grow per call). Returns a checksum of touched memory.
    """
    B = BRANCHING
    touched = 0.0
    if n == 0:
        return touched
    visited = 2 * stamp
    entries = np.empty(n, dtype=np.int64)
    parents = np.empty(n, dtype=np.int64)
    level = depth - 1
    count = 0
    last = -1
    for k in range(n):  # changed leaf blocks = changed entries of the lowest internal level
        e = slots[k] // B
        # Only runs of one block are merged: marks here would cost a cache miss per
        # slot, and recomputing an entry twice is harmless (parents are deduplicated).
        if e != last:
            entries[count] = e
            count += 1
            last = e
    while True:
        off = offsets[level]
        if level == depth - 1:
            for k in range(count):  # bring the entries' blocks into cache, misses overlapping
                base = off + (entries[k] // B) * B
                touched += sums[base] + sums[base + B - 1] + cum[base] + cum[base + B - 1] + mins[off + entries[k]]
        up = offsets[level - 1] if level > 0 else 0
        n_par = 0
        for k in range(count):
            e = entries[k]
            if level == depth - 1:
                total, m = _leaf_block(leaves, e * B)
                sums[off + e] = total
            elif marks[off + e] == visited + 1:
                m = _block_min(mins, offsets[level + 1] + e * B)
            else:
                m = mins[off + e]
            changed = m != mins[off + e]
            mins[off + e] = m
            if level > 0:
                b = e // B
                code = marks[up + b]
                if code < visited:
                    parents[n_par] = b
                    n_par += 1
                    marks[up + b] = visited + 1 if changed else visited
                elif changed and code == visited:
                    marks[up + b] = visited + 1
        if level == 0:
            _refresh_block(sums, cum, 0)
            break
        for k in range(n_par):
            b = parents[k]
            sums[up + b] = _refresh_block(sums, cum, off + b * B)
        level -= 1
        count = n_par
        entries, parents = parents, entries
    return touched


@nb.njit(cache=True, nogil=True, inline="always")
def _touch_leaf_blocks(leaves, slots, n):
    """Load both cache lines of the leaf block of ``slots[:n]`` (independent loads, so
    their misses overlap); returns their sum so the loads are not optimised away."""
    B = BRANCHING
    touched = 0.0
    for k in range(n):
        base = (slots[k] // B) * B
        touched += leaves[base] + leaves[base + B - 1]
    return touched


@nb.njit(cache=True, nogil=True, inline="always")
def _write_leaf(leaves, s, v, live):
    """Store ``v`` in leaf ``s``; returns the change in live zero-priority leaves.

    A live item of priority zero is stored as -0.0 (an empty slot holds +0.0).
    """
    delta = -_is_live_zero(leaves[s])
    if live and v == 0.0:
        v = -0.0
        delta += 1
    leaves[s] = v
    return delta


@nb.njit(cache=True, nogil=True)
def set_leaves(sums, cum, mins, marks, stamp, leaves, offsets, depth, slots, values, live):
    """Set leaf ``slots[k]`` to ``values[k]`` (later duplicates win) and repair the tree.

    ``live[k]`` says whether the slot holds an item after the write: a live leaf of
    value 0 counts as a zero-priority item, a dead one does not. Returns the change
    in the number of live zero-priority leaves (and a checksum of touched memory).
    """
    n = slots.shape[0]
    touched = _touch_leaf_blocks(leaves, slots, n)
    zero_delta = 0
    for k in range(n):
        zero_delta += _write_leaf(leaves, slots[k], values[k], live[k])
    touched += _repair(sums, cum, mins, marks, stamp, leaves, offsets, depth, slots, n)
    return zero_delta, touched


@nb.njit(cache=True, nogil=True)
def update_by_ids(sums, cum, mins, marks, stamp, leaves, offsets, depth, slot_id, ids,
                  priorities, stored, scratch, shard):
    """Priority update by item id, fused: check, map ids to slots, skip stale ids,
    set the leaves to ``stored`` (the caller's ``priorities ** exponent``, computed
    with numpy's vectorised power) and repair the tree.

    Returns ``(bad, applied, zero_delta, q_max)``. ``bad >= 0`` is the index of the
    first priority that is negative, NaN or infinite, or whose stored value exceeds
    ``MAX_STORED``; then nothing was changed. Positive stored values below
    ``MIN_STORED`` are stored as ``MIN_STORED``. ``bad <= -2`` says that id
    ``-bad - 2`` is tagged with another shard than ``shard`` (``ids.py``); then
    nothing was changed either.
    Ids that are negative or no longer live are skipped (``applied`` counts the rest).
    """
    n = ids.shape[0]
    for k in range(n):
        p = priorities[k]
        if not (p >= 0.0 and p < np.inf and stored[k] <= MAX_STORED):
            return k, 0, 0, 0.0
        if ids[k] >= 0 and (ids[k] >> SHARD_SHIFT) != shard:
            return -2 - k, 0, 0, 0.0
    cap = slot_id.shape[0]
    B = BRANCHING
    touched = 0.0
    slot_of = np.empty(n, dtype=np.int64)  # one (slow) integer division per id
    for k in range(n):  # the slot_id entries and leaf blocks, misses overlapping
        i = ids[k] & LOCAL_MASK
        s = i % cap if ids[k] >= 0 else -1
        slot_of[k] = s
        if s >= 0:
            base = (s // B) * B
            touched += leaves[base] + leaves[base + B - 1] + slot_id[s]
    m = 0
    zero_delta = 0
    q_max = 0.0
    for k in range(n):
        s = slot_of[k]
        if s >= 0:
            i = ids[k] & LOCAL_MASK
            if slot_id[s] == i:
                scratch[m] = s
                m += 1
                q = stored[k]
                if 0.0 < q < MIN_STORED:
                    q = MIN_STORED
                q_max = max(q_max, q)
                zero_delta += _write_leaf(leaves, s, q, True)
    touched += _repair(sums, cum, mins, marks, stamp, leaves, offsets, depth, scratch, m)
    if touched != touched:  # never true (finite leaves and integer slot ids): keeps the touch loads alive
        q_max = -1.0
    return -1, m, zero_delta, q_max


@nb.njit(cache=True, nogil=True)
def probabilities(leaves, slots, total, uniform, count, out):
    """``out[k] = P(slots[k]) = (1-u) q / total + u / count``."""
    scale = (1.0 - uniform) / total
    base = uniform / count
    for k in range(slots.shape[0]):
        out[k] = leaves[slots[k]] * scale + base


@nb.njit(cache=True, nogil=True)
def rebuild(sums, cum, mins, leaves, offsets, sizes, depth):
    """Recompute every internal entry from the leaves (after a bulk load).

    Computes each entry exactly as ``_repair`` does, so an incrementally
    repaired tree and a rebuilt one are bit-identical.
    """
    B = BRANCHING
    for level in range(depth - 1, -1, -1):
        off = offsets[level]
        if level == depth - 1:
            below = leaves.shape[0] // B
            for e in range(sizes[level]):
                if e < below:
                    total, m = _leaf_block(leaves, e * B)
                else:
                    total, m = 0.0, np.inf
                sums[off + e] = total
                mins[off + e] = m
        else:
            below = sizes[level + 1] // B
            for e in range(sizes[level]):
                if e < below:
                    mins[off + e] = _block_min(mins, offsets[level + 1] + e * B)
                    sums[off + e] = _refresh_block(sums, cum, offsets[level + 1] + e * B)
                else:
                    mins[off + e] = np.inf
                    sums[off + e] = 0.0
    _refresh_block(sums, cum, 0)


@nb.njit(cache=True, nogil=True, inline="always")
def _count_at_most(cum, base, x):
    """How many of the 16 non-decreasing running sums at ``base`` are <= ``x``.

    Two rounds of independent compares: the quarter boundaries (4), then the
    quarter found (3). Seven compares instead of sixteen (numba does not vectorise
    the counting loop), and unlike a binary search only one load waits on another,
    which matters when the block comes from L2 (a binary search measured slower).
    """
    q = ((cum[base + 3] <= x) + (cum[base + 7] <= x)) + ((cum[base + 11] <= x) + (cum[base + 15] <= x))
    if q == 4:
        return BRANCHING
    b = base + 4 * q
    return 4 * q + ((cum[b] <= x) + (cum[b + 1] <= x)) + (cum[b + 2] <= x)


@nb.njit(cache=True, nogil=True, inline="always")
def _scan_leaves(leaves, base, x):
    """Leaf of the block at ``base`` holding target ``x``, by a running-sum scan."""
    B = BRANCHING
    acc = 0.0
    m = 0
    for j in range(B):
        acc += leaves[base + j]
        m += acc <= x
    if m >= B or leaves[base + m] == 0.0:
        # x reached the block total through rounding: take the last non-empty leaf
        m = min(m, B - 1)
        while m > 0 and leaves[base + m] == 0.0:
            m -= 1
    return m


@nb.njit(cache=True, nogil=True)
def descend(cum, leaves, offsets, depth, targets, out):
    """Leaf index for each prefix-sum target in ``[0, total)``.

    All walks advance together, one level at a time: first a pass that touches the
    cache lines of every walk's block (independent loads, so their misses overlap),
    then the search inside each block, now served from cache. Internal blocks keep
    running sums, so the child is found by counting running sums <= target;
    leaf blocks (most of the memory) keep plain values and are scanned, which makes
    updates cheaper. Returns a checksum of the touched values.
    """
    B = BRANCHING
    n = targets.shape[0]
    node = np.zeros(n, dtype=np.int64)
    u = targets.copy()
    touched = 0.0
    for level in range(depth):
        base_l = offsets[level]
        if level >= 2:
            for i in range(n):
                base = base_l + node[i] * B
                touched += cum[base] + cum[base + B - 1]
        for i in range(n):
            base = base_l + node[i] * B
            x = u[i]
            m = _count_at_most(cum, base, x)
            if m >= B:
                # x reached the block total through rounding: take the last non-empty child
                m = B - 1
                while m > 0 and cum[base + m] == cum[base + m - 1]:
                    m -= 1
                lo = cum[base + m - 1] if m > 0 else 0.0
                x = lo + 0.5 * (cum[base + m] - lo)
            if m > 0:
                x -= cum[base + m - 1]
            u[i] = x
            node[i] = node[i] * B + m
    for i in range(n):
        base = node[i] * B
        touched += leaves[base] + leaves[base + B - 1]
    for i in range(n):
        out[i] = node[i] * B + _scan_leaves(leaves, node[i] * B, u[i])
    return touched


@nb.njit(cache=True, nogil=True)
def sample_points(cum, leaves, offsets, depth, prioritized, uniform, mask, count, live, identity, slot_id,
                  scale, base, slots, q, probs, ids):
    """A whole sample from given points in one pass: tree search, ids, stored priorities, probabilities.

    A point of ``prioritized`` (in [0, 1)) selects the leaf whose cumulative
    interval holds ``point * total`` (the tree's own total, which must be
    positive); a point of ``uniform`` selects live item ``floor(point * count)``
    (through ``live`` unless the live slots are exactly ``0..count-1``). Output
    position ``i`` takes the next uniform point where ``mask[i]`` is true and the
    next prioritized one elsewhere; an empty ``mask`` puts every prioritized point
    first. Then ``q[i]`` is the stored priority, ``probs[i] = q[i] * scale + base``
    (the caller's totals, possibly a sharded buffer's) and ``ids[i] = slot_id[slots[i]]``.
    """
    kp = prioritized.shape[0]
    ku = uniform.shape[0]
    total = cum[BRANCHING - 1]
    targets = np.empty(kp, dtype=np.float64)
    for j in range(kp):
        targets[j] = prioritized[j] * total
    found = np.empty(kp, dtype=np.int64)
    descend(cum, leaves, offsets, depth, targets, found)
    n = kp + ku
    use_mask = mask.shape[0] == n
    jp = 0
    ju = 0
    for i in range(n):
        if (mask[i] if use_mask else i >= kp):
            pos = min(int(uniform[ju] * count), count - 1)
            ju += 1
            slots[i] = pos if identity else live[pos]
        else:
            slots[i] = found[jp]
            jp += 1
    for i in range(n):
        ids[i] = slot_id[slots[i]]
    for i in range(n):
        v = leaves[slots[i]] + 0.0  # a live zero is stored as -0.0
        q[i] = v
        probs[i] = v * scale + base
