"""The stack profile's figures (``--only stack``), each against a baseline in the same run:

- stack start: seconds until every service answers (per service, as ``stack start`` records);
- dbt build on Trino: seconds per million bronze rows, against the embedded build (dbt-duckdb
  committing through pyiceberg) of the same files in the same run;
- gold queries on Trino (as the operator, over HTTPS) against the embedded engine reading the
  same Nessie tables, p50/p95;
- the Kafka sink on Apache Kafka (SASL_SSL, SCRAM): events/s to committed bronze rows against a
  raw consume of the same topic by the same client library over the same TLS login, on three
  topics (the median pair is reported, with the range).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from lakehouse import Lakehouse, Settings
from lakehouse.transform import run_dbt

from .bench import percentile, raw_consume

SINK_TOPICS = ("returns", "waste", "shipments")


def _timed(queries: dict[str, str], lh: Lakehouse, runs: int) -> list[float]:
    seconds = []
    for query in queries.values():
        lh.sql(query)  # warm: metadata cached, plans compiled
        for _ in range(runs):
            t = time.perf_counter()
            lh.sql(query)
            seconds.append(time.perf_counter() - t)
    return seconds


def bench_stack(
    work: Path, files: dict[str, Path], *, query_runs: int, events: int, queries: dict[str, str]
) -> dict[str, Any]:
    from lakehouse.ingest.kafka import Sink
    from lakehouse.local import start_stack, stop_stack
    from lakehouse.reference import produce

    stack = Settings(profile="stack", home=work / "stack-home")
    local = Settings(home=work / "stack-baseline-home")
    t = time.perf_counter()
    state = start_stack(stack)
    started_s = time.perf_counter() - t
    try:
        per_service = {name: record.get("start_seconds") for name, record in state["services"].items()}
        rows = 0
        for settings in (stack, local):
            with Lakehouse(settings) as lh:
                rows = sum(lh.load(f"bronze.{name}", [path]).rows for name, path in sorted(files.items()))
        t = time.perf_counter()
        assert run_dbt(stack, ["build", "--quiet"]) == 0, "dbt build on Trino failed"
        trino_build_s = time.perf_counter() - t
        t = time.perf_counter()
        assert run_dbt(local, ["build", "--quiet"]) == 0, "dbt build on DuckDB failed"
        duckdb_build_s = time.perf_counter() - t

        with Lakehouse(stack) as on_trino:
            trino = _timed(queries, on_trino, query_runs)
            broker = on_trino.settings.broker
            catalog = on_trino.catalog
            # three topics, each a raw consume and then the sink over the same records: the
            # ratio of each pair, and their median (one pair swings with what else runs)
            sink_runs = []
            for seed, topic in enumerate(SINK_TOPICS, start=1):
                produce(broker, topic, count=events, seed=seed)
                raw_s = raw_consume(broker, topic, events)
                stats = Sink(catalog, broker, [topic], idle_exit=2, settings=on_trino.settings).run()
                assert sum(stats.rows.values()) == events, stats.rows
                assert stats.first_message_at is not None and stats.last_commit_at is not None
                sink_runs.append((topic, raw_s, stats.last_commit_at - stats.first_message_at))
        embedded_settings = stack.model_copy(deep=True)
        embedded_settings.engine.type = "duckdb"
        with Lakehouse(embedded_settings) as embedded:
            duckdb = _timed(queries, embedded, query_runs)
    finally:
        stop_stack(stack)
    ratios = sorted(raw_s / sink_s for _, raw_s, sink_s in sink_runs)
    median = sorted(sink_runs, key=lambda run: run[1] / run[2])[len(sink_runs) // 2]
    per_million = 1e6 / rows
    return {
        "start_s": started_s,
        "start_per_service_s": per_service,
        "bronze_rows": rows,
        "dbt_trino_s_per_m_rows": trino_build_s * per_million,
        "dbt_duckdb_s_per_m_rows": duckdb_build_s * per_million,
        "dbt_ratio": trino_build_s / duckdb_build_s,
        "trino_p50_ms": 1000 * percentile(trino, 0.5),
        "trino_p95_ms": 1000 * percentile(trino, 0.95),
        "embedded_p50_ms": 1000 * percentile(duckdb, 0.5),
        "embedded_p95_ms": 1000 * percentile(duckdb, 0.95),
        "query_ratio_p50": percentile(trino, 0.5) / percentile(duckdb, 0.5),
        "query_ratio_p95": percentile(trino, 0.95) / percentile(duckdb, 0.95),
        "query_mean_ms": 1000 * statistics.fmean(trino),
        "events": events,
        "sink_events_per_s": events / median[2],
        "raw_consume_events_per_s": events / median[1],
        "sink_ratio": median[1] / median[2],
        "sink_ratios": {topic: raw_s / sink_s for topic, raw_s, sink_s in sink_runs},
        "sink_ratio_range": (ratios[0], ratios[-1]),
    }


def stack_rows(table: Any, result: dict[str, Any]) -> None:
    services = ", ".join(f"{name} {seconds}" for name, seconds in result["start_per_service_s"].items())
    table.add_row(
        "stack start: every service answers, s",
        f"{result['start_s']:.1f}",
        f"per service: {services}",
        "-",
        "documented (README)",
    )
    table.add_row(
        f"dbt build on Trino, s per million bronze rows ({result['bronze_rows']:,} rows)",
        f"{result['dbt_trino_s_per_m_rows']:.1f}",
        f"{result['dbt_duckdb_s_per_m_rows']:.1f} (the embedded build, same files)",
        f"{result['dbt_ratio']:.2f}x",
        "-",
    )
    table.add_row(
        "gold queries on Trino, p50 / p95 ms",
        f"{result['trino_p50_ms']:.0f} / {result['trino_p95_ms']:.0f}",
        f"{result['embedded_p50_ms']:.0f} / {result['embedded_p95_ms']:.0f} (embedded engine, same Nessie tables)",
        f"{result['query_ratio_p50']:.2f}x / {result['query_ratio_p95']:.2f}x",
        "-",
    )
    table.add_row(
        f"sink on Apache Kafka (SASL_SSL), events/s ({result['events']:,} per topic, median of "
        f"{len(result['sink_ratios'])} topics)",
        f"{result['sink_events_per_s']:,.0f}",
        f"{result['raw_consume_events_per_s']:,.0f} (raw consume, same client and login)",
        f"{result['sink_ratio']:.2f}x (range {result['sink_ratio_range'][0]:.2f}-{result['sink_ratio_range'][1]:.2f})",
        ">= 0.70x",
    )
