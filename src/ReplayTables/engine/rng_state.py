"""The state of a ``numpy.random.Generator`` as JSON, so checkpoints need no pickle.

Saving the generator's exact state is what makes a loaded buffer draw the same
next samples as the original. A saved state is checked before it is used: the
bit generator must be one of numpy's (named, never imported by name), and the
state is tried on a scratch generator of that kind first, so a bad one leaves
the buffer's generator as it was.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["BIT_GENERATORS", "check_rng_state", "make_generator", "rng_state", "set_rng_state"]

#: numpy's bit generators by name: the only kinds a saved state may name.
BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
    "Philox": np.random.Philox, "SFC64": np.random.SFC64}
_MAX_STATE_DEPTH = 6  # numpy's states are dicts of dicts, three levels deep


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": _jsonable(state)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _from_jsonable(obj: Any, where: str, depth: int = 0) -> Any:
    """The numpy state dict from its JSON form: only dicts, strings, integers and integer arrays."""
    if depth > _MAX_STATE_DEPTH:
        raise CheckpointError(where, "deeper nesting", f"a bit generator state at most {_MAX_STATE_DEPTH} levels deep")
    if isinstance(obj, Mapping):
        if "__ndarray__" in obj:
            dtype = obj.get("dtype")
            values = obj["__ndarray__"]
            if set(obj) != {"__ndarray__", "dtype"} or not isinstance(dtype, str) or not isinstance(values, list) \
                    or len(values) > 100_000 or not all(type(v) is int for v in values):
                raise CheckpointError(where, obj, "{'__ndarray__': [integers], 'dtype': an unsigned integer dtype}")
            try:
                dt = np.dtype(dtype)
                if dt.kind != "u":
                    raise TypeError(dt)
                return np.array(values, dtype=dt)
            except (TypeError, ValueError, OverflowError):
                raise CheckpointError(where, dtype, "an unsigned integer dtype holding the values") from None
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(where, k, "string keys")
            if k == "bit_generator":
                out[k] = v  # checked against the name by the caller
            else:
                out[k] = _from_jsonable(v, f"{where}.{k}", depth + 1)
        return out
    if type(obj) is int and 0 <= obj < 2**128:
        return obj
    raise CheckpointError(where, obj, "non-negative integers below 2**128, integer arrays and dicts of them (a bit "
                                      "generator state)")


def check_rng_state(saved: Any, where: str = "rng", rng: np.random.Generator | None = None) -> dict[str, Any]:
    """The numpy bit-generator state ``saved`` describes, checked; changes nothing.

    With ``rng``, its bit generator must be of the saved kind (a
    :class:`ConfigError`: the receiving generator does not fit). A state the
    bit generator itself refuses is a :class:`CheckpointError`.
    """
    if not isinstance(saved, Mapping) or set(saved) != {"bit_generator", "state"}:
        raise CheckpointError(where, saved, "{'bit_generator': name, 'state': its state} (as rng_state() saves)")
    name = saved["bit_generator"]
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise CheckpointError(f"{where}.bit_generator", name, f"one of numpy's bit generators {sorted(BIT_GENERATORS)}")
    if rng is not None and type(rng.bit_generator).__name__ != name:
        raise ConfigError(f"{where}.bit_generator", name, f"{type(rng.bit_generator).__name__} (the buffer's "
                                                         f"generator; pass a {name} generator to load this state)")
    state = _from_jsonable(saved["state"], f"{where}.state")
    if not isinstance(state, dict) or state.get("bit_generator") != name:
        raise CheckpointError(f"{where}.state.bit_generator", state.get("bit_generator") if isinstance(state, dict)
                              else state, repr(name))
    if state.get("has_uint32", 0) not in (0, 1):
        raise CheckpointError(f"{where}.state.has_uint32", state.get("has_uint32"), "0 or 1")
    scratch = BIT_GENERATORS[name]()
    try:
        scratch.state = state
    except (TypeError, ValueError, KeyError, OverflowError, IndexError) as exc:
        raise CheckpointError(f"{where}.state", saved["state"], f"a valid {name} state", str(exc)[:200]) from None
    checked: dict[str, Any] = scratch.state
    if _jsonable(checked) != _jsonable(state):  # numpy took it, but not as given (a value out of range, wrapped)
        raise CheckpointError(f"{where}.state", saved["state"], f"a {name} state with every value in range")
    return checked


def make_generator(saved: Any, where: str = "rng") -> np.random.Generator:
    """A new generator in the checked state ``saved`` (of the saved bit generator kind)."""
    state = check_rng_state(saved, where)
    bit_generator = BIT_GENERATORS[state["bit_generator"]]()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def set_rng_state(rng: np.random.Generator, saved: dict[str, Any], where: str = "rng") -> None:
    rng.bit_generator.state = check_rng_state(saved, where, rng)
