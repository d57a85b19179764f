"""Table maintenance: expire old snapshots so metadata (and commit time) stays bounded.

Every commit adds a snapshot; pyiceberg copies the whole snapshot list several times per commit,
so a table that a sink or the gateway commits to every second gets slower until its history is
expired. The ledger of what a table holds (loaded batch ids, Kafka offsets, device sequences)
lives in table properties, so expiring snapshots never lets a replay land twice; tables written
before that are given their ledger property first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable
from pyiceberg.table import Table

from lakehouse.catalog import list_tables
from lakehouse.errors import NoSuchTableError

from ._ledger import ledger_update


@dataclass(frozen=True)
class ExpireResult:
    table: str
    kept: int
    expired: int


def expire_snapshots(
    catalog: Catalog,
    identifier: str,
    *,
    keep_last: int = 100,
    older_than: dt.timedelta = dt.timedelta(days=1),
) -> ExpireResult:
    """Expire snapshots beyond the newest ``keep_last`` that are older than ``older_than``.
    The current snapshot and every branch or tag head are always kept."""
    table = _load(catalog, identifier)
    ledger = ledger_update(table, {})  # a table written before the ledger property: record it first
    missing = {k: v for k, v in ledger.properties.items() if k not in table.properties}
    if missing:
        try:
            with table.transaction() as tx:
                tx.set_properties(missing)
        except BaseException:
            ledger.abandoned(table)
            raise
        ledger.committed(table)
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    cutoff_ms = (dt.datetime.now(dt.UTC) - older_than).timestamp() * 1000
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    expire = [
        s.snapshot_id
        for i, s in enumerate(snapshots)
        if i >= keep_last and s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected
    ]
    if expire:
        table.maintenance.expire_snapshots().by_ids(expire).commit()
    return ExpireResult(identifier, len(snapshots) - len(expire), len(expire))


def _load(catalog: Catalog, identifier: str) -> Table:
    """Any table in the catalog: the data layers and the ``audit`` namespace alike (the audit
    log gains a snapshot per flush, so it is the table that most needs expiring)."""
    parts = identifier.split(".")
    if len(parts) != 2 or not all(parts):
        raise NoSuchTableError(f"table must be NAMESPACE.TABLE (e.g. audit.query_log), not {identifier!r}")
    try:
        return catalog.load_table((parts[0], parts[1]))
    except (IcebergNoSuchTable, NoSuchNamespaceError):
        existing = ", ".join(f"{n}.{t}" for n, t in list_tables(catalog)) or "(none)"
        raise NoSuchTableError(f"no table {identifier}; tables that exist: {existing}") from None
