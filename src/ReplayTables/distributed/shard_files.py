"""The small file a shard writes beside its buffer's checkpoint, read back as untrusted input."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ReplayTables.distributed.tags import lives_per_shard, tag_for
from ReplayTables.engine.files import read_small
from ReplayTables.engine.state_checks import MAX_INT, integer, mapping
from ReplayTables.errors import CheckpointError

__all__ = ["read_shard_file"]


def read_shard_file(path: Path, num_shards: int, index: int) -> dict[str, Any]:
    """``{"tag", "life", "stale_other_life"}`` of shard ``index``, every value checked."""
    raw = read_small(path, "shard.json", "a shard's counts", 4096)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(str(path), "unreadable", "a JSON object", str(exc)[:200]) from None
    m = mapping(f"shard {index}", value, ("tag", "life", "stale_other_life"))
    life = integer(f"shard {index}.life", m["life"], 0, lives_per_shard(num_shards) - 1)
    tag = integer(f"shard {index}.tag", m["tag"], 0, MAX_INT)
    if tag != tag_for(index, num_shards, life):
        raise CheckpointError(f"shard {index}.tag", tag, f"{tag_for(index, num_shards, life)} (shard {index} of "
                                                         f"{num_shards} in life {life})")
    stale = integer(f"shard {index}.stale_other_life", m["stale_other_life"], 0, MAX_INT)
    return {"tag": tag, "life": life, "stale_other_life": stale}
