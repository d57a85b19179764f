"""dbt: running the project and the plugin that lets dbt-duckdb read and write Iceberg."""

from __future__ import annotations

from ._dbt import run_dbt, started_dbt

__all__ = ["run_dbt", "started_dbt"]
