"""``make demo``: the reference domain from generation to gold KPIs, on the configured profile."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from lakehouse._api import Lakehouse
from lakehouse.config import PROJECT_ENV, BrokerSettings, Settings, project_of, scratch_dir
from lakehouse.errors import LakehouseError
from lakehouse.transform import started_dbt

from ._domain import DAYS, START, generate, write_files

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


STREAMED_TOPICS = ("orders", "order_lines")


def _events_in_bronze(lh: Lakehouse, topic: str) -> int:
    """How many events of ``topic`` its bronze table holds, by the Kafka offsets it recorded
    (the next offset of each partition, in the commit that wrote the rows)."""
    from lakehouse.iceberg import table_marks

    identifier = f"bronze.{topic}"
    if not lh.catalog.table_exists(identifier):
        return 0
    marks = table_marks(lh.catalog.load_table(identifier))
    return sum(end for name, end in marks.items() if name.rpartition("/")[0] == topic)


def _stream_slice(settings: Settings, lh: Lakehouse, *, scale: float, seed: int) -> str:
    """Publish events and sink them into bronze: on the configured broker (the stack's Apache
    Kafka while it runs), else on the embedded broker, started and stopped here.

    A rerun whose tables already hold the slice streams nothing: the local broker keeps its log
    in memory, so the log a rerun starts is empty and the tables' offset marks count events it
    does not hold (the sink refuses to skip past them). If an earlier run stopped part way,
    the slice is published again and read from the new log's start, the reset recorded in the
    tables (``accept_offset_reset``)."""
    from lakehouse.config import recorded_alive
    from lakehouse.ingest.kafka import Sink
    from lakehouse.local import read_broker_state, start_broker, stop_broker

    from ._produce import produce

    held = {topic: _events_in_bronze(lh, topic) for topic in STREAMED_TOPICS}
    if all(count >= STREAMED for count in held.values()):
        return "already in bronze (offsets recorded in the tables): nothing doubled"
    broker: str | BrokerSettings
    if lh.settings.broker.bootstrap:  # the stack's Apache Kafka (SASL_SSL), or a configured broker
        ours, broker = False, lh.settings.broker
    else:
        running = read_broker_state(settings)
        ours = not (running and recorded_alive(running))  # a broker someone started is left running
        broker = str(start_broker(settings)["bootstrap"])
    reset = ours and settings.profile == "local" and any(held.values())
    # a broker that keeps its log (the stack's Kafka) still holds a slice an earlier run had
    # begun to land: publishing it again would put its events in the log twice
    publish = ours or not any(held.values())
    try:
        for topic in STREAMED_TOPICS if publish else ():
            produce(
                broker,
                topic,
                count=STREAMED,
                seed=seed,
                scale=scale,
                partitions=settings.broker.partitions,
                project=lh.project,
            )
        stats = Sink(
            lh.catalog,
            broker,
            list(STREAMED_TOPICS),
            # every event is in the log before the sink starts, and it exits only once it has read
            # to each partition's end: no need to wait for more, nor to hold a batch for 2 s
            idle_exit=0.5,
            batch_min_records=STREAMED,
            project=lh.project,
            settings=lh.settings,
            accept_offset_reset=reset,
        ).run()
    finally:
        if ours:
            stop_broker(settings)
    rows = sum(stats.rows.values())
    if not rows:
        return "already in bronze (offsets recorded in the tables): nothing doubled"
    landed = f"{rows:,} new rows in bronze.orders and bronze.order_lines ({stats.commits} commits)"
    if reset:
        landed += (
            "; an earlier run had stopped part way and its broker log (in memory) was gone: the slice "
            "was read again from the new log's start, the reset recorded in the tables"
        )
    return landed


EDGE_STORES = 3


EDGE_DAYS = 7  # each device reports a week after the reference period, two units per store


EDGE_COMMAND_TIMEOUT_S = 120.0  # `lakehouse-edge enroll` / `status`: a round trip or a file read


EDGE_DELIVERY_TIMEOUT_S = 600.0  # the agents together, to seal and upload their week of readings


def _edge_command(edge: list[str], command: list[str], env: dict[str, str]) -> str:
    """Run a short ``lakehouse-edge`` command; its stdout, or one line saying what went wrong."""
    try:
        done = subprocess.run(
            [*edge, *command], capture_output=True, text=True, env=env, timeout=EDGE_COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise LakehouseError(
            f"`lakehouse-edge {command[0]}` did not finish within {EDGE_COMMAND_TIMEOUT_S:g} s and was "
            "stopped; is the gateway answering?"
        ) from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LakehouseError(f"`lakehouse-edge {command[0]}` failed (exit {done.returncode}): {last}")
    return done.stdout


@dataclass
class _Gateway:
    """The demo's gateway process, started in the background."""

    server: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str]


