"""Shared memory on one machine: one segment of numpy arrays that other processes attach.

A :class:`SharedArrays` is one POSIX shared-memory segment (a file under
``/dev/shm``, made with :class:`multiprocessing.shared_memory.SharedMemory`) cut
into named numpy arrays, each starting on a 128-byte boundary (sum-tree blocks
need that alignment). ``handle()`` gives a small picklable :class:`SharedHandle`;
``SharedArrays.attach(handle)`` in any process on the machine (a fork or spawn
child, or an unrelated process) gives the same arrays over the same memory.

Lifetime rules (see ``docs/shared-memory.md``):

- The creating process owns the memory. ``close()`` in it, the object being
  garbage-collected, or the process exiting (normally, by an exception, or by
  SIGTERM while SIGTERM has its default action) unlinks the segment's name, so
  nothing is left in ``/dev/shm``. Processes still attached keep working on
  their mapping; new attaches fail with a clear error.
- An attached process closing or exiting never unlinks the segment while its
  creator lives. Before Python 3.13 ``SharedMemory(name=...)`` registers the
  name with the attaching process's resource tracker, which unlinks it when
  that process exits (bpo-38119 / gh-82300); attaching here never registers.
- If the creator is SIGKILLed, its resource tracker unlinks the name once every
  process sharing that tracker has exited, and an attached process that closes
  (or exits) after the creator died unlinks it at once. Either way no segment
  stays behind once the remaining processes close.

Views stay valid after ``close()``: every array is a view whose base holds the
mapping, so the memory is unmapped only when the last view (of any array, in
this process) is garbage. ``close()`` never raises ``BufferError`` because
views exist, and a view used after ``close()`` reads and writes the still
mapped memory instead of crashing the process.

Linux only (``/dev/shm``, ``/proc``).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import mmap
import os
import secrets
import signal
import sys
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing import shared_memory as _stdlib_shm
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ReplayTables.errors import BufferClosedError, ConfigError, SharedMemoryError

__all__ = ["ALIGNMENT", "SHM_DIR", "SharedArrays", "SharedHandle", "shm_free_bytes"]

ALIGNMENT = 128
"""Every array (and the header) starts on a multiple of this many bytes."""

SHM_DIR = "/dev/shm"
"""Where POSIX shared memory lives on Linux; its size is the limit on all segments."""

_PREFIX = "replaytables_"
_MAGIC = 0x5254_5348_4D30_3031  # "RTSHM001": a segment made by this module
_VERSION = 1
# The header: one ALIGNMENT-sized block of int64 words before the first array.
_H_MAGIC, _H_VERSION, _H_TOKEN_HI, _H_TOKEN_LO, _H_PID, _H_START, _H_NBYTES, _H_DIGEST, _H_STATE = range(9)
_HEADER_WORDS = ALIGNMENT // 8
_OPEN, _CLOSED = 0, 1
_TRACKER_TYPE = "shared_memory"

Shape = tuple[int, ...]
LayoutEntry = tuple[str, Shape, "np.dtype[Any]"]


@dataclass(frozen=True)
class SharedHandle:
    """What another process needs to attach a segment: its name, layout and identity, no array data.

    ``token`` is random per segment and also written into the segment, so a
    handle whose segment is gone and whose name was reused is refused rather
    than read as garbage. ``creator_start`` (the creator's start time) tells a
    live creator from an unrelated process that reused its pid. ``tracker``
    identifies the creator's resource-tracker pipe, so a process sharing that
    tracker knows whose registration it may drop.
    """

    name: str
    layout: tuple[LayoutEntry, ...]
    nbytes: int
    creator_pid: int
    creator_start: int
    token: int
    tracker: tuple[int, int] | None = None


# ---------------------------------------------------------------- layout


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _normalize_layout(layout: Any) -> tuple[LayoutEntry, ...]:
    """``{name: (shape, dtype)}`` as a tuple of ``(name, shape tuple, dtype)``, checked."""
    if not isinstance(layout, Mapping) or not layout:
        raise ConfigError("layout", layout, "a non-empty mapping of array names to (shape, dtype)")
    entries: list[LayoutEntry] = []
    for name, spec in layout.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("layout", name, "array names that are non-empty strings")
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ConfigError(f"layout[{name!r}]", spec, "a (shape, dtype) pair")
        shape_spec, dtype_spec = spec
        dims = (shape_spec,) if isinstance(shape_spec, (int, np.integer)) else shape_spec
        if not isinstance(dims, (tuple, list)) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ConfigError(f"layout[{name!r}]", shape_spec, "a shape of non-negative ints")
        try:
            dtype = np.dtype(dtype_spec)
        except TypeError as exc:
            raise ConfigError(f"layout[{name!r}]", dtype_spec, "a numpy dtype", str(exc)) from None
        if dtype.hasobject:
            raise ConfigError(f"layout[{name!r}]", dtype, "a dtype without Python objects",
                              "object references cannot be shared between processes")
        entries.append((name, tuple(int(d) for d in dims), dtype))
    return tuple(entries)


def _offsets(entries: tuple[LayoutEntry, ...]) -> tuple[list[int], int]:
    """Byte offset of each array (after the header, each aligned) and the segment's total size."""
    offset = ALIGNMENT  # the header block
    offsets = []
    for _, shape, dtype in entries:
        offsets.append(offset)
        offset += _round_up(math.prod(shape) * dtype.itemsize, ALIGNMENT)
    return offsets, offset


def _layout_digest(entries: tuple[LayoutEntry, ...]) -> int:
    text = repr([(name, shape, dtype.descr) for name, shape, dtype in entries])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


# ---------------------------------------------------------------- space


def _format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def shm_free_bytes() -> int | None:
    """Bytes free in ``/dev/shm`` (``statvfs``), or None where there is no such filesystem."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _available_memory() -> int | None:
    """Memory the kernel can still give (MemAvailable + SwapFree), or None if unknown."""
    total = 0
    seen = False
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemAvailable", "SwapFree"):
                    total += int(rest.split()[0]) * 1024
                    seen = True
    except (OSError, ValueError, IndexError):
        return None
    return total if seen else None


def _too_big(nbytes: int, what: str, limit: int, where: str) -> SharedMemoryError:
    suggestion = max(1, math.ceil(nbytes * 1.25 / 2**30))
    return SharedMemoryError(
        "nbytes", nbytes, f"at most {limit} bytes ({_format_bytes(limit)}, {where})",
        f"{what} needs {nbytes} bytes ({_format_bytes(nbytes)}) but {where} is {limit} bytes "
        f"({_format_bytes(limit)}); give the machine or container more shared memory "
        f"(e.g. `docker run --shm-size={suggestion}g ...`) or ask for a smaller capacity")


def _check_space(nbytes: int, what: str) -> None:
    """Refuse, before creating anything, a segment that /dev/shm or the machine's memory cannot hold."""
    free = shm_free_bytes()
    if free is not None and nbytes > free:
        raise _too_big(nbytes, what, free, f"the free space of {SHM_DIR}")
    available = _available_memory()
    if available is not None and nbytes > available:
        raise _too_big(nbytes, what, available, "the memory this machine has available")


def _reserve(fd: int, nbytes: int, what: str) -> None:
    """Commit the segment's pages now, so a full /dev/shm is an error here and not a SIGBUS later.

    ``ftruncate`` alone makes a sparse file: tmpfs hands out pages on first
    touch and, when it has none left, the touching process gets SIGBUS in the
    middle of a write. ``posix_fallocate`` makes the kernel allocate them all
    up front, or refuse with ENOSPC.
    """
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a filesystem that cannot reserve; pages come on first touch as before
        free = shm_free_bytes()
        raise SharedMemoryError(
            "nbytes", nbytes, f"space the kernel can reserve in {SHM_DIR}",
            f"{what} needs {nbytes} bytes ({_format_bytes(nbytes)}); reserving them failed with "
            f"{errno.errorcode.get(exc.errno or 0, exc.errno)} ({exc.strerror}); {SHM_DIR} has "
            f"{'unknown' if free is None else _format_bytes(free)} free; give the machine or container "
            f"more shared memory (e.g. `docker run --shm-size=...`) or ask for a smaller capacity") from None


# ---------------------------------------------------------------- processes and trackers


def _process_start(pid: int) -> int | None:
    """Start time of live process ``pid`` (clock ticks after boot); None if it is gone or a zombie; -1 if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return -1
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X", b"x"):
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return -1


def _own_start() -> int:
    start = _process_start(os.getpid())
    return -1 if start is None else start


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _creator_alive(pid: int, start: int) -> bool:
    """Whether the process that created a segment still runs (and is not a newcomer with its pid)."""
    now = _process_start(pid)
    if now is None:
        return False
    if now == -1 or start == -1:
        return _pid_alive(pid)
    return now == start


def _tracker_id() -> tuple[int, int] | None:
    """(device, inode) of this process's resource-tracker pipe, or None when it has none.

    Fork and spawn children share their parent's tracker process (they hold the
    same pipe), and its cache is a set: a name registered by several of them is
    one entry, which one unregister removes for all.
    """
    fd = getattr(getattr(resource_tracker, "_resource_tracker", None), "_fd", None)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _NoTracker:
    """Stands in for the resource tracker while an attaching process opens a segment."""

    @staticmethod
    def register(name: str, rtype: str) -> None:
        pass

    @staticmethod
    def unregister(name: str, rtype: str) -> None:
        pass


class _AttachedSharedMemory(_stdlib_shm.SharedMemory):
    """The standard library's segment object, opened by a process that does not own the segment.

    It never unlinks (the standard ``__init__`` unlinks on a failed ``mmap``
    even when it only attached), and it is opened without registering with the
    resource tracker, which is what ``track=False`` does from Python 3.13.
    """

    def unlink(self) -> None:
        pass


def _untracked_init() -> Callable[..., None] | None:
    """``SharedMemory.__init__`` with the resource tracker replaced by a no-op (Python < 3.13).

    The function is the standard library's own code with different globals, so
    it opens and maps exactly as ``SharedMemory(name)`` does, and nothing else
    in the process (another thread creating a segment) sees the replacement.
    """
    init = _stdlib_shm.SharedMemory.__init__
    if "resource_tracker" not in init.__code__.co_names:
        return None  # pragma: no cover - a layout this module does not know; the fallback below is used
    globals_ = dict(init.__globals__)
    globals_["resource_tracker"] = _NoTracker
    return types.FunctionType(init.__code__, globals_, init.__name__, init.__defaults__, init.__closure__)


_INIT_WITHOUT_TRACKER = None if sys.version_info >= (3, 13) else _untracked_init()


def _open_attached(name: str, creator_tracker: tuple[int, int] | None) -> _stdlib_shm.SharedMemory:
    """Open segment ``name`` without leaving a registration that would unlink it when this process exits."""
    if sys.version_info >= (3, 13):
        return _AttachedSharedMemory(name=name, create=False, track=False)
    shm = _AttachedSharedMemory.__new__(_AttachedSharedMemory)
    if _INIT_WITHOUT_TRACKER is not None:
        _INIT_WITHOUT_TRACKER(shm, name, False, 0)
        return shm
    # pragma: no cover - fallback: the standard __init__ registered the name; drop it unless the
    # tracker is the creator's (then the entry is the creator's own and must stay)
    _stdlib_shm.SharedMemory.__init__(shm, name, False, 0)
    if _tracker_id() != creator_tracker:
        resource_tracker.unregister("/" + name, _TRACKER_TYPE)
    return shm


def _take_mapping(shm: _stdlib_shm.SharedMemory) -> tuple[mmap.mmap, int]:
    """Take the mapping and descriptor out of a ``SharedMemory`` so its ``close()`` cannot unmap them.

    ``SharedMemory.close()`` closes the mmap even while numpy views of its
    memoryview exist (``np.ndarray(buffer=shm.buf)`` holds no export), which
    leaves those views pointing at unmapped memory. Views made here with
    ``np.frombuffer`` on the mmap itself hold an export, so the mapping lives as
    long as any view does.
    """
    raw: Any = shm  # these private attributes are stable from Python 3.8 to 3.14
    mapping, fd = raw._mmap, raw._fd
    if raw._buf is not None:
        raw._buf.release()
    raw._buf = None
    raw._mmap = None
    raw._fd = -1  # its close() and __del__ are now no-ops
    assert isinstance(mapping, mmap.mmap) and isinstance(fd, int)
    return mapping, fd


# ---------------------------------------------------------------- lifetime


class _Segment:
    """This process's hold on one segment: what ``close()`` and the finalizer release.

    Kept apart from :class:`SharedArrays` (and without a reference to it) so the
    finalizer can run when the SharedArrays is garbage.
    """

    __slots__ = ("closed", "fd", "guard", "handle", "header", "mapping", "owner_pid", "path", "verified")

    def __init__(self, handle: SharedHandle, mapping: mmap.mmap, fd: int, header: np.ndarray, owned: bool) -> None:
        self.handle = handle
        self.mapping: mmap.mmap | None = mapping
        self.fd = fd
        self.header: np.ndarray | None = header
        # only the object create() returned owns the segment, and only in the creating process
        # (a fork child inherits it with a different pid); an attached object never does
        self.owner_pid = handle.creator_pid if owned else -1
        self.path = os.path.join(SHM_DIR, handle.name)
        self.closed = False
        self.verified = True  # the segment is the one the handle names (an attach checked it)
        self.guard = threading.RLock()


def _unlink_owned(seg: _Segment) -> None:
    """The creator's unlink: remove the name and the creator's resource-tracker entry."""
    with contextlib.suppress(FileNotFoundError):  # removed by hand: the tracker entry must still go
        os.unlink(seg.path)
    with contextlib.suppress(Exception):  # a tracker that cannot be reached at exit
        resource_tracker.unregister("/" + seg.handle.name, _TRACKER_TYPE)


def _unlink_orphan(seg: _Segment) -> None:
    """An attached process's unlink of a segment whose creator died without releasing it."""
    try:
        if os.stat(seg.path).st_ino != os.fstat(seg.fd).st_ino:
            return  # the name now belongs to another segment
        os.unlink(seg.path)
    except (FileNotFoundError, OSError):
        return  # already gone (the creator's tracker, or another attached process, removed it)
    if seg.handle.tracker is not None and _tracker_id() == seg.handle.tracker:
        # this process shares the creator's tracker: drop the creator's entry, or the tracker
        # would try to unlink a name that is gone (and warn) when the last process exits
        with contextlib.suppress(Exception):
            resource_tracker.unregister("/" + seg.handle.name, _TRACKER_TYPE)


