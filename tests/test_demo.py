"""The DQN CartPole demo: its pure helpers, its claims, and a smoke run end to end.

The smoke run needs the examples extra (torch==2.13.0, gymnasium, matplotlib, tqdm),
which CI installs; it checks the code path, not learning (the full run in the README
is what learns). The helpers are tested without those packages.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "dqn_cartpole.py"
README_EXAMPLES = REPO / "examples" / "readme.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dqn_cartpole", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dqn_cartpole"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def needs_examples_extra() -> None:
    for module in ("torch", "gymnasium", "matplotlib", "tqdm"):
        pytest.importorskip(module)


# ---------------------------------------------------------------- what "solved" means
def test_solved_is_gymnasiums_cartpole_v1_threshold() -> None:
    assert demo.SOLVED == 475.0 and demo.SOLVED_EPISODES == 100
    gym = pytest.importorskip("gymnasium")
    spec = gym.spec("CartPole-v1")
    assert spec.reward_threshold == demo.SOLVED and spec.max_episode_steps == 500


def test_is_solved_needs_100_consecutive_episodes_averaging_475() -> None:
    assert demo.is_solved([500.0] * 100)
    assert demo.is_solved([475.0] * 100)
    assert not demo.is_solved([500.0] * 99)  # too few episodes
    assert not demo.is_solved([474.0] * 100)
    assert demo.is_solved([0.0] * 50 + [500.0] * 100)  # the last 100 count
    assert not demo.is_solved([500.0] * 100 + [0.0] * 6)  # 106 episodes, last 100 average 470
    assert not demo.is_solved([195.0] * 100)  # CartPole-v0's threshold is not enough


def test_docs_of_the_demo_make_no_v0_claim() -> None:
    for text in (DEMO.read_text(), (REPO / "README.md").read_text(), (REPO / "docs" / "quickstart.md").read_text(),
                 (REPO / "docs" / "index.md").read_text()):
        assert "195" not in text


def test_readme_states_the_measured_run_time_next_to_the_demo_command() -> None:
    readme = (REPO / "README.md").read_text()
    i = readme.index("python examples/dqn_cartpole.py")
    assert re.search(r"\d+ min", readme[i:i + 800]), "no run time near the demo command"


# ---------------------------------------------------------------- pure helpers
def test_linear_schedule_is_clipped() -> None:
    assert demo.linear(1.0, 0.0, -1.0) == 1.0 and demo.linear(1.0, 0.0, 2.0) == 0.0
    assert demo.linear(1.0, 0.04, 0.5) == pytest.approx(0.52)


def test_eval_steps_end_at_the_budget() -> None:
    assert demo.eval_steps(10_000, 2_500) == [2_500, 5_000, 7_500, 10_000]
    assert demo.eval_steps(1_500, 500) == [500, 1_000, 1_500]
    assert demo.eval_steps(1_200, 500) == [500, 1_000, 1_200]


def test_training_curve_is_the_mean_of_the_last_window_episodes_ended_by_each_step() -> None:
    returns, ends = [10.0, 20.0, 30.0, 40.0], [10, 30, 60, 100]
    grid = np.array([5, 10, 29, 30, 99, 100, 200])
    curve = demo.training_curve(returns, ends, grid, window=2)
    assert np.isnan(curve[0])  # no episode has ended yet
    np.testing.assert_allclose(curve[1:], [10.0, 10.0, 15.0, 25.0, 35.0, 35.0])
    # negative control: a different window gives different values
    assert not np.allclose(demo.training_curve(returns, ends, grid, window=3)[4:], curve[4:])


def test_mean_band_over_runs() -> None:
    mean, lo, hi = demo.mean_band([np.array([1.0, np.nan, 3.0]), np.array([3.0, np.nan, 5.0]),
                                   np.array([2.0, np.nan, np.nan])])
    np.testing.assert_allclose(mean, [2.0, np.nan, 4.0])
    np.testing.assert_allclose(lo, [1.0, np.nan, 3.0])
    np.testing.assert_allclose(hi, [3.0, np.nan, 5.0])


def test_parse_overrides_types_values_and_refuses_unknown_names() -> None:
    defaults = {"steps": 1, "lr": 0.1, "stop": True}
    assert demo.parse_overrides(["steps=2e3", "lr=5e-4", "stop=no"], defaults) == {"steps": 2000, "lr": 5e-4,
                                                                                    "stop": False}
    with pytest.raises(KeyError, match="nope"):
        demo.parse_overrides(["nope=1"], defaults)


def test_progress_total_is_every_step_of_every_run() -> None:
    pytest.importorskip("tqdm")
    settings = demo.smoke_settings()
    bar = demo.Progress(2 * settings.steps)
    try:
        assert bar.bar.total == 3_000
        bar.update(250)
        assert bar.bar.n == 250 and bar.started
    finally:
        bar.close()


# ---------------------------------------------------------------- a missing extra
def test_missing_torch_names_the_extra_to_install(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["torch"] = None  # what an uninstalled package looks like to import
        sys.argv = ["dqn_cartpole.py", "--smoke", "--out", {str(tmp_path)!r}]
        runpy.run_path({str(DEMO)!r}, run_name="__main__")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'ReplayTables[examples]'" in proc.stderr and "torch" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- end to end
def test_smoke_run_writes_png_log_and_results(tmp_path: Path) -> None:
    needs_examples_extra()
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(DEMO), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = out / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    log = (out / "dqn_cartpole.log").read_text()
    assert "[smoke]" in log
    for line in ("per     seed 0: final greedy return", "uniform seed 0: final greedy return", "wall time",
                 "every run solved (final greedy mean over 100 episodes >= 475)"):
        assert line in log
    data = json.loads((out / "results.json").read_text())
    settings = data["settings"]
    runs = {r["kind"]: r for r in data["runs"]}
    assert set(runs) == {"per", "uniform"}
    for r in runs.values():
        assert r["steps"] == settings["steps"] == 1_500  # the whole budget, always
        assert r["episodes"] == len(r["returns"]) == len(r["ends"]) > 5
        assert sum(r["returns"]) <= r["steps"]  # CartPole gives 1 per step
        assert r["buffer_stats"]["size"] == r["steps"]  # every step went into the buffer
        assert len(r["greedy_returns"]) == settings["final_episodes"] == 2
        assert r["solved"] is False  # 2 final episodes can never be gymnasium's 100
        assert [e["step"] for e in r["evaluations"]] == [500, 1_000, 1_500]
        assert all(len(e["returns"]) == settings["eval_episodes"] for e in r["evaluations"])
    assert runs["per"]["buffer_stats"]["sampled"] > 0
    bar = proc.stderr.replace("\r", "\n")
    assert "DQN CartPole" in bar and "3000/3000" in bar  # the bar's total is exact and it ends full


def test_bad_override_is_refused(tmp_path: Path) -> None:
    needs_examples_extra()
    proc = subprocess.run([sys.executable, str(DEMO), "--smoke", "--out", str(tmp_path), "--set", "nope=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown hyperparameter 'nope'" in proc.stderr


def test_readme_examples_print_what_the_readme_says() -> None:
    proc = subprocess.run([sys.executable, str(README_EXAMPLES)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:4] == ["(32, 8)", "(32,)", "(32,)", "(32,) (32,) (32,)"]
