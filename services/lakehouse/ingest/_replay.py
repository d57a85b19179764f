"""Dead letters listed, and replayed through the write path once what was wrong is fixed.

A dead letter (``bronze.dead_letters``) is a message the write path could not land, kept whole
with its reason. Its id is its place in its source, ``SOURCE/PARTITION/OFFSET``: a Kafka topic,
partition and offset (``orders/0/17``), or an edge device and batch seq (``edge:DEVICE/0/5``).

Replaying re-submits a dead letter's message as the route that received it would: the Kafka
envelope is checked, the rows validated against the contract as it is now, personal data refused
for forgotten subjects and encrypted (``as_stored``), and the rows appended through
``Writer.land`` (``commit_with_replan``). The usual fix is a contract change (a new optional
column, a promoted type, a newer version) or a contract for a table that did not exist yet.

Exactly once: each dead letter's rows land with the ledger entry
``dead-letter:SOURCE/PARTITION/OFFSET/RECEIVED_US`` in the table's batch ids, in the commit that
writes them. A dead letter is replayed exactly when its table's ledger holds that entry, so two
replays, concurrent ones, or a replay retried after a crash between staging and commit never land
a row twice (a replan after a conflicting commit drops what the other writer landed). The receipt
time is part of the entry because a Kafka offset can be used again after a topic was re-created
(``--accept-offset-reset``): a new dead letter at an old place is another message.

A dead letter that still fails keeps its row: ``reason`` becomes the new one, ``replay_attempts``
counts the failures and ``last_replay_at`` says when (one commit rewriting those rows, never a
new row per attempt, so retrying a dead letter every hour does not grow the table). The row is
re-made by the write path's own dead-letter code: a message whose subject can now be read is
sealed under that subject's data key (``gdpr forget`` then finds it), and one whose subject was
forgotten loses its payload and key, as it would on arrival.

Not replayable (reported, left as they are): edge batches (sealed for the gateway, and their
units must be checked against the device's store by the gateway, which its device resends or
skips), and dead letters that kept no payload (a device's declared gap, a forgotten subject).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    Or,
)
from pyiceberg.table import Table

from lakehouse.config import Project
from lakehouse.contracts import Contract
from lakehouse.errors import KeyShredded, KeystoreError, LakehouseError, LoadError, NoSuchDeadLetter
from lakehouse.iceberg import (
    BATCH_IDS,
    Backoff,
    Planned,
    loaded_batch_ids,
    parse_identifier,
    replace_rows,
    target_arrow_schema,
)
from lakehouse.privacy import Keystore, subject_problem

from ._conform import conform
from ._records import DEAD_LETTERS, DeadLetter, Message, open_envelope, validate
from ._write import REDACTED, KeystoreSource, Writer, as_stored, refused_rows

logger = logging.getLogger(__name__)


BATCH_PREFIX = "dead-letter:"  # a replayed dead letter's entry in its table's batch ids


REPLAYED = "lakehouse.replayed-dead-letters"  # snapshot summary: the ids a commit replayed


ATTEMPTED = "lakehouse.replay-attempts"  # snapshot summary of dead_letters: the ids that failed again


SEALED = b"pii:v1:"  # a payload sealed under a data key (see ``dead_letter``)


_COLUMNS = (
    "source",
    "source_partition",
    "source_offset",
    "target_table",
    "reason",
    "received_at",
    "replay_attempts",
    "last_replay_at",
    "pii_subject",
)


_MESSAGE_COLUMNS = ("message_key", "payload")


def dead_letter_id(source: str, partition: int, offset: int) -> str:
    """The id users name a dead letter by: its place in its source."""
    return f"{source}/{partition}/{offset}"


def route_of(source: str, partition: int, offset: int) -> str:
    """Where the message came from, in words."""
    if source.startswith("edge:"):
        return f"edge device {source[5:]} seq {offset}"
    if source.startswith("file:"):
        return f"file {source[5:]} row {offset}"
    return f"kafka {source}/{partition} offset {offset}"


@dataclass(frozen=True)
class _Stored:
    """A dead letter as ``bronze.dead_letters`` holds it."""

    source: str
    partition: int
    offset: int
    received_at: dt.datetime
    target: str | None
    reason: str
    attempts: int
    last_attempt_at: dt.datetime | None
    pii_subject: str | None
    message_key: str | None = None
    payload: bytes | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Stored:
        return cls(
            source=row["source"],
            partition=row["source_partition"],
            offset=row["source_offset"],
            received_at=row["received_at"],
            target=row["target_table"],
            reason=row["reason"],
            attempts=row.get("replay_attempts") or 0,
            last_attempt_at=row.get("last_replay_at"),
            pii_subject=row["pii_subject"],
            message_key=row.get("message_key"),
            payload=row.get("payload"),
        )

    @property
    def id(self) -> str:
        return dead_letter_id(self.source, self.partition, self.offset)

    @property
    def key(self) -> tuple[str, int, int, dt.datetime]:
        return (self.source, self.partition, self.offset, self.received_at)

    @property
    def batch_id(self) -> str:
        """Its entry in the ledger of the table it lands in."""
        micros = (self.received_at - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        return f"{BATCH_PREFIX}{self.id}/{micros}"

    @property
    def sealed(self) -> bool:
        return self.payload is not None and self.payload.startswith(SEALED)


@dataclass(frozen=True)
class DeadLetterInfo:
    """One dead letter as ``lakehouse dead-letters list`` shows it."""

    id: str
    table: str | None
    route: str
    reason: str
    received_at: dt.datetime
    replayed: bool
    replay_attempts: int
    last_replay_at: dt.datetime | None
    payload: str | None = None  # only when asked for (``show_payload``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading -----------------------------------------------------------------------------------


def _dead_letters(catalog: Catalog) -> Table | None:
    try:
        return catalog.load_table(tuple(DEAD_LETTERS.split(".")))
    except IcebergNoSuchTable:
        return None


def _read(table: Table, where: BooleanExpression, *, messages: bool) -> list[_Stored]:
    present = {f.name for f in table.schema().fields}
    wanted = [c for c in (*_COLUMNS, *(_MESSAGE_COLUMNS if messages else ())) if c in present]
    rows = table.scan(row_filter=where, selected_fields=tuple(wanted)).to_arrow()
    stored = [_Stored.of(r) for r in rows.to_pylist()]
    return sorted(stored, key=lambda s: (s.received_at, s.source, s.partition, s.offset))


def _filter(table: str | None, since: dt.datetime | None) -> BooleanExpression:
    where: BooleanExpression = AlwaysTrue()
    if table is not None:
        where = And(where, _eq("target_table", table))
    if since is not None:
        where = And(where, _at_least("received_at", _naive_utc(since)))
    return where


# pyiceberg's predicates are pydantic models whose generated signature mypy reads wrongly
def _eq(column: str, value: str | int) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[misc,call-arg,arg-type]


def _at_least(column: str, value: dt.datetime) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[misc,call-arg,arg-type]


def _in(column: str, values: set[int]) -> BooleanExpression:
    return In(column, values)  # type: ignore[misc,call-arg,arg-type]


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """``received_at`` is UTC without a zone: an aware time is converted, a naive one taken as UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _replayed_ids(catalog: Catalog, target: str | None, cache: dict[str, set[str]]) -> set[str]:
    """The dead letters ``target``'s ledger records as landed (its batch ids)."""
    if target is None:
        return set()
    if target not in cache:
        try:
            table = catalog.load_table(parse_identifier(target))
        except (IcebergNoSuchTable, LakehouseError):
            cache[target] = set()
        else:
            cache[target] = {b for b in loaded_batch_ids(table) if b.startswith(BATCH_PREFIX)}
    return cache[target]


