"""Compiled kernels for the sum tree (numba, cached on disk).

This module is the only place that imports numba, and it is imported lazily on
the first prioritized operation, so ``import ReplayTables`` stays fast and JIT-free.

Tree layout (see ``sumtree.py``): ``leaves`` holds the raw priorities, padded to
a whole number of blocks of ``BRANCHING``. Internal levels ``0..D-1`` live in
the flat arrays ``sums`` and ``mins`` (level 0 on top, one block); entry ``e`` of
level ``l`` stands for block ``e`` of the level below (level ``D`` = the leaves):
``sums`` holds that block's total and ``mins`` its smallest positive leaf. A live
item whose priority is zero is stored as ``-0.0`` (an empty slot as ``+0.0``): both
add and compare as zero, and the sign tells them apart without another array.

Random access into a tree of millions of leaves is bound by memory latency, not
arithmetic, so each kernel first *touches* the cache lines it is about to use in
a tight loop with no dependencies (the CPU then has many misses in flight at
once), and only then does the arithmetic on data that is already in cache.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

BRANCHING = 16  # 16 float64 = two cache lines per block: 5 internal levels for 10^6 leaves


@nb.njit(cache=True, nogil=True, inline="always")
def _entry_of_block(sums, mins, leaves, offsets, depth, level, e):
    """Total and min-positive of block ``e`` one level below internal ``level``.

    Four independent partial sums keep the add latency chain short.
    """
    B = BRANCHING
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    m = np.inf
    if level == depth - 1:
        base = e * B
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
    else:
        base = offsets[level + 1] + e * B
        for j in range(0, B, 4):
            a0 += sums[base + j]
            a1 += sums[base + j + 1]
            a2 += sums[base + j + 2]
            a3 += sums[base + j + 3]
            m = min(m, min(min(mins[base + j], mins[base + j + 1]), min(mins[base + j + 2], mins[base + j + 3])))
    return (a0 + a1) + (a2 + a3), m


@nb.njit(cache=True, nogil=True, inline="always")
def _is_live_zero(v):
    """Live items of priority zero are stored as -0.0, empty slots as +0.0."""
    return 1 if (v == 0.0 and math.copysign(1.0, v) < 0.0) else 0


@nb.njit(cache=True, nogil=True, inline="always")
def _refresh_running_sums(sums, cum, off, block):
    """Running sums of one internal block, from its entries' totals."""
    B = BRANCHING
    base = off + block * B
    acc = 0.0
    for j in range(B):
        acc += sums[base + j]
        cum[base + j] = acc


