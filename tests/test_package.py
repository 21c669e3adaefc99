"""The package's public surface: top-level names, every import form, a light import, int seeds.

Import-order effects only show in a fresh interpreter, so those checks run in
subprocesses (``fresh``), each starting from an empty ``sys.modules``.
"""
from __future__ import annotations

import copy
import importlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import ReplayTables
from ReplayTables.errors import ConfigError, ReplayTablesError
from ReplayTables.optional import require

SRC = str(Path(ReplayTables.__file__).resolve().parents[1])


class Item(NamedTuple):
    x: np.ndarray
    a: np.ndarray


def fresh(code: str) -> Any:
    """Run ``code`` in a new interpreter; it prints one JSON value, which is returned."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- what import ReplayTables costs
def test_import_loads_no_heavy_module_and_no_front_end() -> None:
    loaded = fresh("""
        import json, sys
        import ReplayTables
        print(json.dumps(sorted(sys.modules)))
    """)
    heavy = {m.split(".")[0] for m in loaded} & {"numba", "torch", "jax", "ray", "scipy", "zstandard",
                                                    "gymnasium", "matplotlib", "rich", "tqdm"}
    assert heavy == set(), heavy
    # the front ends load on first use, not at import
    assert "ReplayTables.ReplayBuffer" not in loaded and "ReplayTables.trajectory" not in loaded
    # negative control: the same probe sees numba once a module that imports it is loaded
    assert "numba" in fresh("""
        import json, sys
        import numba, ReplayTables
        print(json.dumps(sorted(sys.modules)))
    """)


def test_using_a_class_from_the_top_level_still_imports_no_numba_torch_jax_or_ray() -> None:
    loaded = fresh("""
        import json, sys
        from ReplayTables import ReplayBuffer, PERConfig, TrajectoryReplay, SequenceConfig, Batch
        print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
    """)
    assert not {"numba", "torch", "jax", "ray"} & set(loaded)


# ---------------------------------------------------------------- names
def test_all_lists_the_public_names_and_each_resolves() -> None:
    expected = {"ReplayBuffer", "PrioritizedReplay", "PERConfig", "TrajectoryReplay", "SequenceConfig", "Batch",
                "load", "ReplayTablesError", "SchemaError", "PriorityError", "StaleIdError", "EmptyBufferError",
                "EpisodeError", "ConfigError", "CheckpointError", "RateLimitTimeout", "BufferClosedError",
                "SharedMemoryError", "attach", "__version__"}
    assert set(ReplayTables.__all__) == expected
    assert len(ReplayTables.__all__) == len(set(ReplayTables.__all__))
    assert set(ReplayTables._LAZY) <= set(ReplayTables.__all__)  # every lazy name is public
    for name in ReplayTables.__all__:
        assert getattr(ReplayTables, name) is not None
    from ReplayTables.batch import Batch
    from ReplayTables.PER import PERConfig, PrioritizedReplay
    from ReplayTables.ReplayBuffer import ReplayBuffer
    from ReplayTables.trajectory import SequenceConfig, TrajectoryReplay
    assert (ReplayTables.ReplayBuffer, ReplayTables.PrioritizedReplay, ReplayTables.PERConfig, ReplayTables.Batch,
            ReplayTables.TrajectoryReplay, ReplayTables.SequenceConfig) == (
        ReplayBuffer, PrioritizedReplay, PERConfig, Batch, TrajectoryReplay, SequenceConfig)
    assert issubclass(ReplayTables.ConfigError, ReplayTables.ReplayTablesError)


def test_dir_shows_the_public_names_and_no_stray_ones() -> None:
    names = dir(ReplayTables)
    assert set(ReplayTables.__all__) <= set(names)
    public = {n for n in names if not n.startswith("_")}
    assert public == set(ReplayTables.__all__) - {"__version__"}
    for stray in ("Any", "annotations", "os", "sys", "importlib", "types"):
        assert stray not in names
        with pytest.raises(AttributeError):
            getattr(ReplayTables, stray)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from ReplayTables import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(ReplayTables.__all__)


def test_unknown_attribute_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        ReplayTables.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from ReplayTables import no_such_name", {})


# ---------------------------------------------------------------- the shared name ReplayBuffer
IMPORT_FORMS = {
    "from package": "from ReplayTables import ReplayBuffer as C",
    "from module": "from ReplayTables.ReplayBuffer import ReplayBuffer as C",
    "import module, attribute path": "import ReplayTables.ReplayBuffer\nC = ReplayTables.ReplayBuffer.ReplayBuffer",
    "import module as m": "import ReplayTables.ReplayBuffer as m\nC = m.ReplayBuffer",
    "package attribute": "import ReplayTables\nC = ReplayTables.ReplayBuffer",
}
# each form runs first in a fresh interpreter, then every form runs after it


@pytest.mark.parametrize("first", list(IMPORT_FORMS))
def test_every_import_form_gives_the_class_whatever_ran_before(first: str) -> None:
    lines = ["import json, sys",
             f"exec({IMPORT_FORMS[first]!r}, first := {{}})",
             'cls = sys.modules["ReplayTables.ReplayBuffer"].ReplayBuffer',
             'got = {"first": first["C"] is cls}']
    lines += [f"exec({code!r}, ns := {{}}); got[{name!r}] = ns['C'] is cls" for name, code in IMPORT_FORMS.items()]
    lines += ["import ReplayTables, ReplayTables.PER",
              'got["PER"] = ReplayTables.PrioritizedReplay is sys.modules["ReplayTables.PER"].PrioritizedReplay',
              'got["instance"] = isinstance(ReplayTables.ReplayBuffer(4, rng=0), cls)',
              "print(json.dumps(got))"]
    result = fresh("\n".join(lines))
    assert len(result) == len(IMPORT_FORMS) + 3 and all(result.values()), result


def test_import_module_as_m_binds_the_class_and_the_module_stays_reachable() -> None:
    """``import ReplayTables.ReplayBuffer as m`` gives the class (documented in the package docstring)."""
    import ReplayTables.ReplayBuffer as m

    module = sys.modules["ReplayTables.ReplayBuffer"]
    assert isinstance(m, type) and m is module.ReplayBuffer
    assert m.ReplayBuffer is m and m.Batch is module.Batch  # the module's names, through the class
    assert importlib.import_module("ReplayTables.ReplayBuffer") is module
    assert "class" in (ReplayTables.__doc__ or "") and "import ReplayTables.ReplayBuffer as m" in (
        ReplayTables.__doc__ or "")


def test_module_path_aliases_are_on_that_class_only() -> None:
    from ReplayTables import PrioritizedReplay, ReplayBuffer

    buffer = ReplayBuffer(4, Item, rng=0)
    assert not hasattr(buffer, "ReplayBuffer") and not hasattr(buffer, "Batch")
    assert not hasattr(PrioritizedReplay, "ReplayBuffer")
    assert not hasattr(PrioritizedReplay(4, Item, rng=0), "Batch")


def test_dotted_path_tools_resolve_the_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's monkeypatch (and Hydra, mock) walk ``ReplayTables.ReplayBuffer.ReplayBuffer`` by getattr."""
    import pkgutil

    from ReplayTables import ReplayBuffer

    assert pkgutil.resolve_name("ReplayTables.ReplayBuffer.ReplayBuffer") is ReplayBuffer
    assert pkgutil.resolve_name("ReplayTables.ReplayBuffer:ReplayBuffer") is ReplayBuffer
    monkeypatch.setattr("ReplayTables.ReplayBuffer.ReplayBuffer.__len__", lambda self: 42)
    assert len(ReplayBuffer(4, Item, rng=0)) == 42


