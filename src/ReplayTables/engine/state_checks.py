"""Checks of saved state: every value of a state dict or manifest, before anything uses it.

A state dict comes from ``state_dict()`` of the same version, or from a
checkpoint directory anyone could have edited. Each component checks the part
it owns with these helpers before it changes anything (``check_state``), so a
state that does not fit is refused with a :class:`~ReplayTables.errors.CheckpointError`
naming the key (a dotted path such as ``table.directory.count``), the value and
what was expected, and the buffer is left as it was.

The helpers are deliberately strict about types: a JSON ``true`` is not an
integer, ``1e6`` is not a shape entry, a list is not an array (arrays are always
saved as ``.npy`` files). They never allocate more than the validated value
itself (one copy of an array, converted to the dtype the component keeps).
"""
from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.engine import validators
from ReplayTables.errors import CheckpointError, ReplayTablesError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "array",
    "bool_array",
    "boolean",
    "check_counters",
    "check_depth",
    "check_dtype",
    "check_fields",
    "distinct",
    "int_array",
    "integer",
    "join",
    "mapping",
    "number",
    "string",
]

#: Ids, positions and counters stay below this, so adding a capacity to one never overflows int64.
MAX_INT = 2**62
#: Deepest nesting of a manifest or state dict (ours is about a dozen levels deep).
MAX_DEPTH = 64
#: Most dimensions a saved field or array may have (numpy allows 64).
MAX_NDIM = 32


def join(where: str, key: Any) -> str:
    """The dotted path of ``key`` inside ``where``."""
    return f"{where}.{key}" if where else str(key)


def mapping(where: str, value: Any, required: tuple[str, ...] = (), optional: tuple[str, ...] = (),
            closed: bool = True) -> Mapping[str, Any]:
    """``value`` as a dict with every ``required`` key (and, if ``closed``, no others)."""
    if not isinstance(value, Mapping):
        raise CheckpointError(where or "state", value, "a dict (as state_dict() / get_state() return)")
    for key in required:
        if key not in value:
            raise CheckpointError(join(where, key), "<missing>", f"a value for every key {sorted(required)}")
    if closed:
        unknown = [k for k in value if k not in required and k not in optional]
        if unknown:
            raise CheckpointError(where or "state", sorted(map(str, unknown)),
                                  f"only the keys {sorted(required + optional)}", "unknown key(s)")
    return value


def integer(where: str, value: Any, lo: int = 0, hi: int = MAX_INT) -> int:
    """An integer in ``[lo, hi]`` (a bool or a float is not one): ``validators.integer`` for saved state."""
    return validators.integer(where, value, lo, hi, CheckpointError)


