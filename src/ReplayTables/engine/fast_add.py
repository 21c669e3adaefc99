"""Generated add paths: the per-schema fast lanes of ``Table.add`` and ``Table.add_batch``.

A single add of five fields through generic, checked Python costs several
microseconds of attribute lookups and dtype tests. These functions generate,
once per table, straight-line code specialised to its schema: cheap checks on
each field (exact array type and shape, a dtype that casts to the field's
*safely*, a narrowing ``same_kind`` dtype whose values are all within the field's
range, or a Python scalar whose value fits the field) and direct writes into the
storage columns. Anything the fast lane does not recognise goes to the
table's general path, which accepts the same inputs and raises the same errors,
so the fast lane changes speed, not behaviour.

Each lane checks its input without the table's lock (the checks read only the
input) and then holds the lock, through its bound ``acquire``/``release`` in a
``try``/``finally`` (cheaper than a ``with`` block), for every read and write of
the table. The id of a new item follows the one id rule of ``ids.py``
(``NEXT_ID_SOURCE``), and carries the table's shard tag. On a shared table
(``table.journal`` set) the writes are bracketed by its add journal, as the
general path's are, so a process killed inside a lane's writes leaves nothing
half-written visible.

Every check runs before the first write, and a value that passes cannot make a
write fail or lose information: a safe cast never overflows (float32 into a
float64 field, int16 into float32), narrowing arrays pass only when one
compiled pass finds every value in range (float64 observations into a float32
field; NaN and inf take the general path), and Python numbers are range-checked
(``10**400`` into a float field, ``1e300`` into a float32 field or ``300`` into an
int8 field go to the general path, which refuses them). So an add either
happens whole or not at all.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ReplayTables.engine.ids import NEXT_ID_INPLACE_SOURCE, NEXT_ID_SOURCE, NOT_STORED
from ReplayTables.engine.schema import Schema
from ReplayTables.engine.writers import FifoWriter

if TYPE_CHECKING:
    from ReplayTables.engine.table import Table

__all__ = ["compile_add_batch", "compile_add_one", "narrowing_dtypes", "safe_dtypes"]

#: Every builtin numeric dtype; a field accepts on its fast lanes those that cast to it safely.
_NUMERIC_DTYPES = tuple(np.dtype(c) for c in "?bhilqBHILQefdgFDG")


def safe_dtypes(target: np.dtype) -> frozenset[np.dtype]:
    """The dtypes whose values cast into ``target`` with no loss of range (numpy's ``safe``)."""
    return frozenset(d for d in _NUMERIC_DTYPES if np.can_cast(d, target, "safe"))


def narrowing_dtypes(target: np.dtype) -> frozenset[np.dtype]:
    """The dtypes the general path accepts into ``target`` only after a range check.

    Those that cast ``same_kind`` but not ``safe`` (float64 into float32, int64 into
    int8) and integers of the other signedness. Complex fields are left to the
    general path."""
    if target.kind not in "iuf":
        return frozenset()
    return frozenset(d for d in _NUMERIC_DTYPES if not np.can_cast(d, target, "safe")
                     and (np.can_cast(d, target, "same_kind") or (d.kind in "iu" and target.kind in "iu")))


def _narrowing_check(i: int, dtype: np.dtype, env: dict[str, Any]) -> str:
    """The fast-lane test for an array ``v{i}`` of a narrowing dtype: every value in the
    field's range (``+/-finfo.max`` or ``iinfo``), so the write keeps them all.

    NaN, inf and values just past the range fail it and go to the general path, which
    stores NaN and inf and refuses the rest: the same result, only slower."""
    env[f"NK{i}"] = narrowing_dtypes(dtype)
    if not env[f"NK{i}"]:
        return "False"
    if dtype.kind == "f":
        env[f"LO{i}"], env[f"HI{i}"] = -float(np.finfo(dtype).max), float(np.finfo(dtype).max)
    else:
        env[f"LO{i}"], env[f"HI{i}"] = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    if "WITHIN" not in env:
        env["WITHIN"] = _first_within_range(env)
    return f"(v{i}.dtype in NK{i} and WITHIN(v{i}, LO{i}, HI{i}))"


def _first_within_range(env: dict[str, Any]) -> Any:
    """``kernels.within_range`` for a generated lane, imported on its first narrowing add
    (so numba loads only then) and then bound in the lane's globals directly."""
    def first_call(values: np.ndarray, lo: float, hi: float) -> bool:
        from ReplayTables.engine.kernels import within_range

        env["WITHIN"] = within_range
        return bool(within_range(values, lo, hi))
    return first_call


def _scalar_check(i: int, dtype: np.dtype, env: dict[str, Any]) -> str:
    """The fast-lane test for a Python or numpy scalar value ``v{i}`` of a scalar field.

    True only when writing the value cannot raise or overflow: Python floats into
    float64 (float32: within its range), Python ints within the field's range,
    bools, and numpy scalars whose type casts safely.
    """
    env[f"ST{i}"] = frozenset(d.type for d in safe_dtypes(dtype))
    tests = []
    kind = dtype.kind
    if kind in "fc":
        finfo = np.finfo(dtype)
        env[f"FMAX{i}"] = float(finfo.max)
        if float(finfo.max) >= sys.float_info.max:  # every Python float fits
            tests.append(f"type(v{i}) is float")
        else:
            tests.append(f"(type(v{i}) is float and -FMAX{i} <= v{i} <= FMAX{i})")
        tests.append(f"(type(v{i}) is int and -FMAX{i} <= v{i} <= FMAX{i})")
        tests.append(f"type(v{i}) is bool")
    elif kind in "iu":
        info = np.iinfo(dtype)
        env[f"IMIN{i}"] = int(info.min)
        env[f"IMAX{i}"] = int(info.max)
        tests.append(f"(type(v{i}) is int and IMIN{i} <= v{i} <= IMAX{i})")
        tests.append(f"type(v{i}) is bool")
    elif kind == "b":
        tests.append(f"type(v{i}) is bool")
    tests.append(f"type(v{i}) in ST{i}")  # numpy scalars (np.float32(0.5) into a float64 field)
    narrow = narrowing_dtypes(dtype)
    if narrow:  # numpy scalars that fit after a range check (np.float64(0.5) into a float32 field)
        env[f"NT{i}"] = frozenset(d.type for d in narrow)
        lo, hi = ((-float(np.finfo(dtype).max), float(np.finfo(dtype).max)) if dtype.kind == "f"
                  else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)))
        env[f"SLO{i}"], env[f"SHI{i}"] = lo, hi
        tests.append(f"(type(v{i}) in NT{i} and SLO{i} <= v{i} <= SHI{i})")
    return "(" + " or ".join(tests) + ")"


