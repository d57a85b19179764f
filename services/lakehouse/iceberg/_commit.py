"""One commit that never doubles rows: plan against the table as it is, append, and on a
conflicting writer wait a jittered moment, reload and plan again.

Every writer of the platform (file loads, the Kafka committer, the edge lander, the audit
journal) appends through ``commit_with_replan``. Its ``plan`` reads the table's ledger (batch ids,
Kafka offsets, device sequences) and returns only the rows the table does not hold yet, with
the ledger entries that record them and whatever the caller wants back (which files, which
uploads): a replan after a conflict can keep fewer rows, so the caller learns what was really
committed from the plan that won, not from a closure written by an earlier attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from lakehouse.errors import LoadError

from ._write import append_atomically

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Planned(Generic[T]):
    """What one attempt will append: ``rows``, the snapshot-summary ``ledger`` entries that record
    them, and ``result``, handed back to the caller if this attempt commits."""

    rows: pa.Table
    ledger: dict[str, str] = field(default_factory=dict)
    result: T | None = None


@dataclass(frozen=True)
class Committed(Generic[T]):
    table: Table  # the table after the commit
    rows: pa.Table
    result: T | None
    attempts: int


@dataclass(frozen=True)
class Backoff:
    """Waits between conflicting attempts: exponential with full jitter (writers that collided
    once do not collide again in lockstep), bounded by ``cap`` seconds per wait."""

    attempts: int = 8
    base: float = 0.02
    cap: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    uniform: Callable[[float, float], float] = random.uniform

    def wait(self, attempt: int) -> float:
        seconds = self.uniform(0.0, min(self.cap, self.base * (2**attempt)))
        self.sleep(seconds)
        return seconds


Plan = Callable[[Table], "Planned[T] | None"]


def commit_with_replan(
    catalog: Catalog, table: Table, plan: Plan[T], *, backoff: Backoff | None = None
) -> Committed[T] | None:
    """Append what ``plan`` says the table does not hold yet, as one snapshot; None when the
    plan finds nothing missing. A conflicting writer makes it wait, reload the table and plan
    again (so a retry never doubles rows); after ``backoff.attempts`` conflicts it gives up
    with a LoadError and nothing of its own written."""
    backoff = backoff or Backoff()
    name = ".".join(table.name())
    for attempt in range(backoff.attempts):
        planned = plan(table)
        if planned is None:
            return None
        try:
            append_atomically(table, planned.rows, planned.ledger)
        except CommitFailedException:
            waited = backoff.wait(attempt)
            logger.info("commit to %s conflicted with another writer; planning again in %.3f s", name, waited)
            table = catalog.load_table(table.name())
            continue
        return Committed(table, planned.rows, planned.result, attempt + 1)
    raise LoadError(
        f"commit to {name} kept conflicting with other writers after {backoff.attempts} attempts; "
        "nothing was written: retry the load"
    )
