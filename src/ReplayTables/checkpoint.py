"""Saving and loading buffers: a directory of ``.npy`` arrays plus a JSON manifest.

Layout of a checkpoint directory::

    path/
      LATEST                 name of the current snapshot (one line)
      snapshot-000003/
        manifest.json        format, format_version, class, constructor args, metadata,
                             and for every array its file, shape, dtype and CRC-32
        slot_id.npy, storage_rows.npy, ...

Why this shape: a save writes a *new* snapshot folder, flushes it to disk, and only
then atomically replaces ``LATEST`` (``os.replace`` of one small file). An
interruption at any point before that leaves ``LATEST`` naming the previous,
complete snapshot; after it, the new one is complete. Loading reads arrays with
``allow_pickle=False`` and checks each against the manifest, so a truncated,
corrupted or foreign directory is reported as such, and no code is ever unpickled.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.errors import CheckpointError, ReplayTablesError

__all__ = ["FORMAT_VERSION", "load", "read_checkpoint", "register", "write_checkpoint"]

FORMAT = "ReplayTables checkpoint"
FORMAT_VERSION = 1
_LATEST = "LATEST"

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Make ``cls`` loadable by :func:`load` (done for every buffer class on definition)."""
    _REGISTRY[class_name(cls)] = cls
    return cls


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def split_arrays(tree: Any, prefix: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """Replace every numpy array in a nested state dict by ``{"__array__": key}``.

    Returns the JSON-able tree and the arrays by key (keys are the dotted paths).
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, np.ndarray):
            arrays[path] = node
            return {"__array__": path}
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if isinstance(node, np.generic):
            return node.item()
        return node

    return walk(tree, prefix), arrays


def join_arrays(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_arrays`; a missing array is a :class:`CheckpointError`."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            key = tree["__array__"]
            if key not in arrays:
                raise CheckpointError(str(key), "<missing>", "an array listed in the manifest")
            return arrays[key]
        return {k: join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_arrays(v, arrays) for v in tree]
    return tree


def _step(name: str) -> None:
    """A named point in a save; tests replace this to interrupt a save there."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _crc(arr: np.ndarray) -> int:
    data = np.ascontiguousarray(arr)
    if not data.size:
        return zlib.crc32(b"")
    return zlib.crc32(data.reshape(-1).view(np.uint8).data) & 0xFFFFFFFF


def write_checkpoint(path: str | os.PathLike[str], manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a new snapshot under ``path`` and make it current atomically."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise CheckpointError("path", str(root), "a directory (or a path that does not exist yet)")
    root.mkdir(parents=True, exist_ok=True)
    previous = _current_snapshot(root, missing_ok=True)
    number = int(previous.name.rsplit("-", 1)[1]) + 1 if previous is not None else 1
    name = f"snapshot-{number:06d}"
    tmp = root / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    entries = {}
    for key, arr in arrays.items():
        _step(f"array:{key}")
        arr = np.asarray(arr)
        if arr.dtype == object:
            raise CheckpointError(key, arr, "a numeric array (object arrays need pickle)")
        file = f"{key}.npy"
        with open(tmp / file, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        entries[key] = {"file": file, "shape": list(arr.shape), "dtype": arr.dtype.str, "crc32": _crc(arr)}
    _step("manifest")
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "arrays": entries}
    with open(tmp / "manifest.json", "w") as fh:
        json.dump(full, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    _step("rename")
    final = root / name
    if final.exists():  # left by a save interrupted before LATEST named it: never current
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _step("latest")
    latest_tmp = root / f".{_LATEST}.partial"
    with open(latest_tmp, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(latest_tmp, root / _LATEST)
    _fsync_dir(root)
    _step("cleanup")
    for old in root.glob("snapshot-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _current_snapshot(root: Path, missing_ok: bool = False) -> Path | None:
    latest = root / _LATEST
    if not latest.is_file():
        if missing_ok:
            return None
        raise CheckpointError("path", str(root), f"a ReplayTables checkpoint directory (no {_LATEST} file)")
    name = latest.read_text().strip()
    snap = root / name
    if not name.startswith("snapshot-") or "/" in name or not snap.is_dir():
        if missing_ok:
            return None
        raise CheckpointError(_LATEST, name, "the name of a snapshot folder in the checkpoint directory")
    return snap


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and verified arrays of the current snapshot under ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError("path", str(root), "an existing checkpoint directory")
    snap = _current_snapshot(root)
    assert snap is not None
    try:
        manifest = json.loads((snap / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError("manifest.json", str(snap), "a readable JSON manifest", str(exc)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError("format", manifest.get("format") if isinstance(manifest, dict) else manifest,
                              repr(FORMAT))
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError("format_version", version, f"an integer from 1 to {FORMAT_VERSION}")
    arrays: dict[str, np.ndarray] = {}
    for key, entry in manifest.get("arrays", {}).items():
        file = snap / str(entry.get("file", ""))
        if file.parent != snap:
            raise CheckpointError(key, entry.get("file"), "a file inside the snapshot folder")
        try:
            arr = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CheckpointError(key, str(file), "a complete .npy file", str(exc)) from None
        if list(arr.shape) != entry["shape"] or arr.dtype.str != entry["dtype"]:
            raise CheckpointError(key, f"shape {arr.shape} dtype {arr.dtype.str}",
                                  f"shape {tuple(entry['shape'])} dtype {entry['dtype']} (the manifest's)")
        if _crc(arr) != entry["crc32"]:
            raise CheckpointError(key, str(file), "contents matching the manifest's CRC-32 (file is corrupted)")
        arrays[key] = arr
    return manifest, arrays


def resolve_class(name: str) -> type:
    """A registered buffer class by ``module:qualname`` (importing ReplayTables modules on demand)."""
    if name not in _REGISTRY:
        module = name.split(":", 1)[0]
        if module == "ReplayTables" or module.startswith("ReplayTables."):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    if name not in _REGISTRY:
        raise CheckpointError("class", name, "a registered buffer class (import the module that defines it "
                                             "before loading)")
    return _REGISTRY[name]


def resolve_structure(name: str | None, field_names: list[str], kind: str) -> Any:
    """The user's structure class from ``module:qualname``, if it can be found.

    Only modules that are already imported are searched (no code is run to load a
    checkpoint). If it is not found, an equivalent NamedTuple is made, so the
    buffer still loads; pass ``structure=`` to :func:`load` to get your own class.
    """
    if name is None:
        return None
    module, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if isinstance(obj, type):
        return obj
    label = qualname.split(".")[-1].replace("<locals>", "Structure") or "Structure"
    if kind == "dataclass":  # batches build dataclass instances attribute by attribute
        import dataclasses

        return dataclasses.make_dataclass(label, [(n, Any) for n in field_names])
    from collections import namedtuple

    return namedtuple(label, field_names)


def load(path: str | os.PathLike[str], structure: Any = None) -> Any:
    """Load a buffer saved with ``buffer.save(path)``: same class, contents, priorities,
    counters and random state, so its next samples equal the original's."""
    try:
        manifest, arrays = read_checkpoint(path)
        cls = resolve_class(str(manifest.get("class")))
        loader: Callable[..., Any] = cls._from_checkpoint  # type: ignore[attr-defined]
        return loader(manifest, arrays, structure)
    except ReplayTablesError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        # valid JSON, but not laid out as this version's save() writes it
        raise CheckpointError("manifest.json", str(path), "a manifest as written by this version's save()",
                              f"{type(exc).__name__}: {exc}") from None
