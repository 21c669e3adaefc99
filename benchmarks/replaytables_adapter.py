"""Peer-harness adapter for this repository's ReplayTables (the engine in ``src/``).

Loaded by the peer harness's ``$BENCH_DIR/worker.py`` (by path, see ``benchmarks/peers.json``),
inside a venv that has this repository installed editable (``benchmarks/README.md``).
It uses the public API only:

* ``ReplayBuffer`` / ``PrioritizedReplay`` over a dict structure of ``FieldSpec``
  whose dtypes and shapes are declared from the harness spec (so storage exists
  before the first add and nothing is inferred);
* ``add_one`` -> ``buffer.add(dict)``; ``add_batch`` -> ``buffer.add_batch(dict)``;
* ``sample_uniform`` -> ``buffer.sample(n)`` (a ``Batch``: the library's native output);
* ``sample_per(n, beta)`` -> ``(batch, batch.ids, batch.weights)``. The harness
  passes beta on every call while our front end takes it from ``PERConfig`` (with
  an optional annealing schedule). The config is built with the workload's beta
  (option ``beta``, default 0.4 = W4's), so the normal path is the library's own
  weights. If a call ever passes another beta, the weights are rescaled exactly:
  ``w = (N P / (N P_min)) ** -beta``, so ``w_beta = w_cfg ** (beta / beta_cfg)``;
* ``update_priorities(ids, p)`` -> ``buffer.update_priorities(ids, p)`` (raw
  priorities; the library applies the exponent);
* ``set_all_priorities`` -> one ``update_priorities`` over the ids the fill returned;
* ``storage_nbytes`` -> ``buffer.stats()['storage_bytes']``.

The harness's ``done`` and ``reward`` arrive as Python bool/float for single adds
and as numpy arrays for batches; both are accepted by the declared fields as is.

Option ``structure="namedtuple"`` measures the README's own API instead: a
``NamedTuple`` ``T(obs, action, reward: float, next_obs, done: bool)`` whose
unannotated fields take their dtype (float32) from the first item, fed what a gym
loop hands over (float32 arrays, Python scalars; float32/bool arrays in batches,
so ``reward`` is cast float32 -> float64). Each add builds the ``T`` as a user's
code would.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from _base import Buffer  # provided by the harness (registered by path)

from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay
from ReplayTables.ReplayBuffer import ReplayBuffer

PACKAGES = ("ReplayTables", "numba")

FILL_CHUNK = 65_536


def structure_of(spec: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, FieldSpec]:
    """The harness spec (field -> (shape, dtype name)) as a declared dict structure."""
    return {name: FieldSpec(tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in spec.items()}


class T(NamedTuple):
    """The README's kind of structure for the harness's transition."""

    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    done: bool


def as_namedtuple(add: Any) -> Any:
    """``add`` taking the harness's dict, building the user's ``T`` first (as user code does)."""
    def add_t(t: dict[str, Any]) -> Any:
        return add(T(t["obs"], t["action"], t["reward"], t["next_obs"], t["done"]))
    return add_t


class OursBuffer(Buffer):
    supports_add_batch = True

    def __init__(self, capacity: int, spec: dict[str, Any], seed: int = 0, per: dict[str, Any] | None = None,
                 beta: float = 0.4, uniform_probability: float = 1e-3, stratified: bool = False,
                 structure: str = "fieldspec", **_: Any) -> None:
        rng = np.random.default_rng(seed)
        if structure not in ("fieldspec", "namedtuple"):
            raise ValueError(f"structure: got {structure!r}, expected 'fieldspec' or 'namedtuple'")
        self.namedtuple = structure == "namedtuple"
        layout: Any = T if self.namedtuple else structure_of(spec)
        self.per = per is not None
        if per is not None:
            self.supports_per = True
            self.config = PERConfig(priority_exponent=float(per["alpha"]), beta=float(beta),
                                    uniform_probability=float(uniform_probability), stratified=bool(stratified))
            self.rb: ReplayBuffer = PrioritizedReplay(capacity, layout, rng, config=self.config)
        else:
            self.rb = ReplayBuffer(capacity, layout, rng)
        self._ids: list[np.ndarray] = []
        # bound methods resolved once: the harness times the call, not attribute lookups we add
        self.add_one = as_namedtuple(self.rb.add) if self.namedtuple else self.rb.add
        self.add_batch = as_namedtuple(self.rb.add_batch) if self.namedtuple else self.rb.add_batch
        self.sample_uniform = self.rb.sample
        if per is not None:
            self.update_priorities = self.rb.update_priorities  # type: ignore[attr-defined]

    # add_one / add_batch / sample_uniform / update_priorities are bound in __init__

    def sample_per(self, n: int, beta: float) -> tuple[Any, np.ndarray, np.ndarray]:
        batch = self.rb.sample(n)
        w = batch.weights
        cfg_beta = self.config.beta
        if beta != cfg_beta:
            # exact rescale (see module docstring); never hit by W4 (beta 0.4 = config)
            w = np.ones_like(w) if beta == 0 else np.power(w, beta / cfg_beta)
        return batch, batch.ids, w

    def size(self) -> int:
        return self.rb.size()

    def fill(self, pool: Any, n: int) -> None:
        """Untimed fill through the public batched add; keeps the ids for set_all_priorities."""
        done = 0
        while done < n:
            c = min(FILL_CHUNK, n - done)
            self._ids.append(self.add_batch(pool.chunk(done, c)))
            done += c

    def set_all_priorities(self, p: np.ndarray) -> None:
        ids = np.concatenate(self._ids)[-self.rb.size():]
        # slot i holds the i-th item added (FIFO, one pass, no wrap): p[i] belongs to ids[i]
        self.rb.update_priorities(ids, np.asarray(p[: ids.shape[0]], dtype=np.float64))  # type: ignore[attr-defined]

    def storage_nbytes(self) -> int:
        return int(self.rb.stats()["storage_bytes"])


def make(capacity: int, spec: dict[str, Any], *, seed: int = 0, per: dict[str, Any] | None = None,
         sample_batch_size: int | None = None, add_batch_size: int | None = None, **options: Any) -> OursBuffer:
    return OursBuffer(capacity, spec, seed=seed, per=per, **options)