def _like(values: list[str], pattern: str) -> list[bool]:
    """SQL ``ILIKE``: ``%`` any text, ``_`` one character, case ignored."""
    matched = pc.match_like(pa.array(values, pa.string()), pattern, ignore_case=True)
    return [bool(v) for v in matched.to_pylist()]


def list_dead_letters(
    catalog: Catalog,
    project: Project | None = None,
    *,
    table: str | None = None,
    reason_like: str | None = None,
    since: dt.datetime | None = None,
    show_payload: bool = False,
    keystore: KeystoreSource = None,
) -> list[DeadLetterInfo]:
    """The dead letters, oldest first, with whether each was replayed (its table's ledger says).

    ``table``: only those of that table; ``reason_like``: an ILIKE pattern on the reason;
    ``since``: received at or after (UTC). ``show_payload``: each message as received, sealed ones
    opened with ``keystore`` (an operator's; default: the environment's). A payload is withheld,
    not shown, when its subject was forgotten (including a message sealed under ``#dead-letters``
    that names a forgotten customer); showing sealed payloads is recorded in ``audit.key_log``."""
    dead = _dead_letters(catalog)
    if dead is None:
        return []
    letters = _read(dead, _filter(table, since), messages=show_payload)
    if reason_like is not None and letters:
        letters = [
            s for s, ok in zip(letters, _like([s.reason for s in letters], reason_like), strict=True) if ok
        ]
    writer = Writer(catalog, project, keystore=keystore)
    ledgers: dict[str, set[str]] = {}
    opened: list[str] = []
    infos = []
    for s in letters:
        payload = None
        if show_payload:
            payload, was_opened = _shown_payload(s, writer)
            if was_opened:
                opened.append(s.id)
        infos.append(
            DeadLetterInfo(
                id=s.id,
                table=s.target,
                route=route_of(s.source, s.partition, s.offset),
                reason=s.reason,
                received_at=s.received_at,
                replayed=s.batch_id in _replayed_ids(catalog, s.target, ledgers),
                replay_attempts=s.attempts,
                last_replay_at=s.last_attempt_at,
                payload=payload,
            )
        )
    if opened:
        from lakehouse.audit import record_key_operation

        record_key_operation(catalog, "show-dead-letters", None, {"dead_letters": opened})
    return infos


