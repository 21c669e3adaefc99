"""Schema: the names, dtypes and shapes of the fields an item carries.

A schema is built from a ``NamedTuple`` class, a dataclass, a (possibly nested)
dict of :class:`FieldSpec`, or the first item added. Fields whose dtype or shape
is not declared are fixed by the first item; after that, every item is checked
against the schema before anything is written, so a bad item never leaves a
half-written slot behind.

Casting rule: a value is accepted when numpy can cast it to the field's dtype
``same_kind`` (float64 into a float32 field is fine, 3.7 into an int field is
not; integers go into any integer field whose range holds them, so 300 into
an int8 field is refused rather than wrapped to 44), and its shape equals the
field's shape exactly (no broadcasting: a (16,) observation for a (17,) field is
a bug, not something to paper over).
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ReplayTables.errors import SchemaError

__all__ = ["Field", "FieldSpec", "Schema", "check_fits"]

_SCALAR_ANNOTATIONS: dict[Any, np.dtype] = {
    float: np.dtype(np.float64),
    int: np.dtype(np.int64),
    bool: np.dtype(np.bool_),
}


@dataclass(frozen=True)
class FieldSpec:
    """A declared field: ``FieldSpec((17,), np.float32)``; ``None`` parts come from the first item."""

    shape: tuple[int, ...] | None = None
    dtype: Any = None


@dataclass(frozen=True)
class Field:
    """One resolved leaf field: its path in the structure, its shape and dtype."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def name(self) -> str:
        return "/".join(self.path)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "shape": list(self.shape), "dtype": self.dtype.str}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Field:
        return Field(tuple(obj["path"]), tuple(int(s) for s in obj["shape"]), np.dtype(obj["dtype"]))


def _annotation_dtype(annotation: Any) -> np.dtype | None:
    if annotation in _SCALAR_ANNOTATIONS:
        return _SCALAR_ANNOTATIONS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, np.generic):
        return np.dtype(annotation)
    return None


def _field_hints(structure: type) -> dict[str, Any]:
    """The fields' annotations of a NamedTuple or dataclass, resolved where possible.

    ``typing.get_type_hints`` evaluates string annotations (``from __future__ import
    annotations``) in the class's module, and raises when that module is not in
    ``sys.modules`` (a file loaded by path) or an annotation names something not
    defined there. Then each annotation is read on its own: ``float``, ``int``,
    ``bool`` and numpy scalar types (``np.float32``) are recognised, anything else is
    left undeclared (its dtype and shape come from the first item, as for an
    ``np.ndarray`` annotation); nothing is evaluated.
    """
    try:
        return typing.get_type_hints(structure)
    except (NameError, TypeError, SyntaxError, AttributeError):
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(structure.__mro__):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, typing.ForwardRef):  # NamedTuple keeps string annotations as these
                annotation = annotation.__forward_arg__
            hints[name] = _annotation_from_text(annotation) if isinstance(annotation, str) else annotation
    return hints


_SCALAR_NAMES = {"float": float, "int": int, "bool": bool}


def _annotation_from_text(text: str) -> Any:
    """The scalar type a string annotation names (``"float"``, ``"np.float32"``), else ``None``."""
    text = text.strip()
    if text in _SCALAR_NAMES:
        return _SCALAR_NAMES[text]
    module, _, name = text.rpartition(".")
    found = getattr(np, name, None) if module in ("np", "numpy") else None
    return found if isinstance(found, type) and issubclass(found, np.generic) else None


def _is_namedtuple_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


