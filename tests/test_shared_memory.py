"""SharedArrays: one shared-memory segment of numpy arrays, attached by other processes, with a safe lifetime.

Every lifetime path runs for real in other processes (fork and spawn children,
unrelated interpreters) and is judged by what is left in /dev/shm.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from process_helpers import Script, decode, encode, running, segment_exists, segments_of, wait_for
from ReplayTables.engine.shared_memory import ALIGNMENT, SharedArrays, SharedHandle, shm_free_bytes
from ReplayTables.errors import BufferClosedError, ConfigError, ReplayTablesError, SharedMemoryError

METHODS = ["fork", "spawn"]
LAYOUT: dict[str, Any] = {"a": (10, np.int64), "m": ((3, 5), np.float32), "flag": (1, np.uint8),
                          "empty": (0, np.float64), "rec": (4, np.dtype([("x", "<f4"), ("k", "<i2")]))}


@pytest.fixture
def seg() -> Any:
    s = SharedArrays.create(LAYOUT)
    yield s
    s.close()


# ------------------------------------------------------------------ layout


def test_arrays_follow_the_layout_aligned_zeroed_and_writable(seg: SharedArrays) -> None:
    arrays = seg.arrays
    assert list(arrays) == list(LAYOUT)
    for name, (shape, dtype) in LAYOUT.items():
        a = arrays[name]
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert a.dtype == np.dtype(dtype)
        assert a.flags.writeable and a.flags.c_contiguous
        assert a.ctypes.data % ALIGNMENT == 0, name
        assert not a.view(np.uint8).any()
    arrays["a"][:] = np.arange(10)
    arrays["m"][1, 2] = 1.5
    assert arrays["a"].sum() == 45 and arrays["m"][1, 2] == 1.5
    assert seg.nbytes % ALIGNMENT == 0 and seg.nbytes >= ALIGNMENT + 10 * 8 + 15 * 4
    assert segment_exists(seg.name) and seg.owner and not seg.closed
    assert seg.name in repr(seg) and "owner" in repr(seg)


@pytest.mark.parametrize("layout, field", [
    ({}, "layout"),
    ([("a", (3, np.int64))], "layout"),
    ({"": (3, np.int64)}, "layout"),
    ({"a": (3,)}, "layout['a']"),
    ({"a": (-1, np.int64)}, "layout['a']"),
    ({"a": ((2, 1.5), np.int64)}, "layout['a']"),
    ({"a": (True, np.int64)}, "layout['a']"),
    ({"a": (3, "no-such-dtype")}, "layout['a']"),
    ({"a": (3, object)}, "layout['a']"),
])
def test_bad_layout_is_a_config_error_and_creates_nothing(layout: Any, field: str) -> None:
    before = segments_of(os.getpid())
    with pytest.raises(ConfigError, match=field.replace("[", r"\[")):
        SharedArrays.create(layout)
    assert segments_of(os.getpid()) == before


def test_handle_is_small_and_picklable_and_the_segment_object_is_not(seg: SharedArrays) -> None:
    big = SharedArrays.create({"rows": ((1 << 16, 32), np.float32)})
    try:
        data = pickle.dumps(big.handle())
        assert len(data) < 1000  # names and layout, no array data
        assert pickle.loads(data) == big.handle()
        with pytest.raises(TypeError, match="handle"):
            pickle.dumps(big)
    finally:
        big.close()


# ------------------------------------------------------------------ children and unrelated processes


def _child_reads_and_writes(handle: SharedHandle, out: Any) -> None:
    with SharedArrays.attach(handle) as s:
        a = s.arrays["a"]
        out.put((a.tolist(), s.owner, float(s.arrays["m"][2, 4])))
        a[5:] = -a[:5]
        s.arrays["rec"]["k"][3] = 77


@pytest.mark.parametrize("method", METHODS)
def test_children_see_the_creators_writes_and_the_creator_sees_theirs(seg: SharedArrays, method: str) -> None:
    ctx = mp.get_context(method)
    seg.arrays["a"][:5] = [1, 2, 3, 4, 5]
    seg.arrays["m"][2, 4] = 2.5
    out = ctx.Queue()
    p = ctx.Process(target=_child_reads_and_writes, args=(seg.handle(), out))
    p.start()
    got = out.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert got == ([1, 2, 3, 4, 5, 0, 0, 0, 0, 0], False, 2.5)
    assert seg.arrays["a"].tolist() == [1, 2, 3, 4, 5, -1, -2, -3, -4, -5]
    assert seg.arrays["rec"]["k"][3] == 77
    assert segment_exists(seg.name)  # the child closed its attachment: the segment stays


def _child_uses_inherited(seg: SharedArrays) -> None:
    seg.arrays["a"][0] = os.getpid()
    os._exit(0 if not seg.owner else 3)


def test_fork_child_using_the_inherited_object_is_not_an_owner(seg: SharedArrays) -> None:
    p = mp.get_context("fork").Process(target=_child_uses_inherited, args=(seg,))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and seg.arrays["a"][0] == p.pid
    assert segment_exists(seg.name)


def _attach_then(handle: SharedHandle, how: str) -> None:
    s = SharedArrays.attach(handle)
    s.arrays["a"][1] += 1
    if how == "close":
        s.close()
    elif how == "raise":
        raise RuntimeError("an attached process fails")
    elif how == "os_exit":
        os._exit(0)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    # "exit": return with the attachment open; the interpreter's exit releases it


@pytest.mark.parametrize("method", METHODS)
def test_an_attached_process_exiting_never_unlinks(seg: SharedArrays, method: str) -> None:
    ctx = mp.get_context(method)
    for k, how in enumerate(["close", "exit", "raise", "os_exit", "sigkill"], start=1):
        p = ctx.Process(target=_attach_then, args=(seg.handle(), how))
        p.start()
        p.join(30)
        assert p.exitcode is not None, how
        assert segment_exists(seg.name), how
        assert seg.arrays["a"][1] == k, how
    with SharedArrays.attach(seg.handle()) as again:  # still attachable
        assert again.arrays["a"][1] == 5


UNRELATED_ATTACHER = """
import pickle, sys
from ReplayTables.engine.shared_memory import SharedArrays
s = SharedArrays.attach(pickle.loads(bytes.fromhex(sys.argv[1])))
s.arrays["a"][2] = 42
print(s.arrays["a"][0], flush=True)
if sys.argv[2] == "close":
    s.close()
