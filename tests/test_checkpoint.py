"""Checkpoints: save/load, pickle and deepcopy give an equal buffer (same class,
contents, priorities, counters, rng state, so the next samples are identical);
a save interrupted at any step leaves the previous checkpoint loadable; a
corrupted, truncated or foreign directory gives a CheckpointError that names the
field, the value and what was expected, and changes nothing."""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ReplayTables
import ReplayTables.checkpoint as ckpt
from conftest import (
    DTransition,
    Transition,
    assert_equal_state,
    assert_same_buffer,
    item,
    items,
    snapshot,
    write_manifest,
)
from ReplayTables.errors import CheckpointError, ReplayTablesError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer


def busy_rb() -> ReplayBuffer:
    b = ReplayBuffer(16, Transition, np.random.default_rng(11))
    ids = b.add_batch(items(range(12)))
    b.delete(ids[[2, 5]])
    b.add_batch(items(range(12, 20)))  # wraps, refills, evicts
    b.sample(7)
    return b


def busy_per(**config: Any) -> PrioritizedReplay:
    b = PrioritizedReplay(16, Transition, np.random.default_rng(12),
                          PERConfig(**{"uniform_probability": 0.05, "beta_steps": 10, **config}))
    ids = b.add_batch(items(range(12)), priorities=np.linspace(0, 5, 12))
    b.update_priorities(ids[:4], [9.0, 0.0, 1.0, 2.0])
    b.delete(ids[[6]])
    for k in range(12, 20):
        b.add(item(k), priority=float(k % 3) if b.config.new_priority_mode == "given" else None)
    b.sample(5)
    b.sample(3)
    return b


BUFFERS: dict[str, Callable[[], Any]] = {
    "rb": busy_rb,
    "per-max": busy_per,
    "per-mean-stratified": lambda: busy_per(new_priority_mode="mean", stratified=True, max_decay=0.9),
    "per-given": lambda: busy_per(new_priority_mode="given", priority_exponent=1.0),
    "empty-rb": lambda: ReplayBuffer(4, Transition, np.random.default_rng(1)),
    "empty-per": lambda: PrioritizedReplay(4, Transition, np.random.default_rng(1)),
    "dataclass": lambda: _filled(ReplayBuffer(5, DTransition, np.random.default_rng(2)), DTransition),
    "dict": lambda: _dict_buffer(),
}


def _filled(b: Any, cls: type) -> Any:
    b.add_batch(items(range(7), cls))
    return b


def _dict_buffer() -> ReplayBuffer:
    b = ReplayBuffer(5, {"obs": {"pos": ((2,), np.float32)}, "a": ((), np.int64)}, np.random.default_rng(3))
    for k in range(6):
        b.add({"obs": {"pos": np.full(2, k)}, "a": k})
    return b


def continue_same_way(a: Any, b: Any) -> None:
    """Both buffers behave identically from here on (adds, samples, updates)."""
    prioritized = isinstance(a, PrioritizedReplay)
    for step in range(3):
        kwargs = {"priority": 1.5} if prioritized and a.config.new_priority_mode == "given" else {}
        if a._table.schema.kind != "dict":
            ia = a.add(item(100 + step, a.structure or Transition), **kwargs)
            ib = b.add(item(100 + step, b.structure or Transition), **kwargs)
            assert ia == ib
        if len(a):
            sa, sb = a.sample(9), b.sample(9)
            np.testing.assert_array_equal(sa.ids, sb.ids)
            np.testing.assert_array_equal(sa.weights, sb.weights)
            if prioritized:
                a.update_priorities(sa.ids, np.arange(9.0))
                b.update_priorities(sb.ids, np.arange(9.0))
    assert_equal_state(snapshot(a), snapshot(b))


@pytest.mark.parametrize("name", list(BUFFERS))
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    a = BUFFERS[name]()
    path = a.save(tmp_path / "ckpt")
    assert Path(path).exists()
    b = ReplayTables.load(tmp_path / "ckpt")
    assert type(b) is type(a)
    assert b.max_size == a.max_size
    if a._table.schema.kind != "dict":
        assert b.structure is a.structure
    assert_equal_state(snapshot(a), snapshot(b))
    continue_same_way(a, b)


@pytest.mark.parametrize("name", list(BUFFERS))
def test_pickle_round_trip(name: str) -> None:
    a = BUFFERS[name]()
    b = pickle.loads(pickle.dumps(a))
    assert type(b) is type(a)
    assert_equal_state(snapshot(a), snapshot(b))
    continue_same_way(a, b)


@pytest.mark.parametrize("name", list(BUFFERS))
def test_deepcopy_is_equal_and_independent(name: str) -> None:
    a = BUFFERS[name]()
    b = copy.deepcopy(a)
    assert type(b) is type(a)
    assert_equal_state(snapshot(a), snapshot(b))
    before = snapshot(a)
    if a._table.schema.kind != "dict":
        kwargs = {"priority": 2.0} if isinstance(b, PrioritizedReplay) else {}
        b.add(item(500, b.structure), **kwargs)
        if len(b) > 1:
            b.delete(b.sample(1).ids)
    assert_equal_state(before, snapshot(a))  # the original did not move
    c = copy.deepcopy(a)
    continue_same_way(a, c)


