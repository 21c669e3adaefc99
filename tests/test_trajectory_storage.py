"""Storage backends of the step-stream buffer: memory-mapped files and Zstandard compression."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ReplayTables
from ReplayTables.errors import CheckpointError, ConfigError
from ReplayTables.PER import PERConfig
from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay


def fill(buf: TrajectoryReplay, steps: int, seed: int) -> None:
    """Random 8x8 uint8 frames on every stream; episodes end with probability 0.05 per step."""
    rng = np.random.default_rng(seed)
    S = buf.num_streams
    shape = buf.obs_shape
    buf.begin_episodes(rng.integers(0, 256, (S, *shape), dtype=np.uint8))
    for _ in range(steps):
        done = rng.random(S) < 0.05
        trunc = done & (rng.random(S) < 0.5)
        buf.add_steps(rng.integers(0, 6, S), rng.normal(size=S), rng.integers(0, 256, (S, *shape), dtype=np.uint8),
                      done & ~trunc, trunc)
        if done.any():
            buf.begin_episodes(rng.integers(0, 256, (int(done.sum()), *shape), dtype=np.uint8), streams=done)


def test_memmap_buffer_reopens_in_a_new_process(tmp_path):
    path = tmp_path / "buf"
    buf = TrajectoryReplay(600, (8, 8), np.uint8, num_streams=3, frame_stack=4, n_step=3,
                           sequence=SequenceConfig(5, burn_in=2), per=PERConfig(), storage="memmap", path=path,
                           rng=np.random.default_rng(0))
    fill(buf, 400, seed=1)  # wraps every ring
    buf.update_priorities(buf.ids(), np.linspace(0.1, 2.0, len(buf)))
    buf.flush()
    ids = buf.ids()
    expected = buf.get(ids)
    np.save(tmp_path / "ids.npy", ids)
    code = f"""
import numpy as np
from ReplayTables.trajectory import TrajectoryReplay
b = TrajectoryReplay.open({str(path)!r})
ids = np.load({str(tmp_path / 'ids.npy')!r})
got = b.get(ids)
np.save({str(tmp_path / 'obs.npy')!r}, got.obs)
np.save({str(tmp_path / 'next.npy')!r}, got.next_obs)
np.save({str(tmp_path / 'ret.npy')!r}, got.returns)
np.save({str(tmp_path / 'prio.npy')!r}, got.probabilities)
print(len(b), b.num_sequences(), b.stats()['storage'])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(buf)), str(buf.num_sequences()), "memmap"]
    np.testing.assert_array_equal(np.load(tmp_path / "obs.npy"), expected.obs)
    np.testing.assert_array_equal(np.load(tmp_path / "next.npy"), expected.next_obs)
    np.testing.assert_array_equal(np.load(tmp_path / "ret.npy"), expected.returns)
    np.testing.assert_allclose(np.load(tmp_path / "prio.npy"), expected.probabilities)


def test_memmap_reopen_continues_identically(tmp_path):
    a = TrajectoryReplay(200, (8, 8), np.uint8, num_streams=2, storage="memmap", path=tmp_path / "a",
                         rng=np.random.default_rng(5))
    fill(a, 150, seed=2)
    a.flush()
    b = TrajectoryReplay.open(tmp_path / "a")
    np.testing.assert_array_equal(a.sample(8).obs, b.sample(8).obs)  # same rng state after open


def test_memmap_refuses_unflushed_changes_and_existing_directory(tmp_path):
    path = tmp_path / "buf"
    buf = TrajectoryReplay(100, (8, 8), np.uint8, storage="memmap", path=path)
    fill(buf, 20, seed=3)
    buf.flush()
    fill_more = np.zeros((1, 8, 8), np.uint8)
    buf.add_steps([0], [0.0], fill_more, [False], [False])
    with pytest.raises(CheckpointError):
        TrajectoryReplay.open(path)
    buf.close()
    assert len(TrajectoryReplay.open(path)) == len(buf)
    with pytest.raises(ConfigError):
        TrajectoryReplay(100, (8, 8), np.uint8, storage="memmap", path=path)


def test_memmap_files_are_plain_npy(tmp_path):
    buf = TrajectoryReplay(100, (8, 8), np.uint8, storage="memmap", path=tmp_path / "b")
    fill(buf, 30, seed=4)
    buf.flush()
    frames = np.load(tmp_path / "b" / "frames.npy", mmap_mode="r")
    assert frames.shape == (100, 8, 8) and frames.dtype == np.uint8
    got = buf.get(buf.ids()[:3])
    assert any((frames == got.obs[0]).all(axis=(1, 2)))


def test_memmap_checkpoint_loads_into_memory(tmp_path):
    buf = TrajectoryReplay(100, (8, 8), np.uint8, storage="memmap", path=tmp_path / "m",
                           rng=np.random.default_rng(1))
    fill(buf, 60, seed=5)
    buf.save(tmp_path / "ck")
    back = ReplayTables.load(tmp_path / "ck")
    assert back.storage_kind == "memory"
    np.testing.assert_array_equal(back.sample(10).obs, buf.sample(10).obs)


# ---------------------------------------------------------------- compression (CI installs the extra)
def test_zstd_round_trip_and_save_load(tmp_path):
    pytest.importorskip("zstandard")
    plain = TrajectoryReplay(300, (8, 8), np.uint8, num_streams=2, frame_stack=3, n_step=2,
                             rng=np.random.default_rng(7))
    packed = TrajectoryReplay(300, (8, 8), np.uint8, num_streams=2, frame_stack=3, n_step=2, storage="zstd",
                              compression_level=5, rng=np.random.default_rng(7))
    fill(plain, 200, seed=6)
    fill(packed, 200, seed=6)
    a, b = plain.sample(64), packed.sample(64)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.next_obs, b.next_obs)
    packed.save(tmp_path / "z")
    back = ReplayTables.load(tmp_path / "z")
    assert back.storage_kind == "zstd"
    np.testing.assert_array_equal(back.get(packed.ids()).obs, plain.get(plain.ids()).obs)


def test_zstd_compresses_redundant_frames():
    pytest.importorskip("zstandard")
    buf = TrajectoryReplay(500, (84, 84), np.uint8, storage="zstd")
    frame = np.zeros((84, 84), np.uint8)
    frame[20:40, 10:70] = 200
    buf.begin_episode(frame)
    for _ in range(400):
        buf.add_step(0, 0.0, frame, False, False)
    assert buf.stats()["frame_bytes"] < 500 * 84 * 84 / 20
    np.testing.assert_array_equal(buf.sample(4).obs, np.broadcast_to(frame, (4, 84, 84)))


def test_zstd_level_checked():
    pytest.importorskip("zstandard")
    with pytest.raises(ConfigError):
        TrajectoryReplay(100, (8, 8), storage="zstd", compression_level=99)


def test_checkpoint_loads_in_a_fresh_process(tmp_path):
    buf = TrajectoryReplay(200, (8, 8), np.uint8, num_streams=2, frame_stack=2, n_step=2,
                           rng=np.random.default_rng(8))
    fill(buf, 120, seed=9)
    buf.save(tmp_path / "ck")
    expected = buf.sample(6)
    code = f"""
import numpy as np, ReplayTables
b = ReplayTables.load({str(tmp_path / 'ck')!r})
s = b.sample(6)
print(type(b).__name__, s.ids.tolist(), int(s.obs.sum()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"TrajectoryReplay {expected.ids.tolist()} {int(expected.obs.sum())}"
