"""Fitting received rows to a table's schema, with errors that name the file, column and row."""

from __future__ import annotations

import logging
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.errors import SchemaMismatchError

logger = logging.getLogger(__name__)


# --- validation ------------------------------------------------------------------------------

Format = Literal["parquet", "csv", "jsonl"]  # the file formats a load reads


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
