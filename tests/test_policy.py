"""Access policies: validation with file:line errors, the compiled Trino Rego evaluated with a
real Rego engine (regorus) on Trino-shaped inputs, the embedded engine enforcing the same
decisions on real Iceberg tables, and attempts to get around it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from lakehouse import AccessDenied, Lakehouse, NoSuchTableError, Settings
from lakehouse.governance._compile import REGO_FILE, opa_data, rules_json, table_schemas, trino_decision_sql
from lakehouse.governance._policy import Policy, PolicyError, load_policy
from lakehouse.query import GovernedEngine

from .conftest import REPO, run_cli

USERS = ["alice", "ravi", "sam", "tess", "dana", "carol", "svc-ml", "mallory"]


@pytest.fixture(scope="module")
def schemas() -> dict[str, list[str]]:
    return table_schemas()


@pytest.fixture(scope="module")
def policy(schemas: dict[str, list[str]]) -> Policy:
    return load_policy(REPO / "policies", schemas)


# --- validation ---------------------------------------------------------------------------------


def _broken(tmp_path: Path, file: str, old: str, new: str) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    text = (target / file).read_text()
    assert old in text
    (target / file).write_text(text.replace(old, new, 1))
    return target


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if needle in line)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("file", "old", "new", "needle", "message"),
    [
        (
            "access.yml",
            "gold.mart_customer_360: [full_name, email, city]",
            "gold.mart_customers_360: [full_name, email, city]",
            "gold.mart_customers_360",
            "unknown table 'gold.mart_customers_360'",
        ),
        (
            "access.yml",
            "gold.mart_customer_360: [full_name, email, city]",
            "gold.mart_customer_360: [full_name, e_mail, city]",
            "gold.mart_customer_360",
            "unknown column 'e_mail' of gold.mart_customer_360",
        ),
        (
            "access.yml",
            "  ml_service: {layers: [platinum]}",
            "  ml_servcie: {layers: [platinum]}",
            "ml_servcie",
            "grant for unknown role 'ml_servcie'",
        ),
        (
            "principals.yml",
            "sam: {roles: [store_manager], attributes: {store: S001}}",
            "sam: {roles: [store_manger], attributes: {store: S001}}",
            "sam:",
            "user sam: unknown role 'store_manger'",
        ),
        (
            "principals.yml",
            "sam: {roles: [store_manager], attributes: {store: S001}}",
            "sam: {roles: [store_manager]}",
            "sam:",
            "role store_manager filters rows by 'store'",
        ),
        (
            "access.yml",
            "      gold.mart_customer_360: [full_name, email, city]\n",
            "",
            "    tables:",
            "gold.mart_customer_360 has pii column(s) ['city', 'email', 'full_name'] not listed",
        ),
        (
            "principals.yml",
            "sam: {roles: [store_manager], attributes: {store: S001}}",
            "sam: {roles: [store_manager], attributes: {store: \"S001' or '1'='1\"}}",
            "sam:",
            "must be letters, digits",
        ),
        (
            "access.yml",
            "birth_date: redact,",
            "birth_date: year,",
            "{full_name: redact",
            "birth_date is encrypted: its mask must be",
        ),
    ],
)
def test_invalid_policies_name_file_and_line(
    tmp_path: Path, schemas: dict[str, list[str]], file: str, old: str, new: str, needle: str, message: str
) -> None:
    directory = _broken(tmp_path, file, old, new)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory, schemas)
    text = str(caught.value)
    assert message in text, text
    assert f"{directory / file}:{_line_of(directory / file, needle)}:" in text, text


@pytest.mark.integration
def test_policy_check_cli(tmp_path: Path) -> None:
    assert run_cli("policy", "check", home=tmp_path).returncode == 0
    broken = _broken(tmp_path, "access.yml", "[full_name, email, city]", "[full_name, emial, city]")
    for part in ("contracts", "dbt"):  # the reference project with broken policies
        (broken.parent / part).symlink_to(REPO / part)
    result = run_cli("policy", "check", home=tmp_path, env={"LAKEHOUSE_PROJECT_DIR": str(broken.parent)})
    assert result.returncode == 1
    assert "unknown column 'emial'" in result.stderr and "access.yml:" in result.stderr


@pytest.mark.unit
def test_reference_policies(policy: Policy, schemas: dict[str, list[str]]) -> None:
    fct = schemas["gold.fct_sales"]
    assert trino_decision_sql(policy.decide("alice", "gold.fct_sales", fct))[0] == (
        "store_id IN (SELECT store_id FROM iceberg.gold.dim_store WHERE region_id = 'R4')"
    )
    assert trino_decision_sql(policy.decide("sam", "gold.fct_sales", fct))[0] == "store_id = 'S001'"
    personal = ["full_name", "email", "phone", "birth_date", "street", "city", "postal_code"]
    dana = policy.decide("dana", "gold.dim_customer", schemas["gold.dim_customer"])
    assert dana.allowed and not dana.filters and set(dana.masks) == set(personal)
    carol = policy.decide("carol", "gold.dim_customer", schemas["gold.dim_customer"]).masks
    assert carol == dict.fromkeys(personal, "decrypt")
    assert not policy.decide("dana", "gold.dim_store", schemas["gold.dim_store"]).masks  # a store's city
    assert [t for t in schemas if policy.decide("svc-ml", t, schemas[t]).allowed] == [
        t for t in schemas if t.startswith("platinum.")
    ]
    assert not policy.decide("dana", "bronze.customers", schemas["bronze.customers"]).allowed
    with pytest.raises(PolicyError, match="unknown user 'mallory'"):
        policy.decide("mallory", "gold.fct_sales", fct)


# --- the Trino policy, evaluated by a Rego engine ----------------------------------------------


def _rego(policy: Policy, schemas: dict[str, list[str]]) -> Any:
    import regorus

    engine = regorus.Engine()
    engine.add_policy("lakehouse.rego", REGO_FILE.read_text())
    engine.add_data_json(json.dumps(opa_data(policy, schemas)))
    return engine


def _ask(engine: Any, rule: str, user: str, action: dict[str, Any]) -> Any:
    engine.set_input_json(
        json.dumps(
            {
                "context": {
                    "identity": {"user": user, "groups": []},
                    "softwareStack": {"trinoVersion": "479"},
                },
                "action": action,
            }
        )
    )
    return json.loads(engine.eval_rule_as_json(f"data.lakehouse.trino.{rule}"))


def _table(identifier: str, columns: list[str] | None = None) -> dict[str, Any]:
    schema, name = identifier.split(".")
    table: dict[str, Any] = {"catalogName": "iceberg", "schemaName": schema, "tableName": name}
    if columns is not None:
        table["columns"] = columns
    return table


@pytest.mark.unit
def test_rego_agrees_with_the_policy_for_every_user_and_table(
    policy: Policy, schemas: dict[str, list[str]]
) -> None:
    engine = _rego(policy, schemas)
    checked = 0
    for user in USERS:
        for identifier, columns in sorted(schemas.items()):
            allowed = _ask(
                engine,
                "allow",
                user,
                {"operation": "SelectFromColumns", "resource": {"table": _table(identifier, columns)}},
            )
            if user not in policy.principals:
                assert allowed is False
                continue
            decision = policy.decide(user, identifier, columns)
            assert allowed is decision.allowed, (user, identifier)
            if not decision.allowed:
                continue
            expected_filter, expected_masks = trino_decision_sql(decision)
            filters = _ask(
                engine,
                "rowFilters",
                user,
                {"operation": "GetRowFilters", "resource": {"table": _table(identifier)}},
            )
            assert [f["expression"] for f in filters] == ([expected_filter] if expected_filter else []), (
                user,
                identifier,
            )
            resources = [
                {"column": {**_table(identifier), "columnName": c, "columnType": "varchar"}} for c in columns
            ]
            masks = _ask(
                engine, "batchColumnMasks", user, {"operation": "GetColumnMask", "filterResources": resources}
            )
            assert {columns[m["index"]]: m["viewExpression"]["expression"] for m in masks} == expected_masks
            checked += 1
    assert checked > 60


@pytest.mark.unit
def test_rego_filters_catalogs_schemas_and_tables(policy: Policy, schemas: dict[str, list[str]]) -> None:
    engine = _rego(policy, schemas)
    tables = sorted(schemas)
    visible = _ask(
        engine,
        "batch",
        "svc-ml",
        {"operation": "FilterTables", "filterResources": [{"table": _table(t)} for t in tables]},
    )
    assert sorted(tables[i] for i in visible) == [t for t in tables if t.startswith("platinum.")]
    layers = ["bronze", "silver", "gold", "platinum"]
    resources = [{"schema": {"catalogName": "iceberg", "schemaName": s}} for s in layers]
    assert sorted(
        layers[i]
        for i in _ask(engine, "batch", "sam", {"operation": "FilterSchemas", "filterResources": resources})
    ) == ["gold"]
    catalogs = [{"catalog": {"name": "iceberg"}}, {"catalog": {"name": "system"}}]
    assert _ask(engine, "batch", "dana", {"operation": "FilterCatalogs", "filterResources": catalogs}) == [0]
    assert _ask(engine, "allow", "dana", {"operation": "ExecuteQuery"}) is True
    assert _ask(engine, "allow", "mallory", {"operation": "ExecuteQuery"}) is False
    assert (
        _ask(
            engine,
            "allow",
            "sam",
            {
                "operation": "SelectFromColumns",
                "resource": {"table": {**_table("gold.fct_sales", ["store_id"]), "catalogName": "other"}},
            },
        )
        is False
    )


@pytest.mark.unit
def test_rules_json_matches_the_policy(policy: Policy, schemas: dict[str, list[str]]) -> None:
    rules = rules_json(policy, schemas)
    sam = [r for r in rules["tables"] if r.get("user") == "^sam$"]
    assert {f"{r['schema']}.{r['table']}" for r in sam} == {
        t for t in schemas if policy.decide("sam", t, schemas[t]).allowed
    }
    fct = next(r for r in sam if r["table"] == "fct_sales")
    assert fct["filter"] == "store_id = 'S001'" and fct["privileges"] == ["SELECT"]
    customer = next(r for r in sam if r["table"] == "dim_customer")
    assert {c["name"] for c in customer["columns"]} == {
        "full_name",
        "email",
        "phone",
        "birth_date",
        "street",
        "city",
        "postal_code",
    }
    assert rules["tables"][-1] == {"privileges": []}  # everything else: nothing
    for rule in rules["tables"][:-1]:  # every expression is valid Trino SQL
        for expression in [rule.get("filter"), *[c["mask"] for c in rule.get("columns", [])]]:
            if expression:
                sqlglot.parse_one(expression, read="trino")


# --- the embedded engine under the same policy --------------------------------------------------


@pytest.fixture(scope="module")
def policy_home(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the built lakehouse: policy-bound queries append to its audit log."""
    home = tmp_path_factory.mktemp("governed") / "home"
    shutil.copytree(built_home, home)
    return home


