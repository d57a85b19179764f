"""DuckDB over Iceberg: the extensions, object-store settings and scans every DuckDB-based
reader (the engines, the dbt plugin) shares.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.catalog import list_tables
from lakehouse.config import Settings, private_dir

logger = logging.getLogger(__name__)


EXTENSIONS = ("avro", "httpfs", "iceberg")  # iceberg loads avro by name: install it first


def extension_directory(settings: Settings) -> Path:
    return settings.home / "duckdb" / "extensions"


def install_extensions(conn: duckdb.DuckDBPyConnection) -> None:
    """Install the bundled extensions into the connection's extension directory and load them."""
    version = conn.execute("pragma version").fetchone()[0]  # type: ignore[index]
    for name in EXTENSIONS:
        module = importlib.import_module(f"duckdb_extension_{name}")
        path = Path(module.__file__).parent / "extensions" / version / f"{name}.duckdb_extension"  # type: ignore[arg-type]
        installed = conn.execute(
            "select installed from duckdb_extensions() where extension_name = ?", [name]
        ).fetchone()
        if not installed or not installed[0]:
            conn.execute(f"install '{path}'")
        conn.execute(f"load {name}")


def configure_storage(conn: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Give DuckDB the object store's credentials (S3 profiles) as a temporary secret."""
    storage = settings.storage
    if storage.type != "s3":
        return
    # every value is quoted as a SQL literal: a secret holding a quote must not end the string
    parts = [
        "type s3",
        f"region {_sql_literal(storage.region)}",
        f"url_style {_sql_literal('path' if storage.path_style else 'vhost')}",
    ]
    if storage.access_key_id and storage.secret_access_key:
        parts += [
            f"key_id {_sql_literal(storage.access_key_id.get_secret_value())}",
            f"secret {_sql_literal(storage.secret_access_key.get_secret_value())}",
        ]
    if storage.endpoint:
        endpoint = urlparse(storage.endpoint)
        parts += [
            f"endpoint {_sql_literal(endpoint.netloc)}",
            f"use_ssl {'true' if endpoint.scheme == 'https' else 'false'}",
        ]
    conn.execute(f"create or replace temporary secret lakehouse_s3 ({', '.join(parts)})")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _duckdb_types(schema: pa.Schema) -> list[str]:
    # Only needed for empty tables, where iceberg_scan has no snapshot to read.
    with duckdb.connect() as scratch:
        return [str(t) for t in scratch.from_arrow(schema.empty_table()).types]


def scan_sql(table: Table) -> str:
    """A SELECT that reads the table's current snapshot with DuckDB."""
    if table.current_snapshot() is None:
        schema = table.schema().as_arrow()
        types = _duckdb_types(schema)
        cols = ", ".join(
            f"cast(null as {t}) as {quote_ident(f.name)}" for f, t in zip(schema, types, strict=True)
        )
        return f"select {cols} where false"
    return f"select * from iceberg_scan({_sql_literal(table.metadata_location)})"


@dataclass(frozen=True)
class BoundTable:
    layer: str
    name: str
    table: Table

    @property
    def identifier(self) -> str:
        return f"{self.layer}.{self.name}"


def bind_tables(conn: duckdb.DuckDBPyConnection, catalog: Catalog) -> list[BoundTable]:
    """Create a schema per layer and a view per table over its current Iceberg snapshot."""
    bound = []
    for namespace, name in list_tables(catalog):
        table = catalog.load_table((namespace, name))
        conn.execute(f"create schema if not exists {quote_ident(namespace)}")
        conn.execute(
            f"create or replace view {quote_ident(namespace)}.{quote_ident(name)} as {scan_sql(table)}"
        )
        bound.append(BoundTable(namespace, name, table))
    return bound


def new_source_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read the warehouse: the bundled extensions and the object
    store's credentials, nothing bound yet. Never hand it a policy-bound user's SQL."""
    ext_dir = extension_directory(settings)
    private_dir(ext_dir.parent)  # the engine's files are its owner's alone, like the home around them
    private_dir(ext_dir)
    conn = duckdb.connect(
        config={
            "extension_directory": str(ext_dir),
            "autoinstall_known_extensions": False,
            "threads": settings.engine.threads,
            "memory_limit": settings.engine.memory_limit,
        }
    )
    install_extensions(conn)
    configure_storage(conn, settings)
    return conn
