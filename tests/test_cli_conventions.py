"""Commands as their users expect them (issue 11): `lakehouse dbt` is dbt (its help, version, log
levels and usage errors; `compile --target trino` offline), `make clean` removes the configured
home and nothing else, the demo reruns where a customer was forgotten, CSV decimals stay
decimals (`load --schema` for the rest), and `generate` shows progress on a terminal only."""

from __future__ import annotations

import decimal
import io
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from rich.console import Console

from lakehouse import Lakehouse, LoadError, Settings
from lakehouse.cli import _data, _main
from lakehouse.ingest import load_files
from lakehouse.ingest._files import (
    INFERRED_DECIMAL_PRECISION,
    file_schema,
    fixed_scale_decimal,
    parse_schema,
)
from lakehouse.transform import _dbt

from .conftest import REPO, run_cli

# --- the command line, run in this process ------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """`lakehouse ARGS` through its entry point in this process, with the repository's project;
    restores what the entry point sets for the process (umask, logging)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAKEHOUSE_PROJECT_DIR", str(REPO))
    root = logging.getLogger()

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["lakehouse", *args])
        umask = os.umask(0o077)
        os.umask(umask)
        handlers, level = list(root.handlers), root.level
        formatters = [h.formatter for h in handlers]
        code = 0
        try:
            _main.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.umask(umask)
            root.handlers[:] = handlers
            root.setLevel(level)
            for handler, formatter in zip(handlers, formatters, strict=True):
                handler.setFormatter(formatter)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


# --- lakehouse dbt: dbt's own command line ------------------------------------------------------


@pytest.mark.unit
def test_the_wrapper_hands_dbt_its_arguments_untouched() -> None:
    settings = Settings()
    env = _dbt.dbt_env(settings)
    project = str(Path(env["DBT_PROJECT_DIR"]))
    assert env["DBT_PROFILES_DIR"] == project and Path(project, "dbt_project.yml").is_file()
    # the project by dbt's environment variables: `dbt --version` takes no --project-dir
    command = _dbt.dbt_command(settings, ["--version"])
    assert command[-1] == "--version" and "--project-dir" not in command and "--profiles-dir" not in command
    # the subcommand and target are found wherever dbt allows them
    assert _dbt.subcommand(["--log-level", "warn", "build", "--select", "x"]) == "build"
    assert _dbt.subcommand(["--version"]) is None
    for args in (["compile", "--target", "trino"], ["compile", "--target=trino"], ["-t", "trino", "compile"]):
        assert _dbt.target_of(args) == "trino", args
    assert _dbt.target_of(["-ttrino"]) == "trino" and _dbt.target_of(["build"]) is None
    # typer keeps no --help of its own for `lakehouse dbt`: dbt's help answers
    import typer

    dbt_command = typer.main.get_command(_data.app).commands["dbt"]  # type: ignore[attr-defined]
    assert dbt_command.get_help_option(dbt_command.make_context("dbt", [])) is None


@pytest.mark.integration
@pytest.mark.dbt
def test_help_version_and_usage_errors_are_dbts(tmp_path: Path) -> None:
    home, env = tmp_path / "home", {"LAKEHOUSE_PROJECT_DIR": str(REPO)}
    top = run_cli("dbt", "--help", home=home, env=env)
    assert top.returncode == 0, top.stderr
    assert "Usage: lakehouse dbt [OPTIONS] [COMMAND] [ARGS]..." in top.stdout
    assert "--log-level" in top.stdout and "build" in top.stdout  # dbt's options and commands
    build = run_cli("dbt", "build", "--help", home=home, env=env)
    assert build.returncode == 0 and "Usage: lakehouse dbt build [OPTIONS]" in build.stdout
    assert "Run all seeds, models, snapshots, and tests in DAG order" in build.stdout
    version = run_cli("dbt", "--version", home=home, env=env)  # failed: --project-dir was added
    assert version.returncode == 0, version.stdout + version.stderr
    assert "installed: 1.11" in version.stdout and "duckdb" in version.stdout
    unknown = run_cli("dbt", "nosuch", home=home, env=env)
    assert unknown.returncode == 2
    assert "No such command 'nosuch'" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.integration
