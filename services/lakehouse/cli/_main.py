"""The ``lakehouse`` command: one group, ``--output`` where results are printed, errors once, exit 1."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from lakehouse.config import Settings, project_of
from lakehouse.errors import LakehouseError

if TYPE_CHECKING:
    import pyarrow as pa

    from lakehouse._api import Lakehouse


app = typer.Typer(no_args_is_help=True, add_completion=False, help="The lakehouse platform.")


stack_app = typer.Typer(
    no_args_is_help=True, help="The stack profile's servers (SeaweedFS S3 + Iceberg REST)."
)


contracts_app = typer.Typer(no_args_is_help=True, help="Bronze data contracts.")


broker_app = typer.Typer(no_args_is_help=True, help="The embedded Kafka-compatible broker (Tansu).")


sink_app = typer.Typer(no_args_is_help=True, help="Kafka topics into bronze Iceberg tables, exactly once.")


app.add_typer(stack_app, name="stack")


app.add_typer(broker_app, name="broker")


app.add_typer(sink_app, name="sink")


app.add_typer(contracts_app, name="contracts")


gateway_app = typer.Typer(
    no_args_is_help=True, help="The edge gateway: devices upload sealed batches over TLS."
)


devices_app = typer.Typer(
    no_args_is_help=True, help="Edge devices: enrollment tokens, the registry, revocation."
)


app.add_typer(gateway_app, name="gateway")


app.add_typer(devices_app, name="devices")


maintain_app = typer.Typer(no_args_is_help=True, help="Table maintenance.")


policy_app = typer.Typer(no_args_is_help=True, help="Access policies (policies/): check, compile, explain.")


keys_app = typer.Typer(no_args_is_help=True, help="The keystore of per-customer data keys.")


gdpr_app = typer.Typer(no_args_is_help=True, help="Data subjects' rights: erasure by crypto-shredding.")


app.add_typer(keys_app, name="keys")


app.add_typer(gdpr_app, name="gdpr")


app.add_typer(policy_app, name="policy")


app.add_typer(maintain_app, name="maintain")


out = Console(soft_wrap=True)


err = Console(stderr=True, soft_wrap=True)


class TextOrJson(StrEnum):
    text = "text"
    json = "json"


class SqlOutput(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


def _lakehouse() -> Lakehouse:
    from lakehouse._api import Lakehouse

    return Lakehouse(Settings.load())


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_mapping(result: dict[str, Any], output: TextOrJson) -> None:
    if output is TextOrJson.json:
        _print_json(result)
    else:
        for key, value in result.items():
            out.print(f"{key}: {value}", highlight=False)


def _print_arrow(result: pa.Table, output: SqlOutput) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if output is SqlOutput.json:
        _print_json(result.to_pylist())
    elif output is SqlOutput.csv:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(result, sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    else:
        table = RichTable(*result.column_names, show_lines=False)
        for row in result.to_pylist():
            table.add_row(*("NULL" if v is None else str(v) for v in row.values()))
        out.print(table)
        out.print(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})")


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
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Append files to a table in one atomic commit; files already loaded are skipped."""
    lh = _lakehouse()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=output is TextOrJson.json or not err.is_terminal,
    ) as progress:
        task = progress.add_task(f"loading {table}", total=len(files) + 1)
        result = lh.load(
            table,
            files,
            fmt=format.value if format else None,
            create=create,
            progress=lambda what, rows: progress.update(task, advance=1, description=what),
        )
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
def sql(
    query: Annotated[str, typer.Argument(help="SQL over every layer; tables are layer.table")],
    schema: Annotated[
        str | None, typer.Option("--schema", help="Default layer for unqualified names")
    ] = None,
    output: Annotated[SqlOutput, typer.Option("--output", "-o")] = SqlOutput.table,
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="Run as this user of policies/: only granted rows, masked columns"),
    ] = None,
) -> None:
    """Run SQL in the embedded engine."""
    from lakehouse._api import Lakehouse

    with Lakehouse(Settings.load(), user=as_user) as lh:
        _print_arrow(lh.sql(query, schema=schema), output)


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


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the files")] = Path("data/reference"),
    scale: Annotated[float, typer.Option(help="Scale factor: 1 is 12 stores over 120 days")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data")] = 42,
    format: Annotated[FileFormat, typer.Option("--format")] = FileFormat.parquet,
) -> None:
    """Generate the reference domain (cold-chain retail) as one file per bronze table."""
    from lakehouse.reference import generate as make
    from lakehouse.reference import write_files

    paths = write_files(make(scale, seed, project_of(Settings.load())), out_dir, format.value)
    for name, path in paths.items():
        out.print(f"{name:<22} {path}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt(ctx: typer.Context) -> None:
    """Run dbt on the platform's project (e.g. `lakehouse dbt build`)."""
    from lakehouse.transform import run_dbt

    raise typer.Exit(run_dbt(Settings.load(), list(ctx.args)))


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="Scale factor of the reference domain")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 42,
) -> None:
    """Generate, load bronze, build silver/gold/platinum with dbt, and show what came out."""
    from lakehouse.reference import run_demo

    run_demo(Settings.load(), scale=scale, seed=seed, console=out)


