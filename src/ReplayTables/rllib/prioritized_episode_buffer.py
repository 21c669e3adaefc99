"""RLlib's new-stack ``PrioritizedEpisodeReplayBuffer`` on columnar step storage.

    config.training(replay_buffer_config={
        "type": "ReplayTables.rllib.PrioritizedEpisodeReplayBuffer",
        "capacity": 50_000, "alpha": 0.6, "beta": 0.4})

Proportional prioritized replay over stored *steps* (Schaul et al., 2016), as
RLlib's buffer: a new step gets the largest priority seen, a draw is
proportional to ``priority ** alpha``, a start too close to its episode's end
for the n-step is drawn again (RLlib's rejection), the importance weight is
``(P(i) / min_j P(j)) ** -beta``, and ``update_priorities(td_errors)`` applies
to the last sample. The priorities live in the engine's
:class:`~ReplayTables.engine.sumtree.SumTree` (one batched descent per
sample); the last sample is remembered by step ids, so an update for a step
that was evicted in between is skipped and counted (``stats()``), never
applied to another step.

Differences from RLlib 2.60 (documented in docs/rllib-inside.md): a NaN,
infinite or negative priority is a ``PriorityError`` and changes nothing
(RLlib stores NaN, clamps negatives to 1e-12); the tree's layout is not
RLlib's, so ``_max_idx`` and ``_tree_idx_to_sample_idx`` do not exist and
``_last_sampled_indices`` holds step ids.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ReplayTables.atomic import atomic
from ReplayTables.engine.samplers import check_priorities
from ReplayTables.errors import ConfigError, PriorityError
from ReplayTables.rllib.episode_compat import DEFAULT_MODULE_ID, RLLIB_PRIORITIZED_EPISODE_BUFFER
from ReplayTables.rllib.episode_replay_buffer import EpisodeReplayBuffer

__all__ = ["PrioritizedEpisodeReplayBuffer"]

#: RLlib's floor for a priority (``max(priority, 1e-12)``).
MIN_PRIORITY = 1e-12

_BASES: tuple[type, ...] = (EpisodeReplayBuffer,) if RLLIB_PRIORITIZED_EPISODE_BUFFER is object \
    else (EpisodeReplayBuffer, RLLIB_PRIORITIZED_EPISODE_BUFFER)


class _PriorityView:
    """Read-only ``buffer._sum_segment[step_id]``: the stored ``priority ** alpha`` of a step."""

    def __init__(self, buffer: PrioritizedEpisodeReplayBuffer) -> None:
        self._buffer = buffer

    def __getitem__(self, step_id: int) -> float:
        store = self._buffer.store
        rows, valid = store.rows_of(np.array([step_id], dtype=np.int64))
        return float(store.tree.leaves[rows[0]]) if valid[0] else 0.0

    def sum(self) -> float:
        return float(self._buffer.store.tree.total)


class PrioritizedEpisodeReplayBuffer(*_BASES):  # type: ignore[misc]
    """Prioritized replay of stored steps (see module docstring).

    Args:
        capacity, batch_size_B, batch_length_T, metrics_num_episodes_for_smoothing, seed:
            as :class:`~ReplayTables.rllib.EpisodeReplayBuffer`.
        alpha: prioritization exponent (0: uniform, 1: fully proportional).
        beta: default importance-weight exponent of :meth:`sample` (RLlib's config key).
    """

    _prioritized = True

    def __init__(self, capacity: int = 10000, *, batch_size_B: int = 16, batch_length_T: int = 1,
                 alpha: float = 1.0, beta: float | None = None, metrics_num_episodes_for_smoothing: int = 100,
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(capacity, batch_size_B=batch_size_B, batch_length_T=batch_length_T,
                         metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing, seed=seed,
                         **kwargs)
        self._alpha = _number("alpha", alpha)
        self._beta = 0.0 if beta is None else _number("beta", beta)
        self._max_priority = 1.0
        self._priority_updates = 0
        self._stale_updates = 0
        self._num_resamples_total = 0

    @property
    def _sum_segment(self) -> _PriorityView:
        return _PriorityView(self)

    def _insert_priority(self, weight: float | None) -> float:
        w = self._max_priority if weight is None else _number("weight", weight)
        return float(max(w, MIN_PRIORITY) ** self._alpha)

    # ------------------------------------------------------------ sample
    @atomic
    def sample(self, num_items: int | None = None, *, batch_size_B: int | None = None,
               batch_length_T: int | None = None, n_step: int | tuple[int, int] | None = None,
               beta: float | None = None, gamma: float = 0.99, include_infos: bool = False,
               include_extra_model_outputs: bool = False, to_numpy: bool = False, **kwargs: Any) -> Any:
        """``num_items`` one-transition episodes drawn by priority, with importance
        ``weights`` for ``beta`` in ``extra_model_outputs`` (RLlib's sample; sequence
        arguments are ignored as by RLlib's prioritized buffer). For dict chunks, one dict
        batch with ``weights`` and ``ids`` (:mod:`ReplayTables.rllib.episode_batches`)."""
        from ReplayTables.errors import EmptyBufferError

        B = self._batch_size(num_items, batch_size_B)
        b = self._beta if beta is None else _number("beta", beta)
        store = self.store
        if store.num_steps == 0:
            raise EmptyBufferError("size", 0, "at least one stored timestep to sample from")
        n = self._n_steps(n_step or 1, B)
        rows = store.prioritized_rows(self.rng, B)
        resamples = 0
        for _ in range(10_000):
            bad = np.flatnonzero(store.t[rows] + n > store.ep_len[store.ep[rows]])
            if bad.size == 0:
                break
            resamples += int(bad.size)
            rows[bad] = store.prioritized_rows(self.rng, bad.size)
        else:
            raise EmptyBufferError("n_step", n_step, "stored episodes long enough for this n-step")
        leaves = store.tree.leaves[rows]
        weights = np.power(leaves / store.tree.min_positive, -b) if b else np.ones(B)
        ep = store.ep[rows]
        ts = store.t[rows]
        out: Any = self._transitions(rows, ep, ts, n, n, gamma, weights, include_infos=include_infos,
                                include_extra_model_outputs=include_extra_model_outputs, to_numpy=to_numpy)
        self._last_sampled_indices = store.ids_of(rows).tolist()
        self.sampled_timesteps += B
        self._num_resamples_total += resamples
        self._log_sample(B, int(np.unique(ep).size), int(np.unique(rows).size), float(n.mean()), resamples)
        return out

    # ------------------------------------------------------------ priorities
    @atomic
    def update_priorities(self, priorities: Any, module_id: Any = None, *, ids: Any = None) -> None:
        """New priorities (e.g. ``|TD error|``) for the steps of the last sample, in its order,
        or for the step ``ids`` of any sample (a dict batch's ``"ids"``).

        Steps evicted since that sample are skipped and counted (``stats()["stale_updates"]``).
        """
        last = ids is None
        try:
            ids = np.asarray(self._last_sampled_indices if last else ids, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise PriorityError("ids", ids, "integer step ids (a sampled batch's 'ids')") from None
        try:
            p = check_priorities(np.asarray(priorities, dtype=np.float64).reshape(-1), ids.shape[0])
        except (TypeError, ValueError) as e:
            if isinstance(e, PriorityError):
                raise
            raise PriorityError("priorities", priorities, f"{ids.shape[0]} numbers, one per sampled step") from None
        store = self.store
        rows, valid = store.rows_of(ids)
        rows, p = rows[valid], p[valid]
        if rows.size:
            p = np.maximum(p, MIN_PRIORITY)
            store.tree.set(rows, p ** self._alpha)
            self._max_priority = max(self._max_priority, float(p.max()))
        self._priority_updates += int(rows.size)
        self._stale_updates += int((~valid).sum())
        if self.metrics is not None:
            self.metrics.log_value("num_priority_updates", int(rows.size), reduce="sum")
            self.metrics.log_value("num_priority_updates_lifetime", int(rows.size), reduce="lifetime_sum")
        if last:
            self._last_sampled_indices = []

    @atomic
    def stats(self) -> dict[str, Any]:
        """Counters of the buffer (per module: this buffer has one, ``default_policy``)."""
        return {"timesteps": self.get_num_timesteps(), "episodes": self.get_num_episodes(),
                "added_timesteps": self._num_timesteps_added, "sampled_timesteps": self.sampled_timesteps,
                "evicted_episodes": self._num_episodes_evicted, "priority_updates": self._priority_updates,
                "stale_updates": self._stale_updates, "resamples": self._num_resamples_total,
                "bytes": self.store.nbytes(),
                "per_module": {DEFAULT_MODULE_ID: {"priority_updates": self._priority_updates}}}

    # ------------------------------------------------------------ state
    @atomic
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        state.update({"_max_priority": self._max_priority, "_alpha": self._alpha,
                      "_priority_updates": self._priority_updates, "_stale_updates": self._stale_updates})
        return state

    @atomic
    def set_state(self, state: dict[str, Any]) -> None:
        if "replaytables_episode_steps" in state and float(state["_alpha"]) != self._alpha:
            raise ConfigError("state._alpha", state["_alpha"], f"{self._alpha} (this buffer's alpha)")
        super().set_state(state)
        self._max_priority = float(state.get("_max_priority", 1.0))
        self._priority_updates = int(state.get("_priority_updates", 0))
        self._stale_updates = int(state.get("_stale_updates", 0))


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ConfigError(name, value, "a finite number >= 0")
    return float(value)
