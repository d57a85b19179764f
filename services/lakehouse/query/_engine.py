"""The embedded SQL engine: DuckDB over the Iceberg catalog.

Every catalog table is bound as a view ``layer.table`` over ``iceberg_scan`` of its current
metadata file, so any Iceberg engine and this one read the same snapshot. Extensions come from
the pinned ``duckdb-extension-*`` wheels: DuckDB cannot download them here.
"""

from __future__ import annotations

import logging
import re

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog

from lakehouse.config import Settings
from lakehouse.errors import NoSuchTableError, QueryError
from lakehouse.iceberg import BoundTable, bind_tables, new_source_connection, quote_ident

logger = logging.getLogger(__name__)


_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist", re.IGNORECASE)


class Engine:
    """The operator's engine: a DuckDB connection with the whole catalog bound, unrestricted."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._conn: duckdb.DuckDBPyConnection | None = None
        self.tables: list[BoundTable] = []

    def new_connection(self) -> duckdb.DuckDBPyConnection:
        return new_source_connection(self.settings)

    def connect(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            conn = self.new_connection()
            self.tables = bind_tables(conn, self.catalog)
            self._conn = conn
        return self._conn

    def refresh(self) -> None:
        """Re-bind views to the tables' newest snapshots."""
        if self._conn is not None:
            self.tables = bind_tables(self._conn, self.catalog)

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        conn = self.connect()
        try:
            if schema:
                conn.execute(f"use memory.{quote_ident(schema)}")
            else:
                conn.execute("use memory.main")
            result = conn.execute(query)
            return result.to_arrow_table() if result.description else pa.table({})
        except duckdb.CatalogException as exc:
            match = _MISSING_TABLE.search(str(exc))
            if match or (schema and "Schema" in str(exc)):
                existing = ", ".join(t.identifier for t in self.tables) or "(none yet: run `lakehouse load`)"
                what = match[1] if match else schema
                raise NoSuchTableError(f"no table {what}; tables that exist: {existing}") from exc
            raise QueryError(str(exc).splitlines()[0]) from exc
        except duckdb.Error as exc:
            raise QueryError(str(exc).splitlines()[0]) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
