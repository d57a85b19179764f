from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lakehouse import Lakehouse, LoadError, NoSuchTableError, SchemaMismatchError

from .conftest import run_cli

REGIONS_CSV = "region_id,region_name,country\nR1,North,US\nR2,South,US\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def snapshot_count(lh: Lakehouse, table: str) -> int:
    return len(lh.table(table).metadata.snapshots)


@pytest.mark.unit
def test_csv_parquet_and_jsonl_load_into_a_contract_table(lh: Lakehouse, tmp_path: Path) -> None:
    csv = write(tmp_path / "a.csv", REGIONS_CSV)
    pq.write_table(
        pa.table({"region_id": ["R3"], "region_name": ["East"], "country": ["US"]}), tmp_path / "b.parquet"
    )
    jsonl = write(tmp_path / "c.jsonl", '{"region_id": "R4", "region_name": "West"}\n')
    result = lh.load("bronze.regions", [csv, tmp_path / "b.parquet", jsonl])
    assert result.created and result.rows == 4 and len(result.files_loaded) == 3
    rows = lh.sql("select region_id, country from bronze.regions order by 1").to_pylist()
    assert rows == [
        {"region_id": "R1", "country": "US"},
        {"region_id": "R2", "country": "US"},
        {"region_id": "R3", "country": "US"},
        {"region_id": "R4", "country": None},
    ]
    assert snapshot_count(lh, "bronze.regions") == 1  # three files, one atomic commit


@pytest.mark.unit
def test_loading_the_same_batch_twice_adds_nothing(lh: Lakehouse, tmp_path: Path) -> None:
    csv = write(tmp_path / "a.csv", REGIONS_CSV)
    copy = write(tmp_path / "same-bytes-other-name.csv", REGIONS_CSV)
    first = lh.load("bronze.regions", [csv, copy])
    assert first.rows == 2 and first.files_skipped == [str(copy)]
    again = lh.load("bronze.regions", [csv])
    assert again.rows == 0 and again.files_skipped == [str(csv)]
    assert lh.sql("select count(*) as n from bronze.regions").to_pylist() == [{"n": 2}]
    assert snapshot_count(lh, "bronze.regions") == 1


@pytest.mark.unit
def test_a_bad_file_commits_nothing_and_names_column_and_row(lh: Lakehouse, tmp_path: Path) -> None:
    good = write(tmp_path / "good.csv", "store_id,square_meters\nS1,100\n")
    bad = write(tmp_path / "bad.csv", "store_id,square_meters\nS2,120\nS3,130\nS4,lots\n")
    lh.load("bronze.stores", [write(tmp_path / "first.csv", "store_id\nS0\n")])
    before = lh.table("bronze.stores").current_snapshot()
    with pytest.raises(SchemaMismatchError) as info:
        lh.load("bronze.stores", [good, bad])
    message = str(info.value)
    assert (
        "bad.csv" in message
        and "'square_meters'" in message
        and "row 3 (line 4)" in message
        and "'lots'" in message
    )
    assert info.value.column == "square_meters" and info.value.row == 3
    assert lh.table("bronze.stores").current_snapshot() == before
    assert lh.sql("select store_id from bronze.stores").to_pylist() == [{"store_id": "S0"}]


@pytest.mark.unit
def test_parquet_with_a_wrong_type_names_the_row(lh: Lakehouse, tmp_path: Path) -> None:
    path = tmp_path / "lines.parquet"
    pq.write_table(
        pa.table({"order_id": ["O1", "O1"], "line_number": [1, 2], "quantity": ["3", "three"]}), path
    )
    with pytest.raises(SchemaMismatchError, match=r"column 'quantity' at row 2, value 'three'"):
        lh.load("bronze.order_lines", [path])


@pytest.mark.unit
def test_missing_or_empty_required_columns_are_refused(lh: Lakehouse, tmp_path: Path) -> None:
    with pytest.raises(SchemaMismatchError, match=r"required column 'order_ts' of bronze\.orders is missing"):
        lh.load("bronze.orders", [write(tmp_path / "o.csv", "order_id\nO1\n")])
    with pytest.raises(SchemaMismatchError, match=r"column 'order_id' at row 2 \(line 3\) is empty"):
        lh.load(
            "bronze.orders",
            [write(tmp_path / "p.csv", "order_id,order_ts\nO1,2026-03-02T10:00:00\n,2026-03-02T11:00:00\n")],
        )


