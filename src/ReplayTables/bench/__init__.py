"""``replaytables bench``: time the standard workloads on this library.

* :mod:`~ReplayTables.bench.workloads`: W1-W4 (front end A), W5 and SEQ (the
  step-stream front end, :mod:`ReplayTables.trajectory`), each at a chosen capacity.
* :mod:`~ReplayTables.bench.report`: the rich table, the PNG of time against
  capacity and the JSON of raw results.
* :mod:`~ReplayTables.bench.peers`: runs the external peer harness named by
  ``--harness`` / ``$REPLAYTABLES_PEER_HARNESS`` (other libraries side by side,
  each in its own virtual environment).

The workloads follow the peer harness's definitions (its ``README.md``)
so figures can be read beside its tables; this in-process runner is for quick
looks at how time scales with capacity, not for side-by-side claims.
"""
