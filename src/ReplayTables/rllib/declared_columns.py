"""Columns declared up front (``columns=``): what a shared RLlib buffer needs instead of learning them.

An RLlib buffer normally learns its columns from the first batch. A buffer in
shared memory lays out its rows when it is made, so ``shared=True`` takes
``columns``: a mapping of column name to ``(shape, dtype)`` (or a
:class:`~ReplayTables.engine.schema.FieldSpec`, or a nested mapping for dict
columns), the per-row shape and dtype of every column the batches will carry
(``seq_lens`` excepted: it is read, not stored). Saved in a checkpoint's
``init`` as JSON: a list of ``{"path", "shape", "dtype"}`` fields in row order
(a list, so the order survives a manifest written with sorted keys).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ReplayTables.engine.schema import Schema
from ReplayTables.errors import ConfigError, ReplayTablesError

__all__ = ["columns_json", "declared_schema"]


def _from_fields(fields: list[Any]) -> dict[str, Any]:
    """The nested structure of saved ``{"path", "shape", "dtype"}`` fields, in their order."""
    out: dict[str, Any] = {}
    for field in fields:
        if not isinstance(field, Mapping) or set(field) != {"path", "shape", "dtype"} \
                or not isinstance(field["path"], list) or not field["path"] \
                or not all(isinstance(part, str) for part in field["path"]) or not isinstance(field["shape"], list):
            raise ConfigError("columns", field, "a field {path: [names], shape: [sizes], dtype: str}")
        node = out
        for part in field["path"][:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("columns", field, "paths that do not run through a leaf")
        node[field["path"][-1]] = (tuple(field["shape"]), field["dtype"])
    return out


def _structure(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in value.items():
        if not isinstance(name, str):
            raise ConfigError(where, name, "column names that are strings")
        out[name] = _structure(spec, f"{where}[{name!r}]") if isinstance(spec, Mapping) else spec
    return out


def declared_schema(columns: Any) -> Schema:
    """The schema of ``columns`` (see the module docstring); every column's shape and dtype must be given."""
    if isinstance(columns, list) and columns:  # the saved form (columns_json)
        columns = _from_fields(columns)
    if not isinstance(columns, Mapping) or not columns:
        raise ConfigError("columns", columns, "a mapping of column name to (shape, dtype) for every stored column")
    try:
        schema = Schema.from_structure(_structure(columns, "columns"))
    except ReplayTablesError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError("columns", columns, f"a mapping of column name to (shape, dtype) ({exc})") from None
    if not schema.resolved:
        raise ConfigError("columns", columns, "a shape and a dtype for every column (the shared rows are laid "
                                              "out when the buffer is made)")
    return schema


def columns_json(schema: Schema) -> list[dict[str, Any]]:
    """``columns`` as JSON (the fields in row order), which :func:`declared_schema` reads back."""
    assert schema.fields is not None
    return [field.to_json() for field in schema.fields]
