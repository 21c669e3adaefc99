"""Hostile input on every load path: ``ReplayTables.load``, ``TrajectoryReplay.open``,
``load_state_dict`` and ``set_state``.

Each case is an attack a user could meet in a checkpoint directory someone else
made (or a state dict built by hand): values out of range or inconsistent with
each other, arrays that disagree with their headers, files that are symlinks or
FIFOs, modules planted next to the checkpoint, deeply nested JSON. Every one must
be refused with a :class:`CheckpointError` (a :class:`ConfigError` where the state
does not fit the receiving buffer's arguments) whose message names the field,
the value and what was expected; loading into an existing buffer must leave it
exactly as it was (contents, priorities, counters, rng state); and nothing may
hang, run planted code or raise a bare ``MemoryError``/``KeyError``/...

Manifest edits are re-signed (``write_manifest``): the checksum only detects
damage, so the checks of the values must hold against an editor who updates it.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ReplayTables
import ReplayTables.checkpoint as ckpt
from conftest import Transition, assert_equal_state, assert_unchanged, item, items, snapshot, write_manifest
from ReplayTables.errors import CheckpointError, ConfigError, ReplayTablesError
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer
from ReplayTables.rllib import (
    FifoReplayBuffer,
    MultiAgentMixInReplayBuffer,
    MultiAgentPrioritizedReplayBuffer,
    MultiAgentReplayBuffer,
    PrioritizedReplayBuffer,
    ReservoirReplayBuffer,
)
from ReplayTables.rllib import ReplayBuffer as RLReplayBuffer
from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay
from test_bad_input import check_message

TIMEOUT = 10.0  # seconds a refused load may take at most (a FIFO would block for ever)


# ---------------------------------------------------------------- buffers under attack
def per_buffer() -> PrioritizedReplay:
    """PER(8) with items 0..4, one of priority 0, one deleted (so identity is false)."""
    b = PrioritizedReplay(8, Transition, np.random.default_rng(2), PERConfig(uniform_probability=0.1))
    ids = b.add_batch(items(range(5)))
    b.update_priorities(ids, [1.0, 2.0, 0.0, 4.0, 5.0])
    b.delete(ids[[1]])
    b.sample(3)
    return b


def rb_buffer() -> ReplayBuffer:
    b = ReplayBuffer(8, Transition, np.random.default_rng(1))
    b.add_batch(items(range(5)))
    b.sample(2)
    return b


def steps(k: int, n: int) -> dict[str, np.ndarray]:
    return {"obs": np.arange(k, k + n, dtype=np.float64), "eps_id": np.full(n, k // 10, dtype=np.int64)}


def rl_buffer() -> RLReplayBuffer:
    b = RLReplayBuffer(20, "fragments", seed=0)
    for k in range(4):
        b.add(steps(10 * k, 3))
    b.sample(2)
    return b


def rl_per() -> PrioritizedReplayBuffer:
    b = PrioritizedReplayBuffer(20, seed=1)
    ids = b.add(steps(0, 6))
    b.update_priorities(ids, np.arange(1.0, 7.0))
    return b


def rl_reservoir() -> ReservoirReplayBuffer:
    b = ReservoirReplayBuffer(8, seed=2)
    for k in range(4):
        b.add(steps(10 * k, 4))
    return b


def multi_agent() -> MultiAgentReplayBuffer:
    b = MultiAgentReplayBuffer(capacity=20, seed=3)
    b.add({"p1": steps(0, 4), "p2": steps(10, 3)})
    return b


def mixin() -> MultiAgentMixInReplayBuffer:
    b = MultiAgentMixInReplayBuffer(capacity=20, seed=4)
    b.add({"p1": steps(0, 4), "p2": steps(10, 3)})
    return b


def trajectory(storage: str = "memory", path: Path | None = None) -> TrajectoryReplay:
    b = TrajectoryReplay(40, (2,), np.uint8, num_streams=2, n_step=2, sequence=SequenceConfig(3), per=PERConfig(),
                         storage=storage, path=path, rng=np.random.default_rng(5))
    rng = np.random.default_rng(6)
    b.begin_episodes(rng.integers(0, 255, (2, 2), dtype=np.uint8))
    for t in range(12):
        end = np.array([t == 7, False])
        b.add_steps(np.array([t, t]), np.ones(2), rng.integers(0, 255, (2, 2), dtype=np.uint8), end, np.zeros(2, bool))
        if end.any():
            b.begin_episodes(rng.integers(0, 255, (1, 2), dtype=np.uint8), streams=end)
    return b


def rl_snapshot(buffer: Any) -> dict[str, Any]:
    return {"state": copy.deepcopy(buffer.get_state()), "stats": buffer.stats(), "len": len(buffer)}


# ---------------------------------------------------------------- editing a saved checkpoint
def snap_dir(root: Path) -> Path:
    return root / (root / "LATEST").read_text().strip()


def read_manifest(root: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((snap_dir(root) / "manifest.json").read_text())
    return manifest


def edit(root: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    manifest = read_manifest(root)
    change(manifest)
    write_manifest(snap_dir(root), manifest)


def setter(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def replace_array(root: Path, key: str, arr: np.ndarray) -> None:
    """Write ``arr`` as the snapshot's array ``key``, with a manifest entry (and checksum) to match."""
    manifest = read_manifest(root)
    entry = manifest["arrays"][key]
    np.save(snap_dir(root) / entry["file"], arr, allow_pickle=False)
    entry.update(shape=list(arr.shape), dtype=arr.dtype.str, crc32=ckpt._crc(arr))
    write_manifest(snap_dir(root), manifest)


def array_of(root: Path, key: str) -> np.ndarray:
    return np.load(snap_dir(root) / read_manifest(root)["arrays"][key]["file"])