def test_loaded_batches_are_the_users_structure(tmp_path: Path) -> None:
    a = busy_rb()
    a.save(tmp_path / "c")
    b = ReplayTables.load(tmp_path / "c")
    assert isinstance(b.sample(2).data, Transition)


def test_save_again_replaces_the_checkpoint(tmp_path: Path) -> None:
    a = busy_per()
    a.save(tmp_path / "c")
    a.add(item(77))
    a.save(tmp_path / "c")
    assert_same_buffer(a, ReplayTables.load(tmp_path / "c"))
    assert len(list((tmp_path / "c").glob("snapshot-*"))) == 1


# ---------------------------------------------------------------- interrupted saves
class Interrupt(Exception):
    pass


def count_steps(buffer: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    monkeypatch.setattr(ckpt, "_step", names.append)
    buffer.save(path)
    monkeypatch.undo()
    return names


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["rb", "per-max"])
def test_interrupted_save_leaves_previous_checkpoint(name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    steps = count_steps(BUFFERS[name](), tmp_path / "probe", monkeypatch)
    assert len(steps) >= 4 and "manifest" in steps and "latest" in steps
    commit = steps.index("latest") + 1  # LATEST is replaced after this step
    for k in range(1, len(steps) + 1):
        path = tmp_path / f"c{k}"
        buffer = BUFFERS[name]()
        buffer.save(path)
        old = snapshot(buffer)
        buffer.add(item(900 + k), **({"priority": 3.0} if isinstance(buffer, PrioritizedReplay) else {}))
        buffer.sample(2)
        new = snapshot(buffer)
        calls = {"n": 0}

        def step(label: str, k: int = k, calls: dict[str, int] = calls) -> None:
            calls["n"] += 1
            if calls["n"] == k:
                raise Interrupt(label)

        monkeypatch.setattr(ckpt, "_step", step)
        with pytest.raises(Interrupt):
            buffer.save(path)
        monkeypatch.undo()
        loaded = ReplayTables.load(path)
        if k <= commit:
            assert_equal_state(old, snapshot(loaded))  # the previous checkpoint, intact
        else:
            assert_equal_state(new, snapshot(loaded))  # interrupted only while tidying up
        # and the directory still takes a full save afterwards
        buffer.save(path)
        assert_equal_state(new, snapshot(ReplayTables.load(path)))


# ---------------------------------------------------------------- damaged checkpoints
def snap_dir(root: Path) -> Path:
    return root / (root / "LATEST").read_text().strip()


def flip_byte(root: Path) -> None:
    f = snap_dir(root) / "storage" / "rows.npy" if (snap_dir(root) / "storage").is_dir() else None
    f = f or max(snap_dir(root).rglob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))


def truncate(root: Path) -> None:
    f = max(snap_dir(root).rglob("*.npy"), key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def delete_array(root: Path) -> None:
    max(snap_dir(root).rglob("*.npy"), key=lambda p: p.stat().st_size).unlink()


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        f = snap_dir(root) / "manifest.json"
        manifest = json.loads(f.read_text())
        change(manifest)
        write_manifest(f.parent, manifest)  # checksum updated: the edited values themselves must be refused
    return run


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        m[key] = value
    return change


def first_array_dtype(m: dict[str, Any]) -> None:
    entry = next(iter(m["arrays"].values()))
    entry["dtype"] = "<f2"


DAMAGE: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("flipped-byte", flip_byte, "", "CRC"),
    ("truncated-npy", truncate, "", "complete .npy"),
    ("missing-npy", delete_array, "", None),
    ("no-manifest", lambda r: (snap_dir(r) / "manifest.json").unlink(), "manifest.json", None),
    ("bad-json", lambda r: (snap_dir(r) / "manifest.json").write_text("{not json"), "manifest.json", None),
    ("newer-format", edit_manifest(set_key("format_version", ckpt.FORMAT_VERSION + 1)), "format_version",
     str(ckpt.FORMAT_VERSION + 1)),
    ("foreign-format", edit_manifest(set_key("format", "SomethingElse")), "format", "SomethingElse"),
    ("unknown-class", edit_manifest(set_key("class", "nowhere:Nothing")), "class", "nowhere:Nothing"),
    ("dtype-mismatch", edit_manifest(first_array_dtype), "", "<f2"),
    ("no-latest", lambda r: (r / "LATEST").unlink(), "path", None),
    ("latest-escapes", lambda r: (r / "LATEST").write_text("../../etc\n"), "LATEST", "../../etc"),
    ("latest-missing-dir", lambda r: (r / "LATEST").write_text("snapshot-999999\n"), "LATEST", "snapshot-999999"),
]


