"""The examples of docs/rllib.md run as written (in order, one namespace)."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "rllib.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_docs_have_the_issue_examples() -> None:
    text = DOC.read_text()
    for needle in ("LessSampledReplayBuffer", "StorageUnit.EPISODES", "evict_sampled_more_then", "replay_burn_in",
                   "prioritized_replay_alpha", "underlying_replay_buffer_config", "Migrating from RLlib"):
        assert needle in text
    assert len(blocks()) >= 8


def test_docs_examples_run() -> None:
    namespace: dict[str, object] = {}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"docs/rllib.md block {i + 1}", "exec"), namespace)
