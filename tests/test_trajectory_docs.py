"""Every Python code block of the step-stream documentation pages runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["step-stream.md", "frame-stacking.md", "n-step.md", "sequences.md", "storage-backends.md"]


def blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, capsys):
    code = blocks(page)
    assert code, f"{page} has no python example"
    if "zstd" in "".join(code):
        pytest.importorskip("zstandard")
    for block in code:
        exec(compile(block, f"{page}", "exec"), {"__name__": "__doc_example__"})
