"""Hand a sampled :class:`~ReplayTables.batch.Batch` to torch or JAX.

Neither framework is imported until a conversion is asked for, so
``import ReplayTables`` stays numpy-only.

Where memory is shared and where it is copied:

* **torch** (:func:`to_torch`): every field, ``weights`` and ``probabilities`` go
  through ``torch.from_numpy``, which shares memory with the batch. The packed
  storage makes each sampled field a *strided* view into one gathered block of rows
  (row stride = the row size, a multiple of the field's item size); torch
  represents those strides as they are, so no copy happens. A copy happens only
  for a read-only array (torch cannot mark a tensor read-only, and writing
  through it could crash), a non-native byte order, or when ``device`` is not the
  CPU (the transfer itself).
* **JAX** (:func:`to_jax`): JAX adopts host memory through DLPack only when it is
  compact (C-contiguous) and 64-byte aligned, so each strided field is first
  copied once into a fresh, aligned, contiguous array that JAX then adopts
  without a second copy. Arrays that are already compact and aligned are not
  copied. 64-bit fields follow JAX's configuration: with ``jax_enable_x64`` off
  (JAX's default) JAX has no 64-bit types and they arrive as their 32-bit
  counterparts, as any JAX array would; with it on, every dtype is kept.

``ids``: with torch they become an ``int64`` tensor that shares memory with the
batch's ids and stays on the CPU whatever ``device`` is (ids go back to the buffer,
``buffer.update_priorities(tb.ids, ...)``, which takes a CPU tensor as it is). With
JAX they stay a numpy ``int64`` array: JAX without ``jax_enable_x64`` would narrow
them to ``int32``, and an id is not something a model computes with.

A framework that is not installed gives a :class:`~ReplayTables.errors.ConfigError`
naming the extra that installs it (``pip install 'ReplayTables[torch]'``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ReplayTables.batch import FieldBatch
from ReplayTables.errors import SchemaError
from ReplayTables.optional import require

if TYPE_CHECKING:
    from ReplayTables.batch import Batch

__all__ = ["FrameworkBatch", "to_jax", "to_torch"]

#: JAX adopts CPU buffers without copying only at this alignment (bytes).
JAX_ALIGNMENT = 64


class FrameworkBatch(FieldBatch):
    """A :class:`~ReplayTables.batch.Batch` whose arrays are torch tensors or JAX arrays.

    It has the same shape as the batch it came from: one attribute per field of the
    structure (``tb.obs``), ``weights`` and ``probabilities`` (converted), ``ids``
    (for ``update_priorities``: an ``int64`` CPU tensor with torch, numpy ``int64``
    with JAX), ``data`` (an instance of the user's structure holding the converted
    arrays) and ``fields``.
    """

    def __init__(self, batch: Batch, arrays: list[Any], weights: Any, probabilities: Any, framework: str,
                 ids: Any = None) -> None:
        assert batch._schema.fields is not None
        self.framework = framework
        super().__init__(batch._schema, arrays, batch.ids if ids is None else ids, weights, probabilities)

    def _label(self) -> str:
        return f"FrameworkBatch[{self.framework}]"


# ---------------------------------------------------------------- torch
def _torch_ready(name: str, a: np.ndarray) -> np.ndarray:
    """``a`` itself when ``torch.from_numpy`` can share it, else a private copy."""
    if not isinstance(a, np.ndarray):
        raise SchemaError(name, type(a).__name__, "a numpy array")
    if not a.dtype.isnative:
        native: np.ndarray = a.astype(a.dtype.newbyteorder("="))
        return native
    if not a.flags.writeable:
        private: np.ndarray = a.copy()
        return private
    return a


def array_to_torch(name: str, a: np.ndarray, device: Any = None) -> Any:
    """One array as a tensor; shares memory on the CPU (see the module docstring)."""
    torch = require("torch", "torch", "Batch.to_torch")

    try:
        t = torch.from_numpy(_torch_ready(name, a))
    except TypeError as e:
        raise SchemaError(name, str(a.dtype), f"a dtype torch supports ({e})") from None
    if device is not None and torch.device(device) != t.device:
        t = t.to(device)
    return t


def to_torch(batch: Batch, device: Any = None) -> FrameworkBatch:
    """The batch's fields, ``weights``, ``probabilities`` and ``ids`` as torch tensors.

    ``ids`` become an ``int64`` tensor on the CPU (sharing memory with ``batch.ids``)
    whatever ``device`` is, ready for ``update_priorities``.

    Args:
        batch: a batch returned by ``sample`` or ``get``.
        device: ``None`` or ``"cpu"`` shares memory with the batch (zero-copy);
            any other device copies once, to that device.
    """
    arrays = [array_to_torch(name, a, device) for name, a in batch.fields.items()]
    weights = array_to_torch("weights", batch.weights, device)
    probs = None if batch.probabilities is None else array_to_torch("probabilities", batch.probabilities, device)
    ids = array_to_torch("ids", np.asarray(batch.ids, dtype=np.int64))
    return FrameworkBatch(batch, arrays, weights, probs, "torch", ids=ids)


# ---------------------------------------------------------------- jax
def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype, alignment: int = JAX_ALIGNMENT) -> np.ndarray:
    """A C-contiguous array whose data starts on an ``alignment``-byte boundary."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _jax_ready(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` itself if JAX can adopt it as ``dtype``, else one aligned compact copy."""
    if (a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable and a.dtype.isnative
            and (a.ctypes.data % JAX_ALIGNMENT == 0 or a.size == 0)):
        return a
    out = _aligned_empty(a.shape, dtype)
    np.copyto(out, a, casting="unsafe")
    return out


def array_to_jax(name: str, a: np.ndarray) -> Any:
    """One array as a JAX CPU array (see the module docstring for when it copies)."""
    jax = require("jax", "jax", "Batch.to_jax")

    if not isinstance(a, np.ndarray):
        raise SchemaError(name, type(a).__name__, "a numpy array")
    if a.dtype.kind not in "biufc":
        raise SchemaError(name, str(a.dtype), "a boolean or numeric dtype (what JAX arrays hold)")
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(a.dtype))
    return jax.dlpack.from_dlpack(_jax_ready(a, dtype))


def to_jax(batch: Batch) -> FrameworkBatch:
    """The batch's fields, ``weights`` and ``probabilities`` as JAX arrays on the CPU (``ids`` stay numpy)."""
    arrays = [array_to_jax(name, a) for name, a in batch.fields.items()]
    weights = array_to_jax("weights", batch.weights)
    probs = None if batch.probabilities is None else array_to_jax("probabilities", batch.probabilities)
    return FrameworkBatch(batch, arrays, weights, probs, "jax")
