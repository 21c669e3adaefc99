"""Support for RLlib's own old-stack replay-buffer tests, restated against ``ReplayTables.rllib``.

Each ``test_upstream_*`` module names the file of ray-project/ray it restates
(``rllib/utils/replay_buffers/tests/``, Ray 2.60). The assertions are RLlib's; what
changed is the import of the buffer classes (ours instead of RLlib's), the module
layout (pytest functions), a fixed seed for every random draw (:func:`seeded`, which
each module imports), and where noted a fix to RLlib's test data. A test that
exercises a documented, deliberate difference (our true ring) is
``xfail(strict=True)`` with the reason below (docs/rllib-inside.md lists them).

Ray is imported directly (RLlib's ``SampleBatch`` builds the data): these tests need
the ``rllib`` extra and fail, never skip, without it. (No ``conftest.py`` here: it
would shadow ``tests/conftest.py`` for the modules that import helpers from it.)
"""
from __future__ import annotations

import random

import numpy as np
import pytest

#: The reason carried by every test that exercises our true ring (docs/rllib-inside.md).
TRUE_RING = ("deliberate difference: a true ring of `capacity` timesteps evicts the oldest items until the new "
             "one fits; RLlib's ring replaces one list slot per item and lets the stored timesteps exceed capacity")


@pytest.fixture(autouse=True)
def seeded() -> None:
    """RLlib's tests draw their data with numpy's and Python's global generators."""
    np.random.seed(0)
    random.seed(0)
