"""Records as received (Kafka messages, edge uploads) into contract-checked Arrow rows;
records that do not fit become dead letters with their reason.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from lakehouse.contracts import Contract
from lakehouse.errors import SchemaMismatchError

from ._conform import conform

logger = logging.getLogger(__name__)


DEAD_LETTERS = "bronze.dead_letters"


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


def fast_path(values: list[bytes | None], contract: Contract, target: pa.Schema) -> pa.Table | None:
    """The whole batch parsed and typed in one vectorized pass, or None if any message is not
    a clean envelope of this contract (then the caller checks them one by one)."""
    if any(v is None for v in values):
        return None
    return fast_path_lines(b"\n".join(v for v in values if v is not None), len(values), contract, target)


def fast_path_lines(lines: bytes, count: int, contract: Contract, target: pa.Schema) -> pa.Table | None:
    """``fast_path`` of ``count`` messages given joined by newlines (as the sink's committer
    receives them). Only a batch whose lines are exactly its messages takes this path: a line
    break inside a message, or a message the reader would skip as blank, would shift every
    later row onto another message's offset."""
    if count == 0 or lines.count(b"\n") != count - 1 or b"\r" in lines:
        return None
    # the JSON reader cannot parse dates from text: read those as text and let conform cast them
    fields = [pa.field(f.name, pa.string() if pa.types.is_date(f.type) else f.type) for f in target]
    envelope = pa.schema([("schema", pa.string()), ("version", pa.int64()), ("data", pa.struct(fields))])
    try:
        parsed = pajson.read_json(
            io.BytesIO(lines),
            parse_options=pajson.ParseOptions(explicit_schema=envelope, unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.num_rows != count:
        return None  # a blank message (skipped by the reader)
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


def open_envelope(value: bytes | None, contract: Contract) -> tuple[str | None, dict[str, Any]]:
    """(None, the message's data) for an envelope ``{"schema", "version", "data": {...}}`` of
    ``contract`` at its version or an older one; else (why not, {}). The Kafka sink's check, and
    a dead letter's when it is replayed."""
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


# --- the sink ----------------------------------------------------------------------------------


@dataclass
class DeadLetter:
    message: Message
    reason: str
    target: str
