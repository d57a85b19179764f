"""Landing device batches in bronze: group commit, exactly once per (device, sequence).

Why the gateway commits to Iceberg itself instead of publishing to Kafka: exactly-once needs the
batch's identity recorded atomically with its rows. Here the next sequence per device rides in
the same snapshot summary as the rows (``lakehouse.device-batches``, the mechanism the Kafka sink
uses for offsets), so a retried upload is recognised whichever replica receives it. Through
Kafka, a retry would be a second message that the sink would have to deduplicate, and the
device could only be answered "queued", not "in bronze".

Commits are grouped: requests that arrive while a commit runs land together in the next one, so
one Iceberg commit (tens of milliseconds) serves every device that uploaded meanwhile.
Sequences must grow per device (the agent uploads in order); a sequence below the device's mark
is answered "duplicate" and never lands again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from .._load import DEVICE_BATCHES, commit_idempotently, open_table, table_marks, target_arrow_schema
from .._sink import Committer, Dead, Message, SinkStats

logger = logging.getLogger(__name__)

LANDED, DUPLICATE = "landed", "duplicate"
MAX_ROWS_PER_COMMIT = 500_000


@dataclass
class _Upload:
    identifier: str
    device_id: str
    seq: int
    rows: pa.Table
    done: Future[str] = field(default_factory=Future)


class Lander:
    def __init__(self, catalog: Catalog, contracts_file: Path | None, *, linger: float):
        self.catalog, self.contracts_file, self.linger = catalog, contracts_file, linger
        self._queue: queue.Queue[_Upload | None] = queue.Queue()
        self._tables: dict[str, Table] = {}
        self._targets: dict[tuple[str, int], pa.Schema] = {}
        # table -> device -> next seq, as of this gateway's last commit (for early answers only)
        self._marks: dict[str, dict[str, int]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gateway-lander")
        self._dead = Committer(catalog, contracts_file, SinkStats())
        self.commits = 0

    def start(self) -> Lander:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def table(self, identifier: str) -> Table:
        with self._lock:
            if identifier not in self._tables:
                self._tables[identifier] = open_table(
                    self.catalog, identifier, contracts_file=self.contracts_file
                )[0]
            return self._tables[identifier]

    def target(self, identifier: str) -> pa.Schema:
        """The Arrow schema uploads are validated against, computed once per table schema."""
        table = self.table(identifier)
        key = (identifier, table.schema().schema_id)
        with self._lock:
            if key not in self._targets:
                self._targets[key] = target_arrow_schema(table)
            return self._targets[key]

    def landed(self, identifier: str, device_id: str, seq: int) -> bool:
        """True if this gateway already knows (device, seq) is in bronze (a cheap early answer)."""
        with self._lock:
            return seq < self._marks[identifier].get(device_id, 0)

    def submit(self, identifier: str, device_id: str, seq: int, rows: pa.Table) -> Future[str]:
        upload = _Upload(identifier, device_id, seq, rows)
        self._queue.put(upload)
        return upload.done

    def dead_letter(self, identifier: str, device_id: str, seq: int, body: bytes, reason: str) -> None:
        """Keep a batch that decrypted but does not fit its contract, with the reason."""
        message = Message(f"edge:{device_id}", 0, seq, None, body)
        self._dead.commit_dead([Dead(message, reason, identifier)])

    # -- the commit thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, rows = [first], first.rows.num_rows
            deadline = time.monotonic() + self.linger
            while rows < MAX_ROWS_PER_COMMIT:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
                rows += item.rows.num_rows
            by_table: dict[str, list[_Upload]] = defaultdict(list)
            for upload in group:
                by_table[upload.identifier].append(upload)
            for identifier, uploads in by_table.items():
                try:
                    outcomes = self._commit(identifier, uploads)
                except BaseException as exc:  # every waiting request gets the error, none a hang
                    logger.exception("commit to %s failed", identifier)
                    for upload in uploads:
                        upload.done.set_exception(exc)
                    continue
                for upload, outcome in zip(uploads, outcomes, strict=True):
                    upload.done.set_result(outcome)

    def _commit(self, identifier: str, uploads: list[_Upload]) -> list[str]:
        table = self.table(identifier)
        outcomes: list[str] = []
        new_marks: dict[str, int] = {}

        def plan(current: Table) -> tuple[pa.Table, dict[str, str]] | None:
            marks = table_marks(current, key=DEVICE_BATCHES)  # the table's ledger: one property
            seen: set[tuple[str, int]] = set()
            kept: list[pa.Table] = []
            outcomes.clear()
            new_marks.clear()
            for u in uploads:
                if u.seq < marks.get(u.device_id, 0) or (u.device_id, u.seq) in seen:
                    outcomes.append(DUPLICATE)
                    continue
                seen.add((u.device_id, u.seq))
                kept.append(u.rows)
                outcomes.append(LANDED)
                new_marks[u.device_id] = max(new_marks.get(u.device_id, 0), u.seq + 1)
            if not kept:
                return None
            summary = {d: max(n, marks.get(d, 0)) for d, n in sorted(new_marks.items())}
            return pa.concat_tables(kept), {DEVICE_BATCHES: json.dumps(summary)}

        outcome = commit_idempotently(self.catalog, table, plan)
        if outcome is not None:
            committed, _ = outcome
            with self._lock:
                self._tables[identifier] = committed
                self._marks[identifier].update(new_marks)
            self.commits += 1
        return outcomes
