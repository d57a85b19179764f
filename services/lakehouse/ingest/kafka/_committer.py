"""The Kafka sink's committer: batches of consumer records per topic and partition into their
bronze tables and dead letters, exactly once, through the one write path (``ingest.Writer``),
in a process of its own (``CommitterProcess``) so that polling and committing overlap.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, overload

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.config import Project, Settings, project_of
from lakehouse.contracts import load_contracts
from lakehouse.errors import ContractError, LakehouseError
from lakehouse.iceberg import (
    OFFSETS,
    Committed,
    Plan,
    Planned,
    target_arrow_schema,
)
from lakehouse.ingest import (
    DeadLetter,
    IngestStats,
    KeystoreSource,
    Message,
    Writer,
    as_stored,
    fast_path,
    fast_path_lines,
    open_envelope,
    refused_rows,
    validate,
)

from ._offsets import TOPIC_IDS

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _flat(partitions: dict[int, Sequence[Any]]) -> list[tuple[int, Any]]:
    return [(p, r) for p, rs in partitions.items() for r in rs]


def _offsets(records: Sequence[Any]) -> Iterable[int]:
    return records.offsets if isinstance(records, PackedRecords) else (r.offset for r in records)


def _next_offset(records: Sequence[Any]) -> int:
    """The offset after a partition's last record (without making record objects)."""
    return int(records.offsets[-1] if isinstance(records, PackedRecords) else records[-1].offset) + 1


def _clean_batch(partitions: dict[int, Sequence[Any]], contract: Any, received: pa.Schema) -> pa.Table | None:
    """Every partition's records parsed in one vectorized pass (``fast_path``), from the joined
    values as they came through the pipe when they did; None for a batch that needs checking
    message by message."""
    lines = [rs.lines() if isinstance(rs, PackedRecords) else None for rs in partitions.values()]
    if all(line is not None for line in lines):
        count = sum(len(rs) for rs in partitions.values())
        return fast_path_lines(
            b"\n".join(line for line in lines if line is not None), count, contract, received
        )
    return fast_path([r.value for rs in partitions.values() for r in rs], contract, received)


