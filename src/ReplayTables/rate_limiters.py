"""Rate limiters: when an insert or a sample must wait (Reverb's model).

A rate limiter keeps learners and actors in step. It holds two counts, *inserts*
(every item ever inserted) and *samples* (every item ever sampled); deletes and
evictions lower the table's *size* (items stored now) but never the counts. With
``spi = samples_per_insert`` and ``m = min_size_to_sample``:

- a sample of ``k`` items may proceed when ``size >= m`` and
  ``inserts * spi - samples - k >= min_diff``;
- an insert of ``k`` items may proceed when ``size + k <= m`` or
  ``(inserts + k) * spi - samples <= max_diff``.

Every limiter is these four numbers; :func:`MinSize` and
:func:`SampleToInsertRatio` are presets that choose them. The limiter itself
only *decides* (``can_insert`` / ``can_sample``) and *counts*
(``record_insert`` / ``record_sample``); it never locks or waits. The table
that owns it holds its lock around both and waits on that lock's condition
(see :mod:`ReplayTables.engine.table_lock` and
:mod:`ReplayTables.engine.admission`).

The counts live in a two-element ``int64`` numpy array (``[inserts, samples]``)
that the limiter owns until :meth:`RateLimiter.bind` gives it another one, for
instance a view into shared memory, so several processes see one pair of
counts. ``int64`` because counts are integers and stay exact to 2**63; the
products with ``samples_per_insert`` are computed in float64 as Reverb does.

Differences from Reverb (``reverb/cc/rate_limiter.cc``), on purpose:

- Reverb's conditions for ``k`` items are the ones above (``CanInsert`` /
  ``CanSample``), with its size being ``inserts - deletes``; it keeps a delete
  count for that, here the table passes its size instead. But Reverb's blocking
  calls only ever wait for one item; here a call of ``k`` items waits until all
  ``k`` are allowed at once.
- Reverb validates only in its Python presets and merely logs a warning when
  ``max_diff < samples_per_insert * min_size_to_sample``; here every limiter
  is validated at construction and that case is a :class:`ConfigError`, since
  a program that inserts and samples from one thread would deadlock.
- All four numbers must be finite (so a config is plain JSON): :func:`MinSize`
  uses ``-/+ sys.float_info.max`` for "no bound", as Reverb does.
"""
from __future__ import annotations

import math
import numbers
import operator
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["MinSize", "RateLimiter", "SampleToInsertRatio"]

_INT64_MAX = 2**63 - 1
_CONFIG_KEYS = ("samples_per_insert", "min_size_to_sample", "min_diff", "max_diff")
_STATE_KEYS = ("inserts", "samples")


