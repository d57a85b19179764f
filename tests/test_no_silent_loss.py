"""No silent loss (issue 11): a broker that lost its log, a broker that is not there, a broker
that did not start, and a sink that says what it does while it runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from lakehouse import BrokerUnreachable, Lakehouse, OffsetsOutOfRange, Settings
from lakehouse.ingest import IngestStats
from lakehouse.ingest.kafka import OFFSET_RESET, Sink, require_broker
from lakehouse.ingest.kafka._offsets import (
    BELOW_START,
    BEYOND_END,
    NEW_TOPIC,
    Log,
    Recorded,
    mismatches,
    refusal,
)
from lakehouse.ingest.kafka._progress import Rate, status_line
from lakehouse.local import start_broker, stop_broker
from lakehouse.reference import ensure_topics, produce

from .conftest import LAKEHOUSE_BIN, run_cli, tansu

# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def broker(home: Path) -> Iterator[str]:
    """Tansu on a free loopback port for this test's home, its address: these tests need a broker
    whose log is in memory, so that a restart empties it (the battery's `broker` fixture of
    conftest also runs Apache Kafka, whose log survives)."""
    with tansu(Settings(home=home)) as found:
        yield str(found.settings.bootstrap)


def rows(home: Path, sql: str) -> list[dict]:
    with Lakehouse(Settings(home=home)) as lh:
        return lh.sql(sql).to_pylist()


def orders(home: Path) -> tuple[int, int]:
    (row,) = rows(home, "select count(*) as n, count(distinct order_id) as d from bronze.orders")
    return row["n"], row["d"]


def restart_empty(home: Path, bootstrap: str) -> None:
    """Stop the local broker and start it again on the same port: its log is in memory, so the
    topics come back empty (created again by the next producer)."""
    settings = Settings(home=home)
    stop_broker(settings)
    start_broker(settings, port=int(bootstrap.rsplit(":", 1)[1]))


def send_poison(bootstrap: str, count: int) -> None:
    ensure_topics(bootstrap, ["orders"], 3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        producer.send("orders", key=f"poison{i}".encode(), value=b"{not json")
    producer.flush()
    producer.close()


def sink_in_process(home: Path, bootstrap: str, *, cls: type[Sink] = Sink, **options: object) -> IngestStats:
    with Lakehouse(Settings(home=home)) as lh:
        sink = cls(lh.catalog, bootstrap, ["orders"], idle_exit=1.5, batch_max_seconds=0.3, **options)  # type: ignore[arg-type]
        return sink.run()


def resets(home: Path) -> list[dict]:
    """The offset resets recorded in bronze.orders' snapshot summaries, oldest first."""
    with Lakehouse(Settings(home=home)) as lh:
        snapshots = lh.table("bronze.orders").metadata.snapshots
    return [
        json.loads(s.summary.additional_properties[OFFSET_RESET])
        for s in snapshots
        if s.summary and OFFSET_RESET in s.summary.additional_properties
    ]


