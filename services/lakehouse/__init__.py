"""The lakehouse platform: Iceberg layers, an embedded engine, dbt, and the code that loads them."""

from ._api import Lakehouse, TableInfo
from ._catalog import LAYERS, load_catalog
from ._contracts import Contract, load_contracts
from ._engine import Engine
from ._load import LoadResult, load_files
from ._settings import Settings
from .errors import (
    ConfigurationError,
    ContractError,
    LakehouseError,
    LoadError,
    NoSuchTableError,
    QueryError,
    SchemaMismatchError,
    ServerError,
)

__all__ = [
    "LAYERS",
    "ConfigurationError",
    "Contract",
    "ContractError",
    "Engine",
    "Lakehouse",
    "LakehouseError",
    "LoadError",
    "LoadResult",
    "NoSuchTableError",
    "QueryError",
    "SchemaMismatchError",
    "ServerError",
    "Settings",
    "TableInfo",
    "load_catalog",
    "load_contracts",
    "load_files",
]