def test_pickle_keeps_the_module_path_and_round_trips() -> None:
    from ReplayTables import PrioritizedReplay, ReplayBuffer

    assert ReplayBuffer.__module__ == "ReplayTables.ReplayBuffer"
    for cls in (ReplayBuffer, PrioritizedReplay):
        buffer = cls(8, Item, rng=0)
        buffer.add_batch(Item(np.arange(10.0).reshape(5, 2), np.arange(5)))
        data = pickle.dumps(buffer)
        assert b"ReplayTables.ReplayBuffer" in data or b"ReplayTables.PER" in data
        clone = pickle.loads(data)
        assert type(clone) is cls
        np.testing.assert_array_equal(clone.sample(6).a, copy.deepcopy(buffer).sample(6).a)


def test_pickle_in_a_fresh_process_that_only_imported_the_package(tmp_path: Path) -> None:
    from ReplayTables import ReplayBuffer

    buffer = ReplayBuffer(8, None, rng=3)
    buffer.add({"x": np.arange(2.0)})
    path = tmp_path / "b.pkl"
    path.write_bytes(pickle.dumps(buffer))
    assert fresh(f"""
        import json, pickle, ReplayTables
        b = pickle.loads(open({str(path)!r}, "rb").read())
        print(json.dumps([type(b).__module__, type(b).__name__, len(b)]))
    """) == ["ReplayTables.ReplayBuffer", "ReplayBuffer", 1]


