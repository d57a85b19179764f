"""The Kafka sink: topics into bronze tables, exactly once."""

from __future__ import annotations

from ._committer import Committer
from ._connect import broker_errors, require_broker
from ._offsets import OFFSET_RESET, TOPIC_IDS
from ._sink import Sink

__all__ = [
    "OFFSET_RESET",
    "TOPIC_IDS",
    "Committer",
    "Sink",
    "broker_errors",
    "require_broker",
]
