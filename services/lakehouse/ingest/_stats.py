"""Ingest counters (rows, dead letters, commits, lag) and the plain-HTTP endpoint that serves
them: Prometheus metrics exposed by ``prometheus_client`` from a registry of the service's own
(several sinks can run in one process), and ``/healthz``, a readiness probe.

``IngestStats`` is what the sink and its committer update as they work; ``sink_registry`` reads
it at scrape time, so nothing on the hot path talks to Prometheus.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, SupportsIndex, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lakehouse.errors import ServerError

logger = logging.getLogger(__name__)


# Iceberg commits take tens of milliseconds on a local catalog, seconds on a busy remote one
COMMIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


QUANTILE_WINDOW = 10_000  # the latest commit latencies kept for summary()'s percentiles


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class CommitSeconds(list[float]):
    """Commit latencies, as the committers record them (``append``, ``extend``; the committer
    process sends them over its pipe as a plain list). Each value is also counted into the
    histogram buckets of ``COMMIT_BUCKETS`` for the whole run, while the list itself keeps only
    the latest ``QUANTILE_WINDOW`` values: a sink that runs for months does not grow with them."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._buckets = [0] * (len(COMMIT_BUCKETS) + 1)  # the last one: above every bound
        self._count = 0
        self._sum = 0.0
        self.extend(values)

    def append(self, value: float) -> None:
        with self._lock:
            self._buckets[bisect.bisect_left(COMMIT_BUCKETS, value)] += 1  # a bound counts values <= it
            self._count += 1
            self._sum += value
            super().append(value)
            if len(self) > 2 * QUANTILE_WINDOW:
                del self[:-QUANTILE_WINDOW]

    def extend(self, values: Iterable[float]) -> None:
        for value in list(values):
            self.append(value)

    def __iadd__(self, values: Iterable[float]) -> CommitSeconds:  # type: ignore[override,misc]
        self.extend(values)
        return self

    def insert(self, index: SupportsIndex, value: float) -> None:
        raise TypeError("commit latencies are appended in the order commits end")

    def histogram(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative buckets (``le`` bound, count) ending with ``+Inf``, and the sum."""
        with self._lock:
            counts, total = list(self._buckets), self._sum
        buckets, running = [], 0
        for bound, n in zip([*map(str, COMMIT_BUCKETS), "+Inf"], counts, strict=True):
            running += n
            buckets.append((bound, float(running)))
        return buckets, total

    def __reduce__(self) -> tuple[type[list[float]], tuple[list[float]]]:
        return list, (list(self),)  # over a pipe: the values, not the lock


@dataclass
class IngestStats:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commits: int = 0
    # commits retried because another writer committed first (``Committed.attempts - 1``)
    commit_conflicts: int = 0
    commit_seconds: list[float] = field(default_factory=CommitSeconds)
    lag: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    assigned: set[str] = field(default_factory=set)
    ever_assigned: set[str] = field(default_factory=set)
    pending: int = 0  # messages read but not yet committed (the batch in memory)
    first_message_at: float | None = None
    last_commit_at: float | None = None  # time.monotonic() (one clock for every process of a host)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "commit_seconds" and not isinstance(value, CommitSeconds):
            value = CommitSeconds(value)  # a list put in its place still feeds the histogram
        super().__setattr__(name, value)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": dict(self.rows),
            "dead_letters": dict(self.dead_letters),
            "commits": self.commits,
            "commit_p50_s": _quantile(self.commit_seconds, 0.5),
            "commit_p95_s": _quantile(self.commit_seconds, 0.95),
            "partitions": sorted(self.ever_assigned),
        }


# --- Prometheus ------------------------------------------------------------------------------


def _split_tp(tp: str) -> list[str]:
    topic, _, partition = tp.rpartition("/")
    return [topic, partition]


class _SinkCollector(Collector):
    """The sink's metrics, read from its ``IngestStats`` when Prometheus scrapes."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on nothing but this file: no need to collect at registration

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        rows = CounterMetricFamily(
            "lakehouse_sink_rows_committed", "Rows committed to bronze tables.", labels=["table"]
        )
        for table, n in sorted(dict(s.rows).items()):
            rows.add_metric([table], n)
        yield rows
        dead = CounterMetricFamily(
            "lakehouse_sink_dead_letters", "Messages sent to bronze.dead_letters.", labels=["topic"]
        )
        for topic, n in sorted(dict(s.dead_letters).items()):
            dead.add_metric([topic], n)
        yield dead
        yield CounterMetricFamily(
            "lakehouse_sink_commits", "Iceberg commits of rows to bronze tables.", value=s.commits
        )
        yield CounterMetricFamily(
            "lakehouse_sink_commit_conflicts",
            "Commits planned again because another writer committed first.",
            value=s.commit_conflicts,
        )
        latencies = s.commit_seconds
        if isinstance(latencies, CommitSeconds):
            buckets, total = latencies.histogram()
            seconds = HistogramMetricFamily(
                "lakehouse_sink_commit_seconds", "Iceberg commit latency.", buckets=buckets, sum_value=total
            )
            yield seconds
        # only the partitions held now: a partition that moved to another member is its to report
        held = set(s.assigned)
        lag = GaugeMetricFamily(
            "lakehouse_sink_lag_records",
            "Records of the partition not yet committed to its table (behind the log's end).",
            labels=["topic", "partition"],
        )
        for tp, n in sorted(dict(s.lag).items()):
            if tp in held:
                lag.add_metric(_split_tp(tp), n)
        yield lag
        yield GaugeMetricFamily(
            "lakehouse_sink_assigned_partitions",
            "Partitions this member of the consumer group holds now.",
            value=len(held),
        )
        yield GaugeMetricFamily(
            "lakehouse_sink_pending_messages",
            "Messages read and held for the next commit.",
            value=s.pending,
        )
        if s.last_commit_at is not None:  # absent until the first commit
            yield GaugeMetricFamily(
                "lakehouse_sink_last_commit_timestamp_seconds",
                "When rows were last committed (Unix time).",
                value=time.time() - (time.monotonic() - s.last_commit_at),
            )


def sink_registry(stats: IngestStats) -> CollectorRegistry:
    """A registry of the sink's own (not prometheus_client's global one): its metrics, read from
    ``stats`` at scrape time, and its process's (memory, CPU, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SinkCollector(stats))
    ProcessCollector(registry=registry)
    return registry


# --- readiness ---------------------------------------------------------------------------------

# Why a service cannot do its work now (one line), or None when it can.
Readiness = Callable[[], "str | None"]


def sink_readiness(sink: Any) -> Readiness:
    """``sink``'s readiness: its ``trouble()`` (a ``lakehouse.ingest.kafka.Sink``, which this
    layer may not import): ready only while the last commit did not fail, the committer
    (process and thread) is alive and the consumer holds partitions."""
    return cast(Readiness, sink.trouble)


# --- the endpoint ------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """``/metrics`` (prometheus_client's WSGI app: text or OpenMetrics as the scraper asks) and
    ``/healthz`` (200 ``ok``, or 503 and the reason) over plain HTTP, in a daemon thread."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, ready: Readiness | None = None
    ) -> None:
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                return _plain(start_response, "405 Method Not Allowed", "GET only")
            if path == "/metrics":
                return metrics(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                try:
                    trouble = ready() if ready is not None else None
                except Exception as exc:
                    logger.exception("the readiness check failed")
                    trouble = f"the readiness check failed ({type(exc).__name__})"
                if trouble is None:
                    return _plain(start_response, "200 OK", "ok")
                return _plain(start_response, "503 Service Unavailable", trouble)
            return _plain(start_response, "404 Not Found", "not found: /metrics or /healthz")

        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsWSGIServer", (_Server,), {"address_family": family})
        self._server: WSGIServer = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self.server_address: tuple[Any, ...] = self._server.server_address
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="metrics")
        self._thread.start()

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _plain(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    body = (" ".join(text.split()) + "\n").encode()  # one line, whatever the reason held
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def serve_metrics(
    source: IngestStats | CollectorRegistry,
    port: int,
    *,
    host: str = "127.0.0.1",
    ready: Readiness | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host`` (loopback unless told otherwise: a pod
    gives ``0.0.0.0`` and a NetworkPolicy) in a daemon thread; port 0 picks a free one. A sink's
    ``IngestStats`` is served through ``sink_registry``."""
    registry = sink_registry(source) if isinstance(source, IngestStats) else source
    try:
        server = MetricsServer(registry, host, port, ready)
    except OSError as exc:  # taken, or an address this host does not have
        raise ServerError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another port "
            "(--metrics-port, LAKEHOUSE_SINK__METRICS_PORT or LAKEHOUSE_GATEWAY__METRICS_PORT) or host"
        ) from exc
    logger.info("serving metrics at %s/metrics", server.url)
    return server
