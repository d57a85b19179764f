"""``make bench``: each figure against a baseline measured in the same run, reported as a ratio.

1. Bronze load: rows/s of ``lakehouse load`` into an existing table (read the file, validate, hash,
   write, commit to Iceberg) against writing the same Arrow data with ``pyarrow.parquet`` in the
   same layout (one file, or the same daily partitions) with the same zstd codec.
2. dbt build: seconds per million bronze rows, against running the same compiled model SQL
   straight into DuckDB tables (no dbt, no tests, no Iceberg commits).
3. Gold queries: p50/p95 latency through the platform (Iceberg scans) against the same queries
   on native in-memory DuckDB copies of the same tables.
4. Kafka -> bronze: events/s of the sink against a raw consume by the same client and broker.
5. Edge uploads: readings/s and p95 latency of N devices against a bare FastAPI endpoint on the
   same server and TLS; the per-batch cost of token verification and of sealing and opening.
6. Personal data: ingest with encryption against a plain load of the same file, and a query
   that decrypts against the same query masked (tests/bench_pii.py).
7. Governed queries: the gold queries as policy-bound users against the same queries as the
   operator, p50/p95, warm sessions and cold ones (tests/bench_governed.py).
8. The stack profile (tests/bench_stack.py): start time; dbt on Trino against the embedded build;
   gold queries on Trino against the embedded engine; the sink on Apache Kafka against a raw
   consume. Needs `lakehouse stack install`; at --stack-scale (default 0.5).

Usage: python -m tests.bench [--scale 4] [--repeat 3] [--only load,dbt,queries,governed,cli,streaming,edge,pii,demo,stack] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from lakehouse import Lakehouse, Settings
from lakehouse.reference import generate, write_files
from lakehouse.transform import run_dbt

GOLD_QUERIES = {
    "daily revenue by region": """
        select s.region_name, m.date_day, sum(m.net_revenue) as revenue
        from gold.mart_daily_sales_by_store m join gold.dim_store s using (store_id)
        group by 1, 2 order by 1, 2""",
    "top products by margin": """
        select p.category, f.product_id, sum(f.margin) as margin
        from gold.fct_sales f join gold.dim_product p using (product_sk)
        group by 1, 2 order by margin desc limit 20""",
    "promo lift per weekday": """
        select d.iso_day_of_week, f.is_promo, avg(f.quantity) as units
        from gold.fct_sales f join gold.dim_date d on f.order_date = d.date_day
        group by 1, 2 order by 1, 2""",
    "worst cold-chain units": """
        select device_id, sum(minutes_above_safe) as minutes, sum(temperature_waste_cost) as cost
        from gold.mart_cold_chain_compliance group by 1 order by minutes desc limit 10""",
    "customer 360 top spenders": """
        select customer_id, lifetime_revenue, orders from gold.mart_customer_360
        order by lifetime_revenue desc limit 25""",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_load(files: dict[str, Path], repeat: int, work: Path) -> dict[str, Any]:
    """Steady-state loads into existing tables; the baseline writes the same layout with pyarrow."""
    from lakehouse.contracts import load_contracts

    results = {}
    for name, partition_column in (("order_lines", None), ("sensor_readings", "reading_ts")):
        data = pq.read_table(files[name])
        contract = load_contracts()[f"bronze.{name}"]
        ours, base = [], []
        for i in range(repeat):
            out = work / f"baseline-{name}-{i}"
            t = time.perf_counter()
            if partition_column is None:
                pq.write_table(data, f"{out}.parquet", compression="zstd")
            else:  # same data, same daily layout
                day = pc.cast(data.column(partition_column), pa.date32())
                pq.write_to_dataset(
                    data.append_column("day", day), out, partition_cols=["day"], compression="zstd"
                )
            base.append(time.perf_counter() - t)
            with Lakehouse(Settings(home=work / f"load-{name}-{i}")) as lh:
                lh.catalog.create_table(
                    ("bronze", name),
                    schema=contract.iceberg_schema(),
                    partition_spec=contract.partition_spec(),
                    properties=contract.table_properties(),
                )
                t = time.perf_counter()
                lh.load(f"bronze.{name}", [files[name]])
                ours.append(time.perf_counter() - t)
        results[name] = {
            "rows": data.num_rows,
            "partitioned": partition_column is not None,
            "lakehouse_rows_per_s": data.num_rows / statistics.median(ours),
            "pyarrow_rows_per_s": data.num_rows / statistics.median(base),
        }
        results[name]["ratio"] = results[name]["lakehouse_rows_per_s"] / results[name]["pyarrow_rows_per_s"]
    return results


def _compiled_models_in_order(target: Path) -> list[tuple[str, str, str]]:
    manifest = json.loads((target / "manifest.json").read_text())
    models = {k: v for k, v in manifest["nodes"].items() if v["resource_type"] == "model"}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for dep in models[key]["depends_on"]["nodes"]:
            if dep in models:
                visit(dep)
        ordered.append(key)

    for key in sorted(models):
        visit(key)
    out = []
    for key in ordered:
        node = models[key]
        sql_path = target / "compiled" / "lakehouse" / node["original_file_path"]
        out.append((node["schema"], node["name"], sql_path.read_text()))
    return out


def bench_dbt(home: Path, bronze_rows: int) -> dict[str, Any]:
    settings = Settings(home=home)
    t = time.perf_counter()
    code = run_dbt(settings, ["build", "--quiet"])
    dbt_seconds = time.perf_counter() - t
    if code != 0:
        raise SystemExit("dbt build failed during the benchmark")
    target = home / "dbt" / "local" / "target"
    with Lakehouse(settings) as lh:
        conn = lh.engine.connect()
        t = time.perf_counter()
        for schema, name, sql in _compiled_models_in_order(target):
            conn.execute(f'create schema if not exists "{schema}"')
            conn.execute(f'drop view if exists "{schema}"."{name}"')
            conn.execute(f'create or replace table "{schema}"."{name}" as {sql}')
        raw_seconds = time.perf_counter() - t
    millions = bronze_rows / 1e6
    return {
        "bronze_rows": bronze_rows,
        "dbt_build_s": dbt_seconds,
        "dbt_s_per_million_rows": dbt_seconds / millions,
        "raw_duckdb_s_per_million_rows": raw_seconds / millions,
        "ratio": dbt_seconds / raw_seconds,
    }


def bench_queries(home: Path, runs: int) -> dict[str, Any]:
    with Lakehouse(Settings(home=home)) as lh:
        conn = lh.engine.connect()
        ours: list[float] = []
        for query in GOLD_QUERIES.values():
            lh.sql(query)  # warm
            for _ in range(runs):
                t = time.perf_counter()
                lh.engine.sql(query)
                ours.append(time.perf_counter() - t)
        # baseline: the same tables as native DuckDB tables in memory
        for info in lh.tables():
            if info.layer == "gold":
                conn.execute(f"create schema if not exists native_{info.layer}")
                conn.execute(f"create table native_gold.{info.table} as select * from gold.{info.table}")
        native: list[float] = []
        for query in GOLD_QUERIES.values():
            native_query = query.replace("gold.", "native_gold.")
            conn.execute(native_query).fetchall()
            for _ in range(runs):
                t = time.perf_counter()
                conn.execute(native_query).to_arrow_table()
                native.append(time.perf_counter() - t)
    return {
        "queries": len(GOLD_QUERIES),
        "runs_each": runs,
        "lakehouse_p50_ms": 1000 * percentile(ours, 0.5),
        "lakehouse_p95_ms": 1000 * percentile(ours, 0.95),
        "native_duckdb_p50_ms": 1000 * percentile(native, 0.5),
        "native_duckdb_p95_ms": 1000 * percentile(native, 0.95),
        "ratio_p50": percentile(ours, 0.5) / percentile(native, 0.5),
    }


def raw_consume(broker: Any, topic: str, events: int) -> float:
    """Seconds for kafka-python to read ``events`` records of ``topic`` from the first one on,
    nothing else done with them: the baseline of the sink's throughput. ``broker``: a
    ``host:port`` or ``BrokerSettings`` (TLS, SASL), as every platform client takes it."""
    from kafka import KafkaConsumer

    from lakehouse.ingest.kafka import client_config

    consumer = KafkaConsumer(
        topic,
        **client_config(broker, client_id="bench-raw"),
        group_id="bench-raw",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=5000,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    seen, first = 0, None
    try:
        while seen < events:
            for records in consumer.poll(timeout_ms=500).values():
                first = first or time.monotonic()
                seen += len(records)
        return time.monotonic() - (first or time.monotonic())
    finally:
        consumer.close()


def bench_streaming(work: Path, events: int) -> dict[str, Any]:
    """Events/s from topic to committed bronze rows against raw consumption by the same client."""

    from lakehouse.ingest.kafka import Sink
    from lakehouse.local import start_broker, stop_broker
    from lakehouse.reference import produce

    settings = Settings(home=work / "streaming")
    bootstrap = str(start_broker(settings)["bootstrap"])
    try:
        produce(bootstrap, "orders", count=events, seed=1)
        raw_seconds = raw_consume(bootstrap, "orders", events)
        with Lakehouse(settings) as lh:
            sink = Sink(lh.catalog, bootstrap, ["orders"], idle_exit=2, settings=lh.settings)
            stats = sink.run()
        assert sum(stats.rows.values()) == events
        assert stats.first_message_at is not None and stats.last_commit_at is not None
        sink_seconds = stats.last_commit_at - stats.first_message_at
        summary = stats.summary()
    finally:
        stop_broker(settings)
    return {
        "events": events,
        "sink_events_per_s": events / sink_seconds,
        "raw_consume_events_per_s": events / raw_seconds,
        "ratio": raw_seconds / sink_seconds,
        "commits": summary["commits"],
        "commit_p50_ms": 1000 * summary["commit_p50_s"],
        "commit_p95_ms": 1000 * summary["commit_p95_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--query-runs", type=int, default=20)
    parser.add_argument("--events", type=int, default=200_000, help="events for the streaming benchmark")
    parser.add_argument("--devices", type=int, default=8, help="concurrent devices for the edge benchmark")
    parser.add_argument("--stack-scale", type=float, default=0.5, help="scale of the stack benchmark's data")
    parser.add_argument(
        "--only",
        default="load,dbt,queries,governed,cli,streaming,edge,pii,demo,stack",
        help="comma-separated benchmarks",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    only = set(args.only.split(","))
    console = Console(width=170)
    with tempfile.TemporaryDirectory(prefix="lakehouse-bench-") as tmp:
        work = Path(tmp)
        load = dbt = queries = streaming = edge = pii = governed = cli = demo = stack = None
        if only & {"load", "dbt", "queries", "governed", "pii", "cli"}:
            files = write_files(generate(args.scale, seed=42), work / "data")
            console.print(f"bench at scale {args.scale} in {work}")
        if "load" in only:
            load = bench_load(files, args.repeat, work)
        if only & {"dbt", "queries", "governed", "pii", "cli"}:
            home = work / "built"
            with Lakehouse(Settings(home=home)) as lh:
                for name, path in files.items():
                    lh.load(f"bronze.{name}", [path])
                bronze_rows = sum(i.rows or 0 for i in lh.tables())
            dbt = bench_dbt(home, bronze_rows)
            queries = bench_queries(home, args.query_runs)
            if "governed" in only:
                from .bench_governed import bench_governed

                governed = bench_governed(home, GOLD_QUERIES, runs=max(5, args.query_runs // 2))
            if "cli" in only:
                from .bench_cli import bench_cli

                cli = bench_cli(home)
            if "pii" in only:
                from .bench_pii import bench_pii

                pii = bench_pii(work, files["customers"], home)
        if "streaming" in only:
            streaming = bench_streaming(work, args.events)
        if "edge" in only:
            from .bench_edge import bench_edge

            edge = bench_edge(work, devices=args.devices)
        if "demo" in only:
            from .bench_demo import bench_demo

            demo = bench_demo(work)
        if "stack" in only:
            from .bench_stack import bench_stack

            stack_files = write_files(generate(args.stack_scale, seed=42), work / "stack-data")
            stack = bench_stack(
                work, stack_files, query_runs=args.query_runs, events=args.events, queries=GOLD_QUERIES
            )

    table = Table("benchmark", "lakehouse", "baseline", "ratio", "target")
    for name, r in (load or {}).items():
        table.add_row(
            f"bronze load rows/s ({name}, {r['rows']:,} rows)",
            f"{r['lakehouse_rows_per_s']:,.0f}",
            f"{r['pyarrow_rows_per_s']:,.0f} (pyarrow.parquet{', same daily partitions' if r['partitioned'] else ''})",
            f"{r['ratio']:.2f}x",
            ">= 0.70x",
        )
    if dbt and queries:
        _dbt_rows(table, dbt, queries)
    if streaming:
        _streaming_rows(table, streaming)
    if edge:
        _edge_rows(table, edge)
    if governed:
        _governed_rows(table, governed)
    if pii:
        _pii_rows(table, pii)
    if cli:
        _cli_rows(table, cli)
    if demo:
        table.add_row(
            f"lakehouse demo --scale {demo['scale']:g}, fresh home, wall s",
            f"{demo['wall_s']:.1f}",
            f"{demo['dbt_s']:.1f} (its own dbt build step)",
            f"{demo['ratio']:.2f}x",
            "<= 45 s",
        )
    if stack:
        from .bench_stack import stack_rows

        stack_rows(table, stack)
    console.print(table)
    if args.json:
        results = {
            "load": load,
            "dbt": dbt,
            "queries": queries,
            "streaming": streaming,
            "edge": edge,
            "pii": pii,
            "governed": governed,
            "cli": cli,
            "demo": demo,
            "stack": stack,
        }
        args.json.write_text(json.dumps(results, indent=2))


def _dbt_rows(table: Table, dbt: dict[str, Any], queries: dict[str, Any]) -> None:
    table.add_row(
        f"dbt build s per million source rows ({dbt['bronze_rows']:,} rows)",
        f"{dbt['dbt_s_per_million_rows']:.1f}",
        f"{dbt['raw_duckdb_s_per_million_rows']:.1f} (same SQL, raw DuckDB)",
        f"{dbt['ratio']:.2f}x slower",
        "minutes for the demo",
    )
    table.add_row(
        f"gold query p50 / p95 ms ({queries['queries']} queries x {queries['runs_each']})",
        f"{queries['lakehouse_p50_ms']:.1f} / {queries['lakehouse_p95_ms']:.1f}",
        f"{queries['native_duckdb_p50_ms']:.1f} / {queries['native_duckdb_p95_ms']:.1f} (native DuckDB tables)",
        f"{queries['ratio_p50']:.2f}x (p50)",
        "-",
    )


def _governed_rows(table: Table, governed: dict[str, Any]) -> None:
    users = "/".join(governed["users"])
    table.add_row(
        f"governed gold query p50 / p95 ms ({users}, warm sessions)",
        f"{governed['governed_p50_ms']:.1f} / {governed['governed_p95_ms']:.1f}",
        f"{governed['operator_p50_ms']:.1f} / {governed['operator_p95_ms']:.1f} (operator, same queries and data)",
        f"{governed['ratio_p50']:.2f}x / {governed['ratio_p95']:.2f}x",
        "<= 1.5x",
    )
    table.add_row(
        "governed first query of a new session p50 / p95 ms (cold)",
        f"{governed['cold_p50_ms']:.0f} / {governed['cold_p95_ms']:.0f}",
        "operator warm p50 above",
        f"{governed['cold_p50_ms'] / governed['operator_p50_ms']:.1f}x (p50)",
        "-",
    )


def _cli_rows(table: Table, cli: dict[str, Any]) -> None:
    bare = f"{cli['bare_duckdb_s'] * 1000:.0f} ms (python -c 'import duckdb; select 1')"
    table.add_row(
        f"lakehouse sql 'select 1', whole process, median of {cli['runs']}",
        f"{cli['cli_s'] * 1000:.0f} ms",
        bare,
        f"{cli['ratio']:.2f}x",
        "<= 2x",
    )
    table.add_row(
        "lakehouse sql over gold.fct_sales (count)",
        f"{cli['cli_gold_s'] * 1000:.0f} ms",
        bare,
        f"{cli['gold_ratio']:.2f}x",
        "-",
    )
    table.add_row(
        "lakehouse sql 'select 1' without the query server (first query)",
        f"{cli['no_server_s'] * 1000:.0f} ms",
        bare,
        f"{cli['no_server_ratio']:.2f}x",
        "-",
    )


def _streaming_rows(table: Table, streaming: dict[str, Any]) -> None:
    table.add_row(
        f"Kafka -> bronze events/s ({streaming['events']:,} events, kafka-python, Tansu)",
        f"{streaming['sink_events_per_s']:,.0f}",
        f"{streaming['raw_consume_events_per_s']:,.0f} (raw consume, same client and broker)",
        f"{streaming['ratio']:.2f}x",
        ">= 0.60x",
    )
    table.add_row(
        f"sink commit latency p50 / p95 ms ({streaming['commits']} commits)",
        f"{streaming['commit_p50_ms']:.0f} / {streaming['commit_p95_ms']:.0f}",
        "-",
        "-",
        "-",
    )


def _pii_rows(table: Table, pii: dict[str, Any]) -> None:
    table.add_row(
        f"customers load rows/s, PII encrypted ({pii['customers']:,} rows)",
        f"{pii['encrypted_load_rows_per_s']:,.0f}",
        f"{pii['plain_load_rows_per_s']:,.0f} (same file, plain table)",
        f"{pii['ingest_ratio']:.2f}x",
        "-",
    )
    table.add_row(
        f"query decrypting {pii['emails']:,} emails (cleared user), ms",
        f"{pii['decrypting_query_ms']:.0f}",
        f"{pii['masked_query_ms']:.0f} (same query, masked user)",
        f"{pii['query_ratio']:.2f}x",
        "-",
    )


def _edge_rows(table: Table, edge: dict[str, Any]) -> None:
    table.add_row(
        f"edge readings/s ({edge['devices']} devices, {edge['batches']} batches of {edge['readings_per_batch']})",
        f"{edge['gateway_readings_per_s']:,.0f}",
        f"{edge['bare_readings_per_s']:,.0f} (bare FastAPI endpoint, same TLS)",
        f"{edge['ratio']:.2f}x",
        "-",
    )
    table.add_row(
        "edge upload latency p50 / p95 ms",
        f"{edge['gateway_p50_ms']:.0f} / {edge['gateway_p95_ms']:.0f}",
        f"p95 {edge['bare_p95_ms']:.0f} (bare)",
        f"{edge['gateway_p95_ms'] / edge['bare_p95_ms']:.1f}x (p95)",
        "-",
    )
    table.add_row(
        "per batch: token verify / seal / open, us",
        f"{edge['jwt_verify_us']:.0f} / {edge['seal_us']:.0f} / {edge['open_us']:.0f}",
        f"{edge['json_only_us']:.0f} (JSON round trip of the same readings)",
        f"{(edge['jwt_verify_us'] + edge['open_us']) / edge['json_only_us']:.1f}x (verify + open)",
        "-",
    )


if __name__ == "__main__":
    main()
