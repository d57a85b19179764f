"""Landing device batches in bronze: group commit, exactly once per (device, sequence).

Why the gateway commits to Iceberg itself instead of publishing to Kafka: exactly-once needs the
batch's identity recorded atomically with its rows. Here the next sequence per device rides in
the same snapshot summary as the rows (``lakehouse.device-batches``, the mechanism the Kafka sink
uses for offsets), so a retried upload is recognised whichever replica receives it. Through
Kafka, a retry would be a second message that the sink would have to deduplicate, and the
device could only be answered "queued", not "in bronze".

Commits are grouped: requests that arrive while a commit runs land together in the next one, so
one Iceberg commit (tens of milliseconds) serves every device that uploaded meanwhile.

Sequences, per device and table, never let a batch be dropped silently:

- sequence numbers run from 1 to ``MAX_SEQ`` (2^53 - 1, exact in every JSON reader);
- a batch lands only if its seq is the device's next one (the ledger's mark);
- the seq just below the mark is a retry of the last accepted batch: answered ``duplicate``;
- any other seq is refused with 409 naming the expected one: nothing is answered ``duplicate``
  that was not accepted, and a gap never moves the mark past batches that did not arrive;
- a device that lost batches (dropped from its full queue, refused for good) says so: it
  declares the range skipped (``submit_skip``), which moves the mark in the ledger and leaves a
  record in ``bronze.dead_letters``, so the gap is explicit and visible.

Only landings and declared skips move the mark; a batch sent to dead letters does not (its retry
is answered the same way, and the device then declares it skipped).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.config import Project
from lakehouse.errors import LoadError
from lakehouse.iceberg import (
    DEVICE_BATCHES,
    Committed,
    Plan,
    Planned,
    table_marks,
    target_arrow_schema,
)
from lakehouse.ingest import DEAD_LETTERS, DeadLetter, Message, Writer, received_schema

from ._metrics import GatewayMetrics

logger = logging.getLogger(__name__)


LANDED, DUPLICATE, SKIPPED, OUT_OF_ORDER = "landed", "duplicate", "skipped", "out-of-order"


MAX_ROWS_PER_COMMIT = 500_000


MAX_SEQ = 2**53 - 1


@dataclass(frozen=True)
class Outcome:
    status: str  # landed | duplicate | skipped | out-of-order
    expected: int  # the device's next seq after this answer


@dataclass
class _Upload:
    identifier: str
    device_id: str
    seq: int
    rows: pa.Table  # empty for a declared skip
    skip_to: int | None = None  # a declared gap: seq .. skip_to will never arrive
    done: Future[Outcome] = field(default_factory=Future)


class Lander:
    """The commit thread. ``oldest_wait()`` and ``alive()`` tell a health check whether it keeps
    up: a commit that hangs (a catalog or object store that never answers) leaves uploads
    waiting, which the gateway answers 503 after its ``land_timeout`` instead of holding them."""

    def __init__(
        self,
        catalog: Catalog,
        project: Project | None,
        *,
        linger: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: GatewayMetrics | None = None,
    ):
        self.catalog, self.project, self.linger = catalog, project, linger  # project None: the environment's
        self.metrics = metrics  # rows landed and commit conflicts counted here, where commits happen
        self._clock = clock
        self._waiting: dict[int, float] = {}  # id(upload) -> when it was queued, until answered
        self._queue: queue.Queue[_Upload | None] = queue.Queue()
        self._tables: dict[str, Table] = {}
        self._targets: dict[tuple[str, int], pa.Schema] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gateway-lander")
        self._writer = Writer(catalog, project)
        self.commits = 0

    def start(self) -> Lander:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting upload has waited for its commit (0 when none waits)."""
        with self._lock:
            oldest = min(self._waiting.values(), default=None)
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def _enqueue(self, upload: _Upload) -> Future[Outcome]:
        with self._lock:
            self._waiting[id(upload)] = self._clock()
        self._queue.put(upload)
        return upload.done

    def _answer(self, upload: _Upload, result: Outcome | BaseException) -> None:
        with self._lock:
            self._waiting.pop(id(upload), None)
        try:
            if isinstance(result, BaseException):
                upload.done.set_exception(result)
            else:
                upload.done.set_result(result)
        except InvalidStateError:  # its request was cancelled (the client left): nobody waits
            pass

    def table(self, identifier: str) -> Table:
        with self._lock:
            if identifier not in self._tables:
                self._tables[identifier] = self._writer.table(identifier)
            return self._tables[identifier]

    def target(self, identifier: str) -> pa.Schema:
        """The Arrow schema uploads are validated against, computed once per table schema."""
        table = self.table(identifier)
        key = (identifier, table.schema().schema_id)
        with self._lock:
            if key not in self._targets:
                received = received_schema(identifier, self.project)  # personal data: plaintext in
                self._targets[key] = received or target_arrow_schema(table)
            return self._targets[key]

    def next_seq(self, identifier: str, device_id: str) -> int:
        """The device's next seq as the table says now (read afresh: for rare answers only)."""
        table = self.catalog.load_table(self.table(identifier).name())
        with self._lock:
            self._tables[identifier] = table
        return table_marks(table, key=DEVICE_BATCHES).get(device_id, 1)

    def submit(self, identifier: str, device_id: str, seq: int, rows: pa.Table) -> Future[Outcome]:
        return self._enqueue(_Upload(identifier, device_id, seq, rows))

    def submit_skip(self, identifier: str, device_id: str, first: int, last: int) -> Future[Outcome]:
        """Declare seqs ``first``..``last`` of the device lost: recorded in the ledger."""
        return self._enqueue(
            _Upload(identifier, device_id, first, self.target(identifier).empty_table(), skip_to=last)
        )

    def dead_letter(self, identifier: str, device_id: str, seq: int, body: bytes | None, reason: str) -> bool:
        """Keep a batch that decrypted but does not fit its contract, with the reason (or, with no
        body, the record of seqs the device declared skipped). One per (device, seq): False when
        the device already has one at this seq (or a later one), and this one is not kept."""
        message = Message(f"edge:{device_id}", 0, seq, None, body)
        dead = self._writer.table(DEAD_LETTERS)
        if seq < table_marks(dead, {message.tp}).get(message.tp, 0):
            return False
        self._writer.land_dead_letters([DeadLetter(message, reason, identifier)])
        return True

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
                        self._answer(upload, exc)
                    continue
                for upload, outcome in zip(uploads, outcomes, strict=True):
                    self._answer(upload, outcome)

    def _commit(self, identifier: str, uploads: list[_Upload]) -> list[Outcome]:
        table = self.table(identifier)
        for u in uploads:  # rows as received -> as stored (personal data encrypted), before any write
            u.rows = self._writer.stored(identifier, u.rows, table)
        outcomes: list[Outcome] = []  # the answers of the latest plan, which is the one committed

        def plan(current: Table) -> Planned[None] | None:
            marks = table_marks(current, key=DEVICE_BATCHES)  # the table's ledger: one property
            kept: list[pa.Table] = []
            new_marks: dict[str, int] = {}
            outcomes.clear()
            for u in uploads:  # in arrival order: one device's requests apply one after the other
                expected = new_marks.get(u.device_id) or marks.get(u.device_id, 1)
                outcome = _decide(u, expected)
                outcomes.append(outcome)
                if outcome.expected != expected:
                    new_marks[u.device_id] = outcome.expected
                    kept.append(u.rows)
            if not new_marks:
                return None
            return Planned(
                pa.concat_tables(kept), {DEVICE_BATCHES: json.dumps(dict(sorted(new_marks.items())))}
            )

        committed = self._land(table, plan)
        if committed is None and any(o.status in (DUPLICATE, OUT_OF_ORDER) for o in outcomes):
            # nothing was written, so nothing checked the cached table against the catalog: an
            # answer that lands nothing is given from the table as it is now (another replica)
            table = self.catalog.load_table(table.name())
            committed = self._land(table, plan)
            with self._lock:
                self._tables[identifier] = table
        if committed is not None:
            with self._lock:
                self._tables[identifier] = committed.table
            self.commits += 1
            if self.metrics is not None:
                self.metrics.rows.labels(identifier).inc(committed.rows.num_rows)
        return outcomes

    def _land(self, table: Table, plan: Plan[None]) -> Committed[None] | None:
        """``Writer.land``, counting the conflicts: each plan after the first follows a commit
        that another writer beat (``commit_with_replan``), and giving up follows one more."""
        planned = 0

        def counted(current: Table) -> Planned[None] | None:
            nonlocal planned
            planned += 1
            return plan(current)

        conflicts = 0
        try:
            committed = self._writer.land(table, counted)
            conflicts = planned - 1
        except LoadError:  # every attempt conflicted
            conflicts = planned
            raise
        finally:
            if self.metrics is not None and conflicts > 0:
                self.metrics.commit_conflicts.inc(conflicts)
        return committed


def _decide(u: _Upload, expected: int) -> Outcome:
    """What a batch (or a declared skip) does, given the device's next seq."""
    if u.skip_to is not None:
        if u.seq == expected:
            return Outcome(SKIPPED, u.skip_to + 1)
        if expected == u.skip_to + 1:  # the same declaration again (its answer was lost)
            return Outcome(SKIPPED, expected)
        return Outcome(OUT_OF_ORDER, expected)
    if u.seq == expected:
        return Outcome(LANDED, expected + 1)
    if u.seq == expected - 1:  # a retry of the last accepted batch
        return Outcome(DUPLICATE, expected)
    return Outcome(OUT_OF_ORDER, expected)
