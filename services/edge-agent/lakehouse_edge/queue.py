"""The on-disk upload queue: sealed batches in SQLite (WAL, synchronous=FULL).

Batches are sealed for the platform's ingest key before they are queued, so the queue holds
ciphertext only: a stolen or imaged SD card reveals no readings. A batch is committed to disk
with its sequence number in one transaction, so a power cut leaves either the whole batch or
none of it, and sequence numbers never repeat. Disk use is bounded; when the queue is full the
``when_full`` policy decides: ``drop-oldest`` (keep the freshest data, the default) or
``drop-newest`` (keep the backlog, refuse new batches). Every drop is counted and logged.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import QueueFull

logger = logging.getLogger(__name__)

POLICIES = ("drop-oldest", "drop-newest")

_SCHEMA = """
create table if not exists meta (key text primary key, value integer not null);
create table if not exists pending (
    seq integer primary key, schema text not null, readings integer not null,
    sealed blob not null, queued_at real not null);
create table if not exists rejected (
    seq integer primary key, schema text not null, readings integer not null,
    sealed blob not null, status integer not null, problem text not null, rejected_at real not null);
"""


@dataclass(frozen=True)
class QueuedBatch:
    seq: int
    schema: str
    readings: int
    sealed: bytes


class UploadQueue:
    def __init__(self, path: Path, *, max_bytes: int = 256 * 1024 * 1024, when_full: str = "drop-oldest"):
        if when_full not in POLICIES:
            raise ValueError(f"when_full must be one of {POLICIES}, not {when_full!r}")
        self.max_bytes, self.when_full = max_bytes, when_full
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._lock = threading.RLock()  # the collector thread queues while the uploader reads
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")  # a committed batch survives a power cut
        self._db.executescript(_SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, *args: object) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _meta(self, key: str) -> int:
        row = self._one("select value from meta where key = ?", key)
        return int(row[0]) if row else 0

    def _bump(self, key: str, by: int) -> None:
        self._db.execute(
            "insert into meta values (?, ?) on conflict(key) do update set value = value + excluded.value",
            (key, by),
        )

    def next_seq(self) -> int:
        """The sequence number the next batch will carry (sealed into its associated data)."""
        return self._meta("last_seq") + 1

    def put(self, seq: int, schema: str, readings: int, sealed: bytes) -> None:
        """Queue a batch sealed with ``next_seq()``; applies the when-full policy first.

        Raises QueueFull (after counting the drop) when the policy refuses the new batch."""
        with self._transaction():
            expected = self._meta("last_seq") + 1
            if seq != expected:
                raise ValueError(f"batch sealed with seq {seq}, but the queue expects {expected}")
            self._bump("last_seq", 1)  # a number is used once, even by a batch that is dropped
            refused = not self._make_room(len(sealed))
            if refused:
                self._count_drop(readings)
                logger.warning("queue full: dropped the new batch (seq %s, %s readings)", seq, readings)
            else:
                self._db.execute(
                    "insert into pending values (?, ?, ?, ?, ?)", (seq, schema, readings, sealed, time.time())
                )
        if refused:  # raised after the commit, so the drop and the used number are recorded
            raise QueueFull(f"the queue is full ({self.max_bytes} bytes): the new batch was dropped")

    def _make_room(self, size: int) -> bool:
        used = self.pending_bytes()
        while used + size > self.max_bytes:
            oldest = self._db.execute(
                "select seq, readings, length(sealed) from pending order by seq limit 1"
            ).fetchone()
            if self.when_full == "drop-newest" or oldest is None:
                return False
            seq, count, length = oldest
            self._db.execute("delete from pending where seq = ?", (seq,))
            self._count_drop(count)
            logger.warning("queue full: dropped the oldest batch (seq %s, %s readings)", seq, count)
            used -= length
        return True

    def _count_drop(self, readings: int) -> None:
        self._bump("dropped_batches", 1)
        self._bump("dropped_readings", readings)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                yield
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    def peek(self) -> QueuedBatch | None:
        row = self._one("select seq, schema, readings, sealed from pending order by seq limit 1")
        return QueuedBatch(*row) if row else None

    def delivered(self, seq: int) -> None:
        with self._transaction():
            self._db.execute("delete from pending where seq = ?", (seq,))

    def reject(self, batch: QueuedBatch, status: int, problem: str) -> None:
        """Keep a batch the gateway refused for good (for inspection; it is never retried)."""
        with self._transaction():
            self._db.execute(
                "insert or replace into rejected values (?, ?, ?, ?, ?, ?, ?)",
                (batch.seq, batch.schema, batch.readings, batch.sealed, status, problem, time.time()),
            )
            self._db.execute("delete from pending where seq = ?", (batch.seq,))

    def renumber_from(self, next_seq: int, status: int, problem: str) -> int:
        """The gateway has used every seq below ``next_seq``: pending batches numbered below it
        move to the rejected table (kept, never uploaded), new ones are numbered from it on.
        Returns how many batches moved."""
        with self._transaction():
            moved = self._db.execute(
                "insert or replace into rejected select seq, schema, readings, sealed, ?, ?, ? "
                "from pending where seq < ?",
                (status, problem, time.time(), next_seq),
            ).rowcount
            self._db.execute("delete from pending where seq < ?", (next_seq,))
            behind = next_seq - 1 - self._meta("last_seq")
            if behind > 0:
                self._bump("last_seq", behind)
        return int(moved)

    def missing_reason(self, first: int, last: int) -> str:
        """Why seqs ``first``..``last`` are not queued: rejected, dropped, or both (a declared
        skip names it)."""
        rejected = int(self._one("select count(*) from rejected where seq between ? and ?", first, last)[0])
        dropped = self._meta("dropped_batches") > 0 and rejected < last - first + 1
        if rejected and dropped:
            return "dropped-and-rejected"
        return "rejected" if rejected else "dropped" if dropped else "unknown"

    def count_skipped(self, seqs: int) -> None:
        """Record that the gateway accepted a declaration of ``seqs`` lost seqs."""
        with self._transaction():
            self._bump("declared_skipped", seqs)

    def pending_count(self) -> int:
        return int(self._one("select count(*) from pending")[0])

    def pending_bytes(self) -> int:
        return int(self._one("select coalesce(sum(length(sealed)), 0) from pending")[0])

    def status(self) -> dict[str, int]:
        return {
            "pending_batches": self.pending_count(),
            "pending_bytes": self.pending_bytes(),
            "pending_readings": int(self._one("select coalesce(sum(readings), 0) from pending")[0]),
            "rejected_batches": int(self._one("select count(*) from rejected")[0]),
            "last_seq": self._meta("last_seq"),
            "dropped_batches": self._meta("dropped_batches"),
            "dropped_readings": self._meta("dropped_readings"),
            "declared_skipped": self._meta("declared_skipped"),
        }