def _shown_payload(s: _Stored, writer: Writer) -> tuple[str | None, bool]:
    """The payload as text for the operator, and whether a sealed one was opened for it."""
    if s.payload is None:
        return None, False
    contract = writer.contract(s.target) if s.target else None
    personal = contract is not None and bool(contract.pii)
    if not s.sealed and not personal:
        return s.payload.decode("utf-8", "replace"), False
    keystore = writer.keys.get()
    assert keystore is not None
    try:
        value = keystore.open(s.payload.decode()) if s.sealed else s.payload
    except KeyShredded:
        return f"<withheld: the data key of {s.pii_subject} was destroyed (gdpr forget)>", False
    except (KeystoreError, UnicodeError) as exc:
        return f"<does not open: {exc}>", False
    subject = _subject_of(value, contract) if personal else None
    if subject is not None and keystore.shredded({subject}):
        return f"<withheld: {subject} was forgotten (gdpr forget)>", s.sealed
    return value.decode("utf-8", "replace"), s.sealed


def _subject_of(value: bytes, contract: Contract | None) -> str | None:
    """The data subject a message names (read as ``dead_letter`` reads it), if any."""
    if contract is None or contract.pii_subject is None:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    subject = data.get(contract.pii_subject) if isinstance(data, dict) else None
    if isinstance(subject, bool) or not isinstance(subject, str | int):
        return None
    text = str(subject)
    return text if subject_problem(text) is None else None


# --- replaying ---------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What a replay did (or, ``dry_run``, would do)."""

    dry_run: bool
    landed: dict[str, list[str]] = field(default_factory=dict)  # table -> ids whose rows landed
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows landed
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)  # (id, table, new reason)
    already: list[str] = field(default_factory=list)  # replayed before (or by a concurrent replay)
    not_replayable: list[tuple[str, str | None, str]] = field(default_factory=list)  # (id, table, why)

    def failures_by_reason(self) -> list[tuple[str | None, str, list[str]]]:
        """(table, reason, ids), most frequent first."""
        groups: dict[tuple[str | None, str], list[str]] = defaultdict(list)
        for letter_id, table, reason in self.failed:
            groups[(table, reason)].append(letter_id)
        ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0][0] or "", item[0][1]))
        return [(table, reason, ids) for (table, reason), ids in ranked]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "landed": {
                t: {"dead_letters": ids, "rows": self.rows.get(t, 0)} for t, ids in self.landed.items()
            },
            "still_failing": [
                {"table": table, "reason": reason, "dead_letters": ids}
                for table, reason, ids in self.failures_by_reason()
            ],
            "already_replayed": self.already,
            "not_replayable": [
                {"id": letter_id, "table": table, "why": why} for letter_id, table, why in self.not_replayable
            ],
        }


