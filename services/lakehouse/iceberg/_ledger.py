"""The load ledger: what each table already holds, read back from its snapshot summaries
(file batch ids, Kafka offsets per partition, edge device batch sequences).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

logger = logging.getLogger(__name__)


BATCH_IDS = "lakehouse.batch-ids"
# Batch ids beyond the newest RECENT_BATCH_IDS move to an immutable Parquet file beside the
# table's metadata, named by this property: the property (copied into every metadata.json,
# rewritten on every commit) stays bounded however many files a table has loaded.
BATCH_IDS_FILE = "lakehouse.batch-ids-file"
RECENT_BATCH_IDS = 1_000


# --- the ledger: what a table already holds, recorded in the commit that wrote it ------------
#
# Every commit records what it wrote in its snapshot summary (batch ids of loaded files, Kafka
# offsets, device batch sequences), and the complete ledger in a table property set in the same
# transaction. Reading the ledger is then one property, not a walk through history, and expiring
# old snapshots loses nothing. Tables written before the property existed are read by walking
# their snapshots, once.

OFFSETS = "lakehouse.kafka-offsets"  # next offset per "topic/partition"


DEVICE_BATCHES = "lakehouse.device-batches"  # next batch sequence per edge device


_MARK_KEYS = (OFFSETS, DEVICE_BATCHES)


LEDGER_KEYS = (BATCH_IDS, *_MARK_KEYS)

_ARCHIVES: OrderedDict[str, frozenset[str]] = OrderedDict()  # location -> ids (files are immutable)
_ARCHIVES_LOCK = threading.Lock()


def _archived_ids(table: Table) -> frozenset[str]:
    location = table.properties.get(BATCH_IDS_FILE)
    if not location:
        return frozenset()
    with _ARCHIVES_LOCK:
        if location in _ARCHIVES:
            _ARCHIVES.move_to_end(location)
            return _ARCHIVES[location]
    with table.io.new_input(location).open() as stream:
        ids = frozenset(pq.read_table(stream).column("batch_id").to_pylist())
    with _ARCHIVES_LOCK:
        _ARCHIVES[location] = ids
        while len(_ARCHIVES) > 8:
            _ARCHIVES.popitem(last=False)
    return ids


def loaded_batch_ids(table: Table) -> set[str]:
    """Every batch id the table holds."""
    recorded = table.properties.get(BATCH_IDS)
    if recorded is not None or BATCH_IDS_FILE in table.properties:
        return set(json.loads(recorded or "[]")) | _archived_ids(table)
    ids: set[str] = set()
    for snapshot in table.metadata.snapshots:
        raw = snapshot.summary.additional_properties.get(BATCH_IDS) if snapshot.summary else None
        if raw:
            ids.update(json.loads(raw))
    return ids


def table_marks(table: Table, wanted: set[str] | None = None, *, key: str = OFFSETS) -> dict[str, int]:
    """Next offset per ``topic/partition`` (or, with ``key=DEVICE_BATCHES``, next batch
    sequence per device) that the table holds."""
    recorded = table.properties.get(key)
    if recorded is not None:
        return {k: int(v) for k, v in json.loads(recorded).items()}
    marks: dict[str, int] = {}
    snapshot = table.current_snapshot()
    if snapshot is None:
        return marks
    for ancestor in ancestors_of(snapshot, table.metadata):
        raw = ancestor.summary.additional_properties.get(key) if ancestor.summary else None
        if raw:
            for tp, offset in json.loads(raw).items():
                marks.setdefault(tp, int(offset))
            if wanted is not None and wanted <= marks.keys():
                break
    return marks


@dataclass(frozen=True)
class LedgerUpdate:
    """The table properties that record the complete ledger after a commit, and the archive
    file written for it (deleted if the commit fails) or replaced by it (deleted once it
    succeeds)."""

    properties: dict[str, str]
    written: str | None = None
    replaced: str | None = None

    def committed(self, table: Table) -> None:
        self._delete(table, self.replaced)

    def abandoned(self, table: Table) -> None:
        self._delete(table, self.written)

    @staticmethod
    def _delete(table: Table, location: str | None) -> None:
        if location:
            try:
                table.io.delete(location)
            except OSError as exc:  # an orphan file costs space, not correctness
                logger.warning("could not remove the ledger file %s: %s", location, exc)


def ledger_update(table: Table, summary: dict[str, str]) -> LedgerUpdate:
    """The complete ledger after a commit whose snapshot summary is ``summary``."""
    merged: dict[str, str] = {}
    written = replaced = None
    for key in LEDGER_KEYS:
        if key not in summary and (
            key in table.properties or (key == BATCH_IDS and BATCH_IDS_FILE in table.properties)
        ):
            continue
        if key == BATCH_IDS:
            recent = (
                set(json.loads(table.properties.get(BATCH_IDS, "[]")))
                if BATCH_IDS_FILE in table.properties
                else None
            )
            if recent is None:  # no archive yet: the property (or, for old tables, history) holds all
                recent = loaded_batch_ids(table)
            recent |= set(json.loads(summary.get(key, "[]")))
            if len(recent) > RECENT_BATCH_IDS:
                written = _write_archive(table, _archived_ids(table) | recent)
                replaced = table.properties.get(BATCH_IDS_FILE)
                merged[BATCH_IDS_FILE] = written
                recent = set()
            if recent or written:
                merged[key] = json.dumps(sorted(recent), separators=(",", ":"))
        else:
            marks = table_marks(table, key=key)
            for k, v in json.loads(summary.get(key, "{}")).items():
                marks[k] = max(int(v), marks.get(k, 0))
            if marks:
                merged[key] = json.dumps(dict(sorted(marks.items())), separators=(",", ":"))
    return LedgerUpdate(merged, written, replaced)


def _write_archive(table: Table, ids: frozenset[str] | set[str]) -> str:
    location = f"{table.location().rstrip('/')}/metadata/ledger-batch-ids-{uuid.uuid4().hex}.parquet"
    rows = pa.table({"batch_id": pa.array(sorted(ids), pa.string())})
    with table.io.new_output(location).create(overwrite=False) as stream:
        pq.write_table(rows, stream, compression="zstd")
    with _ARCHIVES_LOCK:
        _ARCHIVES[location] = frozenset(ids)
    return location
