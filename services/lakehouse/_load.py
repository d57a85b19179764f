"""Loading files into Iceberg tables: the one code path by which rows enter the lakehouse.

A load reads and validates every file first, then commits all of them in one Iceberg snapshot:
all or nothing. Each file is a batch identified by its content hash; the ids are recorded in the
snapshot summary of the very commit that writes the rows, so loading the same file again adds
nothing, even after a crash between the commit and anything else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable
from pyiceberg.io.pyarrow import pyarrow_to_schema, schema_to_pyarrow
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import ancestors_of

from ._catalog import LAYERS
from ._contracts import Contract, contract_for, evolve_to_contract
from ._ingest import as_stored
from ._keystore import Keystore
from .errors import LakehouseError, LoadError, NoSuchTableError, SchemaMismatchError

logger = logging.getLogger(__name__)

Format = Literal["parquet", "csv", "jsonl"]
BATCH_IDS = "lakehouse.batch-ids"
COMMIT_RETRIES = 8
PARALLEL_MIN_ROWS_PER_FILE = 131_072  # below this, one file beats parallel small ones
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


@dataclass
class _Batch:
    path: Path
    batch_id: str
    data: pa.Table


ProgressCallback = Callable[[str, int], None]  # (what happened, rows)


def parse_identifier(identifier: str) -> tuple[str, str]:
    parts = identifier.split(".")
    if len(parts) != 2 or not all(parts):
        raise LoadError(f"table must be LAYER.TABLE (e.g. bronze.orders), not {identifier!r}")
    if parts[0] not in LAYERS:
        raise LoadError(f"unknown layer {parts[0]!r} in {identifier!r}; layers: {', '.join(LAYERS)}")
    return parts[0], parts[1]


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


# --- the ledger: what a table already holds, recorded in the commit that wrote it ------------
#
# Every commit records what it wrote in its snapshot summary (batch ids of loaded files, Kafka
# offsets, device batch sequences), and the complete ledger in a table property set in the same
# transaction. Reading the ledger is then one property, not a walk through history, and expiring
# old snapshots loses nothing. Tables written before the property existed are read by walking
# their snapshots, once.

OFFSETS = "lakehouse.kafka-offsets"  # next offset per "topic/partition"
DEVICE_BATCHES = "lakehouse.device-batches"  # next batch sequence per edge device
_MARK_KEYS = (OFFSETS, DEVICE_BATCHES)
LEDGER_KEYS = (BATCH_IDS, *_MARK_KEYS)


def loaded_batch_ids(table: Table) -> set[str]:
    """Every batch id the table holds."""
    recorded = table.properties.get(BATCH_IDS)
    if recorded is not None:
        return set(json.loads(recorded))
    ids: set[str] = set()
    for snapshot in table.metadata.snapshots:
        raw = snapshot.summary.additional_properties.get(BATCH_IDS) if snapshot.summary else None
        if raw:
            ids.update(json.loads(raw))
    return ids


def table_marks(table: Table, wanted: set[str] | None = None, *, key: str = OFFSETS) -> dict[str, int]:
    """Next offset per ``topic/partition`` (or, with ``key=DEVICE_BATCHES``, next batch
    sequence per device) that the table holds."""
    recorded = table.properties.get(key)
    if recorded is not None:
        return {k: int(v) for k, v in json.loads(recorded).items()}
    marks: dict[str, int] = {}
    snapshot = table.current_snapshot()
    if snapshot is None:
        return marks
    for ancestor in ancestors_of(snapshot, table.metadata):
        raw = ancestor.summary.additional_properties.get(key) if ancestor.summary else None
        if raw:
            for tp, offset in json.loads(raw).items():
                marks.setdefault(tp, int(offset))
            if wanted is not None and wanted <= marks.keys():
                break
    return marks


def ledger_properties(table: Table, summary: dict[str, str]) -> dict[str, str]:
    """The complete ledger after a commit whose snapshot summary is ``summary``."""
    merged: dict[str, str] = {}
    for key in LEDGER_KEYS:
        if key not in summary and key in table.properties:
            continue
        if key == BATCH_IDS:
            ids = loaded_batch_ids(table) | set(json.loads(summary.get(key, "[]")))
            if ids:
                merged[key] = json.dumps(sorted(ids), separators=(",", ":"))
        else:
            marks = table_marks(table, key=key)
            for k, v in json.loads(summary.get(key, "{}")).items():
                marks[k] = max(int(v), marks.get(k, 0))
            if marks:
                merged[key] = json.dumps(dict(sorted(marks.items())), separators=(",", ":"))
    return merged


# --- reading ---------------------------------------------------------------------------------


def _csv_options(target: pa.Schema | None, as_strings: bool) -> pacsv.ConvertOptions:
    column_types = {}
    if target is not None:
        column_types = {f.name: (pa.string() if as_strings else f.type) for f in target}
    return pacsv.ConvertOptions(
        column_types=column_types,
        strings_can_be_null=True,
        null_values=["", "NULL", "null", "NA"],
        true_values=["true", "True", "TRUE", "1", "t"],
        false_values=["false", "False", "FALSE", "0", "f"],
        timestamp_parsers=[pacsv.ISO8601],
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


# --- validation ------------------------------------------------------------------------------


def _cast(array: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    safe = not (pa.types.is_timestamp(array.type) and pa.types.is_timestamp(target))
    return pc.cast(array, target, safe=safe)


def _first_bad_row(array: pa.ChunkedArray, target: pa.DataType) -> tuple[int, object]:
    offset = 0
    for chunk in array.chunks:
        for start in range(0, len(chunk), 4096):
            piece = chunk.slice(start, 4096)
            try:
                _cast(pa.chunked_array([piece]), target)
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            for i in range(len(piece)):
                try:
                    _cast(pa.chunked_array([piece.slice(i, 1)]), target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return offset + start + i, piece[i].as_py()
        offset += len(chunk)
    return -1, None


def _row_label(index: int, fmt: Format) -> str:
    # Rows are 1-based; a CSV's header is line 1, so data row n is on line n + 1.
    return f"row {index + 1} (line {index + 2})" if fmt == "csv" else f"row {index + 1}"


def conform(data: pa.Table, target: pa.Schema, *, source: str, fmt: Format, table: str) -> pa.Table:
    """Cast ``data`` to ``target`` or raise a SchemaMismatchError naming the column and row."""
    extra = [n for n in data.column_names if target.get_field_index(n) < 0]
    if extra:
        known = ", ".join(target.names)
        raise SchemaMismatchError(
            f"{source}: column(s) {extra} are not in {table} (its columns: {known})",
            source=source,
            column=extra[0],
        )
    arrays = []
    for field_ in target:
        if field_.name not in data.column_names:
            if not field_.nullable:
                raise SchemaMismatchError(
                    f"{source}: required column {field_.name!r} of {table} is missing",
                    source=source,
                    column=field_.name,
                )
            arrays.append(pa.nulls(data.num_rows, field_.type))
            continue
        column = data.column(field_.name)
        if not column.type.equals(field_.type):
            try:
                column = _cast(column, field_.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                row, value = _first_bad_row(column, field_.type)
                where = f" at {_row_label(row, fmt)}, value {value!r}" if row >= 0 else ""
                raise SchemaMismatchError(
                    f"{source}: column {field_.name!r}{where}: cannot convert {column.type} to "
                    f"{field_.type} for {table} ({str(exc).splitlines()[0]})",
                    source=source,
                    column=field_.name,
                    row=row + 1 if row >= 0 else None,
                ) from exc
        if not field_.nullable and column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise SchemaMismatchError(
                f"{source}: column {field_.name!r} at {_row_label(row, fmt)} is empty, but {table} requires it",
                source=source,
                column=field_.name,
                row=row + 1,
            )
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=target)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """An Arrow schema Iceberg can store, for tables created from a file's own schema."""

    def fix(t: pa.DataType) -> pa.DataType:
        if pa.types.is_dictionary(t):
            return fix(t.value_type)
        if pa.types.is_timestamp(t):
            return pa.timestamp("us", tz="UTC" if t.tz else None)
        if pa.types.is_unsigned_integer(t):
            return pa.int64() if t.bit_width < 64 else pa.decimal128(20, 0)
        if pa.types.is_int8(t) or pa.types.is_int16(t):
            return pa.int32()
        if pa.types.is_large_string(t) or pa.types.is_null(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_float16(t):
            return pa.float32()
        if pa.types.is_time(t):
            return pa.time64("us")
        return t

    return pa.schema([pa.field(f.name, fix(f.type), nullable=True) for f in schema])


def target_arrow_schema(table: Table) -> pa.Schema:
    schema = schema_to_pyarrow(table.schema(), include_field_ids=False)
    fields = []
    for f in schema:
        t = pa.string() if pa.types.is_large_string(f.type) else f.type
        t = pa.binary() if pa.types.is_large_binary(t) else t
        fields.append(pa.field(f.name, t, nullable=f.nullable))
    return pa.schema(fields)


# --- writing ---------------------------------------------------------------------------------


def _partition_runs(table: Table, data: pa.Table) -> list[tuple[PartitionKey | None, pa.Table]]:
    """Single-partition slices of ``data`` with their keys, found with one sort (O(n log n)).

    pyiceberg 0.12 splits a partitioned write by filtering the whole table once per partition
    (O(partitions x rows)); sorting once and slicing runs is linear after the sort, and the
    sorted rows cluster each data file's min/max statistics for pruning.
    """
    spec, schema = table.spec(), table.schema()
    if spec.is_unpartitioned() or data.num_rows == 0:
        return [(None, data)]
    keys = []
    for field_ in spec.fields:
        source = schema.find_field(field_.source_id)
        keys.append(field_.transform.pyarrow_transform(source.field_type)(data.column(source.name)))
    key_table = pa.table({f"k{i}": k for i, k in enumerate(keys)})
    order = pc.sort_indices(key_table, sort_keys=[(f"k{i}", "ascending") for i in range(len(keys))])
    data, key_table = data.take(order), key_table.take(order)
    n = data.num_rows
    changed = pa.array([True] + [False] * (n - 1))
    for name in key_table.column_names:
        col = key_table.column(name)
        head, tail = col.slice(1), col.slice(0, n - 1)
        differs = pc.if_else(
            pc.and_(pc.is_null(head), pc.is_null(tail)), False, pc.fill_null(pc.not_equal(head, tail), True)
        )
        changed = pc.or_(changed, pa.concat_arrays([pa.array([True]), differs.combine_chunks()]))
    starts = pc.indices_nonzero(changed).to_pylist()
    runs: list[tuple[PartitionKey | None, pa.Table]] = []
    for a, b in zip(starts, [*starts[1:], n], strict=True):
        values = [key_table.column(i)[a].as_py() for i in range(len(keys))]
        key = PartitionKey(
            field_values=[
                PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, values, strict=True)
            ],
            partition_spec=spec,
            schema=schema,
        )
        runs.append((key, data.slice(a, b - a)))
    return runs