def with_array(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        replace_array(root, key, change(array_of(root, key).copy()))
    return run


def manifest_edit(*path: Any, value: Any) -> Callable[[Path], None]:
    return lambda root: edit(root, setter(*path, value=value))


def refuse_load(root: Path, field: str, value: str | None, cls: type[ReplayTablesError] = CheckpointError) -> None:
    """``ReplayTables.load(root)`` is refused, quickly, naming field, value and expectation."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["loaded"] = ReplayTables.load(root)
        except BaseException as exc:  # reported below, in the test thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"load did not return within {TIMEOUT} s"
    exc = result.get("error")
    assert exc is not None, "the hostile checkpoint loaded"
    assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"
    check_message(exc, field, value)


def saved(make: Callable[[], Any], tmp_path: Path) -> Path:
    root = tmp_path / "ckpt"
    make().save(root)
    return root


# ---------------------------------------------------------------- manifest values (ReplayTables.load)
def flip(a: np.ndarray) -> np.ndarray:
    return a[::-1].copy()


def all_equal(a: np.ndarray) -> np.ndarray:
    return np.full_like(a, a[0])


def leaf(slot: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        a[slot] = value
        return a
    return change


def unflag_zero(a: np.ndarray) -> np.ndarray:
    return np.zeros_like(a)


def deep(depth: int) -> Any:
    node: Any = 0
    for _ in range(depth):
        node = [node]
    return node


NAN = float("nan")
MANIFEST_CASES: list[tuple[str, Callable[[], Any], Callable[[Path], None], str, str | None]] = [
    # directory
    ("count-huge", per_buffer, manifest_edit("table", "directory", "count", value=10**6), "table.directory.count",
     "1000000"),
    ("count-negative", per_buffer, manifest_edit("table", "directory", "count", value=-3), "table.directory.count",
     "-3"),
    ("count-not-live", per_buffer, manifest_edit("table", "directory", "count", value=3), "table.directory.count",
     "3"),
    ("count-bool", rb_buffer, manifest_edit("table", "directory", "count", value=True), "table.directory.count",
     "True"),
    ("identity-with-holes", per_buffer, manifest_edit("table", "directory", "identity", value=True),
     "table.directory.identity", "True"),
    ("identity-string", rb_buffer, manifest_edit("table", "directory", "identity", value="yes"),
     "table.directory.identity", "'yes'"),
    ("slot-ids-all-equal", per_buffer, with_array("directory.slot_id", all_equal), "table.directory.slot_id", "slot"),
    ("slot-id-wrong-slot", rb_buffer, with_array("directory.slot_id", leaf(0, 1)), "table.directory.slot_id",
     "id 1 in slot 0"),
    ("slot-id-overflow", rb_buffer, with_array("directory.slot_id", leaf(0, 2**63 - 8)), "table.directory.slot_id",
     str(2**63 - 8)),
    ("slot-id-float", rb_buffer, with_array("directory.slot_id", lambda a: a.astype(np.float64)),
     "table.directory.slot_id", "float64"),
    ("live-reordered-wrongly", per_buffer, with_array("directory.live", lambda a: np.array([0, 0, 2, 3])),
     "table.directory.live", None),
    ("live-too-short", per_buffer, with_array("directory.live", lambda a: a[:2]), "table.directory.live", "(2,)"),
    ("slot-id-inline-list", rb_buffer, manifest_edit("table", "directory", "slot_id", value=list(range(8))),
     "table.directory.slot_id", "[0, 1, 2"),
    ("array-ref-missing", rb_buffer, manifest_edit("table", "directory", "slot_id", value={"__array__": "nowhere"}),
     "table.directory.slot_id", "nowhere"),
    ("array-ref-not-a-string", rb_buffer, manifest_edit("table", "directory", "slot_id", value={"__array__": [1]}),
     "table.directory.slot_id", "[1]"),
    ("array-ref-twice", per_buffer, manifest_edit("table", "directory", "live",
                                                  value={"__array__": "directory.slot_id"}),
     "table.directory", "directory.slot_id"),
    # writer, sampler, tree
    ("cursor-out-of-range", rb_buffer, manifest_edit("table", "writer", "cursor", value=100), "table.writer.cursor",
     "100"),
    ("cursor-float", rb_buffer, manifest_edit("table", "writer", "cursor", value=2.5), "table.writer.cursor", "2.5"),
    ("max-q-nan", per_buffer, manifest_edit("table", "sampler", "max_q", value=NAN), "table.sampler.max_q", "nan"),
    ("max-q-negative", per_buffer, manifest_edit("table", "sampler", "max_q", value=-5), "table.sampler.max_q", "-5"),
    ("max-q-string", per_buffer, manifest_edit("table", "sampler", "max_q", value="big"), "table.sampler.max_q",
     "'big'"),
    ("leaves-wrong-length", per_buffer, with_array("sampler.tree.leaves", lambda a: a[:5]),
     "table.sampler.tree.leaves", "(5,)"),
    ("leaf-nan", per_buffer, with_array("sampler.tree.leaves", leaf(0, NAN)), "table.sampler.tree.leaves", "nan"),
    ("leaf-negative", per_buffer, with_array("sampler.tree.leaves", leaf(0, -1.0)), "table.sampler.tree.leaves",
     "-1.0"),
    ("leaves-sum-overflows", per_buffer, with_array("sampler.tree.leaves", lambda a: np.where(a > 0, 1e308, a)),
     "table.sampler.tree.leaves", "inf"),
    ("leaf-at-empty-slot", per_buffer, with_array("sampler.tree.leaves", leaf(6, 3.0)), "table.sampler.tree.leaves",
     "empty slot 6"),
    ("live-zero-unflagged", per_buffer, with_array("sampler.tree.live_zero", unflag_zero),
     "table.sampler.tree.live_zero", "slot 2"),
    ("live-zero-flag-on-positive", per_buffer, with_array("sampler.tree.live_zero", lambda a: np.ones_like(a)),
     "table.sampler.tree.live_zero", "slot 0"),
    ("sampler-config-changed", per_buffer, manifest_edit("table", "sampler", "config", "uniform_probability",
                                                         value=0.5), "table.sampler.config", "0.5"),
    # counters, rng, front end
    ("counter-negative", per_buffer, manifest_edit("table", "counters", "added", value=-1), "table.counters.added",
     "-1"),
    ("counter-not-an-int", per_buffer, manifest_edit("table", "counters", "added", value="many"),
     "table.counters.added", "'many'"),
    ("counter-unknown", rb_buffer, manifest_edit("table", "counters", "stolen", value=1), "table.counters", "stolen"),
    ("counter-missing", rb_buffer, lambda r: edit(r, lambda m: m["table"]["counters"].pop("added")),
     "table.counters.added", "<missing>"),
    ("rng-garbage", per_buffer, manifest_edit("table", "rng", "state", "state", "state", value="x"),
     "table.rng.state.state.state", "'x'"),
    ("rng-state-too-big", per_buffer, manifest_edit("table", "rng", "state", "state", "inc", value=2**200),
     "table.rng.state.state.inc", str(2**200)[:20]),
    ("rng-has-uint32", per_buffer, manifest_edit("table", "rng", "state", "has_uint32", value=5),
     "table.rng.state.has_uint32", "5"),
    ("rng-unknown-generator", rb_buffer, manifest_edit("table", "rng", "bit_generator", value="os.system"),
     "table.rng.bit_generator", "os.system"),
    ("rng-not-a-dict", rb_buffer, manifest_edit("table", "rng", value=[1, 2]), "table.rng", "[1, 2]"),
    ("sample-calls-negative", per_buffer, manifest_edit("frontend", "sample_calls", value=-1),
     "frontend.sample_calls", "-1"),
    ("frontend-unknown-key", per_buffer, manifest_edit("frontend", "evil", value=1), "frontend", "evil"),
    # schema and storage
    ("dtype-one-gigabyte-void", rb_buffer, manifest_edit("table", "schema", "fields", 0, "dtype", value="V1000000000"),
     "table.schema.fields", "V1000000000"),
    ("dtype-object", rb_buffer, manifest_edit("table", "schema", "fields", 0, "dtype", value="O"),
     "table.schema.fields[0].dtype", "'O'"),
    ("dtype-nonsense", rb_buffer, manifest_edit("table", "schema", "fields", 0, "dtype", value="__import__('os')"),
     "table.schema.fields[0].dtype", "__import__"),
    ("shape-floats", rb_buffer, manifest_edit("table", "schema", "fields", 0, "shape", value=[1e6, 1e6]),
     "table.schema.fields[0].shape[0]", "1000000.0"),
    ("shape-huge", rb_buffer, manifest_edit("table", "schema", "fields", 0, "shape", value=[10**6, 10**6]),
     "table.schema.fields", "1000000"),
    ("shape-negative", rb_buffer, manifest_edit("table", "schema", "fields", 0, "shape", value=[-3]),
     "table.schema.fields[0].shape[0]", "-3"),
    ("field-name-not-identifier", rb_buffer, manifest_edit("table", "schema", "fields", 0, "path",
                                                           value=["import os"]),
     "table.schema.fields[0].path", "import os"),
    ("field-name-dunder", rb_buffer, manifest_edit("table", "schema", "fields", 0, "path", value=["__class__"]),
     "table.schema.fields[0].path", "__class__"),
    ("field-duplicate", rb_buffer, manifest_edit("table", "schema", "fields", 1, "path", value=["x"]),
     "table.schema.fields[1].path", "'x'"),
    ("schema-kind-unknown", rb_buffer, manifest_edit("table", "schema", "kind", value="pickle"), "table.schema.kind",
     "pickle"),
    ("storage-offsets", rb_buffer, manifest_edit("table", "storage", "offsets", value=[0, 0, 0]),
     "table.storage.offsets", "[0, 0, 0]"),
    ("storage-rows-float", rb_buffer, with_array("storage.rows", lambda a: a.astype(np.float32)),
     "table.storage.rows", "float32"),
    ("storage-rows-short", rb_buffer, with_array("storage.rows", lambda a: a[:3]), "table.storage.rows", "(3, 40)"),
    # capacity and constructor arguments
    ("capacity-2**40", rb_buffer, lambda r: (edit(r, setter("init", "max_size", value=2**40)),
                                             edit(r, setter("table", "capacity", value=2**40))),
     "table.directory.slot_id", str(2**40)),
    ("capacity-2**27", per_buffer, lambda r: (edit(r, setter("init", "max_size", value=2**27)),
                                              edit(r, setter("table", "capacity", value=2**27))),
     "table.directory.slot_id", str(2**27)),
    ("capacity-2**41", rb_buffer, manifest_edit("init", "max_size", value=2**41), "init.max_size", str(2**41)),
    ("capacity-disagrees", rb_buffer, manifest_edit("table", "capacity", value=9), "table.capacity", "9"),
    ("init-unknown-key", rb_buffer, manifest_edit("init", "evil", value=1), "init", "evil"),
    ("per-config-unknown-key", per_buffer, manifest_edit("init", "config", "evil", value=1), "PERConfig", "evil"),
    ("per-config-nan", per_buffer, manifest_edit("init", "config", "priority_exponent", value=NAN),
     "priority_exponent", "nan"),
    ("per-config-key-dropped", per_buffer, lambda r: edit(r, lambda m: m["init"]["config"].pop("beta")), "init",
     None),
    # format, class, layout of the manifest
    ("format-version-true", rb_buffer, manifest_edit("format_version", value=True), "format_version", "True"),
    ("format-version-zero", rb_buffer, manifest_edit("format_version", value=0), "format_version", "0"),
    ("class-not-registered", rb_buffer, manifest_edit("class", value="os:system"), "class", "os:system"),
    ("class-not-a-string", rb_buffer, manifest_edit("class", value=["ReplayTables.ReplayBuffer", "ReplayBuffer"]),
     "class", "ReplayBuffer"),
    ("structure-not-a-string", rb_buffer, manifest_edit("structure", value=[1]), "structure", "[1]"),
    ("manifest-a-list", rb_buffer, lambda r: write_manifest(snap_dir(r), [1, 2]), "format", "[1, 2]"),
    ("nesting-deep", rb_buffer, manifest_edit("frontend", "evil", value=deep(100)), "manifest.json", "nesting"),
    ("nesting-recursion", rb_buffer, lambda r: (snap_dir(r) / "manifest.json").write_text("[" * 100_000),
     "manifest.json", None),
    ("arrays-not-a-dict", rb_buffer, manifest_edit("arrays", value=[1]), "arrays", "[1]"),
    ("array-file-escapes", rb_buffer, manifest_edit("arrays", "storage.rows", "file", value="../../rows.npy"),
     "arrays.storage.rows.file", "../../rows.npy"),
    ("array-file-absolute", rb_buffer, manifest_edit("arrays", "storage.rows", "file", value="/etc/passwd"),
     "arrays.storage.rows.file", "/etc/passwd"),
    ("array-dtype-object", rb_buffer, manifest_edit("arrays", "storage.rows", "dtype", value="|O"),
     "arrays.storage.rows.dtype", "|O"),
    ("array-shape-disagrees", rb_buffer, manifest_edit("arrays", "storage.rows", "shape", value=[8, 41]),
     "arrays.storage.rows", "(8, 40)"),
    ("array-crc-not-int", rb_buffer, manifest_edit("arrays", "storage.rows", "crc32", value="ok"),
     "arrays.storage.rows.crc32", "'ok'"),
    ("unsigned-edit", rb_buffer, lambda r: (snap_dir(r) / "manifest.json").write_text(
        (snap_dir(r) / "manifest.json").read_text().replace('"cursor": 5', '"cursor": 6')), "manifest.json",
     "SHA-256"),
    ("checksum-removed", rb_buffer, lambda r: (snap_dir(r) / "manifest.sha256").unlink(), "manifest.sha256", None),
    ("checksum-garbage", rb_buffer, lambda r: (snap_dir(r) / "manifest.sha256").write_text("nope\n"),
     "manifest.json", "SHA-256"),
]


@pytest.mark.parametrize(("label", "make", "attack", "field", "value"), MANIFEST_CASES,
                         ids=[c[0] for c in MANIFEST_CASES])
def test_hostile_manifest_is_refused(label: str, make: Callable[[], Any], attack: Callable[[Path], None], field: str,
                                     value: str | None, tmp_path: Path) -> None:
    root = saved(make, tmp_path)
    assert ReplayTables.load(root) is not None  # the untouched checkpoint loads
    attack(root)
    refuse_load(root, field, value)


# ---------------------------------------------------------------- files (ReplayTables.load)
def npy_path(root: Path, key: str = "storage.rows") -> Path:
    return snap_dir(root) / read_manifest(root)["arrays"][key]["file"]


def symlink_npy(root: Path) -> None:
    target = root.parent / "outside.npy"
    f = npy_path(root)
    target.write_bytes(f.read_bytes())  # the same bytes, but outside the snapshot folder
    f.unlink()
    f.symlink_to(target)


def fifo_npy(root: Path) -> None:
    f = npy_path(root)
    f.unlink()
    os.mkfifo(f)


def fifo_manifest(root: Path) -> None:
    f = snap_dir(root) / "manifest.json"
    f.unlink()
    os.mkfifo(f)


def fifo_latest(root: Path) -> None:
    (root / "LATEST").unlink()
    os.mkfifo(root / "LATEST")


def symlink_manifest(root: Path) -> None:
    f = snap_dir(root) / "manifest.json"
    target = root.parent / "manifest.json"
    target.write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(target)


def huge_header(root: Path) -> None:
    """A .npy whose header claims 4 TB (2**39 float64) in a file of a few hundred bytes."""
    f = npy_path(root)
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (2**39,)})
        fh.write(b"\0" * 64)
    edit(root, setter("arrays", "storage.rows", "shape", value=[2**39]))
    edit(root, setter("arrays", "storage.rows", "dtype", value="<f8"))


def truncated_data(root: Path) -> None:
    f = npy_path(root)
    f.write_bytes(f.read_bytes()[:-7])


def pickled_npy(root: Path) -> None:
    """An object array (loading it would need pickle); the manifest is made to agree."""
    f = npy_path(root)
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        fh.write(b"\x80\x04N.")
    edit(root, setter("arrays", "storage.rows", "shape", value=[1]))


def latest_symlinked_snapshot(root: Path) -> None:
    other = root.parent / "other"
    rb_buffer().save(other)
    (root / "snapshot-000009").symlink_to(snap_dir(other), target_is_directory=True)
    (root / "LATEST").write_text("snapshot-000009\n")


def latest_symlink(root: Path) -> None:
    name = (root / "LATEST").read_text()
    (root / "LATEST").unlink()
    (root.parent / "latest.txt").write_text(name)
    (root / "LATEST").symlink_to(root.parent / "latest.txt")


def latest_a_file(root: Path) -> None:
    (root / "snapshot-000007").write_text("x")
    (root / "LATEST").write_text("snapshot-000007\n")


def manifest_too_big(root: Path) -> None:
    f = snap_dir(root) / "manifest.json"
    f.write_bytes(f.read_bytes() + b" " * (ckpt.MAX_MANIFEST_BYTES + 1))


FILE_CASES: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("npy-symlink", symlink_npy, "arrays.storage.rows", "regular file"),
    ("npy-fifo", fifo_npy, "arrays.storage.rows", "regular file"),
    ("manifest-fifo", fifo_manifest, "manifest.json", "regular file"),
    ("manifest-symlink", symlink_manifest, "manifest.json", "regular file"),
    ("latest-fifo", fifo_latest, "LATEST", None),
    ("latest-symlink", latest_symlink, "LATEST", None),
    ("latest-names-a-symlinked-snapshot", latest_symlinked_snapshot, "LATEST", "snapshot-000009"),
    ("latest-names-a-file", latest_a_file, "LATEST", "snapshot-000007"),
    ("npy-header-claims-4TB", huge_header, "arrays.storage.rows", "bytes"),
    ("npy-truncated", truncated_data, "arrays.storage.rows", "bytes"),
    ("npy-pickled-object-array", pickled_npy, "arrays.storage.rows", None),
    ("manifest-over-the-size-limit", manifest_too_big, "manifest.json", "bytes"),
]


@pytest.mark.parametrize(("label", "attack", "field", "value"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_files_are_refused_without_blocking(label: str, attack: Callable[[Path], None], field: str,
                                                    value: str | None, tmp_path: Path) -> None:
    root = saved(rb_buffer, tmp_path)
    attack(root)
    refuse_load(root, field, value)


def test_version_1_checkpoint_without_checksum_still_loads_and_is_still_checked(tmp_path: Path) -> None:
    b = per_buffer()
    root = saved(lambda: b, tmp_path)
    (snap_dir(root) / "manifest.sha256").unlink()
    m = read_manifest(root)
    m["format_version"] = 1
    (snap_dir(root) / "manifest.json").write_text(json.dumps(m))
    assert_equal_state(snapshot(b), snapshot(ReplayTables.load(root)))
    m["table"]["directory"]["count"] = 10**6
    (snap_dir(root) / "manifest.json").write_text(json.dumps(m))
    refuse_load(root, "table.directory.count", "1000000")


# ---------------------------------------------------------------- planted code
MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('imported')\nclass Buf:\n    pass\nStructure = Buf\n"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, str], Path]:
    """Plant ``<name>.py`` (and a ``ReplayTables/<name>.py`` shadow package) in the checkpoint
    directory and next to it, both on ``sys.path``; importing any of them writes the marker."""
    marker = tmp_path / "MARKER"

    def plant(root: Path, name: str) -> Path:
        for where in (root, root.parent, snap_dir(root)):
            (where / f"{name}.py").write_text(MARKER_CODE.format(marker=str(marker)))
            shadow = where / "ReplayTables"
            shadow.mkdir(exist_ok=True)
            (shadow / f"{name}.py").write_text(MARKER_CODE.format(marker=str(marker)))
            monkeypatch.syspath_prepend(str(where))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return marker

    return plant


PLANTED = [
    ("multi-agent-underlying-type", multi_agent, ("init", "underlying_buffer_config", "type"), "evil_{n}:Buf",
     "init.underlying_buffer_config.type"),
    ("multi-agent-underlying-type-dotted", multi_agent, ("init", "underlying_buffer_config", "type"),
     "evil_{n}.Buf", "init.underlying_buffer_config.type"),
    ("multi-agent-underlying-type-in-package", mixin, ("init", "underlying_buffer_config", "type"),
     "ReplayTables.evil_{n}:Buf", "init.underlying_buffer_config.type"),
    ("buffer-class", rb_buffer, ("class",), "evil_{n}:Buf", "class"),
    ("buffer-class-in-package", rl_buffer, ("class",), "ReplayTables.evil_{n}:Buf", "class"),
]


@pytest.mark.parametrize(("label", "make", "path", "name", "field"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_modules_are_never_imported(label: str, make: Callable[[], Any], path: tuple[str, ...], name: str,
                                            field: str, tmp_path: Path, planted: Any) -> None:
    root = saved(make, tmp_path)
    module = f"evil_{abs(hash(label)) % 10**8}"
    marker = planted(root, module)
    edit(root, setter(*path, value=name.format(n=module.removeprefix("evil_"))))
    refuse_load(root, field, "evil_")
    assert not marker.exists(), "loading imported a module planted next to the checkpoint"
    assert module not in sys.modules and f"ReplayTables.{module}" not in sys.modules


def test_a_planted_structure_module_is_not_imported_and_a_stand_in_is_used(tmp_path: Path, planted: Any) -> None:
    root = saved(rb_buffer, tmp_path)
    marker = planted(root, "evil_structure")
    edit(root, setter("table", "schema", "structure", value="evil_structure:Structure"))
    loaded = ReplayTables.load(root)
    assert not marker.exists() and "evil_structure" not in sys.modules
    data = loaded.sample(2).data
    assert type(data).__name__ == "Structure" and type(data)._fields == ("x", "a", "r")


def test_our_own_underlying_type_loads_without_importing_anything_else(tmp_path: Path, planted: Any) -> None:
    root = saved(mixin, tmp_path)
    marker = planted(root, "replay_buffer")  # same base name as the module that defines the real class
    before = set(sys.modules)
    loaded = ReplayTables.load(root)
    assert type(loaded) is MultiAgentMixInReplayBuffer and len(loaded) == len(mixin())
    assert not marker.exists()
    assert all(m.startswith("ReplayTables") for m in set(sys.modules) - before), set(sys.modules) - before


def test_structure_lookup_runs_no_module_getattr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module already imported whose ``__getattr__`` would import (PEP 562 lazy loading) is
    searched through its own namespace only."""
    calls: list[str] = []
    lazy = types.ModuleType("lazy_structures")
    lazy.__getattr__ = lambda name: calls.append(name) or Transition  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lazy_structures", lazy)
    root = saved(rb_buffer, tmp_path)
    edit(root, setter("table", "schema", "structure", value="lazy_structures:Transition"))
    loaded = ReplayTables.load(root)
    assert calls == []
    assert loaded.structure is not Transition and type(loaded.sample(1).data).__name__ == "Transition"


def test_a_structure_with_other_fields_is_not_taken(tmp_path: Path) -> None:
    root = saved(rb_buffer, tmp_path)
    edit(root, setter("table", "schema", "structure", value="conftest:DTransition"))  # a dataclass, same names
    loaded = ReplayTables.load(root)
    assert loaded.structure.__module__ != "conftest"
    assert isinstance(loaded.sample(1).data, tuple)


def test_structure_argument_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    from typing import NamedTuple

    class Other(NamedTuple):
        y: np.ndarray

    root = saved(rb_buffer, tmp_path)
    with pytest.raises(CheckpointError) as info:
        ReplayTables.load(root, structure=Other)
    check_message(info.value, "table.schema.fields", "['x', 'a', 'r']")


# ---------------------------------------------------------------- RLlib buffers (ReplayTables.load)
P0 = ("state", "policies", 0)
RL_CASES: list[tuple[str, Callable[[], Any], Callable[[Path], None], str, str | None]] = [
    ("live-steps", rl_buffer, manifest_edit("state", "table", "index", "live_steps", value=99),
     "state.table.index.live_steps", "99"),
    ("head-behind-items", rl_buffer, manifest_edit("state", "table", "index", "head", value=1),
     "state.table.index.origin", "head (1)"),
    ("issued-negative", rl_buffer, manifest_edit("state", "table", "index", "issued", value=-1),
     "state.table.index.issued", "-1"),
    ("item-length-zero", rl_buffer, with_array("state.table.index.length", lambda a: np.zeros_like(a)),
     "state.table.index.length", "length 0"),
    ("item-start-out-of-range", rl_buffer, with_array("state.table.index.start", leaf(0, 10**6)),
     "state.table.index.length", "start 1000000"),
    ("item-count", rl_buffer, manifest_edit("state", "table", "index", "directory", "count", value=7),
     "state.table.index.directory.count", "7"),
    ("unit-lengths-lie", rl_buffer, manifest_edit("state", "table", "index", "unit_lengths", value=True),
     "state.table.index.unit_lengths", "True"),
    ("dropped-episodes", rl_buffer, manifest_edit("state", "dropped_episodes", value=-1), "state.dropped_episodes",
     "-1"),
    ("rl-counter", rl_buffer, manifest_edit("state", "table", "counters", "added_steps", value=1.5),
     "state.table.counters.added_steps", "1.5"),
    ("rl-capacity-2**40", rl_buffer, manifest_edit("init", "capacity", value=2**40), "state.table.index.start",
     str(2**40)),
    ("rl-init-unknown", rl_buffer, manifest_edit("init", "evil", value=1), "init", "evil"),
    ("rl-storage-unit", rl_buffer, manifest_edit("init", "storage_unit", value="pickles"), "storage_unit",
     "pickles"),
    ("rl-hits-negative", rl_buffer, with_array("state.table.index.hits", leaf(0, -4)), "state.table.index.hits",
     "-4"),
    ("rl-per-leaf", rl_per, with_array("state.table.sampler.tree.leaves", leaf(0, np.inf)),
     "state.table.sampler.tree.leaves", "inf"),
    ("rl-per-max-q", rl_per, manifest_edit("state", "table", "sampler", "max_q", value=NAN),
     "state.table.sampler.max_q", "nan"),
    ("reservoir-region", rl_reservoir, manifest_edit("state", "table", "index", "region", value=3),
     "state.table.index.region", "3"),
    ("reservoir-writer", rl_reservoir, manifest_edit("state", "table", "index", "writer", "seen", value=-2),
     "state.table.index.writer.seen", "-2"),
    ("reservoir-start", rl_reservoir, with_array("state.table.index.start", leaf(0, 5)), "state.table.index.origin",
     "start 5"),
    ("policies-not-a-list", multi_agent, manifest_edit("state", "policies", value={"p1": 1}), "state.policies",
     "p1"),
    ("policy-id-bool", multi_agent, manifest_edit(*P0, "policy_id", value=True), "state.policies[0].policy_id",
     "True"),
    ("policy-id-duplicate", multi_agent, manifest_edit("state", "policies", 1, "policy_id", value="p1"),
     "state.policies[1].policy_id", "'p1'"),
    ("policy-capacity", multi_agent, manifest_edit(*P0, "init", "capacity", value=2**40),
     "state.policies[0].init.capacity", str(2**40)),
    ("policy-init-unknown", multi_agent, manifest_edit(*P0, "init", "evil", value=1), "state.policies[0].init",
     "evil"),
    ("policy-state-count", multi_agent, manifest_edit(*P0, "state", "table", "index", "directory", "count",
                                                      value=-1),
     "state.policies[0].state.table.index.directory.count", "-1"),
    ("underlying-type-not-ours", multi_agent, manifest_edit("init", "underlying_buffer_config", "type",
                                                            value="collections:OrderedDict"),
     "init.underlying_buffer_config.type", "OrderedDict"),
    ("underlying-type-wrong-kind", multi_agent, manifest_edit("init", "underlying_buffer_config", "type",
                                                              value="ReplayTables.trajectory:TrajectoryReplay"),
     "underlying_buffer_config.type", "TrajectoryReplay"),
    ("mixin-new-index", mixin, manifest_edit("state", "new", 0, 0, value=5), "state.new[0][0]", "5"),
    ("mixin-new-not-pairs", mixin, manifest_edit("state", "new", value=[1]), "state.new[0]", "1"),
    ("mixin-new-dropped", mixin, manifest_edit("state", "new_dropped", value="x"), "state.new_dropped", "'x'"),
    ("mixin-rng", mixin, manifest_edit("state", "rng", "state", value=7), "state.rng.state", "7"),
    ("rl-seed-negative", rl_buffer, manifest_edit("init", "seed", value=-7), "seed", "-7"),
    ("policy-seed-negative", multi_agent, manifest_edit(*P0, "init", "seed", value=-7), "state.policies[0].init.seed",
     "-7"),
    ("mixin-underlying-config-not-a-dict", mixin, manifest_edit("init", "underlying_buffer_config", value=[1, 2]),
     "underlying_buffer_config", "[1, 2]"),
    ("mixin-replay-ratio", mixin, manifest_edit("init", "replay_ratio", value=7), "replay_ratio", "7"),
]


@pytest.mark.parametrize(("label", "make", "attack", "field", "value"), RL_CASES, ids=[c[0] for c in RL_CASES])
def test_hostile_rllib_checkpoint_is_refused(label: str, make: Callable[[], Any], attack: Callable[[Path], None],
                                             field: str, value: str | None, tmp_path: Path) -> None:
    root = saved(make, tmp_path)
    assert ReplayTables.load(root) is not None
    attack(root)
    refuse_load(root, field, value)


# ---------------------------------------------------------------- step-stream buffers
TRAJ_CASES: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("ring-next-pos-negative", with_array("ring_next_pos", leaf(0, -5)), "ring_next_pos", "-5"),
    ("ring-open-without-records", with_array("ring_next_pos", lambda a: np.zeros_like(a)), "ring_episode_first",
     "0 records written"),
    ("ring-t-negative", with_array("ring_t_in_episode", leaf(3, -1)), "ring_t_in_episode", "-1"),
    ("ring-t-wrong-shape", with_array("ring_t_in_episode", lambda a: a[:7]), "ring_t_in_episode", "(7,)"),
    ("ring-starts-duplicate", with_array("ring_starts", lambda a: np.concatenate([a, a[:1]])), "ring_starts.members",
     None),
    ("ring-starts-out-of-range", with_array("ring_starts", leaf(0, 40)), "ring_starts.members", "40"),
    ("ring-open-not-bool", with_array("ring_open", lambda a: a.astype(np.uint8) * 3), "ring_open", "3"),
    ("frames-wrong-shape", with_array("frames_frames", lambda a: a[:, :1]), "frames_frames", "(40, 1)"),
    ("traj-obs-shape-floats", manifest_edit("init", "obs_shape", value=[1e6, 1e6]), "init.obs_shape[0]", "1000000.0"),
    ("traj-obs-dtype-huge", manifest_edit("init", "obs_dtype", value="V1000000000"), "init.capacity", "40"),
    ("traj-obs-dtype-object", manifest_edit("init", "obs_dtype", value="O"), "init.obs_dtype", "'O'"),
    ("traj-extras-not-pairs", manifest_edit("init", "extras", value={"logp": "f4"}), "init.extras.logp", "'f4'"),
    ("traj-sequence-unknown-key", manifest_edit("init", "sequence", "evil", value=1), "init.sequence", "evil"),
    ("traj-step-fields", manifest_edit("table", "schema", "fields", 1, "dtype", value="<f8"), "table.schema.fields",
     None),
    ("traj-directory-live-mismatch", with_array("directory.slot_id", leaf(39, 39)), "table.directory.count", None),
]


