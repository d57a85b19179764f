"""The gateway's HTTP server: uvicorn with h11, bounded in bytes and time, TLS 1.3 or AEAD 1.2.

uvicorn bounds neither the time a client may take to send its request head nor its body: its
keep-alive timer runs only between requests, and every byte received cancels it, so a client
sending one byte every few seconds holds a connection (and its buffers) forever. h11 is used
instead of httptools because it bounds the request head (``h11_max_incomplete_event_size``);
``GuardedH11Protocol`` adds a deadline for the head from its first byte, one for the body from
the end of the head, and one for idle connections, and answers 408 or 431 as problem+json.
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

import h11
from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from .._settings import GatewaySettings
from ._text import escape

logger = logging.getLogger(__name__)

PROBLEM_BASE = "urn:lakehouse:problem:"
# TLS 1.2 only with forward secrecy and AEAD; TLS 1.3 suites are all AEAD and preferred anyway
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

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


class _Connection(h11.Connection):
    """h11's connection, with the request head bounded however it arrives, remembering why it
    refused a request (431: the head is too large).

    h11 bounds a head only while it is incomplete: one that arrives whole in a single read (up
    to the transport's read size) passes its check, so a complete head is measured here."""

    def __init__(self, max_head: int):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self.refused: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused = exc
            raise
        if isinstance(event, h11.Request):
            size = len(event.method) + len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if size > self.max_head:
                self.refused = h11.RemoteProtocolError("request head too large", error_status_hint=431)
                raise self.refused
        return event


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines. Subclassed per gateway by ``protocol``."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = 16 * 1024

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(self.max_header_bytes)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting: Waiting | None = None

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
        """Re-aim the deadline at what the connection is waiting for now."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._waiting != "body":
                self._expect("body")
        elif state is h11.IDLE:
            if self.conn.trailing_data[0]:  # part of the next request head is here
                if self._waiting != "headers":
                    self._expect("headers")
            elif self._waiting != "idle":
                self._expect("idle")
        else:  # the application has the whole request, or the connection is ending
            self._cancel()

    def _expired(self, waiting: Waiting) -> None:
        self._deadline, self._waiting = None, None
        if self.transport.is_closing():
            return
        asked = waiting == "body" or bool(self.conn.trailing_data[0])
        cycle = self.cycle if waiting == "body" else None
        if asked and (cycle is None or not cycle.response_started):
            limit = self.body_timeout if waiting == "body" else self.header_timeout
            logger.warning("%s: request %s not received within %ss", _peer(self.client), waiting, limit)
            if cycle is not None:  # the application waits for the body: tell it the client left
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.write(
                raw_problem(
                    408,
                    "Request Timeout",
                    "request-timeout",
                    f"the request {waiting} did not arrive within {limit:g}s",
                )
            )
        self.transport.close()

    # -- uvicorn's hooks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting in (None, "idle"):  # the first byte of a request starts its clock
            self._expect("headers")
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def send_400_response(self, msg: str) -> None:
        refused = getattr(self.conn, "refused", None)
        if refused is not None and refused.error_status_hint == 431:
            answer = raw_problem(
                431,
                "Request Header Fields Too Large",
                "header-too-large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )
        else:
            answer = raw_problem(400, "Bad Request", "bad-request", "the request is not valid HTTP/1.1")
        self._cancel()
        self.transport.write(answer)
        self.transport.close()


def protocol(settings: GatewaySettings) -> type[GuardedH11Protocol]:
    """The protocol class with this gateway's limits."""
    return type(
        "GatewayH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": settings.header_timeout,
            "body_timeout": settings.body_timeout,
            "max_header_bytes": settings.max_header_bytes,
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
