"""Loading files into Iceberg tables: the one code path by which rows enter the lakehouse.

A load reads and validates every file first, then commits all of them in one Iceberg snapshot:
all or nothing. Each file is a batch identified by its content hash; the ids are recorded in the
snapshot summary of the very commit that writes the rows, so loading the same file again adds
nothing, even after a crash between the commit and anything else.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from lakehouse.config import Project
from lakehouse.contracts import Contract, contract_for
from lakehouse.errors import LakehouseError, LoadError, SchemaMismatchError
from lakehouse.iceberg import (
    loaded_batch_ids,
    open_table,
    parse_identifier,
    target_arrow_schema,
)
from lakehouse.privacy import Keystore

from ._conform import Format, conform
from ._records import DeadLetter, Message
from ._write import Batch, Writer

logger = logging.getLogger(__name__)


_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class LoadResult:
    table: str
    rows: int = 0
    files_loaded: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    snapshot_id: int | None = None
    created: bool = False
    seconds: float = 0.0
    # rows of forgotten data subjects (gdpr forget): not landed, kept in bronze.dead_letters
    rows_refused: int = 0


ProgressCallback = Callable[[str, int], None]  # (what happened, rows)


def detect_format(path: Path, fmt: str | None) -> Format:
    if fmt:
        if fmt not in ("parquet", "csv", "jsonl"):
            raise LoadError(f"unknown format {fmt!r}; use parquet, csv or jsonl")
        return fmt  # type: ignore[return-value]
    suffixes = [s for s in path.suffixes if s not in (".gz", ".zst")]
    found = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if not found:
        raise LoadError(f"{path}: cannot tell the format from the name; pass --format parquet|csv|jsonl")
    return found


def batch_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading ---------------------------------------------------------------------------------


_NULL_VALUES = ["", "NULL", "null", "NA"]


def _csv_options(target: pa.Schema | None, as_strings: bool) -> pacsv.ConvertOptions:
    column_types = {}
    if target is not None:
        column_types = {f.name: (pa.string() if as_strings else f.type) for f in target}
    return pacsv.ConvertOptions(
        column_types=column_types,
        strings_can_be_null=True,
        null_values=_NULL_VALUES,
        true_values=["true", "True", "TRUE", "1", "t"],
        false_values=["false", "False", "FALSE", "0", "f"],
        timestamp_parsers=[pacsv.ISO8601],
    )


# --- column types: inferred from a file, or said with --schema --------------------------------

TYPE_NAMES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "string": pa.string(),
    "varchar": pa.string(),
    "binary": pa.binary(),
}

MAX_DECIMAL_PRECISION = 38  # Iceberg's and Arrow's decimal128

# An inferred decimal's precision is at least this (the widest that engines keep in 64 bits), so a
# later file with larger amounts than the first still fits; more if the first file's values need it.
INFERRED_DECIMAL_PRECISION = 18


def type_name(type_: pa.DataType) -> str:
    """How ``--schema`` names a type (``decimal(10,2)``, ``date``)."""
    if pa.types.is_decimal(type_):
        return f"decimal({type_.precision},{type_.scale})"
    return next((name for name, known in TYPE_NAMES.items() if known.equals(type_)), str(type_))


_DECIMAL_TYPE = re.compile(r"decimal\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", re.IGNORECASE)


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses (``decimal(10,2)`` stays whole)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_type(text: str) -> pa.DataType:
    """A column type by name (``TYPE_NAMES``, ``decimal(P,S)``), as an Iceberg table stores it."""
    name = text.strip().lower()
    if name in TYPE_NAMES:
        return TYPE_NAMES[name]
    decimal = _DECIMAL_TYPE.fullmatch(name)
    if decimal:
        precision, scale = int(decimal.group(1)), int(decimal.group(2) or 0)
        if not 1 <= precision <= MAX_DECIMAL_PRECISION or scale > precision:
            raise LoadError(
                f"{text.strip()}: a decimal's precision is 1 to {MAX_DECIMAL_PRECISION} and its scale "
                "0 to the precision"
            )
        return pa.decimal128(precision, scale)
    raise LoadError(f"unknown type {text.strip()!r}; use {', '.join(TYPE_NAMES)} or decimal(P,S)")


def parse_schema(text: str) -> dict[str, pa.DataType]:
    """Column types said as ``NAME=TYPE,...`` (``amount=decimal(10,2),day=date``); LoadError
    naming the part that is wrong."""
    types: dict[str, pa.DataType] = {}
    for part in _top_level_parts(text):
        if not part.strip():
            raise LoadError(
                f"{text.strip()!r} has an empty entry: NAME=TYPE entries are separated by one comma"
            )
        name, equals, type_text = part.partition("=")
        name = name.strip()
        if not equals or not name or not type_text.strip():
            raise LoadError(f"{part.strip()!r} is not NAME=TYPE (e.g. amount=decimal(10,2),day=date)")
        if name in types:
            raise LoadError(f"{part.strip()!r}: column {name!r} is named twice")
        try:
            types[name] = parse_type(type_text)
        except LoadError as exc:
            raise LoadError(f"{part.strip()!r}: {exc}") from None
    return types


def fixed_scale_decimal(text: pa.ChunkedArray | pa.Array) -> pa.DataType | None:
    """DECIMAL(precision, scale) for a CSV column whose every value (nulls aside) is a plain
    decimal number written with the same number of decimals (``1.50``, ``-2.25``): a price or an
    amount, which a DOUBLE would hold only approximately. The precision is the digits the values
    need, at least ``INFERRED_DECIMAL_PRECISION``. None for anything else (no value, mixed
    scales, exponents, more than 38 digits)."""
    values = pc.drop_null(text)
    if len(values) == 0 or not pc.all(pc.match_substring_regex(values, r"^-?[0-9]+\.[0-9]+$")).as_py():
        return None
    dot = pc.find_substring(values, ".")
    scales = pc.subtract(pc.subtract(pc.utf8_length(values), dot), 1)
    bounds = pc.min_max(scales)
    scale = bounds["min"].as_py()
    if scale != bounds["max"].as_py():
        return None
    negative = pc.cast(pc.starts_with(values, "-"), pa.int32())
    integer_digits = pc.max(pc.subtract(dot, negative)).as_py()
    precision = integer_digits + scale
    if precision > MAX_DECIMAL_PRECISION:
        return None
    return pa.decimal128(max(precision, INFERRED_DECIMAL_PRECISION), scale)


def _csv_schema(path: Path) -> pa.Schema:
    """A CSV file's schema as Arrow infers it, with fixed-scale decimal text as DECIMAL."""
    schema = pacsv.read_csv(path, convert_options=_csv_options(None, as_strings=False)).schema
    floating = [f.name for f in schema if pa.types.is_floating(f.type)]
    if not floating:
        return schema
    text = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in floating},
            include_columns=floating,
            strings_can_be_null=True,
            null_values=_NULL_VALUES,
        ),
    )
    for name in floating:
        decimal = fixed_scale_decimal(text.column(name))
        if decimal is not None:
            schema = schema.set(schema.get_field_index(name), pa.field(name, decimal))
    return schema


