"""How many bytes a request needs, checked against what this machine has, before allocating.

numpy raises a bare ``MemoryError`` (or, worse, succeeds and lets the process be
killed later) when asked for more memory than exists. A buffer knows up front
what a capacity, a sample size or a checkpoint's arrays will cost, so it checks
that against the machine's memory first and says what it needed in a
:class:`~ReplayTables.errors.ConfigError` (or the error class the caller names,
e.g. :class:`~ReplayTables.errors.CheckpointError` on a load path).

The limit is the machine's physical memory plus swap: larger requests can never
succeed. Smaller ones may still fail if other processes hold the memory; that is
the operating system's call, not ours.
"""
from __future__ import annotations

import os
from typing import Any

from ReplayTables.errors import ConfigError, ReplayTablesError

__all__ = ["check_allocation", "format_bytes", "machine_bytes"]

_machine_bytes: int | None = None


def machine_bytes() -> int:
    """Physical memory plus swap of this machine, in bytes (read once per process)."""
    global _machine_bytes
    if _machine_bytes is None:
        total = 0
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "SwapTotal"):
                        total += int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            total = 0
        if total <= 0:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError, AttributeError):
                total = 2**62  # unknown platform: do not refuse anything
        _machine_bytes = int(total)
    return _machine_bytes


def format_bytes(n: int) -> str:
    """``n`` bytes as a short human-readable figure (``1.5 GiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def check_allocation(field: str, value: Any, nbytes: int, what: str,
                     error: type[ReplayTablesError] = ConfigError) -> None:
    """Refuse a request of ``nbytes`` that cannot fit in this machine's memory.

    ``field`` / ``value`` name what the user asked for (``max_size``, ``2**40``);
    ``what`` says what the bytes are for (``"storage of 2**40 items of 165 bytes"``).
    """
    limit = machine_bytes()
    if nbytes > limit:
        raise error(field, value, f"a size that fits in this machine's memory ({format_bytes(limit)} with swap)",
                    f"{what} needs {format_bytes(nbytes)}")
