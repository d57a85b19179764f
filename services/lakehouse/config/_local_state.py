"""Endpoints and credentials of the local stack, read from the state file its launcher writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from lakehouse.errors import AccessDenied, ConfigurationError

from ._private import read_json, recorded_alive
from ._settings import BrokerSettings, Settings

logger = logging.getLogger(__name__)


STATE_FILE = "stack.json"


NESSIE_BUCKET = "lakehouse"  # the warehouse of Nessie in the stack (a plain bucket on SeaweedFS)


TRINO_OPERATOR = "admin"  # the platform's operator account on Trino (governance.OPERATORS)


KAFKA_USER = "lakehouse"  # the stack's Kafka user for the platform's clients (ACLs: topics, groups)


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    return read_json(state_path(settings))


def _alive_service(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    record = (state.get("services") or {}).get(name)
    return record if record and recorded_alive(record) else None


def apply_stack_state(settings: Settings) -> Settings:
    """Fill the stack profile's endpoints and credentials from the running stack, each only
    where the settings leave it unset:

    - the catalog: Nessie's Iceberg REST endpoint (warehouse on SeaweedFS) while Nessie runs,
      else SeaweedFS's own REST catalog; S3: SeaweedFS;
    - the broker: the stack's Apache Kafka while it runs, else left to Tansu;
    - the engine: the stack's Trino while it runs (each user's password from its 0600 file),
      else the embedded DuckDB."""
    state = read_state(settings)
    merged = settings.model_copy(deep=True)
    if not state:
        merged.engine.type = merged.engine.type or "duckdb"
        return merged
    nessie = _alive_service(state, "nessie")
    if not settings.catalog.uri:
        merged.storage.endpoint = state["s3_endpoint"]
        merged.storage.region = state["region"]
        merged.storage.access_key_id = SecretStr(state["access_key_id"])
        merged.storage.secret_access_key = SecretStr(state["secret_access_key"])
        if nessie:
            merged.catalog.uri = nessie["endpoints"]["iceberg"]
            merged.catalog.warehouse = nessie["endpoints"]["warehouse"]
            merged.catalog.nessie_api = nessie["endpoints"]["api"]
            merged.storage.bucket = NESSIE_BUCKET
        else:
            merged.catalog.uri = state["iceberg_uri"]
            merged.catalog.warehouse = f"s3://{state['warehouse_bucket']}"
            merged.catalog.credential = SecretStr(f"{state['access_key_id']}:{state['secret_access_key']}")
            merged.catalog.oauth2_server_uri = state["iceberg_uri"] + "/v1/oauth/tokens"
            merged.catalog.scope = "PRINCIPAL_ROLE:ALL"
            merged.storage.bucket = state["warehouse_bucket"]
    kafka = _alive_service(state, "kafka")
    if not settings.broker.bootstrap and kafka:
        merged.broker = stack_kafka(kafka, settings.broker)
    trino = _alive_service(state, "trino")
    if merged.engine.type is None:
        merged.engine.type = "trino" if trino else "duckdb"
    if merged.engine.type == "trino" and trino and settings.engine.trino_password is None:
        host, port = trino["endpoints"]["https"].removeprefix("https://").rsplit(":", 1)
        merged.engine.trino_host, merged.engine.trino_port = host, int(port)
        merged.engine.trino_ca_file = Path(trino["files"]["ca"])
        merged.engine.trino_passwords_file = Path(trino["files"]["passwords"])
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


def trino_login(settings: Settings, user: str | None = None) -> tuple[str, str, str]:
    """How to run queries on Trino as ``user`` (default: ``engine.trino_user``, else the
    operator): (the user queries run as, the account that authenticates, its password).

    With ``engine.trino_password`` the configured account authenticates (Trino then
    impersonates ``user`` only if the policy allows that account to); in the stack, ``user``
    authenticates with its own password from the stack's 0600 passwords file."""
    cfg = settings.engine
    user = user or cfg.trino_user or TRINO_OPERATOR
    if cfg.trino_password is not None:
        return user, cfg.trino_user or user, cfg.trino_password.get_secret_value()
    path = cfg.trino_passwords_file
    if path is None:
        raise ConfigurationError(
            "the trino engine needs a password: set LAKEHOUSE_ENGINE__TRINO_USER and "
            "LAKEHOUSE_ENGINE__TRINO_PASSWORD (or the secrets file lakehouse_engine__trino_password)"
            + (", or run `lakehouse stack start`" if settings.profile == "stack" else "")
        )
    passwords = read_json(path)
    if not isinstance(passwords, dict):
        raise ConfigurationError(f"cannot read the stack's Trino passwords in {path}: restart the stack")
    if user not in passwords:
        raise AccessDenied(
            f"the stack's Trino has no account {user!r}: its accounts are {', '.join(sorted(passwords))}"
        )
    return user, user, str(passwords[user])
