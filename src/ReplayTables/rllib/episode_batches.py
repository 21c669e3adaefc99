"""Dict-based batches: what the new-stack episode buffers return for dict chunks.

The same values RLlib's sampled episodes carry, as plain dicts of numpy arrays
(no Ray needed). An n-step sample (``sample(n, n_step=..., sample_episodes=True)``,
or any prioritized sample) is one dict with a leading batch axis::

    {"obs": (B, ...), "actions": (B, ...),
     "rewards": (B,),        # sum_k gamma^k r_(t+k) over the n steps
     "next_obs": (B, ...),   # the observation n steps later (or the episode's last)
     "terminateds": (B,), "truncateds": (B,),  # whether next_obs ends its episode so
     "n_step": (B,), "weights": (B,),          # importance weights (ones when uniform)
     "ids": (B,),            # step ids, for update_priorities(..., ids=batch["ids"])
     "episode_ids": [B], "t": (B,),            # episode and time step of obs
     "extra_model_outputs": {...}, "infos": ([B], [B])}  # when asked for

A sequence sample (``batch_length_T > 0``) is a list of dict chunks in the input
format (see :mod:`ReplayTables.rllib.episode_chunks`), each with ``lookback``
leading steps before the sampled ones and ``n_step``/``weights`` in its
``extra_model_outputs``. A multi-agent sample is ``{module_id: batch}``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["slice_chunk", "transition_batch"]


def transition_batch(*, ids: list[Any], obs: tuple[Any, Any], actions: Any, rewards: np.ndarray,
                     terminated: np.ndarray, truncated: np.ndarray, weights: np.ndarray, n_steps: np.ndarray,
                     step_ids: np.ndarray, t: np.ndarray, extras: dict[Any, Any] | None,
                     infos: tuple[Any, Any] | None) -> dict[str, Any]:
    """The n-step transitions ``(o_t, a_t, R, o_(t+n))`` of a sample as one dict of arrays."""
    batch: dict[str, Any] = {
        "obs": obs[0], "actions": actions, "rewards": np.asarray(rewards, dtype=np.float64),
        "next_obs": obs[1], "terminateds": np.asarray(terminated, dtype=bool),
        "truncateds": np.asarray(truncated, dtype=bool), "n_step": np.asarray(n_steps, dtype=np.int64),
        "weights": np.asarray(weights, dtype=np.float64), "ids": np.asarray(step_ids, dtype=np.int64),
        "episode_ids": list(ids), "t": np.asarray(t, dtype=np.int64)}
    if extras is not None:
        batch["extra_model_outputs"] = extras
    if infos is not None:
        batch["infos"] = ([i or {} for i in infos[0].tolist()], [i or {} for i in infos[1].tolist()])
    return batch


def slice_chunk(*, id_: Any, meta: dict[str, Any], obs: Any, actions: Any, rewards: Any, extras: dict[Any, Any],
                infos: list[Any], lookback: int, n_step: int | None, terminated: bool, truncated: bool,
                t_started: int) -> dict[str, Any]:
    """Steps of a stored episode as a dict chunk. For a sampled slice its first ``lookback``
    steps come before ``t_started`` (the time step of the first sampled observation), as in
    RLlib's episodes; a whole stored episode has no ``lookback`` key and can be added again."""
    length = int(np.asarray(rewards).shape[0])
    emo = dict(extras)
    chunk: dict[str, Any] = {"id": id_, "obs": obs, "actions": actions, "rewards": rewards,
                             "terminated": terminated, "truncated": truncated, "t_started": t_started,
                             "extra_model_outputs": emo, "infos": list(infos)}
    if n_step is not None:  # a sampled slice (a stored episode, without these, can be added again)
        emo["n_step"] = np.full(length, n_step, dtype=np.int64)
        emo["weights"] = np.ones(length)
        chunk["lookback"] = lookback
    for key in ("agent_id", "module_id"):
        if meta.get(key) is not None:
            chunk[key] = meta[key]
    return chunk
