"""Prometheus metrics and readiness of the platform's services, scraped from their real endpoints
and parsed with prometheus_client's own parser: the Kafka sink after real batches on a real
broker, the edge gateway after real uploads over TLS, and /healthz turning 503 when the sink's
committer dies or the gateway's registry database goes away."""

from __future__ import annotations

import contextlib
import pickle
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lakehouse import Lakehouse, Settings
from lakehouse.ingest import (
    CommitSeconds,
    IngestStats,
    serve_metrics,
    sink_readiness,
    sink_registry,
)
from lakehouse.ingest.kafka import Sink
from lakehouse.local import free_port
from lakehouse.reference import ensure_topics, produce

from .conftest import Broker
from .test_edge import (
    SCHEMA,
    access_token,
    enroll_direct,
    request,
    sealed_for,
    start_gateway,
    upload,
)
from .test_edge_attacks import read_until_closed, tls_socket
from .test_fixes import _gateway_in_process
from .test_streaming import send_raw

# --- scraping ----------------------------------------------------------------------------------


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(port: int) -> list[Sample]:
    """What the loopback endpoint on ``port`` serves at /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels are exactly ``labels``; None when there is none."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def eventually(condition: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.1)


class Running:
    """``sink.run()`` in a thread, keeping what it raised (a thread's uncaught error would be a
    warning, and warnings are errors here)."""

    def __init__(self, sink: Sink) -> None:
        self.sink, self.error, self.stats = sink, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.sink.run()  # type: ignore[assignment]
        except BaseException as exc:
            self.error = exc  # type: ignore[assignment]

    def stop(self) -> None:
        self.sink.stop()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the sink did not stop within 120 s"


# --- the sink -----------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.kafka
def test_sink_metrics_count_a_real_batch_and_healthz_follows_the_consumer(home: Path, broker: Broker) -> None:
    produce(broker.settings, "orders", count=500, seed=4)
    send_raw(broker, "orders", [(b"p1", b"{not json"), (b"p2", b"[1, 2]"), (b"p3", None)])
    before = time.time()
    with Lakehouse(Settings(home=home)) as lh:
        sink = Sink(lh.catalog, broker.settings, ["orders"], batch_max_seconds=0.2)
        server = serve_metrics(sink.stats, 0, ready=sink_readiness(sink))
        try:
            assert health(server.port) == (503, "the sink has not started consuming\n")
            running = Running(sink)
            try:
                eventually(
                    lambda: (
                        value(
                            scrape(server.port), "lakehouse_sink_rows_committed_total", table="bronze.orders"
                        )
                        == 500
                        and value(scrape(server.port), "lakehouse_sink_dead_letters_total", topic="orders")
                        == 3
                    ),
                    90,
                    "500 rows and 3 dead letters committed",
                )
                eventually(
                    lambda: (
                        sum(s.value for s in scrape(server.port) if s.name == "lakehouse_sink_lag_records")
                        == 0
                    ),
                    30,
                    "no lag once everything is committed",
                )
                samples = scrape(server.port)
                assert health(server.port) == (200, "ok\n")
            finally:
                running.stop()
            assert running.error is None, running.error
            assert health(server.port) == (503, "the commit thread has stopped\n")
        finally:
            server.shutdown()
    commits = value(samples, "lakehouse_sink_commits_total")
    assert commits is not None and commits >= 1
    # one latency observed per commit of rows, each within the histogram's buckets
    assert value(samples, "lakehouse_sink_commit_seconds_count") == commits
    assert value(samples, "lakehouse_sink_commit_seconds_bucket", le="+Inf") == commits
    assert (value(samples, "lakehouse_sink_commit_seconds_sum") or 0) > 0
    assert value(samples, "lakehouse_sink_commit_conflicts_total") == 0  # one writer: no conflict
    # lag by topic and partition, for each partition it holds
    lag = {s.labels["partition"]: s.value for s in samples if s.name == "lakehouse_sink_lag_records"}
    assert lag == {"0": 0, "1": 0, "2": 0}
    assert all(s.labels["topic"] == "orders" for s in samples if s.name == "lakehouse_sink_lag_records")
    assert value(samples, "lakehouse_sink_assigned_partitions") == 3
    assert value(samples, "lakehouse_sink_pending_messages") == 0
    last = value(samples, "lakehouse_sink_last_commit_timestamp_seconds")
    assert last is not None and before - 1 <= last <= time.time() + 1
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0


@pytest.mark.integration
@pytest.mark.kafka
@pytest.mark.slow
def test_sink_healthz_turns_503_when_its_committer_process_dies(home: Path, broker: Broker) -> None:
    ensure_topics(broker.settings, ["orders"], 3)
    settings = Settings(home=home)
    with Lakehouse(settings) as lh:
        # with settings, commits run in a process of their own (CommitterProcess)
        sink = Sink(lh.catalog, broker.settings, ["orders"], batch_max_seconds=0.2, settings=settings)
        server = serve_metrics(sink.stats, 0, ready=sink_readiness(sink))
        running = Running(sink)
        try:
            eventually(lambda: health(server.port)[0] == 200, 90, "partitions assigned")
            produce(broker.settings, "orders", count=100, seed=5)
            eventually(
                lambda: (
                    value(scrape(server.port), "lakehouse_sink_rows_committed_total", table="bronze.orders")
                    == 100
                ),
                90,
                "100 rows committed by the committer process",
            )
            committer = sink._process._proc  # type: ignore[union-attr]  # the process this test started
            committer.kill()
            committer.join(10)
            assert health(server.port) == (503, "the committer process exited (code -9)\n")
            produce(broker.settings, "orders", count=10, seed=6)  # the next batch finds it gone
            eventually(
                lambda: health(server.port)[1].startswith("the last commit failed"),
                60,
                "the failed commit reported",
            )
            assert health(server.port) == (
                503,
                "the last commit failed (LakehouseError); the sink's log says why\n",
            )
            eventually(lambda: not running.thread.is_alive(), 60, "the sink stopped on the failure")
            assert "committer process exited" in str(running.error)
        finally:
            running.stop()
            server.shutdown()
    # nothing was lost: the rows of the failed batch are read again by the next sink
    samples = parse(generate_latest(sink_registry(sink.stats)).decode())
    assert value(samples, "lakehouse_sink_rows_committed_total", table="bronze.orders") == 100


@pytest.mark.unit
def test_each_sink_has_a_registry_of_its_own() -> None:
    first, second = IngestStats(), IngestStats()
    first.rows["bronze.orders"] += 7
    second.rows["bronze.orders"] += 40
    second.commit_seconds.append(0.2)
    second.commits += 1
    a = parse(generate_latest(sink_registry(first)).decode())
    b = parse(generate_latest(sink_registry(second)).decode())
    assert value(a, "lakehouse_sink_rows_committed_total", table="bronze.orders") == 7
    assert value(b, "lakehouse_sink_rows_committed_total", table="bronze.orders") == 40
    assert value(a, "lakehouse_sink_commit_seconds_count") == 0
    assert value(b, "lakehouse_sink_commit_seconds_bucket", le="0.1") == 0
    assert value(b, "lakehouse_sink_commit_seconds_bucket", le="0.25") == 1
    # no commit yet: no last-commit time (an alert on its age would fire on a fresh sink)
    assert value(a, "lakehouse_sink_last_commit_timestamp_seconds") is None


@pytest.mark.unit
def test_commit_latencies_feed_the_histogram_and_stay_bounded() -> None:
    from lakehouse.ingest._stats import QUANTILE_WINDOW

    stats = IngestStats()
    stats.commit_seconds.extend([0.01, 0.011, 100.0])
    stats.commits += 3
    samples = parse(generate_latest(sink_registry(stats)).decode())
    assert value(samples, "lakehouse_sink_commit_seconds_bucket", le="0.01") == 1  # le: bound included
    assert value(samples, "lakehouse_sink_commit_seconds_bucket", le="0.025") == 2
    assert value(samples, "lakehouse_sink_commit_seconds_bucket", le="60.0") == 2
    assert value(samples, "lakehouse_sink_commit_seconds_bucket", le="+Inf") == 3
    assert value(samples, "lakehouse_sink_commit_seconds_sum") == pytest.approx(100.021)
    # the committer process sends its latencies as a plain list, and may put one in their place
    sent = pickle.loads(pickle.dumps(stats.commit_seconds))  # noqa: S301 (our own bytes)
    assert type(sent) is list and sent == [0.01, 0.011, 100.0]
    stats.commit_seconds = [0.5]
    assert isinstance(stats.commit_seconds, CommitSeconds)
    # months of commits: every one counted, only the latest kept for the summary's percentiles
    many = CommitSeconds()
    for i in range(2 * QUANTILE_WINDOW + 5):
        many.append(0.001 * (i % 7))
    assert len(many) <= 2 * QUANTILE_WINDOW
    buckets, _ = many.histogram()
    assert buckets[-1] == ("+Inf", float(2 * QUANTILE_WINDOW + 5))


@pytest.mark.unit
def test_sink_lag_is_reported_only_for_partitions_held_now() -> None:
    stats = IngestStats()
    stats.assigned = {"orders/0", "order_lines/2"}
    stats.lag = {"orders/0": 12, "orders/1": 99, "order_lines/2": 0}  # orders/1 moved to another member
    samples = parse(generate_latest(sink_registry(stats)).decode())
    lag = {
        (s.labels["topic"], s.labels["partition"]): s.value
        for s in samples
        if s.name == "lakehouse_sink_lag_records"
    }
    assert lag == {("orders", "0"): 12, ("order_lines", "2"): 0}


# --- the gateway ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_metrics_count_uploads_by_route_template_and_status(home: Path) -> None:
    port = free_port(set())
    gw = start_gateway(home, metrics_port=str(port))
    probe = f"/v1/batches/{uuid.uuid4().hex}"  # a path an attacker varies at will
    try:
        device = enroll_direct(gw)
        token = access_token(gw, device)
        assert upload(gw, token, sealed_for(device, 1))[0] == 201  # 5 readings
        assert upload(gw, "not-a-token", sealed_for(device, 2))[0] == 401
        assert upload(gw, token, sealed_for(device, 5))[0] == 409  # not the next seq
        assert request(gw, "GET", probe)[0] == 404
        assert request(gw, "GET", "/v1/batches")[0] == 405
        # a head over the limit is refused by the server before the application sees it
        sock = tls_socket(gw)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        answer, _ = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        samples = scrape(port)
        assert health(port) == (200, "ok\n")
        # the devices' TLS port does not serve metrics
        assert request(gw, "GET", "/metrics")[0] == 404
    finally:
        gw.stop()

    def requests(route: str, status: str) -> float | None:
        return value(samples, "lakehouse_gateway_requests_total", route=route, status=status)

    assert requests("/v1/devices/enroll", "201") == 1
    assert requests("/v1/token", "200") == 1
    assert requests("/v1/batches", "201") == 1
    assert requests("/v1/batches", "401") == 1
    assert requests("/v1/batches", "409") == 1
    assert requests("/v1/batches", "405") == 1
    assert requests("unmatched", "404") == 1
    assert requests("unparsed", "431") == 1
    assert not [s for s in samples if any(probe.split("/")[-1] in v for v in s.labels.values())]
    assert value(samples, "lakehouse_gateway_request_seconds_count", route="/v1/batches") == 4
    assert value(samples, "lakehouse_gateway_rows_total", table=SCHEMA) == 5
    assert value(samples, "lakehouse_gateway_commit_conflicts_total") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_healthz_turns_503_when_the_registry_database_goes_away(home: Path, tmp_path: Path) -> None:
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    stopped = False
    try:
        server.psql("create database registry;")
        url = server.get_uri("registry").replace("postgresql://", "postgresql+psycopg2://", 1)
        port = free_port(set())
        with _gateway_in_process(home, registry_url=url, metrics_port=port, health_interval=0.2) as gw:
            assert request(gw, "GET", "/healthz")[0] == 200
            assert health(port) == (200, "ok\n")
            server.cleanup()  # PostgreSQL stops
            stopped = True
            eventually(lambda: request(gw, "GET", "/healthz")[0] == 503, 15, "the gateway reports it")
            _, headers, problem = request(gw, "GET", "/healthz")
            assert headers["content-type"] == "application/problem+json"
            assert problem["detail"] == "the device registry database is unreachable (OperationalError)"
            assert health(port) == (503, problem["detail"] + "\n")
    finally:
        if not stopped:
            server.cleanup()


@pytest.mark.unit
def test_gateway_readiness_checks_at_its_own_pace_and_names_what_hangs() -> None:
    from lakehouse.ingest.edge._metrics import Readiness

    now = [100.0]
    calls = {"registry": 0}
    release = threading.Event()

    def registry() -> None:
        calls["registry"] += 1

    def catalog() -> None:
        release.wait(10)

    readiness = Readiness(
        {"the device registry database": registry, "the catalog": catalog},
        interval=5,
        timeout=2,
        clock=lambda: now[0],
    )
    assert readiness.trouble() == "not checked yet"
    release.set()
    assert readiness.check_now() is None
    for _ in range(1000):  # probes read the last answer: no database or catalog request each
        assert readiness.trouble() is None
    assert calls["registry"] == 1

    release.clear()
    checking = threading.Thread(target=readiness.check_now)
    checking.start()
    eventually(lambda: readiness._running is not None and readiness._running[0] == "the catalog", 5, "")
    assert readiness.trouble() is None  # still within its time
    now[0] += 3
    assert readiness.trouble() == "the catalog has not answered for 3 s (limit 2 s)"
    release.set()
    checking.join(5)
    assert readiness.trouble() is None

    def down() -> None:
        raise ConnectionRefusedError("no")

    failing = Readiness({"the catalog": down}, interval=5, timeout=2)
    assert failing.check_now() == "the catalog is unreachable (ConnectionRefusedError)"


@pytest.mark.unit
def test_gateway_route_labels_are_templates_never_raw_paths() -> None:
    from fastapi import FastAPI

    from lakehouse.ingest.edge._metrics import UNMATCHED, route_of

    app = FastAPI()

    @app.post("/v1/devices/{device_id}/keys")
    async def keys(device_id: str) -> None:
        return None

    def scope(method: str, path: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": ""}

    assert (
        route_of(app.router.routes, scope("POST", "/v1/devices/abc/keys")) == "/v1/devices/{device_id}/keys"
    )
    assert route_of(app.router.routes, scope("GET", "/v1/devices/abc/keys")) == "/v1/devices/{device_id}/keys"
    for path in ("/x" * 100, "/v1/devices/abc/keys/..", "/%00", "/" + "é" * 40):
        assert route_of(app.router.routes, scope("POST", path)) == UNMATCHED


@pytest.mark.unit
def test_the_metrics_endpoint_serves_two_paths_and_says_why_it_cannot_start() -> None:
    import socket

    from lakehouse.errors import ServerError

    server = serve_metrics(IngestStats(), 0, ready=lambda: None)
    try:
        assert health(server.port) == (200, "ok\n")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics/../admin", timeout=10)
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", data=b"x", timeout=10)
        assert posted.value.code == 405
        # a scraper that asks for OpenMetrics gets it (prometheus_client negotiates)
        asked = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        with urllib.request.urlopen(asked, timeout=10) as response:  # noqa: S310 (http://127.0.0.1 above)
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.read().decode().endswith("# EOF\n")
    finally:
        server.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=rf"cannot serve metrics on 127.0.0.1:{port}: .*another port"):
            serve_metrics(IngestStats(), port)
