"""Optional dependencies: import one, or say which extra installs it.

The core needs only numpy (and numba for kernels). torch, JAX, zstandard and the
demo's packages are extras, imported only where a feature uses them. When one is
missing, the user gets a :class:`~ReplayTables.errors.ConfigError` naming the
feature, the package and the ``pip install 'ReplayTables[extra]'`` command, not a
bare ``ModuleNotFoundError`` from deep inside a call (the same form as the
``compression`` extra's error in ``engine/storage/zstd.py``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ReplayTables.errors import ConfigError

__all__ = ["EXTRAS", "require"]

#: the extra of ``pyproject.toml`` that installs each optional module
EXTRAS = {"torch": "torch", "jax": "jax", "zstandard": "compression", "gymnasium": "examples",
          "matplotlib": "examples", "tqdm": "examples", "rich": "bench", "ray": "ray"}


def require(module: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise a ConfigError saying how to install it.

    Args:
        module: the module to import (``"torch"``).
        extra: the extra that installs it; ``None`` looks it up in :data:`EXTRAS`.
        feature: what needs it, for the message (``"Batch.to_torch"``); defaults to ``module``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = extra or EXTRAS.get(module.split(".")[0], "")
        how = f"pip install 'ReplayTables[{extra}]'" if extra else f"pip install {module}"
        raise ConfigError(feature or module, module, f"the {module} package installed: {how}",
                          f"import failed: {e}") from None
