"""The stack profile for real: SeaweedFS S3 (SigV4, SSE) + its Iceberg REST catalog, same code path."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from pyiceberg.catalog.rest import RestCatalog

from lakehouse import Lakehouse, Settings
from lakehouse.config import read_state
from lakehouse.local._stack import s3_client

from .conftest import dbt_build, load_reference, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.s3, pytest.mark.dbt]
STACK = {"LAKEHOUSE_PROFILE": "stack"}


@pytest.fixture(scope="module")
def stack_built(stack_home: Path, reference_files: dict[str, Path]) -> Path:
    with Lakehouse(Settings(profile="stack", home=stack_home)) as lh:
        assert isinstance(lh.catalog, RestCatalog)
        load_reference(lh, reference_files)
    result = dbt_build(stack_home, env=STACK)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return stack_home


def test_load_build_query_over_s3_and_the_rest_catalog(stack_built: Path) -> None:
    with Lakehouse(Settings(profile="stack", home=stack_built)) as lh:
        layers = {i.layer for i in lh.tables()}
        assert layers == {"bronze", "silver", "gold", "platinum"}
        sales = lh.sql("select count(*) as n, sum(net_revenue) as revenue from gold.fct_sales").to_pylist()[0]
        assert sales["n"] > 0 and sales["revenue"] > 0
        assert lh.table("gold.fct_sales").metadata_location.startswith("s3://warehouse/")


def test_every_data_and_manifest_object_is_encrypted_at_rest(stack_built: Path) -> None:
    settings = Settings(profile="stack", home=stack_built)
    s3 = s3_client(settings)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="warehouse")
        for o in page.get("Contents", [])
    ]
    written_by_us = [k for k in keys if k.endswith((".parquet", ".avro"))]
    assert len(written_by_us) > 50
    for key in written_by_us:
        assert s3.head_object(Bucket="warehouse", Key=key).get("ServerSideEncryption") == "AES256", key
    rule = s3.get_bucket_encryption(Bucket="warehouse")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_s3_refuses_unsigned_and_wrongly_signed_requests(stack_built: Path) -> None:
    state = read_state(Settings(profile="stack", home=stack_built))
    assert state is not None
    intruder = boto3.client(
        "s3",
        endpoint_url=state["s3_endpoint"],
        region_name="us-east-1",
        aws_access_key_id=state["access_key_id"],
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(ClientError) as info:
        intruder.list_objects_v2(Bucket="warehouse")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # no signature at all: neither a listing nor an object that exists is served
    key = s3_client(Settings(profile="stack", home=stack_built)).list_objects_v2(
        Bucket="warehouse", MaxKeys=1
    )["Contents"][0]["Key"]
    anonymous = boto3.client(
        "s3",
        endpoint_url=state["s3_endpoint"],
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    for attempt in (
        lambda: anonymous.list_objects_v2(Bucket="warehouse"),
        lambda: anonymous.get_object(Bucket="warehouse", Key=key),
    ):
        with pytest.raises(ClientError) as unsigned:
            attempt()
        assert unsigned.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_any_iceberg_client_reads_the_tables_through_rest(stack_built: Path) -> None:
    state = read_state(Settings(profile="stack", home=stack_built))
    assert state is not None
    catalog = RestCatalog(
        "other-client",
        uri=state["iceberg_uri"],
        warehouse="s3://warehouse",
        credential=f"{state['access_key_id']}:{state['secret_access_key']}",
        **{
            "oauth2-server-uri": state["iceberg_uri"] + "/v1/oauth/tokens",
            "scope": "PRINCIPAL_ROLE:ALL",
            "s3.endpoint": state["s3_endpoint"],
            "s3.access-key-id": state["access_key_id"],
            "s3.secret-access-key": state["secret_access_key"],
            "s3.region": "us-east-1",
        },
    )
    rows = catalog.load_table("platinum.feat_device_health_hourly").scan().to_arrow().num_rows
    assert rows > 0


def test_stack_status_never_prints_secrets(stack_built: Path) -> None:
    state = read_state(Settings(profile="stack", home=stack_built))
    assert state is not None
    status = run_cli("stack", "status", "--output", "json", home=stack_built)
    assert json.loads(status.stdout)["running"] is True
    assert state["secret_access_key"] not in status.stdout + status.stderr
    settings_out = run_cli("settings", home=stack_built, env=STACK)
    assert state["secret_access_key"] not in settings_out.stdout
    assert (stack_built / "state" / "stack.json").stat().st_mode & 0o077 == 0
