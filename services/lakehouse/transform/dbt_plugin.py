"""dbt-duckdb plugin: dbt builds in DuckDB, every model lands as an Iceberg table in the catalog.

``configure_connection`` gives dbt's DuckDB the bundled extensions, the object store's credentials
and a view for every catalog table (so sources and earlier models resolve). The ``iceberg_table``
materialization (dbt/macros/materializations.sql) writes a model's rows to a staging Parquet
file and calls ``store``, which commits them to the catalog in one overwrite and reports the new
metadata location back so the model's relation can be re-bound to the committed snapshot.

The staging file is read into memory and removed before the commit, whatever happens next: no
copy of a governed table outlives the step outside Iceberg (``lakehouse dbt`` also gives each
run a private staging directory that it removes when dbt exits). A model whose personal columns
(its contract's ``pii``, or the policies' encrypted columns for that table) hold anything but
this keystore's ciphertext or NULL is refused before anything is written.
"""

from __future__ import annotations

import logging
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from lakehouse.catalog import load_catalog
from lakehouse.config import Settings, apply_stack_state, private_dir, project_of
from lakehouse.iceberg import bind_tables, configure_storage, install_extensions, normalize_schema
from lakehouse.ingest import check_personal, personal_columns
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
        data = data.cast(normalize_schema(data.schema))
        ident = (str(relation.schema), str(relation.identifier))
        identifier = ".".join(ident)
        personal = self._personal_columns(identifier)
        if personal & set(data.column_names):
            check_personal(data, personal, self.keystore, identifier)
        properties = {
            "lakehouse.dbt-model": str(result.get("unique_id", "")),
            "lakehouse.dbt-invocation": str(result.get("invocation_id", "")),
        }
        try:
            table = self.catalog.load_table(ident)
            table = _replace_schema_if_changed(self.catalog, table, data.schema)
        except NoSuchTableError:
            table = self.catalog.create_table(
                ident,
                schema=data.schema,
                properties={"lakehouse.dbt-model": properties["lakehouse.dbt-model"]},
            )
        if table.current_snapshot() is None:
            table.append(data, snapshot_properties=properties)
        else:
            with warnings.catch_warnings():  # pyiceberg warns when the replaced snapshot was empty
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                table.overwrite(data, snapshot_properties=properties)
        result["metadata_location"] = table.metadata_location
        result["rows"] = data.num_rows
        logger.info("committed %s rows to %s.%s", data.num_rows, *ident)


def _replace_schema_if_changed(catalog: Any, table: Table, schema: Any) -> Table:
    """Evolve the table to the model's new columns; recreate it if the change cannot evolve."""
    current = normalize_schema(table.schema().as_arrow())
    if current.equals(schema):
        return table
    try:
        with table.update_schema(allow_incompatible_changes=False) as update:
            update.union_by_name(schema)
            for name in set(current.names) - set(schema.names):
                update.delete_column(name)
        reloaded: Table = catalog.load_table(table.name())
        return reloaded
    except Exception as exc:  # an incompatible type change: a full-refresh model starts over
        logger.warning("recreating %s: its schema cannot evolve (%s)", ".".join(table.name()), exc)
        catalog.drop_table(table.name())
        created: Table = catalog.create_table(table.name(), schema=schema, properties=dict(table.properties))
        return created
