"""Where the components' scalar state lives: small named numpy arrays handed out by an arena.

A table's counters, its writer's cursor, its slot directory's count, its
sampler's running maximum priority and its rate limiter's counts are not Python
attributes spread over modules but elements of small arrays that one
:class:`Arena` hands out by name. So all of a table's state is arrays: the same
components run over plain numpy memory (:class:`LocalArena`, the default) or
over memory another process can map (an arena built on
:class:`~ReplayTables.engine.shared_memory.SharedArrays`, whose layout is fixed
when it is created: :meth:`Arena.layout` of a local arena the components were
first bound to is that layout).

Components read and write their scalars through a ``memoryview`` of the array
(``view[0] += 1``): about 40 ns, a tenth of numpy scalar indexing, so the hot
add path pays little for it. A component is *bound* to an arena with
``bind(arena)``: if the arena already holds its array (an arena over memory
another process filled), the component adopts the values there; otherwise the
arena makes the array holding the component's current values.

Checkpoints are unchanged by where the scalars live: each component's
``state_dict`` still reports them as plain Python numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar, overload

import numpy as np
from numpy.typing import DTypeLike

from ReplayTables.errors import ConfigError

__all__ = ["Arena", "Counters", "FixedArena", "LocalArena", "ScalarField", "Scalars", "flag", "int_or_none",
           "zero_for_none"]

T = TypeVar("T")

Shape = tuple[int, ...]


class Arena:
    """Named arrays of fixed shape and dtype; the one place a table's scalar state lives.

    :meth:`array` returns the array called ``name``, making it first if the arena
    can. An arena in memory it did not lay out itself (shared memory attached by
    another process) only hands out the arrays of its layout.
    """

    def array(self, name: str, shape: Shape, dtype: DTypeLike, initial: Any = None) -> np.ndarray:
        """The array ``name`` (``initial``, or zeros, if it is new); an error if it exists with
        another shape or dtype."""
        raise NotImplementedError

    def arrays(self) -> Mapping[str, np.ndarray]:
        """Every array by name (live views, not copies)."""
        raise NotImplementedError

    def layout(self) -> dict[str, tuple[Shape, np.dtype]]:
        """``{name: (shape, dtype)}`` of every array: what another arena needs to hold the same state."""
        return {name: (a.shape, a.dtype) for name, a in self.arrays().items()}

    def copy_from(self, other: Arena) -> None:
        """Copy every array of ``other`` into the array of the same name here (same layout)."""
        mine = self.arrays()
        for name, source in other.arrays().items():
            if name not in mine or mine[name].shape != source.shape or mine[name].dtype != source.dtype:
                raise ConfigError("arena", name, f"an array {name!r} of shape {source.shape} and dtype {source.dtype} "
                                                 "in this arena (the same layout)")
        for name, source in other.arrays().items():
            mine[name][...] = source

    def __contains__(self, name: object) -> bool:
        return name in self.arrays()

    @staticmethod
    def _check(name: str, existing: np.ndarray, shape: Shape, dtype: np.dtype) -> np.ndarray:
        if existing.shape != shape or existing.dtype != dtype:
            raise ConfigError(f"arena[{name!r}]", f"{existing.dtype}{list(existing.shape)}",
                              f"{dtype}{list(shape)} (the layout the component asks for)")
        return existing


class LocalArena(Arena):
    """An arena of plain numpy arrays in this process, made on first request."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: Shape, dtype: DTypeLike, initial: Any = None) -> np.ndarray:
        shape, dt = tuple(int(s) for s in shape), np.dtype(dtype)
        existing = self._arrays.get(name)
        if existing is not None:
            return self._check(name, existing, shape, dt)
        arr = np.zeros(shape, dtype=dt)
        if initial is not None:
            arr[...] = initial
        self._arrays[name] = arr
        return arr

    def arrays(self) -> Mapping[str, np.ndarray]:
        return self._arrays

    def __repr__(self) -> str:
        return f"LocalArena({', '.join(f'{k}={v.tolist()}' for k, v in self._arrays.items())})"


