"""The gateway's Prometheus metrics and its readiness.

Metrics live in a registry of the gateway's own (``prometheus_client``), served on a plain-HTTP
port apart from the devices' TLS port. Request metrics are labelled by the route's template
(``/v1/batches``), never the raw path, and by status: an attacker sending random paths makes one
series (``unmatched``), not one per path.

Readiness asks the registry database and the catalog in a thread of its own, at most every
``interval`` seconds; a probe reads the last answer. A flood of probes on the unauthenticated
``/healthz`` therefore never becomes a flood of database or catalog requests, and a check that
hangs is reported once it has taken longer than ``timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.routing import Match

logger = logging.getLogger(__name__)


UNMATCHED = "unmatched"  # a path no route serves: one label value for every such path
UNPARSED = "unparsed"  # refused before the request line was parsed (head too large, too slow)


# requests wait for an Iceberg commit (tens of milliseconds to seconds) or are answered at once
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """The gateway's metrics in a registry of its own (gateways built in one process, as tests
    build them, do not share or collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lakehouse_gateway_requests",
            "Requests answered, by route template and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "lakehouse_gateway_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "lakehouse_gateway_rows",
            "Rows landed in bronze tables from device batches.",
            ["table"],
            registry=self.registry,
        )
        self.commit_conflicts = Counter(
            "lakehouse_gateway_commit_conflicts",
            "Commits planned again because another writer (another replica) committed first.",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def refused_unparsed(self, status: int) -> None:
        """A request the server refused before the application saw it (431, 408, 400)."""
        self.requests.labels(UNPARSED, str(status)).inc()


def route_of(routes: list[Any], scope: Mapping[str, Any]) -> str:
    """The template of the route serving ``scope`` (a method it does not allow included: 405),
    else ``UNMATCHED``."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
        if match is Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial or UNMATCHED


Check = Callable[[], object]  # raises when what it checks cannot be reached


class Readiness:
    """The last answer of each ``checks`` entry (name -> check), refreshed by a thread every
    ``interval`` seconds; ``trouble()`` (no I/O) says what is wrong, or None."""

    def __init__(
        self,
        checks: dict[str, Check],
        *,
        interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks, self.interval, self.timeout, self._clock = checks, interval, timeout, clock
        self._lock = threading.Lock()
        self._failed: str | None = "not checked yet"
        self._running: tuple[str, float] | None = None  # the check under way and when it began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gateway-readiness")

    def check_now(self) -> str | None:
        """Run every check once, in this thread; returns (and keeps) what is wrong."""
        failed = None
        for name, check in self.checks.items():
            with self._lock:
                self._running = (name, self._clock())
            try:
                check()
            except Exception as exc:
                failed = f"{name} is unreachable ({type(exc).__name__})"
                logger.warning("readiness: %s: %s", failed, exc)
                break
            finally:
                with self._lock:
                    self._running = None
        with self._lock:
            self._failed = failed
        return failed

    def start(self) -> Readiness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_now()

    def trouble(self) -> str | None:
        with self._lock:
            running, failed = self._running, self._failed
        if running is not None:
            name, began = running
            waited = self._clock() - began
            if waited > self.timeout:
                return f"{name} has not answered for {waited:.0f} s (limit {self.timeout:g} s)"
        return failed
