"""A large, mostly empty buffer costs little resident memory.

Reproduced: ``ReplayBuffer(2**28)`` committed 2 GB up front, because every slot's
"never written" id marker (-1) was written at construction. The directory now
writes those markers ahead of the slots being filled (doubling), so the cost
grows with the items stored, not with ``max_size``. The second half checks that
the lazy markers change nothing observable: the same calls on a buffer whose
markers are all written up front give the same ids, contents, counters and state.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import ReplayTables
import ReplayTables.engine.ids as ids_module
from conftest import assert_equal_state, snapshot
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

RSS_PROBE = """
import sys, numpy as np
from typing import NamedTuple
from ReplayTables.ReplayBuffer import ReplayBuffer

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

class D(NamedTuple):
    a: float
    r: float

before = rss_mib()
if sys.argv[1] == "buffer":
    b = ReplayBuffer(2**25, D, 0)
    for k in range(100):
        b.add(D(float(k), 0.5))
    b.add_batch(D(np.zeros(1000), np.ones(1000)))
    b.sample(32)
else:  # the control: what writing a -1 into every slot costs
    keep = np.full(2**25, -1, dtype=np.int64)
print(rss_mib() - before)
"""


def resident_growth_mib(what: str) -> float:
    src = str(Path(ReplayTables.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, what], capture_output=True, text=True, check=True,
                         env=env, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm (Linux)")
def test_a_large_empty_buffer_commits_little_memory() -> None:
    """2**25 slots: an eager marker array is 256 MiB; the buffer with 1100 items must stay
    under 32 MiB of growth (numba and imports are loaded before the first reading)."""
    control = resident_growth_mib("control")
    assert control > 200, control  # the negative control: the measurement sees an eager fill
    assert resident_growth_mib("buffer") < 32


class D(NamedTuple):
    a: float
    r: float


def run_script(buffer: Any, rng: np.random.Generator) -> list[Any]:
    """Single adds, batches crossing the filled edge, deletes, wrap-around, samples, gets."""
    out: list[Any] = []
    k = 0
    for step in range(80):
        op = 0 if step < 12 else rng.integers(0, 5)  # single adds first: they cross the filled edge alone
        if op == 0:
            out.append(buffer.add(D(float(k), k / 2)))
            k += 1
        elif op == 1:
            m = int(rng.integers(1, 9))
            out.append(buffer.add_batch(D(np.arange(k, k + m, dtype=np.float64), np.arange(m) / 2.0)))
            k += m
        elif op == 2 and len(buffer) > 1:
            live = buffer.sample(2).ids
            buffer.delete(live[:1])
            out.append(live[:1])
        elif op == 3 and len(buffer):
            s = buffer.sample(3)
            out.append((s.ids, s.a))
        else:
            probe = np.arange(0, 40, dtype=np.int64)  # ids of every slot, written or not
            try:
                out.append(buffer.get(probe).a)
            except Exception as exc:  # a stale or unknown id: the message names which
                out.append(str(exc))
        out.append(snapshot(buffer))
    return out


@pytest.mark.parametrize("first_fill", [1, 2, 5])
@pytest.mark.parametrize("make", [
    lambda: ReplayBuffer(30, D, 0),
    lambda: PrioritizedReplay(30, D, 0, PERConfig(uniform_probability=0.1)),
], ids=["uniform", "per"])
def test_lazy_markers_change_nothing_observable(monkeypatch: pytest.MonkeyPatch, first_fill: int, make: Any) -> None:
    monkeypatch.setattr(ids_module, "FIRST_FILL", 10**9)  # every marker written up front
    eager = run_script(make(), np.random.default_rng(7))
    monkeypatch.setattr(ids_module, "FIRST_FILL", first_fill)
    lazy_buffer = make()
    lazy = run_script(lazy_buffer, np.random.default_rng(7))
    assert len(eager) == len(lazy)
    for a, b in zip(eager, lazy):
        if isinstance(a, dict):
            assert_equal_state(a, b)
        elif isinstance(a, tuple):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        elif isinstance(a, str):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)


def test_an_unknown_id_beyond_the_filled_slots_is_not_found() -> None:
    """A slot whose marker is not written yet (still 0) never matches an id of that slot."""
    b = ReplayBuffer(2**20, D, 0)
    b.add(D(1.0, 2.0))
    with pytest.raises(Exception) as info:
        b.get(np.array([2**19]))
    assert str(2**19) in str(info.value)
    p = PrioritizedReplay(2**20, D, 0)
    p.add(D(1.0, 2.0))
    assert p.update_priorities(np.array([2**19, 0]), np.array([3.0, 4.0])) == 1
    assert p.stats()["stale_updates"] == 1
