"""Query results as text: an aligned table (vertical when rows are wider than the terminal),
CSV, TSV, JSON, JSON lines or Markdown.

Shared by ``lakehouse sql``, its interactive shell and the query server, so a result looks the
same whichever ran it. Data is escaped where a terminal would interpret it (table, Markdown):
a value holding an escape sequence is printed, never executed by the terminal.
"""

from __future__ import annotations

import io
import json
import unicodedata
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class Format(StrEnum):
    table = "table"
    csv = "csv"
    tsv = "tsv"
    json = "json"
    jsonl = "jsonl"
    markdown = "markdown"


DEFAULT_MAX_ROWS = 1000  # rows the table format shows before it says how many it left out


# control characters (C0, DEL, C1) shown as escapes: \n, \t, \x1b
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPES.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def escape(text: str) -> str:
    return text.translate(_ESCAPES) if not text.isprintable() else text


def cell_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text
    )


def render(
    result: pa.Table,
    fmt: Format,
    *,
    width: int | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> str:
    """``result`` as text in ``fmt``. ``width``: the terminal's columns (None: unbounded, as
    when piped). ``max_rows``: the table format's cap (None or 0: every row)."""
    if fmt is Format.csv or fmt is Format.tsv:
        return _delimited(result, "," if fmt is Format.csv else "\t")
    if fmt is Format.json:
        return _json(result.to_pylist()) + "\n"
    if fmt is Format.jsonl:
        return "".join(_json(row) + "\n" for row in result.to_pylist())
    if fmt is Format.markdown:
        return _markdown(result)
    return _table(result, width=width, max_rows=max_rows or None)


# characters that some readers take for line ends: escaped, so one JSON line stays one line
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False).translate(_LINE_BREAKS)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # decimals, dates, times: their exact text


def _delimited(result: pa.Table, delimiter: str) -> str:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if result.num_columns == 0:
        return ""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(result, sink, pacsv.WriteOptions(delimiter=delimiter))
    return bytes(sink.getvalue().to_pybytes()).decode()


def _strings(result: pa.Table, rows: int) -> list[list[str]]:
    """Each column's first ``rows`` values as text, NULL for null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in result.slice(0, rows).columns:
        try:
            values = pc.cast(column, pa.string()).to_pylist()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            values = [None if v is None else str(v) for v in column.to_pylist()]
        columns.append(["NULL" if v is None else escape(v) for v in values])
    return columns


def _numeric(result: pa.Table) -> list[bool]:
    import pyarrow as pa

    return [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in result.schema.types
    ]


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - cell_width(text))
    return fill + text if right else text + fill


def _count(n: int) -> str:
    return f"({n:,} row{'' if n == 1 else 's'})"


def _table(result: pa.Table, *, width: int | None, max_rows: int | None) -> str:
    if result.num_columns == 0:
        return ""
    shown = result.num_rows if max_rows is None else min(result.num_rows, max_rows)
    names = [escape(n) for n in result.column_names]
    columns = _strings(result, shown)
    numeric = _numeric(result)
    widths = [
        max([cell_width(n), *(cell_width(v) for v in col)]) for n, col in zip(names, columns, strict=True)
    ]
    total = sum(widths) + 3 * len(widths) - 1
    out = io.StringIO()
    if width is not None and total > width and shown:
        _vertical(out, names, columns, shown)
    else:
        out.write(
            " " + " | ".join(_pad(n, w, False) for n, w in zip(names, widths, strict=True)).rstrip() + "\n"
        )
        out.write("-" + "-+-".join("-" * w for w in widths) + "-\n")
        for i in range(shown):
            cells = (_pad(col[i], w, r) for col, w, r in zip(columns, widths, numeric, strict=True))
            out.write((" " + " | ".join(cells)).rstrip() + "\n")
    if shown < result.num_rows:
        out.write(
            f"({result.num_rows:,} rows; the first {shown:,} shown: --max-rows 0 shows every row, "
            "-o csv writes them all)\n"
        )
    else:
        out.write(_count(result.num_rows) + "\n")
    return out.getvalue()


def _vertical(out: io.StringIO, names: list[str], columns: list[list[str]], shown: int) -> None:
    """One block per row, a line per column (psql's expanded mode): any width stays readable."""
    label = max(cell_width(n) for n in names)
    for i in range(shown):
        out.write(f"-[ row {i + 1} ]" + "-" * max(0, label - 6) + "\n")
        for name, col in zip(names, columns, strict=True):
            out.write(f"{_pad(name, label, False)} | {col[i]}\n")


def _markdown(result: pa.Table) -> str:
    if result.num_columns == 0:
        return ""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    columns = _strings(result, result.num_rows)
    lines = [
        "| " + " | ".join(cell(escape(n)) for n in result.column_names) + " |",
        "| " + " | ".join("---:" if r else "---" for r in _numeric(result)) + " |",
    ]
    for i in range(result.num_rows):
        lines.append("| " + " | ".join(cell(col[i]) for col in columns) + " |")
    return "\n".join(lines) + "\n"
