"""Every use of pyiceberg's private or internal API, in one place.

The platform pins pyiceberg (``PYICEBERG_VERSION``); ``tests/test_pyiceberg_shims.py`` fails on
any other version and checks that each name used here still exists with the shape assumed, so
an upgrade starts by re-reading this module against the new release.

Why each is needed:
- ``MetadataOnceTransaction``: pyiceberg 0.12 recomputes the staged metadata on every access;
  and on a conflicting commit it would rebase our append onto the other writer's snapshot,
  keeping rows and ledger entries planned against the table as it was (doubled rows, a lost
  ledger entry). A conflict must reach ``commit_with_replan``, which plans again.
- ``check_schema_compatible``, ``fast_append_files``: the steps of ``Transaction.append``,
  called one by one so that a load writes partition runs and files in parallel and records its
  ledger in the same snapshot (``Transaction.append`` takes one Arrow table and sorts it again).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, write_file
from pyiceberg.partitioning import PartitionKey
from pyiceberg.table import Transaction, WriteTask

PYICEBERG_VERSION = "0.12.0"


class MetadataOnceTransaction(Transaction):
    """``table.transaction()``, except that the staged metadata is computed once per change.

    pyiceberg 0.12 recomputes ``Transaction.table_metadata`` with a deep copy of the whole
    table metadata (every snapshot) on each access, about 15 times per append: commit time grew
    linearly with history, from 25 ms to 400 ms over 150 snapshots. Table metadata models are
    frozen, so one copy per staged change is enough.
    """

    _cached: tuple[tuple[Any, Any], Any] | None = None

    def _rebuild_snapshot_updates(self) -> None:
        """Called by pyiceberg to retry a conflicting commit on the new table state: refused,
        so that the conflict reaches ``commit_with_replan`` (the rows and ledger entries were
        planned against the old state; only a new plan may decide what still goes in)."""
        raise CommitFailedException("another writer committed first: plan again")

    @property
    def table_metadata(self) -> Any:
        key = (self._table.metadata, self._updates)
        if self._cached is None or self._cached[0][0] is not key[0] or self._cached[0][1] is not key[1]:
            self._cached = (key, super().table_metadata)
        return self._cached[1]


def check_schema_compatible(metadata: Any, schema: pa.Schema) -> None:
    """Raise (pyiceberg's ValueError) unless rows of ``schema`` can be appended to the table."""
    _check_pyarrow_schema_compatible(
        metadata.schema(), provided_schema=schema, format_version=metadata.format_version
    )


def fast_append_files(
    tx: Transaction,
    summary: dict[str, str],
    files: Iterable[tuple[PartitionKey | None, list[pa.RecordBatch]]],
    schema: Any,
) -> None:
    """Stage one fast-append snapshot (summary properties ``summary``) of one data file per
    item of ``files`` (its partition key and record batches), written by pyiceberg's writer
    (in parallel, on its executor)."""
    with tx.update_snapshot(snapshot_properties=summary).fast_append() as append:
        counter = itertools.count(0)
        tasks = (
            WriteTask(
                write_uuid=append.commit_uuid,
                task_id=next(counter),
                record_batches=batches,
                partition_key=key,
                schema=schema,
            )
            for key, batches in files
        )
        for data_file in write_file(io=tx._table.io, table_metadata=tx.table_metadata, tasks=tasks):
            append.append_data_file(data_file)
