"""``replay_buffer_config`` dicts: resolve ``type`` and check every key.

``type`` may be a class, a short class name (``"ReplayBuffer"``), a dotted
import path (``"mypkg.buffers.MyBuffer"``; RLlib's own paths such as
``"ray.rllib.utils.replay_buffers.replay_buffer.ReplayBuffer"`` map to the class
of the same name here) or ``"module:QualName"``. Every other key must be a
constructor argument: unknown keys are an error that names them (RLlib ignores
them silently, which hides typos).
"""
from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from ReplayTables.checkpoint import class_name, resolve_class
from ReplayTables.errors import CheckpointError, ConfigError

__all__ = ["from_config", "resolve_type"]

#: Keys RLlib's algorithms read from ``replay_buffer_config`` themselves (not buffer arguments).
ALGORITHM_KEYS = frozenset({"worker_side_prioritization", "replay_batch_size", "prioritized_replay",
                            "learning_starts", "num_steps_sampled_before_learning_starts",
                            "_enable_replay_buffer_api", "replay_buffer_shards_colocated_with_driver"})

ALIASES = {"underlying_replay_buffer_config": "underlying_buffer_config"}


def _ours() -> dict[str, type]:
    from ReplayTables import rllib

    return {name: getattr(rllib, name) for name in rllib.BUFFER_CLASSES}


def resolve_type(value: Any, field: str = "type") -> type:
    """The buffer class named by a config's ``type``; anything but a replay-buffer class is refused.

    The check comes before the class is called, so a config naming
    ``subprocess.Popen`` or ``collections.OrderedDict`` runs and builds nothing.
    """
    cls = _named_class(value, field)
    if not is_buffer_class(cls):
        raise ConfigError(field, value, "a replay-buffer class (one of this package's buffers or a subclass of "
                                        f"one, with add and sample), such as one of {sorted(_ours())}")
    return cls


#: RLlib's own buffer base classes, recognised only if Ray already loaded them (nothing is imported here).
_RLLIB_BASES = (("ray.rllib.utils.replay_buffers.base", "ReplayBufferInterface"),
                ("ray.rllib.utils.replay_buffers.replay_buffer", "ReplayBuffer"))


def is_buffer_class(cls: Any) -> bool:
    """True for a replay-buffer class: one with ``add`` and ``sample`` that is one of this
    package's buffers or a subclass of one (a user's own buffer), or, when Ray is loaded,
    a subclass of RLlib's buffer bases. Checked before the class is ever called."""
    if not isinstance(cls, type) or not (callable(getattr(cls, "add", None))
                                         and callable(getattr(cls, "sample", None))):
        return False
    if any(k.__module__ == "ReplayTables" or k.__module__.startswith("ReplayTables.") for k in cls.__mro__):
        return True
    for module_name, attr in _RLLIB_BASES:
        base = getattr(sys.modules.get(module_name), attr, None)
        if isinstance(base, type) and issubclass(cls, base):
            return True
    return False


def _named_class(value: Any, field: str) -> type:
    """The class a ``type`` value names (not yet checked to be a buffer class)."""
    if isinstance(value, type):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(field, value, "a buffer class, a class name, or a dotted import path")
    ours = _ours()
    if value in ours:
        return ours[value]
    if ":" in value:
        try:
            return resolve_class(value)
        except CheckpointError:
            module, _, qualname = value.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError):
                raise ConfigError(field, value, "a 'module:QualName' of a defined buffer class") from None
            if isinstance(obj, type):
                return obj
            raise ConfigError(field, value, "a 'module:QualName' naming a class") from None
    if "." in value:
        module, _, name = value.rpartition(".")
        if module == "ray" or module.startswith("ray."):
            if name in ours:
                return ours[name]
            raise ConfigError(field, value, f"an RLlib buffer this library implements: {sorted(ours)}")
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(field, value, "an importable 'package.module.Class' path", str(exc)) from None
        if isinstance(obj, type):
            return obj
    raise ConfigError(field, value, f"one of {sorted(ours)}, a buffer class, or a dotted import path")


def type_name(cls: type) -> str:
    """How a class is written into a JSON manifest (read back by :func:`resolve_type`)."""
    return class_name(cls)


def parameters(func: Any) -> tuple[set[str], bool]:
    """Named keyword parameters of ``func`` (minus self) and whether it takes ``**kwargs``."""
    sig = inspect.signature(func)
    names = {p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def constructor_params(cls: type) -> set[str]:
    """Constructor argument names, following ``**kwargs`` up the base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        found, more = parameters(vars(klass)["__init__"])
        names |= found
        if not more:
            break
    return names


def method_params(cls: type, method: str) -> set[str]:
    func = getattr(cls, method, None)
    if func is None:
        return set()
    names, _ = parameters(func)
    return names


def check_keys(cls: type, keys: Any, allowed: set[str], what: str) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        algo = [k for k in unknown if k in ALGORITHM_KEYS]
        detail = f"{algo} are algorithm settings, not buffer arguments" if algo else ""
        raise ConfigError(what, unknown, f"arguments of {cls.__name__}: {sorted(allowed)}", detail)


def normalise(config: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ConfigError(what, config, "a dict")
    out = dict(config)
    for alias, name in ALIASES.items():
        if alias in out:
            if name in out:
                raise ConfigError(alias, out[alias], f"only one of {alias!r} and its alias {name!r}")
            out[name] = out.pop(alias)
    return out


def from_config(config: Mapping[str, Any]) -> Any:
    """Build a buffer from a ``replay_buffer_config`` dict (``type`` + constructor arguments)."""
    cfg = normalise(config, "replay_buffer_config")
    if "type" not in cfg:
        raise ConfigError("type", "<missing>", "a 'type' key naming the buffer class")
    cls = resolve_type(cfg.pop("type"))
    num_shards = cfg.pop("num_shards", 1)
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError("num_shards", num_shards, "an integer >= 1")
    if num_shards > 1:  # RLlib's key: the buffer's rows on that many Ray actors (ReplayTables.distributed)
        from ReplayTables.rllib.multi_agent_replay_buffer import MultiAgentReplayBuffer

        if isinstance(cls, type) and issubclass(cls, MultiAgentReplayBuffer):
            cfg["num_shards"] = num_shards   # the class itself puts its policies' rows on shards, as in RLlib's loop
        else:
            from ReplayTables.distributed.rllib_buffers import sharded_from_config

            return sharded_from_config(cls, num_shards, cfg)
    allowed = constructor_params(cls)
    if _takes_rllib_keys(cls):
        from ReplayTables.rllib.rllib_keys import RLLIB_KEYS

        allowed |= RLLIB_KEYS | {"shared"}  # the constructor refuses shared= with the reason
    check_keys(cls, cfg, allowed, "replay_buffer_config")
    return cls(**cfg)


def _takes_rllib_keys(cls: type) -> bool:
    """Whether ``cls``'s constructor passes ``**kwargs`` on to one of our buffer constructors,
    which accept every key of RLlib's config (a subclass that drops ``**kwargs`` does not)."""
    from ReplayTables.rllib.multi_agent_replay_buffer import MultiAgentReplayBuffer
    from ReplayTables.rllib.replay_buffer import ReplayBuffer

    for klass in cls.__mro__:
        if klass in (ReplayBuffer, MultiAgentReplayBuffer):
            return True
        if "__init__" in vars(klass) and klass is not object and not parameters(vars(klass)["__init__"])[1]:
            return False
    return False