class RateLimiter:
    """Decides whether an insert or a sample of ``k`` items may proceed now.

    Args:
        samples_per_insert: ``spi``, how many times each inserted item should be
            sampled on average over its lifetime; a finite number > 0.
        min_size_to_sample: ``m``, no sample until the table holds this many
            items; an integer >= 1.
        min_diff, max_diff: the band that ``inserts * spi - samples`` must stay in
            (samples may take it down to ``min_diff``, inserts up to ``max_diff``);
            finite numbers with ``max_diff - min_diff >= 2 * max(1, spi)`` and
            ``min_diff <= spi * m <= max_diff``.

    Raises:
        ConfigError: naming the argument, its value and what was expected.

    The decision methods take the table's current ``size`` as an argument and
    do not lock: the caller holds the table's lock across the decision, the
    operation and the ``record_*`` call, so they are one atomic step.
    """

    __slots__ = ("_counts", "_max_diff", "_min_diff", "_min_size", "_spi", "_view")

    def __init__(self, samples_per_insert: float, min_size_to_sample: int,
                 min_diff: float, max_diff: float) -> None:
        spi, m, lo, hi = _check_config(samples_per_insert, min_size_to_sample, min_diff, max_diff)
        self._spi = spi
        self._min_size = m
        self._min_diff = lo
        self._max_diff = hi
        self._counts = np.zeros(2, dtype=np.int64)
        # a memoryview reads and writes the array's two int64s as Python ints:
        # ~10x cheaper than numpy scalar indexing and arithmetic on the add path
        self._view = self._counts.data

    # ------------------------------------------------------------ the numbers
    @property
    def samples_per_insert(self) -> float:
        return self._spi

    @property
    def min_size_to_sample(self) -> int:
        return self._min_size

    @property
    def min_diff(self) -> float:
        return self._min_diff

    @property
    def max_diff(self) -> float:
        return self._max_diff

    @property
    def inserts(self) -> int:
        """Items inserted so far (evictions and deletes do not lower it)."""
        return int(self._view[0])

    @property
    def samples(self) -> int:
        """Items sampled so far (a sample of ``k`` items counts ``k``)."""
        return int(self._view[1])

    @property
    def counts(self) -> np.ndarray:
        """The live ``int64[2]`` array ``[inserts, samples]`` (the bound one after ``bind``)."""
        return self._counts

    # ------------------------------------------------------------ decisions
    def can_insert(self, k: int, size: int) -> bool:
        """Whether ``k`` items may be inserted into a table that holds ``size`` items now.

        ``size`` is the size before the insert (evictions it causes come after).
        """
        if k.__class__ is not int or k < 1:
            k = _check_k(k)
        if size + k <= self._min_size:
            return True  # filling up to min_size_to_sample is always allowed
        view = self._view
        return (view[0] + k) * self._spi - view[1] <= self._max_diff

    def can_sample(self, k: int, size: int) -> bool:
        """Whether ``k`` items may be sampled from a table that holds ``size`` items now."""
        if k.__class__ is not int or k < 1:
            k = _check_k(k)
        if size < self._min_size:
            return False
        view = self._view
        return view[0] * self._spi - view[1] - k >= self._min_diff

    def record_insert(self, k: int) -> None:
        """Count ``k`` inserted items (call after the insert, under the table's lock)."""
        if k.__class__ is not int or k < 1:
            k = _check_k(k)
        self._view[0] += k

    def record_sample(self, k: int) -> None:
        """Count ``k`` sampled items (call after the sample, under the table's lock)."""
        if k.__class__ is not int or k < 1:
            k = _check_k(k)
        self._view[1] += k

    def reset(self) -> None:
        """Zero both counts, for a table that was emptied as if new (as Reverb does on reset)."""
        self._view[0] = 0
        self._view[1] = 0

    # ------------------------------------------------------------ where the counts live
    def bind(self, counts: np.ndarray) -> None:
        """Keep the counts in ``counts`` from now on (e.g. a view into shared memory).

        ``counts`` must be a writeable, contiguous ``int64`` array of shape ``(2,)``
        holding ``[inserts, samples]``. Its current values become the counts (an
        attaching process adopts what is already there); to carry this limiter's
        counts over, copy them in first: ``counts[:] = limiter.counts``. The
        limiter keeps a buffer view of ``counts`` until it is bound elsewhere or
        dropped, so release the limiter before closing the memory behind it.
        """
        if not isinstance(counts, np.ndarray):
            raise ConfigError("counts", counts, "a numpy array")
        if counts.dtype != np.int64 or counts.shape != (2,):
            raise ConfigError("counts", f"{counts.dtype}{list(counts.shape)}",
                              "an int64 array of shape (2,) in native byte order")
        if not counts.flags.writeable or not counts.flags.c_contiguous:
            raise ConfigError("counts", counts, "a writeable, contiguous array")
        _check_counts(int(counts[0]), int(counts[1]), ConfigError, "counts")
        self._counts = counts
        self._view = counts.data

    # ------------------------------------------------------------ config and state
    def config(self) -> dict[str, Any]:
        """The four numbers as plain JSON values; ``from_config`` rebuilds the limiter."""
        return {"samples_per_insert": self._spi, "min_size_to_sample": self._min_size,
                "min_diff": self._min_diff, "max_diff": self._max_diff}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RateLimiter:
        """A new limiter (counts zero) from ``config``'s dict; unknown or missing keys are a ConfigError."""
        if not isinstance(config, Mapping):
            raise ConfigError("rate_limiter", config, "a dict with keys " + ", ".join(_CONFIG_KEYS))
        if set(config) != set(_CONFIG_KEYS):
            raise ConfigError("rate_limiter", sorted(map(str, config)), "exactly the keys " + ", ".join(_CONFIG_KEYS))
        return cls(config["samples_per_insert"], config["min_size_to_sample"],
                   config["min_diff"], config["max_diff"])

    def state_dict(self) -> dict[str, int]:
        """The counts, ``{"inserts": ..., "samples": ...}``, as plain ints."""
        return {"inserts": int(self._view[0]), "samples": int(self._view[1])}

    def check_state(self, state: Any) -> None:
        """Raise ``CheckpointError`` if ``load_state_dict`` would refuse ``state``; change nothing."""
        if not isinstance(state, Mapping):
            raise CheckpointError("rate_limiter", state, "a dict with keys inserts, samples")
        if set(state) != set(_STATE_KEYS):
            raise CheckpointError("rate_limiter", sorted(map(str, state)), "exactly the keys inserts, samples")
        values = []
        for key in _STATE_KEYS:
            value = state[key]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise CheckpointError(f"rate_limiter.{key}", value, "an integer count")
            values.append(int(value))
        _check_counts(values[0], values[1], CheckpointError, "rate_limiter")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict``'s counts; a bad state is a CheckpointError and changes nothing."""
        self.check_state(state)
        self._view[0] = int(state["inserts"])
        self._view[1] = int(state["samples"])

    def __repr__(self) -> str:
        return (f"RateLimiter(samples_per_insert={self._spi!r}, min_size_to_sample={self._min_size!r}, "
                f"min_diff={self._min_diff!r}, max_diff={self._max_diff!r}) "
                f"with inserts={self._view[0]}, samples={self._view[1]}")

    # a memoryview does not pickle: a pickled or copied limiter owns a copy of the counts
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config(), "state": self.state_dict()}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        fresh = RateLimiter.from_config(saved["config"])
        fresh.load_state_dict(saved["state"])
        for name in RateLimiter.__slots__:
            setattr(self, name, getattr(fresh, name))


