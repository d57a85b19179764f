"""`make demo` end to end at a small scale: every path lands and flows to gold, twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.kafka, pytest.mark.dbt]


def test_demo_runs_and_reruns_without_doubling(home: Path) -> None:
    first = run_cli("demo", "--scale", "0.15", "--seed", "7", home=home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = first.stdout
    assert "4,000 new rows in bronze.orders and bronze.order_lines" in text
    assert "2 devices sealed 2,688 readings" in text  # scale 0.15 has 2 stores: 2 units x 7 days x 96
    assert "orders that arrived through Kafka" in text and "unit-days reported by edge devices" in text
    sam = next(line for line in text.splitlines() if line.startswith("│ sam "))
    assert "store_manager" in sam and "│ 1 " in sam  # one store under the policy
    svc = next(line for line in text.splitlines() if line.startswith("│ svc-ml "))
    assert "denied" in svc

    again = run_cli("demo", "--scale", "0.15", "--seed", "7", home=home)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already in bronze (offsets recorded in the tables): nothing doubled" in again.stdout
    assert "already in bronze (sequence numbers recorded in the table): nothing doubled" in again.stdout

    def kafka_orders(output: str) -> str:
        return next(line for line in output.splitlines() if "orders that arrived through Kafka" in line)

    assert kafka_orders(text) == kafka_orders(again.stdout)
