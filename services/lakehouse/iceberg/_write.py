"""Appending Arrow rows to an Iceberg table as one snapshot: partitioned, with the
snapshot-summary properties that record what the rows are.
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io.pyarrow import pyarrow_to_schema, schema_to_pyarrow
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table

from ._ledger import ledger_update
from ._pyiceberg import MetadataOnceTransaction, check_schema_compatible, fast_append_files

logger = logging.getLogger(__name__)


PARALLEL_MIN_ROWS_PER_FILE = 131_072  # below this, one file beats parallel small ones


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


def append_atomically(table: Table, data: pa.Table, properties: dict[str, str]) -> None:
    """Append ``data`` as one snapshot carrying ``properties`` in its summary, and the merged
    ledger in the table's properties, in one commit.

    The steps of pyiceberg's ``Transaction.append`` (schema check, data files written in
    parallel, fast append, one commit) with partitions split by ``_partition_runs``.
    """
    from pyiceberg.table import TableProperties
    from pyiceberg.utils.properties import property_as_int

    metadata = table.metadata
    check_schema_compatible(metadata, data.schema)
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
    ledger = ledger_update(table, properties)
    try:
        with MetadataOnceTransaction(table) as tx:
            if ledger.properties:
                tx.set_properties(ledger.properties)
            files = (
                (key, batches)
                for key, piece in _partition_runs(table, data)
                for batches in _file_batches(piece, rows_per_file)
            )
            fast_append_files(tx, properties, files, task_schema)
    except BaseException:
        ledger.abandoned(table)
        raise
    ledger.committed(table)


def record_without_data(table: Table, properties: dict[str, str], summary: dict[str, str]) -> None:
    """One commit that sets ``properties`` and records ``summary`` in an empty snapshot: a
    decision about the table (an accepted offset reset) kept in its history like a load.
    Raises ``CommitFailedException`` when another writer committed first (reload and retry)."""
    with MetadataOnceTransaction(table) as tx:
        tx.set_properties(properties)
        fast_append_files(tx, summary, [], table.schema())


def replace_rows(table: Table, where: BooleanExpression, rows: pa.Table, summary: dict[str, str]) -> None:
    """One commit that replaces the rows matching ``where`` with ``rows`` (copy-on-write: the
    data files holding matches are rewritten without them). ``rows`` are meant to be computed
    from the matches as ``table`` holds them: a conflicting writer is not rebased onto (it may
    have changed those rows), it raises ``CommitFailedException`` (reload, read and retry)."""
    import warnings

    with warnings.catch_warnings():  # nothing matched: the rows were deleted meanwhile
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        with MetadataOnceTransaction(table) as tx:
            tx.overwrite(rows, overwrite_filter=where, snapshot_properties=summary)
