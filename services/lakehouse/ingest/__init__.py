"""Every way rows arrive (files, Kafka, edge devices), through one write path into bronze."""

from __future__ import annotations

from ._conform import Format, conform
from ._files import LoadResult, ProgressCallback, load_files, read_file
from ._records import DEAD_LETTERS, DeadLetter, Message, fast_path, fast_path_lines, open_envelope, validate
from ._replay import DeadLetterInfo, ReplayReport, dead_letter_id, list_dead_letters, replay_dead_letters
from ._stats import (
    CommitSeconds,
    IngestStats,
    MetricsServer,
    Readiness,
    serve_metrics,
    sink_readiness,
    sink_registry,
)
from ._write import (
    Batch,
    KeystoreSource,
    LazyKeystore,
    Writer,
    as_stored,
    check_personal,
    dead_letter,
    personal_columns,
    received_schema,
    refused_rows,
    replace_model,
)

__all__ = [
    "DEAD_LETTERS",
    "Batch",
    "CommitSeconds",
    "DeadLetter",
    "DeadLetterInfo",
    "Format",
    "IngestStats",
    "KeystoreSource",
    "LazyKeystore",
    "LoadResult",
    "Message",
    "MetricsServer",
    "ProgressCallback",
    "Readiness",
    "ReplayReport",
    "Writer",
    "as_stored",
    "check_personal",
    "conform",
    "dead_letter",
    "dead_letter_id",
    "fast_path",
    "fast_path_lines",
    "list_dead_letters",
    "load_files",
    "open_envelope",
    "personal_columns",
    "read_file",
    "received_schema",
    "refused_rows",
    "replace_model",
    "replay_dead_letters",
    "serve_metrics",
    "sink_readiness",
    "sink_registry",
    "validate",
]
