"""Policies: who may read which rows and columns, compiled for DuckDB and Trino."""

from __future__ import annotations

from ._compile import (
    OPERATORS,
    PII_READERS_FILE,
    filter_sql,
    mask_sql,
    table_schemas,
    trino_decision_sql,
    write_compiled,
    write_pii_readers,
)
from ._policy import Decision, Policy, load_policy

__all__ = [
    "OPERATORS",
    "PII_READERS_FILE",
    "Decision",
    "Policy",
    "filter_sql",
    "load_policy",
    "mask_sql",
    "table_schemas",
    "trino_decision_sql",
    "write_compiled",
    "write_pii_readers",
]
