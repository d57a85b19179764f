"""The trino target: dbt compiles without a server and the SQL is Trino's, not DuckDB's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot

from .conftest import run_cli

pytestmark = pytest.mark.dbt

# Constructs DuckDB accepts and Trino rejects: they must stay behind macros (macros/cross_engine.sql).
DUCKDB_ONLY = {
    "trailing comma before FROM": re.compile(r",\s*\n?\s*from\b", re.IGNORECASE),
    "isodow()": re.compile(r"\bisodow\(", re.IGNORECASE),
    "dayofyear()": re.compile(r"\bdayofyear\(", re.IGNORECASE),
    "QUALIFY": re.compile(r"\bqualify\b", re.IGNORECASE),
    ":: casts": re.compile(r"::"),
    "regexp_replace flags": re.compile(r"regexp_replace\([^)]*'g'\)", re.IGNORECASE),
    "iceberg_scan": re.compile(r"iceberg_scan", re.IGNORECASE),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("trino") / "home"
    result = run_cli("dbt", "compile", "--target", "trino", "--no-populate-cache", home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return home / "dbt" / "trino" / "target" / "compiled" / "lakehouse" / "models"


@pytest.mark.integration
def test_every_model_compiles_for_trino_and_parses(compiled: Path) -> None:
    files = sorted(compiled.rglob("*.sql"))
    models = [f for f in files if f.parent.name in ("silver", "gold", "platinum")]
    assert len(models) == 34  # 12 staging + 6 intermediate (silver), 14 gold, 2 platinum
    for path in files:
        sql = path.read_text()
        sqlglot.parse(sql, read="trino", error_level=sqlglot.ErrorLevel.RAISE)
        for what, pattern in DUCKDB_ONLY.items():
            assert not pattern.search(sql), f"{path.name}: {what} is DuckDB-only SQL"


@pytest.mark.integration
def test_trino_sql_references_the_iceberg_catalog(compiled: Path) -> None:
    sql = (compiled / "gold" / "fct_sales.sql").read_text()
    assert '"iceberg"."silver"."int_order_lines"' in sql
    # engine differences resolve to Trino's functions through the dispatched macros
    assert "to_hex(md5(to_utf8(" in sql
    assert "day_of_week(date_day)" in (compiled / "gold" / "dim_date.sql").read_text()
    cadence = (compiled / "silver" / "int_sensor_cadence.sql").read_text()
    assert "array_sort(array_agg(interval_minutes)" in cadence and "approx_percentile" not in cadence
    spine = (compiled / "platinum" / "feat_device_health_hourly.sql").read_text()
    assert "unnest(sequence(" in spine and "generate_series" not in spine


@pytest.mark.unit
def test_the_lint_catches_duckdb_only_sql() -> None:
    sample = "select a,\n  b,\nfrom t where isodow(d) = 1"
    found = [what for what, pattern in DUCKDB_ONLY.items() if pattern.search(sample)]
    assert found == ["trailing comma before FROM", "isodow()"]
