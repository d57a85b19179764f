"""A user's own project, apart from the platform: its contracts, policies and dbt project are read
from LAKEHOUSE_PROJECT_DIR (or Settings.project_dir), never from the package or the reference
retailer, and the platform keeps only its own tables (dead letters)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from lakehouse import ConfigurationError, ContractError, Lakehouse, Project, Settings, load_contracts
from lakehouse.config import find_project
from lakehouse.ingest import IngestStats
from lakehouse.ingest.kafka._committer import Committer, _Record

from .conftest import LAKEHOUSE_BIN, REPO, run_cli

# bronze.orders of a bike-rental business: it shares only its name with the retailer's table
RENTALS = """\
tables:
  orders:
    description: Bike rentals.
    primary_key: [rental_ref]
    partition_by: [{column: started_at, transform: day}]
    rls: {store: station_code}
    columns:
      - {name: rental_ref, type: string, required: true}
      - {name: bike_serial, type: long}
      - {name: station_code, type: string}
      - {name: minutes, type: int}
      - {name: started_at, type: timestamp, required: true}
"""

PRINCIPALS = """\
roles:
  station_lead:
    description: The rentals of one station.
    row_filter: store
users:
  lee: {roles: [station_lead], attributes: {store: ST1}}
"""

ACCESS = """\
grants:
  station_lead: {layers: [bronze]}
row_filters:
  store:
    columns: [station_code]