@contextmanager
def _gateway(settings: Settings) -> Iterator[_Gateway]:
    """Start the edge gateway without waiting for it (its start takes seconds, spent while the
    Kafka slice runs); stop it when the block ends."""
    import os
    import sys

    from lakehouse.ingest.edge import tls_files
    from lakehouse.local import free_port, terminate

    tls_files(settings)  # the CA and certificate, made here once, before the gateway reads them
    port = free_port(set())
    env = {
        **os.environ,
        "LAKEHOUSE_HOME": str(settings.home),
        "LAKEHOUSE_PROFILE": settings.profile,
        PROJECT_ENV: str(project_of(settings).root),
    }
    log = settings.state_dir / "gateway" / "demo-gateway.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as log_file:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "lakehouse"), "gateway", "serve", "--port", str(port)],
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,
        )
    try:
        yield _Gateway(server, port, log, env)
    finally:
        terminate(server.pid)


def _edge_slice(settings: Settings, gateway: _Gateway, *, store_ids: list[str]) -> str:
    """Once the gateway listens, enroll one simulated device per store and let the agents upload
    a week of readings. Devices already enrolled and delivered are left alone."""
    import json
    import sys

    from lakehouse.config import write_private
    from lakehouse.ingest.edge import registry, tls_files
    from lakehouse.local import wait_for_port

    from ._domain import DAYS, READING_MINUTES, START

    ca_file, _, _ = tls_files(settings)
    bin_dir = Path(sys.executable).parent
    env, log, port = gateway.env, gateway.log, gateway.port
    per_device = 2 * EDGE_DAYS * 24 * 60 // READING_MINUTES
    agents = []
    try:
        wait_for_port("127.0.0.1", port, 60, pid=gateway.server.pid, log=str(log))
        url = f"https://127.0.0.1:{port}"
        for store in store_ids[:EDGE_STORES]:
            state = settings.home / "edge-demo" / store
            edge = [str(bin_dir / "lakehouse-edge"), "--state-dir", str(state), "--log-level", "WARNING"]
            if not (state / "device.json").exists():
                reg = registry(settings)
                try:
                    token, _ = reg.issue_enrollment_token(store, settings.gateway.enrollment_ttl)
                finally:
                    reg.close()
                token_file = state.parent / f".{store}.token"
                write_private(token_file, token)
                try:
                    _edge_command(
                        edge,
                        [
                            "enroll",
                            "--gateway",
                            url,
                            "--ca-file",
                            str(ca_file),
                            "--token-file",
                            str(token_file),
                        ],
                        env,
                    )
                finally:
                    token_file.unlink(missing_ok=True)
            status = json.loads(_edge_command(edge, ["status"], env))
            if status["queue"]["last_seq"] and not status["queue"]["pending_batches"]:
                continue  # delivered on an earlier run
            source = ["--start", (START + dt.timedelta(days=DAYS)).isoformat(), "--limit", str(per_device)]
            if status["queue"]["last_seq"]:
                source = ["--source", "none"]  # an earlier run was interrupted: deliver its queue only
            agents.append(
                subprocess.Popen(
                    [
                        *edge,
                        "run",
                        "--units",
                        f"D-{store}-1:fridge,D-{store}-2:freezer",
                        "--seed",
                        store[-3:],
                        "--seconds-per-reading",
                        "0",
                        "--batch-size",
                        "96",
                        "--exit-when-drained",
                        *source,
                    ],
                    env=env,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + EDGE_DELIVERY_TIMEOUT_S
        for agent in agents:
            try:
                _, stderr = agent.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise LakehouseError(
                    f"the edge agents did not deliver within {EDGE_DELIVERY_TIMEOUT_S:g} s and were "
                    f"stopped; the gateway's log is {log}"
                ) from None
            if agent.returncode:
                raise LakehouseError(f"an edge agent failed: {stderr[-2000:]}")
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()  # our own child, by its handle
                agent.wait()
    if not agents:
        return "already in bronze (sequence numbers recorded in the table): nothing doubled"
    return f"{len(agents)} devices sealed {len(agents) * per_device:,} readings, uploaded over TLS, landed exactly once"


GOVERNED_USERS = ("carol", "dana", "alice", "sam", "svc-ml")


def _as_user(settings: Settings, user: str) -> tuple[str, str, str, str, str]:
    """One row of the governed view: what ``user`` sees, through their own governed session
    (or as that user on Trino, which applies the same policy)."""
    from lakehouse.governance import load_policy

    rows, stores, email = "denied", "-", "denied"
    with Lakehouse(settings, user=user) as as_user:
        readable = {f"{t.layer}.{t.table}" for t in as_user.tables()}
        if "gold.fct_sales" in readable:
            count, distinct = (
                as_user.sql("select count(*) as n, count(distinct store_id) as s from gold.fct_sales")
                .to_pylist()[0]
                .values()
            )
            rows, stores = f"{count:,}", str(distinct)
        if "gold.dim_customer" in readable:
            query = "select email from gold.dim_customer where email is not null order by customer_sk limit 1"
            email = str(as_user.sql(query).column(0)[0].as_py())[:40]
        role = ", ".join(sorted(load_policy(as_user.project.policies_dir).principal(user).roles))
    return user, role, rows, stores, email


def _governed_view(settings: Settings) -> RichTable:
    """What five users of the reference policy see of the same gold tables. Two users at a
    time: each session is a process of its own, and the platform prepares one user's rows
    (filtered, masked, decrypted) while the other's session loads them (9.8 s -> 6.3 s here)."""
    from concurrent.futures import ThreadPoolExecutor

    governed = RichTable("user", "role", "fct_sales rows", "stores", "a customer email")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="governed-view") as pool:
        for row in pool.map(lambda user: _as_user(settings, user), GOVERNED_USERS):
            governed.add_row(*row)
    return governed


def _load_reference(settings: Settings, lh: Lakehouse, *, scale: float, seed: int, console: Console) -> int:
    """Steps 1 and 2: generate the reference domain and load it into bronze; returns the rows
    refused because their customer was forgotten.

    The files hold personal data in clear, so they live in a private (0700) directory that is
    removed once they are loaded, or the load failed: no plaintext copy outlives the load. The
    same scale and seed give the same bytes, so a rerun's files are recognised as loaded (batch
    ids are content hashes) and nothing doubles. A customer forgotten with ``gdpr forget`` is
    generated again, but not loaded again: the load keeps each such row in bronze.dead_letters
    with the reason, without its data."""
    refused = 0
    t = _step(console, f"1. Generate the reference domain (scale {scale}, seed {seed})")
    legacy = settings.home / "reference"  # where earlier versions kept them, for good
    if legacy.is_dir():
        shutil.rmtree(legacy)
    with scratch_dir(settings.state_dir / "reference", "demo-") as data_dir:
        files = write_files(generate(scale, seed, lh.project), data_dir)
        console.print(
            f"   {len(files)} files in a private directory, removed after loading "
            f"({time.perf_counter() - t:.1f}s)"
        )

        t = _step(console, "2. Load bronze (atomic, idempotent: files already loaded are skipped)")
        for name, path in sorted(files.items()):
            result = lh.load(f"bronze.{name}", [Path(path)])
            state = f"{result.rows:>9,} rows" if result.files_loaded else "  already loaded"
            if result.rows_refused:
                state += (
                    f", {result.rows_refused:,} refused: forgotten customers (gdpr forget), "
                    "kept in bronze.dead_letters without their data"
                )
            refused += result.rows_refused
            console.print(f"   bronze.{name:<22}{state}")
    console.print(f"   ({time.perf_counter() - t:.1f}s)")
    return refused


def run_demo(settings: Settings, *, scale: float, seed: int, console: Console) -> None:
    started = time.perf_counter()
    lh = Lakehouse(settings)
    console.print(f"[bold]Lakehouse demo[/bold]: profile {settings.profile}, state in {settings.home}")

    # dbt starts and parses the project while the data is generated and lands, and the gateway
    # starts while the Kafka slice runs: seconds that do not depend on the data. The build runs
    # once every route has landed.
    with started_dbt(settings, ["build", "--quiet"], held=True) as build:
        refused = _load_reference(settings, lh, scale=scale, seed=seed, console=console)
        stores = [
            str(s)
            for s in lh.sql("select distinct store_id from bronze.stores order by 1").column(0).to_pylist()
        ]
        with _gateway(settings) as gateway:
            t = _step(
                console, f"3. Stream a slice through Kafka: {STREAMED:,} orders and their lines, exactly once"
            )
            streamed = _stream_slice(settings, lh, scale=scale, seed=seed)
            console.print(f"   {streamed} ({time.perf_counter() - t:.1f}s)")

            t = _step(
                console,
                f"4. Edge devices: {EDGE_STORES} simulated Raspberry Pis enroll and upload sealed readings",
            )
            edge = _edge_slice(settings, gateway, store_ids=stores)
            console.print(f"   {edge} ({time.perf_counter() - t:.1f}s)")
        t = _step(console, "5. dbt build: silver, gold, platinum as Iceberg tables, with tests and contracts")
        code = build()
    if code != 0:
        raise LakehouseError(
            "dbt build failed (its report is above); nothing after the failing model was published"
        )
    console.print(f"   done ({time.perf_counter() - t:.1f}s)")

    _step(console, "6. What landed")
    per_layer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for info in lh.tables():
        per_layer[info.layer][0] += 1
        per_layer[info.layer][1] += info.rows or 0
    table = RichTable("layer", "tables", "rows")
    for layer in ("bronze", "silver", "gold", "platinum"):
        tables, rows = per_layer.get(layer, [0, 0])
        table.add_row(layer, str(tables), f"{rows:,}")
    console.print(table)

    kpis = RichTable("gold KPI", "value")
    via_kafka = lh.sql("select count(distinct order_id) from gold.fct_sales where order_id like 'K%'")
    kpis.add_row("orders that arrived through Kafka", f"{via_kafka.column(0)[0].as_py():,}")
    edge_start = (START + dt.timedelta(days=DAYS)).date().isoformat()
    via_edge = lh.sql(
        "select count(*), round(100 * avg(case when is_compliant then 1 else 0 end), 1) "
        f"from gold.mart_cold_chain_compliance where date_day >= date '{edge_start}'"
    ).to_pylist()[0]
    values = list(via_edge.values())
    kpis.add_row("unit-days reported by edge devices (compliant %)", f"{values[0]:,} ({values[1]})")
    for label, query in KPI_QUERIES.items():
        value = lh.sql(query).column(0)[0].as_py()
        kpis.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(kpis)
    lh.close()

    _step(console, "7. The same gold table through policies/ (lakehouse sql --as USER)")
    console.print(_governed_view(settings))

    finished = f"\nDemo finished in {time.perf_counter() - started:.0f}s"
    if refused:
        finished += (
            f" ({refused:,} generated row(s) of forgotten customers were not loaded; "
            "bronze.dead_letters says why)"
        )
    console.print(f"{finished}. Next:")
    console.print("  .venv/bin/lakehouse tables")
    console.print(
        '  .venv/bin/lakehouse sql --schema gold "select * from mart_cold_chain_compliance order by minutes_above_safe desc limit 5"'
    )
    console.print('  .venv/bin/lakehouse sql -o json "select * from platinum.feat_demand_daily limit 3"')
    console.print("  .venv/bin/lakehouse dbt docs generate        # lineage of every layer")
    console.print(
        '  .venv/bin/lakehouse sql --as sam "select store_id, sum(net_revenue) from gold.fct_sales group by 1"'
    )
    console.print("  make test                                    # the whole suite")