def test_top_level_load_restores_the_same_buffer(tmp_path: Path) -> None:
    buffer = ReplayTables.PrioritizedReplay(16, Item, rng=5)
    buffer.add_batch(Item(np.arange(12.0).reshape(6, 2), np.arange(6)), priorities=np.arange(1.0, 7.0))
    buffer.save(tmp_path / "ckpt")
    same = ReplayTables.load(tmp_path / "ckpt")
    assert type(same) is ReplayTables.PrioritizedReplay and len(same) == 6
    np.testing.assert_array_equal(same.sample(8).ids, buffer.sample(8).ids)


# ---------------------------------------------------------------- rng: an int seed
def _trajectory(rng: Any) -> Any:
    from ReplayTables import TrajectoryReplay

    buffer = TrajectoryReplay(64, (2,), np.float32, rng=rng)
    buffer.begin_episode(np.zeros(2, np.float32))
    for t in range(20):
        buffer.add_step(t % 2, 1.0, np.full(2, t, np.float32), terminated=False, truncated=False)
    return buffer


@pytest.mark.parametrize("seed", [0, 7, np.int64(11), 2**40])
def test_an_int_seed_means_default_rng_of_that_seed(seed: Any) -> None:
    items = Item(np.arange(40.0).reshape(20, 2), np.arange(20))
    for cls in (ReplayTables.ReplayBuffer, ReplayTables.PrioritizedReplay):
        by_seed, by_generator = cls(32, Item, rng=seed), cls(32, Item, rng=np.random.default_rng(int(seed)))
        by_seed.add_batch(items)
        by_generator.add_batch(items)
        np.testing.assert_array_equal(by_seed.sample(50).ids, by_generator.sample(50).ids)
    np.testing.assert_array_equal(_trajectory(seed).sample(30).ids,
                                  _trajectory(np.random.default_rng(int(seed))).sample(30).ids)


def test_different_seeds_give_different_samples() -> None:
    """Negative control for the test above: the seed is really used."""
    a, b = ReplayTables.ReplayBuffer(32, Item, rng=0), ReplayTables.ReplayBuffer(32, Item, rng=1)
    for buffer in (a, b):
        buffer.add_batch(Item(np.arange(40.0).reshape(20, 2), np.arange(20)))
    assert a.sample(50).ids.tolist() != b.sample(50).ids.tolist()


def test_a_seeded_buffer_checkpoints_and_continues_identically(tmp_path: Path) -> None:
    buffer = ReplayTables.PrioritizedReplay(32, Item, rng=0)
    buffer.add_batch(Item(np.arange(40.0).reshape(20, 2), np.arange(20)))
    buffer.sample(5)
    buffer.save(tmp_path / "c")
    same = ReplayTables.load(tmp_path / "c")
    np.testing.assert_array_equal(same.sample(40).ids, buffer.sample(40).ids)
    traj = _trajectory(3)
    traj.save(tmp_path / "t")
    np.testing.assert_array_equal(ReplayTables.load(tmp_path / "t").sample(10).ids, traj.sample(10).ids)


@pytest.mark.parametrize("rng", [True, False, np.bool_(True), -1, 1.5, "0", np.random.RandomState(0)])
def test_bool_negative_and_other_types_are_refused(rng: Any) -> None:
    from ReplayTables import TrajectoryReplay

    for make in (lambda: ReplayTables.ReplayBuffer(4, Item, rng=rng),
                 lambda: ReplayTables.PrioritizedReplay(4, Item, rng=rng),
                 lambda: TrajectoryReplay(16, (2,), rng=rng)):
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == "rng" and "int seed" in info.value.expected


# ---------------------------------------------------------------- optional dependencies
def test_require_names_the_extra_of_a_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ConfigError) as info:
        require("tqdm", feature="the demo")
    assert isinstance(info.value, ReplayTablesError) and info.value.field == "the demo"
    assert "pip install 'ReplayTables[examples]'" in str(info.value)
    with pytest.raises(ConfigError, match="pip install not_a_real_module_xyz"):
        require("not_a_real_module_xyz")  # no extra for it: the package itself is named
    assert require("json") is json  # an installed module is returned as it is
