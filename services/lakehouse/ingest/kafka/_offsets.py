"""Whether the broker's log still holds what the tables recorded, and a recorded reset when not.

A table's Kafka marks (``lakehouse.kafka-offsets``) are offsets in one particular log. Every
sink commit also records in its snapshot summary the id of the topic whose log they count in
(``lakehouse.kafka-topic-ids``: Kafka's topic id, KIP-516). Before reading a partition the sink
compares the marks of ``bronze.<topic>`` and ``bronze.dead_letters`` with the log the broker
has now:

- the topic has another id: it was created again (a broker that keeps its log in memory does
  that on every restart), and its offsets count from the start again, whatever they reach;
- a mark is beyond the log's end: the log lost what the table holds (the only sign left when
  the broker reports no topic ids, or the table recorded none);
- the offset to resume from is below the log's start: records were deleted before they were read.

Resuming at the marks would then skip the new log's records below them without a word. The sink
stops instead (``OffsetsOutOfRange``), unless told to accept the reset: one commit per table then
moves those partitions' marks to the log's start and records in its snapshot summary
(``lakehouse.kafka-offset-reset``) what each mark was, the log it found and why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from lakehouse.errors import LoadError, OffsetsOutOfRange
from lakehouse.iceberg import OFFSETS, Backoff, record_without_data, table_marks

# The ledger only ever moves marks forward (each commit records the larger of its ends and the
# table's marks): a reset is the one commit that moves them back, so it writes the ledger
# property itself, in the same kind of snapshot-adding transaction (a conflicting writer makes
# it plan again, never rebase).

logger = logging.getLogger(__name__)


TOPIC_IDS = "lakehouse.kafka-topic-ids"  # snapshot summary: {topic: id of the log the marks count in}


OFFSET_RESET = "lakehouse.kafka-offset-reset"  # snapshot summary of a reset: {"topic/p": what and why}


NEW_TOPIC, BEYOND_END, BELOW_START = "new-topic", "beyond-end", "below-start"


@dataclass(frozen=True)
class Log:
    """What the broker holds for one partition: offsets ``start`` up to ``end`` (exclusive)."""

    start: int
    end: int
    topic_id: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What ``table`` recorded for a topic: the next offset per partition, and the topic id the
    offsets count in (None: not recorded)."""

    table: str
    marks: dict[int, int]
    topic_id: str | None = None


def recorded_topic_id(table: Table, topic: str) -> str | None:
    """The topic id the table's latest commit from ``topic`` recorded (None: none did)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        raw = snapshot.summary.additional_properties.get(TOPIC_IDS) if snapshot.summary else None
        if raw:
            ids = json.loads(raw)
            if topic in ids:
                return str(ids[topic])
    return None


def recorded(name: str, table: Table | None, topic: str) -> Recorded:
    if table is None:
        return Recorded(name, {})
    prefix = f"{topic}/"
    marks = {
        int(k[len(prefix) :]): v
        for k, v in table_marks(table).items()
        if k.startswith(prefix) and k[len(prefix) :].isdigit()
    }
    return Recorded(name, marks, recorded_topic_id(table, topic) if marks else None)


def position(partition: int, tables: list[Recorded]) -> int | None:
    """Where reading resumes: the topic table's mark (``tables[0]``), else the dead letters'."""
    return next((r.marks[partition] for r in tables if partition in r.marks), None)


@dataclass(frozen=True)
class Mismatch:
    topic: str
    partition: int
    table: str
    mark: int
    log: Log
    why: str
    recorded_id: str | None = None

    def describe(self) -> str:
        where = (
            f"{self.topic}/{self.partition}: {self.table} mark {self.mark}, "
            f"log start {self.log.start} end {self.log.end}"
        )
        if self.why == BEYOND_END:
            return where + ", the mark is beyond the log's end"
        if self.why == BELOW_START:
            return where + ", the log starts after the mark (records deleted before they were read)"
        return where


def mismatches(topic: str, logs: dict[int, Log], tables: list[Recorded]) -> list[Mismatch]:
    """The partitions of ``topic`` whose recorded marks do not fit the broker's ``logs``;
    ``tables[0]`` is the topic's own table (its mark is where reading resumes)."""
    found: dict[int, Mismatch] = {}
    log_id = next((log.topic_id for log in logs.values() if log.topic_id), None)
    renewed = next((r for r in tables if r.topic_id and log_id and r.topic_id != log_id), None)
    for r in tables:
        for partition, mark in sorted(r.marks.items()):
            log = logs.get(partition)
            if log is None or partition in found:
                continue  # a partition the topic no longer has holds nothing to skip
            if renewed is not None:
                found[partition] = Mismatch(topic, partition, r.table, mark, log, NEW_TOPIC, renewed.topic_id)
            elif mark > log.end:
                found[partition] = Mismatch(topic, partition, r.table, mark, log, BEYOND_END)
    for partition, log in sorted(logs.items()):
        at = position(partition, tables)
        if partition not in found and at is not None and at < log.start:
            table = next(r.table for r in tables if partition in r.marks)
            found[partition] = Mismatch(topic, partition, table, at, log, BELOW_START)
    return [found[p] for p in sorted(found)]


