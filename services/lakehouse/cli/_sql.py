"""``lakehouse sql``: one query, a file (``-f``), standard input (``-``), or an interactive shell.

Each statement's result is printed in turn (``--output`` table, csv, tsv, json, jsonl,
markdown). A one-shot operator query normally never reaches this module: the light entry point
(``_entry``) hands it to the warm query server; this is the path when there is none yet, for
``--as USER`` and for the shell.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape as markup_escape

from lakehouse.config import Settings
from lakehouse.errors import LakehouseError

from ._app import app, err
from ._format import DEFAULT_MAX_ROWS, Format, escape, render

if TYPE_CHECKING:
    from lakehouse._api import Lakehouse


def terminal_width() -> int | None:
    """The terminal's columns when stdout is one; None when piped (results are then not cut)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def query_text(query: str | None, file: Path | None) -> str | None:
    """The SQL to run: the argument, a file, or standard input (``-``, or a pipe with no query);
    None for the interactive shell."""
    if query is not None and file is not None:
        raise typer.BadParameter("give a query or --file, not both")
    if file is not None:
        try:
            return file.read_text()
        except OSError as exc:
            raise LakehouseError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if query == "-" or (query is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    return query


def print_statements(lh: Lakehouse, query: str, schema: str | None, fmt: Format, max_rows: int) -> None:
    """Run each statement and print its result as soon as it is there."""
    width = terminal_width()
    first = True
    for _, result in lh.sql_each(query, schema=schema):
        text = render(result, fmt, width=width, max_rows=max_rows)
        if text:
            if not first and fmt in (Format.table, Format.markdown):
                sys.stdout.write("\n")
            sys.stdout.write(text)
            sys.stdout.flush()
            first = False


@app.command()
def sql(
    query: Annotated[
        str | None,
        typer.Argument(
            help="SQL over every layer (tables are layer.table); several statements run in turn; "
            "- reads standard input; none starts the interactive shell",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Run the SQL in this file", show_default=False)
    ] = None,
    schema: Annotated[
        str | None, typer.Option("--schema", help="Default layer for unqualified names")
    ] = None,
    output: Annotated[Format, typer.Option("--output", "-o", help="Result format")] = Format.table,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=0, help="Rows the table format shows (0: all)")
    ] = DEFAULT_MAX_ROWS,
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="Run as this user of policies/: only granted rows, masked columns"),
    ] = None,
) -> None:
    """Run SQL in the embedded engine: a query, a file, standard input, or an interactive shell."""
    from lakehouse._api import Lakehouse

    text = query_text(query, file)
    with Lakehouse(Settings.load(), user=as_user) as lh:
        if text is None:
            Shell(lh, schema=schema, fmt=output, max_rows=max_rows).run()
        elif text.strip():
            print_statements(lh, text, schema, output, max_rows)
        else:
            raise typer.BadParameter("the query is empty")


HELP = """\
  Statements end with ';' and may span lines. Results: --output of the command, or \\o FORMAT.
  \\d            the tables you may read
  \\d TABLE      a table's columns and types
  \\o FORMAT     table, csv, tsv, json, jsonl or markdown
  \\q            quit (or Ctrl-D); Ctrl-C drops the statement being typed
"""


class Shell:
    """An interactive SQL prompt with history (``readline``), multi-line statements and a few
    backslash commands, on one handle: a policy-bound user's session stays warm between queries."""

    def __init__(self, lh: Lakehouse, *, schema: str | None, fmt: Format, max_rows: int) -> None:
        self.lh, self.schema, self.fmt, self.max_rows = lh, schema, fmt, max_rows

    def run(self) -> None:
        history = self._history()
        who = f" as {self.lh.user}" if self.lh.user else ""
        err.print(f"lakehouse sql{who}: statements end with ';', \\? for help, \\q to quit", highlight=False)
        buffer: list[str] = []
        while True:
            try:
                line = input("lakehouse> " if not buffer else "       ...> ")
            except EOFError:
                sys.stdout.write("\n")
                break
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                buffer = []
                continue
            if not buffer and line.strip().startswith("\\"):
                if not self._command(line.strip()):
                    break
                continue
            buffer.append(line)
            text = "\n".join(buffer)
            if complete(text):
                buffer = []
                self._run(text)
        if history is not None:
            self._save_history(history)

    def _run(self, text: str) -> None:
        try:
            print_statements(self.lh, text, self.schema, self.fmt, self.max_rows)
        except LakehouseError as exc:
            message = "\n".join(escape(line) for line in str(exc).splitlines())
            err.print(f"[red]error:[/red] {markup_escape(message)}", highlight=False)
        except KeyboardInterrupt:
            err.print("cancelled", highlight=False)

    def _command(self, line: str) -> bool:
        """A backslash command; False to quit."""
        word, _, arg = line.partition(" ")
        arg = arg.strip()
        if word in ("\\q", "\\quit"):
            return False
        if word == "\\?":
            sys.stdout.write(HELP)
        elif word == "\\o":
            try:
                self.fmt = Format(arg)
            except ValueError:
                err.print(f"error: no format {arg!r}: {', '.join(f.value for f in Format)}", highlight=False)
        elif word == "\\d" and not arg:
            import pyarrow as pa

            infos = self.lh.tables()
            listing = pa.table(
                {
                    "table": [f"{i.layer}.{i.table}" for i in infos],
                    "rows": [i.rows for i in infos],
                    "last_commit": [i.last_commit for i in infos],
                }
            )
            sys.stdout.write(render(listing, Format.table, width=terminal_width(), max_rows=0))
        elif word == "\\d":
            self._run(f"describe {arg}")
        else:
            err.print(f"error: unknown command {word}: \\? lists them", highlight=False)
        return True

    def _history(self) -> Path | None:
        try:
            import readline
        except ImportError:  # no readline on this Python: a plain prompt
            return None
        from lakehouse.config import private_dir

        path = private_dir(self.lh.settings.state_dir) / "sql_history"
        if path.exists():
            with contextlib.suppress(OSError):
                readline.read_history_file(path)
        return path

    def _save_history(self, path: Path) -> None:
        import readline

        readline.set_history_length(1000)
        try:
            readline.write_history_file(path)
            path.chmod(0o600)
        except OSError:
            pass


def complete(text: str) -> bool:
    """Whether ``text`` ends a statement: a ';' last, outside quotes and comments."""
    in_single = in_double = in_block = in_line = False
    last = ""
    i = 0
    while i < len(text):
        c, nxt = text[i], text[i + 1 : i + 2]
        if in_line:
            in_line = c != "\n"
        elif in_block:
            if c == "*" and nxt == "/":
                in_block, i = False, i + 1
        elif in_single:
            in_single = c != "'"
        elif in_double:
            in_double = c != '"'
        elif c == "-" and nxt == "-":
            in_line = True
        elif c == "/" and nxt == "*":
            in_block, i = True, i + 1
        elif c == "'":
            in_single = True
        elif c == '"':
            in_double = True
        elif not c.isspace():
            last = c
        i += 1
    return last == ";" and not (in_single or in_double or in_block)
