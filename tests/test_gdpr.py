"""Personal data encrypted from bronze on: decryption only for cleared users, KEK rotation
without rewriting data, and erasure by crypto-shredding that survives time travel and tags."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from lakehouse import Lakehouse, Settings
from lakehouse.errors import QueryError
from lakehouse.privacy import KeyShredded

from .conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.dbt]


@pytest.fixture
def pii_home(built_home: Path, tmp_path: Path) -> Path:
    """A private copy of the built lakehouse (these tests delete rows and destroy keys)."""
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    return home


def _data_files(lh: Lakehouse, identifier: str) -> set[str]:
    return {task.file.file_path for task in lh.table(identifier).scan().plan_files()}


def test_forget_erases_from_every_snapshot_tag_and_layer(pii_home: Path) -> None:
    with Lakehouse(Settings(home=pii_home)) as lh:
        customer = (
            lh.sql("select customer_id from gold.dim_customer where email is not null order by 1 limit 1")
            .column(0)[0]
            .as_py()
        )
        bronze = lh.table("bronze.customers")
        bronze.manage_snapshots().create_tag(bronze.current_snapshot().snapshot_id, "before_forget").commit()
    with Lakehouse(Settings(home=pii_home), user="carol") as carol:
        email = (
            carol.sql(f"select email from gold.dim_customer where customer_id = '{customer}'")
            .column(0)[0]
            .as_py()
        )
        assert "@" in email

    typo = run_cli("gdpr", "forget", customer.lower(), home=pii_home)  # refused, nothing erased
    assert typo.returncode == 1 and f"(did you mean '{customer}'?)" in typo.stderr, typo.stderr
    result = run_cli("gdpr", "forget", customer, "-o", "json", home=pii_home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["erased"] and report["key_destroyed"]
    tables = {t["table"]: t for t in report["tables"]}
    assert set(tables) == {
        "bronze.customers",
        "silver.stg_customers",
        "silver.int_customers_history",
        "gold.dim_customer",
        "gold.mart_customer_360",
    }
    assert "before_forget" in tables["bronze.customers"]["refs"]
    for check in tables.values():
        assert check["rows_deleted"] >= 1  # from the current snapshot of every layer...
        assert (
            check["rows_in_history"] >= 1 and check["values_checked"] >= 1
        )  # the ciphertext is still there...
        assert check["values_decryptable"] == 0 and check["rows_now"] == 0  # ...and useless

    with Lakehouse(Settings(home=pii_home)) as lh:
        old = lh.table("bronze.customers")
        tagged = old.scan(snapshot_id=old.metadata.refs["before_forget"].snapshot_id).to_arrow()
        ciphertext = next(r["email"] for r in tagged.to_pylist() if r["customer_id"] == customer)
        assert ciphertext.startswith("pii:v1:")
        with pytest.raises(KeyShredded):
            lh.keystore.decrypt(ciphertext)
        # the customer cannot come back by reloading an old file either
        with pytest.raises(KeyShredded, match="destroyed"):
            lh.keystore.ensure({customer})
    with Lakehouse(Settings(home=pii_home), user="carol") as carol:
        assert (
            carol.sql(f"select count(*) from gold.dim_customer where customer_id = '{customer}'")
            .column(0)[0]
            .as_py()
            == 0
        )
        log = carol.sql("select operation, subject from audit.key_log").to_pylist()
        assert {"operation": "forget", "subject": customer} in log


def test_kek_rotation_rewraps_keys_without_rewriting_data(pii_home: Path) -> None:
    with Lakehouse(Settings(home=pii_home)) as lh:
        before_files = _data_files(lh, "gold.dim_customer") | _data_files(lh, "bronze.customers")
        before = lh.keystore.status()
    result = run_cli("keys", "rotate", home=pii_home)
    assert result.returncode == 0, result.stderr
    status = json.loads(run_cli("keys", "status", home=pii_home).stdout)
    assert status["kek"] != before["kek"] and status["data_keys"] == before["data_keys"] > 0
    with Lakehouse(Settings(home=pii_home)) as lh:
        assert _data_files(lh, "gold.dim_customer") | _data_files(lh, "bronze.customers") == before_files
    with Lakehouse(Settings(home=pii_home), user="carol") as carol:
        emails = (
            carol.sql("select email from gold.dim_customer where email is not null limit 5")
            .column(0)
            .to_pylist()
        )
        assert emails and all("@" in e for e in emails)
        assert carol.sql("select operation from audit.key_log").column(0).to_pylist() == ["rotate"]
    with Lakehouse(Settings(home=pii_home), user="dana") as dana, pytest.raises(QueryError, match="key_log"):
        dana.sql("select * from audit.key_log")  # access denied


def test_a_wrong_master_key_opens_nothing(pii_home: Path) -> None:
    wrong = base64.b64encode(os.urandom(32)).decode()
    result = run_cli("keys", "status", home=pii_home, env={"LAKEHOUSE_KEYS__MASTER_KEY": wrong})
    assert result.returncode == 1 and "does not open with this master key" in result.stderr
    assert wrong not in result.stderr + result.stdout


def test_personal_data_is_never_stored_in_clear(pii_home: Path) -> None:
    with Lakehouse(Settings(home=pii_home)) as lh:
        for table in (
            "bronze.customers",
            "silver.stg_customers",
            "silver.int_customers_history",
            "gold.dim_customer",
            "gold.mart_customer_360",
        ):
            rows = lh.sql(f"select email from {table} where email is not null").column(0).to_pylist()
            assert rows and all(v.startswith("pii:v1:") and "@" not in v for v in rows), table
        raw = b"".join(
            p.read_bytes() for p in (pii_home / "warehouse" / "bronze" / "customers").rglob("*.parquet")
        )
        sample = lh.keystore.decrypt(
            lh.sql("select email from bronze.customers where email is not null limit 1").column(0)[0].as_py()
        )
        assert sample and sample.encode() not in raw


def _personal_values(lh: Lakehouse, identifier: str, customer: str, columns: list[str]) -> list[str]:
    """Every non-null value of ``columns`` of ``customer`` in every snapshot of the table."""
    from pyiceberg.expressions import EqualTo

    table = lh.table(identifier)
    values = []
    for snapshot in table.metadata.snapshots:
        rows = table.scan(snapshot_id=snapshot.snapshot_id, row_filter=EqualTo("customer_id", customer))
        arrow = rows.to_arrow()
        values += [v for c in columns for v in arrow.column(c).to_pylist() if v is not None]
    return values


def test_forget_covers_the_address_in_old_snapshots(pii_home: Path) -> None:
    address = ["street", "city", "postal_code"]
    contact = ["full_name", "email", "phone", "birth_date"]
    with Lakehouse(Settings(home=pii_home)) as lh:
        moved = lh.sql(
            "select customer_id from bronze.customers group by 1 having count(distinct updated_at) > 1 "
            "order by 1 limit 1"
        )
        customer = moved.column(0)[0].as_py()
        bronze = lh.table("bronze.customers")
        bronze.manage_snapshots().create_tag(bronze.current_snapshot().snapshot_id, "before_move").commit()
        old_addresses = _personal_values(lh, "bronze.customers", customer, address)
        assert len(old_addresses) >= 6  # two versions, three fields each...
        plain = [lh.keystore.decrypt(v) for v in old_addresses]
        assert all(v.startswith("pii:v1:") for v in old_addresses)  # ...encrypted...
        assert all(p and not p.startswith("pii:") for p in plain)  # ...and readable until forgotten
        expected = {
            "bronze.customers": len(old_addresses)
            + len(_personal_values(lh, "bronze.customers", customer, contact)),
            "gold.mart_customer_360": len(
                _personal_values(lh, "gold.mart_customer_360", customer, ["full_name", "email", "city"])
            ),
        }
        cities = _personal_values(lh, "gold.mart_customer_360", customer, ["city"])
        assert cities

    result = run_cli("gdpr", "forget", customer, "-o", "json", home=pii_home)
    assert result.returncode == 0, result.stderr
    report = {t["table"]: t for t in json.loads(result.stdout)["tables"]}
    for table, values in expected.items():  # the address values are among those checked
        assert report[table]["values_checked"] == values, table
        assert report[table]["values_decryptable"] == 0
    for table in ("silver.stg_customers", "silver.int_customers_history", "gold.dim_customer"):
        assert report[table]["values_checked"] >= len(old_addresses)  # the address among them
    with Lakehouse(Settings(home=pii_home)) as lh:
        for value in old_addresses + cities:
            with pytest.raises(KeyShredded):
                lh.keystore.decrypt(value)
