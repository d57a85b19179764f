"""The Iceberg catalog (SQL or REST, one factory), its layers and table listings."""

from __future__ import annotations

from ._catalog import LAYERS, TableCache, list_tables, load_catalog

__all__ = ["LAYERS", "TableCache", "list_tables", "load_catalog"]
