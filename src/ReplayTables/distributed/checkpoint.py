"""Saving a sharded buffer as one checkpoint, and loading it onto a running Ray.

Layout (the normal checkpoint layout of :mod:`ReplayTables.checkpoint`, with the
shards inside the snapshot folder)::

    path/
      LATEST
      snapshot-000001/
        manifest.json, manifest.sha256   class, arguments, learner rng, one entry per shard
        shard-000/                       written by shard 0's own process
          shard.json                     its tag, life and stale count
          buffer/                        a normal buffer checkpoint (LATEST, snapshot-...)
        shard-001/ ...

The snapshot folder is complete before ``LATEST`` names it, so an interrupted
save leaves the previous checkpoint current. Loading checks the manifest first
(every value, and that every shard folder is a real directory), then starts
the shard actors, each of which loads its part with the buffer loader (which
checks everything again, imports nothing by name and unpickles nothing). Shard
folder names come from the shard index, never from the manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ReplayTables.checkpoint import class_name, read_manifest, resolve_structure, write_checkpoint
from ReplayTables.distributed.ray_api import ShardDown, get_one, require_running
from ReplayTables.distributed.shard_files import read_shard_file
from ReplayTables.distributed.tags import lives_per_shard
from ReplayTables.engine.files import real_directory
from ReplayTables.engine.rng_state import make_generator, rng_state
from ReplayTables.engine.schema import Schema
from ReplayTables.engine.state_checks import MAX_INT, check_fields, integer, mapping, number
from ReplayTables.errors import CheckpointError
from ReplayTables.PER import PERConfig
from ReplayTables.rate_limiters import RateLimiter

if TYPE_CHECKING:
    from ReplayTables.distributed.sharded import ShardedReplay

__all__ = ["load_sharded", "save_sharded", "shard_folder"]

_INIT_KEYS = ("num_shards", "max_size", "seed", "config", "max_restarts", "shard_timeout", "rate_limiter")
_MANIFEST_KEYS = ("format", "format_version", "arrays", "class", "init", "structure", "learner_rng", "learner",
                  "shards")


def shard_folder(snapshot: Path, index: int) -> Path:
    return snapshot / f"shard-{index:03d}"


def save_sharded(buffer: ShardedReplay, path: Any) -> Path:
    """Write every shard and the manifest as one new snapshot under ``path`` (see the module docstring)."""
    up = buffer._up()
    down = sorted(set(range(buffer.num_shards)) - set(up))
    if down:
        raise CheckpointError("shards", down, "every shard up (these are down or restarting; save again "
                                              "once they are back)")
    manifest: dict[str, Any] = {
        "class": class_name(type(buffer)), "init": buffer._init_args(),
        "structure": None if buffer.structure is None or isinstance(buffer.structure, (dict, Schema))
        else class_name(buffer.structure),
        "learner_rng": rng_state(buffer._rng),
        "learner": {"sample_calls": buffer._sample_calls,
                    "samples": 0 if buffer.rate_limiter is None else buffer.rate_limiter.samples}}

    def write_shards(folder: Path) -> None:
        refs = [a.save.remote(str(shard_folder(folder, k))) for k, a in enumerate(buffer._actors)]
        entries = []
        for k, ref in enumerate(refs):
            try:
                report = get_one(ref, k)
            except ShardDown as exc:
                buffer._health.lost(k, exc.cause)
                raise CheckpointError(f"shard {k}", "died while saving", "every shard up until the save "
                                                                          "completes") from None
            buffer._health.heard(k, report)
            entries.append({"life": report.life, "size": report.size,
                            "carried_inserts": buffer._health.carried_inserts[k]})
        manifest["shards"] = entries

    final = write_checkpoint(path, manifest, {}, write_shards)
    folders = [str(shard_folder(final, k)) for k in range(buffer.num_shards)]
    buffer._ledger.set_checkpoints.remote(folders)  # ordered before any later call of this learner
    return final


def _check_init(value: Any) -> dict[str, Any]:
    m = mapping("init", value, _INIT_KEYS)
    max_size = integer("init.max_size", m["max_size"], 1, MAX_INT)
    num_shards = integer("init.num_shards", m["num_shards"], 1, min(max_size, 2**15 - 1))
    config = m["config"]
    if config is not None:
        config = PERConfig(**dict(mapping("init.config", config, closed=False)))  # PERConfig checks its fields
    limiter = None if m["rate_limiter"] is None else RateLimiter.from_config(m["rate_limiter"])  # checks it
    return {"num_shards": num_shards, "max_size": max_size, "seed": integer("init.seed", m["seed"], 0, MAX_INT),
            "config": config, "max_restarts": integer("init.max_restarts", m["max_restarts"], -1, MAX_INT),
            "shard_timeout": number("init.shard_timeout", m["shard_timeout"], 1e-6, 3600.0),
            "rate_limiter": limiter}


def _structure(saved: Any, snapshot: Path, given: Any) -> Any:
    """The items' structure: the caller's, else the saved class if already imported, else a stand-in
    with the saved field names (read from shard 0's buffer manifest)."""
    if given is not None or saved is None:
        return given
    buffer_manifest = read_manifest(shard_folder(snapshot, 0) / "buffer")
    table = mapping("shard 0 table", buffer_manifest.get("table"), closed=False)
    schema = table.get("schema")
    if schema is None:
        return resolve_structure(saved, None, None)
    s = mapping("shard 0 table.schema", schema, ("kind", "structure", "fields"))
    if s["kind"] == "dict":
        return None
    names = [p[0] for p, _, _ in check_fields("shard 0 table.schema.fields", s["fields"], s["kind"])]
    return resolve_structure(saved, names, s["kind"])


def load_sharded(cls: type[ShardedReplay], snapshot: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                 structure: Any) -> ShardedReplay:
    """Rebuild a saved sharded buffer on the running Ray: new shard actors, each loading its part."""
    require_running("ReplayTables.load of a sharded buffer")
    m = mapping("manifest", manifest, ("class", "init", "learner_rng", "learner", "shards"), _MANIFEST_KEYS)
    if arrays:
        raise CheckpointError("arrays", sorted(arrays)[:4], "no arrays (a sharded buffer's arrays are its shards')")
    init = _check_init(m["init"])
    n = init["num_shards"]
    shards = m["shards"]
    if not isinstance(shards, list) or len(shards) != n:
        raise CheckpointError("shards", shards if not isinstance(shards, list) else f"{len(shards)} entries",
                              f"a list of {n} entries, one per shard")
    learner = mapping("learner", m["learner"], ("sample_calls", "samples"))
    sample_calls = integer("learner.sample_calls", learner["sample_calls"], 0, MAX_INT)
    samples = integer("learner.samples", learner["samples"], 0, MAX_INT)
    lives, carried = [], []
    for k, entry in enumerate(shards):
        e = mapping(f"shards[{k}]", entry, ("life", "size", "carried_inserts"))
        carried.append(integer(f"shards[{k}].carried_inserts", e["carried_inserts"], -MAX_INT, MAX_INT))
        lives.append(integer(f"shards[{k}].life", e["life"], 0, lives_per_shard(n) - 1))
        integer(f"shards[{k}].size", e["size"], 0, init["max_size"])
        if not real_directory(shard_folder(snapshot, k)):
            raise CheckpointError(f"shards[{k}]", str(shard_folder(snapshot, k)), "a shard folder (a directory, "
                                                                                  "not a symlink)")
        # the shard's own file is checked here too, before any actor starts (the shard checks it again)
        saved = read_shard_file(shard_folder(snapshot, k) / "shard.json", n, k)
        if saved["life"] != lives[-1]:
            raise CheckpointError(f"shards[{k}].life", lives[-1], f"{saved['life']} (the life its shard saved)")
    rng = make_generator(m["learner_rng"], "learner_rng")
    saved_structure = m.get("structure")
    if saved_structure is not None and not isinstance(saved_structure, str):
        raise CheckpointError("structure", saved_structure, "None or a 'module:QualName' string")
    structure = _structure(saved_structure, snapshot, structure)
    buffer = cls.__new__(cls)
    limiter = init["rate_limiter"]
    if limiter is not None:
        limiter.counts[:] = (0, samples)  # inserts are the shards' counts, summed as they report them
    buffer._setup(n, init["max_size"], structure, init["config"], init["seed"], limiter, init["max_restarts"],
                  init["shard_timeout"], None)
    buffer._rng = rng
    buffer._start(lives, [str(shard_folder(snapshot, k)) for k in range(n)])
    buffer._sample_calls = sample_calls
    buffer._health.carried_inserts = carried
    return buffer
