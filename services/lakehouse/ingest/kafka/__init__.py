"""The Kafka sink: topics into bronze tables, exactly once."""

from __future__ import annotations

from ._committer import Committer
from ._connect import as_broker, broker_errors, client_config, require_broker
from ._offsets import OFFSET_RESET, TOPIC_IDS
from ._progress import LiveLine, status_line
from ._sink import Sink

__all__ = [
    "OFFSET_RESET",
    "TOPIC_IDS",
    "Committer",
    "LiveLine",
    "Sink",
    "as_broker",
    "broker_errors",
    "client_config",
    "require_broker",
    "status_line",
]
