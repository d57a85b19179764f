"""Policies, keys and data subjects' rights."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from lakehouse.config import Settings, project_of
from lakehouse.errors import LakehouseError, NoSuchTableError

from ._app import (
    TextOrJson,
    _lakehouse,
    _print_json,
    _print_mapping,
    err,
    gdpr_app,
    keys_app,
    out,
    policy_app,
    progress_bar,
)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr while the block runs, only when stderr is a terminal; yields
    ``update(what, done, total)``."""
    with progress_bar(err) as progress:
        task = progress.add_task(escape(description), total=None)

        def update(what: str, done: int, total: int) -> None:
            progress.update(task, description=escape(what), completed=done, total=total)

        yield update


@policy_app.command("check")
def policy_check() -> None:
    """Validate policies/ against every table's columns; errors name file:line."""
    from lakehouse.governance import load_policy, table_schemas

    project = project_of(Settings.load())
    policy = load_policy(project.policies_dir, table_schemas(project))
    out.print(f"policy ok: {len(policy.principals)} users, {len(policy.roles)} roles", highlight=False)


@policy_app.command("compile")
def policy_compile(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for opa/ and rules.json")] = Path(
        "build/policy"
    ),
    catalog: Annotated[str, typer.Option(help="Trino catalog of the lakehouse tables")] = "iceberg",
) -> None:
    """Compile the policy for Trino: OPA Rego + data, and file-based rules.json."""
    from lakehouse.governance import write_compiled

    _write_policy(write_compiled, "the compiled policy", out_dir, catalog)


@policy_app.command("bundle")
def policy_bundle(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the bundle (the chart's: charts/lakehouse/files/opa)")
    ] = Path("build/policy/bundle"),
    catalog: Annotated[str, typer.Option(help="Trino catalog of the lakehouse tables")] = "iceberg",
) -> None:
    """Write OPA's bundle: the Trino policy, its data and OPA's authz policy (Trino's client only)."""
    from lakehouse.governance import write_opa_bundle

    _write_policy(write_opa_bundle, "OPA's bundle", out_dir, catalog)


def _write_policy(write: Callable[..., list[Path]], what: str, out_dir: Path, catalog: str) -> None:
    """The project's policy compiled by ``write`` into ``out_dir``; prints each file written."""
    from lakehouse.governance import load_policy, table_schemas

    project = project_of(Settings.load())
    schemas = table_schemas(project)
    policy = load_policy(project.policies_dir, schemas)
    try:
        written = write(policy, schemas, out_dir, catalog=catalog)
    except OSError as exc:
        raise LakehouseError(
            f"cannot write {what} to {out_dir}: {exc.strerror or exc}; choose another --out"
        ) from exc
    for path in written:
        out.print(str(path), highlight=False)


@policy_app.command("export-duckdb")
def policy_export_duckdb(
    user: Annotated[str, typer.Option("--as", help="The user whose view of the data is exported")],
    out_file: Annotated[Path, typer.Option("--out", help="New DuckDB database file (for Superset)")],
) -> None:
    """Write USER's filtered, masked tables into a DuckDB file a BI tool opens read-only."""
    from lakehouse._api import Lakehouse
    from lakehouse.query import GovernedEngine, export_duckdb

    if out_file.exists():
        raise typer.BadParameter(f"{out_file} exists; remove it or choose another file", param_hint="'--out'")
    if not out_file.parent.is_dir():
        raise typer.BadParameter(
            f"the directory {out_file.parent} does not exist; create it or choose another file",
            param_hint="'--out'",
        )
    with Lakehouse(Settings.load(), user=user) as lh:
        assert isinstance(lh.engine, GovernedEngine)
        written = export_duckdb(lh.engine, out_file)
    out_file.chmod(0o600)
    for identifier, rows in written.items():
        out.print(f"{identifier:<40} {rows:>10,} rows", highlight=False)


