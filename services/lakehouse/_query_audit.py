"""The audit logs, Iceberg tables under policy (only compliance roles read the ``audit`` layer):

- ``audit.query_log``: every query a policy-bound session runs or refuses: who (user, roles),
  what (the SQL, the tables read), when, which policy (a hash of the policy files, the filters
  and masks applied) and how many rows came back;
- ``audit.key_log``: every key operation (KEK rotation, a customer forgotten).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table

from ._load import commit_idempotently

AUDIT_TABLE = ("audit", "query_log")
SCHEMA = pa.schema(
    [
        pa.field("queried_at", pa.timestamp("us"), nullable=False),
        pa.field("user_name", pa.string(), nullable=False),
        pa.field("roles", pa.string()),
        pa.field("query", pa.string(), nullable=False),
        pa.field("tables", pa.string()),
        pa.field("policy_version", pa.string()),
        pa.field("applied", pa.string()),
        pa.field("rows_returned", pa.int64()),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
    ]
)
COLUMNS = [f.name for f in SCHEMA]


def policy_version(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class QueryRecord:
    user_name: str
    roles: list[str]
    query: str
    tables: list[str]
    policy_version: str
    applied: dict[str, object]
    rows_returned: int | None
    outcome: str  # ok | denied | error
    reason: str | None = None


KEY_TABLE = ("audit", "key_log")
KEY_SCHEMA = pa.schema(
    [
        pa.field("logged_at", pa.timestamp("us"), nullable=False),
        pa.field("operation", pa.string(), nullable=False),
        pa.field("subject", pa.string()),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


def record_key_operation(
    catalog: Catalog, operation: str, subject: str | None, detail: dict[str, object]
) -> None:
    import getpass

    row = pa.Table.from_pylist(
        [
            {
                "logged_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                "operation": operation,
                "subject": subject,
                "actor": getpass.getuser(),
                "detail": json.dumps(detail, sort_keys=True, default=str),
            }
        ],
        schema=KEY_SCHEMA,
    )
    commit_idempotently(catalog, _table(catalog, KEY_TABLE, KEY_SCHEMA), lambda _current: (row, {}))


def _table(catalog: Catalog, identifier: tuple[str, str] = AUDIT_TABLE, schema: pa.Schema = SCHEMA) -> Table:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    try:
        catalog.create_namespace(identifier[0])
    except NamespaceAlreadyExistsError:
        pass
    except Exception:
        if (identifier[0],) not in catalog.list_namespaces():
            raise
    try:
        return catalog.create_table(identifier, schema=schema)
    except TableAlreadyExistsError:
        return catalog.load_table(identifier)


def tables_in(query: str) -> list[str]:
    """The ``layer.table`` names a query reads (best effort: the operator's SQL is not checked)."""
    import sqlglot
    from sqlglot import exp

    try:
        return sorted(
            {
                f"{t.db}.{t.name}"
                for s in sqlglot.parse(query, read="duckdb")
                if s
                for t in s.find_all(exp.Table)
                if t.db
            }
        )
    except sqlglot.errors.SqlglotError:
        return []


def record(catalog: Catalog, entry: QueryRecord) -> None:
    record_many(catalog, [entry])


def record_many(catalog: Catalog, entries: list[QueryRecord]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = pa.Table.from_pylist(
        [
            {
                "queried_at": now,
                "user_name": entry.user_name,
                "roles": ",".join(sorted(entry.roles)),
                "query": entry.query[:20_000],
                "tables": ",".join(sorted(entry.tables)),
                "policy_version": entry.policy_version,
                "applied": json.dumps(entry.applied, sort_keys=True, default=str),
                "rows_returned": entry.rows_returned,
                "outcome": entry.outcome,
                "reason": (entry.reason or "")[:2000] or None,
            }
            for entry in entries
        ],
        schema=SCHEMA,
    )
    commit_idempotently(catalog, _table(catalog), lambda _current: (rows, {}))
