"""Endpoints and credentials of the local stack, read from the state file its launcher writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from lakehouse.errors import ConfigurationError

from ._private import read_json, recorded_alive
from ._settings import BrokerSettings, Settings

logger = logging.getLogger(__name__)


STATE_FILE = "stack.json"


KAFKA_USER = "lakehouse"  # the stack's Kafka user for the platform's clients (ACLs: topics, groups)


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    return read_json(state_path(settings))


def apply_stack_state(settings: Settings) -> Settings:
    """Fill the stack profile's endpoints and credentials from the running stack: the catalog
    and S3 (unless the catalog's URI is set), and the broker: the stack's Apache Kafka when its
    process runs (unless the broker's bootstrap is set), else left to Tansu as before."""
    state = read_state(settings)
    if not state:
        return settings
    merged = settings.model_copy(deep=True)
    if not settings.catalog.uri:
        merged.catalog.uri = state["iceberg_uri"]
        merged.catalog.warehouse = f"s3://{state['warehouse_bucket']}"
        merged.catalog.credential = SecretStr(f"{state['access_key_id']}:{state['secret_access_key']}")
        merged.catalog.oauth2_server_uri = state["iceberg_uri"] + "/v1/oauth/tokens"
        merged.catalog.scope = "PRINCIPAL_ROLE:ALL"
        merged.storage.endpoint = state["s3_endpoint"]
        merged.storage.region = state["region"]
        merged.storage.access_key_id = SecretStr(state["access_key_id"])
        merged.storage.secret_access_key = SecretStr(state["secret_access_key"])
        merged.storage.bucket = state["warehouse_bucket"]
    kafka = (state.get("services") or {}).get("kafka")
    if not settings.broker.bootstrap and kafka and recorded_alive(kafka):
        merged.broker = stack_kafka(kafka, settings.broker)
    return merged


def stack_kafka(record: dict[str, Any], broker: BrokerSettings) -> BrokerSettings:
    """``broker`` (its group and partitions kept) pointed at the stack's Apache Kafka that
    ``record`` describes: SASL_SSL as ``lakehouse`` with the password of its credentials file,
    the broker's certificate checked against the stack's CA."""
    credentials_file = Path(record["files"]["credentials"])
    try:
        credentials = read_json(credentials_file) or {}
        password = credentials["users"][KAFKA_USER]
        mechanism = credentials.get("mechanism", "SCRAM-SHA-512")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"the stack's Kafka records credentials in {credentials_file}, but no password for "
            f"{KAFKA_USER} can be read there ({type(exc).__name__}): restart the stack "
            "(`lakehouse stack stop`, then `lakehouse stack start`)"
        ) from exc
    return BrokerSettings(
        bootstrap=record["endpoints"]["bootstrap"],
        group=broker.group,
        partitions=broker.partitions,
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        username=KAFKA_USER,
        password=SecretStr(password),
        ca_file=Path(record["files"]["ca"]),
    )
