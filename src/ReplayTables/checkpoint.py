"""Saving and loading buffers: a directory of ``.npy`` arrays plus a JSON manifest.

Layout of a checkpoint directory::

    path/
      LATEST                 name of the current snapshot (one line)
      snapshot-000003/
        manifest.json        format, format_version, class, constructor args, metadata,
                             and for every array its file, shape, dtype and CRC-32
        manifest.sha256      SHA-256 of manifest.json (format_version 2)
        slot_id.npy, storage_rows.npy, ...

Why this shape: a save writes a *new* snapshot folder, flushes it to disk, and only
then atomically replaces ``LATEST`` (``os.replace`` of one small file). An
interruption at any point before that leaves ``LATEST`` naming the previous,
complete snapshot; after it, the new one is complete.

Loading treats the directory as untrusted input (see ``docs/concepts.md``):

* it never unpickles (``.npy`` headers are parsed, data read as raw bytes) and
  never imports a module outside this package (classes come from :func:`register`'s
  registry, structures from the caller or from modules already imported);
* it reads only regular files inside the snapshot folder (no symlink, FIFO or
  device is ever opened, so a hostile directory cannot make it hang or read
  elsewhere), and ``LATEST`` must name a real snapshot folder;
* the manifest must match its SHA-256 and every array its CRC-32 (corruption and
  careless edits are refused); each ``.npy`` header must agree with the manifest
  and with the file's size, and the bytes it needs must fit in this machine's
  memory, before anything is allocated;
* every value of the manifest is then checked by the component that owns it
  (types, ranges, shapes and sizes against the capacity, consistency with the
  others) before the buffer is built, and anything refused is a
  :class:`~ReplayTables.errors.CheckpointError` naming the key, the value and
  what was expected.

The checksums detect damage, not malice: anyone who can write the directory can
recompute them, which is why every value is checked as well.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import sys
import typing
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ReplayTables.engine.files import open_regular, read_npy_header, read_small, real_directory
from ReplayTables.engine.memory import check_allocation
from ReplayTables.engine.state_checks import (
    MAX_DEPTH,
    as_checkpoint_error,
    check_depth,
    check_dtype,
    check_shape,
    integer,
    is_field_name,
    mapping,
    nbytes,
    string,
)
from ReplayTables.errors import CheckpointError, ReplayTablesError

__all__ = ["FORMAT_VERSION", "load", "read_checkpoint", "read_manifest", "read_snapshot", "register",
           "write_checkpoint"]

FORMAT = "ReplayTables checkpoint"
#: 2: ``manifest.sha256`` beside the manifest. Version 1 directories (without it) still load:
#: the checksum guards against damage only, and every value is checked either way.
FORMAT_VERSION = 2
_LATEST = "LATEST"
_MANIFEST = "manifest.json"
_CHECKSUM = "manifest.sha256"
#: A manifest holds metadata only (arrays live in .npy files); ours are kilobytes.
MAX_MANIFEST_BYTES = 64 * 2**20
_SNAPSHOT_NAME = re.compile(r"snapshot-[0-9]{6,12}")
_MAX_ARRAYS = 100_000

_REGISTRY: dict[str, type] = {}

#: The modules that define this package's buffer classes: importing them registers every one.
#: Fixed here, never taken from a manifest, so loading imports nothing else.
PACKAGE_BUFFER_MODULES = ("ReplayTables.ReplayBuffer", "ReplayTables.PER", "ReplayTables.trajectory",
                          "ReplayTables.rllib", "ReplayTables.distributed")


def register(cls: type) -> type:
    """Make ``cls`` loadable by :func:`load` (done for every buffer class on definition)."""
    _REGISTRY[class_name(cls)] = cls
    return cls


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def registry() -> dict[str, type]:
    """Every registered buffer class by name: the package's own (imported here) and any
    subclass a user's code has defined (registered when its module was imported)."""
    for module in PACKAGE_BUFFER_MODULES:
        if module not in sys.modules:
            importlib.import_module(module)
    return _REGISTRY


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