@pytest.fixture(scope="module")
def engines(policy_home: Path, policy: Policy) -> Iterator[dict[str, Any]]:
    lh = Lakehouse(Settings(home=policy_home))
    opened: dict[str, Any] = {"__raw__": lh}
    try:
        for user in USERS[:-1]:
            opened[user] = GovernedEngine(lh.settings, lh.catalog, policy, user)
        yield opened
    finally:
        for engine in opened.values():
            engine.close()


def _with_decrypt(lakehouse: Lakehouse) -> None:
    """Give the operator's session the platform's decrypt function, to evaluate the Trino masks."""
    from lakehouse.privacy import open_keystore

    conn = lakehouse.engine.connect()
    if not conn.execute(
        "select count(*) from duckdb_functions() where function_name = 'pii_decrypt'"
    ).fetchone()[0]:
        keystore = open_keystore(lakehouse.settings)
        conn.create_function("pii_decrypt", keystore.decrypt, ["VARCHAR"], "VARCHAR")


MATRIX_TABLES = [
    "gold.fct_sales",
    "gold.dim_store",
    "gold.dim_customer",
    "gold.mart_customer_360",
    "gold.dim_product",
    "gold.mart_cold_chain_compliance",
    "silver.stg_customers",
    "silver.int_customers_history",
    "bronze.customers",
    "platinum.feat_demand_daily",
]