# ---------------------------------------------------------------- presets
def MinSize(min_size_to_sample: int) -> RateLimiter:
    """Block samples until the table holds ``min_size_to_sample`` items; never block inserts.

    ``RateLimiter(1.0, min_size_to_sample, -sys.float_info.max, sys.float_info.max)``,
    as in Reverb.
    """
    m = _check_min_size(min_size_to_sample)
    return RateLimiter(1.0, m, -sys.float_info.max, sys.float_info.max)


def SampleToInsertRatio(samples_per_insert: float, min_size_to_sample: int,
                        error_buffer: float | tuple[float, float]) -> RateLimiter:
    """Keep about ``samples_per_insert`` samples per inserted item once ``min_size_to_sample`` are in.

    A number ``error_buffer`` gives the band ``spi * m - error_buffer`` to
    ``spi * m + error_buffer`` (centred on the count reached when the table first
    holds ``m`` items, so only the operations after that are held to the ratio);
    a pair ``(min_diff, max_diff)`` is used as it is. As in Reverb, the band must
    be at least ``2 * max(1, spi)`` wide (for a number: ``error_buffer >=
    max(1, spi)``), since a narrower one can block inserts or samples for good.

    Raises:
        ConfigError: naming the argument, its value and what was expected.
    """
    spi = _check_spi(samples_per_insert)
    m = _check_min_size(min_size_to_sample)
    if _is_real(error_buffer):
        eb = _check_finite("error_buffer", error_buffer)
        offset = spi * m
        lo, hi = offset - eb, offset + eb
        if not hi - lo >= 2 * max(1.0, spi):
            raise ConfigError("error_buffer", error_buffer, f"at least max(1, samples_per_insert) = {max(1.0, spi)!r}",
                              "a band narrower than 2 * max(1, samples_per_insert) can block inserts or samples "
                              "for good")
    elif isinstance(error_buffer, Sequence) and not isinstance(error_buffer, str) and len(error_buffer) == 2:
        lo = _check_finite("error_buffer[0]", error_buffer[0])
        hi = _check_finite("error_buffer[1]", error_buffer[1])
        _check_band(spi, m, lo, hi, "error_buffer", error_buffer)
    else:
        raise ConfigError("error_buffer", error_buffer, "a number or a (min_diff, max_diff) pair")
    return RateLimiter(spi, m, lo, hi)


# ---------------------------------------------------------------- validation
def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_finite(field: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ConfigError(field, value, "a finite number")
    return float(value)


def _check_spi(value: Any) -> float:
    spi = _check_finite("samples_per_insert", value)
    if not spi > 0:
        raise ConfigError("samples_per_insert", value, "a finite number > 0")
    return spi


def _check_min_size(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError("min_size_to_sample", value, "an integer >= 1")
    m = int(value)
    if not 1 <= m <= _INT64_MAX:
        raise ConfigError("min_size_to_sample", value, "an integer >= 1")
    return m


def _check_band(spi: float, m: int, lo: float, hi: float, field: str, value: Any) -> None:
    """Reverb's rules for the band ``[lo, hi]``, plus its warning made an error."""
    offset = spi * m
    if not hi - lo >= 2 * max(1.0, spi):
        raise ConfigError(field, value, f"max_diff - min_diff >= 2 * max(1, samples_per_insert) = "
                          f"{2 * max(1.0, spi)!r}",
                          "a narrower band can block inserts or samples for good")
    if lo > offset:
        raise ConfigError(field, value, f"min_diff <= samples_per_insert * min_size_to_sample = {offset!r}",
                          "above it, the first min_size_to_sample inserts would not allow a first sample")
    if hi < offset:
        raise ConfigError(field, value, f"max_diff >= samples_per_insert * min_size_to_sample = {offset!r}",
                          "below it, inserts block once min_size_to_sample items are in, before any sample: "
                          "a deadlock unless another thread samples")


def _check_config(spi: Any, m: Any, lo: Any, hi: Any) -> tuple[float, int, float, float]:
    spi_f = _check_spi(spi)
    m_i = _check_min_size(m)
    lo_f = _check_finite("min_diff", lo)
    hi_f = _check_finite("max_diff", hi)
    _check_band(spi_f, m_i, lo_f, hi_f, "(min_diff, max_diff)", (lo, hi))
    return spi_f, m_i, lo_f, hi_f


def _check_k(k: Any) -> int:
    """A count of items for a decision: an integer >= 1 (Reverb refuses 0 too)."""
    if isinstance(k, (bool, np.bool_)):
        raise ConfigError("k", k, "a number of items >= 1")
    try:
        n = operator.index(k)
    except TypeError:
        raise ConfigError("k", k, "a number of items >= 1") from None
    if n < 1:
        raise ConfigError("k", k, "a number of items >= 1")
    return n


def _check_counts(inserts: int, samples: int, error: type[ConfigError] | type[CheckpointError], field: str) -> None:
    for name, value in (("inserts", inserts), ("samples", samples)):
        if not 0 <= value <= _INT64_MAX:
            raise error(f"{field}.{name}", value, "a count from 0 to 2**63 - 1")
