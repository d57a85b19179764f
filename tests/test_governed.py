"""The governed engine, tried as an attacker would: a user's session holds only what the user may
see, so no spelling of a query reaches anything else, whatever a parser makes of it.

The oracle is data, not error messages: the warehouse holds canaries the attacker's user may not
see (a gold table no row filter reaches, another store's rows, a bronze table, another user's
audited query, plaintext personal data, the warehouse's paths, an environment variable). Every
attack either fails or returns rows that contain none of them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import (
    AccessDenied,
    Lakehouse,
    LakehouseError,
    NoSuchTableError,
    QueryError,
    QueryLimitExceeded,
    Settings,
)
from lakehouse.query import _governed as governed
from lakehouse.query._governed import GovernedEngine, QueryShape

CANARY = "CANARY-7f3a9c"
ENV_CANARY = "CANARY-ENV-51d2"

pytestmark = [pytest.mark.e2e, pytest.mark.dbt]


@pytest.fixture(scope="module")
def attack_home(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the built lakehouse with canaries that store manager sam (S001) may not see."""
    home = tmp_path_factory.mktemp("attack") / "home"
    shutil.copytree(built_home, home)
    files = tmp_path_factory.mktemp("canaries")
    secret = files / "zz_canary.parquet"
    pq.write_table(pa.table({"secret": [CANARY + "-gold"], "n": [1]}), secret)
    sales = files / "zz_sales_canary.parquet"
    pq.write_table(
        pa.table({"store_id": ["S001", "S002", "S002"], "note": ["visible", CANARY + "-s002", CANARY]}), sales
    )
    bronze = files / "zz_raw_canary.parquet"
    pq.write_table(pa.table({"store_id": ["S001"], "raw": [CANARY + "-bronze"]}), bronze)
    with Lakehouse(Settings(home=home)) as operator:
        operator.load("gold.zz_canary", [secret], create=True)
        operator.load("gold.zz_sales_canary", [sales], create=True)
        operator.load("bronze.zz_raw_canary", [bronze], create=True)
    with Lakehouse(Settings(home=home), user="tess") as tess:  # another user's audited query
        tess.sql(f"select '{CANARY}-audit' as x from gold.dim_store limit 1")
    return home


@pytest.fixture(scope="module")
def sam(attack_home: Path) -> Iterator[Lakehouse]:
    with Lakehouse(Settings(home=attack_home), user="sam") as handle:
        yield handle


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def _leaks(result: pa.Table, home: Path) -> list[str]:
    """Every cell that reveals something sam may not see."""
    found = []
    for row in result.to_pylist():
        for text in _strings(row):
            if CANARY in text or ENV_CANARY in text or str(home) in text or "@" in text:
                found.append(text[:120])
    return found


def _attempt(user: Lakehouse, query: str, home: Path, schema: str | None = None) -> str:
    """'refused' or 'answered' (without a leak); fails the test on a leak or a non-query error."""
    try:
        result = user.sql(query, schema=schema)
    except LakehouseError:  # a refusal the platform made on purpose; anything else fails the test
        return "refused"
    leaks = _leaks(result, home)
    assert not leaks, f"{query!r} leaked {leaks[:3]}"
    return "answered"


# --- attacks, generated ------------------------------------------------------------------------

DENIED = [
    "bronze.customers",
    "gold.zz_canary",
    "audit.query_log",
    "bronze.zz_raw_canary",
    "silver.stg_customers",
]
READERS = [
    "read_parquet",
    "parquet_scan",
    "read_csv",
    "read_csv_auto",
    "read_json",
    "read_json_auto",
    "read_text",
    "read_blob",
    "iceberg_scan",
    "iceberg_metadata",
    "iceberg_snapshots",
    "parquet_metadata",
    "parquet_schema",
    "glob",
    "sniff_csv",
]
# characters some parsers read as whitespace or as part of a name, and look-alike letters
CODE_POINTS = [
    "\u00a0",
    "\u1680",
    "\u180e",
    "\u2000",
    "\u2002",
    "\u2007",
    "\u200a",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2028",
    "\u2029",
    "\u202f",
    "\u205f",
    "\u2060",
    "\u3000",
    "\ufeff",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u0435",  # Cyrillic e
    "\uff42",  # fullwidth b
]


def _paths(home: Path) -> list[str]:
    """Real files of the warehouse: metadata, data and the catalog itself."""
    warehouse = home / "warehouse"
    found = [str(home / "catalog.db")]
    for pattern in ("bronze/customers/metadata/*.metadata.json", "bronze/customers/data/**/*.parquet"):
        found += [str(p) for p in sorted(warehouse.glob(pattern))[:1]]
    found += [str(warehouse / "gold" / "zz_canary" / "data") + "/*.parquet", str(warehouse) + "/**/*.parquet"]
    return found


