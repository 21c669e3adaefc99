"""Hostile checkpoint directories on the *save* path.

A save reuses a few names of its own inside the checkpoint directory
(``.snapshot-N.partial``, ``snapshot-N``, ``.LATEST.partial``). Whoever can write
that directory can plant a symlink under one of them. Reproduced: a symlink named
``.LATEST.partial`` made the next save overwrite the file it pointed to, outside
the checkpoint. A save must write and delete only inside its directory, and still
succeed (the planted names are removed as names).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ReplayTables
from conftest import Transition, assert_same_buffer, items
from ReplayTables.PER import PrioritizedReplay
from ReplayTables.rllib import ReplayBuffer as RLReplayBuffer


def saved_buffer(root: Path) -> PrioritizedReplay:
    b = PrioritizedReplay(8, Transition, np.random.default_rng(0))
    b.add_batch(items(range(3)))
    b.save(root)  # snapshot-000001: the next save writes snapshot-000002
    b.add_batch(items(range(3, 5)))
    return b


def outside_file(tmp: Path) -> Path:
    victim = tmp / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me\n")
    return victim


def plant_latest_partial(root: Path, victim: Path) -> None:
    os.symlink(victim, root / ".LATEST.partial")


def plant_partial_folder(root: Path, victim: Path) -> None:
    os.symlink(victim.parent, root / ".snapshot-000002.partial")


def plant_final_folder(root: Path, victim: Path) -> None:
    os.symlink(victim.parent, root / "snapshot-000002")


def plant_partial_file(root: Path, victim: Path) -> None:
    os.symlink(victim, root / ".snapshot-000002.partial")


def plant_dangling(root: Path, victim: Path) -> None:
    os.symlink(victim.parent / "not-yet", root / ".LATEST.partial")


PLANTS: list[tuple[str, Callable[[Path, Path], None]]] = [
    ("latest-partial-symlink", plant_latest_partial),
    ("partial-folder-symlink", plant_partial_folder),
    ("final-folder-symlink", plant_final_folder),
    ("partial-name-symlink-to-a-file", plant_partial_file),
    ("latest-partial-dangling", plant_dangling),
]


@pytest.mark.parametrize(("label", "plant"), PLANTS, ids=[p[0] for p in PLANTS])
def test_a_save_never_writes_or_deletes_outside_its_directory(label: str, plant: Callable[[Path, Path], None],
                                                              tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    buffer = saved_buffer(root)
    victim = outside_file(tmp_path)
    plant(root, victim)
    buffer.save(root)
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]
    assert_same_buffer(buffer, ReplayTables.load(root))


def test_rllib_save_with_a_planted_latest_partial(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    b = RLReplayBuffer(20, seed=0)
    b.add({"obs": np.arange(4.0)})
    b.save(root)
    victim = outside_file(tmp_path)
    plant_latest_partial(root, victim)
    b.add({"obs": np.arange(4.0, 6.0)})
    b.save(root)
    assert victim.read_text() == "keep me\n"
    loaded = ReplayTables.load(root)
    assert len(loaded) == len(b) == 6
