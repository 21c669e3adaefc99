"""Which shards are up, as the learner sees them from its own calls.

No thread, no watcher: every call the learner makes to a shard either gets a
reply (the shard is up, and the reply's report is the latest) or fails or
times out (the shard is down from then on, and one ``report`` call is left
pending to it). Ray restarts a dead shard by itself; the next learner call that
finds the pending report answered brings the shard back into sampling.
"""
from __future__ import annotations

import time
from typing import Any

from ReplayTables.distributed.ray_api import ray
from ReplayTables.distributed.shard import ShardReport

__all__ = ["ShardHealth"]


class ShardHealth:
    """Up/down state, latest report and restart count of each shard."""

    def __init__(self, actors: list[Any], reports: list[ShardReport]) -> None:
        self.actors = actors
        self.reports = list(reports)
        self.first_life = [r.life for r in reports]
        self.down_since: list[float | None] = [None] * len(actors)
        self.last_error: list[str | None] = [None] * len(actors)
        self._probes: list[Any] = [None] * len(actors)
        #: inserts of earlier lives of each shard (its counter starts again when it restarts)
        self.carried_inserts = [0] * len(actors)

    @property
    def up(self) -> list[int]:
        """The shards that are up, in order."""
        return [k for k, t in enumerate(self.down_since) if t is None]

    def inserts(self) -> int:
        """Items inserted into all shards, over all their lives, as the latest reports say."""
        return sum(r.added for r in self.reports) + sum(self.carried_inserts)

    def restarts(self, index: int) -> int:
        """How many times shard ``index`` was restarted since this buffer was built or loaded."""
        return self.reports[index].life - self.first_life[index]

    def heard(self, index: int, report: ShardReport) -> None:
        """A reply from shard ``index`` (it is up)."""
        previous = self.reports[index]
        if report.life != previous.life:  # a new life: keep counting from what the old one had inserted
            self.carried_inserts[index] += previous.added - report.added
        self.reports[index] = report
        if self.down_since[index] is not None:
            self.down_since[index] = None
            self._probes[index] = None

    def lost(self, index: int, error: Any) -> None:
        """A call to shard ``index`` failed or timed out: leave it out until it answers again."""
        if self.down_since[index] is None:
            self.down_since[index] = time.monotonic()
        self.last_error[index] = str(error)[:300]
        if self._probes[index] is None:
            self._probes[index] = self.actors[index].report.remote()

    def wait_for_any(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for one down shard's pending report, then :meth:`poll`."""
        pending = [p for p in self._probes if p is not None]
        if pending:
            ray().wait(pending, num_returns=1, timeout=timeout)
        self.poll()

    def poll(self) -> None:
        """Bring back every down shard whose pending report has been answered (never waits)."""
        pending = [k for k, p in enumerate(self._probes) if p is not None]
        if not pending:
            return
        r = ray()
        refs = [self._probes[k] for k in pending]
        ready, _ = r.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        for k, ref in zip(pending, refs):
            if ref not in ready_set:
                continue
            try:
                report = r.get(ref)
            except r.exceptions.RayError as exc:  # still restarting (or gone for good): ask again
                self._probes[k] = None
                self.lost(k, exc)
                continue
            self.heard(k, report)