def number(where: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in ``[lo, hi]``: ``validators.number`` for saved state."""
    return validators.number(where, value, lo, hi, CheckpointError)


def boolean(where: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise CheckpointError(where, value, "true or false")
    return bool(value)


def string(where: str, value: Any, choices: tuple[str, ...] | None = None, max_len: int = 256) -> str:
    if not isinstance(value, str) or len(value) > max_len or (choices is not None and value not in choices):
        raise CheckpointError(where, value, f"one of {list(choices)}" if choices is not None
                              else f"a string of at most {max_len} characters")
    return value


def array(where: str, value: Any, shape: tuple[int, ...] | None = None, kinds: str = "biuf",
          ndim: int | None = None) -> np.ndarray:
    """A numpy array of one of the dtype ``kinds`` (and ``shape`` / ``ndim`` when given); not copied."""
    if not isinstance(value, np.ndarray):
        raise CheckpointError(where, value, "a numpy array (arrays are saved as .npy files)")
    expected = f"an array of shape {shape}" if shape is not None else f"a {ndim}-d array" if ndim else "an array"
    if value.dtype.kind not in kinds or value.dtype.fields is not None:
        raise CheckpointError(where, f"dtype {value.dtype}", f"{expected} of dtype kind {list(kinds)}")
    if (shape is not None and value.shape != tuple(shape)) or (ndim is not None and value.ndim != ndim):
        raise CheckpointError(where, f"shape {value.shape}", expected)
    return value


def int_array(where: str, value: Any, shape: tuple[int, ...] | None = None, lo: int = -MAX_INT,
              hi: int = MAX_INT, ndim: int | None = None, dtype: Any = np.int64) -> np.ndarray:
    """An integer array with every value in ``[lo, hi]``, as a fresh copy of ``dtype``."""
    arr = array(where, value, shape, "iu", ndim)
    if arr.size:
        low, high = int(arr.min()), int(arr.max())  # Python ints: a uint64 above 2**63 is not wrapped
        if low < lo or high > hi:
            bad = low if low < lo else high
            raise CheckpointError(where, f"a value {bad}", f"integers from {lo} to {hi}")
    return np.array(arr, dtype=dtype, copy=True)


def distinct(values: np.ndarray, bound: int) -> bool:
    """Are the integers ``values`` (each in ``[0, bound)``) all different? O(n + bound), no sort."""
    marks = np.zeros(bound, dtype=bool)
    marks[values] = True
    return int(np.count_nonzero(marks)) == values.size


def bool_array(where: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A bool array (or a uint8 array of 0 and 1) of ``shape``, as a fresh bool copy."""
    arr = array(where, value, shape, "bu")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > 1:
        raise CheckpointError(where, f"a value {int(arr.max())}", "flags 0 or 1")
    return np.array(arr, dtype=bool, copy=True)


def check_dtype(where: str, value: Any) -> np.dtype:
    """A plain numpy dtype from its saved string (``'<f4'``); never an object or structured dtype."""
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        raise CheckpointError(where, value, "a numpy dtype string such as '<f4'")
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise CheckpointError(where, value, "a numpy dtype string such as '<f4'", str(exc)) from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize < 1:
        raise CheckpointError(where, value, "a plain numeric dtype of at least one byte (no object, structured "
                                            "or sub-array dtype)")
    return dtype


def check_shape(where: str, value: Any, max_ndim: int = MAX_NDIM) -> tuple[int, ...]:
    """A shape: a list of at most ``max_ndim`` non-negative integers."""
    if not isinstance(value, (list, tuple)) or len(value) > max_ndim:
        raise CheckpointError(where, value, f"a list of at most {max_ndim} non-negative integers")
    return tuple(integer(f"{where}[{i}]", s, 0, MAX_INT) for i, s in enumerate(value))


def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of an array, in Python integers (``np.prod`` would wrap around for huge shapes)."""
    return math.prod(shape) * dtype.itemsize


def check_fields(where: str, value: Any, kind: str) -> list[tuple[tuple[str, ...], tuple[int, ...], np.dtype]]:
    """The saved fields of a schema as ``(path, shape, dtype)``, each checked.

    Paths are non-empty lists of non-empty strings, unique, and none is a prefix
    of another (``a`` and ``a.b`` cannot both be leaves). A NamedTuple or
    dataclass schema has flat paths that are valid Python identifiers, so a
    stand-in class can be built from them.
    """
    if not isinstance(value, list) or not 0 < len(value) <= 100_000:
        raise CheckpointError(where, value, "a non-empty list of fields")
    out = []
    seen: set[tuple[str, ...]] = set()
    for i, f in enumerate(value):
        here = f"{where}[{i}]"
        m = mapping(here, f, ("path", "shape", "dtype"))
        path = m["path"]
        if not isinstance(path, list) or not 0 < len(path) <= MAX_DEPTH \
                or not all(isinstance(p, str) and 0 < len(p) <= 256 for p in path):
            raise CheckpointError(f"{here}.path", path, "a non-empty list of non-empty names")
        if kind != "dict" and (len(path) != 1 or not is_field_name(path[0])):
            raise CheckpointError(f"{here}.path", path, f"one Python identifier not starting with '_' (a {kind} "
                                                        "field)")
        key = tuple(path)
        if key in seen:
            raise CheckpointError(f"{here}.path", path, "a path no other field has")
        seen.add(key)
        out.append((key, check_shape(f"{here}.shape", m["shape"]), check_dtype(f"{here}.dtype", m["dtype"])))
    prefixes = {p[:k] for p in seen for k in range(1, len(p))}
    clash = sorted(seen & prefixes)
    if clash:
        raise CheckpointError(where, [list(p) for p in clash[:4]], "leaf paths (a field cannot also hold fields)")
    return out


def is_field_name(name: str) -> bool:
    """Can ``name`` be the field of a NamedTuple (and a dataclass)?"""
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


def check_counters(where: str, value: Any, names: tuple[str, ...]) -> dict[str, int]:
    """Counters: exactly the known ``names``, each a non-negative integer."""
    m = mapping(where, value, names)
    return {k: integer(join(where, k), m[k], 0, MAX_INT) for k in names}


def check_depth(value: Any, where: str = "manifest", limit: int = MAX_DEPTH) -> None:
    """Refuse containers nested deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth >= limit:
            raise CheckpointError(where, f"nesting deeper than {limit} levels", f"at most {limit} levels of "
                                                                                 "nested dicts and lists")
        stack.extend((child, depth + 1) for child in children)


def as_checkpoint_error(exc: ReplayTablesError, where: str = "") -> CheckpointError:
    """The same refusal as a :class:`CheckpointError` (a value in saved state, not a call argument)."""
    if isinstance(exc, CheckpointError):
        return exc
    field = join(where, exc.field) if where else exc.field
    return CheckpointError(field, exc.value, exc.expected, "a value saved in the state")
