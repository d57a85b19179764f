"""One commit that never doubles rows: plan against the table as it is, append, and on a
conflicting writer reload and plan again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from lakehouse.errors import LoadError

from ._write import append_atomically

logger = logging.getLogger(__name__)


COMMIT_RETRIES = 8


Plan = Callable[[Table], "tuple[pa.Table, dict[str, str]] | None"]


def commit_idempotently(catalog: Catalog, table: Table, plan: Plan) -> tuple[Table, pa.Table] | None:
    """Append what ``plan`` says the table does not hold yet, as one snapshot.

    ``plan`` reads the table as it is now (batch ids, Kafka offsets in snapshot summaries) and
    returns the rows still missing with the summary properties that record them, or None when
    nothing is missing. If another writer commits first, the table is reloaded and planned
    again, so a retry never doubles rows. Returns the committed table and rows, or None.
    """
    name = ".".join(table.name())
    for _attempt in range(COMMIT_RETRIES):
        planned = plan(table)
        if planned is None:
            return None
        rows, properties = planned
        try:
            append_atomically(table, rows, properties)
        except CommitFailedException:
            logger.info("commit to %s conflicted with another writer; planning again", name)
            table = catalog.load_table(table.name())
            continue
        return table, rows
    raise LoadError(f"commit to {name} kept conflicting after {COMMIT_RETRIES} attempts")