from multiprocessing import resource_tracker
print(resource_tracker._resource_tracker._pid, flush=True)  # None unless something registered a name
"""


def _wait_for_tracker(pid_text: str) -> None:
    """Wait until a script's resource tracker (if it started one) has done its exit-time cleanup."""
    if pid_text != "None":
        assert wait_for(lambda: not running(int(pid_text)), timeout=10)


@pytest.mark.parametrize("how", ["close", "exit"])
def test_an_unrelated_process_attaches_and_its_exit_leaves_the_segment(seg: SharedArrays, tmp_path: Path,
                                                                       how: str) -> None:
    seg.arrays["a"][0] = 9
    proc = Script(tmp_path, UNRELATED_ATTACHER, encode(seg.handle()), how)
    rc, out, err = proc.finish()
    assert rc == 0, err
    printed, tracker = out.split()
    _wait_for_tracker(tracker)
    assert printed == "9" and seg.arrays["a"][2] == 42
    assert "leaked" not in err and "Warning" not in err, err
    assert segment_exists(seg.name)


PLAIN_ATTACHER = """
import sys
from multiprocessing import shared_memory
s = shared_memory.SharedMemory(name=sys.argv[1])
s.close()
from multiprocessing import resource_tracker
print(resource_tracker._resource_tracker._pid, flush=True)
"""