@nb.njit(cache=True, nogil=True, inline="always")
def _repair(sums, cum, mins, marks, stamp, leaves, offsets, depth, slots, n):
    """Recompute every internal entry above ``slots[:n]`` from its children.

    Recomputing (never adjusting by a delta) keeps rounding errors from
    accumulating however many updates are made. ``marks``/``stamp`` let each level
    visit an entry once per call without sorting (``stamp`` must grow per call).
    """
    B = BRANCHING
    touched = 0.0
    if n == 0:
        return touched
    entries = np.empty(n, dtype=np.int64)
    parents = np.empty(n, dtype=np.int64)
    level = depth - 1
    off = offsets[level]
    count = 0
    for k in range(n):  # unique leaf blocks = changed entries of the lowest internal level
        e = slots[k] // B
        if marks[off + e] != stamp:
            marks[off + e] = stamp
            entries[count] = e
            count += 1
    while True:
        off = offsets[level]
        scan_level = level == depth - 1 and level > 0  # no running sums kept there
        for k in range(count):  # bring the entries into cache, misses overlapping
            touched += sums[off + entries[k]] + mins[off + entries[k]]
        for k in range(count):
            e = entries[k]
            total, m = _entry_of_block(sums, mins, leaves, offsets, depth, level, e)
            sums[off + e] = total
            mins[off + e] = m
        # blocks of this level that changed = changed entries of the level above
        up = offsets[level - 1] if level > 0 else -1
        n_par = 0
        for k in range(count):
            b = entries[k] // B
            if level == 0 or marks[up + b] != stamp:
                if level > 0:
                    marks[up + b] = stamp
                parents[n_par] = b
                n_par += 1
                if level == 0:
                    break
        if not scan_level:
            for k in range(n_par):
                _refresh_running_sums(sums, cum, off, parents[k])
        if level == 0:
            break
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
def set_leaves(sums, cum, mins, marks, stamp, leaves, offsets, sizes, depth, slots, values, live):
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
                  priorities, stored, scratch):
    """Priority update by item id, fused: check, map ids to slots, skip stale ids,
    set the leaves to ``stored`` (the caller's ``priorities ** exponent``, computed
    with numpy's vectorised power) and repair the tree.

    Returns ``(bad, applied, zero_delta, q_max)``. ``bad >= 0`` is the index of the
    first priority that is negative, NaN or infinite, or whose stored value
    overflows to infinity; then nothing was changed.
    Ids that are negative or no longer live are skipped (``applied`` counts the rest).
    """
    n = ids.shape[0]
    for k in range(n):
        p = priorities[k]
        if not (p >= 0.0 and p < np.inf and stored[k] < np.inf):
            return k, 0, 0, 0.0
    cap = slot_id.shape[0]
    source = np.empty(n, dtype=np.int64)  # position in ``ids`` of each live id kept in ``scratch``
    m = 0
    for k in range(n):
        i = ids[k]
        if i >= 0:
            s = i % cap
            if slot_id[s] == i:
                scratch[m] = s
                source[m] = k
                m += 1
    touched = _touch_leaf_blocks(leaves, scratch, m)
    zero_delta = 0
    q_max = 0.0
    for j in range(m):
        q = stored[source[j]]
        q_max = max(q_max, q)
        zero_delta += _write_leaf(leaves, scratch[j], q, True)
    touched += _repair(sums, cum, mins, marks, stamp, leaves, offsets, depth, scratch, m)
    if touched < -1.0:  # never true (sums are >= 0): keeps the touch loads alive
        q_max = -1.0
    return -1, m, zero_delta, q_max


@nb.njit(cache=True, nogil=True)
def probabilities_and_weights(leaves, slots, total, uniform, count, p_min, beta, probs, weights):
    """``P(i) = (1-u) q_i / total + u / count`` and ``w_i = (P(i) / p_min) ** -beta``."""
    scale = (1.0 - uniform) / total
    base = uniform / count
    for k in range(slots.shape[0]):
        p = leaves[slots[k]] * scale + base
        probs[k] = p
        if beta == 0.0:
            weights[k] = 1.0
        elif p > 0.0:
            weights[k] = (p / p_min) ** (-beta)
        else:
            weights[k] = np.inf