@pytest.mark.parametrize(("label", "attack", "field", "value"), TRAJ_CASES, ids=[c[0] for c in TRAJ_CASES])
def test_hostile_trajectory_checkpoint_is_refused(label: str, attack: Callable[[Path], None], field: str,
                                                  value: str | None, tmp_path: Path) -> None:
    root = saved(trajectory, tmp_path)
    assert len(ReplayTables.load(root)) == len(trajectory())
    attack(root)
    refuse_load(root, field, value)


def zstd_attack(change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable[[Path], None]:
    def run(root: Path) -> None:
        arrays = {k: array_of(root, f"frames_{k}") for k in ("zstd_lengths", "zstd_data")}
        for k, v in change(arrays).items():
            replace_array(root, f"frames_{k}", v)
    return run


def swap_blob(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Slot 0's blob replaced by garbage of the same length (CRC updated)."""
    data = arrays["zstd_data"].copy()
    data[: int(arrays["zstd_lengths"][0])] = 7
    return {"zstd_data": data}


ZSTD_CASES: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("zstd-lengths-negative", zstd_attack(lambda a: {"zstd_lengths": np.r_[-1, a["zstd_lengths"][1:]]}),
     "frames_zstd_lengths", "-1"),
    ("zstd-lengths-do-not-add-up", zstd_attack(lambda a: {"zstd_lengths": a["zstd_lengths"] + 1}),
     "frames_zstd_lengths", None),
    ("zstd-blob-not-a-frame", zstd_attack(swap_blob), "frames_zstd_data", "slot 0"),
]


@pytest.mark.parametrize(("label", "attack", "field", "value"), ZSTD_CASES, ids=[c[0] for c in ZSTD_CASES])
def test_hostile_compressed_frames_are_refused(label: str, attack: Callable[[Path], None], field: str,
                                               value: str | None, tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    root = saved(lambda: trajectory("zstd"), tmp_path)
    assert len(ReplayTables.load(root)) > 0
    attack(root)
    refuse_load(root, field, value)


def flushed(tmp_path: Path) -> Path:
    path = tmp_path / "mm"
    trajectory("memmap", path).flush()
    return path


def refuse_open(path: Path, field: str, value: str | None, cls: type[ReplayTablesError] = CheckpointError,
                **kwargs: Any) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["opened"] = TrajectoryReplay.open(path, **kwargs)
        except BaseException as exc:  # reported below, in the test thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"open did not return within {TIMEOUT} s"
    exc = result.get("error")
    assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"
    check_message(exc, field, value)


def fifo_file(name: str) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        (path / name).unlink()
        os.mkfifo(path / name)
    return run


def symlinked_file(name: str) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        target = path.parent / f"elsewhere-{name}"
        target.write_bytes((path / name).read_bytes())
        (path / name).unlink()
        (path / name).symlink_to(target)
    return run


def header_claims_more(path: Path) -> None:
    f = path / "steps.npy"
    arr = np.load(f, mmap_mode="r")
    with open(f, "r+b") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (arr.shape[0] * 1000, arr.shape[1])})