def _attacks(home: Path) -> Iterator[tuple[str, str | None]]:
    for table in DENIED:
        layer, name = table.split(".")
        yield f"select * from {table}", None
        yield f"select * from {name}", layer
        yield f'select * from "{layer}"."{name}"', None
        yield f'select * from "{table}"', None
        yield f"select * from memory.{table}", None
        yield f"select * from temp.{table}", None
        yield f"with x as (select * from {table}) select * from x", None
        yield f"with fct_sales as (select * from {table}) select * from fct_sales", "gold"
        yield f"with gold as (select 1) select * from {table}", None
        yield (
            f"select * from gold.fct_sales where exists (with y as (select * from {table}) select 1 from y)",
            None,
        )
        yield f"select (select count(*) from {table}) as n", None
        yield f"select * from gold.dim_store, lateral (select * from {table}) t", None
        yield f"select * from gold.dim_store union all by name select * from {table}", None
        yield f"select * from query_table('{table}')", None
        yield f"select * from query('select * from {table}')", None
        yield f"select 1; select * from {table}", None
        yield f"select 1 -- \n; select * from {table}", None
        yield f'select * from gold."fct_sales"" union select * from {layer}.""{name}"', None
        for cp, where in itertools.product(CODE_POINTS, range(3)):
            spaced = [
                f"select{cp}*{cp}from {table}",
                f"select * from {layer}{cp}.{name}",
                f"select * from {layer}.{cp}{name}",
            ]
            yield spaced[where], None
    for reader, path in itertools.product(READERS, _paths(home)):
        yield f"select * from {reader}('{path}')", None
        yield f"select * from gold.dim_store where exists (select 1 from {reader}('{path}'))", None
    for path in _paths(home)[:2]:
        yield f"select read_text('{path}')", None
        yield f"select content from read_text('{path}')", None
    yield f"select getenv('{ENV_CANARY_NAME}')", None
    yield "select current_setting('home_directory'), current_setting('extension_directory')", None
    yield "select sql from duckdb_views()", None
    yield "select * from duckdb_tables()", None
    yield "select * from duckdb_settings()", None
    yield "select * from duckdb_secrets()", None
    yield "select * from duckdb_functions() where function_name like 'pii%'", None
    yield "select * from information_schema.tables", None
    yield "select view_definition from information_schema.views", None
    yield "select pii_decrypt(email) from gold.dim_customer", None
    yield "select * from gold.zz_sales_canary where store_id <> 'S001'", None
    yield "select * from gold.zz_sales_canary where note like 'CANARY%'", None
    yield "attach '" + str(home / "catalog.db") + "' as c (type sqlite)", None
    yield "attach '" + str(home / "catalog.db") + "' as c", None
    yield "copy (select 1) to '/tmp/governed-attack.csv'", None
    yield "export database '/tmp/governed-attack'", None
    yield "install httpfs", None
    yield "load iceberg", None
    yield "set enable_external_access = true", None
    yield "set allowed_directories = ['/']", None
    yield "pragma database_list", None
    yield "create view gold.mine as select * from bronze.customers", None


ENV_CANARY_NAME = "LAKEHOUSE_ATTACK_CANARY"


def test_no_spelling_of_a_query_reaches_what_the_user_may_not_see(
    sam: Lakehouse, attack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CANARY_NAME, ENV_CANARY)
    outcomes: dict[str, int] = {"refused": 0, "answered": 0}
    attacks = list(_attacks(attack_home))
    assert len(attacks) > 500  # generated variants, not a fixed handful
    for query, schema in attacks:
        outcomes[_attempt(sam, query, attack_home, schema)] += 1
    assert outcomes["refused"] > 400
    # and the canaries are really there, where sam may not look
    with Lakehouse(Settings(home=attack_home)) as operator:
        assert (
            operator.sql("select count(*) from gold.zz_sales_canary where note like 'CANARY%'")
            .column(0)[0]
            .as_py()
            == 2
        )
    visible = sam.sql("select note from gold.zz_sales_canary").column(0).to_pylist()
    assert visible == ["visible"]


