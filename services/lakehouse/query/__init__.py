"""Queries: the operator engine and the governed engine that runs users' SQL under policy."""

from __future__ import annotations

from ._engine import Engine
from ._governed import MAX_QUERY_CHARS, GovernedEngine, export_duckdb, tables_in

__all__ = ["MAX_QUERY_CHARS", "Engine", "GovernedEngine", "export_duckdb", "tables_in"]
