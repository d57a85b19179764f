"""Snapshot expiry keeps the ledger: files loaded, offsets and device sequences are never
forgotten, so a replay after expiry still lands nothing twice."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import Lakehouse
from lakehouse.iceberg import (
    DEVICE_BATCHES,
    OFFSETS,
    Planned,
    commit_with_replan,
    expire_snapshots,
    loaded_batch_ids,
    open_table,
    table_marks,
    target_arrow_schema,
)

from .conftest import run_cli


def _readings_file(path: Path, day: int) -> Path:
    pq.write_table(
        pa.table(
            {
                "device_id": ["D-S001-1"] * 4,
                "store_id": ["S001"] * 4,
                "reading_ts": pa.array([f"2026-05-{day:02d} 0{h}:00:00" for h in range(4)]).cast(
                    pa.timestamp("us")
                ),
                "temperature_c": [3.0, 3.1, 3.2, 3.3],
                "door_open": [False] * 4,
            }
        ),
        path,
    )
    return path


@pytest.mark.integration
def test_expiry_keeps_loaded_files_and_marks(lh: Lakehouse, tmp_path: Path, home: Path) -> None:
    files = [_readings_file(tmp_path / f"r{d}.parquet", d) for d in (1, 2, 3)]
    for f in files:
        assert len(lh.load("bronze.sensor_readings", [f]).files_loaded) == 1
    table, _ = open_table(lh.catalog, "bronze.sensor_readings")
    target = target_arrow_schema(table)
    one_row = pa.Table.from_pylist(
        [
            {
                "device_id": "D-S001-2",
                "store_id": "S001",
                "reading_ts": dt.datetime(2026, 6, 1),
                "temperature_c": 1.0,
                "door_open": True,
            }
        ],
        schema=target,
    )
    marks = {OFFSETS: json.dumps({"readings/0": 41}), DEVICE_BATCHES: json.dumps({"edge-S001-x": 8})}
    for key, value in marks.items():
        commit_with_replan(lh.catalog, table, lambda _t, k=key, v=value: Planned(one_row, {k: v}))
        table = lh.catalog.load_table(("bronze", "sensor_readings"))
    assert len(table.metadata.snapshots) == 5

    result = run_cli(
        "maintain",
        "expire-snapshots",
        "bronze.sensor_readings",
        "--keep",
        "1",
        "--older-than-hours",
        "0",
        "-o",
        "json",
        home=home,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"table": "bronze.sensor_readings", "kept": 1, "expired": 4}]

    table = lh.catalog.load_table(("bronze", "sensor_readings"))
    assert len(table.metadata.snapshots) == 1
    assert len(loaded_batch_ids(table)) == 3
    assert table_marks(table, key=OFFSETS) == {"readings/0": 41}
    assert table_marks(table, key=DEVICE_BATCHES) == {"edge-S001-x": 8}
    # replaying the same files after expiry lands nothing
    again = lh.load("bronze.sensor_readings", files)
    assert again.files_loaded == [] and len(again.files_skipped) == 3
    assert lh.sql("select count(*) from bronze.sensor_readings").column(0)[0].as_py() == 14


@pytest.mark.unit
def test_tables_from_before_the_ledger_property_get_it_before_expiry(lh: Lakehouse, tmp_path: Path) -> None:
    files = [_readings_file(tmp_path / f"r{d}.parquet", d) for d in (1, 2)]
    for f in files:
        lh.load("bronze.sensor_readings", [f])
    table = lh.catalog.load_table(("bronze", "sensor_readings"))
    with table.transaction() as tx:  # as a table written by an older version looks
        tx.remove_properties("lakehouse.batch-ids")
    expire_snapshots(
        lh.catalog, "bronze.sensor_readings", keep_last=1, older_than=__import__("datetime").timedelta(0)
    )
    table = lh.catalog.load_table(("bronze", "sensor_readings"))
    assert len(table.metadata.snapshots) == 1
    assert len(loaded_batch_ids(table)) == 2
    assert lh.load("bronze.sensor_readings", files).files_loaded == []


@pytest.mark.integration
def test_expire_snapshots_covers_the_audit_log(lh: Lakehouse, home: Path) -> None:
    for _ in range(3):  # each flush is one commit to audit.query_log
        lh.sql("select 1 as x")
        assert lh.flush_audit() == 1
    assert len(lh.catalog.load_table(("audit", "query_log")).metadata.snapshots) == 3

    named = run_cli(
        "maintain",
        "expire-snapshots",
        "audit.query_log",
        "--keep",
        "1",
        "--older-than-hours",
        "0",
        "-o",
        "json",
        home=home,
    )
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout) == [{"table": "audit.query_log", "kept": 1, "expired": 2}]
    table = lh.catalog.load_table(("audit", "query_log"))
    assert len(table.metadata.snapshots) == 1
    assert table.scan().to_arrow().num_rows == 3  # expiry forgets history, never records

    every = run_cli(
        "maintain", "expire-snapshots", "--keep", "1", "--older-than-hours", "0", "-o", "json", home=home
    )
    assert every.returncode == 0, every.stderr
    assert "audit.query_log" in {r["table"] for r in json.loads(every.stdout)}


@pytest.mark.integration
def test_expire_snapshots_names_a_missing_table_in_one_line(home: Path) -> None:
    result = run_cli("maintain", "expire-snapshots", "audit.nope", home=home)
    assert result.returncode == 1
    assert "no table audit.nope" in result.stderr and "Traceback" not in result.stderr