@policy_app.command("explain")
def policy_explain(
    user: Annotated[str, typer.Option("--as", help="The user")],
    table: Annotated[str, typer.Argument(help="LAYER.TABLE")],
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """What USER sees of TABLE: allowed, row filter and masks (as Trino SQL)."""
    from lakehouse.governance import load_policy, table_schemas, trino_decision_sql

    project = project_of(Settings.load())
    schemas = table_schemas(project)
    if table not in schemas:
        raise NoSuchTableError(_unknown_table(table, sorted(schemas)))
    decision = load_policy(project.policies_dir, schemas).decide(user, table, schemas[table])
    row_filter, masks = trino_decision_sql(decision)
    result = {
        "user": user,
        "table": table,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "row_filter": row_filter,
        "masks": masks,
    }
    _print_mapping(result, output)


def _unknown_table(table: str, known: list[str]) -> str:
    """Why ``table`` is not one the policies know, with the names it may have meant."""
    folded = {t.casefold(): t for t in known}  # BRONZE.Customer means bronze.customers as well
    close = [folded[t] for t in difflib.get_close_matches(table.casefold(), folded, n=3, cutoff=0.85)]
    example = next((t for t in known if t.startswith("bronze.")), "bronze.customers")
    hint = f"did you mean {' or '.join(close)}?" if close else f"name it LAYER.TABLE, e.g. {example}"
    return f"no table {table} in the project's contracts or dbt models: {hint}"


@keys_app.command("rotate")
def keys_rotate(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """A new key-encryption key: every data key re-wrapped, no data file rewritten."""
    from lakehouse.privacy import rotate_keys

    lh = _lakehouse()
    with _progress("re-wrapping data keys") as update:
        done = rotate_keys(
            lh.catalog, lh.keystore, progress=lambda n, total: update("re-wrapping data keys", n, total)
        )
    if output is TextOrJson.json:
        _print_json(done)
        return
    out.print(
        f"key-encryption key is now {done['to']} (was {done['from']}): {done['data_keys']} data key(s) "
        "re-wrapped, no data file rewritten",
        highlight=False,
    )


@keys_app.command("status")
def keys_status() -> None:
    """The active key-encryption key and how many data keys exist or were destroyed."""
    _print_json(_lakehouse().keystore.status())


@gdpr_app.command("forget")
def gdpr_forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Erase even an id that no table or data key holds (blocks it before its data arrives)",
        ),
    ] = False,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Destroy the customer's data key, delete their rows from current snapshots, and prove
    that no snapshot, branch or time-travel query can recover their personal data. An id that
    nothing holds is refused (a typo would be blocked forever) unless --force."""
    from lakehouse.privacy import forget

    lh = _lakehouse()
    with _progress(f"erasing {customer_id}") as update:
        report = forget(lh.catalog, lh.keystore, customer_id, lh.project, force=force, progress=update)
    if output is TextOrJson.json:
        _print_json(report.as_dict())
    else:
        table = RichTable(
            "table",
            "snapshots",
            "refs",
            "rows deleted",
            "rows in history",
            "values checked",
            "decryptable",
            "rows now",
        )
        for t in report.tables:
            table.add_row(
                t.table,
                str(t.snapshots_checked),
                ",".join(t.refs),
                str(t.rows_deleted),
                str(t.rows_in_history),
                str(t.values_checked),
                str(t.values_decryptable),
                str(t.rows_now),
            )
        out.print(table)
        out.print(report.summary(), highlight=False)
        if report.erased:
            out.print(
                f"erased: no personal value of {customer_id} can be decrypted from any snapshot",
                highlight=False,
                markup=False,
            )
        else:
            out.print(
                f"NOT ERASED: {sum(t.values_decryptable for t in report.tables)} personal value(s) of "
                f"{customer_id} still readable, {sum(t.rows_now for t in report.tables)} row(s) left "
                "(see the table)",
                highlight=False,
                markup=False,
            )
    if not report.erased:
        raise typer.Exit(1)
