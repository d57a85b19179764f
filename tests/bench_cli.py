"""`lakehouse sql` one-row query against a bare DuckDB process on the same machine, alternating
runs: the whole command as a user pays for it (process start, imports, the query server's
round trip, the audit journal), and the same on a query over a gold table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LAKEHOUSE = str(Path(sys.executable).parent / "lakehouse")
BARE = [sys.executable, "-c", "import duckdb; duckdb.sql('select 1').fetchall()"]


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def bench_cli(home: Path, runs: int = 15) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["LAKEHOUSE_HOME"] = str(home)
    one_row = [LAKEHOUSE, "sql", "select 1"]
    gold = [LAKEHOUSE, "sql", "select count(*) from gold.fct_sales"]
    cold_env = {**env, "LAKEHOUSE_ENGINE__QUERY_SERVER": "off"}
    # the first query starts the server; wait until it answers
    _timed(one_row, env)
    for _ in range(100):
        if (home / "state" / "query.sock").exists():
            break
        time.sleep(0.1)
    _timed(one_row, env)
    ours, bare, table, cold = [], [], [], []
    for _ in range(runs):
        ours.append(_timed(one_row, env))
        bare.append(_timed(BARE, env))
        table.append(_timed(gold, env))
    for _ in range(3):
        cold.append(_timed(one_row, cold_env))
    (home / "state" / "query.sock").unlink(missing_ok=True)  # the server stops within a second
    return {
        "runs": runs,
        "cli_s": _median(ours),
        "bare_duckdb_s": _median(bare),
        "ratio": _median(ours) / _median(bare),
        "cli_gold_s": _median(table),
        "gold_ratio": _median(table) / _median(bare),
        "no_server_s": _median(cold),
        "no_server_ratio": _median(cold) / _median(bare),
    }
