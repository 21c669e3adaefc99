"""`replaytables bench`: smoke runs at tiny capacities, argument errors, the peer harness hook.

Needs the bench extra (rich, matplotlib), which CI installs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ReplayTables.cli import main

pytest.importorskip("rich")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_quick_runs_every_workload_and_writes_png_and_json(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--capacities", "600", "3000", "--out", str(out)]) == 0
    png = out / "bench.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000
    data = json.loads((out / "bench.json").read_text())
    got = {(r["workload"], r["capacity"]) for r in data["results"]}
    for w in ("W1", "W2", "W3", "W4"):
        assert {(w, 600), (w, 3000)} <= got
    # W5/SEQ run when the step-stream front end is importable, else they are listed with the reason
    try:
        import ReplayTables.trajectory  # noqa: F401
        assert {("W5", 600), ("SEQ", 3000)} <= got
    except ImportError:
        assert "W5" in data["skipped"] and "trajectory" in data["skipped"]["W5"]
    for r in data["results"]:
        assert r["us_per_op"] > 0 and r["ops"] >= 1
    assert data["meta"]["repeats"] == 1 and data["meta"]["scale"] == 0.01
    text = capsys.readouterr().out
    assert "W1" in text and "capacity 3,000" in text and "bench.png" in text


def test_bench_subset_and_w5_size_limit(tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert main(["bench", "--quick", "--workloads", "w3", "W5", "--capacities", "1000", "250000",
                 "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert {r["workload"] for r in data["results"]} <= {"W3", "W5"}
    assert ("W3", 250000) in {(r["workload"], r["capacity"]) for r in data["results"]}
    assert not any(r["workload"] == "W5" and r["capacity"] == 250000 for r in data["results"])
    assert any("250,000" in k for k in data["skipped"])


@pytest.mark.parametrize("argv", [
    ["bench", "--capacities", "0"],
    ["bench", "--capacities", "ten"],
    ["bench", "--workloads", "W9"],
    ["bench", "--scale", "-1"],
    ["bench", "--nonsense"],
])
def test_bad_arguments_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_bench_extra_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # what an uninstalled package looks like to import
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ReplayTables[bench]'" in err and "rich" in err
    assert not (tmp_path / "bench.json").exists()


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "bench" in capsys.readouterr().out


def test_console_script_is_installed_and_light() -> None:
    out = subprocess.run(["replaytables", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ReplayTables ")
    code = ("import sys, ReplayTables.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy','rich','matplotlib','torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_peers_without_venvs_says_how_to_create_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    harness = fake_harness(tmp_path)
    monkeypatch.setenv("PEER_VENV_ROOT", str(tmp_path / "no-venvs"))
    rc = main(["bench", "--peers", "--harness", str(harness), "--peer-config", str(harness / "peers.json"),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    text = capsys.readouterr().out
    assert "setup_peers.sh" in text and str(tmp_path / "no-venvs") in text
    assert not (tmp_path / "called.json").exists()


def test_peers_missing_harness_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--peers", "--harness", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "--harness" in capsys.readouterr().out


def test_peers_never_looks_outside_the_repository_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A harness next to the working directory (where ``../shared/bench`` used to be looked for) is ignored."""
    fake_harness(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "harness").rename(tmp_path / "shared" / "bench")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("REPLAYTABLES_PEER_HARNESS", raising=False)
    assert main(["bench", "--peers", "--out", str(tmp_path / "o")]) == 2
    text = capsys.readouterr().out
    assert "--harness" in text and "REPLAYTABLES_PEER_HARNESS" in text and "../shared" not in text
    assert not (tmp_path / "called.json").exists()


def test_peers_harness_from_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    harness = fake_harness(tmp_path)
    venvs = tmp_path / "venvs"
    (venvs / "venv-a" / "bin").mkdir(parents=True)
    (venvs / "venv-a" / "bin" / "python").write_text("")
    monkeypatch.setenv("PEER_VENV_ROOT", str(venvs))
    monkeypatch.setenv("REPLAYTABLES_PEER_HARNESS", str(harness))
    assert main(["bench", "--peers", "--workloads", "W3", "--peer-config", str(harness / "peers.json"),
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "called.json").read_text())[-1] == "W3"


def test_peers_runs_the_harness_for_peers_whose_venv_exists(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    harness = fake_harness(tmp_path)
    venvs = tmp_path / "venvs"
    (venvs / "venv-a" / "bin").mkdir(parents=True)
    (venvs / "venv-a" / "bin" / "python").write_text("")
    monkeypatch.setenv("PEER_VENV_ROOT", str(venvs))
    rc = main(["bench", "--peers", "--workloads", "W3", "W4", "SEQ", "--harness", str(harness / "peers.py"),
               "--peer-config", str(harness / "peers.json"), "--out", str(tmp_path / "o")])
    assert rc == 0
    argv = json.loads((tmp_path / "called.json").read_text())
    assert argv[argv.index("--peers") + 1:argv.index("--workloads")] == ["a"]  # b has no venv
    assert argv[argv.index("--workloads") + 1:] == ["W3", "W4"]  # SEQ is not a harness workload
    config = json.loads(Path(argv[argv.index("--config") + 1]).read_text())
    adapters = {p["name"]: p["adapter"] for p in config["peers"]}
    assert adapters["a"] == str((harness / "adapters" / "a.py").resolve())  # made absolute
    assert adapters["b"] == "numpy_ref"  # a harness adapter name is left alone
    assert argv[argv.index("--venv-root") + 1] == str(venvs)


def fake_harness(tmp_path: Path) -> Path:
    """A stand-in harness whose driver records the arguments it was called with."""
    h = tmp_path / "harness"
    h.mkdir()
    (h / "setup_peers.sh").write_text("#!/bin/sh\n")
    (h / "peers.py").write_text(
        "import json, sys\n"
        f"json.dump(sys.argv[1:], open({str(tmp_path / 'called.json')!r}, 'w'))\n")
    (h / "peers.json").write_text(json.dumps({"peers": [
        {"name": "a", "venv": "venv-a", "adapter": "adapters/a.py"},
        {"name": "b", "venv": "venv-b", "adapter": "numpy_ref"}]}))
    return h


def test_module_runs_as_script() -> None:
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "ReplayTables.cli", "bench", "--help"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0 and "--capacities" in out.stdout and "--peers" in out.stdout
