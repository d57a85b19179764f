"""Policies, keys and data subjects' rights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from lakehouse.config import Settings, project_of

from ._app import TextOrJson, _lakehouse, _print_json, _print_mapping, gdpr_app, keys_app, out, policy_app


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
    from lakehouse.governance import load_policy, table_schemas, write_compiled

    project = project_of(Settings.load())
    schemas = table_schemas(project)
    for path in write_compiled(load_policy(project.policies_dir, schemas), schemas, out_dir, catalog=catalog):
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
        raise typer.BadParameter(f"{out_file} exists; remove it or choose another file")
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
        raise typer.BadParameter(f"unknown table {table}")
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


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new key-encryption key: every data key re-wrapped, no data file rewritten."""
    from lakehouse.privacy import rotate_keys

    lh = _lakehouse()
    done = rotate_keys(lh.catalog, lh.keystore)
    out.print(
        f"key-encryption key is now {done['to']}; {done['data_keys']} data keys re-wrapped", highlight=False
    )


@keys_app.command("status")
def keys_status() -> None:
    """The active key-encryption key and how many data keys exist or were destroyed."""
    _print_json(_lakehouse().keystore.status())


@gdpr_app.command("forget")
def gdpr_forget(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase")],
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Destroy the customer's data key, delete their rows from current snapshots, and prove
    that no snapshot, branch or time-travel query can recover their personal data."""
    from lakehouse.privacy import forget

    lh = _lakehouse()
    report = forget(lh.catalog, lh.keystore, customer_id, lh.project)
    if output is TextOrJson.json:
        _print_json(report.as_dict())
    else:
        table = RichTable(
            "table", "snapshots", "refs", "rows in history", "values checked", "decryptable", "rows now"
        )
        for t in report.tables:
            table.add_row(
                t.table,
                str(t.snapshots_checked),
                ",".join(t.refs),
                str(t.rows_in_history),
                str(t.values_checked),
                str(t.values_decryptable),
                str(t.rows_now),
            )
        out.print(table)
        verdict = "erased: no personal value of" if report.erased else "NOT ERASED:"
        out.print(
            f"{verdict} {customer_id} can be decrypted from any snapshot; data key destroyed", highlight=False
        )
    if not report.erased:
        raise typer.Exit(1)
