"""The runner that puts the long stress tests in child processes reports what the children saw:
a passing child lets its test pass, a failing or missing one fails it with the child's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from stress_children import StressChildren


def children_for(tmp_path: Path, nodeids: list[str]) -> StressChildren:
    (tmp_path / "test_probe.py").write_text(
        "def test_passes():\n    pass\n\n\ndef test_fails():\n    assert 1 + 1 == 3, 'the child saw a wrong sum'\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the probe's own rootdir, away from the project's conftest
    logs = tmp_path / "logs"
    logs.mkdir()
    return StressChildren(nodeids, tmp_path, logs)


def test_a_passing_child_lets_its_test_pass(tmp_path: Path) -> None:
    children = children_for(tmp_path, ["test_probe.py::test_passes"])
    try:
        children.wait("test_probe.py::test_passes")
    finally:
        children.stop()


def test_a_failing_child_fails_its_test_with_the_childs_output(tmp_path: Path) -> None:
    children = children_for(tmp_path, ["test_probe.py::test_passes", "test_probe.py::test_fails"])
    try:
        with pytest.raises(pytest.fail.Exception, match="the child saw a wrong sum"):
            children.wait("test_probe.py::test_fails")
        children.wait("test_probe.py::test_passes")
    finally:
        children.stop()


def test_a_test_that_matches_nothing_in_the_child_fails(tmp_path: Path) -> None:
    children = children_for(tmp_path, ["test_probe.py::test_renamed"])
    try:
        with pytest.raises(pytest.fail.Exception, match="ended with code"):
            children.wait("test_probe.py::test_renamed")
        with pytest.raises(AssertionError, match="never started"):
            children.wait("test_probe.py::test_passes")
    finally:
        children.stop()
