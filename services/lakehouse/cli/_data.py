"""Loading, querying and building the data: load, sql, tables, generate, dbt, demo, maintain,
contracts, settings."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table as RichTable

from lakehouse.config import Settings, project_of
from lakehouse.errors import LakehouseError

from ._app import (
    FileFormat,
    TextOrJson,
    _lakehouse,
    _print_json,
    app,
    contracts_app,
    err,
    maintain_app,
    out,
    progress_bar,
)

if TYPE_CHECKING:
    from lakehouse._api import Lakehouse
    from lakehouse.ingest import LoadResult, ProgressCallback


def _column_types(value: str | None) -> str | None:
    """``--schema`` checked before anything runs: a bad part is a usage error naming it."""
    if value is not None:
        from lakehouse.ingest._files import parse_schema

        try:
            parse_schema(value)
        except LakehouseError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _load_typed(
    lh: Lakehouse,
    schema: str,
    identifier: str,
    files: list[Path],
    *,
    fmt: str | None,
    create: bool,
    progress: ProgressCallback,
) -> LoadResult:
    """``Lakehouse.load`` with column types (``--schema``), which it does not take."""
    from lakehouse.contracts import contract_for
    from lakehouse.ingest import load_files
    from lakehouse.ingest._files import parse_schema

    types = parse_schema(schema)
    contract = contract_for(identifier, lh.project)
    return load_files(
        lh.catalog,
        identifier,
        files,
        fmt=fmt,
        create=create,
        progress=progress,
        project=lh.project,
        keystore=lh.keystore if contract is not None and contract.pii else None,
        types=types,
    )


@app.command()
def load(
    table: Annotated[str, typer.Argument(help="Target table, LAYER.TABLE (bronze.orders)")],
    files: Annotated[list[Path], typer.Argument(help="Parquet, CSV or JSON-lines files", show_default=False)],
    format: Annotated[
        FileFormat | None, typer.Option("--format", help="File format (default: from the name)")
    ] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create a table with no contract from the files' schema")
    ] = False,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            help="Column types, NAME=TYPE,... (amount=decimal(10,2),day=date): a table --create makes "
            "gets them; an existing table's must agree",
            callback=_column_types,
        ),
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Append files to a table in one atomic commit; files already loaded are skipped."""
    lh = _lakehouse()
    with progress_bar(err, quiet=output is TextOrJson.json) as progress:
        task = progress.add_task(f"loading {table}", total=len(files) + 1)

        def step(what: str, rows: int) -> None:
            progress.update(task, advance=1, description=what)

        fmt = format.value if format else None
        if schema is None:
            result = lh.load(table, files, fmt=fmt, create=create, progress=step)
        else:
            result = _load_typed(lh, schema, table, files, fmt=fmt, create=create, progress=step)
    if output is TextOrJson.json:
        _print_json(result.__dict__)
        return
    if result.files_loaded:
        out.print(
            f"loaded {result.rows} rows from {len(result.files_loaded)} file(s) into {table} "
            f"in {result.seconds:.2f}s (snapshot {result.snapshot_id})"
        )
    for skipped in result.files_skipped:
        out.print(f"skipped {skipped}: already loaded")


