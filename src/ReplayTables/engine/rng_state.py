"""The state of a ``numpy.random.Generator`` as JSON, so checkpoints need no pickle.

Saving the generator's exact state is what makes a loaded buffer draw the same
next samples as the original.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.errors import ConfigError

__all__ = ["rng_state", "set_rng_state"]


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


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    return obj


def set_rng_state(rng: np.random.Generator, saved: dict[str, Any]) -> None:
    if rng.bit_generator.state["bit_generator"] != saved["bit_generator"]:
        raise ConfigError("rng", type(rng.bit_generator).__name__,
                          f"a {saved['bit_generator']} generator, as in the checkpoint")
    rng.bit_generator.state = _from_jsonable(saved["state"])
