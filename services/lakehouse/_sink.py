"""The Kafka sink: topics into bronze Iceberg tables, exactly once, without Kafka transactions.

Each micro-batch becomes one Iceberg commit per table whose snapshot summary records, for every
partition it covers, the next offset to read (``lakehouse.kafka-offsets``). Those marks, read
back from the table's snapshot lineage, are the truth: on assignment the consumer seeks to them
(group offsets are committed afterwards only as a hint), and before every commit, including
retries after a conflicting writer, rows below the table's marks are dropped. Dead letters go to
``bronze.dead_letters`` first, with their own marks, then the rows and marks go to the topic's
table, so a crash between the two commits replays the batch without doubling either.

Rows become stored rows through ``_ingest.as_stored``, the step every ingest route takes: a
topic whose contract declares personal data lands encrypted, and its dead letters hold no
plaintext. The keystore is opened the first time a batch needs it.
"""

from __future__ import annotations

import array
import contextlib
import datetime as dt
import io
import json
import logging
import queue
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from ._contracts import Contract, contract_for, load_contracts
from ._ingest import Keys, KeystoreSource, as_stored, dead_letter, refused_rows
from ._load import (
    OFFSETS,
    commit_idempotently,
    conform,
    open_table,
    table_marks,
    target_arrow_schema,
)
from ._settings import Settings
from .errors import ContractError, LakehouseError, SchemaMismatchError

logger = logging.getLogger(__name__)

DEAD_LETTERS = "bronze.dead_letters"
# an empty poll means "caught up"; a short wait finds that out without idling on a full batch
POLL_TIMEOUT_MS = 50


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass
class SinkStats:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commits: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    assigned: set[str] = field(default_factory=set)
    ever_assigned: set[str] = field(default_factory=set)
    pending: int = 0  # messages read but not yet committed (the batch in memory)
    first_message_at: float | None = None
    last_commit_at: float | None = None

    def prometheus(self) -> str:
        """The Prometheus text exposition format."""
        elapsed = max(1e-9, time.monotonic() - self.started)
        lines = [
            "# HELP lakehouse_sink_rows_total Rows committed to bronze tables.",
            "# TYPE lakehouse_sink_rows_total counter",
            *(f'lakehouse_sink_rows_total{{table="{t}"}} {n}' for t, n in sorted(self.rows.items())),
            "# HELP lakehouse_sink_rows_per_second Committed rows per second since start.",
            "# TYPE lakehouse_sink_rows_per_second gauge",
            f"lakehouse_sink_rows_per_second {sum(self.rows.values()) / elapsed:.3f}",
            "# HELP lakehouse_sink_dead_letters_total Messages sent to bronze.dead_letters.",
            "# TYPE lakehouse_sink_dead_letters_total counter",
            *(
                f'lakehouse_sink_dead_letters_total{{topic="{t}"}} {n}'
                for t, n in sorted(self.dead_letters.items())
            ),
            "# HELP lakehouse_sink_lag Messages behind the end of each partition.",
            "# TYPE lakehouse_sink_lag gauge",
            *(
                f'lakehouse_sink_lag{{topic="{tp.rsplit("/", 1)[0]}",partition="{tp.rsplit("/", 1)[1]}"}} {n}'
                for tp, n in sorted(self.lag.items())
            ),
            "# HELP lakehouse_sink_pending_messages Messages read and held for the next commit.",
            "# TYPE lakehouse_sink_pending_messages gauge",
            f"lakehouse_sink_pending_messages {self.pending}",
            "# HELP lakehouse_sink_commit_seconds Iceberg commit latency.",
            "# TYPE lakehouse_sink_commit_seconds summary",
        ]
        for q in (0.5, 0.95, 0.99):
            lines.append(
                f'lakehouse_sink_commit_seconds{{quantile="{q}"}} {_quantile(self.commit_seconds, q):.6f}'
            )
        lines += [
            f"lakehouse_sink_commit_seconds_sum {sum(self.commit_seconds):.6f}",
            f"lakehouse_sink_commit_seconds_count {len(self.commit_seconds)}",
        ]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, Any]:
        return {
            "rows": dict(self.rows),
            "dead_letters": dict(self.dead_letters),
            "commits": self.commits,
            "commit_p50_s": _quantile(self.commit_seconds, 0.5),
            "commit_p95_s": _quantile(self.commit_seconds, 0.95),
            "partitions": sorted(self.ever_assigned),
        }


