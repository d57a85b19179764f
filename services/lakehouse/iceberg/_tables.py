"""Table identifiers, and opening the table a load writes to (existing, evolved to its
contract, or created).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable
from pyiceberg.exceptions import TableAlreadyExistsError
from pyiceberg.table import Table

from lakehouse.catalog import LAYERS
from lakehouse.config import Project
from lakehouse.contracts import Contract, contract_for, evolve_to_contract
from lakehouse.errors import LoadError, NoSuchTableError

from ._write import normalize_schema

logger = logging.getLogger(__name__)


def parse_identifier(identifier: str) -> tuple[str, str]:
    parts = identifier.split(".")
    if len(parts) != 2 or not all(parts):
        raise LoadError(f"table must be LAYER.TABLE (e.g. bronze.orders), not {identifier!r}")
    if parts[0] not in LAYERS:
        raise LoadError(f"unknown layer {parts[0]!r} in {identifier!r}; layers: {', '.join(LAYERS)}")
    return parts[0], parts[1]


# --- the load --------------------------------------------------------------------------------


def open_table(
    catalog: Catalog,
    identifier: str,
    *,
    create_from: Callable[[], tuple[pa.Schema, str]] | None = None,
    project: Project | None = None,
) -> tuple[Table, bool]:
    """The table to load into: existing (evolved to its contract), created from its contract,
    or created from ``create_from()`` (the schema of the data, and where it came from) when
    the caller was asked to create tables. Contracts are ``project``'s (default: the
    environment's). Returns (table, created)."""
    layer, name = parse_identifier(identifier)
    contract = contract_for(identifier, project)
    try:
        table = catalog.load_table((layer, name))
    except IcebergNoSuchTable:
        try:
            created = _create_table(catalog, (layer, name), contract, create_from)
        except TableAlreadyExistsError:  # another writer created it a moment ago
            table = catalog.load_table((layer, name))
        else:
            if created is not None:
                return created, True
            return _no_such_table(catalog, identifier)
    return (evolve_to_contract(table, contract) if contract else table), False


def _create_table(
    catalog: Catalog,
    ident: tuple[str, str],
    contract: Contract | None,
    create_from: Callable[[], tuple[pa.Schema, str]] | None,
) -> Table | None:
    """A new table from its contract, else from the data's own schema, else None."""
    if contract is not None:
        return catalog.create_table(
            ident,
            schema=contract.iceberg_schema(),
            partition_spec=contract.partition_spec(),
            properties=contract.table_properties(),
        )
    if create_from is not None:
        schema, source = create_from()
        return catalog.create_table(
            ident, schema=normalize_schema(schema), properties={"lakehouse.created-from": source}
        )
    return None


def _no_such_table(catalog: Catalog, identifier: str) -> NoReturn:
    from lakehouse.catalog import list_tables

    existing = ", ".join(f"{n}.{t}" for n, t in list_tables(catalog)) or "(none)"
    raise NoSuchTableError(
        f"no table {identifier} and no contract of the project declares it; pass --create to create it from the "
        f"files' schema. Tables that exist: {existing}"
    )
