"""Layouts: how items map to the rows of a table's storage.

* one row per item: the table itself with a writer (``engine/writers.py``: a FIFO
  ring or a reservoir chooses the row);
* :mod:`~ReplayTables.engine.layouts.step_ranges`: items of any length as ranges
  of consecutive timestep rows (RLlib's sequences, episodes, fragments);
* :mod:`~ReplayTables.engine.layouts.episodes`: one ring of steps per environment
  stream, items are complete transitions (n-step, frame stacks, sequences:
  :mod:`~ReplayTables.engine.layouts.nstep` and
  :mod:`~ReplayTables.engine.layouts.sequence_starts`).
"""