_owned: dict[int, _Segment] = {}  # segments this process created and has not released
_owned_guard = threading.RLock()  # re-entrant: the SIGTERM handler may interrupt a holder


def _release(seg: _Segment) -> None:
    """Release this process's hold on ``seg``; unlink its name if this process owns it (runs once)."""
    # SIGTERM arriving in this thread mid-release would run the handler, which releases too:
    # keep it pending until the release is done (a handler in another thread waits on the guard)
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        with seg.guard:
            if seg.closed:
                return
            try:
                if os.getpid() == seg.owner_pid:
                    if seg.header is not None:
                        seg.header[_H_STATE] = _CLOSED
                    _unlink_owned(seg)
                elif seg.verified and not _creator_alive(seg.handle.creator_pid, seg.handle.creator_start):
                    _unlink_orphan(seg)
            finally:
                seg.closed = True
                with _owned_guard:
                    _owned.pop(id(seg), None)
                if seg.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(seg.fd)
                    seg.fd = -1
                seg.header = None
                mapping, seg.mapping = seg.mapping, None
                if mapping is not None:
                    # with views alive this raises BufferError and the mapping stays, to be
                    # unmapped when the last view is garbage
                    with contextlib.suppress(BufferError):
                        mapping.close()
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


_sigterm_installed = False


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    """Release this process's segments, then die of SIGTERM as the default action would."""
    with _owned_guard:
        segments = list(_owned.values())
    for seg in segments:
        _release(seg)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _install_sigterm_handler() -> None:
    """Unlink owned segments on SIGTERM, where SIGTERM still has its default action.

    A SIGTERM with the default action kills the process without running
    ``atexit``, so the segment would stay until the resource tracker noticed.
    Only the default action is replaced: a handler the program installed is
    left alone (it decides whether the process exits, and an exit through
    ``SystemExit`` runs the finalizers), an ignored SIGTERM stays ignored, and
    SIGINT (Ctrl-C raising KeyboardInterrupt, which exits through the
    finalizers) is not touched. Signal handlers can only be set from the main
    thread; a segment created elsewhere relies on the finalizers and the tracker.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


# ---------------------------------------------------------------- the segment


def _views(mapping: mmap.mmap, entries: tuple[LayoutEntry, ...]) -> dict[str, np.ndarray]:
    offsets, _ = _offsets(entries)
    arrays = {}
    for (name, shape, dtype), offset in zip(entries, offsets):
        # frombuffer on the mmap holds a buffer export: the view keeps the mapping alive
        flat = np.frombuffer(mapping, dtype=dtype, count=math.prod(shape), offset=offset)
        arrays[name] = flat.reshape(shape)
    return arrays


class SharedArrays:
    """Named numpy arrays in one shared-memory segment that other processes can attach.

    Make one with :meth:`create` (this process becomes the owner) or
    :meth:`attach` (from a :class:`SharedHandle`); never with the constructor.
    ``arrays`` maps each name of the layout to a writable view. See the module
    docstring for the lifetime rules.
    """

    def __init__(self, segment: _Segment, arrays: dict[str, np.ndarray]) -> None:
        self._segment = segment
        self._arrays = arrays
        self._finalizer = weakref.finalize(self, _release, segment)

    @classmethod
    def create(cls, layout: Mapping[str, tuple[int | Shape, DTypeLike]]) -> SharedArrays:
        """A new segment holding zeroed arrays of ``layout`` (``{name: (shape, dtype)}``), owned by this process.

        The segment's pages are reserved (committed) here, with
        ``posix_fallocate``: creation costs the memory at once, and a
        ``/dev/shm`` too small for it is a :class:`SharedMemoryError` naming
        the bytes needed and free and the fix, instead of a SIGBUS on the write
        that first touches a page the kernel cannot provide.
        """
        entries = _normalize_layout(layout)
        _, nbytes = _offsets(entries)
        what = f"shared memory for arrays {[name for name, _, _ in entries]}"
        _check_space(nbytes, what)
        shm = None
        while shm is None:
            name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(8)}"  # the pid says whose it is
            try:
                shm = _stdlib_shm.SharedMemory(name=name, create=True, size=nbytes)
            except FileExistsError:
                continue
        mapping, fd = _take_mapping(shm)
        try:
            _reserve(fd, nbytes, what)
            handle = SharedHandle(name=name, layout=entries, nbytes=nbytes, creator_pid=os.getpid(),
                                  creator_start=_own_start(),
                                  token=secrets.randbits(126), tracker=_tracker_id())
            header = np.frombuffer(mapping, dtype=np.int64, count=_HEADER_WORDS, offset=0)
            header[_H_VERSION] = _VERSION
            header[_H_TOKEN_HI] = handle.token >> 63
            header[_H_TOKEN_LO] = handle.token & (2**63 - 1)
            header[_H_PID] = handle.creator_pid
            header[_H_START] = handle.creator_start
            header[_H_NBYTES] = nbytes
            header[_H_DIGEST] = _layout_digest(entries)
            header[_H_STATE] = _OPEN
            header[_H_MAGIC] = _MAGIC
            segment = _Segment(handle, mapping, fd, header, owned=True)
            arrays = _views(mapping, entries)
        except BaseException:
            segment = _Segment(SharedHandle(name, entries, nbytes, os.getpid(), -1, 0), mapping, fd,
                               np.zeros(_HEADER_WORDS, np.int64), owned=True)
            _release(segment)
            raise
        with _owned_guard:
            _owned[id(segment)] = segment
        _install_sigterm_handler()
        return cls(segment, arrays)

    @classmethod
    def attach(cls, handle: SharedHandle) -> SharedArrays:
        """The arrays of the segment ``handle`` names, over the same memory, in this process.

        Raises :class:`SharedMemoryError` if the segment is gone (its creator
        closed it or exited), its creator has exited, or the name now holds a
        different segment. Attaching never makes this process an owner.
        """
        if not isinstance(handle, SharedHandle):
            raise SharedMemoryError("handle", handle, "a SharedHandle from SharedArrays.handle()")
        if not _creator_alive(handle.creator_pid, handle.creator_start):
            raise SharedMemoryError("handle", handle.name, "a segment whose creating process still runs",
                                    f"process {handle.creator_pid}, which created it, has exited")
        try:
            shm = _open_attached(handle.name, handle.tracker)
        except FileNotFoundError:
            raise SharedMemoryError("handle", handle.name, "a shared-memory segment that still exists",
                                    "its creator closed it or exited") from None
        except (OSError, ValueError) as exc:
            raise SharedMemoryError("handle", handle.name, "a shared-memory segment this process can map",
                                    str(exc)) from None
        mapping, fd = _take_mapping(shm)
        header = (np.frombuffer(mapping, np.int64, _HEADER_WORDS, 0) if len(mapping) >= ALIGNMENT
                  else np.zeros(_HEADER_WORDS, np.int64))
        segment = _Segment(handle, mapping, fd, header, owned=False)
        try:
            cls._check_identity(segment, handle)
            arrays = _views(mapping, handle.layout)
        except BaseException:
            segment.verified = False  # not ours to unlink, whatever happened to the creator
            _release(segment)
            raise
        return cls(segment, arrays)

    @staticmethod
    def _check_identity(segment: _Segment, handle: SharedHandle) -> None:
        header = segment.header
        assert header is not None and segment.mapping is not None
        foreign = (len(segment.mapping) < handle.nbytes or int(header[_H_MAGIC]) != _MAGIC
                   or int(header[_H_VERSION]) != _VERSION)
        if foreign:
            raise SharedMemoryError("handle", handle.name, "a segment made by SharedArrays.create",
                                    "the name holds a different shared-memory segment")
        token = (int(header[_H_TOKEN_HI]) << 63) | int(header[_H_TOKEN_LO])
        if (token != handle.token or int(header[_H_PID]) != handle.creator_pid
                or int(header[_H_NBYTES]) != handle.nbytes or int(header[_H_DIGEST]) != _layout_digest(handle.layout)):
            raise SharedMemoryError("handle", handle.name, "the segment this handle was made for",
                                    "the segment under this name is not the one the handle describes "
                                    "(the name was reused, or the handle was altered)")
        if int(header[_H_STATE]) != _OPEN:
            raise SharedMemoryError("handle", handle.name, "an open segment", "its creator closed it")

    # ------------------------------------------------------------ what it is

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Name -> writable view of the shared memory (the dict is this object's; the views are shared)."""
        if self._segment.closed:
            raise BufferClosedError("SharedArrays", self.name, "an open segment",
                                    "it was closed; views taken before close() stay valid")
        return self._arrays

    @property
    def name(self) -> str:
        """The segment's name (its file is ``/dev/shm/<name>`` while it is linked)."""
        return self._segment.handle.name

    @property
    def nbytes(self) -> int:
        """Size of the whole segment in bytes: header, arrays and alignment padding."""
        return self._segment.handle.nbytes

    @property
    def owner(self) -> bool:
        """Whether this process created the segment (and so releases it)."""
        return os.getpid() == self._segment.owner_pid

    @property
    def closed(self) -> bool:
        """Whether this object was closed (in this process)."""
        return self._segment.closed

    @property
    def released(self) -> bool:
        """Whether the segment can no longer be attached (closed here or by its creator, or the creator exited)."""
        seg = self._segment
        if seg.closed:
            return True
        header = seg.header
        if header is not None and int(header[_H_STATE]) != _OPEN:
            return True
        return not _creator_alive(seg.handle.creator_pid, seg.handle.creator_start)

    def handle(self) -> SharedHandle:
        """A small picklable handle that :meth:`attach` accepts in another process."""
        return self._segment.handle

    def open_file(self) -> int:
        """A new descriptor on the segment (its own open file description, close-on-exec); the caller closes it.

        For locks (``flock`` is per open file description), and it works after
        the name was unlinked.
        """
        fd = self._segment.fd
        if self._segment.closed or fd < 0:
            raise BufferClosedError("SharedArrays", self.name, "an open segment", "it was closed")
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)

    # ------------------------------------------------------------ release

    def close(self) -> None:
        """Release this process's hold; in the creator, unlink the segment so nothing stays in /dev/shm.

        Other processes that attached keep their mapping and can go on using
        it; new attaches fail. Views handed out stay valid (see the module
        docstring). Closing twice is a no-op.
        """
        self._finalizer()

    def __enter__(self) -> SharedArrays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        seg = self._segment
        state = "closed" if seg.closed else ("owner" if self.owner else "attached")
        return (f"SharedArrays(name={seg.handle.name!r}, nbytes={seg.handle.nbytes}, "
                f"arrays={[name for name, _, _ in seg.handle.layout]}, {state})")

    def __reduce__(self) -> Any:
        raise TypeError("a SharedArrays is not pickled: send its handle() to the other process and "
                        "call SharedArrays.attach(handle) there")