@app.command()
def tables(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """List tables with their row counts, snapshots and last commit."""
    infos = _lakehouse().tables()
    if output is TextOrJson.json:
        _print_json([i.as_dict() for i in infos])
        return
    table = RichTable("layer", "table", "rows", "snapshots", "last_commit")
    for i in infos:
        table.add_row(i.layer, i.table, f"{i.rows:,}", str(i.snapshots), i.last_commit or "-")
    out.print(table)


def _positive(value: float) -> float:
    """A scale factor: any number above 0 (typer's ``min=`` includes its bound)."""
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(
            f"{value:g} is not a scale: it must be a number greater than 0 (1 is 12 stores)"
        )
    return value


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the files")] = Path("data/reference"),
    scale: Annotated[
        float, typer.Option(help="Scale factor, > 0: 1 is 12 stores over 120 days", callback=_positive)
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data")] = 42,
    format: Annotated[FileFormat, typer.Option("--format")] = FileFormat.parquet,
) -> None:
    """Generate the reference domain (cold-chain retail) as one file per bronze table."""
    from lakehouse.reference import TABLES, write_files
    from lakehouse.reference import generate as make

    project = project_of(Settings.load())
    with progress_bar(err) as progress:
        task = progress.add_task("generating", total=2 * len(TABLES))

        def step(what: str) -> Callable[[str], None]:
            return lambda name: progress.update(task, advance=1, description=f"{what} {name}")

        tables = make(scale, seed, project, progress=step("generated"))
        paths = write_files(tables, out_dir, format.value, progress=step("wrote"))
    for name, path in paths.items():
        out.print(f"{name:<22} {path}")


@app.command(
    # every argument is dbt's, --help included: `lakehouse dbt --help` and `lakehouse dbt build
    # --help` show dbt's own help, and dbt reports its own usage errors (exit 2)
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def dbt(ctx: typer.Context) -> None:
    """Run dbt on the platform's project (e.g. `lakehouse dbt build`; `lakehouse dbt --help` is dbt's help)."""
    from lakehouse.transform import run_dbt

    raise typer.Exit(run_dbt(Settings.load(), list(ctx.args)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(ctx: typer.Context) -> None:
    """Build with dbt on a Nessie branch; publish to main only if every model and test passed.

    Write-audit-publish (the stack profile, or a cluster's Nessie and Trino): arguments after
    `build` are dbt's (e.g. `lakehouse build --select gold`). A failing build leaves main as it
    was and names what failed; the branch keeps the build for inspection."""
    from lakehouse.transform import build_and_publish

    result = build_and_publish(Settings.load(), list(ctx.args))
    if not result.published:
        failed = f": {', '.join(result.failures)} failed" if result.failures else ""
        raise LakehouseError(
            f"dbt build on branch {result.branch} did not pass{failed}; main is untouched "
            f"(still at {result.main_before[:12]}), the branch keeps the build"
        )
    out.print(
        f"published: branch {result.branch} merged into main ({result.main_before[:12]} -> "
        f"{(result.main_after or '')[:12]})",
        highlight=False,
    )


@app.command()
def demo(
    scale: Annotated[
        float, typer.Option(help="Scale factor of the reference domain, > 0", callback=_positive)
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 42,
) -> None:
    """Generate, load bronze, build silver/gold/platinum with dbt, and show what came out."""
    from lakehouse.reference import run_demo

    run_demo(Settings.load(), scale=scale, seed=seed, console=out)


@contracts_app.command("dbt-sources")
def contracts_dbt_sources(
    check: Annotated[
        Path | None, typer.Option(help="Fail if this file differs from the generated sources")
    ] = None,
) -> None:
    """Print dbt's bronze __sources.yml generated from the contracts."""
    from lakehouse.contracts import dbt_sources_yaml

    text = dbt_sources_yaml(project_of(Settings.load()))
    if check is not None:
        if not check.exists() or check.read_text() != text:
            raise LakehouseError(
                f"{check} is stale: regenerate it with `lakehouse contracts dbt-sources > {check}`"
            )
        out.print(f"{check} matches the contracts")
        return
    sys.stdout.write(text)


@maintain_app.command("expire-snapshots")
def maintain_expire_snapshots(
    tables: Annotated[list[str] | None, typer.Argument(help="LAYER.TABLE ... (default: every table)")] = None,
    keep: Annotated[int, typer.Option(help="Always keep this many newest snapshots")] = 100,
    older_than_hours: Annotated[float, typer.Option(help="Expire only snapshots older than this")] = 24.0,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Expire old snapshots (time travel beyond them ends); what tables hold is never forgotten."""
    import datetime as dt

    from lakehouse.catalog import list_tables
    from lakehouse.iceberg import expire_snapshots

    lh = _lakehouse()
    chosen = tables or [f"{layer}.{name}" for layer, name in list_tables(lh.catalog)]
    results = [
        expire_snapshots(lh.catalog, t, keep_last=keep, older_than=dt.timedelta(hours=older_than_hours))
        for t in chosen
    ]
    if output is TextOrJson.json:
        _print_json([r.__dict__ for r in results])
        return
    for r in results:
        out.print(f"{r.table:<40} kept {r.kept:>6}  expired {r.expired:>6}", highlight=False)


@app.command("settings")
def show_settings() -> None:
    """Show the effective settings (secrets masked: secret fields, passwords in URLs); in the
    stack profile, with the running stack's endpoints filled in as every command takes them."""
    from lakehouse.config import apply_stack_state

    settings = Settings.load()
    _print_json((apply_stack_state(settings) if settings.profile == "stack" else settings).display())
