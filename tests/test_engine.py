"""Queries through the embedded engine return what an independent computation returns."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lakehouse import Lakehouse, NoSuchTableError, QueryError

from .conftest import load_reference, run_cli


@pytest.fixture
def loaded(lh: Lakehouse, reference_files: dict[str, Path]) -> Lakehouse:
    load_reference(lh, reference_files)
    return lh


@pytest.mark.unit
def test_counts_match_pyiceberg(loaded: Lakehouse) -> None:
    for info in loaded.tables():
        via_iceberg = loaded.table(f"{info.layer}.{info.table}").scan().to_arrow().num_rows
        via_sql = loaded.sql(f"select count(*) as n from {info.layer}.{info.table}").column("n")[0].as_py()
        assert via_sql == via_iceberg == info.rows, info


@pytest.mark.unit
def test_join_cte_window_and_subquery_match_python(loaded: Lakehouse) -> None:
    orders = loaded.table("bronze.orders").scan().to_arrow().to_pylist()
    lines = loaded.table("bronze.order_lines").scan().to_arrow().to_pylist()
    # expected: units per store from distinct orders' lines, then rank stores by units
    store_of = {o["order_id"]: o["store_id"] for o in orders}
    units: dict[str, int] = defaultdict(int)
    for line in lines:
        if line["quantity"] is not None and line["order_id"] in store_of:
            units[store_of[line["order_id"]]] += line["quantity"]
    expected = sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))
    result = loaded.sql(
        """
        with order_store as (select distinct order_id, store_id from bronze.orders),
        per_store as (
            select s.store_id, sum(l.quantity) as units
            from bronze.order_lines l join order_store s on l.order_id = s.order_id
            where l.quantity is not null
            group by s.store_id
        )
        select store_id, units, rank() over (order by units desc, store_id) as rnk
        from per_store
        where units > (select -1)
        order by rnk
        """
    ).to_pylist()
    assert [(r["store_id"], r["units"]) for r in result] == expected
    assert [r["rnk"] for r in result] == list(range(1, len(expected) + 1))


@pytest.mark.unit
def test_default_schema_like_the_trino_cli(loaded: Lakehouse) -> None:
    qualified = loaded.sql("select count(*) as n from bronze.orders").to_pylist()
    assert loaded.sql("select count(*) as n from orders", schema="bronze").to_pylist() == qualified


@pytest.mark.unit
def test_unknown_table_suggests_the_close_match_not_every_table(loaded: Lakehouse) -> None:
    with pytest.raises(NoSuchTableError) as info:
        loaded.sql("select * from gold.nope")
    assert "gold.nope" in str(info.value) and "`lakehouse tables`" in str(info.value)
    assert "did you mean" not in str(info.value) and "bronze.orders" not in str(info.value)
    for typo, meant in [("bronze.order", "bronze.orders"), ("bronze.order_line", "bronze.order_lines")]:
        with pytest.raises(NoSuchTableError, match=rf"no table {typo}; did you mean {meant}"):
            loaded.sql(f"select count(*) from {typo}")
    with pytest.raises(NoSuchTableError, match=r"did you mean bronze\.orders"):
        loaded.sql("select * from ordrs", schema="bronze")
    with pytest.raises(NoSuchTableError, match=r"did you mean bronze\.orders"):
        loaded.sql("select * from gold.orders")  # the name in another layer


@pytest.mark.unit
def test_statements_run_in_turn_each_audited_and_tables_bound_lazily(loaded: Lakehouse) -> None:
    results = list(
        loaded.sql_each("select 1 as a; select 'x;y' as b -- a comment; select 3\n; select 2 as c")
    )
    assert [r.to_pylist() for _, r in results] == [[{"a": 1}], [{"b": "x;y"}], [{"c": 2}]]
    assert loaded.sql("select 1 as a; select 2 as c").to_pylist() == [{"c": 2}]
    # only the tables a query names are bound; a commit after a query is seen by the next one
    engine = loaded.engine
    assert {t.identifier for t in engine.tables} == set()  # type: ignore[union-attr]
    before = loaded.sql("select count(*) as n from bronze.stores").column("n")[0].as_py()
    assert {t.identifier for t in engine.tables} == {"bronze.stores"}  # type: ignore[union-attr]
    rows = loaded.table("bronze.stores").scan().to_arrow().slice(0, 1)
    loaded.table("bronze.stores").append(rows)
    assert loaded.sql("select count(*) as n from bronze.stores").column("n")[0].as_py() == before + 1
    loaded.flush_audit()
    logged = loaded.sql(
        "select query, tables from audit.query_log where query in ('select 1 as a', 'select 2 as c')"
    ).to_pylist()
    assert sorted(r["query"] for r in logged) == [
        "select 1 as a",
        "select 1 as a",
        "select 2 as c",
        "select 2 as c",
    ]


@pytest.mark.unit
def test_sql_errors_are_query_errors(loaded: Lakehouse) -> None:
    with pytest.raises(QueryError, match="syntax error"):
        loaded.sql("selec 1")


@pytest.mark.unit
def test_new_commits_are_visible_to_the_next_query(loaded: Lakehouse, tmp_path: Path) -> None:
    before = loaded.sql("select count(*) as n from bronze.regions").column("n")[0].as_py()
    (tmp_path / "r.csv").write_text("region_id\nR9\n")
    loaded.load("bronze.regions", [tmp_path / "r.csv"])
    assert loaded.sql("select count(*) as n from bronze.regions").column("n")[0].as_py() == before + 1


@pytest.mark.unit
def test_views_read_iceberg_metadata_not_private_files(loaded: Lakehouse, home: Path) -> None:
    table = loaded.table("bronze.sensor_readings")
    direct = loaded.sql(f"select count(*) as n from iceberg_scan('{table.metadata_location}')")
    assert direct.column("n")[0].as_py() == table.scan().to_arrow().num_rows
    hottest = loaded.sql("select max(temperature_c) as t from bronze.sensor_readings").column("t")[0].as_py()
    assert hottest == pc.max(table.scan().to_arrow().column("temperature_c")).as_py()
    # each view is a scan of its table's current Iceberg metadata, never a list of data files
    loaded.engine.connect()  # type: ignore[union-attr]  (binds every table, not only those named)
    views = {
        f"{r['schema_name']}.{r['view_name']}": r["sql"]
        for r in loaded.sql(
            "select schema_name, view_name, sql from duckdb_views() where not internal"
        ).to_pylist()
    }
    assert set(views) == {f"{i.layer}.{i.table}" for i in loaded.tables()}
    for name, sql in views.items():
        assert f"iceberg_scan('{loaded.table(name).metadata_location}')" in sql, sql
        assert ".parquet" not in sql, sql
    # what the engine keeps on disk (its extensions) is its owner's alone, like the home around it
    for path in (home, home / "duckdb", home / "duckdb" / "extensions"):
        assert path.stat().st_uid == os.getuid(), path
        assert path.stat().st_mode & 0o777 == 0o700, f"{path} {oct(path.stat().st_mode & 0o777)}"
    assert [p for p in home.rglob("*") if p.stat().st_uid != os.getuid()] == []


@pytest.mark.integration
def test_cli_tables_json_and_sql_outputs(home: Path, reference_files: dict[str, Path]) -> None:
    assert run_cli("load", "bronze.regions", str(reference_files["regions"]), home=home).returncode == 0
    listing = run_cli("tables", "--output", "json", home=home)
    assert listing.returncode == 0, listing.stderr
    (entry,) = json.loads(listing.stdout)
    assert set(entry) == {"layer", "table", "rows", "snapshots", "last_commit"}
    assert (entry["layer"], entry["table"], entry["rows"], entry["snapshots"]) == ("bronze", "regions", 4, 1)
    csv = run_cli(
        "sql", "--schema", "bronze", "--output", "csv", "select region_id from regions order by 1", home=home
    )
    assert csv.stdout.splitlines() == ['"region_id"', '"R1"', '"R2"', '"R3"', '"R4"']
    as_json = run_cli("sql", "-o", "json", "select count(*) as n from bronze.regions", home=home)
    assert json.loads(as_json.stdout) == [{"n": 4}]
    missing = run_cli("sql", "select * from bronze.orderz", home=home)
    assert (
        missing.returncode == 1 and "bronze.regions" in missing.stderr and "Traceback" not in missing.stderr
    )


@pytest.mark.unit
def test_reference_generation_is_deterministic() -> None:
    from lakehouse.reference import generate

    a, b, c = generate(0.1, seed=1), generate(0.1, seed=1), generate(0.1, seed=2)
    assert all(a[name].equals(b[name]) for name in a)
    assert not a["orders"].equals(c["orders"])


@pytest.mark.unit
def test_reference_domain_has_signal_and_dirt() -> None:
    from lakehouse.reference._domain import SENSOR_ERROR_C, generate

    data = generate(0.3, seed=3)
    orders = data["orders"].to_pylist()
    ids = Counter(o["order_id"] for o in orders)
    assert any(n > 1 for n in ids.values()), "re-sent orders"
    assert any(o["store_id"] == "S999" for o in orders), "bad store codes"
    assert any(o["channel"] not in ("store", "web") for o in orders), "badly cased channels"
    assert any(o["customer_id"] is None for o in orders), "guest checkouts"
    assert len({c["customer_id"] for c in data["customers"].to_pylist()}) < data["customers"].num_rows, (
        "moves"
    )
    temps = data["sensor_readings"].column("temperature_c")
    assert pc.sum(pc.equal(temps, SENSOR_ERROR_C)).as_py() > 0 and temps.null_count > 0
    # signal: Saturdays sell more than Mondays; temperature waste exists where units failed
    weekday = Counter(o["order_ts"].weekday() for o in orders)
    assert weekday[5] > 1.2 * weekday[0]
    assert "TEMP_EXCURSION" in set(data["waste"].column("reason_code").to_pylist())
