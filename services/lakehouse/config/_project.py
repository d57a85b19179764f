"""The user's project: where its dbt project, contracts and policies live."""

from __future__ import annotations

import os
from pathlib import Path

from lakehouse.errors import ConfigurationError


def project_dir() -> Path:
    """The dbt project: ``LAKEHOUSE_DBT_PROJECT_DIR``, else ``dbt/`` of this checkout."""
    configured = os.environ.get("LAKEHOUSE_DBT_PROJECT_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[3] / "dbt"
    if not (path / "dbt_project.yml").exists():
        raise ConfigurationError(f"no dbt project at {path}; set LAKEHOUSE_DBT_PROJECT_DIR")
    return path
