"""One error family for the whole library.

Every error raised on bad input is a :class:`ReplayTablesError`, and its message
names the field, the value it got and what was expected, so a user can fix the
call without reading our source. Each subclass also derives from the builtin a
Python user would try to catch (``ValueError``, ``LookupError``), so existing
``except ValueError`` code keeps working.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "BufferClosedError",
    "CheckpointError",
    "ConfigError",
    "EmptyBufferError",
    "EpisodeError",
    "PriorityError",
    "RateLimitTimeout",
    "ReplayTablesError",
    "SchemaError",
    "SharedMemoryError",
    "StaleIdError",
]


def _short(value: Any, limit: int = 80) -> str:
    """A readable, bounded rendering of a user value for an error message."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and getattr(value, "size", 0) > 8:
        return f"array(shape={tuple(shape)}, dtype={dtype})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplayTablesError(Exception):
    """Base of every error the library raises on bad input or bad state.

    ``field`` is the name of what was wrong, ``value`` what was given and
    ``expected`` what would have been accepted.
    """

    def __init__(self, field: str, value: Any, expected: str, detail: str = "") -> None:
        self.field = field
        self.value = value
        self.expected = expected
        message = f"{field}: got {_short(value)}, expected {expected}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.value, self.expected))


class SchemaError(ReplayTablesError, ValueError):
    """An item does not match the buffer's fields, shapes or dtypes."""


class PriorityError(ReplayTablesError, ValueError):
    """A priority is negative, NaN, infinite, missing or of the wrong length."""


class StaleIdError(ReplayTablesError, LookupError):
    """An id names an item that is not (or no longer) in the buffer."""


class EmptyBufferError(ReplayTablesError, ValueError):
    """A sample was asked of a buffer with nothing to sample from."""


class EpisodeError(ReplayTablesError, ValueError):
    """A step-stream call out of order: a step after an episode ended, or an episode begun twice."""


class ConfigError(ReplayTablesError, ValueError):
    """A constructor or config argument is unknown or out of range."""


class CheckpointError(ReplayTablesError, OSError):
    """A checkpoint directory is missing, foreign, truncated or corrupted."""


class RateLimitTimeout(ReplayTablesError, TimeoutError):
    """A call that the rate limiter held back was still not allowed when its timeout ran out.

    Nothing was changed: the insert or sample that timed out did not happen.
    """


class BufferClosedError(ReplayTablesError, RuntimeError):
    """The buffer was closed, either while this call waited or before it began.

    Not bad input but a state of the buffer, hence ``RuntimeError`` rather than
    ``ValueError``; nothing was changed by the call that raised it.
    """


class SharedMemoryError(ReplayTablesError, OSError):
    """A shared-memory segment cannot be created (too little /dev/shm) or attached (closed, gone or foreign)."""
