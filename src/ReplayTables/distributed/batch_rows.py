"""How many rows a batch (a structure whose fields have a leading axis) carries, without checking it."""
from __future__ import annotations

from typing import Any

__all__ = ["batch_rows"]


def batch_rows(items: Any) -> int:
    """The leading length of the first array field of ``items`` (0 if there is none; the
    buffer checks the whole batch when it stores it)."""
    if isinstance(items, dict):
        values: Any = items.values()
    elif isinstance(items, tuple):
        values = items
    else:
        values = getattr(items, "__dict__", {}).values()
    for v in values:
        shape = getattr(v, "shape", None)
        if shape:
            return int(shape[0])
        if isinstance(v, dict):
            return batch_rows(v)
    return 0