_Opened = tuple[_Stored, bytes | None, bytes]  # a dead letter, its message's key and value as received


@dataclass
class _Failure:
    letter: _Stored
    reason: str
    key: bytes | None = None  # the message as received, when it could be opened
    value: bytes | None = None
    drop: bool = False  # its subject was forgotten: keep neither payload nor key


def replay_dead_letters(
    catalog: Catalog,
    project: Project | None = None,
    *,
    table: str | None = None,
    ids: Sequence[str] = (),
    everything: bool = False,
    dry_run: bool = False,
    keystore: KeystoreSource = None,
    backoff: Backoff | None = None,
) -> ReplayReport:
    """Re-submit dead letters through the write path, each landing at most once (see the module).

    Choose them with exactly one of ``table`` (its dead letters), ``ids`` or ``everything``.
    Contracts are ``project``'s (default: the environment's); ``keystore`` opens sealed payloads
    and encrypts personal data (default: the environment's). ``dry_run``: decide everything, write
    nothing (no table created, no data key made)."""
    if sum((table is not None, bool(ids), everything)) != 1:
        raise LakehouseError("choose the dead letters to replay: a table, ids, or all of them")
    report = ReplayReport(dry_run=dry_run)
    dead = _dead_letters(catalog)
    if dead is None:
        if ids or table is not None:
            raise NoSuchDeadLetter(f"no dead letters at all ({DEAD_LETTERS} does not exist yet)")
        return report
    letters = _read(dead, _filter(table, None), messages=True)
    if ids:
        wanted = set(ids)
        letters = [s for s in letters if s.id in wanted]
        unknown = sorted(wanted - {s.id for s in letters})
        if unknown:
            raise NoSuchDeadLetter(_unknown_ids(unknown, dead))
    elif table is not None and not letters:
        raise NoSuchDeadLetter(_unknown_table(table, dead))
    writer = Writer(catalog, project, keystore=keystore)
    by_table: dict[str | None, list[_Stored]] = defaultdict(list)
    for s in letters:
        by_table[s.target].append(s)
    ledgers: dict[str, set[str]] = {}
    failures: list[_Failure] = []
    for target, chosen in by_table.items():
        if target is None:
            report.not_replayable += [(s.id, None, "no target table was recorded") for s in chosen]
            continue
        done = _replayed_ids(catalog, target, ledgers)
        report.already += [s.id for s in chosen if s.batch_id in done]
        pending = [s for s in chosen if s.batch_id not in done]
        if pending:
            failures += _replay_table(writer, target, pending, report, dry_run=dry_run)
    report.failed = [(f.letter.id, f.letter.target, f.reason) for f in failures]
    if failures and not dry_run:
        _record_failures(writer, failures, backoff or Backoff())
    return report


def _unknown_ids(unknown: list[str], dead: Table) -> str:
    import difflib

    known = sorted({s.id for s in _read(dead, AlwaysTrue(), messages=False)})
    hints = []
    for letter_id in unknown[:5]:
        close = difflib.get_close_matches(letter_id, known, n=1, cutoff=0.8)
        hints.append(f"{letter_id} (did you mean {close[0]}?)" if close else letter_id)
    return (
        f"no dead letter {', '.join(hints)}{' ...' if len(unknown) > 5 else ''}: ids are SOURCE/PARTITION/OFFSET "
        "as `lakehouse dead-letters list` shows them (a forgotten customer's dead letters are erased); "
        "nothing was replayed"
    )


def _unknown_table(table: str, dead: Table) -> str:
    tables = sorted({s.target for s in _read(dead, AlwaysTrue(), messages=False) if s.target})
    held = f"dead letters are kept for {', '.join(tables)}" if tables else "there are no dead letters"
    return f"no dead letters of {table}: {held}; nothing was replayed"