class _TaggingWriter(Writer):
    """The write path, with ``tags`` added to the snapshot summary of every commit it makes: the
    id of the topic whose log the batch's offsets count in (``_offsets``), in the same commit as
    the rows and marks of the topic's table and of the dead letters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tags: dict[str, str] = {}

    def land(self, table: Table, plan: Plan[T]) -> Committed[T] | None:
        tags = dict(self.tags)
        if not tags:
            return super().land(table, plan)

        def tagged(current: Table) -> Planned[T] | None:
            planned = plan(current)
            return (
                None if planned is None else Planned(planned.rows, {**planned.ledger, **tags}, planned.result)
            )

        return super().land(table, tagged)


# --- Iceberg commits ---------------------------------------------------------------------------


class Committer:
    """Commits batches of consumer records to their bronze tables and dead letters, exactly once:
    each table's ledger holds the next offset per partition (``lakehouse.kafka-offsets``).

    ``keystore``: as for ``Writer``; contracts are ``project``'s (None: the environment's project)."""

    def __init__(
        self,
        catalog: Catalog,
        project: Project | None,
        stats: IngestStats,
        *,
        keystore: KeystoreSource = None,
    ) -> None:
        self.writer = _TaggingWriter(catalog, project, keystore=keystore)
        self.project = project
        self.stats = stats

    def commit_batch(
        self, pending: Mapping[tuple[str, int], Sequence[Any]], topic_ids: dict[str, str] | None = None
    ) -> dict[tuple[str, int], int]:
        """Commit records (anything with offset, key, value) per (topic, partition); returns the
        next offset per (topic, partition) for the group-offset hint. ``topic_ids``: the id of
        each topic's log, recorded with the marks."""
        by_topic: dict[str, dict[int, Sequence[Any]]] = defaultdict(dict)
        for (topic, partition), records in pending.items():
            by_topic[topic][partition] = records
        for topic, partitions in by_topic.items():
            topic_id = (topic_ids or {}).get(topic)
            self.writer.tags = {TOPIC_IDS: json.dumps({topic: topic_id})} if topic_id else {}
            try:
                self._commit_topic(topic, partitions)
            finally:
                self.writer.tags = {}
        return {tp: _next_offset(records) for tp, records in pending.items()}

    def _commit_topic(self, topic: str, partitions: dict[int, Sequence[Any]]) -> None:
        identifier = f"bronze.{topic}"
        contract = load_contracts(self.project).get(identifier)
        ends = {f"{topic}/{p}": _next_offset(records) for p, records in partitions.items()}

        def message(p: int, r: Any) -> Message:
            return Message(topic, p, r.offset, r.key, r.value)

        if contract is None:
            reason = f"no contract declares {identifier}"
            self.commit_dead(
                [DeadLetter(message(p, r), reason, identifier) for p, rs in partitions.items() for r in rs]
            )
            return
        try:
            table = self.writer.table(identifier)
        except ContractError as exc:
            self.commit_dead(
                [DeadLetter(message(p, r), str(exc), identifier) for p, rs in partitions.items() for r in rs]
            )
            raise
        target = target_arrow_schema(table)
        # rows are validated as producers send them (personal data in plaintext, no platform
        # columns), then made into stored rows (encrypted, stamped) by as_stored
        received = contract.arrow_schema() if contract.transforms_rows else target
        data = _clean_batch(partitions, contract, received)
        dead: list[DeadLetter] = []
        rows_from: list[tuple[int, Any]] | None = None  # the message of each row of data; None: all, in order
        if data is None:  # a dirty batch: check message by message, isolating the bad ones
            flat = _flat(partitions)
            records, kept_rows = [], []
            for i, (p, r) in enumerate(flat):
                why_not, body = open_envelope(r.value, contract)
                if why_not:
                    dead.append(DeadLetter(message(p, r), why_not, identifier))
                else:
                    records.append(body)
                    kept_rows.append(i)
            data, kept, bad = validate(records, received, identifier)
            dead += [
                DeadLetter(message(*flat[kept_rows[i]]), why, identifier) for i, why in sorted(bad.items())
            ]
            rows_from = [flat[kept_rows[i]] for i in kept]
        if contract.pii:
            keystore = self.writer.keys.get()
            assert keystore is not None
            refused = refused_rows(data, contract, keystore)  # no subject, or a forgotten one
            if refused:
                rows = rows_from if rows_from is not None else _flat(partitions)
                dead += [DeadLetter(message(*rows[i]), why, identifier) for i, why in sorted(refused.items())]
                keep = [i for i in range(data.num_rows) if i not in refused]
                data = data.take(pa.array(keep, pa.int64()))
                rows_from = [rows[i] for i in keep]
            data = as_stored(data, contract, keystore, target=target, source="message")
        elif contract.transforms_rows:
            data = as_stored(data, contract, None, target=target, source="message")
        if rows_from is None:
            row_partitions = [p for p, rs in partitions.items() for _ in range(len(rs))]
            row_offsets = [o for rs in partitions.values() for o in _offsets(rs)]
        else:
            row_partitions = [p for p, _ in rows_from]
            row_offsets = [r.offset for _, r in rows_from]
        self.commit_dead(dead)
        self._commit_rows(table, identifier, topic, data, row_partitions, row_offsets, ends)

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
        started = time.perf_counter()
        outcome = self.writer.land_past_marks(
            table,
            data,
            key=OFFSETS,
            row_marks=[f"{topic}/{p}" for p in row_partitions],
            row_positions=row_offsets,
            ends=ends,
        )
        if outcome is not None:
            self.stats.commit_conflicts += outcome.attempts - 1
            self.stats.commit_seconds.append(time.perf_counter() - started)
            self.stats.commits += 1
            self.stats.rows[identifier] += outcome.rows.num_rows
            self.stats.last_commit_at = time.monotonic()

    def commit_dead(self, dead: list[DeadLetter]) -> None:
        for d in self.writer.land_dead_letters(dead):
            self.stats.dead_letters[d.message.topic] += 1


class _Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


_NULL = -1  # length of a null key or value


def _blob(items: list[bytes | None], sep: bytes = b"") -> tuple[bytes, bytes]:
    """Many small byte strings as one blob (joined by ``sep``) and their lengths: cheap to
    pickle and pipe."""
    lengths = array.array("q", (_NULL if b is None else len(b) for b in items))
    return sep.join(b for b in items if b is not None), lengths.tobytes()


def _split(blob: bytes, lengths_raw: bytes, sep: bytes = b"") -> list[bytes | None]:
    lengths = array.array("q")
    lengths.frombytes(lengths_raw)
    view, at = memoryview(blob), 0
    out: list[bytes | None] = []
    for n in lengths:
        if n == _NULL:
            out.append(None)
        else:
            out.append(bytes(view[at : at + n]))
            at += n + len(sep)
    return out


_Packed = tuple[bytes, tuple[bytes, bytes], tuple[bytes, bytes]]


def _pack(records: list[Any]) -> _Packed:
    offsets = array.array("q", (r.offset for r in records)).tobytes()
    # values joined by newlines: a clean batch is parsed from this blob as it arrives
    return offsets, _blob([r.key for r in records]), _blob([r.value for r in records], b"\n")


