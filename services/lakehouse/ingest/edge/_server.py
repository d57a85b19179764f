"""The gateway's HTTP server: uvicorn, bounded in bytes and time, TLS 1.3 or AEAD-only 1.2.

uvicorn bounds neither the size of a request head (httptools buffers a header of any size; h11
checks only heads that arrive incomplete) nor the time a client may take to send its head or
body: its keep-alive timer runs only between requests and every byte cancels it, so a client
sending one byte every few seconds holds a connection and its buffers forever.
``GuardedProtocol`` (uvicorn's httptools protocol, the fast C parser) measures each request head
before the parser sees its bytes (431 problem+json beyond ``max_header_bytes``), gives the head
``header_timeout`` seconds from its first byte and the body ``body_timeout`` seconds from the
end of the head (408 problem+json), and closes idle connections.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from lakehouse.config import GatewaySettings

from ._metrics import GatewayMetrics
from ._text import escape

logger = logging.getLogger(__name__)


PROBLEM_BASE = "urn:lakehouse:problem:"


# TLS 1.2 only with forward secrecy and AEAD; TLS 1.3 suites are all AEAD and preferred anyway
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


END_OF_HEAD = b"\r\n\r\n"


Phase = Literal["idle", "head", "body", "app"]  # what the connection waits for from the client


Waiting = Literal["headers", "body", "idle"]


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def raw_problem(status: int, reason: str, code: str, detail: str) -> bytes:
    """A complete problem+json response that closes the connection, for answers given before
    (or instead of) the application."""
    body = json.dumps(
        {"type": PROBLEM_BASE + code, "title": reason, "status": status, "detail": detail, "code": code}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n"
    )
    return head.encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head and read deadlines; subclassed per
    gateway by ``protocol`` with its limits."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = 16 * 1024
    metrics: GatewayMetrics | None = None  # counts what it refuses before the application sees it

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: Phase = "idle"
        self._head_bytes, self._tail = 0, b""  # of the head being received, before the parser
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting: Waiting | None = None

    # -- the head's size, measured before the parser buffers it ---------------------------------

    def _head_too_large(self, data: bytes) -> bool:
        window = self._tail + data
        end = window.find(END_OF_HEAD)
        if end < 0:
            self._head_bytes += len(data)
            self._tail = window[-3:]
            return self._head_bytes > self.max_header_bytes
        size = self._head_bytes + end + len(END_OF_HEAD) - len(self._tail)
        self._head_bytes, self._tail = 0, b""
        return size > self.max_header_bytes

    # -- the deadlines --------------------------------------------------------------------------

    def _expect(self, waiting: Waiting) -> None:
        self._cancel()
        timeout = {"headers": self.header_timeout, "body": self.body_timeout}.get(
            waiting, float(self.timeout_keep_alive)
        )
        self._waiting = waiting
        self._deadline = self.loop.call_later(timeout, self._expired, waiting)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting = None, None

    def _follow(self) -> None:
        """Aim the deadline at what the connection waits for now."""
        if self._phase == "body":
            if self._waiting != "body":
                self._expect("body")
        elif self._phase == "head":
            if self._waiting != "headers":
                self._expect("headers")
        elif self._phase == "app":  # the application has the whole request
            self._cancel()
        elif self._waiting is None:
            self._expect("idle")

    def _expired(self, waiting: Waiting) -> None:
        self._deadline, self._waiting = None, None
        if self.transport.is_closing():
            return
        asked = waiting == "body" or (
            waiting == "headers" and (self._phase == "head" or self._head_bytes > 0)
        )
        cycle = self.cycle if waiting == "body" else None
        if asked and (cycle is None or not cycle.response_started):
            limit = self.body_timeout if waiting == "body" else self.header_timeout
            logger.warning("%s: request %s not received within %ss", _peer(self.client), waiting, limit)
            if cycle is not None:  # the application waits for the body: tell it the client left
                cycle.disconnected = True
                cycle.message_event.set()
            elif self.metrics is not None:  # a body deadline is the application's answer to count
                self.metrics.refused_unparsed(408)
            self.transport.write(
                raw_problem(
                    408,
                    "Request Timeout",
                    "request-timeout",
                    f"the request {waiting} did not arrive within {limit:g}s",
                )
            )
        self.transport.close()

    def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.refused_unparsed(status)
        self._cancel()
        self.transport.write(raw_problem(status, reason, code, detail))
        self.transport.close()

    # -- uvicorn's hooks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers")  # a connection must send its first request in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._phase == "idle" and self._waiting != "headers":  # a request's first byte
            self._expect("headers")
        if self._phase in ("idle", "head") and self._head_too_large(data):
            limit = self.max_header_bytes
            return self._refuse(
                431,
                "Request Header Fields Too Large",
                "header-too-large",
                f"the request line and headers exceed {limit} bytes",
            )
        super().data_received(data)
        self._follow()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", "bad-request", "the request is not valid HTTP/1.1")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "head"

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before its body ended (a 401): nothing pending
            self._phase, self._head_bytes, self._tail = "idle", 0, b""
        else:
            self._phase = "app"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == "app":
            self._phase = "idle"
            self._head_bytes, self._tail = 0, b""
        if not self.transport.is_closing():
            self._follow()


def protocol(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> type[GuardedProtocol]:
    """The protocol class with this gateway's limits (and metrics: what it refuses is counted
    as the route ``unparsed``)."""
    return type(
        "GatewayProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": settings.header_timeout,
            "body_timeout": settings.body_timeout,
            "max_header_bytes": settings.max_header_bytes,
            "metrics": metrics,
        },
    )


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


# -- logs -------------------------------------------------------------------------------------


class EscapeControlCharacters(logging.Filter):
    """Log records with the control characters of their arguments and tracebacks escaped: a
    request path or a device name must not drive the operator's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(escape(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: escape(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = "\n".join(escape(line) for line in text.split("\n"))
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with every handler escaping, and the platform's loggers on it."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"escape": {"()": f"{__name__}.EscapeControlCharacters"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["escape"]
    config["loggers"]["lakehouse"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