class Schema:
    """Field layout plus the knowledge to take items apart and put batches together.

    ``kind`` is ``"namedtuple"``, ``"dataclass"`` or ``"dict"``; ``structure`` is the
    user's class (``None`` for dicts). ``fields`` is ``None`` until resolved.
    """

    def __init__(self, kind: str, structure: type | None, declared: list[tuple[tuple[str, ...], FieldSpec]]):
        self.kind = kind
        self.structure = structure
        self._declared = declared
        self.fields: list[Field] | None = None
        if all(spec.shape is not None and spec.dtype is not None for _, spec in declared) and declared:
            self.fields = [Field(p, tuple(s.shape or ()), np.dtype(s.dtype)) for p, s in declared]
        self._names = [".".join(p) for p, _ in declared]
        self._refresh_flat_keys()

    def _refresh_flat_keys(self) -> None:
        """Field names when the schema is a flat dict (the fast lookup path), else None."""
        if self.kind != "dict" or not self._declared or any(len(p) != 1 for p, _ in self._declared):
            self._flat_keys: list[str] | None = None
        else:
            self._flat_keys = [p[0] for p, _ in self._declared]

    # ------------------------------------------------------------ builders
    @staticmethod
    def from_structure(structure: Any) -> Schema:
        """Schema of a NamedTuple class, dataclass, or dict of FieldSpec / (shape, dtype) / None."""
        if _is_namedtuple_class(structure):
            hints = _field_hints(structure) if getattr(structure, "__annotations__", None) else {}
            declared: list[tuple[tuple[str, ...], FieldSpec]] = []
            for name in structure._fields:
                dt = _annotation_dtype(hints.get(name))
                declared.append(((name,), FieldSpec(() if dt is not None else None, dt)))
            return Schema("namedtuple", structure, declared)
        if isinstance(structure, type) and dataclasses.is_dataclass(structure):
            hints = _field_hints(structure)
            declared = []
            for f in dataclasses.fields(structure):
                dt = _annotation_dtype(hints.get(f.name))
                declared.append(((f.name,), FieldSpec(() if dt is not None else None, dt)))
            return Schema("dataclass", structure, declared)
        if isinstance(structure, Mapping):
            return Schema("dict", None, list(_flatten_spec(structure, ())))
        if structure is None:
            return Schema("dict", None, [])
        raise SchemaError("structure", structure,
                          "a NamedTuple class, a dataclass, or a dict of FieldSpec / (shape, dtype)")

    @staticmethod
    def from_fields(kind: str, structure: type | None, fields: list[Field]) -> Schema:
        schema = Schema(kind, structure, [(f.path, FieldSpec(f.shape, f.dtype)) for f in fields])
        schema.fields = list(fields)
        return schema

    # ------------------------------------------------------------ resolution
    @property
    def resolved(self) -> bool:
        return self.fields is not None

    def resolve(self, item: Any, batched: bool = False) -> None:
        """Fix undeclared dtypes and shapes from ``item`` (the first add)."""
        if self.fields is not None:
            return
        if self.kind == "dict" and not self._declared:
            if not isinstance(item, Mapping):
                raise SchemaError("item", item, "a dict of arrays (the buffer was built without a structure)")
            self._declared = [(p, FieldSpec()) for p, _ in _flatten_values(item, ())]
            self._names = [".".join(p) for p, _ in self._declared]
            self._refresh_flat_keys()
        values = self.values_of(item)
        fields = []
        for (path, spec), value in zip(self._declared, values):
            arr = _as_array(".".join(path), value)
            if arr.dtype == object:
                raise SchemaError(".".join(path), value, "numbers or arrays of numbers")
            shape = arr.shape[1:] if batched else arr.shape
            if batched and arr.ndim == 0:
                raise SchemaError(".".join(path), value, "an array with a leading batch axis")
            dtype = np.dtype(spec.dtype) if spec.dtype is not None else arr.dtype
            if spec.shape is not None:
                shape = tuple(spec.shape)
            fields.append(Field(path, tuple(int(s) for s in shape), dtype))
        if not fields:
            raise SchemaError("item", item, "at least one field (an empty structure stores nothing)")
        self.fields = fields

    # ------------------------------------------------------------ items
    @property
    def names(self) -> list[str]:
        return self._names

    def values_of(self, item: Any) -> list[Any]:
        """The leaf values of ``item`` in field order; a clear error if a field is missing."""
        flat_keys = self._flat_keys
        if flat_keys is not None and type(item) is dict and len(item) == len(flat_keys):
            try:
                return [item[k] for k in flat_keys]
            except KeyError:
                pass  # the general path below names the missing field
        declared = self._declared
        if self.kind == "dict" or isinstance(item, Mapping):
            if not isinstance(item, Mapping):
                raise SchemaError("item", item, f"a dict with fields {self.names}")
            out = []
            for path, _ in declared:
                node: Any = item
                for key in path:
                    if not isinstance(node, Mapping) or key not in node:
                        raise SchemaError(".".join(path), "<missing>", f"a value for every field {self.names}")
                    node = node[key]
                out.append(node)
            # a key the structure does not have is a typo, whatever the structure (dict,
            # NamedTuple or dataclass): dropping it silently would lose the user's data
            if _count_leaves(item) > len(declared):
                known = {p for p, _ in declared}
                unknown = [".".join(p) for p, _ in _flatten_values(item, ()) if p not in known]
                raise SchemaError("item", sorted(unknown), f"only the fields {self.names}", "unknown field(s)")
            return out
        if self.kind == "namedtuple":
            # a plain tuple is taken by position; another NamedTuple must name the same fields
            # in the same order, or its values would land in the wrong fields
            if isinstance(item, tuple) and len(item) == len(declared) \
                    and list(getattr(item, "_fields", self._names)) == self._names:
                return list(item)
            raise SchemaError("item", item, f"a {self.structure.__name__ if self.structure else 'tuple'} "
                                            f"with fields {self.names}")
        # dataclass (or any object with the attributes)
        out = []
        for path, _ in declared:
            try:
                out.append(getattr(item, path[0]))
            except AttributeError:
                raise SchemaError(path[0], "<missing>", f"an object with fields {self.names}") from None
        return out

    def build(self, arrays: Sequence[Any]) -> Any:
        """An instance of the user's structure holding ``arrays`` (one per field)."""
        assert self.fields is not None
        if self.kind == "namedtuple":
            assert self.structure is not None
            return self.structure(*arrays)
        if self.kind == "dataclass":
            assert self.structure is not None
            obj: Any = object.__new__(self.structure)
            for f, a in zip(self.fields, arrays):
                object.__setattr__(obj, f.path[0], a)
            return obj
        if self._flat_keys is not None:
            return dict(zip(self._flat_keys, arrays))
        out: dict[str, Any] = {}
        for f, a in zip(self.fields, arrays):
            node = out
            for key in f.path[:-1]:
                node = node.setdefault(key, {})
            node[f.path[-1]] = a
        return out

    # ------------------------------------------------------------ checking
    def coerce_batch(self, values: Sequence[Any]) -> tuple[int, list[np.ndarray]]:
        """Batch length and checked arrays for a batched add.

        The common case (numpy arrays of exactly the field dtype) is checked with
        identity tests only; anything else goes through :meth:`batch_length` and
        :meth:`coerce`, which accept what casts ``same_kind`` and name what is wrong.
        """
        fields = self.fields
        assert fields is not None
        m = -1
        for f, v in zip(fields, values):
            if type(v) is not np.ndarray or v.dtype is not f.dtype or v.shape[1:] != f.shape or v.ndim == 0:
                break
            if m < 0:
                m = v.shape[0]
            elif v.shape[0] != m:
                break
        else:
            if m >= 0:
                return m, list(values)
        m = self.batch_length(values)
        return m, self.coerce(values, batch=m)

    def coerce(self, values: Sequence[Any], batch: int | None = None) -> list[np.ndarray]:
        """Check each value against its field and return arrays ready to write.

        ``batch`` is the leading batch length for a batched add (``None`` for one
        item). Raises :class:`SchemaError` naming the first bad field; nothing is
        written by this function, so the caller's buffer is unchanged on error.
        """
        assert self.fields is not None
        out = []
        for f, value in zip(self.fields, values):
            arr = _as_array(f.name, value)
            integral = arr.dtype.kind in "iu" and f.dtype.kind in "iu"  # signed <-> unsigned: range checked below
            if not integral and not np.can_cast(arr.dtype, f.dtype, "same_kind"):
                raise SchemaError(f.name, value, f"dtype {f.dtype} (got dtype {arr.dtype}, which does not "
                                                 f"cast same_kind)")
            expected = f.shape if batch is None else (batch, *f.shape)
            if arr.shape != expected:
                raise SchemaError(f.name, value, f"shape {expected} (got shape {arr.shape})")
            if arr.size and not np.can_cast(arr.dtype, f.dtype, "safe"):
                check_fits(f.name, f.dtype, value, arr)
            out.append(arr)
        return out

    def batch_length(self, values: Sequence[Any]) -> int:
        """The common leading length of a batched add; an error if fields disagree."""
        assert self.fields is not None
        lengths = []
        for f, v in zip(self.fields, values):
            shape = _as_array(f.name, v).shape
            if len(shape) != len(f.shape) + 1:
                raise SchemaError(f.name, v, f"a batch of shape (n, {', '.join(map(str, f.shape))})".replace(
                    ", )", ")"))
            lengths.append(shape[0])
        if len(set(lengths)) > 1:
            raise SchemaError("batch", dict(zip(self.names, lengths)), "the same leading length for every field")
        return int(lengths[0]) if lengths else 0

    # ------------------------------------------------------------ state
    def to_json(self) -> dict[str, Any]:
        assert self.fields is not None
        structure = None
        if self.structure is not None:
            structure = f"{self.structure.__module__}:{self.structure.__qualname__}"
        return {"kind": self.kind, "structure": structure, "fields": [f.to_json() for f in self.fields]}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Schema) and self.kind == other.kind and self.fields == other.fields
                and self.structure is other.structure)

    def __repr__(self) -> str:
        if self.fields is None:
            return f"Schema({self.kind}, unresolved: {self.names})"
        inner = ", ".join(f"{f.name}: {f.dtype}{list(f.shape)}" for f in self.fields)
        return f"Schema({inner})"


