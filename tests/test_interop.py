"""Batch.to_torch / Batch.to_jax: dtypes, shapes, and memory shared where promised.

torch (pinned 2.13.0, CPU) and JAX (CPU) are installed in CI for these tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ReplayTables.engine.schema import FieldSpec
from ReplayTables.errors import ConfigError, ReplayTablesError, SchemaError
from ReplayTables.interop import JAX_ALIGNMENT, FrameworkBatch, array_to_jax, array_to_torch
from ReplayTables.PER import PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")


class Item(NamedTuple):
    obs: np.ndarray  # float32 (3,)
    frame: np.ndarray  # uint8 (2, 2)
    action: np.ndarray  # int64 scalar
    reward: np.ndarray  # float64 scalar
    done: np.ndarray  # bool scalar


N = 50


def filled(cls: type = ReplayBuffer, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = cls(max_size=100, structure=Item, rng=np.random.default_rng(seed))
    buf.add_batch(Item(rng.standard_normal((N, 3)).astype(np.float32),
                       rng.integers(0, 255, (N, 2, 2), dtype=np.uint8),
                       rng.integers(0, 4, N).astype(np.int64),
                       rng.standard_normal(N),
                       rng.random(N) < 0.3))
    return buf


def shares(t: object, a: np.ndarray) -> bool:
    return t.data_ptr() == a.ctypes.data  # type: ignore[attr-defined]


# ---------------------------------------------------------------- torch
def test_torch_fields_share_memory_and_keep_dtype_shape_strides() -> None:
    batch = filled().sample(16)
    tb = batch.to_torch()
    assert isinstance(tb, FrameworkBatch) and tb.framework == "torch"
    expected = {"obs": torch.float32, "frame": torch.uint8, "action": torch.int64, "reward": torch.float64,
                "done": torch.bool}
    for name, a in batch.fields.items():
        t = getattr(tb, name)
        assert t.dtype == expected[name]
        assert tuple(t.shape) == a.shape
        assert not a.flags.c_contiguous  # packed rows: each field is a strided view
        assert tuple(s * a.itemsize for s in t.stride()) == a.strides
        assert shares(t, a)
        np.testing.assert_array_equal(t.numpy(), a)
    # shared memory: a write through the tensor is seen by the numpy array
    tb.obs[0, 0] = 123.0
    assert batch.obs[0, 0] == 123.0
    assert tb.weights.dtype == torch.float64 and shares(tb.weights, batch.weights)
    # ids: an int64 CPU tensor over the batch's own ids (no copy), for update_priorities
    assert isinstance(tb.ids, torch.Tensor) and tb.ids.dtype == torch.int64 and tb.ids.device.type == "cpu"
    assert shares(tb.ids, batch.ids) and tb.ids.tolist() == batch.ids.tolist()
    assert len(tb) == 16


def test_torch_data_is_the_users_structure() -> None:
    tb = filled().sample(4).to_torch()
    data = tb.data
    assert isinstance(data, Item)
    assert data.obs is tb.obs and data.done is tb.done
    assert set(tb.fields) == set(Item._fields)
    assert "FrameworkBatch[torch](n=4" in repr(tb)


def test_torch_per_weights_and_probabilities() -> None:
    buf = filled(PrioritizedReplay)
    buf.update_priorities(np.arange(N), np.linspace(0.1, 5.0, N))
    batch = buf.sample(32)
    tb = batch.to_torch()
    np.testing.assert_array_equal(tb.weights.numpy(), batch.weights)
    np.testing.assert_array_equal(tb.probabilities.numpy(), batch.probabilities)
    assert tb.weights.dtype == torch.float64
    # ids of the converted batch go straight back to the buffer
    assert buf.update_priorities(tb.ids, np.ones(32)) == 32


def test_torch_device_cpu_shares_and_other_device_copies() -> None:
    batch = filled().sample(8)
    assert shares(batch.to_torch(device="cpu").obs, batch.obs)
    meta = batch.to_torch(device="meta")  # a device without data: proves the transfer path runs
    assert meta.obs.device.type == "meta" and tuple(meta.obs.shape) == (8, 3)
    assert meta.weights.device.type == "meta"
    assert meta.ids.device.type == "cpu" and meta.ids.tolist() == batch.ids.tolist()  # ids stay on the CPU


def test_torch_read_only_and_byte_swapped_arrays_are_copied_without_warning() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    a.flags.writeable = False
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        t = array_to_torch("x", a)
    assert not shares(t, a)
    np.testing.assert_array_equal(t.numpy(), a)
    b = np.arange(4, dtype=">i4")
    tb = array_to_torch("y", b)
    assert tb.dtype == torch.int32 and tb.tolist() == [0, 1, 2, 3]


def test_torch_unsupported_dtype_is_a_schema_error_naming_the_field() -> None:
    with pytest.raises(SchemaError, match="when"):
        array_to_torch("when", np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(SchemaError, match="ids"):
        array_to_torch("ids", [1, 2, 3])  # type: ignore[arg-type]


def test_nested_dict_structure_converts_to_nested_dicts() -> None:
    structure = {"obs": {"pos": FieldSpec((2,), np.float32), "vel": FieldSpec((2,), np.float32)},
                 "action": FieldSpec((), np.int64)}
    buf = ReplayBuffer(max_size=10, structure=structure, rng=np.random.default_rng(0))
    for i in range(5):
        buf.add({"obs": {"pos": np.full(2, i, np.float32), "vel": np.zeros(2, np.float32)},
                 "action": np.int64(i)})
    batch = buf.sample(6)
    tb = batch.to_torch()
    assert set(tb.obs) == {"pos", "vel"}
    assert shares(tb.obs["pos"], batch.fields["obs/pos"])
    assert tb.data["action"].dtype == torch.int64
    jb = batch.to_jax()
    np.testing.assert_array_equal(np.asarray(jb.obs["pos"]), batch.fields["obs/pos"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["f4", "f8", "i1", "i4", "i8", "u1", "?"]),
                          st.lists(st.integers(1, 3), max_size=2)), min_size=1, max_size=4),
       st.integers(0, 9))
def test_any_layout_converts_with_dtype_shape_and_shared_memory(fields: list, n: int) -> None:
    structure = {f"f{i}": FieldSpec(tuple(shape), np.dtype(dt)) for i, (dt, shape) in enumerate(fields)}
    buf = ReplayBuffer(max_size=8, structure=structure, rng=np.random.default_rng(1))
    rng = np.random.default_rng(2)
    items = {k: (rng.random((4, *s.shape)) * 100).astype(s.dtype) for k, s in structure.items()}
    buf.add_batch(items)
    batch = buf.sample(n)
    tb = batch.to_torch()
    jb = batch.to_jax()
    for name, a in batch.fields.items():
        t = tb.fields[name]
        assert str(t.dtype) == "torch." + a.dtype.name
        assert tuple(t.shape) == a.shape == (n, *structure[name].shape)
        if a.size:
            assert shares(t, a)
        j = jb.fields[name]
        assert j.shape == a.shape
        assert np.dtype(j.dtype) == np.dtype(jax.dtypes.canonicalize_dtype(a.dtype))
        np.testing.assert_array_equal(np.asarray(j), a.astype(j.dtype))


# ---------------------------------------------------------------- jax
def test_jax_values_shapes_and_canonical_dtypes() -> None:
    batch = filled().sample(16)
    jb = batch.to_jax()
    assert jb.framework == "jax"
    x64 = bool(jax.config.jax_enable_x64)
    assert jb.obs.dtype == np.float32 and jb.frame.dtype == np.uint8 and jb.done.dtype == np.bool_
    assert jb.action.dtype == (np.int64 if x64 else np.int32)  # JAX's own rule without x64
    assert jb.reward.dtype == (np.float64 if x64 else np.float32)
    for name, a in batch.fields.items():
        j = getattr(jb, name)
        assert j.shape == a.shape
        np.testing.assert_array_equal(np.asarray(j), a.astype(j.dtype))
    assert jb.weights.shape == (16,)
    assert jb.ids is batch.ids  # numpy int64: JAX without x64 would narrow ids to int32


def test_jax_adopts_aligned_contiguous_arrays_without_copy() -> None:
    raw = np.zeros(4 * 8 + JAX_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % JAX_ALIGNMENT
    a = raw[start:start + 32].view(np.float32).reshape(4, 2)
    a[:] = np.arange(8, dtype=np.float32).reshape(4, 2)
    j = array_to_jax("a", a)
    assert j.unsafe_buffer_pointer() == a.ctypes.data  # zero-copy: JAX owns a view of our memory
    np.testing.assert_array_equal(np.asarray(j), a)


def test_jax_strided_field_is_copied_once_into_aligned_memory() -> None:
    batch = filled().sample(8)
    a = batch.obs
    assert not a.flags.c_contiguous
    j = array_to_jax("obs", a)
    assert j.unsafe_buffer_pointer() != a.ctypes.data
    assert j.unsafe_buffer_pointer() % JAX_ALIGNMENT == 0
    np.testing.assert_array_equal(np.asarray(j), a)


def test_jax_unsupported_dtype_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="when"):
        array_to_jax("when", np.array(["2020-01-01"], dtype="datetime64[D]"))


def test_jax_x64_keeps_every_dtype() -> None:
    code = textwrap.dedent("""
        import numpy as np
        from typing import NamedTuple
        from ReplayTables.ReplayBuffer import ReplayBuffer
        class I(NamedTuple):
            a: np.ndarray
            b: np.ndarray
        buf = ReplayBuffer(max_size=8, structure=I, rng=np.random.default_rng(0))
        buf.add_batch(I(np.arange(4, dtype=np.int64), np.linspace(0, 1, 4)))
        jb = buf.sample(5).to_jax()
        print(jb.a.dtype, jb.b.dtype, jb.weights.dtype)
    """)
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["int64", "float64", "float64"]


def test_importing_and_sampling_loads_no_framework() -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import ReplayTables, ReplayTables.interop, ReplayTables.batch
        from ReplayTables.ReplayBuffer import ReplayBuffer
        buf = ReplayBuffer(max_size=4, rng=np.random.default_rng(0))
        buf.add({"x": np.zeros(2, np.float32)})
        buf.sample(2)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "jax", "jaxlib")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- a missing framework
@pytest.mark.parametrize(("method", "module", "extra"), [("to_torch", "torch", "torch"), ("to_jax", "jax", "jax")])
def test_missing_framework_is_a_config_error_naming_the_extra(method: str, module: str, extra: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    batch = filled().sample(4)
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    with pytest.raises(ConfigError) as info:
        getattr(batch, method)()
    assert info.value.field == f"Batch.{method}" and info.value.value == module
    assert f"pip install 'ReplayTables[{extra}]'" in str(info.value)
    assert isinstance(info.value, ReplayTablesError)