@pytest.mark.e2e
@pytest.mark.dbt
@pytest.mark.parametrize("user", USERS[:-1])
def test_embedded_engine_agrees_with_the_compiled_trino_policy(
    engines: dict[str, Any], policy: Policy, schemas: dict[str, list[str]], user: str
) -> None:
    """For each table: what the user's session returns equals the raw table with the Trino
    filter and masks that the Rego module returns, translated to DuckDB by sqlglot."""
    raw, mine = engines["__raw__"], engines[user]
    rego = _rego(policy, schemas)
    _with_decrypt(raw)
    for identifier in MATRIX_TABLES:
        columns = schemas[identifier]
        allowed = _ask(
            rego,
            "allow",
            user,
            {"operation": "SelectFromColumns", "resource": {"table": _table(identifier, columns)}},
        )
        if not allowed:
            with pytest.raises(AccessDenied):
                mine.sql(f"select * from {identifier}")
            continue
        filters = _ask(
            rego,
            "rowFilters",
            user,
            {"operation": "GetRowFilters", "resource": {"table": _table(identifier)}},
        )
        resources = [
            {"column": {**_table(identifier), "columnName": c, "columnType": "varchar"}} for c in columns
        ]
        masks = {
            columns[m["index"]]: m["viewExpression"]["expression"]
            for m in _ask(
                rego, "batchColumnMasks", user, {"operation": "GetColumnMask", "filterResources": resources}
            )
        }

        def duck(expression: str) -> str:
            return sqlglot.transpile(expression.replace("iceberg.", ""), read="trino", write="duckdb")[0]

        # Trino keeps a masked column's type; so does the comparison (DuckDB's date_trunc widens)
        types = {r["column_name"]: r["column_type"] for r in raw.sql(f"describe {identifier}").to_pylist()}
        select = ", ".join(
            f"cast(cast({duck(masks[c])} as {types[c]}) as varchar) as {c}"
            if c in masks
            else f"cast({c} as varchar) as {c}"
            for c in columns
        )
        where = f" where {duck(filters[0]['expression'])}" if filters else ""
        expected = raw.sql(f"select {select} from {identifier}{where}")
        got = mine.sql(
            f"select {', '.join(f'cast({c} as varchar) as {c}' for c in columns)} from {identifier}"
        )
        assert got.num_rows == expected.num_rows, (user, identifier)
        order = [(c, "ascending") for c in columns]
        assert got.sort_by(order).to_pylist() == expected.sort_by(order).to_pylist(), (user, identifier)


