"""dbt-duckdb plugin: dbt builds in DuckDB, every model lands as an Iceberg table in the catalog.

``configure_connection`` gives dbt's DuckDB the bundled extensions, the object store's credentials
and a view for every catalog table (so sources and earlier models resolve). The ``iceberg_table``
materialization (dbt/macros/materializations.sql) writes a model's rows to a staging Parquet
file and calls ``store``, which commits them through the write path (``ingest.replace_model``) in one overwrite and reports the new
metadata location back so the model's relation can be re-bound to the committed snapshot.

The staging file is read into memory and removed before the commit, whatever happens next: no
copy of a governed table outlives the step outside Iceberg (``lakehouse dbt`` also gives each
run a private staging directory that it removes when dbt exits). A model whose personal columns
(its contract's ``pii``, or the policies' encrypted columns for that table) hold anything but
this keystore's ciphertext or NULL is refused before anything is written.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig

from lakehouse.catalog import load_catalog
from lakehouse.config import Settings, apply_stack_state, private_dir, project_of
from lakehouse.iceberg import bind_tables, configure_storage, install_extensions
from lakehouse.ingest import personal_columns, replace_model
from lakehouse.privacy import Keystore

logger = logging.getLogger(__name__)


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        settings = Settings.load()
        self.settings = apply_stack_state(settings) if settings.profile == "stack" else settings
        self.catalog = load_catalog(self.settings)
        self.project = project_of(self.settings)  # LAKEHOUSE_PROJECT_DIR, set by `lakehouse dbt`

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        if creds.external_root:  # dbt run directly, not through `lakehouse dbt`: still private
            private_dir(Path(creds.external_root))

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        install_extensions(conn)
        configure_storage(conn, self.settings)
        bind_tables(conn, self.catalog)

    @cached_property
    def keystore(self) -> Keystore:
        from lakehouse.privacy import open_keystore

        return open_keystore(self.settings)

    def _personal_columns(self, identifier: str) -> set[str]:
        cache: dict[str, set[str]] = self.__dict__.setdefault("_personal", {})
        if identifier not in cache:
            cache[identifier] = personal_columns(identifier, self.project)
        return cache[identifier]

    def store(self, target_config: TargetConfig) -> None:
        relation = target_config.relation
        result: dict[str, Any] = target_config.config
        assert target_config.location is not None
        staging = Path(target_config.location.path)
        try:
            data = pq.read_table(staging)
        finally:
            staging.unlink(missing_ok=True)  # the rows live on in memory, then in Iceberg only
        identifier = f"{relation.schema}.{relation.identifier}"
        summary = {
            "lakehouse.dbt-model": str(result.get("unique_id", "")),
            "lakehouse.dbt-invocation": str(result.get("invocation_id", "")),
        }
        personal = self._personal_columns(identifier)
        keystore = self.keystore if personal & set(data.column_names) else None
        table = replace_model(
            self.catalog, identifier, data, summary=summary, personal=personal, keystore=keystore
        )
        result["metadata_location"] = table.metadata_location
        result["rows"] = data.num_rows
        logger.info("committed %s rows to %s", data.num_rows, identifier)
