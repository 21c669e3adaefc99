"""Helpers for tests that run several processes: scripts in their own interpreter, segment and process checks."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ReplayTables
from ReplayTables.engine.shared_memory import SHM_DIR, SharedHandle

SRC = str(Path(ReplayTables.__file__).resolve().parents[1])
# scripts import this checkout's package, whatever is installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)}


class Script:
    """A script file run in a new interpreter: stdin is a pipe, stdout and stderr go to files.

    Files, not pipes, because the script's resource tracker inherits them and may
    outlive the script: reading a pipe to its end would wait for the tracker.
    """

    def __init__(self, tmp_path: Path, code: str, *args: str, name: str = "script.py") -> None:
        path = tmp_path / name
        path.write_text(textwrap.dedent(code))
        self.out_path = tmp_path / (name + ".stdout")
        self.err_path = tmp_path / (name + ".stderr")
        self._read = 0
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(path), *args], stdin=subprocess.PIPE,
                                         stdout=out, stderr=err, text=True, env=ENV)
        self.pid = self.proc.pid

    def read_line(self, timeout: float = 30) -> str:
        """The next line the script prints (fails with its stderr if it exits or times out first)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.out_path.read_text()
            end = text.find("\n", self._read)
            if end >= 0:
                line, self._read = text[self._read:end], end + 1
                return line.strip()
            if self.proc.poll() is not None and self.out_path.read_text() == text:
                raise AssertionError(f"script exited with {self.proc.returncode} before printing: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"script printed nothing for {timeout} s: {self.stderr()}")
            time.sleep(0.005)

    def finish(self, stdin: str = "", timeout: float = 20) -> tuple[int, str, str]:
        """Send ``stdin``, wait for the script to exit; its return code, the rest of stdout, and stderr."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it had exited
        self.proc.wait(timeout)
        return self.proc.returncode, self.out_path.read_text()[self._read:], self.stderr()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def poll(self) -> int | None:
        return self.proc.poll()


def encode(handle: SharedHandle) -> str:
    return pickle.dumps(handle).hex()


def decode(text: str) -> Any:
    return pickle.loads(bytes.fromhex(text))


def segment_exists(name: str) -> bool:
    return name in os.listdir(SHM_DIR)


def segments_of(pid: int) -> set[str]:
    """The segments process ``pid`` created that are still in /dev/shm (their names carry the pid)."""
    return {n for n in os.listdir(SHM_DIR) if n.startswith(f"replaytables_{pid}_")}


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
