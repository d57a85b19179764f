"""Edge agent for the lakehouse platform (Raspberry Pi OS, Python 3.11, `cryptography` only)."""

from .agent import Agent, Identity, enroll
from .envelope import IngestKey, client_assertion, open_sealed, parse_header, seal
from .errors import (
    AgentError,
    BombError,
    EdgeError,
    EnvelopeError,
    GatewayRejected,
    GatewayUnavailable,
    QueueFull,
)
from .queue import UploadQueue

__all__ = [
    "Agent",
    "AgentError",
    "BombError",
    "EdgeError",
    "EnvelopeError",
    "GatewayRejected",
    "GatewayUnavailable",
    "Identity",
    "IngestKey",
    "QueueFull",
    "UploadQueue",
    "client_assertion",
    "enroll",
    "open_sealed",
    "parse_header",
    "seal",
]