@pytest.mark.unit
def test_unknown_columns_are_refused_with_the_table_columns(lh: Lakehouse, tmp_path: Path) -> None:
    with pytest.raises(SchemaMismatchError, match=r"column\(s\) \['colour'\] are not in bronze.regions"):
        lh.load("bronze.regions", [write(tmp_path / "r.csv", "region_id,colour\nR1,red\n")])


@pytest.mark.unit
def test_create_keeps_decimals_dates_timestamps_and_strings(lh: Lakehouse, tmp_path: Path) -> None:
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "amount": pa.array(
                [decimal.Decimal("12345678.90"), decimal.Decimal("-0.01")], pa.decimal128(12, 2)
            ),
            "day": pa.array([dt.date(1999, 12, 31), dt.date(2026, 2, 28)]),
            "at": pa.array([dt.datetime(2026, 3, 2, 10, 0, 0, 123456), None], pa.timestamp("us")),
            "at_utc": pa.array(
                [dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)] * 2, pa.timestamp("ns", tz="UTC")
            ),
            "text": ["naïve café ☕", ""],
            "small": pa.array([1, 2], pa.uint16()),
        }
    )
    path = tmp_path / "mine.parquet"
    pq.write_table(data, path)
    with pytest.raises(NoSuchTableError, match="pass --create"):
        lh.load("silver.mine", [path])
    result = lh.load("silver.mine", [path], create=True)
    assert result.created and result.rows == 2
    back = lh.table("silver.mine").scan().to_arrow().sort_by("id")
    assert back.column("amount").to_pylist() == data.column("amount").to_pylist()
    assert back.schema.field("amount").type == pa.decimal128(12, 2)
    assert back.column("day").to_pylist() == data.column("day").to_pylist()
    assert back.column("at").to_pylist() == data.column("at").to_pylist()
    assert back.column("at_utc").to_pylist() == data.column("at_utc").to_pylist()
    assert back.column("text").to_pylist() == ["naïve café ☕", ""]
    assert back.column("small").to_pylist() == [1, 2]
    via_sql = lh.sql("select sum(amount) as total from silver.mine").to_pylist()
    assert via_sql == [{"total": decimal.Decimal("12345678.89")}]


@pytest.mark.unit
def test_csv_values_parse_into_contract_types(lh: Lakehouse, tmp_path: Path) -> None:
    text = (
        "product_id,perishable,shelf_life_days,unit_cost,unit_price,safe_temp_max_c,updated_at\n"
        "P1,true,4,3.10,4.99,4.0,2026-03-02T10:00:00\n"
        "P2,0,365,1.00,1.50,,2026-03-02 11:30:00.250\n"
    )
    lh.load("bronze.products", [write(tmp_path / "p.csv", text)])
    rows = lh.table("bronze.products").scan().to_arrow().sort_by("product_id").to_pylist()
    assert rows[0]["unit_price"] == decimal.Decimal("4.99") and rows[0]["perishable"] is True
    assert rows[1]["perishable"] is False and rows[1]["safe_temp_max_c"] is None
    assert rows[1]["updated_at"] == dt.datetime(2026, 3, 2, 11, 30, 0, 250000)