def join_arrays(tree: Any, arrays: Mapping[str, np.ndarray], where: str = "") -> Any:
    """Inverse of :func:`split_arrays`.

    A reference to a missing array, a reference that is not a string, an array
    referenced twice (two parts of the state would share memory) or nesting
    deeper than ``MAX_DEPTH`` is a :class:`CheckpointError`.
    """
    if not isinstance(arrays, Mapping):
        raise CheckpointError(where or "arrays", arrays, "a dict of arrays by key")
    used: set[str] = set()

    def walk(node: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CheckpointError(path or "state", f"nesting deeper than {MAX_DEPTH} levels",
                                  f"at most {MAX_DEPTH} levels of nested dicts and lists")
        if isinstance(node, dict):
            if set(node) == {"__array__"}:
                key = node["__array__"]
                if not isinstance(key, str) or key not in arrays:
                    raise CheckpointError(path or "__array__", key, "the key of an array listed in the manifest")
                if key in used:
                    raise CheckpointError(path or "__array__", key, "an array referenced once (each part of the "
                                                                    "state has its own)")
                used.add(key)
                return arrays[key]
            return {k: walk(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}", depth + 1) for i, v in enumerate(node)]
        return node

    return walk(tree, where, 0)


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


def manifest_digest(data: bytes) -> str:
    """What ``manifest.sha256`` holds for a manifest of these bytes."""
    return hashlib.sha256(data).hexdigest()


def write_checkpoint(path: str | os.PathLike[str], manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                     contents: Callable[[Path], None] | None = None) -> Path:
    """Write a new snapshot under ``path`` and make it current atomically.

    ``contents(folder)``, if given, writes more into the new snapshot's folder before
    its manifest (a sharded buffer's shards); it is as atomic as the rest.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise CheckpointError("path", str(root), "a directory (or a path that does not exist yet)")
    root.mkdir(parents=True, exist_ok=True)
    previous = _current_snapshot(root, missing_ok=True)
    number = int(previous.name.rsplit("-", 1)[1]) + 1 if previous is not None else 1
    name = f"snapshot-{number:06d}"
    tmp = root / f".{name}.partial"
    _clear(tmp)
    tmp.mkdir()
    if contents is not None:
        contents(tmp)
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
    data = json.dumps(full, indent=1, sort_keys=True).encode("utf-8")
    for file, content in ((_MANIFEST, data), (_CHECKSUM, f"{manifest_digest(data)}  {_MANIFEST}\n".encode())):
        with open(tmp / file, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    _step("rename")
    final = root / name
    _clear(final)  # left by a save interrupted before LATEST named it: never current
    os.replace(tmp, final)
    _fsync_dir(root)
    _step("latest")
    latest_tmp = root / f".{_LATEST}.partial"
    _clear(latest_tmp)
    # a new file, never one a symlink planted under this name points to (that would be overwritten)
    fd = os.open(latest_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w") as fh:
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


def _clear(path: Path) -> None:
    """Remove what a save finds at one of its own names, never following a symlink.

    An interrupted save leaves such leftovers; anything else there (a symlink to a
    file or folder elsewhere, planted by whoever can write the directory) is
    removed as a name, so a save never writes into or deletes outside ``path``."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# ---------------------------------------------------------------- reading untrusted files
def _current_snapshot(root: Path, missing_ok: bool = False) -> Path | None:
    """The snapshot folder ``LATEST`` names: a real directory directly inside ``root``."""
    latest = root / _LATEST
    try:
        present = os.lstat(latest)
    except OSError:
        present = None
    if present is None:
        if missing_ok:
            return None
        raise CheckpointError("path", str(root), f"a ReplayTables checkpoint directory (no {_LATEST} file)")
    try:
        raw = read_small(latest, _LATEST, "the name of the current snapshot", 256)
        name = raw.decode("utf-8").strip()
    except (CheckpointError, UnicodeDecodeError):
        if missing_ok:
            return None
        raise CheckpointError(_LATEST, str(latest), "a small text file naming a snapshot folder") from None
    snap = root / name
    if not _SNAPSHOT_NAME.fullmatch(name) or not real_directory(snap):
        if missing_ok:
            return None
        raise CheckpointError(_LATEST, name, "the name of a snapshot folder in the checkpoint directory "
                                             "(snapshot-NNNNNN, a directory, not a symlink)")
    return snap


def _read_manifest(snap: Path) -> dict[str, Any]:
    raw = read_small(snap / _MANIFEST, _MANIFEST, "the checkpoint's manifest", MAX_MANIFEST_BYTES)
    checksum: bytes | None = None
    with contextlib.suppress(FileNotFoundError):
        os.lstat(snap / _CHECKSUM)
        checksum = read_small(snap / _CHECKSUM, _CHECKSUM, "the manifest's SHA-256", 1024)
    if checksum is not None:
        recorded = checksum.decode("ascii", errors="replace").split()
        if not recorded or recorded[0] != manifest_digest(raw):
            raise CheckpointError(_MANIFEST, str(snap / _MANIFEST),
                                  f"contents matching the SHA-256 in {_CHECKSUM} (the manifest is corrupted or "
                                  "was edited)")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(_MANIFEST, str(snap), "a readable JSON manifest", f"{type(exc).__name__}: "
                                                                                f"{str(exc)[:200]}") from None
    check_depth(manifest, _MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError("format", manifest.get("format") if isinstance(manifest, dict) else manifest,
                              repr(FORMAT))
    version = integer("format_version", manifest.get("format_version"), 1, FORMAT_VERSION)
    if version >= 2 and checksum is None:
        raise CheckpointError(_CHECKSUM, str(snap / _CHECKSUM), "the manifest's SHA-256 beside it (every "
                                                               f"format_version {version} snapshot has one)")
    return manifest


@dataclasses.dataclass(frozen=True)
class _ArrayEntry:
    key: str
    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    crc32: int
    nbytes: int


def _array_entries(snap: Path, manifest: dict[str, Any]) -> list[_ArrayEntry]:
    listed = mapping("arrays", manifest.get("arrays", {}), closed=False)
    if len(listed) > _MAX_ARRAYS:
        raise CheckpointError("arrays", f"{len(listed)} arrays", f"at most {_MAX_ARRAYS} arrays")
    out = []
    files: set[str] = set()
    for key, entry in listed.items():
        where = f"arrays.{key}"
        m = mapping(where, entry, ("file", "shape", "dtype", "crc32"))
        file = string(f"{where}.file", m["file"])
        if not file.endswith(".npy") or file.startswith(".") or any(c in file for c in "/\\\x00") \
                or len(file.encode("utf-8", errors="replace")) > 255:
            raise CheckpointError(f"{where}.file", file, "the name of a .npy file inside the snapshot folder")
        if file in files:
            raise CheckpointError(f"{where}.file", file, "a file no other array uses")
        files.add(file)
        shape = check_shape(f"{where}.shape", m["shape"])
        dtype = check_dtype(f"{where}.dtype", m["dtype"])
        crc = integer(f"{where}.crc32", m["crc32"], 0, 0xFFFFFFFF)
        out.append(_ArrayEntry(key, snap / file, shape, dtype, crc, nbytes(shape, dtype)))
    return out


def _npy_header(fh: io.BufferedIOBase, entry: _ArrayEntry, size: int) -> bool:
    """Check a ``.npy`` header against the manifest and the file's size; returns ``fortran_order``."""
    where = f"arrays.{entry.key}"
    shape, dtype, fortran = read_npy_header(fh, size, where, entry.path)
    if shape != entry.shape or dtype.str != entry.dtype.str or dtype != entry.dtype:
        raise CheckpointError(where, f"shape {shape} dtype {dtype.str}",
                              f"shape {entry.shape} dtype {entry.dtype.str} (the manifest's)")
    return fortran


def _read_array(entry: _ArrayEntry) -> np.ndarray:
    where = f"arrays.{entry.key}"
    fh, size = open_regular(entry.path, where, "an array file of the snapshot")
    with fh:
        fortran = _npy_header(fh, entry, size)
        if entry.nbytes == 0:
            return np.empty(entry.shape, dtype=entry.dtype, order="F" if fortran else "C")
        raw = np.empty(entry.nbytes, dtype=np.uint8)
        view = raw.data
        got = 0
        while got < entry.nbytes:
            n = fh.readinto(view[got:])
            if not n:
                raise CheckpointError(where, str(entry.path), "a complete .npy file (it ended early)")
            got += n
    arr = raw.view(entry.dtype).reshape(entry.shape, order="F" if fortran else "C")
    if _crc(arr) != entry.crc32:
        raise CheckpointError(where, str(entry.path), "contents matching the manifest's CRC-32 (file is corrupted)")
    return arr


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and verified arrays of the current snapshot under ``path``.

    Every file is checked before its data is read: regular files only, headers
    that agree with the manifest and with the file sizes, and the total fitting
    in memory (see the module docstring).
    """
    _, manifest, arrays = read_snapshot(path)
    return manifest, arrays


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the (checked) manifest of the current snapshot under ``path``; no array is read."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError("path", str(root), "an existing checkpoint directory")
    snap = _current_snapshot(root)
    assert snap is not None
    return _read_manifest(snap)


def read_snapshot(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_checkpoint`, and the snapshot folder it read (where more parts may live)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError("path", str(root), "an existing checkpoint directory")
    snap = _current_snapshot(root)
    assert snap is not None
    manifest = _read_manifest(snap)
    entries = _array_entries(snap, manifest)
    for entry in entries:  # every header first: nothing is read or allocated for a directory that lies
        fh, size = open_regular(entry.path, f"arrays.{entry.key}", "an array file of the snapshot")
        with fh:
            _npy_header(fh, entry, size)
    total = sum(e.nbytes for e in entries)
    check_allocation("arrays", f"{len(entries)} arrays", total, f"reading the checkpoint's {len(entries)} arrays",
                     error=CheckpointError)
    return snap, manifest, {entry.key: _read_array(entry) for entry in entries}


# ---------------------------------------------------------------- classes and structures
def resolve_class(name: Any, field: str = "class") -> type:
    """A registered buffer class by ``module:qualname`` (nothing is imported by name)."""
    if not isinstance(name, str) or name not in registry():
        raise CheckpointError(field, name, "a registered buffer class (this package's, or a subclass whose module "
                                           "was imported before loading)")
    return _REGISTRY[name]


def _own_attribute(obj: Any, name: str) -> Any:
    """``obj.name`` from its own ``__dict__`` only: no module ``__getattr__`` (which may import),
    no descriptor, no metaclass hook runs."""
    try:
        namespace = vars(obj)
    except TypeError:
        return None
    return namespace.get(name) if isinstance(namespace, Mapping) else None


def _fits(obj: Any, field_names: list[str] | None, kind: str | None) -> bool:
    """Is ``obj`` a NamedTuple class or dataclass of this kind with exactly these fields?"""
    if not isinstance(obj, type) or type(obj) is not type:  # no custom metaclass: its hooks are never run
        return False
    fields = getattr(obj, "_fields", None) if issubclass(obj, tuple) else None
    if isinstance(fields, tuple):
        found, names = "namedtuple", list(fields)
    elif dataclasses.is_dataclass(obj):
        found, names = "dataclass", [f.name for f in dataclasses.fields(obj)]
    else:
        return False
    if (kind is not None and kind != found) or (field_names is not None and names != field_names):
        return False
    try:  # the schema reads its annotations; a class whose annotations cannot be resolved is not usable
        typing.get_type_hints(obj)
    except Exception:  # any failure of someone else's annotations means "not this class"
        return False
    return True


def resolve_structure(name: Any, field_names: list[str] | None, kind: str | None) -> Any:
    """The user's structure class from ``module:qualname``, if it is already loaded and fits.

    Only modules already in ``sys.modules`` are searched, through their own
    namespaces (no code runs to load a checkpoint), and the class found must be
    a NamedTuple or dataclass with exactly the saved field names. Otherwise an
    equivalent NamedTuple (or dataclass) is made, so the buffer still loads;
    pass ``structure=`` to :func:`load` to get your own class. ``field_names``
    ``None`` means not known (a buffer saved before its first add).
    """
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > 1000:
        raise CheckpointError("structure", name, "None or a 'module:QualName' string")
    if field_names is not None and (len(set(field_names)) != len(field_names)
                                    or not all(is_field_name(n) for n in field_names)):
        raise CheckpointError("schema.fields", field_names, "distinct Python identifiers not starting with '_'")
    module, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = _own_attribute(obj, part) if obj is not None else None
    if _fits(obj, field_names, kind):
        return obj
    label = qualname.split(".")[-1]
    if not is_field_name(label):
        label = "Structure"
    names = field_names or []
    if kind == "dataclass":  # batches build dataclass instances attribute by attribute
        return dataclasses.make_dataclass(label, [(n, Any) for n in names])
    from collections import namedtuple

    return namedtuple(label, names)


# ---------------------------------------------------------------- load
@contextlib.contextmanager
def refusing(path: Any) -> Iterator[None]:
    """Report anything a load path refuses as a :class:`CheckpointError`.

    The checks name what they refuse; this also catches what a check may have
    missed (a value of the wrong type reaching a constructor), so nothing else
    escapes from loading a hostile directory.
    """
    try:
        yield
    except CheckpointError:
        raise
    except ReplayTablesError as exc:  # e.g. a constructor's ConfigError for a saved argument
        raise as_checkpoint_error(exc) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError,
            MemoryError) as exc:
        raise CheckpointError(_MANIFEST, str(path), "a manifest as written by this version's save()",
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None


@contextlib.contextmanager
def checking() -> Iterator[None]:
    """While a state is checked into an existing buffer: a check that let a wrong type through
    (a ``KeyError``, ``TypeError``, ...) still ends as a :class:`CheckpointError`. Errors of the
    library (a ``ConfigError`` for a state of a differently built buffer) pass unchanged.
    Nothing has been changed at that point: the restore after the checks only assigns."""
    try:
        yield
    except ReplayTablesError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        raise CheckpointError("state", type(exc).__name__, "a state as state_dict() / get_state() return it",
                              str(exc)[:200]) from None


def load(path: str | os.PathLike[str], structure: Any = None) -> Any:
    """Load a buffer saved with ``buffer.save(path)``: same class, contents, priorities,
    counters and random state, so its next samples equal the original's."""
    with refusing(path):
        snapshot, manifest, arrays = read_snapshot(path)
        cls = resolve_class(manifest.get("class"))
        if getattr(cls, "_checkpoint_has_parts", False):  # more than arrays in the snapshot folder
            return cls._from_snapshot(snapshot, manifest, arrays, structure)  # type: ignore[attr-defined]
        loader: Callable[..., Any] = cls._from_checkpoint  # type: ignore[attr-defined]
        return loader(manifest, arrays, structure)