def serve_metrics(stats: SinkStats, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` on loopback in a daemon thread; port 0 picks a free one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = stats.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server


# --- validation --------------------------------------------------------------------------------


def _column(values: list[Any], target: pa.DataType) -> pa.Array:
    """Values as parsed from JSON, typed where they already fit, text where conform must cast."""
    try:
        if any(
            check(target)
            for check in (pa.types.is_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
        ):
            return pa.array(values, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    return pa.array(
        [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values], pa.string()
    )


def _to_table(records: list[dict[str, Any]], target: pa.Schema, identifier: str) -> pa.Table:
    names = set(target.names)
    unknown = sorted({k for r in records for k in r} - names)
    if unknown:
        raise SchemaMismatchError(
            f"field(s) {unknown} are not in {identifier}'s contract", source="message", column=unknown[0]
        )
    present = {k for r in records for k in r}
    columns = {f.name: _column([r.get(f.name) for r in records], f.type) for f in target if f.name in present}
    data = pa.table(columns) if columns else pa.table({"__empty": pa.nulls(len(records))}).drop(["__empty"])
    return conform(data, target, source="message", fmt="jsonl", table=identifier)


def validate(
    records: list[dict[str, Any]], target: pa.Schema, identifier: str
) -> tuple[pa.Table, list[int], dict[int, str]]:
    """Rows that fit the contract (as one table), their indices, and a reason for each misfit.

    The whole batch is tried at once; a failure is split in halves until each bad record is
    isolated, so a few poison messages cost O(k log n) validations, not n.
    """
    good: list[tuple[list[int], pa.Table]] = []
    bad: dict[int, str] = {}

    def attempt(indices: list[int]) -> None:
        try:
            good.append((indices, _to_table([records[i] for i in indices], target, identifier)))
        except SchemaMismatchError as exc:
            if len(indices) == 1:
                bad[indices[0]] = str(exc).replace("message: ", "", 1)
                return
            middle = len(indices) // 2
            attempt(indices[:middle])
            attempt(indices[middle:])

    if records:
        attempt(list(range(len(records))))
    kept = [i for indices, _ in good for i in indices]
    tables = [t for _, t in good]
    data = pa.concat_tables(tables) if tables else target.empty_table()
    return data, kept, bad


def _fast_path(values: list[bytes | None], contract: Contract, target: pa.Schema) -> pa.Table | None:
    """The whole batch parsed and typed in one vectorized pass, or None if any message is not
    a clean envelope of this contract (then the caller checks them one by one)."""
    if any(v is None for v in values):
        return None
    # the JSON reader cannot parse dates from text: read those as text and let conform cast them
    fields = [pa.field(f.name, pa.string() if pa.types.is_date(f.type) else f.type) for f in target]
    envelope = pa.schema([("schema", pa.string()), ("version", pa.int64()), ("data", pa.struct(fields))])
    try:
        parsed = pajson.read_json(
            io.BytesIO(b"\n".join(v for v in values if v is not None)),
            parse_options=pajson.ParseOptions(explicit_schema=envelope, unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.num_rows != len(values):
        return None  # a message spanning lines, or several in one
    schema, version, data = (parsed.column(n).combine_chunks() for n in ("schema", "version", "data"))
    if data.null_count or pc.any(pc.not_equal(schema, contract.identifier)).as_py():
        return None
    if pc.any(pc.greater(version, contract.version)).as_py():
        return None
    table = pa.Table.from_arrays(data.flatten(), names=[f.name for f in fields])
    try:
        return conform(table, target, source="message", fmt="jsonl", table=contract.identifier)
    except SchemaMismatchError:
        return None


# --- the sink ----------------------------------------------------------------------------------


@dataclass
class Dead:
    message: Message
    reason: str
    target: str


class Sink:
    """Consumes topics into their bronze tables. ``run()`` until idle, SIGTERM or ``stop()``."""

    def __init__(
        self,
        catalog: Catalog,
        bootstrap: str,
        topics: list[str],
        *,
        group: str = "lakehouse-sink",
        batch_max_records: int = 50_000,
        batch_max_bytes: int = 64 * 1024 * 1024,
        batch_max_seconds: float = 2.0,
        batch_min_records: int = 10_000,
        idle_exit: float | None = None,
        contracts_file: Path | None = None,
        settings: Settings | None = None,
        keystore: KeystoreSource = None,
    ) -> None:
        """A batch is committed when it reaches ``batch_max_records`` or ``batch_max_bytes``, when
        it is ``batch_max_seconds`` old, or as soon as the consumer has caught up with the topics
        while it holds at least ``batch_min_records`` (enough to amortize a commit; waiting longer
        would only add latency).

        With ``settings``, commits run in a separate process (its own interpreter lock, so
        decoding records and committing them use both cores) that opens the settings' keystore;
        without, in a thread, with ``keystore`` (default: the keystore of the environment's
        settings, opened when a topic with personal data first needs it)."""
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = group
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_seconds = batch_max_seconds
        self.batch_min_records = batch_min_records
        self.idle_exit = idle_exit
        self.contracts_file = contracts_file
        self.stats = SinkStats()
        self._stop = threading.Event()
        self._pending: dict[tuple[str, int], list[Any]] = defaultdict(list)  # (topic, partition) -> records
        self._pending_count = 0
        self._pending_bytes = 0
        self._consumer: Any = None
        self._last_activity = time.monotonic()
        # Batches go in order to one committer (a thread handing them to the committer process, or
        # committing itself), at most one waiting: commits overlap with fetching, stay in offset
        # order, and a slow catalog stops the polling (backpressure).
        self._batches: queue.Queue[dict[tuple[str, int], list[Any]]] = queue.Queue(maxsize=1)
        self._committed_hints: dict[tuple[str, int], int] = {}
        self._hints_lock = threading.Lock()
        self._worker_error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._process = _CommitterProcess(settings) if settings is not None else None
        self._committer = (
            Committer(catalog, contracts_file, self.stats, keystore=keystore)
            if self._process is None
            else None
        )

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

            def on_partitions_assigned(self, assigned: Any) -> None:
                sink._seek_to_table_marks(assigned)
                sink._last_activity = time.monotonic()  # idleness counts from the join

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id="lakehouse-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,  # Tansu: a join takes ~23 s with the defaults
            heartbeat_interval_ms=1000,
            max_poll_records=5000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        consumer.subscribe(self.topics, listener=Listener())
        return consumer

    def _seek_to_table_marks(self, assigned: Any) -> None:
        by_topic: dict[str, dict[str, int]] = {}
        for tp in assigned:
            self.stats.assigned.add(f"{tp.topic}/{tp.partition}")
            self.stats.ever_assigned.add(f"{tp.topic}/{tp.partition}")
            if tp.topic not in by_topic:
                table = self._table_or_none(f"bronze.{tp.topic}")
                by_topic[tp.topic] = table_marks(table) if table is not None else {}
            mark = by_topic[tp.topic].get(f"{tp.topic}/{tp.partition}")
            if mark is not None:
                self._consumer.seek(tp, mark)
                logger.info("resuming %s/%s at offset %s recorded in the table", tp.topic, tp.partition, mark)

    def _table_or_none(self, identifier: str) -> Table | None:
        layer, name = identifier.split(".")
        return self.catalog.load_table((layer, name)) if self.catalog.table_exists((layer, name)) else None

    def run(self) -> SinkStats:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, self.stop)
        self._worker = threading.Thread(target=self._commit_loop, daemon=True, name="sink-committer")
        self._worker.start()
        self._consumer = self._make_consumer()
        self._last_activity = time.monotonic()
        batch_started = time.monotonic()
        try:
            while not self._stop.is_set():
                self._raise_worker_error()
                polled = self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
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
                if not self._pending_count:
                    batch_started = time.monotonic()
                joined = bool(self.stats.assigned)
                idle = time.monotonic() - self._last_activity
                if self.idle_exit is not None and joined and idle >= self.idle_exit:
                    break
            self.flush()  # SIGTERM or idle: commit what was read
            self._drain()
        finally:
            self._batches.put({})  # tells the committer to finish
            self._worker.join(timeout=120)
            self._consumer.close(autocommit=False)
            if self._process is not None:
                self._process.close()
        self._raise_worker_error()
        return self.stats

    def flush(self) -> None:
        """Hand the batch read so far to the committer (blocks while one is already waiting)."""
        if not self._pending_count:
            return
        pending, self._pending = self._pending, defaultdict(list)
        self._pending_count = self._pending_bytes = 0
        self.stats.pending = 0
        self._batches.put(pending)

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
            pending = self._batches.get()
            try:
                if not pending:
                    return
                if self._worker_error is None:
                    self._commit_batch(pending)
            except BaseException as exc:
                self._worker_error = exc
            finally:
                self._batches.task_done()

    def _commit_batch(self, pending: dict[tuple[str, int], list[Any]]) -> None:
        if self._process is not None:
            hints = self._process.commit(pending, self.stats)
        else:
            assert self._committer is not None
            hints = self._committer.commit_batch(pending)
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
        for (topic, partition), offset in hints.items():
            highwater = self._consumer.highwater(TopicPartition(topic, partition))
            if highwater is not None:
                self.stats.lag[f"{topic}/{partition}"] = max(0, highwater - offset)


# --- Iceberg commits ---------------------------------------------------------------------------


class Committer:
    """Commits batches of consumer records to their bronze tables and dead letters, exactly once.

    ``keystore``: a keystore, or a function that opens one (called once, the first time personal
    data is met); default: the keystore of the environment's settings (``Settings.load()``), as
    in a process started as a ``lakehouse`` command."""

    def __init__(
        self,
        catalog: Catalog,
        contracts_file: Path | None,
        stats: SinkStats,
        *,
        keystore: KeystoreSource = None,
    ) -> None:
        from ._keystore import environment_keystore

        self.catalog = catalog
        self.contracts_file = contracts_file
        self.stats = stats
        self.keys = Keys(keystore if keystore is not None else environment_keystore)

    def as_stored(self, identifier: str, rows: pa.Table, table: Table) -> pa.Table:
        """``rows`` as received (validated against ``received_schema``) -> as ``table`` stores
        them: personal data encrypted, the ingest order stamped. Other routes that commit
        themselves (the gateway) call it before they write."""
        contract = contract_for(identifier, self.contracts_file)
        if contract is None or not contract.transforms_rows:
            return rows
        keystore = self.keys.get() if contract.pii else None  # no master key for tables without personal data
        return as_stored(rows, contract, keystore, target=target_arrow_schema(table), source="upload")

    def commit_batch(self, pending: dict[tuple[str, int], list[Any]]) -> dict[tuple[str, int], int]:
        """Commit records (anything with offset, key, value) per (topic, partition); returns the
        next offset per (topic, partition) for the group-offset hint."""
        by_topic: dict[str, dict[int, list[Any]]] = defaultdict(dict)
        for (topic, partition), records in pending.items():
            by_topic[topic][partition] = records
        for topic, partitions in by_topic.items():
            self._commit_topic(topic, partitions)
        return {tp: records[-1].offset + 1 for tp, records in pending.items()}

    def _commit_topic(self, topic: str, partitions: dict[int, list[Any]]) -> None:
        identifier = f"bronze.{topic}"
        contract = load_contracts(self.contracts_file).get(identifier)
        ends = {f"{topic}/{p}": records[-1].offset + 1 for p, records in partitions.items()}

        def message(p: int, r: Any) -> Message:
            return Message(topic, p, r.offset, r.key, r.value)

        if contract is None:
            reason = f"no contract declares {identifier}"
            self.commit_dead(
                [Dead(message(p, r), reason, identifier) for p, rs in partitions.items() for r in rs]
            )
            return
        try:
            table, _ = open_table(self.catalog, identifier, contracts_file=self.contracts_file)
        except ContractError as exc:
            self.commit_dead(
                [Dead(message(p, r), str(exc), identifier) for p, rs in partitions.items() for r in rs]
            )
            raise
        target = target_arrow_schema(table)
        # rows are validated as producers send them (personal data in plaintext, no platform
        # columns), then made into stored rows (encrypted, stamped) by as_stored
        received = contract.arrow_schema() if contract.transforms_rows else target
        flat = [(p, r) for p, rs in partitions.items() for r in rs]
        data = _fast_path([r.value for _, r in flat], contract, received)
        dead: list[Dead] = []
        rows_from = flat  # the message of each row of data
        if data is None:  # a dirty batch: check message by message, isolating the bad ones
            records, kept_rows = [], []
            for i, (p, r) in enumerate(flat):
                why_not, body = self._envelope(r.value, contract)
                if why_not:
                    dead.append(Dead(message(p, r), why_not, identifier))
                else:
                    records.append(body)
                    kept_rows.append(i)
            data, kept, bad = validate(records, received, identifier)
            dead += [Dead(message(*flat[kept_rows[i]]), why, identifier) for i, why in sorted(bad.items())]
            rows_from = [flat[kept_rows[i]] for i in kept]
        if contract.pii:
            keystore = self.keys.get()
            assert keystore is not None
            refused = refused_rows(data, contract, keystore)  # no subject, or a forgotten one
            if refused:
                dead += [Dead(message(*rows_from[i]), why, identifier) for i, why in sorted(refused.items())]
                keep = [i for i in range(data.num_rows) if i not in refused]
                data = data.take(pa.array(keep, pa.int64()))
                rows_from = [rows_from[i] for i in keep]
            data = as_stored(data, contract, keystore, target=target, source="message")
        elif contract.transforms_rows:
            data = as_stored(data, contract, None, target=target, source="message")
        row_partitions = [p for p, _ in rows_from]
        row_offsets = [r.offset for _, r in rows_from]
        self.commit_dead(dead)
        self._commit_rows(table, identifier, topic, data, row_partitions, row_offsets, ends)

    @staticmethod
    def _envelope(value: bytes | None, contract: Contract) -> tuple[str | None, dict[str, Any]]:
        if value is None:
            return "empty message (tombstone)", {}
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return f"not JSON: {exc}", {}
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            return 'not an envelope {"schema", "version", "data": {...}}', {}
        if body.get("schema", contract.identifier) != contract.identifier:
            return f"schema {body.get('schema')!r} sent to the topic of {contract.identifier}", {}
        version = body.get("version", 1)
        if not isinstance(version, int) or version > contract.version:
            return (
                f"schema version {version!r} is newer than contract {contract.identifier} "
                f"v{contract.version}: upgrade the contract, then replay from dead letters"
            ), {}
        return None, body["data"]

    def _commit_rows(
        self,
        table: Table,
        identifier: str,
        topic: str,
        data: pa.Table,
        row_partitions: list[int],
        row_offsets: list[int],
        ends: dict[str, int],
    ) -> None:
        def plan(current: Table) -> tuple[pa.Table, dict[str, str]] | None:
            marks = table_marks(current, set(ends))
            if all(end <= marks.get(tp, -1) for tp, end in ends.items()):
                return None  # another writer already committed all of it
            rows = data
            if any(tp in marks for tp in ends):  # drop rows below the marks (a replay, another writer)
                floor = [marks.get(f"{topic}/{p}", -1) for p in row_partitions]
                keep = [i for i, (o, f) in enumerate(zip(row_offsets, floor, strict=True)) if o >= f]
                if len(keep) != data.num_rows:
                    rows = data.take(pa.array(keep, pa.int64()))
            return rows, {OFFSETS: _marks_json(ends, marks)}

        started = time.perf_counter()
        outcome = commit_idempotently(self.catalog, table, plan)
        if outcome is not None:
            self.stats.commit_seconds.append(time.perf_counter() - started)
            self.stats.commits += 1
            self.stats.rows[identifier] += outcome[1].num_rows
            self.stats.last_commit_at = time.monotonic()

    def commit_dead(self, dead: list[Dead]) -> None:
        if not dead:
            return
        table, _ = open_table(self.catalog, DEAD_LETTERS, contracts_file=self.contracts_file)
        target = target_arrow_schema(table)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ends: dict[str, int] = {}
        for d in dead:
            ends[d.message.tp] = max(ends.get(d.message.tp, 0), d.message.offset + 1)
        fresh: list[Dead] = []
        stored = {id(d): self._dead_letter_row(d) for d in dead}  # sealed once, not per retry

        def plan(current: Table) -> tuple[pa.Table, dict[str, str]] | None:
            marks = table_marks(current, set(ends))
            fresh[:] = [d for d in dead if d.message.offset >= marks.get(d.message.tp, -1)]
            if not fresh:
                return None
            rows = pa.Table.from_pylist(
                [{**stored[id(d)], "received_at": now} for d in fresh],
                schema=target,
            )
            return rows, {OFFSETS: _marks_json(ends, marks)}

        if commit_idempotently(self.catalog, table, plan) is None:
            return
        for d in fresh:
            self.stats.dead_letters[d.message.topic] += 1
        logger.warning(
            "%s message(s) sent to %s, e.g. %s", len(fresh), DEAD_LETTERS, stored[id(fresh[0])]["reason"]
        )

    def _dead_letter_row(self, d: Dead) -> dict[str, Any]:
        """A dead letter as stored: of a contract with personal data, sealed (``_ingest``)."""
        contract = contract_for(d.target, self.contracts_file) if d.target else None
        keystore = self.keys.get() if contract is not None and contract.pii else None
        key, payload, reason, subject = dead_letter(
            contract, keystore, d.message.key, d.message.value, d.reason
        )
        return {
            "source": d.message.topic,
            "source_partition": d.message.partition,
            "source_offset": d.message.offset,
            "message_key": key,
            "payload": payload,
            "reason": reason[:2000],
            "target_table": d.target,
            "pii_subject": subject,
        }


def _marks_json(ends: dict[str, int], marks: dict[str, int]) -> str:
    """The marks a commit records: never below what the table already holds."""
    return json.dumps({tp: max(end, marks.get(tp, 0)) for tp, end in sorted(ends.items())})


class _Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


_NULL = -1  # length of a null key or value


def _blob(items: list[bytes | None]) -> tuple[bytes, bytes]:
    """Many small byte strings as one blob and their lengths: cheap to pickle and pipe."""
    lengths = array.array("q", (_NULL if b is None else len(b) for b in items))
    return b"".join(b for b in items if b is not None), lengths.tobytes()


def _split(blob: bytes, lengths_raw: bytes) -> list[bytes | None]:
    lengths = array.array("q")
    lengths.frombytes(lengths_raw)
    view, at = memoryview(blob), 0
    out: list[bytes | None] = []
    for n in lengths:
        if n == _NULL:
            out.append(None)
        else:
            out.append(bytes(view[at : at + n]))
            at += n
    return out


def _pack(records: list[Any]) -> tuple[bytes, tuple[bytes, bytes], tuple[bytes, bytes]]:
    offsets = array.array("q", (r.offset for r in records)).tobytes()
    return offsets, _blob([r.key for r in records]), _blob([r.value for r in records])


def _unpack(packed: tuple[bytes, tuple[bytes, bytes], tuple[bytes, bytes]]) -> list[_Record]:
    offsets_raw, keys, values = packed
    offsets = array.array("q")
    offsets.frombytes(offsets_raw)
    return [_Record(o, k, v) for o, k, v in zip(offsets, _split(*keys), _split(*values), strict=True)]


def _committer_main(conn: Any, settings: Settings, contracts_file: Path | None) -> None:
    """The committer process: batches in over the pipe, hints and stats out, in order."""
    from ._catalog import load_catalog

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from ._keystore import open_keystore

    stats = SinkStats()
    committer = Committer(
        load_catalog(settings), contracts_file, stats, keystore=lambda: open_keystore(settings)
    )
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        try:
            pending = {tp: _unpack(packed) for tp, packed in batch.items()}
            hints = committer.commit_batch(pending)
            conn.send(
                (
                    "ok",
                    hints,
                    (dict(stats.rows), dict(stats.dead_letters), stats.commit_seconds, stats.last_commit_at),
                )
            )
            stats.commit_seconds = []
        except BaseException as exc:
            conn.send(("error", type(exc).__name__, str(exc)))


class _CommitterProcess:
    def __init__(self, settings: Settings) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(
            target=_committer_main,
            args=(child, settings, settings.contracts_file),
            daemon=True,
            name="lakehouse-sink-committer",
        )
        self._proc.start()
        child.close()

    def commit(
        self, pending: dict[tuple[str, int], list[Any]], stats: SinkStats
    ) -> dict[tuple[str, int], int]:
        batch = {tp: _pack(records) for tp, records in pending.items()}
        try:
            self._conn.send(batch)
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise LakehouseError(
                f"the sink's committer process exited (code {self._proc.exitcode}); nothing of this batch was "
                "committed that the tables do not record, so a restart resumes correctly"
            ) from exc
        if reply[0] == "error":
            _, kind, message = reply
            raise (ContractError if kind == "ContractError" else LakehouseError)(message)
        _, hints, (rows, dead, seconds, last_commit_at) = reply
        stats.rows.update(rows)
        stats.dead_letters.update(dead)
        stats.commit_seconds.extend(seconds)
        stats.commits += len(seconds)
        stats.last_commit_at = last_commit_at or stats.last_commit_at
        return dict(hints)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # the committer already exited
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
