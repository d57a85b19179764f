"""dbt-duckdb plugin: dbt builds in DuckDB, every model lands as an Iceberg table in the catalog.

``configure_connection`` gives dbt's DuckDB the bundled extensions, the object store's credentials
and a view for every catalog table (so sources and earlier models resolve). The ``iceberg_table``
materialization (dbt/macros/materializations.sql) writes a model's rows to a staging Parquet
file and calls ``store``, which commits them to the catalog in one overwrite and reports the new
metadata location back so the model's relation can be re-bound to the committed snapshot.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import duckdb
import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from ._catalog import load_catalog
from ._engine import bind_tables, configure_storage, install_extensions
from ._load import normalize_schema
from ._settings import Settings
from ._stack import apply_stack_state

logger = logging.getLogger(__name__)


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        settings = Settings.load()
        self.settings = apply_stack_state(settings) if settings.profile == "stack" else settings
        self.catalog = load_catalog(self.settings)

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        install_extensions(conn)
        configure_storage(conn, self.settings)
        bind_tables(conn, self.catalog)

    def store(self, target_config: TargetConfig) -> None:
        relation = target_config.relation
        result: dict[str, Any] = target_config.config
        assert target_config.location is not None
        data = pq.read_table(target_config.location.path)
        data = data.cast(normalize_schema(data.schema))
        ident = (str(relation.schema), str(relation.identifier))
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
