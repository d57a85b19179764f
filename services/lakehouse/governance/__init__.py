"""Policies: who may read which rows and columns, compiled for DuckDB and Trino."""

from __future__ import annotations

from ._compile import (
    OPERATORS,
    PII_READERS_FILE,
    filter_sql,
    mask_sql,
    table_schemas,
    trino_decision_sql,
    write_compiled,
    write_pii_readers,
)
from ._opa import (
    OPA_BUNDLE_FILES,
    OPA_CLIENT_IDENTITY,
    OPA_CLIENT_NAME,
    PII_READERS_BESIDE_BUNDLE,
    authz_policy,
    decision_paths,
    opa_bundle,
    write_opa_bundle,
)
from ._policy import Decision, Policy, load_policy

__all__ = [
    "OPA_BUNDLE_FILES",
    "OPA_CLIENT_IDENTITY",
    "OPA_CLIENT_NAME",
    "OPERATORS",
    "PII_READERS_BESIDE_BUNDLE",
    "PII_READERS_FILE",
    "Decision",
    "Policy",
    "authz_policy",
    "decision_paths",
    "filter_sql",
    "load_policy",
    "mask_sql",
    "opa_bundle",
    "table_schemas",
    "trino_decision_sql",
    "write_compiled",
    "write_opa_bundle",
    "write_pii_readers",
]
