"""Policies: who may read which rows and columns, compiled for DuckDB and Trino."""

from __future__ import annotations

from ._compile import filter_sql, mask_sql, table_schemas, trino_decision_sql, write_compiled
from ._policy import Decision, Policy, load_policy

__all__ = [
    "Decision",
    "Policy",
    "filter_sql",
    "load_policy",
    "mask_sql",
    "table_schemas",
    "trino_decision_sql",
    "write_compiled",
]
