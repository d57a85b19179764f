"""Catalog and object-store factory: one registry, one function.

``load_catalog(settings)`` maps ``settings.catalog.type`` to its implementation the way
pyiceberg's own ``load_catalog`` does, and hands it the FileIO properties of the configured
object store (local files or S3).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from sqlalchemy.exc import IntegrityError

from lakehouse.config import Settings
from lakehouse.errors import ConfigurationError

logger = logging.getLogger(__name__)


LAYERS = ("bronze", "silver", "gold", "platinum")


def storage_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg FileIO properties for the configured object store."""
    storage = settings.storage
    if storage.type == "file":
        return {}
    props = {"s3.region": storage.region}
    if storage.endpoint:
        props["s3.endpoint"] = storage.endpoint
    if storage.access_key_id and storage.secret_access_key:
        props["s3.access-key-id"] = storage.access_key_id.get_secret_value()
        props["s3.secret-access-key"] = storage.secret_access_key.get_secret_value()
    if storage.path_style:
        props["s3.force-virtual-addressing"] = "false"
    return props


def _sql_catalog(settings: Settings) -> Catalog:
    cfg = settings.catalog
    if not cfg.uri or not cfg.warehouse:
        raise ConfigurationError(
            "the sql catalog needs LAKEHOUSE_CATALOG__URI and LAKEHOUSE_CATALOG__WAREHOUSE"
        )
    from lakehouse.config import private_dir, private_home

    if cfg.uri.startswith("sqlite:///") or cfg.warehouse.startswith("file://"):
        private_home(settings)  # the catalog and the warehouse's files are the owner's alone
    if cfg.warehouse.startswith("file://"):
        private_dir(settings.home / "warehouse")
    from sqlalchemy.exc import OperationalError

    uri, warehouse = cfg.uri, cfg.warehouse

    def build() -> Catalog:
        return SqlCatalog(
            cfg.name,
            uri=uri,
            warehouse=warehouse,
            init_catalog_tables="true",
            **storage_properties(settings),
        )

    if cfg.uri.startswith("sqlite:///"):
        # pyiceberg creates its own tables check-then-create: serialise processes on one machine
        with open(settings.home / ".catalog.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return build()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    for attempt in range(5):
        try:
            return build()
        except OperationalError as exc:  # two processes creating the catalog's own tables at once
            if "already exists" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _rest_catalog(settings: Settings) -> Catalog:
    cfg = settings.catalog
    if not cfg.uri:
        raise ConfigurationError(
            f"the {settings.profile} profile needs a REST catalog: set LAKEHOUSE_CATALOG__URI"
            + (" or run `lakehouse stack start`" if settings.profile == "stack" else "")
        )
    # the client holds the object store's keys: no request signing by the catalog (Nessie offers it)
    props: dict[str, Any] = {
        "uri": cfg.uri,
        **storage_properties(settings),
        "s3.remote-signing-enabled": "false",
    }
    if cfg.warehouse:
        props["warehouse"] = cfg.warehouse
    if cfg.credential:
        props["credential"] = cfg.credential.get_secret_value()
    if cfg.oauth2_server_uri:
        props["oauth2-server-uri"] = cfg.oauth2_server_uri
    if cfg.scope:
        props["scope"] = cfg.scope
    return RestCatalog(cfg.name, **props)


CATALOGS: dict[str, Callable[[Settings], Catalog]] = {"sql": _sql_catalog, "rest": _rest_catalog}


def load_catalog(settings: Settings) -> Catalog:
    """The Iceberg catalog the settings describe, with every layer's namespace present."""
    if settings.profile == "stack":
        from lakehouse.config import apply_stack_state

        settings = apply_stack_state(settings)
    factory = CATALOGS.get(settings.catalog.type or "")
    if factory is None:
        raise ConfigurationError(f"unknown catalog type {settings.catalog.type!r}; known: {sorted(CATALOGS)}")
    catalog = factory(settings)
    existing = {ns[0] for ns in catalog.list_namespaces()}
    for layer in LAYERS:
        if layer not in existing:
            try:
                catalog.create_namespace(layer)
            except (NamespaceAlreadyExistsError, IntegrityError):  # another process won the race
                if (layer,) not in catalog.list_namespaces():
                    raise
    return catalog


def current_metadata_location(catalog: Catalog, identifier: tuple[str, str]) -> str | None:
    """Where the table's current metadata is, without loading it; None if the catalog cannot
    tell cheaply (then load the table). The SQL catalog keeps it in the JDBC catalog table of
    the Iceberg spec: one indexed lookup instead of reading and parsing the metadata file."""
    if not isinstance(catalog, SqlCatalog):
        return None
    from sqlalchemy import text

    with catalog.engine.connect() as conn:
        row = conn.execute(
            text(
                "select metadata_location from iceberg_tables where catalog_name = :c "
                "and table_namespace = :n and table_name = :t"
            ),
            {"c": catalog.name, "n": identifier[0], "t": identifier[1]},
        ).first()
    return str(row[0]) if row and row[0] else None


class TableCache:
    """Loaded tables, reloaded only when their metadata location moved (a new commit)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._tables: dict[tuple[str, str], Any] = {}

    def load(self, identifier: tuple[str, str]) -> Any:
        """The table at its current snapshot (raises pyiceberg's NoSuchTableError)."""
        cached = self._tables.get(identifier)
        location = current_metadata_location(self.catalog, identifier)
        if cached is not None and location is not None and cached.metadata_location == location:
            return cached
        table = self.catalog.load_table(identifier)
        self._tables[identifier] = table
        return table


def list_tables(catalog: Catalog) -> list[tuple[str, str]]:
    found = []
    for (namespace,) in sorted(catalog.list_namespaces()):
        for ident in sorted(catalog.list_tables(namespace)):
            found.append((namespace, ident[-1]))
    return found