def _replay_table(
    writer: Writer, target: str, letters: list[_Stored], report: ReplayReport, *, dry_run: bool
) -> list[_Failure]:
    """Land what of ``letters`` now fits ``target`` in one commit; the rest, with its reason."""
    failures: list[_Failure] = []
    contract = writer.contract(target)
    if contract is None:
        why = f"no contract of the project declares {target}: declare it (contracts/*.yml), then replay"
        return [_Failure(s, why) for s in letters]
    # the messages as received: sealed payloads opened, the envelope checked as the sink does
    opened: list[_Opened] = []
    for s in letters:
        if s.source.startswith("edge:"):
            why = (
                "an edge device's batch: it is sealed for the gateway, which checks its units against "
                "the device's store; the device uploads it again or declares it skipped"
            )
            report.not_replayable.append((s.id, target, why))
            continue
        if s.payload is None:
            report.not_replayable.append((s.id, target, "no payload was kept (see its reason)"))
            continue
        try:
            key, value = _message(s, writer)
        except KeyShredded as exc:
            failures.append(_Failure(s, f"{exc}: its message may not be written again", drop=True))
            continue
        except (KeystoreError, UnicodeError) as exc:
            failures.append(_Failure(s, f"its sealed payload does not open: {exc}"))
            continue
        opened.append((s, key, value))
    if not opened:
        return failures
    # validated as producers send them (personal data in plaintext, no platform columns)
    received = contract.arrow_schema()
    records: list[dict[str, Any]] = []
    accepted: list[_Opened] = []
    for s, key, value in opened:
        problem, body = open_envelope(value, contract)  # as the sink checks it
        if problem:
            failures.append(_Failure(s, problem, key, value))
        else:
            records.append(body)
            accepted.append((s, key, value))
    data, kept, bad = validate(records, received, target)
    failures += [
        _Failure(accepted[i][0], why, accepted[i][1], accepted[i][2]) for i, why in sorted(bad.items())
    ]
    fitting = [accepted[i] for i in kept]
    keystore = writer.keys.get() if contract.pii else None
    if contract.pii and data.num_rows:
        assert keystore is not None
        refused = refused_rows(data, contract, keystore)  # no usable subject, or a forgotten one
        forgotten = keystore.shredded({_subject(data, contract, i) for i in refused})
        for i, why in sorted(refused.items()):
            s, key, value = fitting[i]
            failures.append(_Failure(s, why, key, value, drop=_subject(data, contract, i) in forgotten))
        keep = [i for i in range(data.num_rows) if i not in refused]
        data = data.take(pa.array(keep, pa.int64()))
        fitting = [fitting[i] for i in keep]
    if not fitting:
        return failures
    try:  # only now, with rows to land: the table, created from its contract or evolved to it
        table = None if dry_run else _open(writer, target, Backoff())
    except LakehouseError as exc:  # a contract the table cannot evolve to
        return failures + [_Failure(s, str(exc), key, value) for s, key, value in fitting]
    stored_schema = contract.stored_arrow_schema() if table is None else target_arrow_schema(table)
    with _scratch_keystore(dry_run and keystore is not None) as scratch:
        rows, landing, why_not = _as_stored(data, fitting, contract, scratch or keystore, stored_schema)
    failures += [_Failure(s, why, key, value) for (s, key, value), why in why_not]
    if not landing:
        return failures
    if contract.ingest_order:
        rows = _ingest_order_of_arrival(rows, [s for s, _, _ in landing], contract.ingest_order)
    if table is None:
        report.landed[target] = [s.id for s, _, _ in landing]
        report.rows[target] = rows.num_rows
        return failures
    _land(writer, table, target, rows, [s for s, _, _ in landing], report)
    return failures


def _open(writer: Writer, identifier: str, backoff: Backoff) -> Table:
    """The table, created from its contract or evolved to it; another writer evolving it at the
    same moment (a concurrent replay after the same contract change) makes it try again."""
    for attempt in range(backoff.attempts):
        try:
            return writer.table(identifier)
        except CommitFailedException:
            backoff.wait(attempt)
    return writer.table(identifier)