def state_symlink(path: Path) -> None:
    (path / "state").rename(path.parent / "elsewhere-state")
    (path / "state").symlink_to(path.parent / "elsewhere-state", target_is_directory=True)


def state_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    return lambda path: edit(path / "state", change)


OPEN_CASES: list[tuple[str, Callable[[Path], None], str, str | None]] = [
    ("frames-fifo", fifo_file("frames.npy"), "frames.npy", "regular file"),
    ("frames-symlink", symlinked_file("frames.npy"), "frames.npy", "regular file"),
    ("steps-fifo", fifo_file("steps.npy"), "steps.npy", "regular file"),
    ("steps-header-claims-more", header_claims_more, "steps.npy", "bytes"),
    ("state-folder-symlink", state_symlink, "path", "state"),
    ("state-not-memmap", state_manifest(setter("init", "storage", value="memory")), "init.storage", "'memory'"),
    ("state-ring", lambda p: replace_array(p / "state", "ring_next_pos", np.array([-1, 3])), "ring_next_pos", "-1"),
    ("state-counters", state_manifest(setter("table", "counters", "evicted", value=[1])), "table.counters.evicted",
     "[1]"),
    ("state-obs-shape", state_manifest(setter("init", "obs_shape", value=[3])), "frames.npy", "(40, 2)"),
]