def test_negative_control_a_plain_attach_from_an_unrelated_process_unlinks_at_its_exit(tmp_path: Path) -> None:
    """The bug the attach path avoids (bpo-38119): the same check catches it with a plain SharedMemory."""
    from multiprocessing import resource_tracker, shared_memory

    plain = shared_memory.SharedMemory(create=True, size=64)
    try:
        rc, out, err = Script(tmp_path, PLAIN_ATTACHER, plain.name).finish()
        assert rc == 0, err
        _wait_for_tracker(out.strip())
        assert not segment_exists(plain.name)  # the attacher's resource tracker removed it
    finally:
        plain.close()
        resource_tracker.unregister("/" + plain.name, "shared_memory")  # it was unlinked behind our back


# ------------------------------------------------------------------ attaching what is not there


def test_attach_after_close_is_a_clear_error() -> None:
    s = SharedArrays.create({"a": (4, np.int64)})
    handle = s.handle()
    s.close()
    assert not segment_exists(handle.name)
    with pytest.raises(SharedMemoryError, match="closed it or exited") as info:
        SharedArrays.attach(handle)
    assert isinstance(info.value, ReplayTablesError) and isinstance(info.value, OSError)
    assert handle.name in str(info.value)


def test_attach_of_a_foreign_or_reused_name_or_a_dead_creator_is_refused(seg: SharedArrays) -> None:
    from multiprocessing import shared_memory

    handle = seg.handle()
    with pytest.raises(SharedMemoryError, match="not the one"):
        SharedArrays.attach(dataclasses.replace(handle, token=handle.token ^ 1))
    with pytest.raises(SharedMemoryError, match="not the one"):
        SharedArrays.attach(dataclasses.replace(handle, layout=handle.layout[:1] + handle.layout[:1]))
    plain = shared_memory.SharedMemory(create=True, size=4096)
    try:
        with pytest.raises(SharedMemoryError, match="different shared-memory segment"):
            SharedArrays.attach(dataclasses.replace(handle, name=plain.name))
        assert segment_exists(plain.name)  # a refused attach leaves the foreign segment alone
    finally:
        plain.close()
        plain.unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with pytest.raises(SharedMemoryError, match="has exited"):
        SharedArrays.attach(dataclasses.replace(handle, creator_pid=int(dead.stdout)))
    with pytest.raises(SharedMemoryError, match="SharedHandle"):
        SharedArrays.attach(handle.name)  # type: ignore[arg-type]
    assert segment_exists(seg.name) and seg.arrays["a"].shape == (10,)


def test_closed_object_refuses_new_access_but_close_is_idempotent() -> None:
    s = SharedArrays.create({"a": (4, np.int64)})
    s.close()
    s.close()
    assert s.closed and s.released
    with pytest.raises(BufferClosedError, match="closed"):
        s.arrays  # noqa: B018
    with pytest.raises(BufferClosedError):
        s.open_file()


# ------------------------------------------------------------------ views after close


VIEWS_AFTER_CLOSE = """
import numpy as np
from ReplayTables.engine.shared_memory import SharedArrays
s = SharedArrays.create({"a": (4, np.int64), "b": (3, np.float64)})
a = s.arrays["a"]
part = a[1:3]
other = SharedArrays.attach(s.handle())
b = other.arrays["a"]
other.close()
s.close()
a[0] = 5
part[0] = 6
b[3] = 7
print(a.tolist(), b.tolist(), flush=True)
del a, part, s
import gc; gc.collect()
print(int(b.sum()), flush=True)
"""

PLAIN_VIEW_AFTER_CLOSE = """
import numpy as np
from multiprocessing.shared_memory import SharedMemory
shm = SharedMemory(create=True, size=64)
a = np.ndarray((8,), np.int64, buffer=shm.buf)
shm.close()
shm.unlink()
a[0] = 1
print(a[0], flush=True)
"""