def _message(s: _Stored, writer: Writer) -> tuple[bytes | None, bytes]:
    """The message's key and value as received (sealed ones opened)."""
    assert s.payload is not None
    if not s.sealed:
        return (None if s.message_key is None else s.message_key.encode()), s.payload
    keystore = writer.keys.get()
    assert keystore is not None
    value = keystore.open(s.payload.decode())
    key = None
    if s.message_key is not None:
        key = (
            keystore.open(s.message_key)
            if s.message_key.startswith(SEALED.decode())
            else s.message_key.encode()
        )
    return key, value


def _subject(data: pa.Table, contract: Contract, row: int) -> str:
    assert contract.pii_subject is not None
    value = data.column(contract.pii_subject)[row].as_py()
    return "" if value is None else str(value)


class _scratch_keystore:
    """A throwaway keystore for a dry run's encryption: rows are made as stored (so what would
    fail, fails) without creating a data key in the real keystore."""

    def __init__(self, wanted: bool) -> None:
        self._wanted = wanted
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Keystore | None:
        if not self._wanted:
            return None
        self._dir = tempfile.TemporaryDirectory(prefix="lakehouse-dry-run-")
        return Keystore(Path(self._dir.name) / "keys" / "keystore.json", os.urandom(32))

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()


def _as_stored(
    data: pa.Table,
    fitting: list[_Opened],
    contract: Contract,
    keystore: Keystore | None,
    target: pa.Schema,
) -> tuple[pa.Table, list[_Opened], list[tuple[_Opened, str]]]:
    """Rows as stored, the dead letters they come from, and those whose row cannot be stored
    (found one by one when the whole batch fails)."""

    def stored(rows: pa.Table) -> pa.Table:
        if contract.transforms_rows:
            return as_stored(rows, contract, keystore, target=target, source="message")
        return conform(rows, target, source="message", fmt="jsonl", table=contract.identifier)

    try:
        return stored(data), fitting, []
    except LakehouseError:
        pass
    pieces, landing, failing = [], [], []
    for i, letter in enumerate(fitting):
        try:
            pieces.append(stored(data.slice(i, 1)))
        except LakehouseError as exc:
            failing.append((letter, str(exc)))
        else:
            landing.append(letter)
    rows = pa.concat_tables(pieces) if pieces else target.empty_table()
    return rows, landing, failing


