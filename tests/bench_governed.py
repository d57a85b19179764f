"""Governed query overhead: the gold queries as policy-bound users against the same queries as
the operator on the same data, in the same run.

- operator: ``Lakehouse().engine`` with every table bound once (Iceberg scans of the current
  snapshots), the fastest path the platform has for unrestricted SQL;
- warm: each user's session answering the same queries again (its copies of the granted rows
  are current: the snapshot, the decision and the keystore did not change);
- cold: a new session per query (a new session process, the granted rows copied in), the cost a
  one-shot ``lakehouse sql --as`` pays.

Users: dana (every row, personal data masked), sam (one store's rows), alice (a region's rows,
through a lookup of gold.dim_store). Operator and user runs alternate, so load on the machine
falls on both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lakehouse import AccessDenied, Lakehouse, Settings

USERS = ("dana", "sam", "alice")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_governed(home: Path, queries: dict[str, str], runs: int = 10) -> dict[str, Any]:
    settings = Settings(home=home)
    operator = Lakehouse(settings)
    operator.engine.connect()  # bound once, outside the timing
    sessions = {user: Lakehouse(settings, user=user) for user in USERS}
    # per (user, query) the user may run: its samples, and the operator's of the same query
    governed: list[float] = []
    baseline: list[float] = []
    per_user: dict[str, tuple[list[float], list[float]]] = {user: ([], []) for user in USERS}
    cold: list[float] = []
    try:
        for query in queries.values():
            operator.engine.sql(query)
            allowed = []
            for user, session in sessions.items():
                try:
                    session.sql(query)
                except AccessDenied:  # e.g. a region analyst and the customer mart
                    continue
                allowed.append(user)
            base: list[float] = []
            mine: dict[str, list[float]] = {user: [] for user in allowed}
            for _ in range(runs):
                started = time.perf_counter()
                operator.engine.sql(query)
                base.append(time.perf_counter() - started)
                for user in allowed:
                    started = time.perf_counter()
                    sessions[user].sql(query)
                    mine[user].append(time.perf_counter() - started)
            for user in allowed:
                governed.extend(mine[user])
                baseline.extend(base)
                per_user[user][0].extend(mine[user])
                per_user[user][1].extend(base)
                with Lakehouse(settings, user=user) as fresh:
                    started = time.perf_counter()
                    fresh.sql(query)
                    cold.append(time.perf_counter() - started)
    finally:
        for session in sessions.values():
            session.close()
        operator.close()
    p50, p95 = _percentile(baseline, 0.5), _percentile(baseline, 0.95)
    return {
        "queries": len(queries),
        "runs_each": runs,
        "users": list(USERS),
        "operator_p50_ms": 1000 * p50,
        "operator_p95_ms": 1000 * p95,
        "governed_p50_ms": 1000 * _percentile(governed, 0.5),
        "governed_p95_ms": 1000 * _percentile(governed, 0.95),
        "ratio_p50": _percentile(governed, 0.5) / p50,
        "ratio_p95": _percentile(governed, 0.95) / p95,
        "per_user_ratio_p50": {
            u: _percentile(g, 0.5) / _percentile(b, 0.5) for u, (g, b) in per_user.items() if g
        },
        "cold_p50_ms": 1000 * _percentile(cold, 0.5),
        "cold_p95_ms": 1000 * _percentile(cold, 0.95),
    }
