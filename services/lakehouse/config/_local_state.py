"""Endpoints and credentials of the local stack, read from the state file its launcher writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ._private import read_json
from ._settings import Settings

logger = logging.getLogger(__name__)


STATE_FILE = "stack.json"


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    return read_json(state_path(settings))


def apply_stack_state(settings: Settings) -> Settings:
    """Fill the stack profile's endpoints and credentials from the running stack."""
    if settings.catalog.uri:
        return settings
    state = read_state(settings)
    if not state:
        return settings
    merged = settings.model_copy(deep=True)
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
    return merged