def test_a_view_used_after_close_does_not_crash_the_process(tmp_path: Path) -> None:
    rc, out, err = Script(tmp_path, VIEWS_AFTER_CLOSE).finish()
    assert rc == 0, err
    assert out.split("\n")[:2] == ["[5, 6, 0, 7] [5, 6, 0, 7]", "18"]
    assert not err


def test_negative_control_a_plain_shared_memory_view_after_close_crashes(tmp_path: Path) -> None:
    rc, out, _ = Script(tmp_path, PLAIN_VIEW_AFTER_CLOSE).finish()
    assert rc < 0 and out == ""  # killed by SIGSEGV: the check above would see such a crash


def test_the_mapping_goes_away_with_the_last_view() -> None:
    s = SharedArrays.create({"a": (4, np.int64)})
    name = s.name
    view = s.arrays["a"][1:]
    s.close()

    def mapped() -> bool:
        with open("/proc/self/maps") as fh:
            return name in fh.read()

    assert mapped()  # kept for the view
    del view, s
    gc.collect()
    assert not mapped()


# ------------------------------------------------------------------ the creator's exit paths

CREATOR = """
import gc, os, signal, sys, time
import numpy as np
from ReplayTables.engine.shared_memory import SharedArrays

mode = sys.argv[1]
# Ctrl-C raises KeyboardInterrupt, as in a terminal: a process started in the background inherits
# SIGINT ignored, and Python then leaves it ignored (a CI run started with & failed this way)
signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.argv[2:] == ["keeper"]:
    # a process that shares this one's resource tracker and outlives it: while it runs the tracker
    # cannot clean up, so a segment that is gone was removed by this process's own exit path
    import multiprocessing.resource_tracker as rt
    rt.ensure_running()
    keeper = os.fork()
    if keeper == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(30)
        os._exit(0)
    print(keeper, rt._resource_tracker._pid, flush=True)
if mode == "handler":
    def on_term(signum, frame):
        print("handler ran", flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, on_term)
elif mode == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
seg = SharedArrays.create({"a": (1000, np.float64)})
seg.arrays["a"][:] = 1.0
print(seg.name, flush=True)
if mode == "exception":
    raise RuntimeError("boom")
if mode == "close":
    seg.close()
    print("closed", flush=True)
elif mode == "gc":
    del seg
    gc.collect()
    print("collected", flush=True)
if mode != "exit":
    sys.stdin.readline()
"""


@pytest.mark.parametrize("mode, sig, rc_expected", [
    ("exit", None, 0),
    ("exception", None, 1),
    ("wait", signal.SIGTERM, -signal.SIGTERM),
    ("handler", signal.SIGTERM, 7),
    ("wait", signal.SIGINT, None),
    ("wait", signal.SIGKILL, -signal.SIGKILL),
])
def test_the_creators_exit_releases_the_segment(tmp_path: Path, mode: str, sig: int | None,
                                                rc_expected: int | None) -> None:
    keep = sig != signal.SIGKILL  # after SIGKILL only the tracker can clean up: let it
    proc = Script(tmp_path, CREATOR, mode, *(["keeper"] if keep else []))
    keeper, tracker = (int(pid) for pid in proc.read_line().split()) if keep else (None, None)
    name = proc.read_line()
    if sig is not None:
        assert segment_exists(name)
        proc.send_signal(sig)
    try:
        rc, out, _ = proc.finish()
        if keeper is not None:
            assert running(keeper) and not segment_exists(name), "the exit path left the segment"
    finally:
        if keeper is not None:
            os.kill(keeper, signal.SIGKILL)
    if tracker is not None:  # the tracker reports names left registered when its last process exits
        assert wait_for(lambda: not running(tracker), timeout=10)
    err = proc.stderr()
    if rc_expected is not None:
        assert rc == rc_expected, err
    else:
        assert rc != 0 and "KeyboardInterrupt" in err  # Ctrl-C still interrupts
    if mode == "handler":
        assert out.strip() == "handler ran"  # the program's own handler ran and decided
    if mode == "exception":
        assert "boom" in err
    # after SIGKILL only the resource tracker can remove it: it does once the process is gone
    assert wait_for(lambda: not segment_exists(name), timeout=10), f"{name} left in /dev/shm"
    assert "leaked" not in err or sig == signal.SIGKILL, err