def refusal(found: list[Mismatch]) -> OffsetsOutOfRange:
    renewed = {
        f"topic {m.topic} was created again (id {m.log.topic_id}; the marks count in {m.recorded_id})"
        for m in found
        if m.why == NEW_TOPIC
    }
    return OffsetsOutOfRange(
        "the broker's log does not hold what the tables recorded: "
        + "; ".join([m.describe() for m in found] + sorted(renewed))
        + ". The broker restarted with an empty log, the topic was created again, or records were "
        "deleted before they were read, and resuming at the marks would skip events without a word; "
        "nothing was read from these partitions. If the events the marks count are gone for good, "
        "run the sink with --accept-offset-reset (Python: Sink(..., accept_offset_reset=True)): the "
        "reset is recorded in the tables and these partitions are read from the log's start",
        partitions=[f"{m.topic}/{m.partition}" for m in found],
    )


def record_reset(
    catalog: Catalog,
    table: Table,
    found: list[Mismatch],
    seen: Recorded,
    *,
    backoff: Backoff | None = None,
) -> bool:
    """One commit to ``table``: the marks of the partitions in ``found`` moved to their log's
    start, the reset recorded in the snapshot summary (``OFFSET_RESET``, and the topic id the
    marks now count in). A mark is moved only while it is the one ``seen`` (another sink may
    have reset and read it since). True if a reset was committed."""
    backoff = backoff or Backoff()
    name = ".".join(table.name())
    for attempt in range(backoff.attempts):
        marks = table_marks(table)
        new_marks = dict(marks)
        moves: dict[str, dict[str, object]] = {}
        for m in found:
            key = f"{m.topic}/{m.partition}"
            if key in marks and marks[key] == seen.marks.get(m.partition):
                new_marks[key] = m.log.start
                moves[key] = {
                    "from": marks[key],
                    "to": m.log.start,
                    "log_start": m.log.start,
                    "log_end": m.log.end,
                    "reason": m.why,
                    "topic_id": m.log.topic_id,
                    "previous_topic_id": seen.topic_id,
                    "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
        if not moves:
            return False
        summary = {OFFSET_RESET: json.dumps(moves, sort_keys=True)}
        ids = {m.topic: m.log.topic_id for m in found if m.log.topic_id}
        if ids:
            summary[TOPIC_IDS] = json.dumps(ids, sort_keys=True)
        try:
            record_without_data(
                table, {OFFSETS: json.dumps(dict(sorted(new_marks.items())), separators=(",", ":"))}, summary
            )
        except CommitFailedException:
            backoff.wait(attempt)
            table = catalog.load_table(table.name())
            continue
        logger.warning(
            "offset reset accepted and recorded in %s: %s",
            name,
            ", ".join(f"{k} {v['from']} -> {v['to']} ({v['reason']})" for k, v in sorted(moves.items())),
        )
        return True
    raise LoadError(
        f"recording the offset reset in {name} kept conflicting with other writers after "
        f"{backoff.attempts} attempts; nothing was changed: run the sink again"
    )
