"""Erasure by crypto-shredding: ``lakehouse gdpr forget CUSTOMER_ID``.

1. The customer's data key is destroyed: from that instant no copy of their personal data, in
   any snapshot, branch, tag, export or backup, decrypts.
2. Their rows are deleted from the current snapshot of every table holding their personal data,
   their dead letters (sealed under their key) included.
3. A verification report reads every snapshot of those tables (every point time travel or a
   branch could reach), finds the customer's rows and tries to decrypt each personal value
   (names, contact details, birth date, address): the erasure holds when nothing decrypts and
   no current row is left. A value stored in clear (a table written before its column was
   declared personal) counts as readable: the report then says NOT ERASED.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.expressions import EqualTo

from lakehouse.audit import record_key_operation
from lakehouse.catalog import list_tables
from lakehouse.config import Project
from lakehouse.contracts import load_contracts
from lakehouse.errors import KeyShredded, KeystoreError

from ._keystore import PREFIX, Keystore


def _is(column: str, value: str) -> Any:
    return EqualTo(column, value)  # type: ignore[misc,call-arg,arg-type]  # pyiceberg's pydantic signature


@dataclass
class TableCheck:
    table: str
    snapshots_checked: int
    refs: list[str]
    rows_in_history: int
    values_checked: int
    values_decryptable: int
    rows_now: int

    @property
    def erased(self) -> bool:
        return self.values_decryptable == 0 and self.rows_now == 0


@dataclass
class ErasureReport:
    subject: str
    key_destroyed: bool
    tables: list[TableCheck] = field(default_factory=list)

    @property
    def erased(self) -> bool:
        return all(t.erased for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "key_destroyed": self.key_destroyed,
            "erased": self.erased,
            "tables": [{**t.__dict__, "erased": t.erased} for t in self.tables],
        }


DEAD_LETTERS = "bronze.dead_letters"


DEAD_LETTER_SEALED = ["message_key", "payload"]  # sealed under the subject named in pii_subject


def personal_tables(catalog: Any, project: Project | None = None) -> list[tuple[str, str, list[str]]]:
    """(table, subject column, personal columns) for every table holding personal data."""
    contracts = [c for c in load_contracts(project).values() if c.pii]
    pii = {name for c in contracts for name in c.pii}
    subjects = {c.pii_subject for c in contracts if c.pii_subject}
    found = []
    for layer, name in list_tables(catalog):
        columns = [f.name for f in catalog.load_table((layer, name)).schema().fields]
        if f"{layer}.{name}" == DEAD_LETTERS:
            if "pii_subject" in columns:
                found.append((DEAD_LETTERS, "pii_subject", DEAD_LETTER_SEALED))
            continue
        subject = next((s for s in subjects if s in columns), None)
        personal = [c for c in columns if c in pii]
        if subject and personal:
            found.append((f"{layer}.{name}", subject, personal))
    return found


def forget(catalog: Any, keystore: Keystore, subject: str, project: Project | None = None) -> ErasureReport:
    destroyed = keystore.forget(subject)
    for identifier, column, _ in personal_tables(catalog, project):
        table = catalog.load_table(tuple(identifier.split(".")))
        if table.current_snapshot() is not None:
            with warnings.catch_warnings():  # a table without the subject's rows: nothing to delete
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                table.delete(delete_filter=_is(column, subject))
    report = verify(catalog, keystore, subject, project)
    report.key_destroyed = destroyed
    record_key_operation(catalog, "forget", subject, {"key_destroyed": destroyed, "erased": report.erased})
    return report


def _readable(keystore: Keystore, value: str | bytes) -> int:
    """1 if ``value`` reveals personal data: it decrypts, or it was never encrypted."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value.startswith(PREFIX):
        return 1
    try:
        keystore.decrypt(value)
    except (KeyShredded, KeystoreError):
        return 0
    return 1


def verify(catalog: Any, keystore: Keystore, subject: str, project: Project | None = None) -> ErasureReport:
    report = ErasureReport(subject, key_destroyed=keystore.forgotten(subject))
    for identifier, column, personal in personal_tables(catalog, project):
        table = catalog.load_table(tuple(identifier.split(".")))
        history_rows = checked = decryptable = 0
        for snapshot in table.metadata.snapshots:
            rows = table.scan(snapshot_id=snapshot.snapshot_id, row_filter=_is(column, subject)).to_arrow()
            history_rows += rows.num_rows
            for name in personal:
                for value in rows.column(name).to_pylist():
                    if value is None:
                        continue
                    checked += 1
                    decryptable += _readable(keystore, value)
        now = (
            table.scan(row_filter=_is(column, subject)).to_arrow().num_rows if table.current_snapshot() else 0
        )
        report.tables.append(
            TableCheck(
                identifier,
                len(table.metadata.snapshots),
                sorted(table.metadata.refs),
                history_rows,
                checked,
                decryptable,
                now,
            )
        )
    return report


def rotate_keys(catalog: Any, keystore: Keystore) -> dict[str, Any]:
    """A new key-encryption key, every data key re-wrapped under it (no data file rewritten),
    recorded in ``audit.key_log``. Returns what was done: {"from", "to", "data_keys"}."""
    before = keystore.status()
    kid = keystore.rotate()
    done = {"from": before["kek"], "to": kid, "data_keys": before["data_keys"]}
    record_key_operation(catalog, "rotate", None, done)
    return done
