"""`lakehouse sql` as Trino-CLI and psql users expect: formats, several statements, files and
stdin, the interactive shell, and the warm query server that answers one-shot queries."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import random
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from lakehouse import Lakehouse
from lakehouse.cli._format import Format, cell_width, render
from lakehouse.cli._sql import complete

from .conftest import LAKEHOUSE_BIN, QUERY_SERVER_ENV, run_cli

CONTROL = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]]


def _sample(seed: int, rows: int = 40) -> pa.Table:
    rng = random.Random(seed)
    alphabet = ["a", "Z", " ", "|", ",", '"', "'", "é", "漢", "\u0301", *CONTROL]
    return pa.table(
        {
            "id": list(range(rows)),
            "text": [
                None
                if rng.random() < 0.1
                else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
                for _ in range(rows)
            ],
            "amount": pa.array([rng.randint(-(10**6), 10**6) / 100 for _ in range(rows)], pa.float64()),
        }
    )


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(8))
def test_table_and_markdown_never_print_a_control_character(seed: int) -> None:
    result = _sample(seed)
    for fmt in (Format.table, Format.markdown):
        for width in (None, 20, 200):
            text = render(result, fmt, width=width)
            assert not any(c in text for c in CONTROL if c != "\n"), (fmt, width)


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(4))
def test_data_formats_round_trip_every_value(seed: int) -> None:
    result = _sample(seed)
    expected = result.to_pylist()
    assert [json.loads(line) for line in render(result, Format.jsonl).splitlines()] == expected
    assert json.loads(render(result, Format.json)) == expected
    for fmt, delimiter in ((Format.csv, ","), (Format.tsv, "\t")):
        rows = list(csv.DictReader(io.StringIO(render(result, fmt), newline=""), delimiter=delimiter))
        assert [r["text"] for r in rows] == [r["text"] or "" for r in expected], fmt
        assert [float(r["amount"]) for r in rows] == [r["amount"] for r in expected]


@pytest.mark.unit
def test_table_aligns_columns_by_terminal_cells_and_caps_rows() -> None:
    result = pa.table({"name": ["漢字", "ab", None], "n": [1, 22, 333]})
    lines = render(result, Format.table, width=80).splitlines()
    assert lines[-1] == "(3 rows)"
    body = lines[:-1]
    assert len({cell_width(line.rstrip()) for line in body[2:]} | {cell_width(body[0])}) <= 2
    assert body[2].startswith(" 漢字 |") and body[4].startswith(" NULL |")
    assert body[2].endswith("   1") and body[4].endswith(" 333")  # numbers right-aligned
    capped = render(pa.table({"i": list(range(2500))}), Format.table, max_rows=1000).splitlines()
    assert len(capped) == 2 + 1000 + 1 and "(2,500 rows; the first 1,000 shown" in capped[-1]
    assert len(render(pa.table({"i": list(range(2500))}), Format.table, max_rows=0).splitlines()) == 2503


@pytest.mark.unit
def test_rows_wider_than_the_terminal_are_shown_vertically_and_never_cut_when_piped() -> None:
    wide = pa.table({f"column_{i}": [f"value {i} " * 3] for i in range(12)})
    vertical = render(wide, Format.table, width=80)
    assert vertical.startswith("-[ row 1 ]")
    assert all(cell_width(line) <= 80 for line in vertical.splitlines())
    assert "column_11 | value 11 value 11 value 11" in vertical
    piped = render(wide, Format.table, width=None).splitlines()
    assert piped[0].split(" | ")[-1].strip() == "column_11" and "value 11 value 11 value 11" in piped[2]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("select 1;", True),
        ("select 1", False),
        ("select ';'", False),
        ("select ';';", True),
        ("select 1 -- a comment;", False),
        ("select 1; -- done", True),
        ("select /* ; */ 1", False),
        ('select 1 as "a;"', False),
        ("select 'it''s';", True),
        ("select 1;\n  ", True),
    ],
)
def test_the_shell_knows_when_a_statement_ends(text: str, ends: bool) -> None:
    assert complete(text) is ends


def _server_env(**extra: str) -> dict[str, str]:
    return {QUERY_SERVER_ENV: "on", **extra}


def _wait_for(path: Path, present: bool = True, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists() is not present:
        assert time.monotonic() < deadline, f"{path} {'never appeared' if present else 'stayed'}"
        time.sleep(0.1)


@pytest.fixture
def short_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a Unix socket's path holds 108 bytes: pytest's temporary paths can be longer
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="lh-"))
    return path / "home"


@pytest.mark.integration
def test_query_server_answers_like_the_command_itself_and_only_under_the_callers_settings(
    built_home: Path, short_home: Path
) -> None:
    import shutil

    shutil.copytree(built_home, short_home)
    sock = short_home / "state" / "query.sock"
    queries = [
        "select store_id, count(*) as n from gold.fct_sales group by 1 order by 1",
        "select 1 as a; select 'x;y' as b",
        "select current_setting('threads') as threads",
    ]
    direct = {
        (q, fmt): run_cli("sql", q, "-o", fmt, home=short_home).stdout
        for q in queries
        for fmt in ("table", "csv", "jsonl")
    }
    assert not sock.exists()  # the server is off unless asked for
    first = run_cli("sql", "select 1", home=short_home, env=_server_env())
    assert first.returncode == 0, first.stderr
    _wait_for(sock)
    try:
        for (query, fmt), expected in direct.items():
            served = run_cli("sql", query, "-o", fmt, home=short_home, env=_server_env())
            assert served.returncode == 0, served.stderr
            assert served.stdout == expected, (query, fmt)
        # an error: one message, exit 1, from the server as from the command
        wrong = run_cli("sql", "select * from gold.fct_sale", home=short_home, env=_server_env())
        assert wrong.returncode == 1 and "did you mean gold.fct_sales" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        # other settings: the server makes way and the query runs under the caller's settings
        other = run_cli(
            "sql",
            "select current_setting('threads') as t",
            "-o",
            "csv",
            home=short_home,
            env=_server_env(LAKEHOUSE_ENGINE__THREADS="1"),
        )
        assert other.stdout.splitlines() == ['"t"', "1"], other.stderr
        again = run_cli(
            "sql", "select current_setting('threads') as t", "-o", "csv", home=short_home, env=_server_env()
        )
        assert again.stdout.splitlines() == ['"t"', "2"]
        # what a served query commits is seen by the next one (views re-bound to the new snapshot)
        with _lakehouse(short_home) as lh:
            before = lh.sql("select count(*) as n from bronze.regions").column("n")[0].as_py()
        _wait_for(sock)
        served = run_cli(
            "sql", "select count(*) from bronze.regions", "-o", "csv", home=short_home, env=_server_env()
        )
        assert served.stdout.splitlines()[1] == str(before)
        with _lakehouse(short_home) as lh:
            rows = lh.table("bronze.regions").scan().to_arrow().slice(0, 1)
            lh.table("bronze.regions").append(rows)
        served = run_cli(
            "sql", "select count(*) from bronze.regions", "-o", "csv", home=short_home, env=_server_env()
        )
        assert served.stdout.splitlines()[1] == str(before + 1)
    finally:
        sock.unlink(missing_ok=True)  # the server stops within a second once its socket is gone
    time.sleep(2)
    # every served query is in the audit log under the operator, committed when it stopped
    with _lakehouse(short_home) as lh:
        lh.flush_audit()
        logged = [r["query"] for r in lh.sql("select query from audit.query_log").to_pylist()]
    assert logged.count("select 'x;y' as b") >= 4  # 3 formats directly, 3 served: each audited
    assert "select * from gold.fct_sale" in logged
    assert list((short_home / "state").glob("query.sock")) == []


def _lakehouse(home: Path) -> Lakehouse:
    from lakehouse.config import Settings

    return Lakehouse(Settings(home=home))


@pytest.mark.integration
def test_file_stdin_and_several_statements(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "q.sql"
    script.write_text("select 1 as a;\n-- a comment; still one statement\nselect 'b;' as b;\n")
    from_file = run_cli("sql", "-f", str(script), "-o", "jsonl", home=home)
    assert from_file.stdout.splitlines() == ['{"a": 1}', '{"b": "b;"}'], from_file.stderr
    piped = subprocess.run(
        [LAKEHOUSE_BIN, "sql", "-", "-o", "csv"],
        input="select 2 as c; select 3 as d",
        capture_output=True,
        text=True,
        env={**os.environ, "LAKEHOUSE_HOME": str(home), QUERY_SERVER_ENV: "off"},
        timeout=300,
    )
    assert piped.stdout.splitlines() == ['"c"', "2", '"d"', "3"], piped.stderr
    both = run_cli("sql", "select 1", "-f", str(script), home=home)
    assert both.returncode == 2 and "not both" in both.stderr
    missing = run_cli("sql", "-f", str(tmp_path / "nope.sql"), home=home)
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.integration
def test_interactive_shell(built_home: Path) -> None:
    """A real terminal: multi-line statements, \\d, \\o, an error that does not end the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env.update(LAKEHOUSE_HOME=str(built_home), QUERY_SERVER_ENV="off", TERM="dumb", COLUMNS="200")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell on the pty
        os.execve(LAKEHOUSE_BIN, [LAKEHOUSE_BIN, "sql"], env)  # noqa: S606
    output = b""

    def read_until(done: Callable[[], bool], timeout: float = 180.0) -> None:
        """Read the terminal until ``done()``, or until the shell has exited."""
        nonlocal output
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the shell exited and closed the terminal
                    return
                if not chunk:
                    return
                output += chunk

    try:
        read_until(lambda: b"lakehouse> " in output)
        for line in [
            "select store_id",
            "from gold.dim_store",
            "order by 1 limit 2;",
            "select * from gold.nope;",
            "\\o csv",
            "select 40 + 2 as answer;",
            "\\d gold.dim_store",
            "\\d",
            "\\q",
        ]:
            prompts = output.count(b"> ")
            os.write(fd, line.encode() + b"\n")
            # the next prompt: the line was taken and its result printed (\q: the shell exits)
            read_until(lambda n=prompts: output.count(b"> ") > n)  # type: ignore[misc]
        read_until(lambda: False)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = output.decode(errors="replace")
    assert "       ...> " in text  # the statement went on over three lines
    assert "S001" in text and "(2 rows)" in text
    assert "no table gold.nope" in text, text  # the error printed, and the shell went on
    assert '"answer"\r\n42' in text
    assert "store_id" in text and "VARCHAR" in text  # \d TABLE describes it
    assert "gold.fct_sales" in text  # \d lists the tables
    assert os.waitstatus_to_exitcode(status) == 0
