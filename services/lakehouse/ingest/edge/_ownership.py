"""Which stores exist and which refrigeration units each one owns.

The source of truth is the reference data in the catalog: ``bronze.stores`` (store ids) and
``bronze.devices`` (unit id -> store id; a reading's ``device_id`` is the unit, not the edge
device that uploads it). Units installed before the reference data knows them can be
registered for a store in the device registry (``lakehouse devices enroll --unit``); where both
name a unit, the reference data wins. A device may write only its own store's units: that is
checked on every reading, against this map, before anything lands.

The map is rebuilt when a reference table's snapshot changes, checked at most every
``reference_refresh`` seconds (the clock is injectable). While one request thread re-reads it,
the others keep using the previous map instead of waiting.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from lakehouse.config import GatewaySettings
from lakehouse.errors import ConfigurationError, ReferenceUnavailable, UnknownStore

from ._text import shown

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitRefusal:
    """Why a reading's unit may not be written by a device of a store."""

    code: str  # unknown-unit | foreign-unit
    status: int
    detail: str


@dataclass(frozen=True)
class _Map:
    versions: tuple[int | None, int | None]  # snapshot ids of the stores and units tables
    stores: frozenset[str]
    owners: dict[str, str]  # unit -> store, from the reference data
    contested: frozenset[str]  # units the reference data lists under more than one store
    registered: dict[str, str]  # unit -> store, from the registry (units not in the reference)


class Ownership:
    def __init__(
        self,
        catalog: Callable[[], Catalog],
        settings: GatewaySettings,
        *,
        registered_units: Callable[[], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._catalog_factory = catalog
        self._catalog: Catalog | None = None
        self.settings, self._registered_units, self._clock = settings, registered_units, clock
        self._map: _Map | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # -- questions ----------------------------------------------------------------------------

    def stores(self) -> frozenset[str]:
        return self._current().stores

    def check_store(self, store_id: str) -> None:
        """Raise UnknownStore, naming the closest known store, unless ``store_id`` is listed."""
        stores = self._current().stores
        if store_id in stores:
            return
        table = self.settings.stores_table
        if not stores:
            raise UnknownStore(
                f"no store is known: {table} is missing or empty (load the reference data first)"
            )
        close = _closest(store_id, stores)
        hint = f"; did you mean {close!r}?" if close else f" ({len(stores)} stores are listed there)"
        raise UnknownStore(f"store {shown(store_id)} is not in {table}{hint}")

    def owner_of(self, unit: str) -> str | None:
        """The store that owns ``unit``, or None if it is unknown (or contested)."""
        ref = self._current()
        if unit in ref.contested:
            return None
        return ref.owners.get(unit) or ref.registered.get(unit)

    def refusal(self, unit: object, store_id: str) -> UnitRefusal | None:
        """None if a device of ``store_id`` may write readings of ``unit``, else why not."""
        table = self.settings.units_table
        if not isinstance(unit, str):
            return UnitRefusal(
                "unknown-unit",
                422,
                f"unit {shown(unit)} is not a unit id (a string); store {store_id} may not write it",
            )
        owner = self.owner_of(unit)
        if owner is None:
            contested = unit in self._current().contested
            why = "is listed under several stores" if contested else "is not a known refrigeration unit"
            return UnitRefusal(
                "unknown-unit", 422, f"unit {shown(unit)} {why} in {table}; store {store_id} may not write it"
            )
        if owner != store_id:
            return UnitRefusal(
                "foreign-unit",
                403,
                f"unit {shown(unit)} belongs to store {owner}, not to this device's store {store_id}",
            )
        return None

    # -- the map ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the reference now (the next question would, after ``reference_refresh``)."""
        with self._lock:
            self._map, self._checked = self._read(self._map), self._clock()

    def _current(self) -> _Map:
        ref = self._map
        if ref is not None and self._clock() - self._checked < self.settings.reference_refresh:
            return ref
        if not self._lock.acquire(blocking=ref is None):
            assert ref is not None
            return ref  # another thread is re-reading: the previous map is at most one period old
        try:
            if self._map is None or self._clock() - self._checked >= self.settings.reference_refresh:
                self._map, self._checked = self._read(self._map), self._clock()
            return self._map
        finally:
            self._lock.release()

    def _read(self, previous: _Map | None) -> _Map:
        g = self.settings
        try:
            catalog = self._catalog = self._catalog or self._catalog_factory()
            stores_table = _load(catalog, g.stores_table)
            units_table = _load(catalog, g.units_table)
            registered = self._registered_units() if self._registered_units else {}
        except (ConfigurationError, NoSuchTableError):
            raise
        except Exception as exc:  # the catalog or registry is unreachable
            if previous is None:
                raise ReferenceUnavailable(f"the reference data cannot be read: {exc}") from exc
            logger.warning("reference data not refreshed (kept the previous map): %s", exc)
            return previous
        versions = (_snapshot_id(stores_table), _snapshot_id(units_table))
        if previous is not None and previous.versions == versions:
            if previous.registered == registered:
                return previous
            return _Map(versions, previous.stores, previous.owners, previous.contested, registered)
        stores = frozenset(s for (s,) in _rows(stores_table, g.stores_table, (g.stores_id_column,)) if s)
        owners: dict[str, str] = {}
        contested: set[str] = set()
        for unit, store in _rows(units_table, g.units_table, (g.units_id_column, g.units_store_column)):
            if unit and store and owners.setdefault(unit, store) != store:
                contested.add(unit)
        if contested:
            logger.warning("%s lists %s unit(s) under several stores: refused", g.units_table, len(contested))
        logger.info("reference data: %s stores, %s units", len(stores), len(owners))
        return _Map(versions, stores, owners, frozenset(contested), registered)


def _closest(wanted: str, stores: frozenset[str]) -> str | None:
    """The store an operator most likely meant: the same id in another case, width or with
    invisible characters, else the most similar one."""
    cleaned = re.sub(r"[^0-9a-z_-]", "", unicodedata.normalize("NFKC", wanted).casefold())
    folded = {s.casefold(): s for s in stores}
    if cleaned in folded:
        return folded[cleaned]
    prefixes = [s for s in folded if s and cleaned.startswith(s)]  # a store id with something after it
    if prefixes:
        return folded[max(prefixes, key=len)]
    close = difflib.get_close_matches(cleaned, sorted(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None


def _load(catalog: Catalog, identifier: str) -> Table | None:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def _snapshot_id(table: Table | None) -> int | None:
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot is not None else None


def _rows(table: Table | None, name: str, columns: tuple[str, ...]) -> list[tuple[str | None, ...]]:
    if table is None or table.current_snapshot() is None:
        return []
    missing = [c for c in columns if c not in table.schema().column_names]
    if missing:
        raise ConfigurationError(f"{name} has no column {missing[0]!r}: set it in the gateway settings")
    data = table.scan(selected_fields=columns).to_arrow()
    return list(zip(*(data.column(c).to_pylist() for c in columns), strict=True))