@pytest.mark.parametrize("mode, line", [("close", "closed"), ("gc", "collected")])
def test_close_or_collection_in_the_creator_unlinks_at_once(tmp_path: Path, mode: str, line: str) -> None:
    proc = Script(tmp_path, CREATOR, mode)
    name = proc.read_line()
    assert proc.read_line() == line
    assert not segment_exists(name) and proc.poll() is None  # gone while the creator still runs
    rc, _, err = proc.finish("\n")
    assert rc == 0 and "leaked" not in err, err


def test_an_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    proc = Script(tmp_path, CREATOR, "ignored", "keeper")
    keeper = int(proc.read_line().split()[0])
    name = proc.read_line()
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None and segment_exists(name)
        rc, _, err = proc.finish("\n")
        assert rc == 0, err
        assert not segment_exists(name)
    finally:
        os.kill(keeper, signal.SIGKILL)


# ------------------------------------------------------------------ SIGKILL of the creator with attachers

KILLED_CREATOR = """
import os, pickle, sys, time, multiprocessing as mp
import numpy as np
from ReplayTables.engine.shared_memory import SharedArrays

def attacher(handle, slot):
    s = SharedArrays.attach(handle)
    w = s.arrays["w"]
    w[slot] = os.getpid()
    while w[0] == 0:
        time.sleep(0.002)
    if w[0] == 1:
        w[slot + 4] = w[15] + slot  # still working after the creator died
        s.close()
        w[slot + 8] = 1  # the view stays valid after close
    time.sleep(60)

if __name__ == "__main__":
    seg = SharedArrays.create({"w": (16, np.int64)})
    kids = [mp.get_context(m).Process(target=attacher, args=(seg.handle(), i + 1), daemon=True)
            for i, m in enumerate(["fork", "spawn"])]
    for p in kids:
        p.start()
    print(pickle.dumps(seg.handle()).hex(), flush=True)
    from multiprocessing import resource_tracker
    print(" ".join(str(p.pid) for p in kids), resource_tracker._resource_tracker._pid, flush=True)
    time.sleep(60)
"""


def _start_killed_creator(tmp_path: Path) -> tuple[Script, SharedArrays, list[int]]:
    proc = Script(tmp_path, KILLED_CREATOR, name="creator.py")
    handle = decode(proc.read_line())
    kids = [int(p) for p in proc.read_line().split()]  # the children, then the creator's tracker
    mine = SharedArrays.attach(handle)  # this test process: an unrelated attacher
    w = mine.arrays["w"]
    assert wait_for(lambda: w[1] == kids[0] and w[2] == kids[1], timeout=30)
    assert running(kids[2])
    proc.kill()
    assert all(running(pid) for pid in kids[:2])
    return proc, mine, kids


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not any(running(pid) for pid in pids), timeout=10)


def test_after_a_sigkilled_creator_the_attachers_work_on_and_their_close_removes_the_segment(
        tmp_path: Path) -> None:
    proc, mine, kids = _start_killed_creator(tmp_path)
    name, w = mine.name, mine.arrays["w"]
    try:
        assert segment_exists(name)  # the children share the creator's tracker, which waits for them
        assert mine.released  # but nobody may attach anew
        with pytest.raises(SharedMemoryError, match="has exited"):
            SharedArrays.attach(mine.handle())
        w[15] = 100
        w[0] = 1  # tell the children to work and close
        assert wait_for(lambda: w[9] == 1 and w[10] == 1, timeout=10)
        assert w[5] == 101 and w[6] == 102
        assert not segment_exists(name)  # the first attached close after the creator's death removed it
        assert all(running(pid) for pid in kids[:2])
    finally:
        _kill_all(kids[:2])
        mine.close()
    assert wait_for(lambda: not running(kids[2]), timeout=10)  # the tracker saw the last process go
    err = proc.stderr()  # and wrote any complaint here
    assert "leaked" not in err and "Traceback" not in err, err
    assert not segment_exists(name)


