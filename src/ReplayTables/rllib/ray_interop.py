"""The boundary with RLlib itself, used only when Ray is importable.

RLlib's old API stack reads what our buffers return with RLlib's own methods
(``batch.env_steps()``, ``policy_batches``, ``set_get_interceptor``) and calls
``update_priorities`` only on instances of *its* ``MultiAgentPrioritizedReplayBuffer``.
So, when ``ray.rllib`` can be imported:

* samples leave our buffers as RLlib's ``SampleBatch`` / ``MultiAgentBatch``
  (:func:`to_rllib`), converted once at the public ``sample()`` boundary;
* each of our classes is registered as a virtual subclass of the RLlib class of
  the same name (:func:`register_with_rllib`), so RLlib's ``isinstance``
  checks treat ours as its own.

Ray is imported lazily, the first time a buffer is built or sampled, and never
at import time of this package. Without Ray (or with the environment variable
``REPLAYTABLES_RLLIB_BATCHES=ours``) our own dict-based batches are returned
and nothing is registered.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from ReplayTables.rllib.batches import MultiAgentBatch, SampleBatch

__all__ = ["ENV_VAR", "register_with_rllib", "rllib_batch_types", "to_rllib"]

#: Set to ``ours`` to keep ReplayTables' own batch types even when Ray is installed.
ENV_VAR = "REPLAYTABLES_RLLIB_BATCHES"

#: Our class name -> the module of RLlib's class of that name.
RLLIB_CLASSES = {
    "ReplayBuffer": "ray.rllib.utils.replay_buffers.replay_buffer",
    "PrioritizedReplayBuffer": "ray.rllib.utils.replay_buffers.prioritized_replay_buffer",
    "ReservoirReplayBuffer": "ray.rllib.utils.replay_buffers.reservoir_replay_buffer",
    "FifoReplayBuffer": "ray.rllib.utils.replay_buffers.fifo_replay_buffer",
    "MultiAgentReplayBuffer": "ray.rllib.utils.replay_buffers.multi_agent_replay_buffer",
    "MultiAgentPrioritizedReplayBuffer": "ray.rllib.utils.replay_buffers.multi_agent_prioritized_replay_buffer",
    "MultiAgentMixInReplayBuffer": "ray.rllib.utils.replay_buffers.multi_agent_mixin_replay_buffer",
}

_state: dict[str, Any] = {}


def rllib_batch_types() -> tuple[type, type] | None:
    """RLlib's ``(SampleBatch, MultiAgentBatch)``, or ``None`` without Ray (imported once)."""
    if "types" not in _state:
        _state["types"] = None
        if os.environ.get(ENV_VAR, "").lower() != "ours" and importlib.util.find_spec("ray") is not None:
            try:
                module = importlib.import_module("ray.rllib.policy.sample_batch")
                _state["types"] = (module.SampleBatch, module.MultiAgentBatch)
            except Exception:  # a broken Ray install: behave as without Ray
                _state["types"] = None
    types: tuple[type, type] | None = _state["types"]
    return types


def register_with_rllib() -> bool:
    """Register our buffer classes as virtual subclasses of RLlib's (once); ``False`` without Ray."""
    if "registered" in _state:
        return bool(_state["registered"])
    _state["registered"] = False
    if rllib_batch_types() is None:
        return False
    from ReplayTables import rllib

    try:
        for name, module in RLLIB_CLASSES.items():
            getattr(importlib.import_module(module), name).register(getattr(rllib, name))
    except Exception:  # RLlib moved a class: ours still work, RLlib's isinstance checks will not see them
        return False
    _state["registered"] = True
    return True


def to_rllib(batch: Any) -> Any:
    """Our :class:`SampleBatch` / :class:`MultiAgentBatch` as RLlib's (unchanged without Ray)."""
    types = rllib_batch_types()
    if types is None:
        return batch
    rllib_sample_batch, rllib_multi_agent_batch = types
    if isinstance(batch, MultiAgentBatch):
        return rllib_multi_agent_batch({pid: rllib_sample_batch(dict(b)) for pid, b in batch.items()},
                                       batch.count)
    if isinstance(batch, SampleBatch):
        return rllib_sample_batch(dict(batch))
    return batch
