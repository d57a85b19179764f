"""The platform on the stack's own services: loads commit through Nessie, `lakehouse sql` runs
on Trino as the authenticated user, `dbt build --target trino` builds every layer, and Trino's
OPA policy gives each user exactly what the embedded engine gives them.

One module fixture starts SeaweedFS, PostgreSQL, Nessie, OPA and Trino in a home of its own (the
session's `cluster_home` is shared with tests that add rows and forget customers), loads the
reference domain at a small scale, and builds it twice: on Trino there, and with the embedded
DuckDB in a local home from the same files.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from lakehouse import Lakehouse, Settings
from lakehouse.errors import AccessDenied, ArtifactUnavailable, LakehouseError
from lakehouse.governance import load_policy, table_schemas
from lakehouse.reference import KPI_QUERIES
from lakehouse.transform import run_dbt

from .conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.dbt]

REPO = Path(__file__).resolve().parent.parent
SCALE, SEED = 0.1, 7
STACK = {"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_PROJECT_DIR": str(REPO)}


@dataclass(frozen=True)
class Built:
    stack: Settings  # the stack profile: Nessie, Trino
    local: Settings  # the embedded profile, same files
    loaded: dict[str, int]  # bronze table -> rows loaded
    trino_build: int  # dbt's exit code on each
    local_build: int


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    from lakehouse.local import layouts, start_stack, stop_stack
    from lakehouse.reference import generate, write_files

    try:
        layouts()
    except ArtifactUnavailable as exc:
        pytest.skip(f"needs the stack's server artifacts: run `lakehouse stack install` ({exc})")
    root = tmp_path_factory.mktemp("platform")
    stack = Settings(profile="stack", home=root / "stack-home", project_dir=REPO)
    local = Settings(profile="local", home=root / "local-home", project_dir=REPO)
    files = write_files(generate(SCALE, SEED), root / "files")
    start_stack(stack, services=("trino",))  # and what it needs: SeaweedFS, PostgreSQL, Nessie, OPA
    try:
        loaded: dict[str, int] = {}
        for settings in (stack, local):
            with Lakehouse(settings) as lh:
                for name, path in sorted(files.items()):
                    loaded[name] = lh.load(f"bronze.{name}", [path]).rows
        trino_build = run_dbt(stack, ["build", "--quiet"])
        local_build = run_dbt(local, ["build", "--quiet"])
        yield Built(stack, local, loaded, trino_build, local_build)
    finally:
        stop_stack(stack)


def _stack_state(settings: Settings) -> dict[str, Any]:
    from lakehouse.config import read_state

    return read_state(settings) or {}


def test_loads_commit_through_nessie_and_trino_reads_them(built: Built) -> None:
    nessie = _stack_state(built.stack)["services"]["nessie"]["endpoints"]
    with urllib.request.urlopen(f"{nessie['api']}/trees/main/entries?content=true", timeout=10) as response:  # noqa: S310 - loopback
        entries = json.load(response)["entries"]
    locations = {
        ".".join(e["name"]["elements"]): e["content"]["metadataLocation"]
        for e in entries
        if e["type"] == "ICEBERG_TABLE"
    }
    for name in built.loaded:
        assert locations[f"bronze.{name}"].startswith("s3://lakehouse/bronze/"), name
    with Lakehouse(built.stack) as lh:
        assert lh.settings.catalog.uri == nessie["iceberg"]
        assert lh.settings.engine.type == "trino"
        for name, rows in built.loaded.items():
            assert lh.sql(f"select count(*) from bronze.{name}").column(0)[0].as_py() == rows, name


def test_settings_show_the_running_stacks_endpoints_and_no_secret(built: Built) -> None:
    shown = run_cli("settings", home=built.stack.home, env=STACK)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    nessie = _stack_state(built.stack)["services"]["nessie"]["endpoints"]
    assert settings["catalog"]["uri"] == nessie["iceberg"]
    assert settings["catalog"]["nessie_api"] == nessie["api"]
    assert settings["engine"]["type"] == "trino"
    secret = _stack_state(built.stack)["secret_access_key"]
    assert secret not in shown.stdout and settings["storage"]["secret_access_key"] == "***"


def test_dbt_builds_every_layer_on_trino_and_the_kpis_equal_the_embedded_build(built: Built) -> None:
    assert built.trino_build == 0, "dbt build --target trino failed: see dbt/trino/logs in the home"
    assert built.local_build == 0
    with Lakehouse(built.stack) as on_trino, Lakehouse(built.local) as embedded:
        layers = {(t.layer, t.table): t.rows for t in embedded.tables() if t.layer != "audit"}
        assert {(t.layer, t.table): t.rows for t in on_trino.tables() if t.layer != "audit"} == layers
        assert sum(1 for layer, _ in layers if layer in ("silver", "gold", "platinum")) >= 30
        for label, query in KPI_QUERIES.items():
            expected = _number(embedded.sql(query).column(0)[0].as_py())
            assert _number(on_trino.sql(query).column(0)[0].as_py()) == expected, label


def _number(value: Any) -> Any:
    """A KPI's value as a number where it is one: DuckDB rounds a decimal quotient to a double,
    Trino keeps it a decimal."""
    return round(float(value), 6) if isinstance(value, (decimal.Decimal, float)) else value


def test_lakehouse_sql_runs_on_trino_as_the_authenticated_user(built: Built) -> None:
    home = built.stack.home
    query = "select distinct store_id from gold.fct_sales order by 1"
    as_sam = run_cli("sql", "--as", "sam", "-o", "json", query, home=home, env=STACK)
    assert as_sam.returncode == 0, as_sam.stderr
    assert [row["store_id"] for row in json.loads(as_sam.stdout)] == ["S001"]
    operator = run_cli("sql", "-o", "json", query, home=home, env=STACK)
    assert len(json.loads(operator.stdout)) > 1
    # Trino itself records who ran what
    queries = run_cli(
        "sql", "-o", "json", 'select "user", query from system.runtime.queries', home=home, env=STACK
    )
    assert {"user": "sam", "query": query} in json.loads(queries.stdout)


def test_a_query_trino_refuses_is_one_line_naming_the_user_and_trinos_reason(built: Built) -> None:
    refused = run_cli(
        "sql", "--as", "sam", "select * from bronze.customers", home=built.stack.home, env=STACK
    )
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "Trino refused the query as sam" in refused.stderr
    assert "Access Denied" in refused.stderr and "Traceback" not in refused.stderr


# -- policies enforced by Trino: the users x tables matrix --------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, decimal.Decimal):
        return value.normalize()
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return value


def _fingerprint(lh: Lakehouse, identifier: str, columns: list[str]) -> tuple[Any, ...] | str:
    """What ``lh``'s user sees of a table: its row count and, per column, the number of distinct
    values, the smallest and the largest; or ``denied``."""
    quoted = [f'"{c}"' for c in columns]
    aggregates = ", ".join(f"count(distinct {c}), min({c}), max({c})" for c in quoted)
    try:
        row = lh.sql(f"select count(*), {aggregates} from {identifier}").to_pylist()[0]
    except AccessDenied:
        return "denied"
    return tuple(_normal(v) for v in row.values())


@pytest.mark.parametrize("user", sorted(load_policy(REPO / "policies").principals))
def test_every_user_sees_through_trino_exactly_what_the_embedded_engine_shows(
    built: Built, user: str
) -> None:
    embedded_settings = built.stack.model_copy(deep=True)
    embedded_settings.engine.type = "duckdb"  # the embedded governed engine, same Nessie tables
    disagreements, granted = [], 0
    with Lakehouse(built.stack) as operator:
        columns = {  # the scalar columns: count(distinct), min and max apply to them in both engines
            f"{t.layer}.{t.table}": [
                f.name
                for f in operator.table(f"{t.layer}.{t.table}").schema().fields
                if f.field_type.is_primitive
            ]
            for t in operator.tables()
            if t.layer in ("bronze", "silver", "gold", "platinum")
        }
    with Lakehouse(built.stack, user=user) as trino, Lakehouse(embedded_settings, user=user) as embedded:
        for identifier, names in sorted(columns.items()):
            seen = _fingerprint(embedded, identifier, names)
            granted += seen != "denied"
            if _fingerprint(trino, identifier, names) != seen:
                disagreements.append(identifier)
    assert disagreements == []
    assert granted > 0 or user == "svc-ml"


# -- bypass attempts, generated: each must be refused and return nothing ------------------------

DENIED_FOR_SAM = (
    "bronze.customers",
    "silver.stg_orders",
    "silver.stg_customers",
    "platinum.feat_demand_daily",
)


def _spellings(identifier: str) -> list[str]:
    layer, table = identifier.split(".")
    return [
        f"{layer}.{table}",
        f"iceberg.{layer}.{table}",
        f'"{layer}"."{table}"',
        f"{layer.upper()}.{table.upper()}",
        f'iceberg.{layer}."{table}$files"',
        f'iceberg.{layer}."{table}$snapshots"',
        f'iceberg.{layer}."{table}$history"',
        f'{layer}."{table}$partitions"',
        f'{layer}."{table}$properties"',
    ]


def _attempts() -> list[str]:
    queries = []
    for identifier in DENIED_FOR_SAM:
        for name in _spellings(identifier):
            queries += [f"select * from {name}", f"select count(*) from {name}", f"table {name}"]
        queries += [
            f"show create table {identifier}",
            f"describe {identifier}",
            f"show stats for {identifier}",
        ]
    # metadata of a table sam may read: its files' statistics describe rows outside the filter
    queries += [f'select * from gold."fct_sales${kind}"' for kind in ("files", "snapshots", "partitions")]
    queries += [
        "select * from system.runtime.queries",
        "select * from system.metadata.table_comments",
        "select * from system.jdbc.tables",
        "create view gold.leak as select * from bronze.customers",
        "create table gold.leak as select * from gold.fct_sales",
        "insert into gold.fct_sales select * from gold.fct_sales",
        "delete from gold.fct_sales",
        "alter table gold.fct_sales execute expire_snapshots",
        "call iceberg.system.rollback_to_snapshot('gold', 'fct_sales', 1)",
        "select * from table(iceberg.system.table_changes('gold', 'fct_sales', 1, 2))",
        "set session authorization 'carol'",
    ]
    return queries


@pytest.mark.parametrize("query", _attempts())
def test_bypass_attempts_through_trino_are_refused(built: Built, query: str) -> None:
    with Lakehouse(built.stack, user="sam") as lh, pytest.raises(LakehouseError) as refused:
        lh.sql(query)
    assert isinstance(refused.value, AccessDenied) or "does not exist" in str(refused.value), refused.value


def test_information_schema_lists_only_what_the_user_may_read(built: Built) -> None:
    with Lakehouse(built.stack, user="sam") as lh:
        listed = lh.sql("select table_schema || '.' || table_name from information_schema.tables").column(0)
        columns = lh.sql(
            "select count(*) from information_schema.columns where table_schema = 'bronze'"
        ).column(0)[0]
        readable = {f"{t.layer}.{t.table}" for t in lh.tables()}
    assert {n for n in listed.to_pylist() if not n.startswith("information_schema.")} == readable
    assert readable and all(name.startswith("gold.") for name in readable)
    assert columns.as_py() == 0


def test_impersonation_without_permission_is_refused(built: Built) -> None:
    from lakehouse.config import apply_stack_state

    applied = apply_stack_state(built.stack)
    assert applied.engine.trino_passwords_file is not None
    sam_password = json.loads(applied.engine.trino_passwords_file.read_text())["sam"]
    as_sam = applied.model_copy(deep=True)
    as_sam.engine.trino_user = "sam"
    as_sam.engine.trino_password = SecretStr(sam_password)
    with Lakehouse(as_sam, user="carol") as lh, pytest.raises(AccessDenied, match=r"carol|sam"):
        lh.sql("select count(*) from gold.dim_customer")
    with Lakehouse(as_sam) as lh:  # sam as sam is fine
        assert lh.sql("select count(*) from gold.fct_sales").column(0)[0].as_py() > 0


def test_the_schemas_the_policy_compiles_against_are_the_built_tables(built: Built) -> None:
    """The OPA data names every table dbt built (a table the policy does not know is denied)."""
    compiled = table_schemas()
    with Lakehouse(built.stack) as lh:
        built_tables = {
            f"{t.layer}.{t.table}" for t in lh.tables() if t.layer in ("silver", "gold", "platinum")
        }
    assert built_tables <= set(compiled)


# -- users' own SQL tools: Trino's JDBC driver and CLI over TLS ------------------------------------


def _client(built: Built, user: str) -> tuple[dict[str, str], str, str, str]:
    """(environment with the user's password, Trino's https URL, CA file, java) for a client."""
    from lakehouse.config import apply_stack_state
    from lakehouse.local import find_java

    applied = apply_stack_state(built.stack)
    assert applied.engine.trino_passwords_file is not None and applied.engine.trino_ca_file is not None
    password = json.loads(applied.engine.trino_passwords_file.read_text())[user]
    url = f"https://{applied.engine.trino_host}:{applied.engine.trino_port}"
    java = str(find_java(17, purpose="the Trino clients").java)
    env = {"PATH": "/usr/bin:/bin", "TRINO_PASSWORD": password}
    return env, url, str(applied.engine.trino_ca_file), java


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _tools() -> dict[str, Path]:
    from lakehouse.local import layouts

    return layouts()["trino"].tools


@pytest.mark.parametrize("user, stores", [("sam", ["S001"]), ("tess", ["S002"])])
def test_the_jdbc_driver_connects_over_tls_and_sees_only_the_users_rows(
    built: Built, user: str, stores: list[str]
) -> None:
    env, url, ca, java = _client(built, user)
    jdbc = f"jdbc:trino://{url.removeprefix('https://')}/iceberg/gold?SSL=true&SSLTrustStorePath={ca}"
    source = Path(__file__).parent / "clients" / "JdbcQuery.java"
    query = [java, "-cp", str(_tools()["trino-jdbc"]), str(source), jdbc, user]
    seen = _run([*query, "select distinct store_id from fct_sales order by 1"], env)
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.split() == stores
    denied = _run([*query, "select count(*) from bronze.customers"], env)
    assert denied.returncode == 3 and "Access Denied" in denied.stderr
    wrong = _run([*query, "select 1"], {**env, "TRINO_PASSWORD": "wrong"})
    assert wrong.returncode == 3, wrong.stderr
    assert "401" in wrong.stderr or "Authentication" in wrong.stderr or "Unauthorized" in wrong.stderr


def test_the_trino_cli_connects_over_tls_and_sees_only_the_users_rows(built: Built) -> None:
    env, url, ca, java = _client(built, "sam")
    cli = [
        java,
        "-jar",
        str(_tools()["trino-cli"]),
        "--server",
        url,
        "--user",
        "sam",
        "--password",
        "--truststore-path",
        ca,
        "--catalog",
        "iceberg",
        "--output-format",
        "CSV_UNQUOTED",
    ]
    seen = _run([*cli, "--execute", "select distinct store_id from gold.fct_sales order by 1"], env)
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.split() == ["S001"]
    denied = _run([*cli, "--execute", "select count(*) from bronze.customers"], env)
    assert denied.returncode != 0 and "Access Denied" in denied.stderr
    # no plain-HTTP listener to fall back to
    plain = _run([*cli[:4], url.replace("https://", "http://"), *cli[5:], "--execute", "select 1"], env)
    assert plain.returncode != 0


# -- write-audit-publish on Nessie branches (these two run last: the second breaks bronze) ------


def _nessie(settings: Settings) -> Any:
    from lakehouse.catalog import Nessie

    return Nessie(_stack_state(settings)["services"]["nessie"]["endpoints"]["api"])


def test_a_green_build_on_a_branch_is_merged_into_main(built: Built) -> None:
    nessie = _nessie(built.stack)
    before = nessie.contents("main")
    result = run_cli("build", "--select", "stg_regions", home=built.stack.home, env=STACK)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "published: branch wap merged into main" in result.stdout
    after, on_branch = nessie.contents("main"), nessie.contents("wap")
    assert after["silver.stg_regions"] != before["silver.stg_regions"]  # the build replaced it
    assert after["silver.stg_regions"] == on_branch["silver.stg_regions"]
    assert {k: v for k, v in after.items() if k != "silver.stg_regions"} == {
        k: v for k, v in before.items() if k != "silver.stg_regions"
    }


def test_a_failing_test_leaves_main_untouched_and_names_the_test(built: Built, tmp_path: Path) -> None:
    bad = tmp_path / "regions.csv"
    bad.write_text("region_id,region_name,country\n r1 ,A second R1,de\n")  # R1 once trimmed: a duplicate
    with Lakehouse(built.stack) as lh:
        lh.load("bronze.regions", [bad])
    nessie = _nessie(built.stack)
    head, before = nessie.branch("main"), nessie.contents("main")
    try:
        result = run_cli("build", "--select", "stg_regions+", home=built.stack.home, env=STACK)
        assert result.returncode == 1
        assert "unique_stg_regions_region_id" in result.stderr, result.stderr
        assert "main is untouched" in result.stderr and result.stderr.count("\n") == 1
        assert nessie.branch("main") == head
        assert nessie.contents("main") == before
        # the branch holds the failed build for inspection: its stg_regions has the duplicate
        assert nessie.contents("wap")["silver.stg_regions"] != before["silver.stg_regions"]
    finally:
        with Lakehouse(built.stack) as lh:
            lh.sql("delete from bronze.regions where region_name = 'A second R1'")