@pytest.mark.dbt
def test_readme_trino_compile_needs_no_server_and_keeps_dbts_log_level(tmp_path: Path) -> None:
    """The README's `lakehouse dbt compile --target trino`, with no Trino anywhere (the profile's
    host `trino` does not resolve): no relation cache to fill, so no connection. `--quiet` is
    dbt's: nothing on the terminal, not even the trino client's INFO lines."""
    home = tmp_path / "home"
    env = {"LAKEHOUSE_PROJECT_DIR": str(REPO), "TRINO_HOST": "trino.invalid"}
    result = run_cli("dbt", "compile", "--target", "trino", "--quiet", home=home, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
    compiled = home / "dbt" / "trino" / "target" / "compiled" / "lakehouse" / "models"
    assert '"iceberg"."silver"."int_order_lines"' in (compiled / "gold" / "fct_sales.sql").read_text()


@pytest.mark.integration
@pytest.mark.dbt
def test_a_second_run_parses_only_what_changed(tmp_path: Path) -> None:
    """Each run staged in a new directory named in the profile, so dbt found the profile changed
    and parsed the whole project every time (seconds per command)."""
    home, env = tmp_path / "home", {"LAKEHOUSE_PROJECT_DIR": str(REPO)}
    for _ in range(2):
        result = run_cli("dbt", "parse", "--quiet", home=home, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (home / "dbt" / "local" / "logs" / "dbt.log").read_text()
    second = log[log.rindex("Running with dbt") :]
    assert "Nothing changed, skipping partial parsing" in second, second[:3000]
    assert "profile has changed" not in log
    assert list((home / "state" / "dbt-staging").iterdir()) == []  # no staging copy outlives a run


# --- make clean -----------------------------------------------------------------------------------


def _make_clean(cwd: Path, lakehouse_home: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_HOME"}
    if lakehouse_home is not None:
        env["LAKEHOUSE_HOME"] = lakehouse_home
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "clean"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
def test_make_clean_removes_the_configured_home_and_nothing_else(tmp_path: Path) -> None:
    work = tmp_path / "checkout"  # the Makefile's directory stands in for a checkout
    (work / "dbt" / "target").mkdir(parents=True)
    (work / "dbt" / "logs").mkdir()
    home = tmp_path / "elsewhere" / "home"
    (home / "state").mkdir(parents=True)
    (home / "catalog.db").write_text("")
    done = _make_clean(work, str(home))
    assert done.returncode == 0, done.stderr
    assert (
        not home.exists() and not (work / "dbt" / "target").exists() and not (work / "dbt" / "logs").exists()
    )

    default = work / ".lakehouse"  # LAKEHOUSE_HOME unset: the checkout's .lakehouse
    (default / "state").mkdir(parents=True)
    assert _make_clean(work, None).returncode == 0 and not default.exists()

    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_text("meow")
    refused = _make_clean(work, str(stranger))
    assert refused.returncode != 0 and "not a lakehouse home" in refused.stderr
    assert (stranger / "cat.jpg").exists()

    for dangerous, why in (
        ("", "is empty"),
        ("/", "refusing"),
        (str(Path.home()), "refusing"),
        (str(Path.home()) + "/.", "refusing"),
        (str(tmp_path), "holds this repository"),  # an ancestor of the checkout
    ):
        result = _make_clean(work, dangerous)
        assert result.returncode != 0 and why in result.stderr, (dangerous, result.stderr)
    assert (stranger / "cat.jpg").exists() and work.exists()
    assert _make_clean(work, str(tmp_path / "never-made")).returncode == 0  # nothing to remove


# --- generate and demo: a scale above 0, progress on a terminal -------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("command", ["generate", "demo"])
@pytest.mark.parametrize("scale", ["-1", "0", "-0.0", "nan", "inf", "1e-400"])
def test_a_scale_that_is_not_above_zero_is_a_usage_error(
    cli: Callable[..., Result], command: str, scale: str
) -> None:
    result = cli(command, "--scale", scale, "--out" if command == "generate" else "--seed", "1")
    assert result.code == 2, result
    assert "Invalid value for '--scale'" in result.err and "greater than 0" in result.err
    assert "Traceback" not in result.err + result.out


@pytest.mark.unit
@pytest.mark.parametrize("terminal", [True, False])
def test_generate_shows_progress_on_a_terminal_only(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, terminal: bool
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(_data, "err", Console(file=screen, force_terminal=terminal, width=120))
    result = cli("generate", "--scale", "0.02", "--out", str(tmp_path / "out"))
    assert result.code == 0, result
    assert len(list((tmp_path / "out").glob("*.parquet"))) == 12
    drawn = screen.getvalue()
    if terminal:
        assert "generated sensor_readings" in drawn and "wrote shipments" in drawn and "24/24" in drawn
    else:
        assert drawn == ""


# --- CSV decimals and --schema --------------------------------------------------------------------


def _decimal_text(rng: random.Random, digits: int, scale: int, negative: bool) -> str:
    whole = str(rng.randrange(10 ** max(digits - scale - 1, 0), 10 ** max(digits - scale, 1)))
    fraction = "".join(rng.choice("0123456789") for _ in range(scale))
    return f"{'-' if negative and rng.random() < 0.5 else ''}{whole}.{fraction}"


def _decimal_variants() -> list[tuple[int, int, bool, bool]]:
    """(digits, scale, with negatives, with blanks), generated from one seed."""
    rng = random.Random(11)
    variants = [
        (digits, scale, neg, blanks)
        for scale in (1, 2, 3, 4, 6)
        for neg in (False, True)
        for blanks in (False, True)
        for digits in (scale + 1, scale + rng.randrange(2, 12))
    ]
    variants += [
        (38, 2, True, True),
        (38, 37, False, False),
        (24, 4, True, False),
    ]  # beyond 64 bits, up to 38
    return variants


@pytest.mark.unit
@pytest.mark.parametrize(("digits", "scale", "negative", "blanks"), _decimal_variants())
def test_csv_text_with_one_scale_is_a_decimal(
    tmp_path: Path, digits: int, scale: int, negative: bool, blanks: bool
) -> None:
    rng = random.Random(digits * 100 + scale)
    values = [_decimal_text(rng, digits, scale, negative) for _ in range(200)]
    values[0] = f"{'-' if negative else ''}{'9' * (digits - scale)}.{'9' * scale}"  # every digit used
    lines = [f"{i},{v}" for i, v in enumerate(values)]
    if blanks:
        lines += [f"{len(lines)},", f"{len(lines) + 1},NULL", f"{len(lines) + 2},NA"]
    path = tmp_path / "amounts.csv"
    path.write_text("id,amount\n" + "\n".join(lines) + "\n")
    expected = pa.decimal128(max(digits, INFERRED_DECIMAL_PRECISION), scale)
    assert file_schema(path, "csv").field("amount").type == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    "values",
    [
        ["1.5", "2.25"],  # mixed scales: a measurement, not an amount
        ["1", "2.50"],  # an integer among them is another scale
        ["1.5e3", "2.5e1"],  # exponents
        ["1" * 37 + ".50", "2.50"],  # 39 digits: beyond DECIMAL(38)
        ["nan", "1.50"],
        ["inf", "1.50"],
        ["0.1", "-0.25"],
    ],
    ids=["mixed", "integer", "exponent", "39-digits", "nan", "inf", "mixed-negative"],
)
def test_csv_text_without_one_scale_stays_double(tmp_path: Path, values: list[str]) -> None:
    path = tmp_path / "m.csv"
    path.write_text("x\n" + "\n".join(values) + "\n")
    assert not pa.types.is_decimal(file_schema(path, "csv").field("x").type)
    assert fixed_scale_decimal(pa.array(values, pa.string())) is None


@pytest.mark.unit
def test_csv_create_keeps_amounts_exact(lh: Lakehouse, tmp_path: Path) -> None:
    """`--create` made 1.50 a DOUBLE: sums of amounts drifted (0.1 + 0.2)."""
    rng = random.Random(5)
    amounts = [_decimal_text(rng, 8, 2, True) for _ in range(1000)] + ["0.10", "0.20"]
    path = tmp_path / "sales.csv"
    path.write_text("id,amount,ratio\n" + "".join(f"{i},{a},{i / 7}\n" for i, a in enumerate(amounts)))
    lh.load("bronze.sales_upload", [path], create=True)
    table = lh.table("bronze.sales_upload").scan().to_arrow().sort_by("id")
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert table.schema.field("ratio").type == pa.float64()  # measurements stay doubles
    assert table.column("amount").to_pylist() == [decimal.Decimal(a) for a in amounts]
    total = lh.sql("select sum(amount) as total from bronze.sales_upload").column(0)[0].as_py()
    assert total == sum(decimal.Decimal(a) for a in amounts)


@pytest.mark.unit
def test_schema_option_parses_types_and_names_the_bad_part() -> None:
    assert parse_schema("amount=decimal(10,2),day=date") == {
        "amount": pa.decimal128(10, 2),
        "day": pa.date32(),
    }
    assert parse_schema(" n = BIGINT , at=timestamptz,flag=boolean,note=string") == {
        "n": pa.int64(),
        "at": pa.timestamp("us", tz="UTC"),
        "flag": pa.bool_(),
        "note": pa.string(),
    }
    for text, named in (
        ("amount=money", "'amount=money'"),
        ("amount", "'amount'"),
        ("=int", "'=int'"),
        ("amount=", "'amount='"),
        ("amount=decimal(39,2)", "'amount=decimal(39,2)'"),
        ("amount=decimal(5,6)", "'amount=decimal(5,6)'"),
        ("a=int,,b=date", "empty entry"),
        ("a=int,a=long", "named twice"),
    ):
        with pytest.raises(LoadError) as raised:
            parse_schema(text)
        assert named in str(raised.value), (text, str(raised.value))


@pytest.mark.unit
def test_a_bad_schema_option_is_a_usage_error(cli: Callable[..., Result], tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("id,amount\n1,1.5\n")
    result = cli("load", "bronze.prices", str(csv), "--create", "--schema", "id=int,amount=money")
    assert result.code == 2, result
    assert "Invalid value for '--schema'" in result.err and "'amount=money'" in result.err
    assert "Traceback" not in result.err


@pytest.mark.unit
def test_schema_option_types_a_new_table_and_must_agree_with_an_existing_one(
    cli: Callable[..., Result], tmp_path: Path, home: Path
) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("id,amount,day\n1,1.5,2026-03-02\n2,2.25,2026-03-03\n")
    done = cli(
        "load", "bronze.prices", str(csv), "--create", "--schema", "amount=decimal(10,2),id=int", "-o", "json"
    )
    assert done.code == 0, done
    assert json.loads(done.out)["rows"] == 2
    with Lakehouse(Settings(home=home)) as lh:
        schema = lh.table("bronze.prices").scan().to_arrow().schema
        assert schema.field("amount").type == pa.decimal128(10, 2) and schema.field("id").type == pa.int32()
        assert schema.field("day").type == pa.date32()  # inferred where --schema says nothing
        other = tmp_path / "q.csv"
        other.write_text("id,amount,day\n3,3.75,2026-03-04\n")
        with pytest.raises(
            LoadError, match=r"column 'amount' of bronze.prices is decimal\(10,2\), --schema says double"
        ):
            load_files(
                lh.catalog, "bronze.prices", [other], types=parse_schema("amount=double"), project=lh.project
            )
        with pytest.raises(
            LoadError, match=r"--schema names column 'price', which bronze\.prices does not have"
        ):
            load_files(
                lh.catalog, "bronze.prices", [other], types=parse_schema("price=double"), project=lh.project
            )
        agreed = load_files(
            lh.catalog,
            "bronze.prices",
            [other],
            types=parse_schema("amount=decimal(10,2)"),
            project=lh.project,
        )
        assert agreed.rows == 1
    missing = cli("load", "bronze.fresh", str(csv), "--create", "--schema", "price=double")
    assert missing.code == 1 and "--schema names column 'price', which p.csv does not have" in missing.err


# --- a forgotten customer is not loaded again -----------------------------------------------------


def _customer(customer_id: str) -> dict[str, str]:
    return {
        "customer_id": customer_id,
        "full_name": "Ava Quinn",
        "email": f"{customer_id.lower()}@example.com",
        "phone": "+1 512 555 0100",
        "birth_date": "1980-02-29",
        "street": "1 Garden Lane",
        "city": "Zanzibar City",
        "postal_code": "70001",
        "home_store_id": "S001",
        "updated_at": "2026-03-02T10:00:00",
    }


@pytest.mark.unit
def test_a_forgotten_customers_rows_go_to_dead_letters_not_bronze(lh: Lakehouse, tmp_path: Path) -> None:
    """The demo reloads generated customers: the keystore refused the whole file because one of
    them had been forgotten, and the demo could not run again in that home."""
    from lakehouse.privacy import forget

    forget(lh.catalog, lh.keystore, "C000002", lh.project, force=True)  # blocked before it arrives
    path = tmp_path / "customers.jsonl"
    path.write_text(
        "".join(json.dumps(_customer(c)) + "\n" for c in ("C000001", "C000002", "C000003", "C000002"))
    )
    result = lh.load("bronze.customers", [path])
    assert result.rows == 2 and result.rows_refused == 2 and result.files_loaded == [str(path)]
    held = lh.sql("select customer_id from bronze.customers order by 1").column(0).to_pylist()
    assert held == ["C000001", "C000003"]
    letters = lh.sql(
        "select source, source_offset, reason, payload, message_key, pii_subject from bronze.dead_letters "
        "order by source_offset"
    ).to_pylist()
    assert [d["source_offset"] for d in letters] == [2, 4]  # the file's rows 2 and 4
    for letter in letters:
        assert letter["source"].startswith("file:customers.jsonl@")
        assert "forgotten (gdpr forget)" in letter["reason"] and "C000002" in letter["reason"]
        assert letter["payload"] is None and letter["message_key"] is None and letter["pii_subject"] is None
        assert "Ava" not in letter["reason"] and "example.com" not in letter["reason"]

    again = lh.load("bronze.customers", [path])  # the same file: nothing lands twice, no new letter
    assert again.rows == 0 and again.files_skipped == [str(path)] and again.rows_refused == 0
    assert lh.sql("select count(*) from bronze.dead_letters").column(0)[0].as_py() == 2


# --- the demo, where a customer was forgotten -----------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.dbt
def test_the_demo_runs_again_where_customers_were_forgotten(home: Path) -> None:
    blocked = run_cli("gdpr", "forget", "C000007", "--force", home=home)  # before its data arrives
    assert blocked.returncode == 0, blocked.stderr
    first = run_cli("demo", "--scale", "0.15", "--seed", "7", home=home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    loaded = next(line for line in first.stdout.splitlines() if "bronze.customers" in line)
    assert loaded.endswith(
        "rows, 1 refused: forgotten customers (gdpr forget), kept in bronze.dead_letters without their data"
    )
    assert "1 generated row(s) of forgotten customers were not loaded" in first.stdout

    erased = run_cli("gdpr", "forget", "C000009", home=home)  # loaded, built, then forgotten
    assert erased.returncode == 0, erased.stderr
    again = run_cli("demo", "--scale", "0.15", "--seed", "7", home=home)  # failed before
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    reloaded = next(line for line in again.stdout.splitlines() if "bronze.customers" in line)
    assert reloaded.endswith("already loaded")
    assert "already in bronze (offsets recorded in the tables): nothing doubled" in again.stdout
    assert "Demo finished" in again.stdout
    with Lakehouse(Settings(home=home)) as lh:
        for customer in ("C000007", "C000009"):
            for table in ("bronze.customers", "gold.dim_customer"):
                found = lh.sql(f"select count(*) from {table} where customer_id = '{customer}'")
                assert found.column(0)[0].as_py() == 0, (customer, table)
        letters = lh.sql("select source, reason from bronze.dead_letters").to_pylist()
        assert len(letters) == 1 and "C000007" in letters[0]["reason"]
        orders = lh.sql("select count(*) from bronze.orders where order_id like 'K%'").column(0)[0].as_py()
        assert orders == 2_000  # the Kafka slice landed once over the two runs