class PackedRecords(Sequence[_Record]):
    """One partition's records as the committer process receives them: a clean batch is
    parsed straight from the newline-joined values (``lines``); record objects are made only
    when a batch must be checked message by message."""

    def __init__(self, packed: _Packed) -> None:
        offsets_raw, self._keys, (self._values, self._value_lengths) = packed
        self.offsets = array.array("q")
        self.offsets.frombytes(offsets_raw)
        self._records: list[_Record] | None = None

    def lines(self) -> bytes | None:
        """The values joined by newlines, or None when one is null (a tombstone)."""
        lengths = array.array("q")
        lengths.frombytes(self._value_lengths)
        return None if _NULL in lengths else self._values

    def _materialized(self) -> list[_Record]:
        if self._records is None:
            keys, values = _split(*self._keys), _split(self._values, self._value_lengths, b"\n")
            self._records = [_Record(o, k, v) for o, k, v in zip(self.offsets, keys, values, strict=True)]
        return self._records

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> _Record: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[_Record]: ...
    def __getitem__(self, i: int | slice) -> _Record | Sequence[_Record]:
        return self._materialized()[i]


def _warm_up(project: Project) -> None:
    """What the first commit would otherwise load while records wait: the writers' modules and
    the project's contracts."""
    import pyarrow.json
    import pyarrow.parquet  # noqa: F401
    import pyiceberg.io.pyarrow  # noqa: F401

    load_contracts(project)


def _committer_main(conn: Any, settings: Settings, project: Project) -> None:
    """The committer process: batches in over the pipe, hints and stats out, in order."""
    from lakehouse.catalog import load_catalog

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from lakehouse.privacy import open_keystore

    stats = IngestStats()
    try:
        committer = Committer(
            load_catalog(settings), project, stats, keystore=lambda: open_keystore(settings)
        )
        _warm_up(project)
    except BaseException as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        try:
            batch, topic_ids = message
            pending = {tp: PackedRecords(packed) for tp, packed in batch.items()}
            hints = committer.commit_batch(pending, topic_ids)
            conn.send(
                (
                    "ok",
                    hints,
                    (
                        dict(stats.rows),
                        dict(stats.dead_letters),
                        list(stats.commit_seconds),
                        stats.last_commit_at,
                        stats.commit_conflicts,
                    ),
                )
            )
            stats.commit_seconds = []
            stats.commit_conflicts = 0
        except BaseException as exc:
            conn.send(("error", type(exc).__name__, str(exc)))


class CommitterProcess:
    def __init__(self, settings: Settings, project: Project | None = None) -> None:
        """The committer in a process of its own, with ``project``'s contracts (default: the
        project ``settings`` name)."""
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(
            target=_committer_main,
            args=(child, settings, project or project_of(settings)),
            daemon=True,
            name="lakehouse-sink-committer",
        )
        self._proc.start()
        child.close()
        self._ready = False

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the committer has its catalog and modules loaded (a process start, about
        a second): the sink fetches nothing it could not commit promptly. A committer that
        fails to start raises its error."""
        if self._ready:
            return
        try:
            if not self._conn.poll(timeout):
                raise LakehouseError(f"the sink's committer process did not start within {timeout:.0f} s")
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise LakehouseError(
                f"the sink's committer process exited while starting (code {self._proc.exitcode})"
            ) from exc
        if reply[0] == "error":
            _, kind, message = reply
            raise (ContractError if kind == "ContractError" else LakehouseError)(message)
        self._ready = True

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def commit(
        self,
        pending: dict[tuple[str, int], list[Any]],
        stats: IngestStats,
        topic_ids: dict[str, str] | None = None,
    ) -> dict[tuple[str, int], int]:
        self.wait_ready()
        batch = {tp: _pack(records) for tp, records in pending.items()}
        try:
            self._conn.send((batch, topic_ids or {}))
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise LakehouseError(
                f"the sink's committer process exited (code {self._proc.exitcode}); nothing of this batch was "
                "committed that the tables do not record, so a restart resumes correctly"
            ) from exc
        if reply[0] == "error":
            _, kind, message = reply
            raise (ContractError if kind == "ContractError" else LakehouseError)(message)
        _, hints, (rows, dead, seconds, last_commit_at, conflicts) = reply
        stats.rows.update(rows)
        stats.dead_letters.update(dead)
        stats.commit_seconds.extend(seconds)
        stats.commits += len(seconds)
        stats.commit_conflicts += conflicts
        stats.last_commit_at = last_commit_at or stats.last_commit_at
        return dict(hints)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # the committer already exited
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