def check_fits(name: str, dtype: np.dtype, value: Any, arr: np.ndarray) -> None:
    """Refuse values that a narrowing cast into ``dtype`` would not keep (a :class:`SchemaError`).

    A narrowing integer cast wraps around silently (300 -> 44 in int8); a narrowing
    float cast turns a finite value into inf (1e300 -> inf in float32). Both are
    refused; NaN and inf given as such stay what they are.
    """
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise SchemaError(name, value, f"integers in [{info.min}, {info.max}] (dtype {dtype})")
    elif dtype.kind in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(dtype)
        lost = np.isfinite(arr) & ~np.isfinite(cast)
        if lost.any():
            limit = float(np.finfo(dtype).max)
            raise SchemaError(name, value, f"finite values within +/-{limit:.4g} (dtype {dtype}; larger "
                                           "ones would be stored as inf)")


def _as_array(name: str, value: Any) -> np.ndarray:
    """``np.asarray(value)``, with ragged or non-numeric input reported as a SchemaError."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise SchemaError(name, value, "a rectangular array of numbers", str(exc).split(".")[0]) from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise SchemaError(name, value, "numbers or arrays of numbers")
    return arr


def _flatten_spec(spec: Mapping[str, Any],
                  prefix: tuple[str, ...]) -> typing.Iterator[tuple[tuple[str, ...], FieldSpec]]:
    for key, value in spec.items():
        if not isinstance(key, str):
            raise SchemaError("structure key", key, "a string field name")
        path = (*prefix, key)
        if isinstance(value, Mapping):
            yield from _flatten_spec(value, path)
        elif isinstance(value, FieldSpec):
            yield path, value
        elif value is None:
            yield path, FieldSpec()
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple):
            yield path, FieldSpec(tuple(value[0]), np.dtype(value[1]))
        else:
            try:
                yield path, FieldSpec((), np.dtype(value))
            except TypeError:
                raise SchemaError(".".join(path), value,
                                  "a FieldSpec, (shape, dtype), a dtype, None or a nested dict") from None


def _flatten_values(item: Mapping[str, Any], prefix: tuple[str, ...]) -> typing.Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in item.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _flatten_values(value, path)
        else:
            yield path, value


def _count_leaves(item: Mapping[str, Any]) -> int:
    n = 0
    for value in item.values():
        n += _count_leaves(value) if isinstance(value, Mapping) else 1
    return n
