"""kafka-python's log records, kept free of the broker's password and held back while a client
connects.

kafka-python logs a client's whole configuration at DEBUG (``KafkaAdminClient``: "Starting
KafkaAdminClient with configuration: {..., 'sasl_plain_password': ...}"). Two walls keep the
password out of every log, whoever configures logging:

- the password goes to kafka-python as ``Password``, a ``str`` whose ``repr`` is ``'***'``: a
  dictionary of settings formats its values with ``repr``;
- ``guard_kafka_logs`` puts ``RedactingFilter`` on every ``kafka`` logger (a logger's filters
  see each record it creates, before any handler): the passwords handed to clients are masked
  in the record's message, however it was formatted.

While a client bootstraps (``held_back``), the filter also holds kafka-python's records back
instead of letting them through: a refused login is a dozen ERROR lines about lost sockets
before kafka-python gives up, and ``broker_errors`` says it in one line instead. Records held
back are let through afterwards when the client connected, and kept at DEBUG of this module
when it did not.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)


MASK = "***"


class Password(str):
    """A password as kafka-python is given it: the string itself, shown as ``'***'`` by ``repr``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class RedactingFilter(logging.Filter):
    """Masks the registered passwords in every record of the logger it is put on; holds records
    back while a client connects (``holding``)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        self._holding = 0
        self._held: list[logging.LogRecord] = []

    def register(self, secret: str) -> None:
        with self._lock:
            self._secrets.add(str.__str__(secret))
            self._ordered = sorted(self._secrets, key=len, reverse=True)  # the longest first

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._ordered
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a handler would print its arguments raw in the error report
                message = f"(a {record.name} record that could not be formatted: {record.msg!r:.200})"
            for secret in secrets:  # by value only: kafka-python's protocol dumps name "api_key"s
                message = message.replace(secret, MASK)
            record.msg, record.args = message, None
        with self._lock:
            if self._holding:
                self._held.append(record)
                return False
        return True

    @contextlib.contextmanager
    def holding(self) -> Iterator[list[logging.LogRecord] | None]:
        """Hold records back while the block runs; yields the list they are collected in, or
        None inside an outer block (which keeps them)."""
        with self._lock:
            self._holding += 1
            outermost = self._holding == 1
        try:
            yield self._held if outermost else None
        finally:
            with self._lock:
                self._holding -= 1
                if outermost:
                    self._held = []


FILTER = RedactingFilter()


def guard_kafka_logs(*secrets: str) -> None:
    """Register ``secrets`` to be masked in kafka-python's records and put the filter on every
    ``kafka`` logger that exists (importing ``kafka`` creates them all; called again before each
    client is built, so later ones get it too)."""
    import kafka  # noqa: F401  (creates its loggers)

    for secret in secrets:
        if secret:
            FILTER.register(secret)
    names = [
        name for name in logging.Logger.manager.loggerDict if name == "kafka" or name.startswith("kafka.")
    ]
    for name in names:
        kafka_logger = logging.getLogger(name)
        if FILTER not in kafka_logger.filters:
            kafka_logger.addFilter(FILTER)


@contextlib.contextmanager
def held_back() -> Iterator[list[logging.LogRecord]]:
    """kafka-python's records held back while the block runs: let through to their loggers'
    handlers when it succeeds, logged at DEBUG here when it raises (the caller says what went
    wrong in one line). Yields the records held so far, for the caller's diagnosis (empty
    inside an outer block, which holds them)."""
    guard_kafka_logs()
    with FILTER.holding() as held:
        if held is None:
            yield []
            return
        try:
            yield held
        except BaseException:
            for record in held:
                logger.debug("kafka-python while connecting: %s: %s", record.name, record.getMessage())
            raise
        records = list(held)
    for record in records:  # as if never held: the logger's filters and handlers, its parents'
        logging.getLogger(record.name).handle(record)