def compile_add_one(table: Table) -> Any:
    """Generate ``add(item) -> id`` specialised to this schema and writer.

    It checks each field with identity tests only (exact array type, dtype object
    and shape, or an exact Python scalar type for scalar fields) and writes
    straight into the storage columns. Anything it does not recognise falls back
    to the general path, which gives the same result or a proper error.
    """
    schema = table.schema
    storage = table.storage
    assert schema.fields is not None and storage is not None
    if not _flat(schema):
        return table._add_general  # nested dicts: extra nested keys need the general check
    env: dict[str, Any] = {"ndarray": np.ndarray, "directory": table.directory,
                           "writer": table.writer, "rng": table.rng, "slow": table._add_general,
                           "NOT_STORED": NOT_STORED, **_scalar_env(table),
                           "ACQUIRE": table.lock.acquire, "RELEASE": table.lock.release, "TAG": table._tag}
    lines = ["def add_fast(item):", *_unpack_lines(schema, "item", env)]
    checks = []
    for i, f in enumerate(schema.fields):
        env[f"D{i}"] = f.dtype
        env[f"SD{i}"] = safe_dtypes(f.dtype)
        env[f"S{i}"] = f.shape
        env[f"C{i}"] = storage.columns[i]
        array_ok = (f"(type(v{i}) is ndarray and v{i}.shape == S{i} and (v{i}.dtype is D{i} or v{i}.dtype in SD{i} "
                    f"or {_narrowing_check(i, f.dtype, env)}))")
        if f.shape == ():
            checks.append(f"({_scalar_check(i, f.dtype, env)} or {array_ok})")
        else:
            checks.append(array_ok)
    lines.append("    if not (" + " and ".join(checks) + "): return slow(item)")
    lines.append("    ACQUIRE()")
    lines.append("    try:")
    body: list[str] = []
    if isinstance(table.writer, FifoWriter):
        # the ring's cursor step and the id bookkeeping inline: no method calls, one slot_id read
        env["CAP"] = table.capacity
        # slot_id through a memoryview: Python ints in and out, cheaper than numpy's scalar item/setitem. The
        # array is only ever replaced by rebinding to shared memory, which recompiles the lanes (a load
        # copies into it), so the view bound here stays the table's
        env["SID"] = table.directory.slot_id.data
        body.append("slot = W[0]")
        body.append("W[0] = slot + 1 if slot + 1 < CAP else 0")
        body.append("N[ADDED] += 1")
        body.append("old = SID[slot]")
        body.append("if old >= 0:")
        body.append("    new_id = " + NEXT_ID_SOURCE.format(old="old", capacity="CAP"))  # the id rule, live slot
        body.append("    SID[slot] = new_id")
        body.append("    N[EVICTED] += 1")
        body.append("elif old == -1 and D[1] and slot == D[0]:")
        body.append("    new_id = slot")  # a never-used slot at the end of the dense prefix: the rule's id
        body.append("    SID[slot] = slot")
        body.append("    D[0] = slot + 1")
        body.append("    if slot + 1 >= directory.filled: directory.reach(slot + 1)")  # a lazy directory
        body.append("else:")
        body.append("    new_id = directory.assign_one(slot)")  # a deleted slot: the directory's own rules
    else:
        body.append("slot = writer.place_one(rng)")
        body.append("N[ADDED] += 1")
        body.append("if slot < 0:")
        body.append("    N[NOT_STORED_N] += 1")
        body.append("    return NOT_STORED")
        body.append("if slot >= directory.filled: directory.reach(slot)")
        body.append("if directory.slot_id[slot] >= 0: N[EVICTED] += 1")
        body.append("new_id = directory.assign_one(slot)")
    for i in range(len(schema.fields)):
        body.append(f"C{i}[slot] = v{i}")
    if table.sampler.prioritized:
        env["on_insert"] = table.sampler.on_insert
        env["np"] = np
        body.append("on_insert(np.array([slot], dtype=np.int64), None, directory)")
    body.append("return new_id | TAG" if table._tag else "return new_id")
    lines += ["        " + line for line in _journalled(body, "1", table, env)]
    lines += ["    finally:", "        RELEASE()"]
    return _build("add_fast", lines, env, schema)


