"""Run the peer harness (other libraries side by side), or say how to set it up.

The harness is not part of this repository: it is a folder holding ``peers.py``
and ``setup_peers.sh``, given by ``--harness PATH`` or the environment variable
``REPLAYTABLES_PEER_HARNESS`` (nothing outside the repository is looked for by
default). It runs every library in its own virtual environment under
``PEER_VENV_ROOT`` (default: the harness's own, ``<tempdir>/peer-venvs``). When the repository has a
``benchmarks/peers.json`` (this library's adapter plus copies of the peers'
entries), it is used as the peer list, with adapter paths made absolute because
the harness starts each worker in its own folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HARNESS_ENV", "find_harness", "repo_root", "run_peers", "venv_root"]

#: the environment variable naming the harness folder when ``--harness`` is not given
HARNESS_ENV = "REPLAYTABLES_PEER_HARNESS"


def repo_root() -> Path | None:
    """The source checkout this package runs from (an editable install), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "ReplayTables").is_dir():
            return parent
    return None


def find_harness(given: str | None) -> Path | None:
    """The harness folder: ``given`` (folder or ``peers.py``), else ``$REPLAYTABLES_PEER_HARNESS``, else None."""
    given = given or os.environ.get(HARNESS_ENV) or None
    if not given:
        return None
    p = Path(given).expanduser().resolve()
    folder = p.parent if p.is_file() else p
    return folder if (folder / "peers.py").is_file() else None


def venv_root() -> Path:
    return Path(os.environ.get("PEER_VENV_ROOT", os.path.join(tempfile.gettempdir(), "peer-venvs")))


def _config(harness: Path, root: Path | None, given: str | None) -> tuple[Path, list[dict[str, object]]]:
    """The peer list to use and its entries (adapter paths made absolute).

    ``given``, else the repository's ``benchmarks/peers.json``, else the harness's
    own list. Relative adapter paths in a repository list are relative to the
    repository root (``benchmarks/README.md``); in the harness's list, to the harness.
    """
    own = None if root is None else root / "benchmarks" / "peers.json"
    if given:
        source = Path(given).expanduser().resolve()
    else:
        source = own if own is not None and own.is_file() else harness / "peers.json"
    data = json.loads(source.read_text())
    if source == harness / "peers.json":
        base = harness
    elif root is not None and source == own:
        base = root
    else:
        base = source.parent
    for p in data.get("peers", []):
        adapter = str(p.get("adapter", ""))
        if adapter.endswith(".py") and not os.path.isabs(adapter):
            p["adapter"] = str((base / adapter).resolve())
    return source, data.get("peers", [])


def run_peers(harness_arg: str | None, workloads: Sequence[str], names: Sequence[str] | None,
              out: Path, print_fn: object = print, config_arg: str | None = None) -> int:
    """Run the harness for the peers whose venvs exist; 2 (with instructions) when none do."""
    say = print_fn if callable(print_fn) else print
    harness = find_harness(harness_arg)
    if harness is None:
        say(f"Peer harness not found: pass --harness PATH or set {HARNESS_ENV}=PATH, where PATH is the "
            "folder holding the harness's peers.py and setup_peers.sh (see benchmarks/README.md).")
        return 2
    root = repo_root()
    venvs = venv_root()
    source, entries = _config(harness, root, config_arg)
    ready = [str(p["name"]) for p in entries if (venvs / str(p["venv"]) / "bin" / "python").exists()
             and (not names or p["name"] in names)]
    if not ready:
        say(f"No peer environments under PEER_VENV_ROOT={venvs}.\n"
            f"Create them once (about 10 minutes, mostly downloads):\n"
            f"    PEER_VENV_ROOT={venvs} bash {harness / 'setup_peers.sh'}\n"
            f"or point PEER_VENV_ROOT at an existing folder of peer venvs, then run again:\n"
            f"    PEER_VENV_ROOT={venvs} replaytables bench --peers")
        return 2
    harness_w = [w for w in workloads if w.startswith("W")]
    out.mkdir(parents=True, exist_ok=True)
    config = out / "peers.config.json"
    config.write_text(json.dumps({"_doc": f"generated from {source.name} by replaytables bench --peers",
                                  "peers": entries}, indent=1))
    cmd = [sys.executable, str(harness / "peers.py"), "--config", str(config), "--venv-root", str(venvs),
           "--out", str(out), "--peers", *ready, "--workloads", *harness_w]
    say("Running: " + " ".join(cmd))
    return subprocess.call(cmd, cwd=str(root) if root is not None else None)
