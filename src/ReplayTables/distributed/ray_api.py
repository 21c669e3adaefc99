"""The one place that imports Ray, lazily, and turns Ray's errors into ours.

``import ReplayTables.distributed`` does not import Ray (so the checkpoint loader
can know the sharded buffer's class without it); the first call that needs Ray
imports it here, or says which extra installs it.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

from ReplayTables.errors import ConfigError, ReplayTablesError

__all__ = ["ShardDown", "get_one", "ray", "require_running"]


def ray() -> ModuleType:
    """The ``ray`` module (a ConfigError naming ``pip install 'ReplayTables[ray]'`` without it)."""
    from ReplayTables.optional import require

    return require("ray", "ray", "ReplayTables.distributed")


def require_running(what: str) -> ModuleType:
    """``ray``, refusing to go on when no Ray is running (we never start one behind the user's back)."""
    r = ray()
    if not r.is_initialized():
        raise ConfigError("ray", "not initialized", f"a running Ray for {what}: call ray.init() (or "
                                                    "ray.init(address='auto') on a cluster) first")
    return r


class ShardDown(Exception):
    """A shard's actor died, or is restarting, while a call to it was pending (internal)."""

    def __init__(self, index: int, cause: BaseException | str) -> None:
        super().__init__(f"shard {index}: {cause}")
        self.index = index
        self.cause = cause


def unwrap(exc: BaseException) -> BaseException:
    """Our own error raised inside an actor, as it was raised there (not Ray's wrapper)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ReplayTablesError):
        return cause
    return exc


def get_one(ref: Any, index: int, timeout: float | None = None) -> Any:
    """The value of one shard call: our errors re-raised as ours, a dead shard as :class:`ShardDown`."""
    r = ray()
    try:
        return r.get(ref, timeout=timeout)
    except r.exceptions.RayTaskError as exc:
        raise unwrap(exc) from None
    except (r.exceptions.RayActorError, r.exceptions.GetTimeoutError) as exc:
        raise ShardDown(index, exc) from None