"""

USER_COLUMNS = ["rental_ref", "bike_serial", "station_code", "minutes", "started_at"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "bikes"
    (root / "contracts").mkdir(parents=True)
    (root / "contracts" / "rentals.yml").write_text(RENTALS)
    (root / "policies").mkdir()
    (root / "policies" / "principals.yml").write_text(PRINCIPALS)
    (root / "policies" / "access.yml").write_text(ACCESS)
    return root


@pytest.fixture
def rentals(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "rentals.csv"
    path.parent.mkdir()
    path.write_text(
        "rental_ref,bike_serial,station_code,minutes,started_at\n"
        "R1,9001,ST1,12,2026-05-01T08:00:00\n"
        "R2,9002,ST2,30,2026-05-01T09:30:00\n"
        "R3,9003,ST1,7,2026-05-02T17:45:00\n"
    )
    return path


def _env(project: Path) -> dict[str, str]:
    return {"LAKEHOUSE_PROJECT_DIR": str(project)}


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.integration
def test_the_cli_loads_a_user_orders_table_with_the_users_schema(
    project: Path, rentals: Path, home: Path
) -> None:
    result = run_cli("load", "bronze.orders", str(rentals), home=home, env=_env(project))
    assert result.returncode == 0, result.stderr
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        table = lh.table("bronze.orders")
        assert [f.name for f in table.schema().fields] == USER_COLUMNS  # not the retailer's order_id...
        assert table.schema().identifier_field_names() == {"rental_ref"}
        assert [f.name for f in table.spec().fields] == ["started_at_day"]  # the retailer's: order_ts_month
        assert table.properties["lakehouse.rls.store"] == "station_code"
        assert lh.sql("select count(*) from bronze.orders").column(0)[0].as_py() == 3


@pytest.mark.unit
def test_the_api_loads_through_the_settings_project(project: Path, rentals: Path, home: Path) -> None:
    # the test runs in the repository, whose own project (the retailer) would apply by default
    assert "LAKEHOUSE_PROJECT_DIR" not in os.environ and find_project().root == REPO
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        assert lh.project.root == project
        result = lh.load("bronze.orders", [rentals])
        assert result.rows == 3
        assert [f.name for f in lh.table("bronze.orders").schema().fields] == USER_COLUMNS
        properties = lh.table("bronze.orders").properties
        assert properties["lakehouse.contract"] == "bronze.orders"  # made from the user's contract...
        assert "lakehouse.created-from" not in properties  # ...not from the file


@pytest.mark.integration
def test_the_reference_contracts_are_not_applied(project: Path, tmp_path: Path, home: Path) -> None:
    contracts = load_contracts(Project(project))
    assert set(contracts) == {"bronze.orders", "bronze.dead_letters"}  # the platform's own table stays
    assert contracts["bronze.orders"].primary_key == ["rental_ref"]
    # bronze.customers is the retailer's, with personal data it would encrypt: here it is just a name
    members = tmp_path / "members.csv"
    members.write_text("member_no,full_name,email\nM1,Ada Quinn,ada@example.org\n")
    refused = run_cli("load", "bronze.customers", str(members), home=home, env=_env(project))
    assert "no contract of the project declares it; pass --create" in _one_line_error(refused)
    created = run_cli("load", "bronze.customers", str(members), "--create", home=home, env=_env(project))
    assert created.returncode == 0, created.stderr
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        table = lh.table("bronze.customers")
        assert [f.name for f in table.schema().fields] == ["member_no", "full_name", "email"]
        assert "lakehouse.contract" not in table.properties
        assert lh.sql("select full_name from bronze.customers").column(0).to_pylist() == ["Ada Quinn"]


@pytest.mark.unit
def test_a_table_outside_the_contracts_loads_only_with_create(
    project: Path, tmp_path: Path, home: Path
) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text("station_code,docks\nST1,20\nST2,12\n")
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        with pytest.raises(Exception, match="no contract of the project declares it"):
            lh.load("bronze.stations", [stations])
        assert lh.load("bronze.stations", [stations], create=True).created
        assert lh.sql("select sum(docks) from bronze.stations").column(0)[0].as_py() == 32


@pytest.mark.integration
def test_the_users_policies_govern_queries(project: Path, rentals: Path, home: Path) -> None:
    check = run_cli("policy", "check", home=home, env=_env(project))
    assert check.returncode == 0, check.stderr
    assert "1 users" in check.stdout
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        lh.load("bronze.orders", [rentals])
    with Lakehouse(Settings(home=home, project_dir=project), user="lee") as lee:
        rows = lee.sql("select rental_ref, station_code from bronze.orders order by 1").to_pylist()
    assert rows == [
        {"rental_ref": "R1", "station_code": "ST1"},
        {"rental_ref": "R3", "station_code": "ST1"},
    ]


@pytest.mark.unit
def test_the_kafka_route_lands_in_the_users_table(project: Path, home: Path) -> None:
    message = orjson.dumps(
        {
            "schema": "bronze.orders",
            "version": 1,
            "data": {
                "rental_ref": "R9",
                "bike_serial": 9009,
                "station_code": "ST2",
                "started_at": "2026-05-03T10:00:00",
            },
        }
    )
    retail = orjson.dumps(
        {"schema": "bronze.orders", "version": 1, "data": {"order_id": "O1", "order_ts": "x"}}
    )
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        committer = Committer(lh.catalog, lh.project, IngestStats(), keystore=None)
        committer.commit_batch({("orders", 0): [_Record(0, None, message), _Record(1, None, retail)]})
        rows = lh.table("bronze.orders").scan().to_arrow().to_pylist()
        dead = lh.table("bronze.dead_letters").scan().to_arrow().to_pylist()
    assert [(r["rental_ref"], r["started_at"]) for r in rows] == [("R9", dt.datetime(2026, 5, 3, 10))]
    assert [d["source_offset"] for d in dead] == [1]  # a retailer's order does not fit the user's table


@pytest.mark.integration
def test_a_project_cannot_redefine_a_platform_table(project: Path, rentals: Path, home: Path) -> None:
    (project / "contracts" / "mine.yml").write_text(
        "tables:\n  dead_letters:\n    primary_key: [id]\n    columns: [{name: id, type: string, required: true}]\n"
    )
    error = _one_line_error(run_cli("load", "bronze.orders", str(rentals), home=home, env=_env(project)))
    assert "mine.yml" in error and "bronze.dead_letters is the platform's own table" in error


@pytest.mark.unit
def test_a_table_declared_twice_is_refused(project: Path) -> None:
    (project / "contracts" / "again.yml").write_text(RENTALS)
    with pytest.raises(ContractError, match=r"bronze\.orders is already declared in") as caught:
        load_contracts(Project(project))
    assert "rentals.yml" in str(caught.value) and "again.yml" in str(caught.value)


@pytest.mark.integration
def test_dbt_sources_say_which_contracts_they_come_from(project: Path, home: Path) -> None:
    result = run_cli("contracts", "dbt-sources", home=home, env=_env(project))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# GENERATED from the project's contracts/rentals.yml")
    assert "rental_ref" in result.stdout and "customers" not in result.stdout


DBT_PROJECT = """\
name: bikes
version: "1.0.0"
config-version: 2
profile: lakehouse
model-paths: ["models"]
macro-paths: ["macros"]
models:
  bikes:
    +materialized: iceberg_table
    silver:
      +schema: silver
"""

# personal data the user's policies declare (the retailer's policies know nothing of these tables)
ACCESS_WITH_PERSONAL_DATA = (
    ACCESS
    + """\
sensitive:
  pii:
    encrypted: true
    masks: {rider_email: redact}
    tables:
      silver.rides: [rider_email]
      silver.rides_leaky: [rider_email]