@pytest.mark.e2e
@pytest.mark.dbt
def test_filters_and_masks_show_in_results(engines: dict[str, Any]) -> None:
    sam, alice, dana, carol = engines["sam"], engines["alice"], engines["dana"], engines["carol"]
    assert sam.sql("select distinct store_id from gold.fct_sales").column(0).to_pylist() == ["S001"]
    stores_r4 = (
        engines["__raw__"]
        .sql("select store_id from gold.dim_store where region_id = 'R4'")
        .column(0)
        .to_pylist()
    )
    assert sorted(alice.sql("select distinct store_id from gold.fct_sales").column(0).to_pylist()) == sorted(
        stores_r4
    )
    row = dana.sql(
        "select full_name, email, email_token, birth_date from gold.dim_customer where full_name is not null limit 1"
    ).to_pylist()[0]
    assert row["full_name"] == row["birth_date"] == "***"
    assert row["email"] == row["email_token"] and len(row["email"]) == 64  # the keyed token, not the address
    clear = carol.sql(
        "select email, birth_date from gold.dim_customer where email is not null limit 1"
    ).to_pylist()[0]
    assert "@" in clear["email"] and len(clear["birth_date"]) == 10  # decrypted by the platform
    raw = (
        engines["__raw__"]
        .sql("select email from gold.dim_customer where email is not null limit 1")
        .column(0)[0]
        .as_py()
    )
    assert raw.startswith("pii:v1:") and "@" not in raw  # stored encrypted


@pytest.mark.e2e
@pytest.mark.dbt
def test_joins_and_aggregates_see_only_granted_rows(engines: dict[str, Any]) -> None:
    sam, raw = engines["sam"], engines["__raw__"]
    mine = (
        sam.sql("select count(*) from gold.fct_sales f join gold.dim_store s using (store_id)")
        .column(0)[0]
        .as_py()
    )
    truth = raw.sql("select count(*) from gold.fct_sales where store_id = 'S001'").column(0)[0].as_py()
    assert mine == truth > 0
    others = sam.sql("select count(*) from gold.fct_sales where store_id <> 'S001'").column(0)[0].as_py()
    assert others == 0
    # a CTE is fine when it reads granted tables
    assert (
        sam.sql("with s as (select store_id from gold.fct_sales) select count(distinct store_id) from s")
        .column(0)[0]
        .as_py()
        == 1
    )
    # the unqualified default layer works, and still only for granted tables
    assert sam.sql("select count(*) from fct_sales", schema="gold").column(0)[0].as_py() == truth
    with pytest.raises(AccessDenied):
        sam.sql("select * from customers", schema="bronze")


