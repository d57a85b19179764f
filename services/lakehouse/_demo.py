"""``make demo``: the reference domain from generation to gold KPIs, on the configured profile."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from ._api import Lakehouse
from ._dbt import run_dbt
from ._reference import generate, write_files
from ._settings import Settings
from .errors import LakehouseError

KPI_QUERIES = {
    "net revenue": "select sum(net_revenue) from gold.fct_sales",
    "orders": "select count(distinct order_id) from gold.fct_sales",
    "average basket": "select round(sum(net_revenue) / count(distinct order_id), 2) from gold.fct_sales",
    "gross margin %": "select round(100 * sum(margin) / sum(net_revenue), 1) from gold.fct_sales",
    "top region": """
        select s.region_name || ' (' || cast(sum(m.net_revenue) as varchar) || ')'
        from gold.mart_daily_sales_by_store m join gold.dim_store s using (store_id)
        group by s.region_name order by sum(m.net_revenue) desc limit 1""",
    "waste cost": "select sum(waste_cost) from gold.fct_waste",
    "waste from temperature %": """
        select round(100 * sum(case when reason_code = 'TEMP_EXCURSION' then waste_cost else 0 end)
                     / sum(waste_cost), 1) from gold.fct_waste""",
    "unit-days cold-chain compliant %": (
        "select round(100 * avg(case when is_compliant then 1 else 0 end), 1) from gold.mart_cold_chain_compliance"
    ),
    "worst unit (minutes above safe)": """
        select device_id || ' (' || cast(sum(minutes_above_safe) as varchar) || ')'
        from gold.mart_cold_chain_compliance group by device_id order by sum(minutes_above_safe) desc limit 1""",
}


def _step(console: Console, title: str) -> float:
    console.print(f"\n[bold]{title}[/bold]")
    return time.perf_counter()


STREAMED = 2_000


def _stream_slice(settings: Settings, lh: Lakehouse, *, scale: float, seed: int) -> str:
    """Start the embedded broker, publish events, sink them into bronze, stop the broker."""
    from ._broker import start_broker, stop_broker
    from ._produce import produce
    from ._sink import Sink

    bootstrap = str(start_broker(settings)["bootstrap"])
    try:
        for topic in ("orders", "order_lines"):
            produce(
                bootstrap,
                topic,
                count=STREAMED,
                seed=seed,
                scale=scale,
                partitions=settings.broker.partitions,
            )
        stats = Sink(
            lh.catalog, bootstrap, ["orders", "order_lines"], idle_exit=2, settings=lh.settings
        ).run()
    finally:
        stop_broker(settings)
    rows = sum(stats.rows.values())
    return (
        f"{rows:,} new rows in bronze.orders and bronze.order_lines ({stats.commits} commits)"
        if rows
        else ("already in bronze (offsets recorded in the tables): nothing doubled")
    )


def run_demo(settings: Settings, *, scale: float, seed: int, console: Console) -> None:
    started = time.perf_counter()
    lh = Lakehouse(settings)
    console.print(f"[bold]Lakehouse demo[/bold]: profile {settings.profile}, state in {settings.home}")

    t = _step(console, f"1. Generate the reference domain (scale {scale}, seed {seed})")
    data_dir = settings.home / "reference" / f"scale-{scale:g}-seed-{seed}"
    files = {p.stem: p for p in data_dir.glob("*.parquet")}
    if len(files) < 12:
        files = write_files(generate(scale, seed), data_dir)
    console.print(f"   {len(files)} files in {data_dir} ({time.perf_counter() - t:.1f}s)")

    t = _step(console, "2. Load bronze (atomic, idempotent: files already loaded are skipped)")
    for name, path in sorted(files.items()):
        result = lh.load(f"bronze.{name}", [Path(path)])
        state = f"{result.rows:>9,} rows" if result.files_loaded else "  already loaded"
        console.print(f"   bronze.{name:<22}{state}")
    console.print(f"   ({time.perf_counter() - t:.1f}s)")

    t = _step(console, f"3. Stream a slice through Kafka: {STREAMED:,} orders and their lines, exactly once")
    streamed = _stream_slice(settings, lh, scale=scale, seed=seed)
    console.print(f"   {streamed} ({time.perf_counter() - t:.1f}s)")

    t = _step(console, "4. dbt build: silver, gold, platinum as Iceberg tables, with tests and contracts")
    code = run_dbt(settings, ["build", "--quiet"])
    if code != 0:
        raise LakehouseError(
            "dbt build failed (its report is above); nothing after the failing model was published"
        )
    console.print(f"   done ({time.perf_counter() - t:.1f}s)")

    _step(console, "5. What landed")
    per_layer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for info in lh.tables():
        per_layer[info.layer][0] += 1
        per_layer[info.layer][1] += info.rows
    table = RichTable("layer", "tables", "rows")
    for layer in ("bronze", "silver", "gold", "platinum"):
        tables, rows = per_layer.get(layer, [0, 0])
        table.add_row(layer, str(tables), f"{rows:,}")
    console.print(table)

    kpis = RichTable("gold KPI", "value")
    via_kafka = lh.sql("select count(distinct order_id) from gold.fct_sales where order_id like 'K%'")
    kpis.add_row("orders that arrived through Kafka", f"{via_kafka.column(0)[0].as_py():,}")
    for label, query in KPI_QUERIES.items():
        value = lh.sql(query).column(0)[0].as_py()
        kpis.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(kpis)
    lh.close()

    console.print(f"\nDemo finished in {time.perf_counter() - started:.0f}s. Next:")
    console.print("  .venv/bin/lakehouse tables")
    console.print(
        '  .venv/bin/lakehouse sql --schema gold "select * from mart_cold_chain_compliance order by minutes_above_safe desc limit 5"'
    )
    console.print('  .venv/bin/lakehouse sql -o json "select * from platinum.feat_demand_daily limit 3"')
    console.print("  .venv/bin/lakehouse dbt docs generate        # lineage of every layer")
    console.print("  make test                                    # the whole suite")
