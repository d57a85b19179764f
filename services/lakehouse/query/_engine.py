"""The embedded SQL engine: DuckDB over the Iceberg catalog.

A table is bound as a view ``layer.table`` over ``iceberg_scan`` of its current metadata file
when a query names it (and re-bound when a commit has moved it), so a query pays only for the
tables it reads, and any Iceberg engine and this one read the same snapshot. Extensions come
from the pinned ``duckdb-extension-*`` wheels: DuckDB cannot download them here.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable

from lakehouse.catalog import list_tables
from lakehouse.config import Settings
from lakehouse.errors import NoSuchTableError, QueryError
from lakehouse.iceberg import BoundTable, new_source_connection, quote_ident, scan_sql

from ._governed import parse_shape

logger = logging.getLogger(__name__)


_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist", re.IGNORECASE)


_MISSING_SCHEMA = re.compile(r"Schema with name (\S+) does not exist", re.IGNORECASE)


class Engine:
    """The operator's engine: a DuckDB connection over the whole catalog, unrestricted."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._bound: dict[str, BoundTable] = {}  # "layer.table" -> what its view reads

    @property
    def tables(self) -> list[BoundTable]:
        """The tables bound so far (those queries have named, or every one after ``connect()``)."""
        return list(self._bound.values())

    def new_connection(self) -> duckdb.DuckDBPyConnection:
        return new_source_connection(self.settings)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            self._conn = self.new_connection()
        return self._conn

    def connect(self) -> duckdb.DuckDBPyConnection:
        """The connection with every table bound (for tools that query it directly)."""
        conn = self._connection()
        self.bind_all()
        return conn

    def bind_all(self) -> None:
        for layer, name in list_tables(self.catalog):
            self._bind(layer, name)

    def refresh(self) -> None:
        """Re-bind the views bound so far to their tables' newest snapshots."""
        for key in list(self._bound):
            layer, name = key.split(".", 1)
            self._bind(layer, name)

    def _bind(self, layer: str, name: str) -> bool:
        """Bind ``layer.name`` to its current snapshot; False when no such table exists."""
        key = f"{layer}.{name}"
        conn = self._connection()
        try:
            table = self.catalog.load_table((layer, name))
        except (IcebergNoSuchTable, NoSuchNamespaceError, ValueError):
            if self._bound.pop(key, None) is not None:
                conn.execute(f"drop view if exists {quote_ident(layer)}.{quote_ident(name)}")
            return False
        bound = self._bound.get(key)
        if bound is not None and bound.table.metadata_location == table.metadata_location:
            return True
        conn.execute(f"create schema if not exists {quote_ident(layer)}")
        conn.execute(f"create or replace view {quote_ident(layer)}.{quote_ident(name)} as {scan_sql(table)}")
        self._bound[key] = BoundTable(layer, name, table)
        return True

    def _bind_for(self, statement: str, schema: str | None) -> None:
        """Bind the tables ``statement`` names; a statement DuckDB's parser cannot name tables
        in (DDL, a PRAGMA) gets every table."""
        try:
            shape = parse_shape(self._connection(), statement)
        except QueryError:  # not a query DuckDB serializes (DDL, SET, ...), or not valid SQL
            self.bind_all()
            return
        for _, layer, name in shape.tables:
            if layer or schema:
                self._bind(layer or schema or "", name)

    def statements(self, query: str) -> list[str]:
        """``query`` split into its statements, as DuckDB splits them (strings and comments
        kept whole)."""
        try:
            return [s.query.strip() for s in self._connection().extract_statements(query)]
        except duckdb.Error as exc:
            raise QueryError(_message(exc)) from exc

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run ``query`` (one statement or several); the last statement's result."""
        last = pa.table({})
        for _, result in self.sql_each(query, schema=schema):
            last = result
        return last

    def sql_each(self, query: str, *, schema: str | None = None) -> Iterator[tuple[str, pa.Table]]:
        """Run each statement of ``query`` in turn, yielding it with its result."""
        for statement in self.statements(query) or [query]:
            yield statement, self._run(statement, schema)

    def _run(self, statement: str, schema: str | None) -> pa.Table:
        conn = self._connection()
        try:
            conn.execute(f"use memory.{quote_ident(schema)}" if schema else "use memory.main")
        except duckdb.CatalogException:
            if not schema or not self._schema_exists(schema):
                raise NoSuchTableError(f"no layer {schema}; layers: {self._layers()}") from None
            conn.execute(f"create schema if not exists {quote_ident(schema)}")
            conn.execute(f"use memory.{quote_ident(schema)}")
        self._bind_for(statement, schema)
        try:
            result = conn.execute(statement)
            return result.to_arrow_table() if result.description else pa.table({})
        except duckdb.CatalogException as exc:
            missing = _MISSING_TABLE.search(str(exc)) or _MISSING_SCHEMA.search(str(exc))
            if missing:
                what = _qualified(conn, statement, missing[1].strip("!\"'"))
                raise NoSuchTableError(self._no_such_table(what, schema)) from exc
            raise QueryError(_message(exc)) from exc
        except duckdb.Error as exc:
            raise QueryError(_message(exc)) from exc

    def _schema_exists(self, schema: str) -> bool:
        return any(layer == schema for layer, _ in list_tables(self.catalog))

    def _layers(self) -> str:
        return ", ".join(sorted({layer for layer, _ in list_tables(self.catalog)})) or "(none yet)"

    def _no_such_table(self, what: str, schema: str | None) -> str:
        existing = [f"{layer}.{name}" for layer, name in list_tables(self.catalog)]
        if not existing:
            return (
                f"no table {what}: the lakehouse has no tables yet (run `lakehouse load` or `lakehouse demo`)"
            )
        wanted = what if "." in what or not schema else f"{schema}.{what}"
        close = difflib.get_close_matches(wanted.lower(), existing, n=3, cutoff=0.6)
        close += [t for t in existing if t.split(".", 1)[1] == what.lower() and t not in close]
        hint = f"; did you mean {' or '.join(close[:3])}?" if close else ""
        return f"no table {what}{hint} (`lakehouse tables` lists the {len(existing)} tables)"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._bound.clear()


def _qualified(conn: duckdb.DuckDBPyConnection, statement: str, name: str) -> str:
    """``layer.name`` as the statement wrote it (DuckDB's message names the table alone)."""
    if "." in name:
        return name
    try:
        tables = parse_shape(conn, statement).tables
    except QueryError:
        return name
    return next((f"{layer}.{table}" for _, layer, table in tables if layer and table == name), name)


def _message(exc: duckdb.Error) -> str:
    """DuckDB's message whole: its candidate bindings, the statement's line and the caret."""
    return str(exc).strip()