@pytest.mark.parametrize(("label", "attack", "field", "value"), OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_hostile_memmap_directory_is_refused_by_open(label: str, attack: Callable[[Path], None], field: str,
                                                     value: str | None, tmp_path: Path) -> None:
    path = flushed(tmp_path)
    assert len(TrajectoryReplay.open(path)) > 0
    attack(path)
    refuse_open(path, field, value)


def test_open_with_a_generator_of_another_kind_is_a_config_error(tmp_path: Path) -> None:
    path = flushed(tmp_path)
    refuse_open(path, "rng", "MT19937", ConfigError, rng=np.random.Generator(np.random.MT19937(0)))


# ---------------------------------------------------------------- load_state_dict into an existing buffer
def another_per_state(change: Callable[[dict[str, Any]], None]) -> Callable[[], dict[str, Any]]:
    """A *different, valid* buffer's state with one part broken: a half-applied load would show."""
    def make() -> dict[str, Any]:
        other = per_buffer()
        other.add_batch(items(range(20, 26)), priorities=np.arange(1.0, 7.0))
        other.sample(4)
        state = other.state_dict()
        change(state)
        return state
    return make


def set_in(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    return setter(*path, value=value)


def set_array(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, Any]], None]:
    def run(state: dict[str, Any]) -> None:
        state["arrays"][key] = change(state["arrays"][key].copy())
    return run


