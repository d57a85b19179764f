"""Edge agent for the lakehouse platform (Raspberry Pi OS, Python 3.11, `cryptography` only)."""

from .agent import Agent, AgentError, Identity, enroll
from .envelope import EnvelopeError, IngestKey, client_assertion, open_sealed, parse_header, seal
from .queue import UploadQueue

__all__ = [
    "Agent",
    "AgentError",
    "EnvelopeError",
    "Identity",
    "IngestKey",
    "UploadQueue",
    "client_assertion",
    "enroll",
    "open_sealed",
    "parse_header",
    "seal",
]
