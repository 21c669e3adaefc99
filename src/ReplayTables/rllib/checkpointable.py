"""save / ``ReplayTables.load`` / ``get_state`` / ``set_state`` for the RLlib-style buffers.

A checkpoint is the engine's format (a directory of ``.npy`` arrays and a JSON
manifest, written atomically, read without pickle): the manifest holds the
class, its JSON-able constructor arguments and the nested state with every
numpy array replaced by a reference to its file.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.checkpoint import class_name, join_arrays, register, split_arrays, write_checkpoint
from ReplayTables.errors import CheckpointError

__all__ = ["Checkpointable"]


class Checkpointable:
    """save / ``ReplayTables.load`` / get_state / set_state for RLlib-style buffers.

    A subclass gives ``_init_args()`` (JSON-able constructor arguments) and
    ``_state_dict()`` / ``_load_state_dict(state)`` (nested dicts, numpy arrays
    anywhere in them); classes register themselves for loading.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    def _init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """Subclass additions to ``_state_dict`` (merged into it); none by default."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_extra_state`` added; nothing by default."""

    def _full_state(self) -> dict[str, Any]:
        return {"class": class_name(type(self)), "init": self._init_args(), "state": self._state_dict()}

    def get_state(self) -> dict[str, Any]:
        """Everything needed to restore this buffer (``"state"`` holds numpy arrays).

        The arrays are copies: later adds do not change a state taken before them.
        """
        return copy.deepcopy(self._full_state())

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`get_state` of a buffer of the same class and arguments."""
        if state.get("class") != class_name(type(self)):
            raise CheckpointError("class", state.get("class"), class_name(type(self)))
        mine = json.loads(json.dumps(self._init_args()))
        if json.loads(json.dumps(state.get("init"))) != mine:
            raise CheckpointError("init", state.get("init"), f"{mine} (this buffer's arguments)")
        self._load_state_dict(state["state"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically to directory ``path`` (``.npy`` arrays + JSON); ``ReplayTables.load(path)`` reads it."""
        manifest, arrays = split_arrays(self._full_state())
        return write_checkpoint(path, manifest, arrays)

    @classmethod
    def _from_checkpoint(cls, manifest: dict[str, Any], arrays: dict[str, np.ndarray], structure: Any) -> Any:
        buffer = cls._from_init(dict(manifest["init"]))
        buffer._load_state_dict(join_arrays(manifest["state"], arrays))
        return buffer

    @classmethod
    def _from_init(cls, init: dict[str, Any]) -> Any:
        return cls(**init)