@nb.njit(cache=True, nogil=True)
def rebuild(sums, cum, mins, leaves, offsets, sizes, depth):
    """Recompute every internal entry from the leaves (after a bulk load)."""
    B = BRANCHING
    for level in range(depth - 1, -1, -1):
        below = leaves.shape[0] if level == depth - 1 else sizes[level + 1]
        off = offsets[level]
        for e in range(sizes[level]):
            if e < below // B:
                total, m = _entry_of_block(sums, mins, leaves, offsets, depth, level, e)
            else:
                total, m = 0.0, np.inf
            sums[off + e] = total
            mins[off + e] = m
        if level == depth - 1 and level > 0:
            continue  # the lowest internal level is searched by scanning, not by running sums
        for b in range(sizes[level] // B):
            _refresh_running_sums(sums, cum, off, b)


@nb.njit(cache=True, nogil=True, inline="always")
def _scan_block(arr, base, x):
    """Child of a block holding target ``x`` by a running-sum scan; returns (child, x inside it)."""
    B = BRANCHING
    acc = 0.0
    below = 0.0
    m = 0
    for j in range(B):
        acc += arr[base + j]
        if acc <= x:
            below = acc
            m += 1
    if m >= B or arr[base + m] == 0.0:
        # x reached the block total through rounding: take the last non-empty child
        m = min(m, B - 1)
        while m > 0 and arr[base + m] == 0.0:
            m -= 1
        below = 0.0
        for j in range(m):
            below += arr[base + j]
        return m, 0.5 * arr[base + m]
    return m, x - below


@nb.njit(cache=True, nogil=True)
def descend(cum, sums, leaves, offsets, depth, targets, out):
    """Leaf index for each prefix-sum target in ``[0, total)``.

    All walks advance together, one level at a time: first a pass that touches the
    cache lines of every walk's block (independent loads, so their misses overlap),
    then the search inside each block, now served from cache. Upper blocks keep
    running sums, so the child is a branch-free count of sums <= target; the lowest
    internal level and the leaves (most of the memory) keep plain values and are
    scanned, which makes updates cheaper. Returns a checksum of the touched values.
    """
    B = BRANCHING
    n = targets.shape[0]
    node = np.zeros(n, dtype=np.int64)
    u = targets.copy()
    touched = 0.0
    counted = depth - 1 if depth > 1 else 1  # levels searched by counting running sums
    for level in range(counted):
        base_l = offsets[level]
        if level >= 2:
            for i in range(n):
                base = base_l + node[i] * B
                touched += cum[base] + cum[base + B - 1]
        for i in range(n):
            base = base_l + node[i] * B
            x = u[i]
            m = 0
            for j in range(B):
                m += cum[base + j] <= x
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
    if depth > 1:
        base_l = offsets[depth - 1]
        for i in range(n):
            base = base_l + node[i] * B
            touched += sums[base] + sums[base + B - 1]
        for i in range(n):
            m, x = _scan_block(sums, base_l + node[i] * B, u[i])
            u[i] = x
            node[i] = node[i] * B + m
    for i in range(n):
        base = node[i] * B
        touched += leaves[base] + leaves[base + B - 1]
    for i in range(n):
        m, x = _scan_block(leaves, node[i] * B, u[i])
        out[i] = node[i] * B + m
    return touched


@nb.njit(cache=True, nogil=True)
def sample_mixture(cum, sums, leaves, offsets, depth, draws, uniform, total, count, live, identity, p_min, beta,
                   slots, probs, weights):
    """A whole prioritized sample in one pass: mixture split, tree search, probabilities, weights.

    ``draws[i]`` is a uniform number in [0, 1). Below ``uniform`` it picks a live item
    uniformly (``floor(draws[i] / uniform * count)``, through ``live`` unless the live
    slots are exactly ``0..count-1``); otherwise ``(draws[i] - uniform) / (1 - uniform)``
    of the total priority mass is searched in the tree. Both halves reuse the one
    draw, which is exact: conditioned on its half, the rescaled draw is uniform.
    Then ``P(i) = (1-u) q_i / total + u / count`` and ``w_i = (P(i) / p_min) ** -beta``.
    """
    n = draws.shape[0]
    targets = np.empty(n, dtype=np.float64)
    which = np.empty(n, dtype=np.int64)
    k = 0
    rest = 1.0 - uniform
    for i in range(n):
        d = draws[i]
        if d < uniform:
            pos = min(int(d / uniform * count), count - 1)
            slots[i] = pos if identity else live[pos]
        else:
            targets[k] = (d - uniform) / rest * total
            which[k] = i
            k += 1
    found = np.empty(k, dtype=np.int64)
    descend(cum, sums, leaves, offsets, depth, targets[:k], found)
    for j in range(k):
        slots[which[j]] = found[j]
    probabilities_and_weights(leaves, slots, total, uniform, count, p_min, beta, probs, weights)
