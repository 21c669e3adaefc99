"""The engine: small components every front end wires together.

schema (fields), storage (memory), ids (slots and generations), writers (where
an item goes), samplers (what comes out), sumtree/kernels (prioritized search),
table (the core that applies the rules).
"""
from ReplayTables.engine.ids import NOT_STORED
from ReplayTables.engine.schema import Field, FieldSpec, Schema
from ReplayTables.engine.table import Sample, Table

__all__ = ["NOT_STORED", "Field", "FieldSpec", "Sample", "Schema", "Table"]