class FixedArena(Arena):
    """An arena over arrays laid out elsewhere (e.g. ``SharedArrays(...).arrays``): it hands out
    only those, so a component asking for an array the layout lacks is a clear error."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)

    def array(self, name: str, shape: Shape, dtype: DTypeLike, initial: Any = None) -> np.ndarray:
        existing = self._arrays.get(name)
        if existing is None:
            raise ConfigError("arena", name, f"one of the arrays of this arena's layout {sorted(self._arrays)}")
        return self._check(name, existing, tuple(int(s) for s in shape), np.dtype(dtype))

    def arrays(self) -> Mapping[str, np.ndarray]:
        return self._arrays


class Scalars:
    """A component's few scalars in one 1-d arena array, read and written as Python numbers.

    ``view`` is a ``memoryview`` of the array (``view[i]`` is a Python int or
    float); the array itself is ``array``. Unbound, the scalars live in an array
    of their own; :meth:`bind` moves them into an arena.
    """

    __slots__ = ("array", "dtype", "name", "view")

    def __init__(self, name: str, values: list[Any], dtype: DTypeLike) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self._set(np.array(values, dtype=self.dtype))

    def _set(self, array: np.ndarray) -> None:
        self.array = array
        self.view = array.data  # a 1-d contiguous array: view[i] reads and writes element i

    def bind(self, arena: Arena) -> None:
        """Keep the scalars in ``arena`` from now on (adopting what it holds if it has them already)."""
        self._set(arena.array(self.name, self.array.shape, self.dtype, initial=self.array))

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "array": self.array}  # a memoryview does not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self.dtype = state["dtype"]
        self._set(state["array"])

    def __repr__(self) -> str:
        return f"Scalars({self.name!r}, {self.array.tolist()})"


def flag(value: bool) -> int:
    """A truth value as the 0/1 a :class:`Scalars` array holds."""
    return 1 if value else 0


def int_or_none(value: int) -> int | None:
    """A stored int read back with 0 meaning ``None`` (a bound not yet fixed)."""
    return int(value) or None


def zero_for_none(value: int | None) -> int:
    """``None`` stored as 0 (see :func:`int_or_none`)."""
    return int(value or 0)


class ScalarField(Generic[T]):
    """One element of a component's :class:`Scalars` (its ``scalars`` attribute) as an attribute.

    ``head = ScalarField(0)`` in a class body makes ``obj.head`` read
    ``obj.scalars.view[0]`` as a Python int and ``obj.head = n`` write it; ``get``
    and ``put`` convert other kinds (``ScalarField(4, bool, flag)`` for a flag,
    ``ScalarField(5, int_or_none, zero_for_none)`` for an optional bound). It
    replaces a property pair per scalar; components on the hottest path (the slot
    directory's count, the FIFO cursor) keep their own properties, a few tens of
    nanoseconds cheaper on a write.
    """

    get: Callable[[Any], T]
    put: Callable[[T], Any]

    @overload
    def __init__(self: ScalarField[int], index: int, *, doc: str | None = None) -> None: ...

    @overload
    def __init__(self, index: int, get: Callable[[Any], T], put: Callable[[T], Any], doc: str | None = None) -> None:
        ...

    def __init__(self, index: int, get: Callable[[Any], Any] = int, put: Callable[[Any], Any] = int,
                 doc: str | None = None) -> None:
        self.index = index
        self.get = get
        self.put = put
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> ScalarField[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object, owner: type | None = None) -> T | ScalarField[T]:
        if obj is None:
            return self
        view: Any = obj.scalars.view  # type: ignore[attr-defined]
        return self.get(view[self.index])

    def __set__(self, obj: object, value: T) -> None:
        obj.scalars.view[self.index] = self.put(value)  # type: ignore[attr-defined]


class Counters(MutableMapping[str, int]):
    """Named int64 counters in an arena array, used like the dict they replace.

    ``counters["added"] += 1`` works; keys are fixed at construction (an unknown
    key is a ``KeyError``, and no key can be deleted). The generated add lanes
    write ``counters.view[counters.index["added"]]`` directly.
    """

    def __init__(self, name: str, keys: tuple[str, ...]) -> None:
        self.names = tuple(keys)
        self.index = {k: i for i, k in enumerate(self.names)}
        self.scalars = Scalars(name, [0] * len(self.names), np.int64)

    @property
    def view(self) -> memoryview:
        return self.scalars.view

    def bind(self, arena: Arena) -> None:
        self.scalars.bind(arena)

    def __getitem__(self, key: str) -> int:
        return int(self.scalars.view[self.index[key]])

    def __setitem__(self, key: str, value: int) -> None:
        self.scalars.view[self.index[key]] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("a table's counters cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return repr(dict(self))
