"""dbt on the embedded engine: every layer lands as an Iceberg table; failing tests stop the build."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from lakehouse import Lakehouse, Settings

from .conftest import REPO, dbt_build, load_reference, run_cli

pytestmark = pytest.mark.dbt

GOLD = {
    "dim_date",
    "dim_store",
    "dim_product",
    "dim_customer",
    "dim_device",
    "fct_sales",
    "fct_returns",
    "fct_waste",
    "fct_quality",
    "fct_sensor_readings",
    "mart_daily_sales_by_store",
    "mart_product_performance",
    "mart_customer_360",
    "mart_cold_chain_compliance",
}
PLATINUM = {"feat_demand_daily", "feat_device_health_hourly"}
INTERMEDIATE = {
    "int_orders",
    "int_order_lines",
    "int_products_history",
    "int_customers_history",
    "int_sensor_readings",
    "int_sensor_cadence",
}


@pytest.mark.e2e
def test_every_layer_is_an_iceberg_table_any_engine_reads(built: Lakehouse, built_home: Path) -> None:
    tables = {(i.layer, i.table) for i in built.tables()}
    assert {t for layer, t in tables if layer == "gold"} == GOLD
    assert {t for layer, t in tables if layer == "platinum"} == PLATINUM
    silver = {t for layer, t in tables if layer == "silver"}
    assert len([t for t in silver if t.startswith("stg_")]) == 12  # one staging model per source
    assert silver - {t for t in silver if t.startswith("stg_")} == INTERMEDIATE
    # a plain pyiceberg catalog, not the platform, reads the same rows DuckDB's iceberg_scan does
    catalog = SqlCatalog(
        "lakehouse",
        uri=f"sqlite:///{built_home / 'catalog.db'}",
        warehouse=(built_home / "warehouse").as_uri(),
    )
    for name in ("gold.fct_sales", "platinum.feat_demand_daily", "silver.stg_orders"):
        table = catalog.load_table(name)
        scanned = built.sql(f"select count(*) as n from iceberg_scan('{table.metadata_location}')")
        assert table.scan().to_arrow().num_rows == scanned.column("n")[0].as_py() > 0
        # the model that made the table is recorded on it and on the snapshot the build wrote
        model = f"model.lakehouse.{name.split('.')[1]}"
        assert table.properties["lakehouse.dbt-model"] == model
        assert table.current_snapshot().summary.additional_properties["lakehouse.dbt-model"] == model


@pytest.mark.e2e
def test_silver_removes_the_dirt(built: Lakehouse) -> None:
    q = built.sql
    # staging is 1:1 with its source; the int_ layer deduplicates and conforms
    for model, source in (("stg_orders", "orders"), ("stg_sensor_readings", "sensor_readings")):
        counts = q(
            f"select (select count(*) from silver.{model}) - (select count(*) from bronze.{source}) as d"
        )
        assert counts.to_pylist() == [{"d": 0}], model
    assert q("select count(*) = count(distinct order_id) as ok from silver.int_orders").to_pylist() == [
        {"ok": True}
    ]
    assert q("select count(*) as n from silver.int_orders where store_id = 'S999'").to_pylist() == [{"n": 0}]
    channels = {r["channel"] for r in q("select distinct channel from silver.stg_orders").to_pylist()}
    assert channels == {"store", "web"}
    assert q(
        "select count(*) as n from silver.stg_sensor_readings where temperature_c < -60"
    ).to_pylist() == [{"n": 0}]
    bronze_dupes = (
        q("select count(*) - count(distinct order_id) as n from bronze.orders").column("n")[0].as_py()
    )
    assert bronze_dupes > 0  # there was dirt to remove
    unknown = q("select count(*) as n from silver.stg_orders where store_id = 'S999'").column("n")[0].as_py()
    assert unknown > 0  # and dirt that a join drops (counted by a test)


@pytest.mark.e2e
def test_scd2_history_is_contiguous_with_one_current_version(built: Lakehouse) -> None:
    gaps = built.sql(
        """
        select count(*) as n from (
            select valid_to, lead(valid_from) over (partition by customer_id order by valid_from) as next_from
            from gold.dim_customer
        ) where next_from is not null and next_from <> valid_to
        """
    )
    assert gaps.to_pylist() == [{"n": 0}]
    current = built.sql(
        "select customer_id, count(*) as n from gold.dim_customer where is_current group by 1 having n <> 1"
    )
    assert current.num_rows == 0
    moved = built.sql("select count(distinct customer_id) as n from gold.dim_customer where not is_current")
    assert moved.column("n")[0].as_py() > 0


@pytest.mark.e2e
def test_scd2_versions_follow_address_changes_not_ciphertexts(built: Lakehouse) -> None:
    # the address is encrypted with a fresh nonce each time; versions open on its fingerprint
    versions = built.sql(
        """
        select customer_id, street, city, postal_code, address_fingerprint, home_store_id
        from silver.int_customers_history order by customer_id, valid_from
        """
    ).to_pylist()
    assert all(v[c].startswith("pii:v1:") for v in versions for c in ("street", "city", "postal_code"))
    keystore = built.keystore
    moves = 0
    for before, after in itertools.pairwise(versions):
        if before["customer_id"] != after["customer_id"]:
            continue
        moves += 1
        tracked = [
            (*(keystore.decrypt(v[c]) for c in ("street", "city", "postal_code")), v["home_store_id"])
            for v in (before, after)
        ]
        assert tracked[0] != tracked[1]  # every new version is a real change...
        assert (before["address_fingerprint"] == after["address_fingerprint"]) == (
            tracked[0][:3] == tracked[1][:3]
        )
    assert moves > 0
    bronze = built.sql("select count(*) as n from bronze.customers").column("n")[0].as_py()
    assert len(versions) <= bronze


@pytest.mark.e2e
def test_sales_use_the_price_version_valid_when_sold(built: Lakehouse) -> None:
    wrong = built.sql(
        """
        select count(*) as n from gold.fct_sales f join gold.dim_product p using (product_sk)
        where f.unit_price <> p.unit_price
        """
    )
    assert wrong.to_pylist() == [{"n": 0}]


@pytest.mark.e2e
def test_cold_chain_compliance_matches_raw_readings(built: Lakehouse) -> None:
    # recompute minutes above the safe maximum from bronze, independently of dbt's models
    readings = built.table("bronze.sensor_readings").scan().to_arrow().to_pylist()
    limits = {
        d["device_id"]: d["safe_temp_max_c"]
        for d in built.table("bronze.devices").scan().to_arrow().to_pylist()
    }
    seen, minutes = set(), 0
    for r in readings:
        key = (r["device_id"], r["reading_ts"])
        if key in seen:
            continue
        seen.add(key)
        t = r["temperature_c"]
        if t is not None and -60 <= t <= 60 and t > limits[r["device_id"]]:
            minutes += 15
    total = built.sql("select sum(minutes_above_safe) as m from gold.mart_cold_chain_compliance").column("m")[
        0
    ]
    assert total.as_py() == minutes > 0


@pytest.mark.e2e
def test_platinum_features_cover_the_full_grid(built: Lakehouse) -> None:
    counts = built.sql(
        """
        select (select count(*) from platinum.feat_demand_daily) as rows,
               (select count(*) from gold.dim_store) * (select count(*) from gold.dim_product where is_current)
                 * (select count(*) from gold.dim_date) as grid
        """
    ).to_pylist()[0]
    assert counts["rows"] == counts["grid"]
    labels = built.sql(
        "select count(distinct label_excursion_next_6h) as n from platinum.feat_device_health_hourly"
    )
    assert labels.to_pylist() == [{"n": 2}]


@pytest.mark.e2e
def test_device_hours_without_readings_are_on_the_spine(built: Lakehouse) -> None:
    # every hour of each unit's reporting span has exactly one row, readings or not
    spans = built.sql(
        """
        select device_id, count(*) as n,
               date_diff('hour', min(reading_hour), max(reading_hour)) + 1 as hours
        from platinum.feat_device_health_hourly group by 1
        """
    ).to_pylist()
    assert spans and all(s["n"] == s["hours"] for s in spans)
    cadence = built.sql("select distinct cadence_minutes from silver.int_sensor_cadence").column(0)
    assert cadence.to_pylist() == [15.0]  # derived from the reference units' readings


@pytest.mark.e2e
def test_conflicting_readings_keep_the_copy_received_last(built_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    with Lakehouse(Settings(home=home)) as lh:
        a, b = lh.sql(
            """
            select device_id, store_id, reading_ts from silver.int_sensor_readings
            where temperature_c between 0 and 4 and copies_received = 1 order by device_id, reading_ts limit 2
            """
        ).to_pylist()
        # two later uploads of the same two readings: the first colder/warmer, the second the reverse
        for i, (for_a, for_b) in enumerate([(1.1, 9.9), (9.8, 1.2)]):
            rows = [{**a, "temperature_c": for_a}, {**b, "temperature_c": for_b}]
            if i == 0:  # and a reading of a unit the device master does not carry
                rows.append({**a, "device_id": "D-NOWHERE-1", "temperature_c": 3.0})
            path = tmp_path / f"resent-{i}.parquet"
            pq.write_table(pa.Table.from_pylist([{**r, "door_open": False} for r in rows]), path)
            lh.load("bronze.sensor_readings", [path])
    result = run_cli("dbt", "build", "--select", "stg_sensor_readings", "int_sensor_readings", home=home)
    assert result.returncode == 0, result.stdout[-3000:]
    # the dropped reading is counted: a warning, under the 1 % that would fail the build
    assert re.search(r"WARN 1 stg_sensor_readings_dropped_unknown_unit", result.stdout), result.stdout[-3000:]
    with Lakehouse(Settings(home=home)) as lh:
        kept = lh.sql(
            f"""
            select device_id, temperature_c, copies_received from silver.int_sensor_readings
            where (device_id, reading_ts) in (('{a["device_id"]}', timestamp '{a["reading_ts"]}'),
                                              ('{b["device_id"]}', timestamp '{b["reading_ts"]}'))
               or device_id = 'D-NOWHERE-1'
            order by reading_ts
            """
        ).to_pylist()
    # the last upload wins, warmer (a) or colder (b): keeping the coldest would have hidden 9.8
    assert [(r["temperature_c"], r["copies_received"]) for r in kept] == [(9.8, 3), (1.2, 3)]


@pytest.mark.e2e
def test_a_join_that_drops_too_many_rows_fails_the_build(built_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    with Lakehouse(Settings(home=home)) as lh:
        orders = lh.sql("select count(*) as n from bronze.orders").column("n")[0].as_py()
        misrouted = lh.sql(f"select * from bronze.orders limit {orders // 20}")  # 5 % of the orders
        misrouted = misrouted.set_column(
            misrouted.schema.get_field_index("store_id"), "store_id", pa.array(["S999"] * misrouted.num_rows)
        )
        misrouted = misrouted.set_column(
            misrouted.schema.get_field_index("order_id"),
            "order_id",
            pa.array([f"X{i}" for i in range(misrouted.num_rows)]),
        )
        pq.write_table(misrouted, tmp_path / "misrouted.parquet")
        lh.load("bronze.orders", [tmp_path / "misrouted.parquet"])
    result = run_cli("dbt", "build", "--select", "stg_orders", home=home)
    assert result.returncode != 0
    assert re.search(r"FAIL \d+ stg_orders_dropped_unknown_store", result.stdout), result.stdout[-3000:]
    assert "configured to fail if >max(allowed_dropped_rows)" in result.stdout


@pytest.mark.e2e
def test_rebuild_keeps_history_and_time_travel(built: Lakehouse, built_home: Path) -> None:
    table = built.table("gold.dim_store")
    first = table.current_snapshot()
    result = run_cli("dbt", "run", "--select", "dim_store", home=built_home)
    assert result.returncode == 0, result.stdout[-2000:]
    table = built.table("gold.dim_store")
    assert table.current_snapshot().snapshot_id != first.snapshot_id
    assert table.scan(snapshot_id=first.snapshot_id).to_arrow().num_rows == table.scan().to_arrow().num_rows


@pytest.mark.integration
def test_a_failing_dbt_test_stops_the_build(
    home: Path, reference_files: dict[str, Path], tmp_path: Path
) -> None:
    with Lakehouse(Settings(home=home)) as lh:
        load_reference(lh, reference_files)
        # a second, different row for an existing store breaks stg_stores' unique key
        stores = pq.read_table(reference_files["stores"]).slice(0, 1)
        stores = stores.set_column(stores.schema.get_field_index("store_name"), "store_name", [["Impostor"]])
        pq.write_table(stores, tmp_path / "conflict.parquet")
        lh.load("bronze.stores", [tmp_path / "conflict.parquet"])
    result = dbt_build(home)
    assert result.returncode != 0
    assert re.search(r"Failure in test unique_stg_stores_store_id", result.stdout), result.stdout[-3000:]
    with Lakehouse(Settings(home=home)) as lh:
        built = {(i.layer, i.table) for i in lh.tables()}
    assert ("gold", "dim_store") not in built and ("gold", "fct_sales") not in built


@pytest.mark.unit
def test_dbt_sources_and_models_follow_the_layout() -> None:
    models = REPO / "dbt" / "models"
    for sql in models.rglob("*.sql"):
        assert sql.with_suffix(".yml").exists(), f"{sql} has no YAML next to it"
        text = sql.read_text()
        assert "select * from final" in text, f"{sql} does not end with `select * from final`"


def _private_files(root: Path) -> list[str]:
    """Paths under ``root`` that another user could read or enter."""
    return [
        f"{p.relative_to(root)} {oct(p.stat().st_mode & 0o777)}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.stat().st_mode & 0o077
    ]


@pytest.mark.e2e
def test_no_staging_copy_of_a_model_outlives_the_build(built_home: Path) -> None:
    staging = built_home / "state" / "dbt-staging"
    assert staging.stat().st_mode & 0o777 == 0o700
    assert [p for p in staging.rglob("*")] == []  # no Parquet copy of any model, no run directory


@pytest.mark.e2e
def test_dbt_refuses_a_model_with_plaintext_in_a_personal_column(built_home: Path, tmp_path: Path) -> None:
    import shutil

    home, project = tmp_path / "home", tmp_path / "project" / "dbt"
    shutil.copytree(built_home, home)
    shutil.copytree(REPO / "dbt", project, ignore=shutil.ignore_patterns("target", "logs"))
    for part in ("contracts", "policies"):  # the reference project with a changed model
        (project.parent / part).symlink_to(REPO / part)
    model = project / "models" / "gold" / "dim_customer.sql"
    text = model.read_text()
    # a look-alike: the customer id dressed as a ciphertext of this keystore
    forged = "'pii:v1:' || customer_id || ':email:' || to_base64(encode(customer_id)) as email,"
    assert "        email,\n" in text
    model.write_text(text.replace("        email,\n", f"        {forged}\n", 1))
    with Lakehouse(Settings(home=home)) as lh:
        before = lh.table("gold.dim_customer").current_snapshot().snapshot_id
    result = run_cli(
        "dbt",
        "run",
        "--select",
        "dim_customer",
        home=home,
        env={"LAKEHOUSE_PROJECT_DIR": str(project.parent)},
    )
    assert result.returncode != 0
    assert "gold.dim_customer.email row 1 is not this keystore's ciphertext" in result.stdout, result.stdout[
        -3000:
    ]
    with Lakehouse(Settings(home=home)) as lh:
        assert lh.table("gold.dim_customer").current_snapshot().snapshot_id == before  # nothing committed
    assert list((home / "state" / "dbt-staging").rglob("*")) == []  # the staged copy went too


@pytest.mark.integration
def test_state_under_the_home_is_private_after_loads_and_a_build(
    home: Path, reference_files: dict[str, Path]
) -> None:
    for name in ("customers", "stores", "regions"):
        result = run_cli("load", f"bronze.{name}", str(reference_files[name]), home=home)
        assert result.returncode == 0, result.stderr
    result = run_cli("dbt", "build", "--select", "+int_customers_history", home=home)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (home / "catalog.db").exists() and (home / "state" / "keys" / "master.key").exists()
    assert (home / "dbt" / "local" / "target").is_dir() and (home / "duckdb").is_dir()
    assert list((home / "warehouse" / "silver").rglob("*.parquet"))
    assert _private_files(home) == []