def file_schema(path: Path, fmt: Format, types: Mapping[str, pa.DataType] | None = None) -> pa.Schema:
    """The schema of a table created from ``path``: the file's own (Parquet keeps its types; in a
    CSV, text with a fixed scale is DECIMAL), with ``types`` (``--schema``) for the columns it
    names."""
    try:
        if fmt == "parquet":
            schema = pq.read_schema(path)
        elif fmt == "csv":
            schema = _csv_schema(path)
        else:
            schema = pajson.read_json(path).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaMismatchError(f"{path}: not readable as {fmt}: {exc}", source=str(path)) from exc
    for name, type_ in (types or {}).items():
        index = schema.get_field_index(name)
        if index < 0:
            raise LoadError(
                f"--schema names column {name!r}, which {path.name} does not have (its columns: "
                f"{', '.join(schema.names)})"
            )
        schema = schema.set(index, pa.field(name, type_))
    return schema


def _check_types(identifier: str, schema: pa.Schema, types: Mapping[str, pa.DataType]) -> None:
    """``types`` (``--schema``) agree with the columns of an existing table (or its contract)."""
    for name, type_ in types.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise LoadError(
                f"--schema names column {name!r}, which {identifier} does not have (its columns: "
                f"{', '.join(schema.names)})"
            )
        if not schema.field(index).type.equals(type_):
            raise LoadError(
                f"column {name!r} of {identifier} is {type_name(schema.field(index).type)}, --schema says "
                f"{type_name(type_)}: a table's types are fixed when it is created"
            )


def read_file(path: Path, fmt: Format, target: pa.Schema | None) -> pa.Table:
    """Read one file into Arrow; CSV columns are parsed straight into the target types."""
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            try:
                return pacsv.read_csv(path, convert_options=_csv_options(target, as_strings=False))
            except pa.ArrowInvalid:
                if target is None:
                    raise
                # Parse as text and let conform() name the column and row that does not fit.
                return pacsv.read_csv(path, convert_options=_csv_options(target, as_strings=True))
        return pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaMismatchError(f"{path}: not readable as {fmt}: {exc}", source=str(path)) from exc