def cli_within(
    args: list[str], home: Path, env: dict[str, str], guard: float
) -> subprocess.CompletedProcess[str]:
    """The `lakehouse` command as a user runs it; ``guard`` seconds only keep a hang from
    hanging the suite (subprocess.TimeoutExpired fails the test)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    environment.update({"LAKEHOUSE_HOME": str(home), **env})
    return subprocess.run(
        [LAKEHOUSE_BIN, *args], capture_output=True, text=True, env=environment, timeout=guard
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- 1. a broker that lost its log -------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.kafka
def test_a_broker_restarted_empty_is_refused_then_the_accepted_reset_lands_once(
    home: Path, broker: str
) -> None:
    produce(broker, "orders", count=1000, seed=1)
    assert dict(sink_in_process(home, broker).rows) == {"bronze.orders": 1000}
    restart_empty(home, broker)
    produce(broker, "orders", count=300, seed=1, start=1000)

    refused = run_cli("sink", "run", "--topics", "orders", "--idle-exit", "2", home=home)
    assert refused.returncode == 1
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in refused.stderr
    for p in range(3):  # each partition named with the table's mark and the log's end
        assert f"orders/{p}: bronze.orders mark " in error[0]
    assert "log start 0 end " in error[0] and "topic orders was created again" in error[0]
    assert "--accept-offset-reset" in error[0]
    assert orders(home) == (1000, 1000)  # nothing landed, nothing dropped

    accepted = run_cli(
        "sink",
        "run",
        "--topics",
        "orders",
        "--idle-exit",
        "2",
        "--accept-offset-reset",
        "-o",
        "json",
        home=home,
    )
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert json.loads(accepted.stdout)["rows"] == {"bronze.orders": 300}
    assert orders(home) == (1300, 1300)
    (reset,) = resets(home)  # recorded in the table: what each mark was, where it went and why
    assert sorted(reset) == ["orders/0", "orders/1", "orders/2"]
    assert sum(r["from"] for r in reset.values()) == 1000
    assert {(r["to"], r["reason"]) for r in reset.values()} == {(0, NEW_TOPIC)}

    again = run_cli("sink", "run", "--topics", "orders", "--idle-exit", "2", "-o", "json", home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["rows"] == {}
    assert orders(home) == (1300, 1300)
    assert len(resets(home)) == 1


@pytest.mark.integration
@pytest.mark.kafka
def test_a_new_log_longer_than_the_marks_is_refused_and_dead_letters_reset_too(
    home: Path, broker: str
) -> None:
    """The case the log's end cannot reveal: the new log already reaches beyond the old marks
    (the issue's 500 of 1,500). The topic id tells the logs apart; the dead letters' marks are
    reset with the topic's, so the new log's bad messages are kept too."""
    produce(broker, "orders", count=300, seed=1)
    send_poison(broker, 3)
    assert dict(sink_in_process(home, broker).dead_letters) == {"orders": 3}

    restart_empty(home, broker)
    produce(broker, "orders", count=1500, seed=1, start=300)
    send_poison(broker, 3)
    with pytest.raises(OffsetsOutOfRange, match="topic orders was created again") as refused:
        sink_in_process(home, broker)
    assert sorted(refused.value.partitions) == ["orders/0", "orders/1", "orders/2"]
    assert orders(home) == (300, 300)

    stats = sink_in_process(home, broker, accept_offset_reset=True)
    assert dict(stats.rows) == {"bronze.orders": 1500}
    assert dict(stats.dead_letters) == {"orders": 3}
    assert orders(home) == (1800, 1800)
    assert rows(home, "select count(*) as n from bronze.dead_letters") == [{"n": 6}]
    assert dict(sink_in_process(home, broker).rows) == {}


class _NoTopicIds(Sink):
    """A sink against a broker that reports no topic ids (older Kafka): only offsets tell."""

    def _log_topic_id(self, topic: str) -> str | None:
        return None


@pytest.mark.integration
@pytest.mark.kafka
def test_without_topic_ids_a_mark_beyond_the_log_end_is_refused(home: Path, broker: str) -> None:
    produce(broker, "orders", count=1000, seed=1)
    assert dict(sink_in_process(home, broker, cls=_NoTopicIds).rows) == {"bronze.orders": 1000}
    assert dict(sink_in_process(home, broker, cls=_NoTopicIds).rows) == {}  # a rerun is not a reset

    restart_empty(home, broker)
    produce(broker, "orders", count=300, seed=1, start=1000)
    with pytest.raises(OffsetsOutOfRange, match="the mark is beyond the log's end"):
        sink_in_process(home, broker, cls=_NoTopicIds)
    stats = sink_in_process(home, broker, cls=_NoTopicIds, accept_offset_reset=True)
    assert dict(stats.rows) == {"bronze.orders": 300}
    assert orders(home) == (1300, 1300)
    assert {r["reason"] for r in resets(home)[0].values()} == {BEYOND_END}


@pytest.mark.integration
@pytest.mark.kafka
def test_a_broker_restarted_under_a_running_sink_stops_it(home: Path, broker: str) -> None:
    produce(broker, "orders", count=600, seed=1)
    outcome: dict[str, object] = {}
    with Lakehouse(Settings(home=home)) as lh:
        sink = Sink(lh.catalog, broker, ["orders"], batch_max_seconds=0.3)

        def run() -> None:
            try:
                outcome["stats"] = sink.run()
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 120
            while sum(sink.stats.rows.values()) < 600:
                assert time.monotonic() < deadline and thread.is_alive(), outcome
                time.sleep(0.2)
            restart_empty(home, broker)
            produce(broker, "orders", count=300, seed=1, start=600)
            thread.join(timeout=120)
        finally:
            if thread.is_alive():
                sink.stop()
                thread.join(timeout=60)
    assert isinstance(outcome.get("error"), OffsetsOutOfRange), outcome
    assert orders(home) == (600, 600)


@pytest.mark.unit
def test_marks_the_log_does_not_hold_are_found() -> None:
    logs = {0: Log(0, 100, "new"), 1: Log(0, 500, "new"), 2: Log(40, 90, "new")}

    def found(*tables: Recorded) -> list[tuple[int, str, str, int]]:
        return [(m.partition, m.why, m.table, m.mark) for m in mismatches("orders", logs, list(tables))]

    # the same log: a mark beyond its end, a position below its start; one in range is fine
    same = Recorded("bronze.orders", {0: 350, 1: 300, 2: 20}, "new")
    assert found(same, Recorded("bronze.dead_letters", {})) == [
        (0, BEYOND_END, "bronze.orders", 350),
        (2, BELOW_START, "bronze.orders", 20),
    ]
    # another log: every partition with a mark, whatever the offsets (the new log may be longer)
    old = Recorded("bronze.orders", {0: 50, 1: 300}, "old")
    assert found(old, Recorded("bronze.dead_letters", {})) == [
        (0, NEW_TOPIC, "bronze.orders", 50),
        (1, NEW_TOPIC, "bronze.orders", 300),
    ]
    # the dead letters count too: their mark beyond the end, or their old topic id
    assert found(Recorded("bronze.orders", {}), Recorded("bronze.dead_letters", {0: 101}, "new")) == [
        (0, BEYOND_END, "bronze.dead_letters", 101)
    ]
    assert found(Recorded("bronze.orders", {1: 7}), Recorded("bronze.dead_letters", {0: 3}, "old"))[0][1] == (
        NEW_TOPIC
    )
    # a table that recorded no topic id (written before ids were recorded), in range: nothing
    assert (
        found(Recorded("bronze.orders", {0: 100, 1: 499, 2: 40}), Recorded("bronze.dead_letters", {})) == []
    )
    # a partition the topic no longer has holds nothing to skip
    assert found(Recorded("bronze.orders", {7: 10**6}, "new"), Recorded("bronze.dead_letters", {})) == []
    # the position is the topic table's mark: a lower dead-letter mark below the start is no loss
    assert found(Recorded("bronze.orders", {2: 60}), Recorded("bronze.dead_letters", {2: 5})) == []


@pytest.mark.unit
def test_the_refusal_says_which_partition_mark_and_end_and_what_to_do() -> None:
    found = mismatches("orders", {0: Log(0, 99, None)}, [Recorded("bronze.orders", {0: 350})])
    error = refusal(found)
    assert error.partitions == ["orders/0"]
    message = str(error)
    assert "orders/0: bronze.orders mark 350, log start 0 end 99, the mark is beyond the log's end" in message
    assert "--accept-offset-reset" in message and "\n" not in message


# --- 2. a broker that is not there -------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [
        ["produce", "--topic", "orders", "--count", "5"],
        ["sink", "run", "--topics", "orders", "--idle-exit", "2"],
    ],
    ids=["produce", "sink"],
)
def test_no_broker_is_one_line_naming_the_address(home: Path, command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    # kafka-python alone retried for 35 s and more before its own traceback: the guard catches that
    result = cli_within(command, home, {"LAKEHOUSE_BROKER__BOOTSTRAP": address}, guard=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no Kafka broker answers at " + address)
    assert "`lakehouse broker start`" in lines[0]


@pytest.mark.unit
def test_require_broker_gives_up_after_its_window() -> None:
    address = f"127.0.0.1:{free_port()}"
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with pytest.raises(BrokerUnreachable) as error:
        require_broker(address, within=2.0, clock=lambda: now[0], sleep=sleep)
    assert error.value.bootstrap == address
    assert address in str(error.value) and "lakehouse broker start" in str(error.value)
    assert 0 < sum(waits) <= 2.2  # retried a broker that may be starting, then gave up
    with pytest.raises(BrokerUnreachable, match="not host:port"):
        require_broker("localhost", within=0)


# --- 3. a broker that did not start ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.kafka
def test_a_broker_on_a_taken_port_is_not_reported_running(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("broker", "start", "--port", str(port), home=home)
    assert result.returncode == 1
    assert "running" not in result.stdout
    first, *tail = result.stderr.splitlines()
    assert first.startswith(f"error: the broker did not start: port {port} is taken by pid {os.getpid()}")
    assert "--port 0" in first and "Traceback" not in result.stderr
    assert tail[0].startswith("last ") and tail[0].endswith("tansu.log:")  # the server's own words
    assert 0 < len(tail) - 1 <= 20 and any("Address in use" in line for line in tail)
    status = run_cli("broker", "status", "-o", "json", home=home)
    assert json.loads(status.stdout)["running"] is False


# --- 4. a sink that says what it does ----------------------------------------------------------


@pytest.mark.unit
def test_the_live_line_shows_rows_rate_lag_per_topic_and_dead_letters() -> None:
    stats = IngestStats()
    stats.rows.update({"bronze.orders": 12_000, "bronze.order_lines": 345})
    stats.dead_letters.update({"orders": 2, "order_lines": 1})
    stats.assigned = {"orders/0", "orders/1", "order_lines/0"}
    stats.lag = {
        "orders/0": 1_000,
        "orders/1": 234,
        "order_lines/0": 0,
        "orders/2": 99,
    }  # orders/2 moved away
    assert (
        status_line(stats, 4_210.4)
        == "sink: 12,345 rows (4,210/s) | lag order_lines 0, orders 1,234 | 3 dead letters"
    )
    stats.pending = 5_000
    assert status_line(stats, 0).endswith("| 5,000 read, not yet committed")
    assert len(status_line(stats, 0, width=40)) == 40 and status_line(stats, 0, width=40).endswith("…")
    empty = IngestStats()
    assert status_line(empty, 0) == "sink: 0 rows (0/s) | waiting for partitions | 0 dead letters"
    stats.dead_letters = {"orders": 1}
    stats.rows = {"bronze.orders": 1}
    assert "1 row (" in status_line(stats, 0) and "1 dead letter" in status_line(stats, 0)


@pytest.mark.unit
def test_the_rate_is_measured_over_a_window_not_since_start() -> None:
    rate = Rate(window=5.0)
    assert rate.update(0.0, 0) == 0.0
    assert rate.update(1.0, 0) == 0.0
    assert rate.update(2.0, 1000) == 500.0  # 1,000 rows in the 2 s seen so far
    for t in range(3, 20):
        rate.update(float(t), 1000)
    assert rate.update(20.0, 1000) == 0.0  # idle for longer than the window: no rows per second
    assert rate.update(21.0, 6000) == 1000.0  # 5,000 rows in the last 5 s
