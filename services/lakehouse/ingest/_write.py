"""The one write path into bronze: rows as received -> rows as stored -> one commit that
records what it wrote in the table's ledger; rows that cannot land are kept as dead letters.

File loads (``load_files``), Kafka (the sink's committer) and the edge gateway (its lander) all
write through a ``Writer``, so a new route cannot skip a step:

- rows as stored: a contract's personal columns (``pii``) are normalised and encrypted under
  the data key of each row's subject, with tokens and fingerprints computed by the platform
  (never accepted from a producer); a contract's ``ingest_order`` column is stamped with the
  order the rows reached the platform (what "the latest copy wins" means downstream);
- the ledger: each commit records what it holds (file batch ids, Kafka offsets per partition,
  device sequences) in the same snapshot as the rows, through ``commit_with_replan``, so a
  retry, a replay or a second writer never lands anything twice;
- dead letters: a message that does not fit keeps its reason in ``bronze.dead_letters``; of a
  personal-data contract the reason is scrubbed of the message's personal values and the
  payload and key are sealed under the subject's data key (else under ``#dead-letters``).

dbt models, which the platform does not write row by row, are checked instead:
``check_personal`` refuses a model whose personal columns hold anything but this keystore's
ciphertext or NULL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable
from pyiceberg.exceptions import ResolveError, ValidationError
from pyiceberg.table import Table

from lakehouse.config import Project
from lakehouse.contracts import Contract, contract_for
from lakehouse.errors import KeyShredded, LoadError, PersonalDataError, SchemaMismatchError
from lakehouse.iceberg import (
    BATCH_IDS,
    OFFSETS,
    Committed,
    Plan,
    Planned,
    commit_with_replan,
    loaded_batch_ids,
    normalize_schema,
    open_table,
    table_marks,
    target_arrow_schema,
)
from lakehouse.privacy import DEAD_LETTER_SUBJECT, Keystore, subject_problem

from ._records import DEAD_LETTERS, DeadLetter

logger = logging.getLogger(__name__)

T = TypeVar("T")

KeystoreSource = Keystore | Callable[[], Keystore] | None


REDACTED = "<personal data>"


class LazyKeystore:
    """A keystore opened on first use: routes that never meet personal data never need the
    master key."""

    def __init__(self, source: KeystoreSource) -> None:
        self._source = source
        self._keystore: Keystore | None = source if isinstance(source, Keystore) else None

    def get(self) -> Keystore | None:
        if self._keystore is None and callable(self._source):
            self._keystore = self._source()
        return self._keystore


def personal_contract(identifier: str, project: Project | None = None) -> Contract | None:
    contract = contract_for(identifier, project)
    return contract if contract is not None and contract.pii else None


def received_schema(identifier: str, project: Project | None = None) -> pa.Schema | None:
    """What producers send to a table whose stored rows differ from the rows sent (personal data
    in plaintext, no token, fingerprint or ingest order columns), or None if they do not differ
    (then producers send what is stored)."""
    contract = contract_for(identifier, project)
    return contract.arrow_schema() if contract is not None and contract.transforms_rows else None


_sequence_lock = threading.Lock()


_last_sequence = 0


def ingest_sequence(rows: int, clock: Callable[[], int] = time.time_ns) -> pa.Array:
    """``rows`` numbers for the ingest order column, increasing in the order rows reach the
    platform: the microseconds since 1970 when the batch is stamped, then +1 per row of the
    batch, never at or below the last number this process gave (a batch of n rows uses n
    microseconds of the sequence; a clock that steps back cannot reorder batches)."""
    global _last_sequence
    with _sequence_lock:
        first = max(clock() // 1000, _last_sequence + 1)
        _last_sequence = max(_last_sequence, first + rows - 1)
    return pa.array(np.arange(first, first + rows, dtype=np.int64), pa.int64())


def refused_rows(data: pa.Table, contract: Contract, keystore: Keystore) -> dict[int, str]:
    """Rows that may not be stored, with the reason: no usable subject, or a forgotten one."""
    assert contract.pii_subject is not None
    subjects = [None if s is None else str(s) for s in data.column(contract.pii_subject).to_pylist()]
    refused = {i: p for i, s in enumerate(subjects) if (p := subject_problem(s)) is not None}
    forgotten = keystore.shredded({s for s in subjects if s is not None})
    for i, s in enumerate(subjects):
        if s in forgotten and i not in refused:
            refused[i] = f"customer {s} was forgotten (gdpr forget): their data may not be written again"
    return refused


_NORMALISE: dict[str, Callable[[str], str]] = {
    "trim": lambda v: v.strip(),
    "lower_trim": lambda v: v.strip().lower(),
    "digits": lambda v: "".join(ch for ch in v if ch.isdigit()),
}


def _plain(values: list[Any], how: str | None) -> list[str | None]:
    normalise = _NORMALISE.get(how or "", lambda v: v)
    texts = [
        None if v is None else normalise(v.isoformat() if hasattr(v, "isoformat") else str(v)) for v in values
    ]
    return [v or None for v in texts]  # a value that normalises to nothing is no value


def as_stored(
    data: pa.Table,
    contract: Contract | None,
    keystore: Keystore | None,
    *,
    target: pa.Schema | None = None,
    source: str = "rows",
) -> pa.Table:
    """Rows as producers sent them -> rows as stored: personal data normalised and encrypted
    under each row's subject, token and fingerprint columns computed, the ingest order stamped,
    the result cast to ``target`` (the table's schema) when given. Rows of a contract without
    personal data or platform columns pass unchanged. A column the platform computes is
    refused if a producer sends it."""
    if contract is None or not contract.transforms_rows:
        return data
    identifier = contract.identifier
    if contract.pii and keystore is None:
        raise LoadError(
            f"{identifier} holds personal data ({', '.join(contract.pii)}): write it through the platform "
            "(lakehouse load, Lakehouse.load, the sink, the gateway), which encrypts it"
        )
    from ._conform import conform

    received = contract.arrow_schema()
    extra = [n for n in data.column_names if received.get_field_index(n) < 0]
    if extra:
        raise SchemaMismatchError(
            f"{source}: column(s) {extra} are not sent to {identifier} (token, fingerprint and ingest "
            f"order columns are computed by the platform); send only {received.names}",
            source=source,
            column=extra[0],
        )
    data = conform(data, received, source=source, fmt="jsonl", table=identifier)
    columns: dict[str, Any] = {name: data.column(name) for name in data.column_names}
    if contract.pii:
        assert keystore is not None
        columns.update(_protected(data, contract, keystore, source))
    if contract.ingest_order:
        columns[contract.ingest_order] = ingest_sequence(data.num_rows)
    stored_schema = contract.stored_arrow_schema()
    stored = pa.table(columns).select(stored_schema.names).cast(stored_schema)
    if target is not None:
        stored = conform(stored, target, source=source, fmt="jsonl", table=identifier)
    return stored


def _protected(data: pa.Table, contract: Contract, keystore: Keystore, source: str) -> dict[str, Any]:
    """The personal columns of ``data`` encrypted under each row's subject, with their token
    and fingerprint columns."""
    assert contract.pii_subject is not None
    subjects = [None if s is None else str(s) for s in data.column(contract.pii_subject).to_pylist()]
    for row, subject in enumerate(subjects):
        problem = subject_problem(subject)
        if problem is not None:
            raise SchemaMismatchError(
                f"{source}: row {row + 1}: {problem} ({contract.pii_subject} {str(subject)[:60]!r})",
                source=source,
                column=contract.pii_subject,
                row=row + 1,
            )
    keystore.ensure({s for s in subjects if s is not None})  # refuses forgotten subjects
    plain = {
        name: _plain(data.column(name).to_pylist(), contract.pii_normalize.get(name)) for name in contract.pii
    }
    columns: dict[str, Any] = {
        name: pa.array(keystore.encrypt_column(subjects, name, plain[name]), pa.string())  # type: ignore[arg-type]
        for name in contract.pii
    }
    for name in contract.pii_tokens:
        columns[f"{name}_token"] = pa.array([keystore.token(v) for v in plain[name]], pa.string())
    for name, covered in contract.pii_fingerprints.items():
        columns[name] = pa.array(
            [
                keystore.fingerprint(s, [plain[c][i] for c in covered])  # type: ignore[arg-type]
                for i, s in enumerate(subjects)
            ],
            pa.string(),
        )
    return columns


# --- dead letters ----------------------------------------------------------------------------


def _scrub(reason: str, data: Any, contract: Contract) -> str:
    """``reason`` without the message's personal values (validation errors quote values)."""
    if not isinstance(data, dict):
        return reason
    for name in contract.pii:
        value = data.get(name)
        if value is None:
            continue
        forms = {repr(value), str(value), json.dumps(value, default=str)}
        if isinstance(value, str):
            forms |= {value.strip(), repr(value.strip())}
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= 3:
                reason = reason.replace(form, REDACTED)
    return reason


def dead_letter(
    contract: Contract | None,
    keystore: Keystore | None,
    key: bytes | None,
    payload: bytes | None,
    reason: str,
) -> tuple[str | None, bytes | None, str, str | None]:
    """(message_key, payload, reason, subject) as a dead letter of ``contract`` stores them.

    Without personal data: as received. With: the reason scrubbed of the message's personal
    values; payload and key sealed under the subject's data key (read from the message), else
    under ``#dead-letters``; both dropped if the subject was forgotten."""
    text_key = key.decode("utf-8", "replace") if key is not None else None
    if contract is None or not contract.pii:
        return text_key, payload, reason, None
    if keystore is None:
        raise LoadError(
            f"dead letters of {contract.identifier} hold personal data: the platform's keystore is needed"
        )
    data: Any = None
    if payload is not None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
    subject: Any = data.get(contract.pii_subject) if isinstance(data, dict) else None
    subject = str(subject) if isinstance(subject, str | int) and not isinstance(subject, bool) else None
    if subject is None or subject_problem(subject) is not None:
        subject = DEAD_LETTER_SUBJECT
    reason = _scrub(reason, data, contract)
    try:
        if keystore.shredded({subject}):
            raise KeyShredded(subject)
        sealed_key = keystore.seal(subject, "dead_letter_key", key) if key is not None else None
        sealed = keystore.seal(subject, "dead_letter_payload", payload) if payload is not None else None
    except KeyShredded:
        return None, None, f"{reason} (payload and key dropped: {subject} was forgotten)", None
    return sealed_key, None if sealed is None else sealed.encode(), reason, subject


# --- dbt models ------------------------------------------------------------------------------


def personal_columns(identifier: str, project: Project | None = None) -> set[str]:
    """The columns of ``identifier`` declared personal: its contract's ``pii``, and the columns
    the policies list for it under an ``encrypted`` sensitive class (``project``'s contracts and
    policies; default: the environment's project)."""
    from lakehouse.governance import load_policy

    contract = personal_contract(identifier, project)
    names = set(contract.pii) if contract is not None else set()
    policy = load_policy(project.policies_dir if project is not None else None)
    for spec in policy.sensitive.values():
        if spec["encrypted"]:
            names |= set(spec["tables"].get(identifier, []))
    return names


def check_personal(data: pa.Table, columns: set[str], keystore: Keystore | None, identifier: str) -> None:
    """Refuse ``data`` unless every value of its ``columns`` is NULL or a ciphertext this
    keystore made and still opens (the tag is verified: a look-alike prefix is not enough)."""
    present = sorted(c for c in columns if c in data.column_names)
    if not present:
        return
    for name in present:
        column = data.column(name)
        if column.null_count == len(column):
            continue
        if keystore is None:
            raise PersonalDataError(f"{identifier}.{name} holds personal data: the keystore is needed")
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise PersonalDataError(
                f"{identifier}.{name} is personal data but holds {column.type} values, not ciphertext: "
                "select the column from its source unchanged (the platform decrypts it for cleared users)"
            )
        for value in pc.unique(column.drop_null()).to_pylist():
            problem = keystore.check(value)
            if problem is not None:  # the value itself is not shown: it may be personal data
                row = pc.index(column, value).as_py() + 1
                raise PersonalDataError(
                    f"{identifier}.{name} row {row} is not this keystore's ciphertext ({textwrap.shorten(problem, 120, placeholder=' ...')}); "
                    "personal columns may hold only the platform's ciphertext or NULL: select them "
                    "from their source unchanged"
                )


# --- the writer --------------------------------------------------------------------------------


def marks_json(ends: dict[str, int], marks: dict[str, int]) -> str:
    """The marks a commit records: never below what the table already holds."""
    return json.dumps({k: max(end, marks.get(k, 0)) for k, end in sorted(ends.items())})


@dataclass(frozen=True)
class Batch:
    """Rows that land together or not at all, named by ``batch_id`` in the ledger (a file's
    content hash); ``label`` is what the snapshot summary shows (the file name)."""

    batch_id: str
    rows: pa.Table
    label: str


class Writer:
    """Writes rows into bronze tables for one route: as stored, committed with their ledger
    entries, and dead letters for what cannot land.

    ``keystore``: a keystore, or a function that opens one (called once, the first time personal
    data is met); default: the keystore of the environment's settings, as in a process started
    as a ``lakehouse`` command."""

    def __init__(self, catalog: Catalog, project: Project | None, *, keystore: KeystoreSource = None):
        from lakehouse.privacy import environment_keystore

        self.catalog = catalog
        self.project = project  # None: the environment's project
        self.keys = LazyKeystore(keystore if keystore is not None else environment_keystore)

    def contract(self, identifier: str) -> Contract | None:
        return contract_for(identifier, self.project)

    def table(self, identifier: str) -> Table:
        return open_table(self.catalog, identifier, project=self.project)[0]

    def stored(self, identifier: str, rows: pa.Table, table: Table, *, source: str = "upload") -> pa.Table:
        """``rows`` as received (validated against ``received_schema``) -> as ``table`` stores them."""
        contract = self.contract(identifier)
        if contract is None or not contract.transforms_rows:
            return rows
        keystore = self.keys.get() if contract.pii else None  # no master key for tables without personal data
        return as_stored(rows, contract, keystore, target=target_arrow_schema(table), source=source)

    def land(self, table: Table, plan: Plan[T]) -> Committed[T] | None:
        """Commit what ``plan`` finds missing from ``table`` (see ``commit_with_replan``)."""
        return commit_with_replan(self.catalog, table, plan)

    def land_batches(self, table: Table, batches: list[Batch]) -> Committed[list[Batch]] | None:
        """Land, in one commit, the batches the table's ledger does not hold yet (another writer
        may have landed some meanwhile); the result names the batches this commit landed."""

        def plan(current: Table) -> Planned[list[Batch]] | None:
            done = loaded_batch_ids(current)
            missing = [b for b in batches if b.batch_id not in done]
            if not missing:
                return None
            rows = pa.concat_tables([b.rows for b in missing]) if len(missing) > 1 else missing[0].rows
            ledger = {
                BATCH_IDS: json.dumps([b.batch_id for b in missing]),
                "lakehouse.files": json.dumps([b.label for b in missing]),
            }
            return Planned(rows, ledger, missing)

        return self.land(table, plan)

    def land_past_marks(
        self,
        table: Table,
        rows: pa.Table,
        *,
        key: str,
        row_marks: list[str],
        row_positions: list[int],
        ends: dict[str, int],
    ) -> Committed[None] | None:
        """Land ``rows`` whose position (e.g. Kafka offset) under their mark name (e.g.
        ``topic/partition``) is not below the table's ledger mark ``key`` for that name, and
        move the marks to ``ends``: a replay, or another writer's earlier commit of the same
        positions, lands nothing twice."""

        def plan(current: Table) -> Planned[None] | None:
            marks = table_marks(current, set(ends), key=key)
            if all(end <= marks.get(name, -1) for name, end in ends.items()):
                return None  # another writer already committed all of it
            kept = rows
            if any(name in marks for name in ends):  # drop rows below the marks
                keep = [
                    i
                    for i, (name, position) in enumerate(zip(row_marks, row_positions, strict=True))
                    if position >= marks.get(name, -1)
                ]
                if len(keep) != rows.num_rows:
                    kept = rows.take(pa.array(keep, pa.int64()))
            return Planned(kept, {key: marks_json(ends, marks)})

        return self.land(table, plan)

    def land_dead_letters(self, dead: list[DeadLetter]) -> list[DeadLetter]:
        """Keep ``dead`` in ``bronze.dead_letters`` (sealed where personal), once per source
        position: returns the ones this call landed (a replay lands none twice)."""
        if not dead:
            return []
        table = self.table(DEAD_LETTERS)
        target = target_arrow_schema(table)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ends: dict[str, int] = {}
        for d in dead:
            ends[d.message.tp] = max(ends.get(d.message.tp, 0), d.message.offset + 1)
        stored = {id(d): self._dead_letter_row(d) for d in dead}  # sealed once, not per retry

        def plan(current: Table) -> Planned[list[DeadLetter]] | None:
            marks = table_marks(current, set(ends))
            fresh = [d for d in dead if d.message.offset >= marks.get(d.message.tp, -1)]
            if not fresh:
                return None
            rows = pa.Table.from_pylist([{**stored[id(d)], "received_at": now} for d in fresh], schema=target)
            return Planned(rows, {OFFSETS: marks_json(ends, marks)}, fresh)

        outcome = self.land(table, plan)
        fresh = (outcome.result or []) if outcome is not None else []
        if fresh:
            logger.warning(
                "%s message(s) sent to %s, e.g. %s", len(fresh), DEAD_LETTERS, stored[id(fresh[0])]["reason"]
            )
        return fresh

    def _dead_letter_row(self, d: DeadLetter) -> dict[str, Any]:
        contract = self.contract(d.target) if d.target else None
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


# --- dbt models --------------------------------------------------------------------------------


def replace_model(
    catalog: Catalog,
    identifier: str,
    data: pa.Table,
    *,
    summary: dict[str, str],
    personal: set[str],
    keystore: Keystore | None,
) -> Table:
    """A dbt model's rows as the table's whole content, in one snapshot recording ``summary``.
    Personal columns are checked first (only this keystore's ciphertext or NULL): a model is
    refused before anything is written. The table follows the model's schema (evolved in place,
    recreated only when Iceberg cannot evolve it)."""
    data = data.cast(normalize_schema(data.schema))
    if personal & set(data.column_names):
        check_personal(data, personal, keystore, identifier)
    ident = tuple(identifier.split("."))
    try:
        table = catalog.load_table(ident)
        table = _replace_schema_if_changed(catalog, table, data.schema)
    except IcebergNoSuchTable:
        table = catalog.create_table(
            ident,
            schema=data.schema,
            properties={"lakehouse.dbt-model": summary.get("lakehouse.dbt-model", "")},
        )
    if table.current_snapshot() is None:
        table.append(data, snapshot_properties=summary)
    else:
        with warnings.catch_warnings():  # pyiceberg warns when the replaced snapshot was empty
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            table.overwrite(data, snapshot_properties=summary)
    return table


def _replace_schema_if_changed(catalog: Any, table: Table, schema: Any) -> Table:
    """Evolve the table to the model's new columns; recreate it only if the change cannot evolve
    (a type change Iceberg cannot promote, a new required column). Whether it can is decided in
    memory, before anything is committed; an error while committing the evolution (a conflicting
    writer, the catalog or object store failing) propagates and leaves the table and its
    snapshots as they were."""
    current = normalize_schema(table.schema().as_arrow())
    if current.equals(schema):
        return table
    update = table.update_schema(allow_incompatible_changes=False)
    try:
        update.union_by_name(schema)
        for name in sorted(set(current.names) - set(schema.names)):
            update.delete_column(name)
    except (ValueError, ValidationError, ResolveError) as exc:  # the schema really is incompatible
        logger.warning("recreating %s: its schema cannot evolve (%s)", ".".join(table.name()), exc)
        catalog.drop_table(table.name())
        created: Table = catalog.create_table(table.name(), schema=schema, properties=dict(table.properties))
        return created
    update.commit()
    reloaded: Table = catalog.load_table(table.name())
    return reloaded