@pytest.mark.e2e
@pytest.mark.dbt
def test_cli_runs_as_a_user(policy_home: Path) -> None:
    result = run_cli(
        "sql", "--as", "sam", "-o", "json", "select distinct store_id from gold.fct_sales", home=policy_home
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"store_id": "S001"}]
    denied = run_cli("sql", "--as", "sam", "select * from bronze.customers", home=policy_home)
    assert denied.returncode == 1 and "sam may not read bronze.customers" in denied.stderr
    unknown = run_cli("sql", "--as", "mallory", "select 1", home=policy_home)
    assert unknown.returncode == 1 and "unknown user 'mallory'" in unknown.stderr


@pytest.mark.e2e
@pytest.mark.dbt
def test_every_query_is_audited_and_the_log_is_under_policy(engines: dict[str, Any]) -> None:
    sam, carol = engines["sam"], engines["carol"]
    marker = "select count(*) as audited_marker from gold.fct_sales"
    rows = sam.sql(marker).num_rows
    with pytest.raises(AccessDenied):
        sam.sql("select * from bronze.customers -- audited_marker")
    log = carol.sql(
        "select user_name, roles, tables, applied, rows_returned, outcome, reason, policy_version "
        "from audit.query_log where query like '%audited_marker%' order by queried_at"
    ).to_pylist()
    assert [(e["user_name"], e["outcome"]) for e in log] == [("sam", "ok"), ("sam", "denied")]
    ok, denied = log
    assert ok["roles"] == "store_manager" and ok["tables"] == "gold.fct_sales" and ok["rows_returned"] == rows
    assert json.loads(ok["applied"])["gold.fct_sales"]["filter"] == "store_id = 'S001'"
    assert "may not read bronze.customers" in denied["reason"] and len(ok["policy_version"]) == 16
    with pytest.raises(AccessDenied):
        sam.sql("select * from audit.query_log")
    with pytest.raises(AccessDenied):
        engines["dana"].sql("select * from audit.query_log")


@pytest.mark.e2e
@pytest.mark.dbt
def test_duckdb_file_for_superset_holds_only_the_users_view(policy_home: Path, tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "sam.duckdb"
    result = run_cli("policy", "export-duckdb", "--as", "sam", "--out", str(out), home=policy_home)
    assert result.returncode == 0, result.stderr
    conn = duckdb.connect(str(out), read_only=True)
    try:
        tables = {
            f"{s}.{t}"
            for s, t in conn.execute(
                "select schema_name, table_name from duckdb_tables() where database_name = 'sam'"
            ).fetchall()
        }
        policy = load_policy(REPO / "policies", table_schemas())
        assert tables and all(policy.decide("sam", t, table_schemas()[t]).allowed for t in tables)
        assert "bronze.customers" not in tables and not any(t.startswith("audit.") for t in tables)
        assert conn.execute("select distinct store_id from gold.fct_sales").fetchall() == [("S001",)]
        names = {r[0] for r in conn.execute("select distinct full_name from gold.dim_customer").fetchall()}
        assert names == {"***"}, names  # every name masked, none missing
        assert conn.execute("select count(*) from duckdb_views() where not internal").fetchone() == (0,)
    finally:
        conn.close()
    assert out.stat().st_mode & 0o077 == 0


@pytest.mark.e2e
@pytest.mark.dbt
def test_the_operators_unrestricted_queries_are_audited_too(policy_home: Path) -> None:
    import getpass

    with Lakehouse(Settings(home=policy_home)) as operator:
        operator.sql("select count(*) as operator_marker from gold.fct_sales")
        with pytest.raises(NoSuchTableError, match="no table"):
            operator.sql("select * from gold.nope -- operator_marker")
    with Lakehouse(Settings(home=policy_home), user="carol") as carol:
        log = carol.sql(
            "select user_name, tables, outcome, rows_returned, policy_version from audit.query_log "
            "where query like '%operator_marker%' order by outcome desc"
        ).to_pylist()
    assert [(e["user_name"], e["outcome"]) for e in log] == [
        (f"operator:{getpass.getuser()}", "ok"),
        (f"operator:{getpass.getuser()}", "error"),
    ]
    assert log[0]["tables"] == "gold.fct_sales" and log[0]["rows_returned"] == 1
    assert log[0]["policy_version"] == "unrestricted"
