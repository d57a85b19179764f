"""The lakehouse platform: Iceberg layers, an embedded engine, dbt, and the code that loads them.

Public names are imported on first use (PEP 562) so that `lakehouse --help` and light tools do
not pay for pyiceberg and DuckDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AccessDenied,
    ArtifactError,
    ArtifactMismatch,
    ArtifactUnavailable,
    BrokerUnreachable,
    CatalogConflict,
    ConfigurationError,
    ContractError,
    EnrollmentRefused,
    InvalidEnrollment,
    JSONRejected,
    KeyShredded,
    KeystoreError,
    LakehouseError,
    LoadError,
    NoSuchDeadLetter,
    NoSuchTableError,
    OffsetsOutOfRange,
    PersonalDataError,
    PolicyError,
    QueryError,
    QueryLimitExceeded,
    ReferenceUnavailable,
    RegistryError,
    SchemaMismatchError,
    ServerError,
    SessionFailed,
    TokenError,
    ToolchainMissing,
    TransformError,
    UnknownStore,
    WeakDeviceKey,
)

if TYPE_CHECKING:
    from ._api import Lakehouse, TableInfo
    from .catalog import LAYERS, load_catalog
    from .config import Project, Settings
    from .contracts import Contract, load_contracts
    from .ingest import LoadResult, load_files
    from .query import Engine

_LAZY = {
    "Lakehouse": "._api",
    "TableInfo": "._api",
    "LAYERS": ".catalog",
    "load_catalog": ".catalog",
    "Contract": ".contracts",
    "load_contracts": ".contracts",
    "Engine": ".query",
    "LoadResult": ".ingest",
    "load_files": ".ingest",
    "Settings": ".config",
    "Project": ".config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lakehouse' has no attribute {name!r}")


__all__ = [
    "LAYERS",
    "AccessDenied",
    "ArtifactError",
    "ArtifactMismatch",
    "ArtifactUnavailable",
    "BrokerUnreachable",
    "CatalogConflict",
    "ConfigurationError",
    "Contract",
    "ContractError",
    "Engine",
    "EnrollmentRefused",
    "InvalidEnrollment",
    "JSONRejected",
    "KeyShredded",
    "KeystoreError",
    "Lakehouse",
    "LakehouseError",
    "LoadError",
    "LoadResult",
    "NoSuchDeadLetter",
    "NoSuchTableError",
    "OffsetsOutOfRange",
    "PersonalDataError",
    "PolicyError",
    "Project",
    "QueryError",
    "QueryLimitExceeded",
    "ReferenceUnavailable",
    "RegistryError",
    "SchemaMismatchError",
    "ServerError",
    "SessionFailed",
    "Settings",
    "TableInfo",
    "TokenError",
    "ToolchainMissing",
    "TransformError",
    "UnknownStore",
    "WeakDeviceKey",
    "load_catalog",
    "load_contracts",
    "load_files",
]
