"""dbt: running the project and the plugin that lets dbt-duckdb read and write Iceberg."""

from __future__ import annotations

from ._dbt import run_dbt, started_dbt
from ._publish import Published, build_and_publish

__all__ = ["Published", "build_and_publish", "run_dbt", "started_dbt"]
