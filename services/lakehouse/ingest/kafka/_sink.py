"""The Kafka sink: topics into bronze Iceberg tables, exactly once, without Kafka transactions.

Each micro-batch becomes one Iceberg commit per table whose snapshot summary records, for every
partition it covers, the next offset to read (``lakehouse.kafka-offsets``). Those marks, read
back from the table's snapshot lineage, are the truth: on assignment the consumer seeks to them
(group offsets are committed afterwards only as a hint), and before every commit, including
retries after a conflicting writer, rows below the table's marks are dropped. Dead letters go to
``bronze.dead_letters`` first, with their own marks, then the rows and marks go to the topic's
table, so a crash between the two commits replays the batch without doubling either.

Marks are offsets in one log: before reading a partition the sink checks that the broker's log
still holds what the tables recorded (``_offsets``) and stops with ``OffsetsOutOfRange`` when it
does not, rather than skip the new log's records below the marks; ``accept_offset_reset``
records the reset in the tables and reads such partitions from the log's start. The consumer
never resets a position on its own (``auto_offset_reset="none"``): an out-of-range fetch while
running goes through the same check.

Rows become stored rows through ``lakehouse.ingest.as_stored``, the step every ingest route takes: a
topic whose contract declares personal data lands encrypted, and its dead letters hold no
plaintext. The keystore is opened the first time a batch needs it.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import defaultdict
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.config import BrokerSettings, Project, Settings
from lakehouse.ingest import DEAD_LETTERS, IngestStats, KeystoreSource

from ._committer import Committer, CommitterProcess
from ._connect import as_broker, broker_errors, client_config, require_broker
from ._offsets import Log, mismatches, position, record_reset, recorded, refusal

logger = logging.getLogger(__name__)


SESSION_TIMEOUT_S = 6.0  # Tansu: a join takes ~23 s with the defaults
HEARTBEAT_S = 1.0
# Holding only some of the topics' partitions, a sink cannot tell a live peer from a member that
# was killed without leaving: the broker hands a dead member's partitions over only when its
# session times out. Idle-exit then waits that long after the join, not to leave them unread.
SETTLE_S = SESSION_TIMEOUT_S + 2 * HEARTBEAT_S
# an empty poll means "caught up"; a short wait finds that out without idling on a full batch
POLL_TIMEOUT_MS = 50
LAG_REFRESH_SECONDS = 1.0  # how often lag is recomputed between commits
PROBE_TIMEOUT_S = 10.0  # to learn where a log ends (``Sink._log_ends``)


class Sink:
    """Consumes topics into their bronze tables. ``run()`` until idle, SIGTERM or ``stop()``."""

    def __init__(
        self,
        catalog: Catalog,
        bootstrap: str | BrokerSettings,
        topics: list[str],
        *,
        group: str = "lakehouse-sink",
        batch_max_records: int = 50_000,
        batch_max_bytes: int = 64 * 1024 * 1024,
        batch_max_seconds: float = 2.0,
        batch_min_records: int = 10_000,
        idle_exit: float | None = None,
        project: Project | None = None,
        settings: Settings | None = None,
        keystore: KeystoreSource = None,
        accept_offset_reset: bool = False,
    ) -> None:
        """A batch is committed when it reaches ``batch_max_records`` or ``batch_max_bytes``, when
        it is ``batch_max_seconds`` old, or as soon as the consumer has caught up with the topics
        while it holds at least ``batch_min_records`` (enough to amortize a commit; waiting longer
        would only add latency).

        ``bootstrap`` is the broker's settings (``client_config``: TLS, SASL), or a plain
        ``host:port`` of a PLAINTEXT broker on loopback.

        With ``settings``, commits run in a separate process (its own interpreter lock, so
        decoding records and committing them use both cores) that opens the settings' keystore;
        without, in a thread, with ``keystore`` (default: the keystore of the environment's
        settings, opened when a topic with personal data first needs it). Contracts are
        ``project``'s (default: the project ``settings`` name, else the environment's).

        A partition whose recorded marks the broker's log does not hold (it restarted with an
        empty log, the topic was created again, records were deleted unread) stops the sink with
        ``OffsetsOutOfRange``; with ``accept_offset_reset`` the reset is recorded in the tables
        and the partition is read from the log's start."""
        self.catalog = catalog
        self.broker = as_broker(bootstrap)
        self.bootstrap = self.broker.bootstrap or ""
        self.topics = topics
        self.group = group
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_seconds = batch_max_seconds
        self.batch_min_records = batch_min_records
        self.idle_exit = idle_exit
        self.project = project
        self.accept_offset_reset = accept_offset_reset
        self.stats = IngestStats()
        self._stop = threading.Event()
        self._pending: dict[tuple[str, int], list[Any]] = defaultdict(list)  # (topic, partition) -> records
        self._pending_count = 0
        self._pending_bytes = 0
        self._consumer: Any = None
        self._last_activity = time.monotonic()
        self._joined_at = time.monotonic()
        self._partitions: set[str] | None = None  # every partition of the topics, once known
        self._topic_ids: dict[str, str] = {}  # the id of each topic's log, as checked on assignment
        self._unchecked: set[Any] = set()  # assigned partitions not yet checked against the tables
        self._unchecked_lock = threading.Lock()
        # Batches go in order to one committer (a thread handing them to the committer process, or
        # committing itself), at most one waiting: commits overlap with fetching, stay in offset
        # order, and a slow catalog stops the polling (backpressure).
        self._batches: queue.Queue[tuple[dict[tuple[str, int], list[Any]], dict[str, str]] | None] = (
            queue.Queue(maxsize=1)
        )
        self._committed_hints: dict[tuple[str, int], int] = {}
        # the next offset the tables hold per partition: lag is the log's end minus this
        self._durable: dict[tuple[str, int], int] = {}
        self._hints_lock = threading.Lock()
        self._worker_error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._process = CommitterProcess(settings, project) if settings is not None else None
        self._committer = (
            Committer(catalog, project, self.stats, keystore=keystore) if self._process is None else None
        )

    def trouble(self) -> str | None:
        """Why the sink cannot do its work now (one line, for readiness probes), or None: the
        last commit failed, the committer (process or thread) is gone, or it holds no partition."""
        if self._worker_error is not None:  # the reason is in the sink's log
            return f"the last commit failed ({type(self._worker_error).__name__}); the sink's log says why"
        if self._process is not None and not self._process.alive:
            return f"the committer process exited (code {self._process.exitcode})"
        if self._worker is None:
            return "the sink has not started consuming"
        if not self._worker.is_alive():
            return "the commit thread has stopped"
        if not self.stats.assigned:
            return "no partitions assigned (joining the consumer group, or more sinks than partitions)"
        return None

    def stop(self, *_: object) -> None:
        self._stop.set()

    # Kafka plumbing -----------------------------------------------------------------------

    def _make_consumer(self) -> Any:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        sink = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                # Commit what was read before the partitions move. An error must not escape into
                # the client (it would wrap it); run() reports it once.
                if sink._worker_error is None:
                    try:
                        sink.flush()
                        sink._drain()
                    except BaseException as exc:
                        sink._worker_error = sink._worker_error or exc
                sink.stats.assigned -= {f"{tp.topic}/{tp.partition}" for tp in revoked}
                with sink._unchecked_lock:
                    sink._unchecked -= set(revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                sink._hold(assigned)
                sink._last_activity = sink._joined_at = time.monotonic()  # idleness counts from the join

        consumer = KafkaConsumer(
            **client_config(self.broker, client_id="lakehouse-sink"),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # every position comes from the tables (``_seek_checked``)
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            heartbeat_interval_ms=int(HEARTBEAT_S * 1000),
            max_poll_records=5000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        consumer.subscribe(self.topics, listener=Listener())
        return consumer

    def _hold(self, assigned: Any) -> None:
        """Newly assigned partitions wait, paused, until the main loop has checked them against
        the tables (``_seek_checked``): the listener runs on the client's IO thread, which may not
        ask the broker anything. A placeholder position keeps the consumer from looking for one."""
        for tp in assigned:
            self.stats.assigned.add(f"{tp.topic}/{tp.partition}")
            self.stats.ever_assigned.add(f"{tp.topic}/{tp.partition}")
            self._consumer.seek(tp, 0)
        self._consumer.pause(*assigned)
        with self._unchecked_lock:
            self._unchecked |= set(assigned)

    def _check_assigned(self) -> None:
        with self._unchecked_lock:
            unchecked, self._unchecked = self._unchecked, set()
        held = self._consumer.assignment()
        tps = [tp for tp in unchecked if tp in held]
        if tps:
            self._seek_checked(tps)

    def _seek_checked(self, tps: list[Any]) -> None:
        """Seek each partition to where the tables say reading resumes (the topic table's mark,
        else the dead letters' mark, else the log's start) and resume it, once the broker's log
        is found to hold it; otherwise record the reset (``accept_offset_reset``) or raise
        ``OffsetsOutOfRange``."""
        from kafka import TopicPartition

        topics = sorted({tp.topic for tp in tps})
        # every partition of the topics: a topic created again invalidates the marks of all of them
        every = sorted(
            {TopicPartition(t, p) for t in topics for p in self._consumer.partitions_for_topic(t) or ()}
            | {TopicPartition(tp.topic, tp.partition) for tp in tps}
        )
        starts, ends = self._consumer.beginning_offsets(every), self._consumer.end_offsets(every)
        dead = self._table_or_none(DEAD_LETTERS)
        tables = {
            t: [(self._table_or_none(f"bronze.{t}"), f"bronze.{t}"), (dead, DEAD_LETTERS)] for t in topics
        }
        seen = {t: [recorded(name, table, t) for table, name in tables[t]] for t in topics}
        highest = {tp: max(r.marks.get(tp.partition, -1) for r in seen[tp.topic]) for tp in every}
        ends.update(self._log_ends({tp: m for tp, m in highest.items() if m > ends[tp]}, ends))
        refused = []
        for topic in topics:
            topic_id = self._log_topic_id(topic)
            logs = {tp.partition: Log(starts[tp], ends[tp], topic_id) for tp in every if tp.topic == topic}
            found = mismatches(topic, logs, seen[topic])
            if found and self.accept_offset_reset:
                for (table, _), before in zip(tables[topic], seen[topic], strict=True):
                    if table is not None and before.marks:
                        record_reset(self.catalog, table, found, before)
                reloaded = [(self._table_or_none(name), name) for _, name in tables[topic]]
                seen[topic] = [recorded(name, table, topic) for table, name in reloaded]
                found = mismatches(topic, logs, seen[topic])
            refused += found
            if topic_id is not None:
                self._topic_ids[topic] = topic_id
            for tp in tps:
                if tp.topic == topic and tp.partition in logs and not found:
                    log = logs[tp.partition]
                    offset = position(tp.partition, seen[topic])
                    offset = log.start if offset is None else offset
                    self._consumer.seek(tp, offset)
                    self._consumer.resume(tp)
                    self._durable[(topic, tp.partition)] = offset
                    self.stats.lag[f"{topic}/{tp.partition}"] = max(0, log.end - offset)
                    logger.info(
                        "reading %s/%s from offset %s (log %s..%s)",
                        topic,
                        tp.partition,
                        offset,
                        log.start,
                        log.end,
                    )
        if refused:
            raise refusal(refused)

    def _log_ends(self, marks: dict[Any, int], reported: dict[Any, int]) -> dict[Any, int]:
        """The true end of each partition's log whose highest mark (``marks``) lies beyond the
        ``reported`` end. Kafka's ListOffsets answers the log's end; Tansu 0.6 answers the base
        offset of the last batch, short of it. A fetch response carries the high watermark: one
        fetch at the reported end, from a consumer of its own (the sink's partitions are paused
        meanwhile)."""
        if not marks:
            return {}
        tps = list(marks)
        from kafka import KafkaConsumer

        with broker_errors(self.broker):
            probe = KafkaConsumer(
                **client_config(self.broker, client_id="lakehouse-sink-probe"),
                enable_auto_commit=False,
                auto_offset_reset="none",
                max_partition_fetch_bytes=1,  # one batch per partition is enough to learn its end
            )
        found: dict[Any, int] = {}
        try:
            probe.assign(tps)
            for tp in tps:
                probe.seek(tp, reported[tp])
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while len(found) < len(tps) and time.monotonic() < deadline:
                probe.poll(timeout_ms=100)
                found.update({tp: hw for tp in tps if (hw := probe.highwater(tp)) is not None})
        finally:
            probe.close()
        for tp in set(tps) - set(found):  # no evidence that the mark is beyond the end
            logger.warning(
                "could not learn where the log of %s/%s ends; not checking its mark against it",
                tp.topic,
                tp.partition,
            )
            found[tp] = marks[tp]
        return {tp: max(reported[tp], end) for tp, end in found.items()}

    def _log_topic_id(self, topic: str) -> str | None:
        """The id the broker gave ``topic`` in its metadata (None: it reports none)."""
        cluster = getattr(getattr(self._consumer, "_client", None), "cluster", None)
        topic_id = cluster.topic_id(topic) if cluster is not None and hasattr(cluster, "topic_id") else None
        return str(topic_id) if topic_id and getattr(topic_id, "int", 1) else None

    def _recreated(self) -> set[str]:
        """Topics whose id the broker's metadata now gives differently than when they were checked."""
        return {
            topic
            for topic, known in self._topic_ids.items()
            if (now := self._log_topic_id(topic)) is not None and now != known
        }

    def _discard(self, topics: set[str]) -> None:
        """Forget records read from ``topics`` (they are read again from the tables' marks)."""
        for key in [k for k in self._pending if k[0] in topics]:
            records = self._pending.pop(key)
            self._pending_count -= len(records)
            self._pending_bytes -= sum(r.serialized_value_size for r in records)
        self.stats.pending = self._pending_count

    def _recheck(self, tps: list[Any]) -> None:
        """A position the log does not hold any more (``OffsetOutOfRange``), or a topic created
        again while the sink ran: commit what was read before, then check and seek as on
        assignment."""
        self.flush()
        self._drain()
        if tps:
            self._seek_checked(tps)

    def _table_or_none(self, identifier: str) -> Table | None:
        layer, name = identifier.split(".")
        return self.catalog.load_table((layer, name)) if self.catalog.table_exists((layer, name)) else None

    def _settled(self) -> bool:
        """No partition of the topics can still be on its way here: this sink holds them all,
        or it joined long enough ago for a killed member's partitions to have been handed over."""
        if self._partitions is None:
            found = {f"{t}/{p}" for t in self.topics for p in self._consumer.partitions_for_topic(t) or ()}
            self._partitions = found or None
        if self._partitions is not None and self._partitions <= self.stats.assigned:
            return True
        return time.monotonic() - self._joined_at >= SETTLE_S

    def _caught_up(self) -> bool:
        """Every assigned partition read to its end: an empty poll alone is not enough (a slow
        broker or a busy machine can leave fetches empty for seconds while records wait)."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return False
        ends = self._consumer.end_offsets(assigned)
        # the last fetch's high watermark where it is further (Tansu's ListOffsets falls short of the end)
        ends = {tp: max(end, self._consumer.highwater(tp) or 0) for tp, end in ends.items()}
        behind = {tp: end for tp, end in ends.items() if self._consumer.position(tp) < end}
        if behind:
            self._last_activity = time.monotonic()  # records are waiting: not idle
        return not behind

    def run(self) -> IngestStats:
        """Consume until idle, ``stop()``, SIGTERM or SIGINT. In the main thread, SIGTERM and
        SIGINT stop the sink while it runs; the handlers found before are restored when it ends
        (elsewhere signals are left alone: only the main thread may set handlers)."""
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.stop)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> IngestStats:
        from kafka.errors import OffsetOutOfRangeError

        try:
            require_broker(self.bootstrap)  # seconds, not kafka-python's half-minute of retries
            if self._process is not None:
                self._process.wait_ready()  # join the group only once batches can be committed
            with broker_errors(self.broker):
                self._consumer = self._make_consumer()
        except BaseException:
            if self._process is not None:
                self._process.close()
            raise
        self._worker = threading.Thread(target=self._commit_loop, daemon=True, name="sink-committer")
        self._worker.start()
        self._last_activity = time.monotonic()
        batch_started = lag_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self._raise_worker_error()
                try:
                    polled = self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                except OffsetOutOfRangeError as exc:
                    out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                    self._recheck(list(out) or list(self._consumer.assignment()))
                    continue
                self._check_assigned()
                recreated = self._recreated()
                if recreated:
                    # records read since may come from the new log at the old one's offsets: drop them
                    self._discard(recreated)
                    polled = {tp: rs for tp, rs in polled.items() if tp.topic not in recreated}
                    self._recheck([tp for tp in self._consumer.assignment() if tp.topic in recreated])
                for tp, records in polled.items():
                    self._pending[(tp.topic, tp.partition)].extend(records)
                    self._pending_count += len(records)
                    self._pending_bytes += sum(r.serialized_value_size for r in records)
                    self.stats.pending = self._pending_count
                    if self.stats.first_message_at is None:
                        self.stats.first_message_at = time.monotonic()
                    self._last_activity = time.monotonic()
                caught_up = not polled
                if self._pending_count and (
                    self._pending_count >= self.batch_max_records
                    or (caught_up and self._pending_count >= self.batch_min_records)
                    or self._pending_bytes >= self.batch_max_bytes
                    or time.monotonic() - batch_started >= self.batch_max_seconds
                ):
                    self.flush()
                self._publish_hints()
                if time.monotonic() - lag_at >= LAG_REFRESH_SECONDS:
                    self._refresh_lag()
                    lag_at = time.monotonic()
                if not self._pending_count:
                    batch_started = time.monotonic()
                joined = bool(self.stats.assigned)
                idle = time.monotonic() - self._last_activity
                if (
                    self.idle_exit is not None
                    and joined
                    and idle >= self.idle_exit
                    and self._settled()
                    and self._caught_up()
                ):
                    break
            self.flush()  # SIGTERM or idle: commit what was read
            self._drain()
        finally:
            self._batches.put(None)  # tells the committer to finish
            self._worker.join(timeout=120)
            self._consumer.close(autocommit=False)
            if self._process is not None:
                self._process.close()
        self._raise_worker_error()
        return self.stats

    def flush(self) -> None:
        """Hand the batch read so far to the committer (blocks while one is already waiting)."""
        recreated = self._recreated()
        if recreated:  # not committed as offsets of the log the tables count in
            self._discard(recreated)
        if not self._pending_count:
            return
        pending, self._pending = self._pending, defaultdict(list)
        self._pending_count = self._pending_bytes = 0
        self.stats.pending = 0
        ids = {t: self._topic_ids[t] for t in {t for t, _ in pending} if t in self._topic_ids}
        self._batches.put((pending, ids))

    def _drain(self) -> None:
        """Wait until every handed-over batch is committed, then publish the group offsets."""
        self._batches.join()
        self._raise_worker_error()
        self._publish_hints()

    def _raise_worker_error(self) -> None:
        if self._worker_error is not None:
            raise self._worker_error

    def _commit_loop(self) -> None:
        while True:
            batch = self._batches.get()
            try:
                if batch is None:
                    return
                if self._worker_error is None:
                    self._commit_batch(*batch)
            except BaseException as exc:
                self._worker_error = exc
            finally:
                self._batches.task_done()

    def _commit_batch(self, pending: dict[tuple[str, int], list[Any]], topic_ids: dict[str, str]) -> None:
        if self._process is not None:
            hints = self._process.commit(pending, self.stats, topic_ids)
        else:
            assert self._committer is not None
            hints = self._committer.commit_batch(pending, topic_ids)
        with self._hints_lock:
            for tp, offset in hints.items():
                self._committed_hints[tp] = max(self._committed_hints.get(tp, 0), offset)

    def _publish_hints(self) -> None:
        with self._hints_lock:
            hints, self._committed_hints = self._committed_hints, {}
        if hints:
            self._commit_hints(hints)

    def _commit_hints(self, hints: dict[tuple[str, int], int]) -> None:
        """Commit group offsets (asynchronously: they are a hint) and update lag from the
        high-water marks the last fetches reported (no extra broker round trip)."""
        from kafka import OffsetAndMetadata, TopicPartition

        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in hints.items()}
        try:
            self._consumer.commit_async(offsets)
        except Exception as exc:  # the table holds the truth; a lost hint costs a re-read, not data
            logger.warning("could not commit consumer-group offsets (a hint only): %s", exc)
        for tp, offset in hints.items():
            self._durable[tp] = max(self._durable.get(tp, 0), offset)
        self._refresh_lag()

    def _refresh_lag(self) -> None:
        """Lag per held partition from the high-water marks the last fetches reported (no extra
        broker round trip): it grows while a commit hangs, so a stalled sink shows."""
        from kafka import TopicPartition

        held = self._consumer.assignment()  # highwater() refuses a partition not held
        for (topic, partition), durable in list(self._durable.items()):
            tp = TopicPartition(topic, partition)
            if tp not in held:
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.stats.lag[f"{topic}/{partition}"] = max(0, highwater - durable)