"""
)


@pytest.mark.integration
@pytest.mark.dbt
def test_dbt_builds_the_users_project_under_the_users_policies(
    project: Path, rentals: Path, home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from lakehouse.transform import run_dbt

    dbt = project / "dbt"
    (dbt / "models" / "silver").mkdir(parents=True)
    (dbt / "dbt_project.yml").write_text(DBT_PROJECT)
    shutil.copy(REPO / "dbt" / "profiles.yml", dbt)
    shutil.copytree(REPO / "dbt" / "macros", dbt / "macros")  # the iceberg_table materialization
    (project / "policies" / "access.yml").write_text(ACCESS_WITH_PERSONAL_DATA)
    sources = run_cli("contracts", "dbt-sources", home=home, env=_env(project))
    (dbt / "models" / "__sources.yml").write_text(sources.stdout)
    select = "select rental_ref, station_code, {} as rider_email from {{{{ source('bronze', 'orders') }}}}"
    (dbt / "models" / "silver" / "rides.sql").write_text(select.format("cast(null as varchar)"))
    (dbt / "models" / "silver" / "rides_leaky.sql").write_text(select.format("'rider@example.org'"))
    settings = Settings(home=home, project_dir=project)  # the environment names no project
    with Lakehouse(settings) as lh:
        lh.load("bronze.orders", [rentals])

    capfd.readouterr()
    assert run_dbt(settings, ["run"]) != 0  # the plugin, in dbt's process, read the user's policies...
    output = capfd.readouterr().out
    assert "silver.rides_leaky.rider_email row 1 is not this keystore's ciphertext" in output, output[-3000:]
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        assert lh.sql("select count(*) from silver.rides").column(0)[0].as_py() == 3  # ...and built the rest
        assert ("silver", "rides_leaky") not in [(t.layer, t.table) for t in lh.tables()]


@pytest.mark.unit
def test_the_gateway_refuses_schemas_the_project_does_not_declare(project: Path, home: Path) -> None:
    from lakehouse.ingest.edge import build_app

    with pytest.raises(ConfigurationError, match=r"gateway\.schemas names bronze\.sensor_readings"):
        build_app(Settings(home=home, project_dir=project))  # the default schemas are the retailer's


@pytest.mark.integration
def test_the_project_is_found_from_the_current_directory(project: Path, rentals: Path, home: Path) -> None:
    assert find_project(start=project / "policies").root == project
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    result = subprocess.run(
        [LAKEHOUSE_BIN, "load", "bronze.orders", str(rentals), "-o", "json"],
        capture_output=True,
        text=True,
        env={**environment, "LAKEHOUSE_HOME": str(home)},
        cwd=project / "policies",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with Lakehouse(Settings(home=home, project_dir=project)) as lh:
        assert [f.name for f in lh.table("bronze.orders").schema().fields] == USER_COLUMNS


@pytest.mark.unit
def test_a_found_project_writable_by_every_user_is_not_taken(project: Path) -> None:
    (project / "contracts").chmod(0o777)  # anyone could have planted these contracts
    with pytest.raises(ConfigurationError, match=r"writable by every user; set LAKEHOUSE_PROJECT_DIR"):
        find_project(start=project / "policies")
    (project / "contracts").chmod(0o755)
    (project / "policies" / "access.yml").chmod(0o666)  # or changed who sees what
    with pytest.raises(ConfigurationError, match=r"access\.yml is writable by every user"):
        find_project(start=project / "policies")
    assert find_project(project).root == project  # named explicitly, it is the user's choice


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["missing", "file", "no contracts"])
def test_a_missing_or_invalid_project_dir_is_one_line(
    kind: str, tmp_path: Path, rentals: Path, home: Path
) -> None:
    target = tmp_path / "elsewhere"
    if kind == "file":
        target.write_text("not a directory")
    elif kind == "no contracts":
        (target / "dbt").mkdir(parents=True)
    error = _one_line_error(run_cli("load", "bronze.orders", str(rentals), home=home, env=_env(target)))
    assert f"LAKEHOUSE_PROJECT_DIR={target}" in error
    with pytest.raises(ConfigurationError, match="LAKEHOUSE_PROJECT_DIR"):
        Lakehouse(Settings(home=home, project_dir=target)).load("bronze.orders", [rentals])


@pytest.mark.integration
def test_no_project_anywhere_names_the_setting(tmp_path: Path, rentals: Path, home: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    result = subprocess.run(
        [LAKEHOUSE_BIN, "load", "bronze.orders", str(rentals)],
        capture_output=True,
        text=True,
        env={**environment, "LAKEHOUSE_HOME": str(home)},
        cwd=tmp_path,
        timeout=600,
    )
    error = _one_line_error(result)
    assert "no project in" in error and "set LAKEHOUSE_PROJECT_DIR" in error


@pytest.mark.unit
def test_retired_settings_are_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_CONTRACTS_FILE", "/somewhere/bronze.yml")
    with pytest.raises(ConfigurationError, match="LAKEHOUSE_CONTRACTS_FILE is no longer read"):
        Settings()
