"""The workaround for Ray issue #60491, built into our classes.

On Ray 2.60 the old API stack's ``Algorithm._create_local_replay_buffer_if_necessary``
asks ``"EpisodeReplayBuffer" in config["replay_buffer_config"]["type"]``; but by then
RLlib's ``validate_buffer_config`` has replaced the configured type (string or class)
by the class itself, and ``in`` on a plain class raises ``TypeError: argument of type
'type' is not iterable`` - for every buffer, RLlib's own included.

What RLlib means is "does the type's name contain EpisodeReplayBuffer" (it then adds
``metrics_num_episodes_for_smoothing`` to the config of episode buffers). So the class
of every ReplayTables RLlib buffer answers ``text in cls`` exactly that way, through
its metaclass, and old-stack algorithms build our buffers with no patch to RLlib.
"""
from __future__ import annotations

from typing import Any

__all__ = ["NamedByText"]


class NamedByText(type):
    """Metaclass: ``"Name" in cls`` is ``"Name" in cls.__name__`` (see module docstring)."""

    def __contains__(cls, text: Any) -> bool:
        return isinstance(text, str) and text in cls.__name__
