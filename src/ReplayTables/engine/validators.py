"""Number validators: the one place that says what an integer or a number argument is.

Configuration (constructor arguments, call arguments) and saved state use the
same rules, with different error classes: a :class:`~ReplayTables.errors.ConfigError`
for an argument, a :class:`~ReplayTables.errors.CheckpointError` for a saved value
(``state_checks.py``). A bool is neither an integer nor a number here, and a
number must be finite (``inf`` or NaN as an exponent, a rate or a probability
only ever produces wrong numbers later).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ReplayTables.errors import ConfigError, ReplayTablesError

__all__ = ["integer", "number"]


def integer(name: str, value: Any, lo: int, hi: int, error: type[ReplayTablesError] = ConfigError,
            expected: str | None = None) -> int:
    """``value`` as an int if it is an integer (Python or numpy, not a bool) in ``[lo, hi]``;
    else ``error`` naming ``name``, the value and ``expected`` (default: the range)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise error(name, value, expected or f"an integer from {lo} to {hi}")
    return int(value)


def number(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf,
           error: type[ReplayTablesError] = ConfigError) -> float:
    """``value`` as a float if it is a finite real number (not a bool) in ``[lo, hi]``; else ``error``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
        raise error(name, value, f"a finite number in [{lo}, {hi}]")
    return float(value)
