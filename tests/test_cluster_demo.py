"""`lakehouse demo` in the stack profile, on the session's whole stack: files loaded through
Nessie, the Kafka slice through Apache Kafka (SASL_SSL), edge devices through the gateway, dbt on
Trino, and the governed view as each user on Trino."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.dbt]

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_runs_on_the_clusters_services(cluster_home: Path) -> None:
    env = {"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_PROJECT_DIR": str(REPO)}
    result = run_cli("demo", "--scale", "0.2", "--seed", "11", home=cluster_home, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "profile stack" in out
    assert re.search(r"4,000 new rows in bronze.orders and bronze.order_lines", out), out
    assert re.search(r"devices sealed [\d,]+ readings, uploaded over TLS, landed exactly once", out), out
    assert re.search(r"orders that arrived through Kafka\s+│ 2,000", out), out
    # the governed view, each user on Trino: sam one store, carol personal data in clear, dana masked
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert re.search(r"│ 1\s+│", rows["sam"]), rows["sam"]
    assert "@" in rows["carol"] and "pii:v1" not in rows["carol"], rows["carol"]
    assert "@" not in rows["dana"] and "pii:v1" not in rows["dana"], rows["dana"]
    assert "denied" in rows["svc-ml"], rows["svc-ml"]
