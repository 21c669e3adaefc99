"""RLlib's own old-stack replay-buffer tests, restated against ``ReplayTables.rllib``.

Each module names the file of ray-project/ray it restates
(``rllib/utils/replay_buffers/tests/``, Ray 2.60). The assertions are RLlib's; what
changed is the import of the buffer classes (ours instead of RLlib's), the module
layout (pytest functions), a fixed seed for every random draw, and where noted a
fix to RLlib's test data. A test that exercises a documented, deliberate
difference (our true ring) is ``xfail(strict=True)`` with the reason.

Ray is imported directly (RLlib's ``SampleBatch`` builds the data): these tests
need the ``rllib`` extra and fail, never skip, without it.
"""
from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """RLlib's tests draw their data with numpy's and Python's global generators."""
    np.random.seed(0)
    random.seed(0)
