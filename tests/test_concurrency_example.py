"""``examples/actor_learner_threads.py`` (the example of docs/concurrency.md) runs and keeps its ratio.

The limiter admits an insert only while ``inserts * spi - samples <= max_diff`` and a
sample only while it stays ``>= min_diff``, so when every thread has stopped the
difference must lie in that band, whatever the threads' interleaving was.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "actor_learner_threads.py"


def load_example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("actor_learner_threads", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and NamedTuples look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("actors", [1, 3])
def test_the_example_keeps_samples_per_insert_in_the_limiters_band(actors: int,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example()
    before = threading.active_count()
    out = example.main(actors=actors, steps=400)
    spi, warm_up, band = example.SAMPLES_PER_INSERT, example.WARM_UP, example.ERROR_BUFFER
    d = out["inserts"] * spi - out["samples"]
    assert spi * warm_up - band <= d <= spi * warm_up + band, out
    assert out["samples"] >= 400 * example.BATCH  # every learner step got its batch
    assert threading.active_count() == before, "a thread of the example is still running"
    assert "samples per insert after the warm-up" in capsys.readouterr().out


def test_the_example_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--actors", "2", "--steps", "200"], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(EXAMPLE.parents[1] / "src"),
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "target 8" in done.stdout


def test_the_concurrency_page_runs() -> None:
    """docs/concurrency.md: its Python blocks run in order, in one namespace, as written."""
    import re

    page = EXAMPLE.parents[1] / "docs" / "concurrency.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 4
    import types

    page_module = types.ModuleType("concurrency_page")  # its NamedTuple's annotations resolve in it
    sys.modules[page_module.__name__] = page_module
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/concurrency.md block {i + 1}", "exec"), page_module.__dict__)
    finally:
        del sys.modules[page_module.__name__]