def test_after_a_sigkilled_creator_its_resource_tracker_removes_the_segment_when_the_rest_are_gone(
        tmp_path: Path) -> None:
    _, mine, kids = _start_killed_creator(tmp_path)
    name, w = mine.name, mine.arrays["w"]
    try:
        w[0] = 2  # the children keep running without closing
        time.sleep(0.1)
        assert segment_exists(name) and all(running(pid) for pid in kids[:2])
        _kill_all(kids[:2])  # nobody closes: only the creator's tracker is left to clean up
        assert wait_for(lambda: not segment_exists(name), timeout=10), "the tracker left the segment"
        w[3] = 5  # this process's mapping still works after the unlink
        assert w[3] == 5
    finally:
        _kill_all(kids[:2])
        mine.close()
    assert not segment_exists(name)


# ------------------------------------------------------------------ /dev/shm too small


def test_a_request_larger_than_dev_shm_is_a_clear_error_before_anything_is_made() -> None:
    free = shm_free_bytes()
    assert free is not None
    request = free + (64 << 20)
    before = segments_of(os.getpid())
    with pytest.raises(SharedMemoryError) as info:
        SharedArrays.create({"rows": (request, np.uint8)})
    text = str(info.value)
    assert str(request + 128) in text  # the bytes needed (the arrays and the header)
    assert "free" in text and "--shm-size" in text and "smaller capacity" in text
    assert segments_of(os.getpid()) == before


def test_a_create_that_fails_after_the_segment_exists_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up path of create(): a refused reservation (forced here) unlinks what was made."""
    from ReplayTables.engine import shared_memory

    def refuse(fd: int, nbytes: int, what: str) -> None:
        raise SharedMemoryError("nbytes", nbytes, "space the kernel can reserve", "forced by the test")

    monkeypatch.setattr(shared_memory, "_reserve", refuse)
    before = segments_of(os.getpid())
    with pytest.raises(SharedMemoryError, match="forced"):
        SharedArrays.create({"a": (8, np.uint8)})
    assert segments_of(os.getpid()) == before


def test_pages_are_committed_at_creation() -> None:
    """The reservation is real: /dev/shm's free space drops by the segment's size at create()."""
    size = 48 << 20
    before = shm_free_bytes()
    s = SharedArrays.create({"rows": (size, np.uint8)})
    try:
        after = shm_free_bytes()
        assert before is not None and after is not None
        assert before - after >= size * 0.9  # tolerance: other processes may use /dev/shm meanwhile
    finally:
        s.close()


def test_a_reservation_the_kernel_refuses_is_the_same_clear_error() -> None:
    """The fallocate step on its own: a length beyond what tmpfs can ever hold is refused at once."""
    from ReplayTables.engine.shared_memory import _reserve

    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize * 2
    s = SharedArrays.create({"a": (8, np.uint8)})
    fd = s.open_file()
    try:
        with pytest.raises(SharedMemoryError, match="ENOSPC") as info:
            _reserve(fd, too_big, "a test")
        assert "--shm-size" in str(info.value) and str(too_big) in str(info.value)
    finally:
        os.close(fd)
        s.close()


# ------------------------------------------------------------------ the docs page


def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "shared-memory.md").read_text()
    page = page.split("## The engine pieces", 1)[1]  # this module's part of the page
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    assert blocks
    script = Script(tmp_path, "\n".join(blocks), name="example.py")
    rc, out, err = script.finish(timeout=60)
    assert rc == 0, err
    assert out.strip() == "2000"
    assert not segments_of(script.pid)