def load_files(
    catalog: Catalog,
    identifier: str,
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    create: bool = False,
    progress: ProgressCallback | None = None,
    project: Project | None = None,
    keystore: Keystore | None = None,
    types: Mapping[str, pa.DataType] | None = None,
) -> LoadResult:
    """Append files to ``identifier`` in one atomic commit, skipping files already loaded.
    Personal data (the contract's ``pii``) is encrypted with ``keystore`` before it is written;
    without one, such a table refuses the load. The rows of a forgotten data subject (``gdpr
    forget``) are not written: they are kept in ``bronze.dead_letters`` with the reason (without
    their data) and counted in ``rows_refused``. Contracts are ``project``'s (default: the
    environment's); a table no contract declares is created from the files only with ``create``,
    with the first file's schema (``file_schema``) and ``types`` for the columns it names; an
    existing table's columns must agree with ``types``."""
    started = time.perf_counter()
    parse_identifier(identifier)
    files = [Path(p) for p in paths]
    if not files:
        raise LoadError("no files to load")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise LoadError(f"file(s) not found: {', '.join(missing)}")
    formats = [detect_format(p, fmt) for p in files]
    writer = Writer(catalog, project, keystore=keystore)
    table, created = open_table(
        catalog,
        identifier,
        create_from=(lambda: (file_schema(files[0], formats[0], types), files[0].name)) if create else None,
        project=project,
    )
    result = LoadResult(table=identifier, created=created)
    target = target_arrow_schema(table)
    done = loaded_batch_ids(table)
    contract = contract_for(identifier, project)
    if contract is not None and contract.pii and keystore is None:
        raise LoadError(
            f"{identifier} holds personal data ({', '.join(contract.pii)}): load it through the platform "
            "(lakehouse load, Lakehouse.load), which encrypts it"
        )
    # rows as sent differ from rows as stored (personal data, platform columns): files hold the former
    transformed = contract if contract is not None and contract.transforms_rows else None
    source_schema = transformed.arrow_schema() if transformed is not None else target
    if types and not created:
        _check_types(identifier, source_schema, types)

    batches: list[Batch] = []
    refused: list[DeadLetter] = []
    paths_of: dict[str, Path] = {}
    seen: set[str] = set()
    for path, file_fmt in zip(files, formats, strict=True):
        bid = batch_id(path)
        if bid in done or bid in seen:
            result.files_skipped.append(str(path))
            if progress:
                progress(f"skipped {path.name} (already loaded)", 0)
            continue
        seen.add(bid)
        data = conform(
            read_file(path, file_fmt, source_schema),
            source_schema,
            source=str(path),
            fmt=file_fmt,
            table=identifier,
        )
        if contract is not None and contract.pii and keystore is not None:
            data, dead = _without_forgotten(data, contract, keystore, f"file:{path.name}@{bid[:16]}")
            refused += dead
        data = writer.stored(identifier, data, table, source=str(path)) if transformed else data
        batches.append(Batch(bid, data, path.name))
        paths_of[bid] = path
        if progress:
            progress(f"validated {path.name}", data.num_rows)

    # the refused rows' dead letters first: a failed commit below leaves them once (each at its
    # file and row), and the retry lands the rows
    result.rows_refused = len(writer.land_dead_letters(refused)) if refused else 0
    try:
        outcome = writer.land_batches(table, batches)
    except LakehouseError:
        raise
    except Exception as exc:
        raise LoadError(f"commit to {identifier} failed, nothing was written: {exc}") from exc
    committed = {b.batch_id for b in (outcome.result or [])} if outcome else set()
    result.files_skipped += [str(paths_of[b.batch_id]) for b in batches if b.batch_id not in committed]
    if outcome:
        result.rows = outcome.rows.num_rows
        result.files_loaded = [str(paths_of[b.batch_id]) for b in batches if b.batch_id in committed]
        snapshot = outcome.table.current_snapshot()
        result.snapshot_id = snapshot.snapshot_id if snapshot else None
        if progress:
            progress(f"committed {len(committed)} file(s) to {identifier}", 0)
    result.seconds = time.perf_counter() - started
    return result


def _without_forgotten(
    data: pa.Table, contract: Contract, keystore: Keystore, source: str
) -> tuple[pa.Table, list[DeadLetter]]:
    """``data`` without the rows of forgotten subjects, and a dead letter for each of those,
    at ``source`` (the file) and its row number. A dead letter carries only the subject's id, so
    that the write path drops it as it drops a forgotten subject's Kafka message: what remains is
    the reason."""
    assert contract.pii_subject is not None
    subjects = [None if s is None else str(s) for s in data.column(contract.pii_subject).to_pylist()]
    forgotten = keystore.shredded({s for s in subjects if s is not None})
    if not forgotten:
        return data, []
    dead = [
        DeadLetter(
            Message(source, 0, row + 1, None, orjson.dumps({"data": {contract.pii_subject: subject}})),
            "the data subject was forgotten (gdpr forget): their data may not be written again",
            contract.identifier,
        )
        for row, subject in enumerate(subjects)
        if subject in forgotten
    ]
    keep = [row for row, subject in enumerate(subjects) if subject not in forgotten]
    return data.take(pa.array(keep, pa.int64())), dead
