"""Writing and maintaining Iceberg tables: the load ledger, one idempotent commit, appends,
snapshot expiry, and DuckDB's view of the tables."""

from __future__ import annotations

from ._commit import Backoff, Committed, Plan, Planned, commit_with_replan
from ._duckdb import (
    BoundTable,
    bind_tables,
    configure_storage,
    install_extensions,
    new_source_connection,
    quote_ident,
    scan_sql,
)
from ._ledger import BATCH_IDS, DEVICE_BATCHES, OFFSETS, loaded_batch_ids, table_marks
from ._maintenance import expire_snapshots
from ._tables import open_table, parse_identifier
from ._write import normalize_schema, record_without_data, replace_rows, target_arrow_schema

__all__ = [
    "BATCH_IDS",
    "DEVICE_BATCHES",
    "OFFSETS",
    "Backoff",
    "BoundTable",
    "Committed",
    "Plan",
    "Planned",
    "bind_tables",
    "commit_with_replan",
    "configure_storage",
    "expire_snapshots",
    "install_extensions",
    "loaded_batch_ids",
    "new_source_connection",
    "normalize_schema",
    "open_table",
    "parse_identifier",
    "quote_ident",
    "record_without_data",
    "replace_rows",
    "scan_sql",
    "table_marks",
    "target_arrow_schema",
]