@pytest.mark.parametrize(("label", "damage", "field", "value"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_checkpoint_is_refused(label: str, damage: Callable[[Path], None], field: str,
                                       value: str | None, tmp_path: Path) -> None:
    buffer = busy_per()
    root = tmp_path / "c"
    buffer.save(root)
    before = snapshot(buffer)
    damage(root)
    files = tree_digest(root)
    with pytest.raises(CheckpointError) as info:
        ReplayTables.load(root)
    msg = str(info.value)
    assert field in msg and "got" in msg and "expected" in msg, msg
    if value is not None:
        assert value in msg, msg
    assert tree_digest(root) == files  # loading never writes
    assert_equal_state(before, snapshot(buffer))


@pytest.mark.parametrize("kind", ["missing", "empty-dir", "junk-dir", "a-file"])
def test_foreign_paths_are_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "x"
    if kind == "empty-dir":
        path.mkdir()
    elif kind == "junk-dir":
        path.mkdir()
        (path / "data.npy").write_bytes(b"hello")
        (path / "manifest.json").write_text("{}")
    elif kind == "a-file":
        path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        ReplayTables.load(path)
    assert "path" in str(info.value) and str(path) in str(info.value)


def test_save_to_a_file_path_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    b = busy_rb()
    before = snapshot(b)
    with pytest.raises(CheckpointError, match="path"):
        b.save(f)
    assert f.read_text() == "x"
    assert_equal_state(before, snapshot(b))


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busy_per().save(tmp_path / "c")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used on the load path")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    original = np.load

    def no_pickle_load(*args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("allow_pickle", False) is False
        return original(*args, **kwargs)

    monkeypatch.setattr(np, "load", no_pickle_load)
    assert len(ReplayTables.load(tmp_path / "c")) == len(busy_per())


def test_checkpoint_error_is_a_replaytables_error() -> None:
    assert issubclass(CheckpointError, ReplayTablesError)


@pytest.mark.parametrize("kind", ["namedtuple", "dataclass"])
def test_structure_that_cannot_be_imported(kind: str, tmp_path: Path) -> None:
    """A structure defined in a function cannot be found by name: the buffer still
    loads with an equivalent stand-in, and ``structure=`` gives the user's class."""
    if kind == "namedtuple":
        from typing import NamedTuple

        class Local(NamedTuple):
            x: np.ndarray
            a: int
    else:
        from dataclasses import dataclass

        @dataclass
        class Local:  # type: ignore[no-redef]
            x: np.ndarray
            a: int

    a = ReplayBuffer(4, Local, np.random.default_rng(0))
    a.add(Local(np.zeros(2), 1))
    a.save(tmp_path / "c")
    stand_in = ReplayTables.load(tmp_path / "c")
    data = stand_in.sample(3).data
    assert type(data).__name__ == "Local"
    np.testing.assert_array_equal(data.a, [1, 1, 1])
    own = ReplayTables.load(tmp_path / "c", structure=Local)
    assert isinstance(own.sample(1).data, Local)
    own.add(Local(np.ones(2), 2))
    assert len(own) == 2


@pytest.mark.parametrize("name", ["rb", "per-max", "per-mean-stratified"])
def test_state_dict_is_a_snapshot_that_rolls_back(name: str) -> None:
    b = BUFFERS[name]()
    state = b.state_dict()
    frozen = copy.deepcopy(state)
    before = snapshot(b)
    kwargs = {"priorities": np.ones(10)} if isinstance(b, PrioritizedReplay) else {}
    b.add_batch(items(range(50, 60)), **kwargs)
    b.delete(b.sample(1).ids)
    b.sample(4)
    assert_equal_state(frozen, state)  # taking more steps did not change the saved state
    b.load_state_dict(state)
    assert_equal_state(before, snapshot(b))
    twin = BUFFERS[name]()
    twin.add(item(5), **({"priority": 1.0} if isinstance(twin, PrioritizedReplay) else {}))
    twin.load_state_dict(state)
    continue_same_way(b, twin)


def _json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items_ = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items_:
        out.append((*prefix, k))
        out.extend(_json_paths(v, (*prefix, k)))
    return out


def test_every_edit_of_the_manifest_gives_a_replaytables_error_or_loads(tmp_path: Path) -> None:
    """Valid JSON laid out wrongly (a key deleted, or a value of the wrong type, at
    every place in the manifest) never escapes as a KeyError/TypeError/...; each
    load either works or raises a ReplayTablesError naming what was expected."""
    root = tmp_path / "c"
    busy_per().save(root)
    snap = snap_dir(root)
    manifest = json.loads((snap / "manifest.json").read_text())
    tried = errors = 0
    for p in _json_paths(manifest):
        for replacement in ("<delete>", "zzz", -7, None, [1, 2]):
            m = copy.deepcopy(manifest)
            node = m
            for k in p[:-1]:
                node = node[k]
            if replacement == "<delete>":
                if isinstance(node, list):
                    continue
                del node[p[-1]]
            else:
                node[p[-1]] = replacement
            write_manifest(snap, m)
            tried += 1
            try:
                ReplayTables.load(root)
            except ReplayTablesError as exc:
                errors += 1
                assert "expected" in str(exc)
    assert tried > 300 and errors > tried // 2