def compile_add_batch(table: Table) -> Any:
    """Generate ``add_batch(items) -> ids`` for the common case, else ``None``.

    The common case: a FIFO writer, no deletions so far, arrays of the field
    dtypes or of dtypes that cast to them safely (float32 rewards into a float64
    field), and a batch that fits before the ring wraps. Then the batch is checked
    with identity and set-membership tests and written with one slice assignment
    per field. Everything else (wrapping, narrowing casts, errors, priorities)
    takes the general path.
    """
    schema = table.schema
    storage = table.storage
    assert schema.fields is not None and storage is not None
    if not isinstance(table.writer, FifoWriter) or not _flat(schema):
        return None
    nf = len(schema.fields)
    env: dict[str, Any] = {"ndarray": np.ndarray, "directory": table.directory, "writer": table.writer,
                           "slow": table._add_batch_general, "CAP": table.capacity, "sampler": table.sampler,
                           "np": np, **_scalar_env(table),
                           "ACQUIRE": table.lock.acquire, "RELEASE": table.lock.release, "TAG": table._tag}
    lines = ["def add_batch_fast(items):", *_unpack_lines(schema, "items", env)]
    checks = []
    for i, f in enumerate(schema.fields):
        env[f"D{i}"] = f.dtype
        env[f"SD{i}"] = safe_dtypes(f.dtype)
        env[f"C{i}"] = storage.columns[i]
        # one tuple comparison checks the batch length and the field's shape together
        shape = "(m" + "".join(f", {d}" for d in f.shape) + ",)"
        checks.append(f"type(v{i}) is ndarray and v{i}.shape == {shape} and (v{i}.dtype is D{i} "
                      f"or v{i}.dtype in SD{i} or {_narrowing_check(i, f.dtype, env)})")
    lines.append("    if type(v0) is not ndarray or not v0.ndim: return slow(items)")
    lines.append("    m = v0.shape[0]")
    lines.append("    if not (" + " and ".join(checks) + "): return slow(items)")
    # a batch the lane does not take (empty, wrapping, or after deletions) goes to the general path once
    # the lock is released: ids stays None until every check passed, and nothing is written before that
    body = ["start = W[0]",
            "stop = start + m",
            "count = D[0]",
            "if m == 0 or stop > CAP or not D[1] or (stop > count and start != count): ids = None",
            "else:"]
    # the directory's slot ids, bound once as the single lane binds their memoryview (see compile_add_one)
    env["SIDA"] = table.directory.slot_id
    write = ["if stop <= count:",  # every slot live: the id rule's first case, stepped in place
             "    live = SIDA[start:stop]",
             "    " + NEXT_ID_INPLACE_SOURCE.format(old="live", capacity="CAP"),
             "    ids = live.copy()",
             "    N[EVICTED] += m",
             "else:",  # never-written slots (start == count): the rule gives the slots themselves
             "    if stop >= directory.filled: directory.reach(stop)",  # a lazy directory
             "    ids = np.arange(start, stop, dtype=np.int64)",
             "    SIDA[start:stop] = ids",
             "    D[0] = stop",
             "W[0] = stop if stop < CAP else 0",
             "N[ADDED] += m"]
    write += [f"C{i}[start:stop] = v{i}" for i in range(nf)]
    if table.sampler.prioritized:
        write.append("sampler.on_insert(np.arange(start, stop, dtype=np.int64), None, directory)")
    # the journal's count of live slots: all m (the dense prefix covers them) or none (never written)
    body += ["    " + line for line in _journalled(write, "m, m if stop <= count else 0", table, env)]
    lines += ["    ACQUIRE()", "    try:", *("        " + line for line in body), "    finally:", "        RELEASE()",
              "    if ids is None: return slow(items)",
              "    return ids | TAG" if table._tag else "    return ids"]
    return _build("add_batch_fast", lines, env, schema)


