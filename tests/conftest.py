"""Shared structures and helpers for the engine and ReplayTables-API tests.

Items are made from an integer ``k`` so that every stored value says which item
it came from: ``x = [k, k + 0.5, -k]``, ``a = k``, ``r = k / 2``. A test can then
check contents by looking at ``a`` alone and the rest for consistency.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer


class Transition(NamedTuple):
    """A NamedTuple with an undeclared vector, an int and a float32 field."""

    x: np.ndarray
    a: np.ndarray
    r: np.ndarray


@dataclass
class DTransition:
    """The same fields as a dataclass."""

    x: np.ndarray
    a: np.ndarray
    r: np.ndarray


def item(k: int, cls: type = Transition) -> Any:
    """One item whose every field is a function of ``k``."""
    return cls(np.array([k, k + 0.5, -k], dtype=np.float64), np.int64(k), np.float32(k / 2))


def items(ks: Any, cls: type = Transition) -> Any:
    """A batch (fields with a leading axis) of the items ``ks``."""
    ks = np.asarray(ks, dtype=np.int64)
    x = np.stack([ks, ks + 0.5, -ks], axis=1).astype(np.float64) if ks.size else np.empty((0, 3))
    return cls(x, ks.copy(), (ks / 2).astype(np.float32))


def check_fields(batch: Any, ks: Any) -> None:
    """``batch`` holds exactly the items ``ks`` in order."""
    ks = np.asarray(ks, dtype=np.int64)
    assert len(batch) == ks.size
    if ks.size == 0:
        return  # an empty get before the first add has no field arrays (dtypes not known yet)
    np.testing.assert_array_equal(batch.a, ks)
    np.testing.assert_array_equal(batch.x, np.stack([ks, ks + 0.5, -ks], axis=1).reshape(-1, 3))
    np.testing.assert_array_equal(batch.r, (ks / 2).astype(np.float32))


def keys_of(buffer: Any, ids: Any) -> np.ndarray:
    """The ``k`` of each id (through ``get``)."""
    return np.asarray(buffer.get(np.asarray(ids, dtype=np.int64)).a)


def snapshot(buffer: Any) -> dict[str, Any]:
    """Everything observable about a buffer: its full state dict and its stats."""
    return {"state": copy.deepcopy(buffer.state_dict()), "stats": dict(buffer.stats()), "len": len(buffer)}


def assert_equal_state(a: Any, b: Any, path: str = "") -> None:
    """Recursive equality of state dicts (numpy arrays compared exactly, dtypes too)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: dict vs {type(b)}"
        assert set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_equal_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{path}: array vs {type(b)}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_state(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_unchanged(before: dict[str, Any], buffer: Any) -> None:
    assert_equal_state(before, snapshot(buffer))


def assert_same_buffer(a: Any, b: Any) -> None:
    """Same class, state (contents, priorities, counters, rng) and next samples."""
    assert type(a) is type(b)
    assert_equal_state(snapshot(a), snapshot(b))
    if len(a):
        sa, sb = a.sample(16), b.sample(16)
        np.testing.assert_array_equal(sa.ids, sb.ids)
        np.testing.assert_array_equal(sa.weights, sb.weights)
        for fa, fb in zip(sa, sb):
            np.testing.assert_array_equal(fa, fb)


def write_manifest(snapshot_dir: Path, manifest: Any) -> None:
    """Replace a snapshot's manifest the way an editor who also updates its checksum would.

    The checksum only detects damage, so every check of the values must hold for a
    manifest edited this way too.
    """
    data = json.dumps(manifest).encode("utf-8")
    (snapshot_dir / "manifest.json").write_bytes(data)
    (snapshot_dir / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")


@pytest.fixture
def rb() -> ReplayBuffer:
    """A ReplayBuffer(8) holding items 0..4."""
    buffer = ReplayBuffer(8, Transition, np.random.default_rng(1))
    buffer.add_batch(items(range(5)))
    return buffer


@pytest.fixture
def per() -> PrioritizedReplay:
    """A PrioritizedReplay(8) holding items 0..4 with raw priorities 1..5."""
    buffer = PrioritizedReplay(8, Transition, np.random.default_rng(2), PERConfig(uniform_probability=0.1))
    ids = buffer.add_batch(items(range(5)))
    buffer.update_priorities(ids, np.arange(1.0, 6.0))
    return buffer