def test_a_parser_that_misreads_the_query_cannot_open_anything(
    sam: Lakehouse, attack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate the worst parser differential: the friendly parser sees a harmless query of a
    granted table while DuckDB runs something else. The session still holds nothing more."""
    harmless = QueryShape(tables=[("", "gold", "dim_store")], identifiers={"store_id"})
    monkeypatch.setattr(governed, "parse_shape", lambda _conn, _query: harmless)
    engine = sam.engine
    assert isinstance(engine, GovernedEngine)
    engine._shapes.clear()
    for table in DENIED:
        with pytest.raises(QueryError):
            sam.sql(f"select * from {table}")
    for reader, path in itertools.product(["read_parquet", "iceberg_scan", "read_text"], _paths(attack_home)):
        with pytest.raises(QueryError):
            sam.sql(f"select * from {reader}('{path}')")
    with pytest.raises(QueryError):
        sam.sql("copy (select * from gold.dim_store) to '/tmp/governed-misread.csv'")
    with pytest.raises(QueryError):
        sam.sql("set enable_external_access = true")
    assert not Path("/tmp/governed-misread.csv").exists()
    # what it binds is still filtered: the granted table shows only sam's store
    assert sam.sql("select distinct store_id from gold.dim_store").column(0).to_pylist() == ["S001"]


def test_the_users_session_is_a_process_with_nothing_to_steal(sam: Lakehouse) -> None:
    """The user's SQL runs in its own process: no file access, locked settings, none of our
    functions, an empty environment (no secrets), and a different address space from the
    keystore's."""
    engine = sam.engine
    assert isinstance(engine, GovernedEngine)
    settings = dict(
        sam.sql(
            "select name, value from duckdb_settings() where name in "
            "('enable_external_access', 'lock_configuration', 'autoload_known_extensions', 'temp_directory')"
        )
        .to_pylist()[i]
        .values()
        for i in range(4)
    )
    assert settings == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoload_known_extensions": "false",
        "temp_directory": "",
    }
    functions = set(sam.sql("select function_name from duckdb_functions()").column(0).to_pylist())
    assert not functions & {"pii_decrypt", "iceberg_scan", "iceberg_metadata", "getenv"}
    with pytest.raises(AccessDenied):  # not even its own extension directory
        sam.sql("select * from duckdb_extensions()")
    # what the session's views read: copies of governed rows, nothing over a file
    definitions = sam.sql("select sql from duckdb_views() where not internal").column(0).to_pylist()
    assert definitions and all("iceberg_scan" not in d and "/" not in d for d in definitions)
    process = engine._session._proc
    assert process is not None and process.pid != os.getpid()
    environment = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environment if v.startswith((b"LAKEHOUSE_", b"AWS_"))]
    assert all(not v.endswith(b"keystore.json") for v in environment)


def test_column_pruning_never_changes_an_answer(attack_home: Path) -> None:
    """dana sees every row of non-personal gold tables: her answers equal the operator's for
    queries whose needed columns cannot be read off names (stars, NATURAL joins, a table as a
    value, PIVOT, self-joins, windows)."""
    queries = [
        "select count(*) from gold.fct_sales",
        "select * from gold.dim_store order by store_id",
        "select count(*) from gold.dim_store natural join gold.mart_daily_sales_by_store",
        "select s from gold.dim_store s order by s.store_id",
        "select count(*) from gold.fct_sales a join gold.fct_sales b using (sales_key)",
        "select store_id, sum(net_revenue) over (partition by store_id) as r from gold.fct_sales order by all limit 5",
        "pivot gold.mart_daily_sales_by_store on store_id in ('S001', 'S002') using sum(net_revenue) order by all limit 3",
        "select columns('net_.*') from gold.fct_sales order by all limit 3",
        "select * exclude (store_name) from gold.dim_store order by store_id",
        "from gold.dim_product select category, count(*) group by all order by all",
        "select distinct d.iso_day_of_week from gold.fct_sales f, gold.dim_date d where f.order_date = d.date_day order by 1",
    ]
    with (
        Lakehouse(Settings(home=attack_home)) as operator,
        Lakehouse(Settings(home=attack_home), user="dana") as dana,
    ):
        for query in queries:
            assert dana.sql(query).to_pylist() == operator.sql(query).to_pylist(), query


# --- bounds ------------------------------------------------------------------------------------


def _bounded(home: Path, **engine: Any) -> Lakehouse:
    return Lakehouse(Settings(home=home, engine=engine), user="sam")


