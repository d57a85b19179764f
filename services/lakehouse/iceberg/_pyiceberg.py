"""Every use of pyiceberg's private API, in one place (a pyiceberg upgrade is checked here)."""

from __future__ import annotations

import logging
from typing import Any

from pyiceberg.table import Transaction

logger = logging.getLogger(__name__)


class MetadataOnceTransaction(Transaction):
    """``table.transaction()``, except that the staged metadata is computed once per change.

    pyiceberg 0.12 recomputes ``Transaction.table_metadata`` with a deep copy of the whole
    table metadata (every snapshot) on each access, about 15 times per append: commit time grew
    linearly with history, from 25 ms to 400 ms over 150 snapshots. Table metadata models are
    frozen, so one copy per staged change is enough.
    """

    _cached: tuple[tuple[Any, Any], Any] | None = None

    @property
    def table_metadata(self) -> Any:
        key = (self._table.metadata, self._updates)
        if self._cached is None or self._cached[0][0] is not key[0] or self._cached[0][1] is not key[1]:
            self._cached = (key, super().table_metadata)
        return self._cached[1]