def _ingest_order_of_arrival(rows: pa.Table, letters: list[_Stored], column: str) -> pa.Table:
    """The ingest order of replayed rows is when their message reached the platform (the dead
    letter's receipt, in microseconds, +1 per letter kept at the same moment), not the replay's:
    a correction sent after the original message still counts as received later."""
    seen: Counter[dt.datetime] = Counter()
    order = []
    for s in letters:
        micros = (s.received_at - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        order.append(micros + seen[s.received_at])
        seen[s.received_at] += 1
    index = rows.schema.get_field_index(column)
    return rows.set_column(index, rows.schema.field(index), pa.array(order, pa.int64()))


def _land(
    writer: Writer, table: Table, target: str, rows: pa.Table, letters: list[_Stored], report: ReplayReport
) -> None:
    """One commit of the letters' rows with their ledger entries; letters another replay landed
    meanwhile are left out of it (and reported as already replayed)."""
    ids = [s.batch_id for s in letters]

    def plan(current: Table) -> Planned[list[int]] | None:
        done = loaded_batch_ids(current)
        missing = [i for i, batch in enumerate(ids) if batch not in done]
        if not missing:
            return None
        chosen = rows if len(missing) == len(ids) else rows.take(pa.array(missing, pa.int64()))
        ledger = {
            BATCH_IDS: json.dumps([ids[i] for i in missing]),
            REPLAYED: json.dumps([letters[i].id for i in missing]),
        }
        return Planned(chosen, ledger, missing)

    outcome = writer.land(table, plan)
    landed = set(outcome.result or []) if outcome is not None else set()
    report.already += [s.id for i, s in enumerate(letters) if i not in landed]
    if landed:
        report.landed[target] = [letters[i].id for i in sorted(landed)]
        report.rows[target] = outcome.rows.num_rows if outcome is not None else 0
        logger.info("replayed %s dead letter(s) into %s", len(landed), target)


# --- recording failed attempts -------------------------------------------------------------------


def _record_failures(writer: Writer, failures: list[_Failure], backoff: Backoff) -> None:
    """Rewrite the failing dead letters' rows in one commit: the new reason, one more attempt, the
    row re-made by the write path's dead-letter code from the message as received (sealed as it
    would be on arrival; payload and key dropped for a forgotten subject). Rows deleted meanwhile
    (``gdpr forget``) stay deleted; a conflicting writer makes it read and rewrite again."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    remade = {f.letter.key: _remade(writer, f) for f in failures}
    where = _places(f.letter for f in failures)
    table = _open(writer, DEAD_LETTERS, backoff)  # evolved to its contract: the attempt columns
    name = ".".join(table.name())
    for attempt in range(backoff.attempts):
        schema = target_arrow_schema(table)
        current = table.scan(row_filter=where).to_arrow().to_pylist()
        updated = []
        changed = []
        for row in current:
            key = (row["source"], row["source_partition"], row["source_offset"], row["received_at"])
            if key in remade:
                row = {
                    **row,
                    **remade[key],
                    "replay_attempts": (row.get("replay_attempts") or 0) + 1,
                    "last_replay_at": now,
                }
                changed.append(dead_letter_id(*key[:3]))
            updated.append(row)
        if not changed:
            return  # erased meanwhile
        try:
            replace_rows(
                table, where, pa.Table.from_pylist(updated, schema=schema), {ATTEMPTED: json.dumps(changed)}
            )
        except (CommitFailedException, ValidationException):
            waited = backoff.wait(attempt)
            logger.info("%s changed meanwhile; reading it again in %.3f s", name, waited)
            table = writer.catalog.load_table(table.name())
            continue
        return
    raise LoadError(
        f"recording the failed replay attempts in {name} kept conflicting with other writers after "
        f"{backoff.attempts} attempts; nothing of it was written, and the rows that did land stay landed"
    )


def _remade(writer: Writer, f: _Failure) -> dict[str, Any]:
    """The columns of a failing dead letter's row that this attempt rewrites."""
    s = f.letter
    if f.drop:
        return {
            "message_key": None,
            "payload": None,
            "pii_subject": None,
            "reason": f"{f.reason} (payload and key dropped: the subject was forgotten)"[:2000],
        }
    if f.value is None:  # not opened: the message stays as it was kept
        return {"reason": f.reason[:2000]}
    reason = _without_values(f.reason, f.value) if s.sealed else f.reason
    contract = writer.contract(s.target) if s.target else None
    if s.sealed and (contract is None or not contract.pii):  # never unsealed by a contract change
        return {"reason": reason[:2000]}
    message = Message(s.source, s.partition, s.offset, f.key, f.value)
    row = writer._dead_letter_row(DeadLetter(message, reason, s.target or ""))
    return {k: row[k] for k in ("message_key", "payload", "reason", "pii_subject")}


def _without_values(reason: str, value: bytes) -> str:
    """``reason`` without any value of the message: a message kept sealed was personal data, and
    the contract that said which of its fields are personal may have changed since."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return reason
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return reason
    forms = set()
    for item in data.values():
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            forms |= {repr(item), str(item), json.dumps(item)}
            if isinstance(item, str):
                forms |= {item.strip(), repr(item.strip())}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 3:
            reason = reason.replace(form, REDACTED)
    return reason


def _places(letters: Iterable[_Stored]) -> BooleanExpression:
    """A filter matching the rows at the letters' places (grouped by source and partition)."""
    groups: dict[tuple[str, int], set[int]] = defaultdict(set)
    for s in letters:
        groups[(s.source, s.partition)].add(s.offset)
    terms: list[BooleanExpression] = [
        And(_eq("source", source), _eq("source_partition", partition), _in("source_offset", offsets))
        for (source, partition), offsets in sorted(groups.items())
    ]
    return reduce(Or, terms)