def mt19937_state() -> dict[str, Any]:
    b = PrioritizedReplay(8, Transition, np.random.Generator(np.random.MT19937(0)), PERConfig(uniform_probability=0.1))
    b.add(item(1))
    return b.state_dict()


STATE_CASES: list[tuple[str, Callable[[], Any], type[ReplayTablesError], str, str | None]] = [
    ("a-list", lambda: [1, 2], CheckpointError, "state", "[1, 2]"),
    ("a-string", lambda: "x", CheckpointError, "state", "'x'"),
    ("none", lambda: None, CheckpointError, "state", "None"),
    ("missing-table", another_per_state(lambda s: s.pop("table")), CheckpointError, "state.table", "<missing>"),
    ("arrays-not-a-dict", another_per_state(set_in("arrays", value=[1])), CheckpointError, "arrays", "[1]"),
    ("counter-string", another_per_state(set_in("table", "counters", "added", value="many")), CheckpointError,
     "table.counters.added", "'many'"),
    ("leaves-wrong-length", another_per_state(set_array("sampler.tree.leaves", lambda a: a[:3])), CheckpointError,
     "table.sampler.tree.leaves", "(3,)"),
    ("count-inconsistent", another_per_state(set_in("table", "directory", "count", value=2)), CheckpointError,
     "table.directory.count", "2"),
    ("max-q-nan", another_per_state(set_in("table", "sampler", "max_q", value=NAN)), CheckpointError,
     "table.sampler.max_q", "nan"),
    ("slot-ids-equal", another_per_state(set_array("directory.slot_id", all_equal)), CheckpointError,
     "table.directory.slot_id", None),
    ("rng-garbage", another_per_state(set_in("table", "rng", "state", "state", value={"state": -1, "inc": 1})),
     CheckpointError, "table.rng.state", None),
    ("rng-other-kind", mt19937_state, ConfigError, "table.rng.bit_generator", "MT19937"),
    ("capacity", another_per_state(set_in("table", "capacity", value=9)), ConfigError, "table.capacity", "9"),
    ("sampler-config", another_per_state(set_in("table", "sampler", "config", "max_decay", value=0.5)), ConfigError,
     "table.sampler.config", "0.5"),
    ("schema-kind-changed", another_per_state(set_in("table", "schema", "kind", value="dataclass")), ConfigError,
     "table.schema.kind", "dataclass"),
    ("field-names-changed", another_per_state(set_in("table", "schema", "fields", 0, "path", value=["y"])),
     ConfigError, "table.schema.fields", "'y'"),
    ("other-buffer-class", lambda: rb_buffer().state_dict(), CheckpointError, "class", "ReplayBuffer"),
    ("frontend-last-part-broken", another_per_state(set_in("frontend", "sample_calls", value="x")), CheckpointError,
     "frontend.sample_calls", "'x'"),
    ("storage-rows-last-array", another_per_state(set_array("storage.rows", lambda a: a[:, :8])), CheckpointError,
     "table.schema.fields", None),
]