def test_every_query_is_bounded_in_time_memory_and_result_size(attack_home: Path) -> None:
    with _bounded(attack_home, query_timeout=2) as sam:
        started = time.perf_counter()
        with pytest.raises(QueryLimitExceeded, match=r"longer than 2 s \(engine.query_timeout\)"):
            sam.sql("with recursive r(n) as (select 1 union all select n + 1 from r) select count(*) from r")
        assert time.perf_counter() - started < 10
        # DuckDB's optimizer is exponential in nested subqueries and checks no interrupt while
        # it plans: only killing the session process bounds this one
        for depth in (30, 45):
            started = time.perf_counter()
            with pytest.raises(QueryLimitExceeded, match=r"longer than 2 s"):
                sam.sql("select " + "(select " * depth + "1" + ")" * depth)
            assert time.perf_counter() - started < 10
        # the session works again: a new process (its start has a bound of its own; a copy of
        # granted rows under the 2 s bound would make this a measure of the machine's load)
        assert sam.sql("select 42 as answer").to_pylist() == [{"answer": 42}]
    with (
        _bounded(attack_home, governed_memory_limit="128MB") as sam,
        pytest.raises(QueryLimitExceeded, match=r"more than 128MB of memory"),
    ):
        sam.sql("select string_agg(repeat('x', 1000), ',') from range(1000000)")
    with _bounded(attack_home, max_result_rows=1000) as sam:
        assert sam.sql("select * from range(1000)").num_rows == 1000
        with pytest.raises(QueryLimitExceeded, match=r"more than 1,000 rows \(engine.max_result_rows\)"):
            sam.sql("select * from range(1001)")
    with (
        _bounded(attack_home, max_result_bytes="10MB") as sam,
        pytest.raises(QueryLimitExceeded, match=r"larger than 10,000,000 bytes"),
    ):
        sam.sql("select repeat('x', 1000) as s from range(100000)")
    with _bounded(attack_home) as sam:
        with pytest.raises(QueryLimitExceeded, match="characters"):
            sam.sql("select 1 " + " " * 1_000_001)
        with pytest.raises(QueryError, match="depth"):
            sam.sql("select " + "(select " * 3000 + "1" + ")" * 3000)


def test_refusals_are_audited_with_their_reason(attack_home: Path) -> None:
    marker = "refusal_marker_4411"
    with _bounded(attack_home, max_result_rows=10) as sam:
        with pytest.raises(AccessDenied):
            sam.sql(f"select * from bronze.customers -- {marker}")
        with pytest.raises(QueryLimitExceeded):
            sam.sql(f"select * from range(100) -- {marker}")
    with Lakehouse(Settings(home=attack_home), user="carol") as carol:
        log = carol.sql(
            f"select outcome, reason from audit.query_log where query like '%{marker}%' order by queried_at"
        ).to_pylist()
    assert [e["outcome"] for e in log] == ["denied", "error"]
    assert "may not read bronze.customers" in log[0]["reason"] and "max_result_rows" in log[1]["reason"]


# --- the Python API ----------------------------------------------------------------------------


def test_a_policy_bound_handle_exposes_only_governed_paths(sam: Lakehouse, attack_home: Path) -> None:
    for reach in (
        lambda: sam.table("gold.fct_sales"),
        lambda: sam.catalog,
        lambda: sam.keystore,
        lambda: sam.load("gold.zz_canary", [attack_home]),
    ):
        with pytest.raises(AccessDenied, match="policy-bound handle"):
            reach()
    listed = {f"{t.layer}.{t.table}" for t in sam.tables()}
    assert "gold.fct_sales" in listed and "gold.zz_sales_canary" in listed
    assert not listed & {"gold.zz_canary", "bronze.customers", "audit.query_log"}
    assert all(t.rows is None for t in sam.tables())  # unfiltered totals are not the user's to see


def test_the_next_query_sees_a_new_commit(attack_home: Path, tmp_path: Path) -> None:
    extra = tmp_path / "more.parquet"
    pq.write_table(pa.table({"store_id": ["S001"], "note": ["visible-later"]}), extra)
    with Lakehouse(Settings(home=attack_home), user="sam") as sam:
        before = sam.sql("select note from gold.zz_sales_canary order by note").column(0).to_pylist()
        with Lakehouse(Settings(home=attack_home)) as operator:
            operator.load("gold.zz_sales_canary", [extra])
        after = sam.sql("select note from gold.zz_sales_canary order by note").column(0).to_pylist()
    assert after == sorted([*before, "visible-later"])


def test_an_unknown_table_suggests_only_what_the_user_may_read(sam: Lakehouse) -> None:
    with pytest.raises(
        NoSuchTableError, match=r"no table gold.fct_sale that sam may read; did you mean gold.fct_sales\?"
    ):
        sam.sql("select * from gold.fct_sale")
    with pytest.raises(NoSuchTableError) as caught:
        sam.sql("select * from gold.zz_canar")
    assert "zz_canary" not in str(caught.value)  # a denied table is not suggested


def test_a_forgotten_customer_is_null_in_a_running_session_within_seconds(pii_session_home: Path) -> None:
    with Lakehouse(Settings(home=pii_session_home), user="carol") as carol:
        first = carol.sql(
            "select customer_id, email from gold.dim_customer where email is not null order by customer_id limit 1"
        ).to_pylist()[0]
        assert "@" in first["email"]
        with Lakehouse(Settings(home=pii_session_home)) as operator:
            operator.keystore.forget(first["customer_id"])  # another handle, as another process would
        deadline = time.monotonic() + 5
        while True:
            email = (
                carol.sql(f"select email from gold.dim_customer where customer_id = '{first['customer_id']}'")
                .column(0)
                .to_pylist()
            )
            if all(e is None for e in email) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert email and all(e is None for e in email)


@pytest.fixture
def pii_session_home(built_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    os.chmod(home, 0o700)
    return home
