"""The original ReplayTables README's two examples run verbatim and print what it says.

The examples are kept below character for character as the original ReplayTables
README has them (the repository keeps these copies; nothing outside it is read).
The only additions allowed are ``import numpy as np`` and arrays for ``x, a, r``.
The repository README's Python blocks (each on its own, as a reader pastes one),
the docs' save/load snippet and ``examples/readme.py`` are run too.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SEED_BASIC = """\
from typing import NamedTuple
from ReplayTables.ReplayBuffer import ReplayBuffer

class Data(NamedTuple):
    x: np.ndarray
    a: np.ndarray
    r: np.ndarray

buffer = ReplayBuffer(
    max_size=100_000,
    structure=Data,
    rng=np.random.default_rng(0),
)

buffer.add(Data(x, a, r))

batch = buffer.sample(32)
print(batch.x.shape) # -> (32, d)
print(batch.a.shape) # -> (32, )
print(batch.r.shape) # -> (32, )
"""

SEED_PER = """\
from typing import NamedTuple
from ReplayTables.PER import PERConfig, PrioritizedReplay

class Data(NamedTuple):
    a: float
    b: float

# all configurables are optional.
config = PERConfig(
    # can also use "mean" mode to place new samples in the middle of the distribution
    # or "given" mode, which requires giving the priority when the sample is added
    new_priority_mode='max',
    # the sampling distribution is a mixture between uniform sampling and the priority
    # distribution. This specifies the weight given to the uniform sampler.
    # Setting to 1 reverts this back to an inefficient form of standard uniform replay.
    uniform_probability=1e-3,
    # this implementation assume priorities are positive. Can scale priorities by raising to
    # some power. Default is `priority**(1/2)`
    priority_exponent=0.5,
    # if `new_priority_mode` is 'max', then the buffer tracks the highest seen priority.
    # this can cause accidental saturation if outlier priorities are observed. This provides
    # an exponential decay of the max in order to prevent permanent saturation.
    max_decay=1,
)

# if no config is given, defaults to original PER parameters
buffer = PrioritizedReplay(
    max_size=100_000,
    structure=Data,
    rng=np.random.default_rng(0),
    config=config,
)

buffer.add(Data(a=1, b=2))

# if `new_priority_mode` is 'given':
buffer.add(Data(a=1, b=2), priority=1.3)

batch = buffer.sample(32)
"""


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def run(code: str, prelude: str = "import numpy as np\n") -> tuple[dict[str, Any], list[str]]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(prelude + code, "<readme example>", "exec", dont_inherit=True), namespace)
    return namespace, out.getvalue().splitlines()


@pytest.mark.parametrize("d", [1, 5, 17])
def test_basic_example_prints_the_readme_shapes(d: int) -> None:
    prelude = (f"import numpy as np\nd = {d}\n"
               "x, a, r = np.random.default_rng(1).normal(size=d), np.array(3), np.array(0.5)\n")
    ns, printed = run(SEED_BASIC, prelude)
    assert printed == [f"(32, {d})", "(32,)", "(32,)"]  # the README writes (32, ) for numpy's (32,)
    batch, buffer = ns["batch"], ns["buffer"]
    assert len(buffer) == 1 and buffer.max_size == 100_000
    np.testing.assert_array_equal(batch.x, np.tile(ns["x"], (32, 1)))
    assert (batch.a == 3).all() and (batch.r == 0.5).all()
    assert batch.ids.tolist() == [0] * 32
    np.testing.assert_array_equal(batch.weights, np.ones(32))
    assert isinstance(batch.data, ns["Data"])


def test_per_example_runs_and_follows_the_rules() -> None:
    ns, printed = run(SEED_PER)
    assert printed == []  # the example prints nothing
    buffer, batch = ns["buffer"], ns["batch"]
    assert len(buffer) == 2
    assert batch.a.shape == (32,) and batch.b.shape == (32,) and (batch.a == 1).all() and (batch.b == 2).all()
    assert batch.ids.dtype == np.int64 and set(batch.ids.tolist()) <= {0, 1}
    # the first item got the initial maximum 1.0; the explicit priority gives q = 1.3 ** 0.5
    np.testing.assert_allclose(buffer.priorities([0, 1]), [1.0, 1.3**0.5], rtol=1e-15)
    total = 1.0 + 1.3**0.5
    p = 0.999 * np.array([1.0, 1.3**0.5]) / total + 0.001 / 2
    np.testing.assert_allclose(batch.weights, (p[batch.ids] / p.min()) ** -0.4, rtol=1e-12)


def run_alone(block: str, where: Path, name: str) -> tuple[dict[str, Any], list[str]]:
    """One Markdown code block in a fresh namespace, run in ``where`` (it may write files there)."""
    cwd = os.getcwd()
    os.chdir(where)
    try:
        namespace: dict[str, Any] = {"__name__": name}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"<{name}>", "exec", dont_inherit=True), namespace)
    finally:
        os.chdir(cwd)
    return namespace, out.getvalue().splitlines()


def test_repository_readme_blocks_each_run_on_their_own(tmp_path: Path) -> None:
    """Every Python block of the README runs as it stands, in a fresh namespace (as a reader pastes one)."""
    blocks = python_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 4
    outputs = []
    for k, block in enumerate(blocks):
        where = tmp_path / f"block{k}"
        where.mkdir()
        outputs.append(run_alone(block, where, "readme")[1])
    assert outputs[0][:3] == ["(32, 4)", "(32,)", "(32,)"]


def save_load_blocks(markdown: str) -> list[str]:
    """The Python blocks of a page that call ``ReplayTables.load``."""
    return [b for b in python_blocks(markdown) if "ReplayTables.load(" in b]


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_save_load_snippet_is_standalone_and_round_trips(page: str, tmp_path: Path) -> None:
    blocks = save_load_blocks((REPO / page).read_text())
    assert len(blocks) == 1, page
    ns, printed = run_alone(blocks[0], tmp_path, "snippet")
    buffer, same = ns["buffer"], ns["same"]
    assert type(same) is type(buffer) and len(same) == len(buffer) > 0
    np.testing.assert_array_equal(same.sample(16).ids, buffer.sample(16).ids)  # rng state restored too
    assert printed and printed[-1].startswith(type(buffer).__name__)


def test_examples_readme_script() -> None:
    script = REPO / "examples" / "readme.py"
    assert script.is_file(), "the README points users at examples/readme.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "(32," in result.stdout