@pytest.mark.parametrize(("label", "make_state", "cls", "field", "value"), STATE_CASES,
                         ids=[c[0] for c in STATE_CASES])
def test_hostile_state_dict_is_refused_and_changes_nothing(label: str, make_state: Callable[[], Any],
                                                           cls: type[ReplayTablesError], field: str,
                                                           value: str | None) -> None:
    b = per_buffer()
    before = snapshot(b)
    state = make_state()
    with pytest.raises(cls) as info:
        b.load_state_dict(state)
    check_message(info.value, field, value)
    assert_unchanged(before, b)
    b.add(item(9))  # and it still works
    assert len(b) == 5


def test_trajectory_load_state_dict_with_a_broken_ring_changes_nothing() -> None:
    b = trajectory()
    other = trajectory()
    other.add_steps(np.array([1, 1]), np.ones(2), np.zeros((2, 2), np.uint8), np.ones(2, bool), np.zeros(2, bool))
    state = other.state_dict()  # a valid table (different from b's) ...
    state["arrays"]["ring_t_in_episode"] = -state["arrays"]["ring_t_in_episode"] - 1  # ... and a broken ring
    before = snapshot(b)
    with pytest.raises(CheckpointError) as info:
        b.load_state_dict(state)
    check_message(info.value, "ring_t_in_episode", "-1")
    assert_unchanged(before, b)
    state = other.state_dict()
    state["arrays"]["frames_frames"] = state["arrays"]["frames_frames"][:, :1]
    with pytest.raises(CheckpointError) as info:
        b.load_state_dict(state)
    check_message(info.value, "frames_frames", "(40, 1)")
    assert_unchanged(before, b)


# ---------------------------------------------------------------- set_state (RLlib buffers)
def broken_state(make: Callable[[], Any], change: Callable[[dict[str, Any]], None]) -> Callable[[], Any]:
    def run() -> Any:
        state = make().get_state()
        change(state)
        return state
    return run


def bigger_rl(cls: Callable[..., Any]) -> Callable[[], Any]:
    """The same arguments, more content: a state whose restore would visibly change the target."""
    def make() -> Any:
        b = cls()
        b.add({"p1": steps(40, 5), "p3": steps(50, 2)})
        return b
    return make