@pytest.mark.unit
def test_concurrent_loads_both_land(lh: Lakehouse, tmp_path: Path, home: Path) -> None:
    lh.load("bronze.regions", [write(tmp_path / "seed.csv", "region_id\nR0\n")])
    errors: list[BaseException] = []

    def load(i: int) -> None:
        try:
            from lakehouse import Settings

            with Lakehouse(Settings(home=home)) as other:
                other.load("bronze.regions", [write(tmp_path / f"r{i}.csv", f"region_id\nR{i}\n")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = {r["region_id"] for r in lh.table("bronze.regions").scan().to_arrow().to_pylist()}
    assert ids == {"R0", "R1", "R2", "R3", "R4"}


@pytest.mark.unit
def test_bad_identifiers_and_missing_files_are_clear(lh: Lakehouse, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"LAYER\.TABLE"):
        lh.load("orders", [tmp_path / "x.csv"])
    with pytest.raises(LoadError, match="unknown layer 'raw'"):
        lh.load("raw.orders", [tmp_path / "x.csv"])
    with pytest.raises(LoadError, match="file\\(s\\) not found"):
        lh.load("bronze.orders", [tmp_path / "nope.csv"])
    with pytest.raises(LoadError, match="cannot tell the format"):
        lh.load("bronze.orders", [write(tmp_path / "data.txt", "x")])


@pytest.mark.integration
def test_cli_load_reports_errors_once_and_exits_1(home: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "store_id,square_meters\nS1,big\n")
    result = run_cli("load", "bronze.stores", str(bad), home=home)
    assert result.returncode == 1
    assert result.stderr.count("error:") == 1 and "'square_meters' at row 1 (line 2)" in result.stderr
    assert "Traceback" not in result.stderr
    good = write(tmp_path / "good.csv", "store_id,square_meters\nS1,100\n")
    ok = run_cli("load", "bronze.stores", str(good), "--output", "json", home=home)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows"] == 1
    again = run_cli("load", "bronze.stores", str(good), home=home)
    assert "skipped" in again.stdout and "already loaded" in again.stdout


@pytest.mark.unit
def test_csv_without_contract_created_from_inferred_types(lh: Lakehouse, tmp_path: Path) -> None:
    table = pa.table({"k": ["a", "b"], "n": [1, 2], "day": [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]})
    pacsv.write_csv(table, tmp_path / "t.csv")
    lh.load("bronze.my_upload", [tmp_path / "t.csv"], create=True)
    assert lh.sql("select k, n, day from bronze.my_upload order by k").to_pylist() == table.to_pylist()


@pytest.mark.unit
def test_partitioned_load_writes_one_partition_per_file(lh: Lakehouse, tmp_path: Path) -> None:
    days = [dt.datetime(2026, 3, d, h) for d in (4, 2, 3, 2, 4, 2) for h in (1, 23)]
    data = pa.table(
        {
            "device_id": [f"D{i % 3}" for i in range(len(days))],
            "reading_ts": pa.array(days, pa.timestamp("us")),
            "temperature_c": [float(i) for i in range(len(days))],
        }
    )
    pq.write_table(data, tmp_path / "r.parquet")
    lh.load("bronze.sensor_readings", [tmp_path / "r.parquet"])
    files = lh.table("bronze.sensor_readings").inspect.files().to_pylist()
    assert len(files) == 3
    for f in files:
        day = f["partition"]["reading_ts_day"]
        expected = sum(1 for d in days if d.date() == day)
        assert f["record_count"] == expected
    back = (
        lh.table("bronze.sensor_readings").scan(row_filter="reading_ts >= '2026-03-03T00:00:00'").to_arrow()
    )
    assert sorted(back.column("temperature_c").to_pylist()) == sorted(
        float(i) for i, d in enumerate(days) if d >= dt.datetime(2026, 3, 3)
    )


@pytest.mark.unit
def test_large_unpartitioned_load_is_split_across_files_losslessly(
    lh: Lakehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.iceberg import _write

    monkeypatch.setattr(_write, "PARALLEL_MIN_ROWS_PER_FILE", 1_000)
    n = 10_000
    data = pa.table(
        {"order_id": [f"O{i:05d}" for i in range(n)], "line_number": pa.array([1] * n, pa.int32())}
    )
    pq.write_table(data, tmp_path / "lines.parquet")
    lh.load("bronze.order_lines", [tmp_path / "lines.parquet"])
    table = lh.table("bronze.order_lines")
    assert len(table.inspect.files()) >= 2
    assert (
        sorted(table.scan().to_arrow().column("order_id").to_pylist()) == data.column("order_id").to_pylist()
    )
    assert len(table.metadata.snapshots) == 1