def _file_batches(piece: pa.Table, rows_per_file: int) -> list[list[pa.RecordBatch]]:
    return [piece.slice(i, rows_per_file).to_batches() for i in range(0, piece.num_rows, rows_per_file)]


class _MetadataOnceTransaction(Transaction):
    """``table.transaction()``, except that the staged metadata is computed once per change.

    pyiceberg 0.12 recomputes ``Transaction.table_metadata`` with a deep copy of the whole
    table metadata (every snapshot) on each access, about 15 times per append: commit time grew
    linearly with history, from 25 ms to 400 ms over 150 snapshots. Table metadata models are
    frozen, so one copy per staged change is enough.
    """

    _cached: tuple[tuple[Any, Any], Any] | None = None

    @property
    def table_metadata(self) -> Any:
        key = (self._table.metadata, self._updates)
        if self._cached is None or self._cached[0][0] is not key[0] or self._cached[0][1] is not key[1]:
            self._cached = (key, super().table_metadata)
        return self._cached[1]


def append_atomically(table: Table, data: pa.Table, properties: dict[str, str]) -> None:
    """Append ``data`` as one snapshot carrying ``properties`` in its summary, and the merged
    ledger in the table's properties, in one commit.

    The steps of pyiceberg's ``Transaction.append`` (schema check, data files written in
    parallel, fast append, one commit) with partitions split by ``_partition_runs``.
    """
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible
    from pyiceberg.table import TableProperties
    from pyiceberg.utils.properties import property_as_int

    metadata = table.metadata
    _check_pyarrow_schema_compatible(
        metadata.schema(), provided_schema=data.schema, format_version=metadata.format_version
    )
    target_size = property_as_int(
        metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    # Size files from the average row once: pyiceberg's bin packing measures every slice's
    # nbytes, which costs milliseconds per slice of a large table.
    rows_per_file = max(
        1, int((target_size or 512 * 1024 * 1024) / max(1.0, data.nbytes / max(1, data.num_rows)))
    )
    # A large load is written as one file per core, in parallel, rather than one file on one core.
    cores = os.cpu_count() or 1
    if data.num_rows >= 2 * PARALLEL_MIN_ROWS_PER_FILE:
        rows_per_file = min(rows_per_file, max(PARALLEL_MIN_ROWS_PER_FILE, -(-data.num_rows // cores)))
    task_schema = pyarrow_to_schema(
        data.schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version
    )
    ledger = ledger_properties(table, properties)
    with _MetadataOnceTransaction(table) as tx:
        if ledger:
            tx.set_properties(ledger)
        with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
            _append_files(table, tx, append, data, rows_per_file, task_schema)


def _append_files(
    table: Table, tx: Any, append: Any, data: pa.Table, rows_per_file: int, task_schema: Any
) -> None:
    from pyiceberg.io.pyarrow import write_file
    from pyiceberg.table import WriteTask

    counter = itertools.count(0)
    tasks = (
        WriteTask(
            write_uuid=append.commit_uuid,
            task_id=next(counter),
            record_batches=batches,
            partition_key=key,
            schema=task_schema,
        )
        for key, piece in _partition_runs(table, data)
        for batches in _file_batches(piece, rows_per_file)
    )
    for data_file in write_file(io=table.io, table_metadata=tx.table_metadata, tasks=tasks):
        append.append_data_file(data_file)


Plan = Callable[[Table], "tuple[pa.Table, dict[str, str]] | None"]


def commit_idempotently(catalog: Catalog, table: Table, plan: Plan) -> tuple[Table, pa.Table] | None:
    """Append what ``plan`` says the table does not hold yet, as one snapshot.

    ``plan`` reads the table as it is now (batch ids, Kafka offsets in snapshot summaries) and
    returns the rows still missing with the summary properties that record them, or None when
    nothing is missing. If another writer commits first, the table is reloaded and planned
    again, so a retry never doubles rows. Returns the committed table and rows, or None.
    """
    name = ".".join(table.name())
    for _attempt in range(COMMIT_RETRIES):
        planned = plan(table)
        if planned is None:
            return None
        rows, properties = planned
        try:
            append_atomically(table, rows, properties)
        except CommitFailedException:
            logger.info("commit to %s conflicted with another writer; planning again", name)
            table = catalog.load_table(table.name())
            continue
        return table, rows
    raise LoadError(f"commit to {name} kept conflicting after {COMMIT_RETRIES} attempts")


# --- the load --------------------------------------------------------------------------------


def open_table(
    catalog: Catalog,
    identifier: str,
    first_file: tuple[Path, Format] | None = None,
    *,
    create: bool = False,
    contracts_file: Path | None = None,
) -> tuple[Table, bool]:
    """The table to load into: existing (evolved to its contract), created from its contract,
    or, with ``create``, created from the first file's schema. Returns (table, created)."""
    layer, name = parse_identifier(identifier)
    contract = contract_for(identifier, contracts_file)
    try:
        table = catalog.load_table((layer, name))
    except IcebergNoSuchTable:
        try:
            created = _create_table(catalog, (layer, name), contract, first_file if create else None)
        except TableAlreadyExistsError:  # another writer created it a moment ago
            table = catalog.load_table((layer, name))
        else:
            if created is not None:
                return created, True
            return _no_such_table(catalog, identifier)
    return (evolve_to_contract(table, contract) if contract else table), False


def _create_table(
    catalog: Catalog, ident: tuple[str, str], contract: Contract | None, from_file: tuple[Path, Format] | None
) -> Table | None:
    """A new table from its contract, else from a file's own schema, else None."""
    if contract is not None:
        return catalog.create_table(
            ident,
            schema=contract.iceberg_schema(),
            partition_spec=contract.partition_spec(),
            properties=contract.table_properties(),
        )
    if from_file is not None:
        path, fmt = from_file
        schema = normalize_schema(read_file(path, fmt, None).schema)
        return catalog.create_table(ident, schema=schema, properties={"lakehouse.created-from": path.name})
    return None


def _no_such_table(catalog: Catalog, identifier: str) -> NoReturn:
    from ._engine import list_tables

    existing = ", ".join(f"{n}.{t}" for n, t in list_tables(catalog)) or "(none)"
    raise NoSuchTableError(
        f"no table {identifier} and no contract declares it; pass --create to create it from the "
        f"files' schema. Tables that exist: {existing}"
    )


def load_files(
    catalog: Catalog,
    identifier: str,
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    create: bool = False,
    progress: ProgressCallback | None = None,
    contracts_file: Path | None = None,
    keystore: Keystore | None = None,
) -> LoadResult:
    """Append files to ``identifier`` in one atomic commit, skipping files already loaded.
    Personal data (the contract's ``pii``) is encrypted with ``keystore`` before it is written;
    without one, such a table refuses the load."""
    started = time.perf_counter()
    parse_identifier(identifier)
    files = [Path(p) for p in paths]
    if not files:
        raise LoadError("no files to load")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise LoadError(f"file(s) not found: {', '.join(missing)}")
    formats = [detect_format(p, fmt) for p in files]
    table, created = open_table(
        catalog, identifier, (files[0], formats[0]), create=create, contracts_file=contracts_file
    )
    result = LoadResult(table=identifier, created=created)
    target = target_arrow_schema(table)
    done = loaded_batch_ids(table)
    contract = contract_for(identifier, contracts_file)
    if contract is not None and contract.pii and keystore is None:
        raise LoadError(
            f"{identifier} holds personal data ({', '.join(contract.pii)}): load it through the platform "
            "(lakehouse load, Lakehouse.load), which encrypts it"
        )
    # rows as sent differ from rows as stored (personal data, platform columns): files hold the former
    transformed = contract if contract is not None and contract.transforms_rows else None
    source_schema = transformed.arrow_schema() if transformed is not None else target

    batches: list[_Batch] = []
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
        data = as_stored(data, transformed, keystore, target=target, source=str(path))
        batches.append(_Batch(path, bid, data))
        if progress:
            progress(f"validated {path.name}", data.num_rows)

    committed: list[_Batch] = []

    def plan(current: Table) -> tuple[pa.Table, dict[str, str]] | None:
        done = loaded_batch_ids(current)  # another writer may have loaded some meanwhile
        committed[:] = [b for b in batches if b.batch_id not in done]
        if not committed:
            return None
        data = pa.concat_tables([b.data for b in committed]) if len(committed) > 1 else committed[0].data
        return data, {
            BATCH_IDS: json.dumps([b.batch_id for b in committed]),
            "lakehouse.files": json.dumps([b.path.name for b in committed]),
        }

    try:
        outcome = commit_idempotently(catalog, table, plan)
    except LakehouseError:
        raise
    except Exception as exc:
        raise LoadError(f"commit to {identifier} failed, nothing was written: {exc}") from exc
    loaded = {b.batch_id for b in committed} if outcome else set()
    result.files_skipped += [str(b.path) for b in batches if b.batch_id not in loaded]
    if outcome:
        table, rows = outcome
        result.rows = rows.num_rows
        result.files_loaded = [str(b.path) for b in committed]
        snapshot = table.current_snapshot()
        result.snapshot_id = snapshot.snapshot_id if snapshot else None
        if progress:
            progress(f"committed {len(committed)} file(s) to {identifier}", 0)
    result.seconds = time.perf_counter() - started
    return result
