"""Shard tags in item ids: which shard, and which life of that shard, issued an id.

A sharded buffer hands out ids of its shards' buffers with a tag in the high
bits, by the engine's one id rule (:mod:`ReplayTables.engine.ids`: ``tag_ids``,
``shard_of``, ``untag``, 15 bits below the sign bit; ``NOT_STORED`` is never
tagged). The shard's buffer itself keeps tag 0; the shard tags what leaves it,
because its tag changes when it restarts. The tag is ``index + num_shards * life``: ``index`` routes an
id to its shard (``tag % num_shards``) and ``life`` counts the shard's restarts.

Why a life in the tag: a restarted shard starts over (empty, or from its last
checkpoint) and hands out ids that its previous life may already have handed
out for other items. With the life in the tag, every id of an earlier life is
recognised as stale by the shard, so a priority update routed to it after the
restart is skipped and counted and never touches a newcomer. Lives wrap after
``2**15 // num_shards`` restarts of one shard.
"""
from __future__ import annotations

import numpy as np

from ReplayTables.engine.ids import MAX_SHARDS, SHARD_SHIFT, shard_of, tag_ids, untag

__all__ = ["MAX_TAG", "lives_per_shard", "shard_index", "tag_for", "tag_ids", "tags_of", "untag"]

#: The largest tag (the engine's id rule has room for ``MAX_SHARDS`` of them).
MAX_TAG = MAX_SHARDS - 1


def lives_per_shard(num_shards: int) -> int:
    """How many lives of one shard have distinct tags before they wrap."""
    return (MAX_TAG + 1) // num_shards


def tag_for(index: int, num_shards: int, life: int) -> int:
    """The tag of shard ``index``'s ids in its ``life``-th life (0 = first)."""
    return index + num_shards * (life % lives_per_shard(num_shards))


def tags_of(ids: np.ndarray) -> np.ndarray:
    """The tag of each id (-1 for a negative id)."""
    return shard_of(ids)


def shard_index(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard each (non-negative) id routes to."""
    result: np.ndarray = (ids >> SHARD_SHIFT) % num_shards
    return result