def _journalled(body: list[str], n: str, table: Table, env: dict[str, Any]) -> list[str]:
    """``body`` (lines run under the lock) bracketed by the table's add journal, if it has one (a shared
    table): ``open_add(n)`` (``n``: the source of its arguments) before its first write and ``close_add()``
    before every return and at its end, so a process stopped inside the writes has them rolled back by
    the next holder of the lock."""
    journal = table.journal
    if journal is None:
        return body
    env["J_OPEN"], env["J_CLOSE"] = journal.open_add, journal.close_add
    out = [f"J_OPEN({n})"]
    for line in body:
        stripped = line.lstrip()
        if stripped.startswith("return"):
            out.append(line[:len(line) - len(stripped)] + "J_CLOSE()")
        out.append(line)
    if not body[-1].lstrip().startswith("return"):
        out.append("J_CLOSE()")
    return out


def _scalar_env(table: Table) -> dict[str, Any]:
    """The arena scalars the lanes read and write as Python numbers (see ``state.py``):
    ``W[0]`` the writer's position, ``D[0]``/``D[1]`` the directory's count and identity
    flag, ``N[...]`` the table's counters. Looked up per call through the components'
    ``scalars`` would cost an attribute chain; a rebinding (attaching shared memory)
    recompiles the lanes."""
    index = table.counters.index
    return {"W": table.writer.scalars.view, "D": table.directory.scalars.view, "N": table.counters.view,
            "ADDED": index["added"], "EVICTED": index["evicted"], "NOT_STORED_N": index["not_stored"]}


def _flat(schema: Schema) -> bool:
    """True unless the schema is a nested dict (whose extra nested keys only the general path checks)."""
    assert schema.fields is not None
    return schema.kind != "dict" or all(len(f.path) == 1 for f in schema.fields)


def _unpack_lines(schema: Schema, var: str, env: dict[str, Any]) -> list[str]:
    """Code that binds ``v0 .. vN`` to the fields of ``var`` (a flat schema), or hands
    anything of another type or with other keys to ``slow``."""
    assert schema.fields is not None
    nf = len(schema.fields)
    if schema.kind in ("namedtuple", "dataclass"):
        env["STRUCT"] = schema.structure
        lines = [f"    if type({var}) is not STRUCT: return slow({var})"]
        if schema.kind == "namedtuple":
            lines.append("    " + ", ".join(f"v{i}" for i in range(nf)) + ("," if nf == 1 else "") + f" = {var}")
        else:
            lines += [f"    v{i} = {var}.{f.path[0]}" for i, f in enumerate(schema.fields)]
        return lines
    lines = [f"    if type({var}) is not dict or len({var}) != {nf}: return slow({var})", "    try:"]
    lines += [f"        v{i} = {var}[{f.path[0]!r}]" for i, f in enumerate(schema.fields)]
    lines.append(f"    except KeyError: return slow({var})")
    return lines


def _build(name: str, lines: list[str], env: dict[str, Any], schema: Schema) -> Any:
    """Compile the generated function ``name`` in ``env`` and return it."""
    exec(compile("\n".join(lines), f"<ReplayTables {name} {schema!r}>", "exec"), env)
    return env[name]
