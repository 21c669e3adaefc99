"""ReplayTables: fast, memory-lean, checkpointable experience replay for RL.

The public names (``__all__``) are importable from the package itself,
``from ReplayTables import ReplayBuffer, PrioritizedReplay, PERConfig, TrajectoryReplay``,
and from the modules that define them (the ReplayTables API's own paths keep
working): ``from ReplayTables.ReplayBuffer import ReplayBuffer``,
``from ReplayTables.PER import PERConfig, PrioritizedReplay``,
``from ReplayTables.trajectory import TrajectoryReplay``. Everything runs on the
engine in ``ReplayTables.engine``.

Importing this package imports no third-party module at all (numpy comes with the
first buffer class, numba with the first prioritized operation, torch and JAX only
in ``Batch.to_torch()`` / ``to_jax()``): each public class is imported on first access.

``ReplayBuffer`` is both a module and the class it defines. The package attribute
``ReplayTables.ReplayBuffer`` is always the class, whichever was imported first; so
``import ReplayTables.ReplayBuffer as m`` binds the class too (Python binds the
attribute of the package), and ``ReplayTables.ReplayBuffer.ReplayBuffer`` (the
module path, as dotted-path tools such as Hydra or ``monkeypatch`` walk it) is the
class as well. The module object itself is ``sys.modules["ReplayTables.ReplayBuffer"]``
or ``importlib.import_module("ReplayTables.ReplayBuffer")``.
"""
import importlib as _importlib
import os
import sys as _sys
import types as _types
from typing import Any

from ReplayTables.errors import (
    BufferClosedError,
    CheckpointError,
    ConfigError,
    EmptyBufferError,
    EpisodeError,
    PriorityError,
    RateLimitTimeout,
    ReplayTablesError,
    SchemaError,
    SharedMemoryError,
    StaleIdError,
)

__version__ = "0.1.0"

#: public name -> ``"module:name"`` (an object the module defines) or ``"module"`` (the
#: module itself), imported on first access. New public names go here and in ``__all__``:
#: e.g. ``"attach": "ReplayTables.<its module>:attach"``, or the modules
#: ``"rate_limiters": "ReplayTables.rate_limiters"`` and ``"distributed": "ReplayTables.distributed"``.
_LAZY = {
    "Batch": "ReplayTables.batch:Batch",
    "PERConfig": "ReplayTables.PER:PERConfig",
    "PrioritizedReplay": "ReplayTables.PER:PrioritizedReplay",
    "ReplayBuffer": "ReplayTables.ReplayBuffer:ReplayBuffer",
    "SequenceConfig": "ReplayTables.trajectory_types:SequenceConfig",
    "TrajectoryReplay": "ReplayTables.trajectory:TrajectoryReplay",
    "attach": "ReplayTables.shared:attach",
}

#: the public names: buffers and their settings, ``load`` for checkpoints, the errors
__all__ = [
    "Batch",
    "BufferClosedError",
    "CheckpointError",
    "ConfigError",
    "EmptyBufferError",
    "EpisodeError",
    "PERConfig",
    "PrioritizedReplay",
    "PriorityError",
    "RateLimitTimeout",
    "ReplayBuffer",
    "ReplayTablesError",
    "SchemaError",
    "SequenceConfig",
    "SharedMemoryError",
    "StaleIdError",
    "TrajectoryReplay",
    "__version__",
    "attach",
    "load",
]

#: public objects whose name is also the name of the submodule defining them
_SAME_NAME = frozenset(name for name, target in _LAZY.items() if target == f"{__name__}.{name}:{name}")


def load(path: str | os.PathLike[str], structure: Any = None) -> Any:
    """Load a buffer saved with ``buffer.save(path)`` (same class, contents and rng state).

    The directory is treated as untrusted: nothing is unpickled or imported by name,
    only the snapshot's regular files are read, and every value is checked before
    anything is built (see the "Checkpoints" section of the concepts page). Anything
    refused is a :class:`CheckpointError` naming the key, the value and what was
    expected.

    Args:
        path: the checkpoint directory given to ``save``.
        structure: your NamedTuple or dataclass for the loaded batches (by default the
            saved one if it is already imported, else a stand-in with its field names).
    """
    from ReplayTables.checkpoint import load as _load

    return _load(path, structure)


class _ModuleAlias:
    """Makes ``<class>.<name>`` give what the same-named module's ``<name>`` gives, on that class only.

    So the module path ``ReplayTables.ReplayBuffer.ReplayBuffer`` still resolves once
    ``ReplayTables.ReplayBuffer`` is the class. Instances and subclasses do not see it.
    """

    def __init__(self, owner: type, module: str, name: str) -> None:
        self.owner, self.module, self.name = owner, module, name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None and objtype is self.owner:
            return getattr(_sys.modules[self.module], self.name)
        raise AttributeError(self.name)


def _resolve(name: str) -> Any:
    module_name, _, attribute = _LAZY[name].partition(":")
    module = _importlib.import_module(module_name)
    value: object = getattr(module, attribute) if attribute else module
    if name in _SAME_NAME and isinstance(value, type):
        for public in getattr(module, "__all__", ()):
            if public not in vars(value):
                setattr(value, public, _ModuleAlias(value, module_name, public))
    globals()[name] = value  # the next access is a plain attribute lookup (no submodule binding reaches it)
    return value


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return _resolve(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *(n for n in globals() if n.startswith("__") and n.endswith("__"))})


class _Package(_types.ModuleType):
    """The package's module type: importing a submodule never hides the class of the same name.

    The import system binds each imported submodule as an attribute of its package
    (``setattr(ReplayTables, "ReplayBuffer", <module>)``), which would replace the
    class. For the names in ``_SAME_NAME`` that binding is skipped; ``__getattr__``
    then returns the class.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SAME_NAME and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
del Any, os  # only needed for the annotations above, which are evaluated already
