"""Shard tags in item ids: which shard, and which life of that shard, issued an id.

A sharded buffer hands out ids of its shards' buffers with a tag in the high
bits: ``tagged = (tag << TAG_SHIFT) | id``, with ``SHARD_BITS = 15`` bits of tag
below the sign bit, so tagged ids stay non-negative int64 (``NOT_STORED``, -1,
is never tagged). The tag is ``index + num_shards * life``: ``index`` routes an
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

__all__ = ["SHARD_BITS", "TAG_SHIFT", "lives_per_shard", "shard_index", "tag_for", "tag_ids", "tags_of", "untag"]

SHARD_BITS = 15
TAG_SHIFT = 63 - SHARD_BITS
_ID_MASK = np.int64((1 << TAG_SHIFT) - 1)
MAX_TAG = (1 << SHARD_BITS) - 1


def lives_per_shard(num_shards: int) -> int:
    """How many lives of one shard have distinct tags before they wrap."""
    return (MAX_TAG + 1) // num_shards


def tag_for(index: int, num_shards: int, life: int) -> int:
    """The tag of shard ``index``'s ids in its ``life``-th life (0 = first)."""
    return index + num_shards * (life % lives_per_shard(num_shards))


def tag_ids(ids: np.ndarray, tag: int) -> np.ndarray:
    """``ids`` (untagged int64, ``-1`` for not stored) with ``tag`` set in their high bits."""
    out = ids | np.int64(tag << TAG_SHIFT)
    return np.where(ids < 0, ids, out)


def tags_of(ids: np.ndarray) -> np.ndarray:
    """The tag of each (non-negative) id."""
    return ids >> TAG_SHIFT


def shard_index(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard each (non-negative) id routes to."""
    result: np.ndarray = tags_of(ids) % num_shards
    return result


def untag(ids: np.ndarray) -> np.ndarray:
    """The shard buffer's own id of each tagged id."""
    result: np.ndarray = ids & _ID_MASK
    return result
