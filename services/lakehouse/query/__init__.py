"""Queries: the operator engine, the governed engine that runs users' SQL under policy, and
Trino (which enforces the policy itself) as the authenticated user."""

from __future__ import annotations

from ._engine import Engine
from ._governed import MAX_QUERY_CHARS, GovernedEngine, export_duckdb, tables_in
from ._trino import TrinoEngine, connect, https_session

__all__ = [
    "MAX_QUERY_CHARS",
    "Engine",
    "GovernedEngine",
    "TrinoEngine",
    "connect",
    "export_duckdb",
    "https_session",
    "tables_in",
]
