"""The load ledger: what each table already holds, read back from its snapshot summaries
(file batch ids, Kafka offsets per partition, edge device batch sequences).
"""

from __future__ import annotations

import json
import logging

from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

logger = logging.getLogger(__name__)


BATCH_IDS = "lakehouse.batch-ids"


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


def loaded_batch_ids(table: Table) -> set[str]:
    """Every batch id the table holds."""
    recorded = table.properties.get(BATCH_IDS)
    if recorded is not None:
        return set(json.loads(recorded))
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


def ledger_properties(table: Table, summary: dict[str, str]) -> dict[str, str]:
    """The complete ledger after a commit whose snapshot summary is ``summary``."""
    merged: dict[str, str] = {}
    for key in LEDGER_KEYS:
        if key not in summary and key in table.properties:
            continue
        if key == BATCH_IDS:
            ids = loaded_batch_ids(table) | set(json.loads(summary.get(key, "[]")))
            if ids:
                merged[key] = json.dumps(sorted(ids), separators=(",", ":"))
        else:
            marks = table_marks(table, key=key)
            for k, v in json.loads(summary.get(key, "{}")).items():
                marks[k] = max(int(v), marks.get(k, 0))
            if marks:
                merged[key] = json.dumps(dict(sorted(marks.items())), separators=(",", ":"))
    return merged
