from __future__ import annotations

import pytest
from pyiceberg.transforms import MonthTransform

from lakehouse import ContractError, load_contracts
from lakehouse.contracts._contracts import dbt_sources_yaml, parse_contracts

from .conftest import REPO

pytestmark = pytest.mark.unit


def test_every_reference_table_is_declared() -> None:
    names = {c.name for c in load_contracts().values()}
    assert names == {
        "regions",
        "stores",
        "products",
        "customers",
        "orders",
        "order_lines",
        "shipments",
        "returns",
        "waste",
        "quality_inspections",
        "devices",
        "sensor_readings",
        "dead_letters",
    }


def test_contract_gives_schema_keys_and_partitioning() -> None:
    orders = load_contracts()["bronze.orders"]
    schema = orders.iceberg_schema()
    assert schema.identifier_field_names() == {"order_id"}
    assert schema.find_field("order_ts").required
    assert not schema.find_field("customer_id").required
    (field,) = orders.partition_spec().fields
    assert isinstance(field.transform, MonthTransform)
    assert schema.find_field(field.source_id).name == "order_ts"
    customers = load_contracts()["bronze.customers"]
    assert customers.pii == ["full_name", "email", "phone", "birth_date", "street", "city", "postal_code"]
    assert customers.pii_fingerprints == {"address_fingerprint": ["street", "city", "postal_code"]}
    stored = {c.name: c for c in customers.stored_columns}
    assert all(stored[c].description.startswith("encrypted") for c in customers.pii)
    assert {"email_token", "phone_token", "address_fingerprint"} <= stored.keys()
    assert "address_fingerprint" not in customers.arrow_schema().names  # the platform computes it
    assert customers.table_properties()["lakehouse.rls.store"] == "home_store_id"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "primary_key: [nope]\n    columns: [{name: a, type: string, required: true}]",
            "primary_key names unknown",
        ),
        ("primary_key: [a]\n    columns: [{name: a, type: strng, required: true}]", "unknown type 'strng'"),
        ("primary_key: [a]\n    columns: [{name: a, type: string}]", "must be required"),
        (
            "primary_key: [a]\n    pii: [b]\n    columns: [{name: a, type: string, required: true}]",
            "pii names unknown",
        ),
        (
            "primary_key: [a]\n    pii: [b]\n    pii_subject: a\n    pii_fingerprints: {fp: [a]}\n"
            "    columns: [{name: a, type: string, required: true}, {name: b, type: string}]",
            "pii_fingerprints name non-pii",
        ),
        (
            "primary_key: [a]\n    pii: [b]\n    pii_subject: a\n    pii_fingerprints: {a: [b]}\n"
            "    columns: [{name: a, type: string, required: true}, {name: b, type: string}]",
            "clash with declared columns",
        ),
    ],
)
def test_malformed_contracts_say_what_and_where(body: str, message: str) -> None:
    with pytest.raises(ContractError, match=message) as info:
        parse_contracts(f"tables:\n  things:\n    {body}\n", source="contracts/x.yml")
    assert "contracts/x.yml: table 'things'" in str(info.value)


def test_dbt_sources_are_generated_from_the_contracts() -> None:
    committed = (REPO / "dbt" / "models" / "bronze" / "__sources.yml").read_text()
    assert committed == dbt_sources_yaml(), (
        "regenerate: lakehouse contracts dbt-sources > dbt/models/bronze/__sources.yml"
    )
