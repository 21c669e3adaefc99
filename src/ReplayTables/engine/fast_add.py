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

A single add has two lanes. The exact-layout lane takes an item whose fields
already have the stored dtypes and shapes (the README's NamedTuple fed float32
arrays and Python scalars): it copies each field into a one-row scratch buffer
by a ``memoryview`` assignment, which refuses any other format or shape by
raising before anything of the table is touched, and then places the row and
copies it into the table in one assignment. That C-level check replaces the
per-field shape and dtype tests, and one row copy replaces five numpy writes:
about a fifth of the lane's cost (``benchmarks/profile_paths.py --workloads W1lane``).
What it refuses goes to the checked lane, which accepts safe and range-checked
casts, and what that one refuses to the general path.

The checked lanes test their input without the table's lock (the tests read
only the input; the exact-layout lane fills its scratch row holding the lock, as
the scratch is one per table). Every lane holds the lock, through the lock's bound
``acquire``/``release`` in a ``try``/``finally`` (cheaper than a ``with`` block),
for every read and write of the table. The id of a new item follows the one id
rule of ``ids.py`` (``NEXT_ID_SOURCE``), and carries the table's shard tag. On a shared table
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

    Two lanes, the first handing what it does not take to the second: the
    exact-layout lane (:func:`_compile_exact_add_one`, when the row layout allows it)
    for items whose every field already has the stored dtype and shape, and the
    checked lane (:func:`_compile_checked_add_one`) for safe and range-checked casts.
    Anything neither recognises goes to the table's general path, which gives the
    same result or a proper error.
    """
    checked = _compile_checked_add_one(table)
    exact = _compile_exact_add_one(table, checked)
    return checked if exact is None else exact


def _compile_checked_add_one(table: Table) -> Any:
    """The checked single-add lane: identity tests on each field (exact array type,
    a dtype that casts safely, or a range-checked narrowing one, the shape; an exact
    Python or numpy scalar type for scalar fields), then direct writes into the
    storage columns."""
    schema = table.schema
    storage = table.storage
    assert schema.fields is not None and storage is not None
    if not _flat(schema):
        return table._add_general  # nested dicts: extra nested keys need the general check
    env = _single_env(table)
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
    body = _place_one_lines(table, env) + [f"C{i}[slot] = v{i}" for i in range(len(schema.fields))]
    body += _inserted_one_lines(table, env)
    lines += ["        " + line for line in _journalled(body, "1", table, env)]
    lines += ["    finally:", "        RELEASE()"]
    return _build("add_fast", lines, env, schema)


#: Buffer formats a memoryview can be cast to and assign items of (``struct`` characters).
_MEMORYVIEW_FORMATS = frozenset("bBhHiIlLqQfd?")


def _compile_exact_add_one(table: Table, checked: Any) -> Any:
    """The exact-layout single-add lane, or ``None`` where the row layout does not allow it.

    Every field is copied into a one-row scratch buffer through ``memoryview``
    assignments, which take an array only when its buffer has exactly the field's
    format and shape (no casting, no broadcasting) and refuse anything else by
    raising, having written only the scratch row. That one C-level check replaces
    the shape and dtype tests of the checked lane. Once every field is in, the
    row is placed (cursor, id, counters) and copied into the table's rows in one
    assignment. An item the scratch refuses (another dtype, shape or byte order)
    goes to ``checked``, the lane that casts, so this lane changes speed only.

    Fields are Python type-tested first (``ndarray`` exactly; scalar fields the
    scalar types of the checked lane, range-checked), so only what the checked
    lane would accept as is reaches the scratch; the first array field's dtype is
    tested too, so the common cast (float64 observations into float32 fields)
    goes to the checked lane without paying for a raised exception.

    Possible when the storage's rows are one C-contiguous ``uint8`` array and every
    field is a scalar or 1-D array of a format ``memoryview`` handles, at an offset
    that is a multiple of its item size (``row_layout`` aligns fields so). The
    scratch is filled holding the table's lock: it is one per table, shared by its
    threads.
    """
    schema = table.schema
    storage = table.storage
    assert schema.fields is not None and storage is not None
    rows = getattr(storage, "rows", None)
    offsets = getattr(storage, "offsets", None)
    if not _flat(schema) or not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.dtype != np.uint8 \
            or not rows.flags.c_contiguous or offsets is None or rows.shape[0] != table.capacity:
        return None
    row_bytes = int(rows.shape[1])
    scratch: Any = memoryview(bytearray(row_bytes))  # cast below to each field's format
    env = _single_env(table)
    env.update({"checked": checked, "ROW": scratch, "ROWS": rows.data.cast("B"), "RB": row_bytes})
    writes, tests = [], []
    arrays = [i for i, f in enumerate(schema.fields) if f.shape != ()]
    for i, (f, offset) in enumerate(zip(schema.fields, offsets)):
        fmt = np.empty(1, f.dtype).data.format if f.dtype.isnative else ""
        if fmt not in _MEMORYVIEW_FORMATS or len(f.shape) > 1 or offset % f.dtype.itemsize \
                or row_bytes % f.dtype.itemsize:
            return None
        view = f"X{ord(fmt)}"
        env[view] = scratch.cast(fmt)
        at = offset // f.dtype.itemsize
        if f.shape == ():
            tests.append(_scalar_check(i, f.dtype, env))
            writes.append(f"{view}[{at}] = v{i}")
            continue
        tests.append(f"type(v{i}) is ndarray")
        if i == arrays[0]:  # the first array field's dtype too: an item of cast arrays skips the raise (~0.5 µs)
            env["D_FIRST"] = f.dtype
            tests[-1] += f" and v{i}.dtype is D_FIRST"
        writes.append(f"{view}[{at}:{at + f.shape[0]}] = v{i}")
    lines = ["def add_exact(item):", *_unpack_lines(schema, "item", env)]
    lines.append("    if not (" + " and ".join(tests) + "): return checked(item)")
    lines += ["    ACQUIRE()", "    try:", "        try:"]
    lines += ["            " + line for line in writes]
    # what the scratch refuses raises before the table is touched: the checked lane decides
    lines += ["        except (TypeError, ValueError, OverflowError):", "            pass", "        else:"]
    body = [*_place_one_lines(table, env), "ROWS[slot * RB:slot * RB + RB] = ROW", *_inserted_one_lines(table, env)]
    lines += ["            " + line for line in _journalled(body, "1", table, env)]
    lines += ["    finally:", "        RELEASE()", "    return checked(item)"]
    return _build("add_exact", lines, env, schema)


def _single_env(table: Table) -> dict[str, Any]:
    """The globals both single-add lanes share."""
    return {"ndarray": np.ndarray, "directory": table.directory, "writer": table.writer, "rng": table.rng,
            "slow": table._add_general, "NOT_STORED": NOT_STORED, **_scalar_env(table),
            "ACQUIRE": table.lock.acquire, "RELEASE": table.lock.release, "TAG": table._tag}


def _place_one_lines(table: Table, env: dict[str, Any]) -> list[str]:
    """The lines (run under the lock) that place one item: its slot (``slot``), its id
    (``new_id``) by the one id rule, and the counters; ``return NOT_STORED`` where the
    writer declines it."""
    if isinstance(table.writer, FifoWriter):
        # the ring's cursor step and the id bookkeeping inline: no method calls, one slot_id read
        env["CAP"] = table.capacity
        # slot_id through a memoryview: Python ints in and out, cheaper than numpy's scalar item/setitem. The
        # array is only ever replaced by rebinding to shared memory, which recompiles the lanes (a load
        # copies into it), so the view bound here stays the table's
        env["SID"] = table.directory.slot_id.data
        return ["slot = W[0]",
                "W[0] = slot + 1 if slot + 1 < CAP else 0",
                "N[ADDED] += 1",
                "old = SID[slot]",
                "if old >= 0:",
                "    new_id = " + NEXT_ID_SOURCE.format(old="old", capacity="CAP"),  # the id rule, live slot
                "    SID[slot] = new_id",
                "    N[EVICTED] += 1",
                "elif old == -1 and D[1] and slot == D[0]:",
                "    new_id = slot",  # a never-used slot at the end of the dense prefix: the rule's id
                "    SID[slot] = slot",
                "    D[0] = slot + 1",
                "    if slot + 1 >= directory.filled: directory.reach(slot + 1)",  # a lazy directory
                "else:",
                "    new_id = directory.assign_one(slot)"]  # a deleted slot: the directory's own rules
    return ["slot = writer.place_one(rng)",
            "N[ADDED] += 1",
            "if slot < 0:",
            "    N[NOT_STORED_N] += 1",
            "    return NOT_STORED",
            "if slot >= directory.filled: directory.reach(slot)",
            "if directory.slot_id[slot] >= 0: N[EVICTED] += 1",
            "new_id = directory.assign_one(slot)"]


def _inserted_one_lines(table: Table, env: dict[str, Any]) -> list[str]:
    """The lines after an item's rows are written: the sampler's insert hook, and the id returned."""
    lines = []
    if table.sampler.prioritized:
        env["on_insert"] = table.sampler.on_insert
        env["np"] = np
        lines.append("on_insert(np.array([slot], dtype=np.int64), None, directory)")
    lines.append("return new_id | TAG" if table._tag else "return new_id")
    return lines


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