SET_STATE_CASES: list[tuple[str, Callable[[], Any], Callable[[], Any], type[ReplayTablesError], str, str | None]] = [
    ("rl-a-string", rl_buffer, lambda: "x", CheckpointError, "state", "'x'"),
    ("rl-a-list", rl_buffer, lambda: [1, 2], CheckpointError, "state", "[1, 2]"),
    ("rl-state-a-list", rl_buffer, broken_state(rl_buffer, set_in("state", value=[1])), CheckpointError, "state",
     "[1]"),
    ("rl-counter", rl_buffer, broken_state(rl_buffer, set_in("state", "table", "counters", "added", value="many")),
     CheckpointError, "state.table.counters.added", "'many'"),
    ("rl-dropped-last", rl_buffer, broken_state(rl_buffer, set_in("state", "dropped_episodes", value=-2)),
     CheckpointError, "state.dropped_episodes", "-2"),
    ("rl-rng", rl_buffer, broken_state(rl_buffer, set_in("state", "table", "rng", "bit_generator", value="MT19937")),
     ConfigError, "state.table.rng.bit_generator", "MT19937"),
    ("rl-per-leaves", rl_per, broken_state(rl_per, lambda s: s["state"]["table"]["sampler"]["tree"].update(
        leaves=np.full(20, -1.0))), CheckpointError, "state.table.sampler.tree.leaves", "-1.0"),
    ("rl-another-class", rl_buffer, lambda: FifoReplayBuffer(20, "fragments", seed=0).get_state(), CheckpointError,
     "class", "FifoReplayBuffer"),
    ("ma-second-policy-broken", multi_agent, broken_state(bigger_rl(multi_agent), set_in(
        "state", "policies", 2, "state", "table", "index", "live_steps", value=-1)), CheckpointError,
     "state.policies[2].state.table.index.live_steps", "-1"),
    ("ma-policy-other-capacity", multi_agent, broken_state(bigger_rl(multi_agent), set_in(
        "state", "policies", 1, "init", "capacity", value=21)), CheckpointError, "state.policies[1].init.capacity",
     "21"),
    ("mixin-new-last-part", mixin, broken_state(bigger_rl(mixin), set_in("state", "new", 0, 0, value=9)),
     CheckpointError, "state.new[0][0]", "9"),
    ("mixin-rng-last-part", mixin, broken_state(bigger_rl(mixin), set_in("state", "rng", "state", "state", value={})),
     CheckpointError, "state.rng.state", None),
    ("ma-prioritized-policies", lambda: MultiAgentPrioritizedReplayBuffer(capacity=20, seed=1),
     broken_state(lambda: MultiAgentPrioritizedReplayBuffer(capacity=20, seed=1), set_in(
         "state", "policies", value=[{"policy_id": "p", "init": {}, "state": {}}] * 2)), CheckpointError,
     "state.policies[0].init.capacity", None),
]


@pytest.mark.parametrize(("label", "make", "make_state", "cls", "field", "value"), SET_STATE_CASES,
                         ids=[c[0] for c in SET_STATE_CASES])
def test_hostile_set_state_is_refused_and_changes_nothing(label: str, make: Callable[[], Any],
                                                          make_state: Callable[[], Any], cls: type[ReplayTablesError],
                                                          field: str, value: str | None) -> None:
    b = make()
    before = rl_snapshot(b)
    with pytest.raises(cls) as info:
        b.set_state(make_state())
    check_message(info.value, field, value)
    assert_equal_state(before, rl_snapshot(b))


def test_at_least_fifty_distinct_hostile_inputs() -> None:
    total = (len(MANIFEST_CASES) + len(FILE_CASES) + len(PLANTED) + len(RL_CASES) + len(TRAJ_CASES)
             + len(ZSTD_CASES) + len(OPEN_CASES) + len(STATE_CASES) + len(SET_STATE_CASES))
    assert total >= 50, total


def test_states_still_round_trip_after_the_checks(tmp_path: Path) -> None:
    """The checks accept what this version writes, for every buffer kind (a refusal of a real
    state would be a bug too)."""
    import pickle

    makers: list[Callable[[], Any]] = [per_buffer, rb_buffer, rl_buffer, rl_per, rl_reservoir, multi_agent, mixin,
                                       trajectory]
    for k, make in enumerate(makers):
        a = make()
        a.save(tmp_path / f"c{k}")
        b = ReplayTables.load(tmp_path / f"c{k}")
        c = make()
        if hasattr(a, "state_dict"):
            c.load_state_dict(a.state_dict())
            for other in (b, c, pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
                assert_equal_state(snapshot(a), snapshot(other))
        else:
            c.set_state(a.get_state())
            for other in (b, c, pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
                assert_equal_state(rl_snapshot(a), rl_snapshot(other))


def test_a_fresh_process_loads_every_kind_of_our_buffers_importing_only_this_package(tmp_path: Path) -> None:
    """The registry is filled from this package's own modules: nothing else is imported by name."""
    import subprocess

    for k, make in enumerate([mixin, rl_reservoir, trajectory, per_buffer]):
        make().save(tmp_path / f"c{k}")
    code = f"""
import sys
before = set(sys.modules)
import ReplayTables
for k in range(4):
    b = ReplayTables.load({str(tmp_path)!r} + f"/c{{k}}")
    print(type(b).__name__, len(b))
new = sorted(m for m in set(sys.modules) - before
             if not m.startswith(("ReplayTables", "numpy", "numba", "llvmlite", "conftest")) and "." not in m)
print("imported:", new)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == [f"MultiAgentMixInReplayBuffer {len(mixin())}", f"ReservoirReplayBuffer {len(rl_reservoir())}",
                         f"TrajectoryReplay {len(trajectory())}", f"PrioritizedReplay {len(per_buffer())}"]
    # the rest is the standard library (and what numpy pulls in); never a module named in a manifest
    assert "conftest" not in lines[4] and "evil" not in lines[4], lines[4]


def test_a_buffer_with_another_bit_generator_loads_with_that_generator(tmp_path: Path) -> None:
    """The generator kind is taken from numpy's own list by the saved name (nothing imported)."""
    a = PrioritizedReplay(8, Transition, np.random.Generator(np.random.Philox(3)), PERConfig(uniform_probability=0.1))
    a.add_batch(items(range(6)))
    a.save(tmp_path / "c")
    b = ReplayTables.load(tmp_path / "c")
    assert type(b._table.rng.bit_generator) is np.random.Philox
    np.testing.assert_array_equal(a.sample(5).ids, b.sample(5).ids)


def test_a_class_whose_annotations_cannot_be_resolved_is_not_taken(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("broken_hints")
    exec("from typing import NamedTuple\nclass T(NamedTuple):\n    x: 'Missing'\n    a: int\n    r: float\n",
         module.__dict__)
    monkeypatch.setitem(sys.modules, "broken_hints", module)
    root = saved(rb_buffer, tmp_path)
    edit(root, setter("table", "schema", "structure", value="broken_hints:T"))
    loaded = ReplayTables.load(root)  # a stand-in, not a NameError
    assert loaded.structure is not module.T and loaded.structure._fields == ("x", "a", "r")
