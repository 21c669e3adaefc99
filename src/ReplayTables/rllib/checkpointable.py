"""save / ``ReplayTables.load`` / ``get_state`` / ``set_state`` for the RLlib-style buffers.

A checkpoint is the engine's format (a directory of ``.npy`` arrays and a JSON
manifest, written atomically, read without pickle): the manifest holds the
class, its JSON-able constructor arguments and the nested state with every
numpy array replaced by a reference to its file.

Restoring a state (``set_state``, or loading a checkpoint) checks all of it
first and only then puts it in place: ``_check_state_dict`` (no change) then
``_restore_state`` (assignments only). A refused state is a
:class:`~ReplayTables.errors.CheckpointError` naming the key, the value and what
was expected, and the buffer is unchanged.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.checkpoint import (
    checking,
    class_name,
    join_arrays,
    register,
    split_arrays,
    write_checkpoint,
)
from ReplayTables.engine.state_checks import mapping
from ReplayTables.engine.table_lock import TableLockProtocol
from ReplayTables.errors import CheckpointError
from ReplayTables.rllib.config import constructor_params
from ReplayTables.rllib.issue_60491 import NamedByText

__all__ = ["BufferState", "Checkpointable", "same_json"]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype \
            and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


class BufferState(dict):  # type: ignore[type-arg,unused-ignore]
    """What ``get_state()`` returns: a ``dict`` whose ``==`` compares its arrays by value
    (RLlib's tests compare two buffers' states with ``==``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and _equal(dict(self), dict(other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment,unused-ignore]


def same_json(a: Any, b: Any) -> bool:
    """Equal once written as JSON (tuples and lists alike); values JSON cannot hold are compared as they are."""
    try:
        return bool(json.loads(json.dumps(a)) == json.loads(json.dumps(b)))
    except (TypeError, ValueError, RecursionError):
        return bool(a == b)


class Checkpointable(metaclass=NamedByText):
    """save / ``ReplayTables.load`` / get_state / set_state for RLlib-style buffers.

    A subclass gives ``_init_args()`` (JSON-able constructor arguments),
    ``_state_dict()`` (nested dicts, numpy arrays anywhere in them) and the pair
    ``_check_state_dict(state, where)`` / ``_restore_state(checked)``; classes
    register themselves for loading. Subclasses that save more override
    ``_extra_state`` / ``_check_extra_state`` / ``_load_extra_state``.

    ``_lock`` (set by the subclass: its table's lock, or a lock of its own for a
    buffer of several tables) is held by every public call, so the buffer may be
    shared by threads.
    """

    _lock: TableLockProtocol
    #: Constructor arguments a state may differ in: ``set_state`` keeps this buffer's
    #: (RLlib restores a state into a buffer of another ``storage_unit``; only later adds differ).
    _state_portable_args: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    @property
    def lock(self) -> TableLockProtocol:
        """The buffer's re-entrant lock, held by every public call; hold it yourself
        (``with buffer.lock:``) to make several calls one atomic step."""
        return self._lock

    def _init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _check_state_dict(self, state: Any, where: str = "state") -> Any:
        """Check (and build) everything a saved ``_state_dict`` needs; changes nothing."""
        raise NotImplementedError

    def _restore_state(self, checked: Any) -> None:
        """Put what :meth:`_check_state_dict` returned in place (assignments only)."""
        raise NotImplementedError

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore_state(self._check_state_dict(state))

    def _extra_state(self) -> dict[str, Any]:
        """Subclass additions to ``_state_dict`` (merged into it); none by default."""
        return {}

    def _check_extra_state(self, state: dict[str, Any], policies: list[Any] | None = None) -> Any:
        """Check what ``_extra_state`` added (``policies``: the policy ids the restored
        multi-agent buffer will have); returns what ``_load_extra_state`` is given.
        A subclass that saves extra state checks it here, so that ``_load_extra_state``
        only assigns. By default the state is passed on as it is."""
        return state

    def _load_extra_state(self, state: Any) -> None:
        """Restore what ``_extra_state`` added; nothing by default."""

    def _full_state(self) -> dict[str, Any]:
        return {"class": class_name(type(self)), "init": self._init_args(), "state": self._state_dict()}

    @atomic
    def get_state(self) -> dict[str, Any]:
        """Everything needed to restore this buffer (``"state"`` holds numpy arrays).

        The arrays are copies: later adds do not change a state taken before them.
        """
        return BufferState(copy.deepcopy(self._full_state()))

    @atomic
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`get_state` of a buffer of the same class and arguments.

        The whole state is checked before anything changes; a refused one leaves
        the buffer exactly as it was.
        """
        with checking():
            m = mapping("state", state, ("class", "init", "state"))
            if m["class"] != class_name(type(self)):
                raise CheckpointError("class", m["class"], class_name(type(self)))
            mine = self._init_args()
            theirs = m["init"]
            if isinstance(theirs, dict) and self._state_portable_args:
                theirs = {**theirs, **{k: mine[k] for k in self._state_portable_args if k in mine}}
            if not same_json(theirs, mine):
                raise CheckpointError("init", m["init"], f"{json.loads(json.dumps(mine))} (this buffer's arguments)")
            checked = self._check_state_dict(m["state"])
        self._restore_state(checked)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically to directory ``path`` (``.npy`` arrays + JSON); ``ReplayTables.load(path)`` reads it.

        The state is taken under the lock (one instant); the files are written after.
        """
        manifest, arrays = split_arrays(self.get_state())
        return write_checkpoint(path, manifest, arrays)

    # ------------------------------------------------------------ loading a checkpoint
    @classmethod
    def _check_init(cls, init: Any, where: str = "init") -> dict[str, Any]:
        """Saved constructor arguments: a dict of this class's parameters (values are the constructor's to check)."""
        m = dict(mapping(where, init, closed=False))
        allowed = constructor_params(cls)
        unknown = sorted(str(k) for k in m if k not in allowed)
        if unknown:
            raise CheckpointError(where, unknown, f"arguments of {cls.__name__}: {sorted(allowed)}")
        return m

    @classmethod
    def _check_before_construction(cls, init: dict[str, Any], state: Any, where: str = "state",
                                   init_where: str = "init") -> None:
        """What can be checked before a buffer is built from ``init`` (its capacity against the
        saved arrays, the memory it needs); nothing by default."""

    @classmethod
    def _from_checkpoint(cls, manifest: dict[str, Any], arrays: dict[str, np.ndarray], structure: Any) -> Any:
        m = mapping("manifest", manifest, ("class", "init", "state"), ("format", "format_version", "arrays"))
        init = cls._check_init(m["init"])
        state = join_arrays(m["state"], arrays, "state")
        cls._check_before_construction(init, state)
        buffer = cls._from_init(init)
        if not same_json(buffer._init_args(), init):  # a default filled in, or a value the constructor changed
            raise CheckpointError("init", init, f"the arguments the buffer was built with: {buffer._init_args()}")
        buffer._restore_state(buffer._check_state_dict(state))
        return buffer

    @classmethod
    def _from_init(cls, init: dict[str, Any]) -> Any:
        return cls(**init)