@stack_app.command("start")
def stack_start() -> None:
    """Start SeaweedFS (S3 with SSE + Iceberg REST catalog) on loopback for the stack profile."""
    from lakehouse.local import start_stack

    state = start_stack(Settings.load(profile="stack"))
    out.print(
        f"SeaweedFS running (pid {state['pid']}): S3 {state['s3_endpoint']}, catalog {state['iceberg_uri']}"
    )
    out.print("use it with LAKEHOUSE_PROFILE=stack")


@stack_app.command("stop")
def stack_stop() -> None:
    """Stop the stack's SeaweedFS by the PID it recorded."""
    from lakehouse.local import stop_stack

    out.print("stopped" if stop_stack(Settings.load(profile="stack")) else "not running")


@stack_app.command("status")
def stack_status(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Show whether the stack runs and where."""
    from lakehouse.config import read_state, recorded_alive

    state = read_state(Settings.load(profile="stack"))
    public = (
        {k: state[k] for k in ("pid", "s3_endpoint", "iceberg_uri")} | {"running": recorded_alive(state)}
        if state
        else {"running": False}
    )
    if output is TextOrJson.json:
        _print_json(public)
    else:
        out.print(" ".join(f"{k}={v}" for k, v in public.items()))


@broker_app.command("start")
def broker_start(port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one)")] = 0) -> None:
    """Start Tansu on loopback (its log on S3 in the stack profile) and record its address."""
    from lakehouse.local import start_broker

    state = start_broker(Settings.load(), port=port or None)
    out.print(f"broker running (pid {state['pid']}) at {state['bootstrap']}, storage {state['storage']}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker by the PID it recorded."""
    from lakehouse.local import stop_broker

    out.print("stopped" if stop_broker(Settings.load()) else "not running")


@broker_app.command("status")
def broker_status(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Show whether the broker runs and where."""
    from lakehouse.config import recorded_alive
    from lakehouse.local import read_broker_state

    state = read_broker_state(Settings.load())
    public = {**state, "running": recorded_alive(state)} if state else {"running": False}
    if output is TextOrJson.json:
        _print_json(public)
    else:
        out.print(" ".join(f"{k}={v}" for k, v in public.items()))


@app.command()
def produce(
    topic: Annotated[str, typer.Option("--topic", help="Topic (feeds the bronze table of the same name)")],
    count: Annotated[int | None, typer.Option(help="Publish exactly this many events")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second (with --duration)")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to publish at --rate")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same events")] = 42,
    start: Annotated[int, typer.Option(help="Index of the first event")] = 0,
    scale: Annotated[
        float, typer.Option(help="Draw store/product/customer ids from this scale's domain")
    ] = 1.0,
) -> None:
    """Publish the reference domain's operational events to a Kafka topic."""
    from lakehouse.local import bootstrap_servers
    from lakehouse.reference import produce as publish

    if (count is None) == (rate is None) or (rate is not None and duration is None):
        raise LakehouseError("give --count N, or --rate R with --duration S")
    settings = Settings.load()
    sent = publish(
        bootstrap_servers(settings),
        topic,
        count=count,
        rate=rate,
        duration=duration,
        seed=seed,
        start=start,
        partitions=settings.broker.partitions,
        scale=scale,
        project=project_of(settings),
    )
    out.print(f"published {sent} events to {topic}")


@sink_app.command("run")
def sink_run(
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topics", help="Topics to sink (default: every bronze table of the project's contracts)"
        ),
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without messages")
    ] = None,
    batch_records: Annotated[int, typer.Option(help="Commit at most this many messages at once")] = 50_000,
    batch_seconds: Annotated[
        float, typer.Option(help="Commit at least this often while messages flow")
    ] = 2.0,
    batch_min_records: Annotated[
        int, typer.Option(help="Commit as soon as caught up with the topics once this many are held")
    ] = 10_000,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1 (0: free port)")
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Consume topics into their bronze tables, exactly once; SIGTERM flushes and commits."""
    from lakehouse.contracts import load_contracts
    from lakehouse.ingest import serve_metrics
    from lakehouse.ingest.kafka import Sink
    from lakehouse.local import bootstrap_servers
    from lakehouse.reference import ensure_topics

    lh = _lakehouse()
    settings = lh.settings
    declared = [c.name for c in load_contracts(lh.project).values() if c.layer == "bronze" and not c.system]
    chosen = [t for item in (topics or declared) for t in item.split(",") if t]
    bootstrap = bootstrap_servers(settings)
    ensure_topics(bootstrap, chosen, settings.broker.partitions)
    sink = Sink(
        lh.catalog,
        bootstrap,
        chosen,
        group=settings.broker.group,
        batch_max_records=batch_records,
        batch_max_seconds=batch_seconds,
        batch_min_records=batch_min_records,
        idle_exit=idle_exit,
        project=lh.project,
        settings=settings,
    )
    if metrics_port is not None:
        server = serve_metrics(sink.stats, metrics_port)
        err.print(f"metrics at http://127.0.0.1:{server.server_address[1]}/metrics")
    stats = sink.run()
    if output is TextOrJson.json:
        _print_json(stats.summary())
    else:
        summary = stats.summary()
        out.print(
            f"committed {sum(summary['rows'].values())} rows in {summary['commits']} commits, "
            f"{sum(summary['dead_letters'].values())} dead letters; commit p50 {summary['commit_p50_s'] * 1000:.0f} ms"
        )


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


@gateway_app.command("serve")
def gateway_serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: gateway.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: gateway.port; 0: a free one)")] = None,
) -> None:
    """Serve the gateway over TLS until SIGTERM (locally with a private CA under state/)."""
    from lakehouse.ingest.edge import serve

    logging.getLogger("lakehouse").setLevel(logging.INFO)
    serve(Settings.load(), host=host, port=port)


@gateway_app.command("tls")
def gateway_tls(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Show (creating them locally if needed) the gateway's TLS files; agents trust the CA file."""
    from lakehouse.ingest.edge import tls_files

    ca, cert, key = tls_files(Settings.load())
    _print_mapping({"ca_file": str(ca) if ca else None, "cert_file": str(cert), "key_file": str(key)}, output)


@gateway_app.command("rotate-keys")
def gateway_rotate_keys(
    signing: Annotated[bool, typer.Option(help="Rotate the key that signs device tokens")] = True,
    ingest: Annotated[bool, typer.Option(help="Rotate the key that batches are sealed for")] = False,
) -> None:
    """Add a new active key; a running gateway picks it up within a second (no restart). Tokens
    signed and batches sealed with the previous key stay valid while they may still arrive."""
    from lakehouse.ingest.edge import rotate_gateway_keys

    for kind, kid in rotate_gateway_keys(Settings.load(), signing=signing, ingest=ingest):
        out.print(f"{kind} key is now {kid}", highlight=False)


@gateway_app.command("openapi")
def gateway_openapi() -> None:
    """Print the gateway's OpenAPI description (JSON)."""
    from lakehouse.ingest.edge import build_app

    _print_json(build_app(Settings.load()).openapi())


@devices_app.command("enroll")
def devices_enroll(
    store: Annotated[str, typer.Option(help="The store the device will report for (as in bronze.stores)")],
    unit: Annotated[
        list[str] | None,
        typer.Option(help="A refrigeration unit of STORE not yet in bronze.devices (repeatable)"),
    ] = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text,
) -> None:
    """Issue a one-time, short-lived enrollment token for one device of STORE (shown once)."""
    import datetime as dt

    from lakehouse.ingest.edge import issue_enrollment_token

    token, expires = issue_enrollment_token(Settings.load(), store, unit or ())
    expires_at = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")
    if output is TextOrJson.json:
        _print_json({"enrollment_token": token, "store_id": store, "expires_at": expires_at})
    else:
        out.print(token, highlight=False)
        err.print(f"single use, for store {store}, expires {expires_at}", highlight=False)


@devices_app.command("list")
def devices_list(output: Annotated[TextOrJson, typer.Option("--output", "-o")] = TextOrJson.text) -> None:
    """Enrolled devices with their store and status (control characters shown escaped)."""
    import datetime as dt

    from rich.text import Text

    from lakehouse.ingest.edge import escape, registry

    reg = registry(Settings.load())
    try:
        rows = [
            {
                "device_id": d.device_id,
                "store_id": d.store_id,
                "name": d.name,
                "status": d.status,
                "enrolled_at": dt.datetime.fromtimestamp(d.enrolled_at, dt.UTC).isoformat(timespec="seconds"),
            }
            for d in reg.devices()
        ]
    finally:
        reg.close()
    if output is TextOrJson.json:
        _print_json(rows)
        return
    table = RichTable("device_id", "store_id", "name", "status", "enrolled_at")
    for row in rows:  # Text, not markup: a name like "[blink]" is shown as typed
        table.add_row(*(Text(escape(str(v or ""))) for v in row.values()))
    out.print(table)


@devices_app.command("revoke")
def devices_revoke(device_id: Annotated[str, typer.Argument(help="The device to revoke")]) -> None:
    """Revoke a device: its tokens stop working on its next request."""
    from lakehouse.ingest.edge import escape, revoke_device

    device = revoke_device(Settings.load(), device_id)
    out.print(
        f"revoked {escape(device.device_id)} (store {escape(device.store_id)})", highlight=False, markup=False
    )


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


@app.command("settings")
def show_settings() -> None:
    """Show the effective settings (secrets masked: secret fields, passwords in URLs)."""
    _print_json(Settings.load().display())


def main() -> None:
    import os

    from lakehouse.config import PRIVATE_UMASK, MaskingFormatter, mask_secrets

    def _masked(text: str) -> str:
        """``text`` with secrets masked: passwords in URLs, secret parameters, and the values of
        the environment's secret settings (when they can be read)."""
        try:
            known = Settings.load().secret_values()
        except Exception:  # the settings may be what failed: mask by shape alone
            known = []
        return mask_secrets(text, known)

    os.umask(PRIVATE_UMASK)  # what the platform writes (and the processes it starts) is private
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    try:
        code = app(standalone_mode=False)  # returns the code of typer.Exit instead of exiting
    except LakehouseError as exc:
        err.print(f"[red]error:[/red] {_masked(str(exc))}", highlight=False)
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        import traceback

        # an unexpected error: its traceback, with any secret it quotes (a URL) masked
        sys.stderr.write(_masked("".join(traceback.format_exception(exc))))
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
