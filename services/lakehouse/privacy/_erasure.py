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

An id that nothing holds (no data key, no current row in a table of personal data) is refused
before anything is done, with the ids it may have meant: erasing it would report success for a
typo and block that id forever. ``force=True`` erases it anyway (to block an id before any of
its data arrives).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.expressions import EqualTo

from lakehouse.audit import record_key_operation
from lakehouse.catalog import list_tables
from lakehouse.config import Project
from lakehouse.contracts import load_contracts
from lakehouse.errors import KeyShredded, KeystoreError

from ._keystore import DEAD_LETTER_SUBJECT, PREFIX, Keystore, subject_problem

# progress(what, done, total): what the erasure does now, and how far it got (steps)
Progress = Callable[[str, int, int], None]


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
    rows_deleted: int = 0  # from the current snapshot by this erasure

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

    def summary(self) -> str:
        """One line: what was done and what the verification found."""
        deleted = sum(t.rows_deleted for t in self.tables)
        snapshots = sum(t.snapshots_checked for t in self.tables)
        checked = sum(t.values_checked for t in self.tables)
        readable = sum(t.values_decryptable for t in self.tables)
        left = sum(t.rows_now for t in self.tables)
        key = "data key destroyed" if self.key_destroyed else "no data key to destroy"
        return (
            f"{key}; {deleted} row(s) deleted from {len(self.tables)} table(s); {checked} personal "
            f"value(s) checked in {snapshots} snapshot(s): {readable} readable, {left} row(s) left"
        )

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


def subject_known(
    catalog: Any,
    keystore: Keystore,
    subject: str,
    tables: list[tuple[str, str, list[str]]],
) -> bool:
    """Whether anything holds ``subject``: a data key (live or destroyed), or a current row in one
    of ``tables`` (``personal_tables``; a row in clear has no key)."""
    if subject in keystore.subjects() or keystore.forgotten(subject):
        return True
    for identifier, column, _ in tables:
        table = catalog.load_table(tuple(identifier.split(".")))
        if table.current_snapshot() is not None:
            rows = table.scan(row_filter=_is(column, subject), selected_fields=(column,), limit=1)
            if rows.to_arrow().num_rows:
                return True
    return False


def similar_subjects(keystore: Keystore, subject: str, n: int = 3) -> list[str]:
    """Subjects with a data key that ``subject`` may have meant: the same id in another case
    first, then close spellings."""
    known = keystore.subjects()
    same = sorted(s for s in known if s.casefold() == subject.casefold() and s != subject)
    close = difflib.get_close_matches(subject, known, n=n, cutoff=0.8)
    return [*same, *(s for s in close if s not in same)][:n]


def forget(
    catalog: Any,
    keystore: Keystore,
    subject: str,
    project: Project | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> ErasureReport:
    """Erase ``subject`` (see the module): refused, with nothing done, for an invalid id or, unless
    ``force``, for one that nothing holds."""
    problem = subject_problem(subject) if subject != DEAD_LETTER_SUBJECT else None
    if problem:
        raise KeystoreError(f"{problem}: {subject!r:.60}; nothing was erased")
    tables = personal_tables(catalog, project)
    if not force and not subject_known(catalog, keystore, subject, tables):
        similar = similar_subjects(keystore, subject)
        hint = f" (did you mean {' or '.join(repr(s) for s in similar)}?)" if similar else ""
        raise KeystoreError(
            f"no data subject {subject!r}{hint}: no data key and no row in {len(tables)} table(s) of "
            "personal data, nothing was erased; to block this id before any of its data arrives, "
            "force it (`lakehouse gdpr forget --force`)"
        )
    total = 1 + 2 * len(tables)  # the key, then each table's rows, then each table's check
    if progress is not None:
        progress(f"destroying the data key of {subject}", 0, total)
    destroyed = keystore.forget(subject)
    deleted: dict[str, int] = {}
    for step, (identifier, column, _) in enumerate(tables, 1):
        if progress is not None:
            progress(f"deleting from {identifier}", step, total)
        table = catalog.load_table(tuple(identifier.split(".")))
        before = table.current_snapshot()
        if before is not None:
            with warnings.catch_warnings():  # a table without the subject's rows: nothing to delete
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                table.delete(delete_filter=_is(column, subject))
            deleted[identifier] = _records(before) - _records(table.current_snapshot())
    report = verify(
        catalog, keystore, subject, project, tables=tables, progress=progress, done=1 + len(tables)
    )
    report.key_destroyed = destroyed
    for check in report.tables:
        check.rows_deleted = deleted.get(check.table, 0)
    record_key_operation(catalog, "forget", subject, {"key_destroyed": destroyed, "erased": report.erased})
    return report


def _records(snapshot: Any) -> int:
    """The rows a snapshot holds (its summary's total-records; 0 for none)."""
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.additional_properties.get("total-records", 0))


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


def verify(
    catalog: Any,
    keystore: Keystore,
    subject: str,
    project: Project | None = None,
    *,
    tables: list[tuple[str, str, list[str]]] | None = None,
    progress: Progress | None = None,
    done: int = 0,
) -> ErasureReport:
    """Read every snapshot of the tables of personal data for ``subject``'s rows and try to
    decrypt their personal values (``done`` steps of ``progress`` already taken)."""
    report = ErasureReport(subject, key_destroyed=keystore.forgotten(subject))
    tables = personal_tables(catalog, project) if tables is None else tables
    for step, (identifier, column, personal) in enumerate(tables, done):
        if progress is not None:
            progress(f"checking every snapshot of {identifier}", step, done + len(tables))
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
    if progress is not None:
        progress("checked", done + len(tables), done + len(tables))
    return report


def rotate_keys(
    catalog: Any, keystore: Keystore, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """A new key-encryption key, every data key re-wrapped under it (no data file rewritten),
    recorded in ``audit.key_log``. Returns what was done: {"from", "to", "data_keys"}.
    ``progress(done, total)`` follows the data keys re-wrapped."""
    before = keystore.status()
    kid = keystore.rotate(progress)
    done = {"from": before["kek"], "to": kid, "data_keys": before["data_keys"]}
    record_key_operation(catalog, "rotate", None, done)
    return done
