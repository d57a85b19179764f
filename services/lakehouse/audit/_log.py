"""The audit logs, Iceberg tables under policy (only compliance roles read the ``audit`` layer):

- ``audit.query_log``: every query a policy-bound session runs or refuses: who (user, roles),
  what (the SQL, the tables read), when, which policy (a hash of the policy files, the filters
  and masks applied) and how many rows came back;
- ``audit.key_log``: every key operation (KEK rotation, a customer forgotten).

A query's record is durable before the query answers, without an Iceberg commit per query: it
is appended (and fsynced) to this process's journal under ``state/audit/``, and journals are
committed to ``audit.query_log`` in batches (when a session closes, before anyone reads the
log, and for journals of processes that died, by the next process that flushes). Each journal
file is one batch id in the table's ledger, so a flush that dies between its commit and its
clean-up never lands twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table

from lakehouse.iceberg import BATCH_IDS, Planned, commit_with_replan, loaded_batch_ids

logger = logging.getLogger(__name__)


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
    applied: dict[str, Any]
    rows_returned: int | None
    outcome: str  # ok | denied | error
    reason: str | None = None
    queried_at: dt.datetime | None = None  # when it ran; set when journalled


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
    commit_with_replan(catalog, _table(catalog, KEY_TABLE, KEY_SCHEMA), lambda _current: Planned(row))


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


def _rows(entries: list[QueryRecord]) -> pa.Table:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return pa.Table.from_pylist(
        [
            {
                "queried_at": entry.queried_at or now,
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


# --- the journal: durable before answering, committed in batches ---------------------------


class AuditJournal:
    """This process's append-only journal of query records (0600, one fsynced line each).

    The file is held under an exclusive ``flock`` while the process writes it, so a flush can
    tell a live journal (skip it, or rotate it if it is this process's own) from one whose
    process is gone (commit it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = 0

    def _open(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child starts its own
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd, self._path, self._pid = fd, path, os.getpid()
        return self._fd

    def append(self, entry: QueryRecord) -> None:
        """Durably record ``entry``; raises if it cannot (the caller must then not answer)."""
        entry.queried_at = entry.queried_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        line = json.dumps(asdict(entry), default=str, separators=(",", ":")) + "\n"
        with self._lock:
            fd = self._open()
            os.write(fd, line.encode())
            os.fsync(fd)

    def _close_own(self) -> None:
        """Hand this process's journal over to flushing; the next append starts a new one."""
        if self._fd is not None and self._path is not None and self._pid == os.getpid():
            closed = self._path.with_suffix(".closed")
            os.replace(self._path, closed)
            os.close(self._fd)
        self._fd = self._path = None

    def pending(self) -> bool:
        with self._lock:
            return self._fd is not None or any(self.directory.glob("journal-*"))

    def flush(self, catalog: Catalog) -> int:
        """Commit this process's journal and those of processes that are gone; returns the
        records committed. Live journals of other processes are left to them."""
        with self._lock:
            self._close_own()
            committed = 0
            if not self.directory.is_dir():
                return 0
            for path in sorted(self.directory.glob("journal-*")):
                with _unlocked(path) as text:
                    if text is None:
                        continue  # its process is alive and still writing
                    committed += self._commit(catalog, path, text)
            return committed

    @staticmethod
    def _commit(catalog: Catalog, path: Path, text: str) -> int:
        entries = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                data: dict[str, Any] = json.loads(line)
            except ValueError:  # a line cut short by a crash mid-write: it never answered
                logger.warning("skipping a torn line in %s", path.name)
                continue
            data["queried_at"] = (
                dt.datetime.fromisoformat(data["queried_at"]) if data.get("queried_at") else None
            )
            entries.append(QueryRecord(**data))
        batch = "audit-journal:" + hashlib.sha256(text.encode()).hexdigest()
        if entries:
            rows = _rows(entries)

            def plan(current: Table) -> Planned[None] | None:
                if batch in loaded_batch_ids(current):
                    return None  # committed before a crash that left the file behind
                return Planned(rows, {BATCH_IDS: json.dumps([batch])})

            commit_with_replan(catalog, _table(catalog), plan)
        path.unlink()
        return len(entries)


@contextlib.contextmanager
def _unlocked(path: Path) -> Any:
    """The journal's text if no live process holds it (and the lock while it is committed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        with os.fdopen(os.dup(fd), "r") as handle:
            yield handle.read()
    finally:
        os.close(fd)


_JOURNALS: dict[Path, AuditJournal] = {}


_JOURNALS_LOCK = threading.Lock()


def journal_for(settings: Any) -> AuditJournal:
    """The process's journal for the platform home of ``settings`` (one per home)."""
    directory = Path(settings.state_dir) / "audit"
    with _JOURNALS_LOCK:
        if directory not in _JOURNALS:
            _JOURNALS[directory] = AuditJournal(directory)
        return _JOURNALS[directory]
