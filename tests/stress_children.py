"""Runs the long stress tests side by side, each in a child pytest process of its own.

A 4-thread x 250k stress run is bound to one core by the GIL: one thread works while the other three
wait for the table's lock. Two such runs in two processes therefore take the time of one on a machine
with two cores. The first such test of a module starts every selected one in a child process, at most
``WORKERS`` at a time; each test then waits for its own child and fails with the child's output when the
child failed. The child runs the very same test in its own process (``CHILD`` is set in its
environment), so what is checked is unchanged; only where it runs is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest

CHILD = "REPLAYTABLES_STRESS_CHILD"
WORKERS = min(2, os.cpu_count() or 1)  # one run per core; more would only share the cores
TIMEOUT = 3600.0  # seconds one child may take before it counts as hung and is killed


def in_child() -> bool:
    """Whether this process is a child started here (then the test runs in place)."""
    return os.environ.get(CHILD) == "1"


class StressChildren:
    """The child processes for a list of test node ids, started in order, ``WORKERS`` at a time."""

    def __init__(self, nodeids: list[str], rootdir: Path, logs: Path) -> None:
        self._pending = deque(nodeids)
        self._rootdir = rootdir
        self._logs = logs
        self._running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        self._results: dict[str, tuple[int, str]] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self._scheduler = threading.Thread(target=self._schedule, name="stress-children", daemon=True)
        self._scheduler.start()

    def _log(self, nodeid: str) -> Path:
        return self._logs / (nodeid.replace("/", "_").replace(":", "_").replace("[", "_").strip("]") + ".log")

    def _start(self, nodeid: str) -> None:
        env = dict(os.environ, **{CHILD: "1"})
        basetemp = self._log(nodeid).with_suffix(".tmp")
        with open(self._log(nodeid), "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", nodeid],
                cwd=self._rootdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        self._running[nodeid] = (child, time.monotonic())

    def _finish(self, nodeid: str, returncode: int) -> None:
        del self._running[nodeid]
        self._results[nodeid] = (returncode, self._log(nodeid).read_text(errors="replace"))
        self._changed.notify_all()

    def _schedule(self) -> None:
        while True:
            with self._changed:
                if self._stopped or not (self._pending or self._running):
                    return
                while self._pending and len(self._running) < WORKERS:
                    self._start(self._pending.popleft())
                for nodeid, (child, started) in list(self._running.items()):
                    if child.poll() is not None:
                        self._finish(nodeid, child.returncode)
                    elif time.monotonic() - started > TIMEOUT:
                        child.kill()
                        child.wait()
                        self._finish(nodeid, -9)
            time.sleep(0.2)

    def wait(self, nodeid: str) -> None:
        """Block until ``nodeid``'s child is done; fail the calling test with its output unless it passed."""
        with self._changed:
            if nodeid not in self._results and nodeid not in self._running and nodeid not in self._pending:
                raise AssertionError(f"{nodeid} was never started in a child")
            self._changed.wait_for(lambda: nodeid in self._results)
            returncode, output = self._results[nodeid]
        if returncode != 0 or "1 passed" not in output:
            pytest.fail(f"the child process running {nodeid} ended with code {returncode}:\n{output}",
                        pytrace=False)

    def stop(self) -> None:
        """Kill every child still running and start no more (the session is ending)."""
        with self._changed:
            self._stopped = True
            self._pending.clear()
            for child, _ in self._running.values():
                child.kill()
                child.wait()
            self._running.clear()
        self._scheduler.join()
