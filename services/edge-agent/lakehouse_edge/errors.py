"""The edge agent's exceptions: one root (``EdgeError``), subclasses named for what went wrong."""

from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """Root of every error the edge agent raises on purpose."""


class AgentError(EdgeError):
    """The agent cannot go on (not enrolled, revoked, misconfigured)."""


class QueueFull(EdgeError):
    """The queue is at its size limit and the policy is drop-newest."""


class EnvelopeError(EdgeError, ValueError):
    """A sealed batch is malformed, does not decrypt, or is too large once decompressed."""


class BombError(EnvelopeError):
    """The batch decompresses beyond the allowed size."""


class GatewayURLError(AgentError, ValueError):
    """The gateway URL is not https://HOST[:PORT] (the gateway only speaks TLS)."""


class CAFileError(AgentError):
    """The CA file given for the gateway cannot be read or holds no PEM certificate."""


class GatewayUnavailable(EdgeError):
    """The gateway could not be reached or failed (5xx): try again later."""


class GatewayUntrusted(EdgeError):
    """The gateway's TLS certificate does not verify against the CA this device trusts: retrying
    cannot help (the wrong CA file, or not the platform's gateway)."""


class GatewayRejected(EdgeError):
    """The gateway refused the request (4xx) with a problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None):
        self.status, self.problem, self.retry_after = status, problem, retry_after
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())
