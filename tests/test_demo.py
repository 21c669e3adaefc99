"""The DQN CartPole demo's smoke mode runs end to end and writes its PNG, log and results.

Needs the examples extra (torch==2.13.0, gymnasium, matplotlib, tqdm), which CI installs.
This checks the code path, not learning: the full run (README) is what learns.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("torch", "gymnasium", "matplotlib", "tqdm"):
    pytest.importorskip(module)

DEMO = Path(__file__).resolve().parents[1] / "examples" / "dqn_cartpole.py"
README_EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "readme.py"


def test_smoke_run_writes_png_log_and_results(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(DEMO), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = out / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    log = (out / "dqn_cartpole.log").read_text()
    assert "[smoke]" in log
    for line in ("per     seed 0:", "uniform seed 0:", "training wall time", "every run solved"):
        assert line in log
    data = json.loads((out / "results.json").read_text())
    runs = {r["kind"]: r for r in data["runs"]}
    assert set(runs) == {"per", "uniform"}
    for r in runs.values():
        assert r["steps"] == data["settings"]["steps"] == 1_500
        assert r["episodes"] == len(r["returns"]) == len(r["ends"]) > 5
        assert sum(r["returns"]) <= r["steps"]  # CartPole gives 1 per step
        assert r["buffer_stats"]["size"] == r["steps"]  # every step went into the buffer
        assert len(r["greedy_returns"]) == 2
    assert runs["per"]["buffer_stats"]["sampled"] > 0
    assert "DQN CartPole" in proc.stderr  # the progress bar


def test_bad_override_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(DEMO), "--smoke", "--out", str(tmp_path), "--set", "nope=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown hyperparameter 'nope'" in proc.stderr


def test_readme_examples_print_what_the_readme_says() -> None:
    proc = subprocess.run([sys.executable, str(README_EXAMPLES)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:4] == ["(32, 8)", "(32,)", "(32,)", "(32,) (32,) (32,)"]
