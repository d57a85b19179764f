"""The Iceberg catalog (SQL or REST, one factory), its layers and table listings, and Nessie's
branches."""

from __future__ import annotations

from ._catalog import LAYERS, TableCache, list_tables, load_catalog
from ._nessie import Branch, Nessie

__all__ = ["LAYERS", "Branch", "Nessie", "TableCache", "list_tables", "load_catalog"]
