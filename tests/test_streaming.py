"""Kafka topics into bronze with a real broker: exactly once, dead letters, signals, consumer
groups, schema evolution, metrics, a broker restart and personal data.

Every test runs twice through the ``broker`` fixture: on Tansu (PLAINTEXT on loopback, the local
profile's broker) and on a fresh Apache Kafka of its own (KRaft, SASL_SSL with SCRAM-SHA-512,
ACLs, its own CA; marked `cluster`, so `make test` runs Tansu and `make test-cluster` Kafka).
The test's `lakehouse` commands reach it through ``broker.env``, its own clients through
``broker.settings`` (``client_config``)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaProducer

from lakehouse import Lakehouse, Settings
from lakehouse.ingest.kafka import client_config
from lakehouse.reference import ensure_topics, produce

from .conftest import Broker, apache_kafka, run_cli, start_cli, tansu

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def count(home: Path, sql: str) -> int:
    with Lakehouse(Settings(home=home)) as lh:
        return int(lh.sql(sql).column(0)[0].as_py())


def sink_once(home: Path, *topics: str, env: dict[str, str] | None = None, idle: str = "3") -> dict[str, Any]:
    result = run_cli(
        "sink", "run", "--topics", ",".join(topics), "--idle-exit", idle, "-o", "json", home=home, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def send_raw(broker: Broker, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """``messages`` (key, value) as they are, poison included, into ``topic`` (3 partitions)."""
    ensure_topics(broker.settings, [topic], 3)
    producer = KafkaProducer(**client_config(broker.settings, client_id="test-send-raw"), acks="all")
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def envelope(data: dict[str, Any], version: int = 1, schema: str = "bronze.orders") -> bytes:
    return orjson.dumps({"schema": schema, "version": version, "data": data})


def order(i: int, **overrides: object) -> dict[str, Any]:
    return {"order_id": f"T{i:06d}", "store_id": "S001", "order_ts": "2026-03-02T10:00:00", **overrides}


def test_events_land_once_and_a_rerun_adds_nothing(home: Path, broker: Broker) -> None:
    for topic in ("orders", "order_lines"):
        result = run_cli(
            "produce", "--topic", topic, "--count", "3000", "--seed", "5", home=home, env=broker.env
        )
        assert result.returncode == 0, result.stderr[-3000:]
    first = sink_once(home, "orders", "order_lines", env=broker.env)
    assert first["rows"] == {"bronze.orders": 3000, "bronze.order_lines": 3000}
    again = sink_once(home, "orders", "order_lines", env=broker.env, idle="2")
    assert again["rows"] == {}
    assert count(home, "select count(distinct order_id) from bronze.orders") == 3000
    assert (
        count(home, "select count(*) from bronze.orders o join bronze.order_lines l using (order_id)") == 3000
    )


def test_poison_messages_go_to_dead_letters_with_their_reason(home: Path, broker: Broker) -> None:
    poison = [
        (b"p1", b"{not json"),
        (b"p2", orjson.dumps({"order_id": "T1"})),  # no envelope
        (b"p3", envelope(order(900001), version=7)),  # newer than the contract
        (b"p4", envelope(order(900002, order_ts="yesterday-ish"))),  # wrong type
        (
            b"p5",
            envelope({"store_id": "S001", "order_ts": "2026-03-02T10:00:00"}),
        ),  # required order_id missing
        (b"p6", envelope(order(900003, colour="red"))),  # not in the contract
        (b"p7", None),  # tombstone
    ]
    valid = [(f"T{i:06d}".encode(), envelope(order(i))) for i in range(200)]
    messages = valid[:100] + poison + valid[100:]
    send_raw(broker, "orders", messages)
    summary = sink_once(home, "orders", env=broker.env)
    assert summary["rows"] == {"bronze.orders": 200}
    assert summary["dead_letters"] == {"orders": 7}
    with Lakehouse(Settings(home=home)) as lh:
        dead = {r["message_key"]: r for r in lh.table("bronze.dead_letters").scan().to_arrow().to_pylist()}
    assert "not JSON" in dead["p1"]["reason"]
    assert "envelope" in dead["p2"]["reason"]
    assert "version 7 is newer than contract bronze.orders v1" in dead["p3"]["reason"]
    assert "'order_ts'" in dead["p4"]["reason"] and "'yesterday-ish'" in dead["p4"]["reason"]
    assert "'order_id'" in dead["p5"]["reason"]
    assert "['colour']" in dead["p6"]["reason"]
    assert "tombstone" in dead["p7"]["reason"]
    assert dead["p1"]["payload"] == b"{not json"  # kept exactly as received
    assert all(r["source"] == "orders" and r["target_table"] == "bronze.orders" for r in dead.values())
    # replaying the same partitions adds nothing anywhere
    sink_once(home, "orders", env=broker.env, idle="2")
    assert count(home, "select count(*) from bronze.dead_letters") == 7
    assert count(home, "select count(*) from bronze.orders") == 200


def test_sigkill_at_random_instants_loses_and_doubles_nothing(home: Path, broker: Broker) -> None:
    rng = random.Random(11)
    produced: list[int] = []
    producer = threading.Thread(
        target=lambda: produced.append(produce(broker.settings, "orders", rate=2500, duration=14, seed=3)),
        daemon=True,
    )
    producer.start()
    time.sleep(1)
    kills = 0
    while producer.is_alive() or kills < 4:
        sink = start_cli(
            "sink", "run", "--topics", "orders", "--batch-seconds", "0.3", "--metrics-port", "0",
            home=home, env=broker.env,
        )  # fmt: skip
        port = metrics_port(sink)
        # its join waits until the killed predecessor's session times out (Apache Kafka: 6 s), so
        # the instant is drawn from when it holds partitions, while it reads and commits every 0.3 s
        deadline = time.monotonic() + 60
        while not metric(port, "lakehouse_sink_assigned_partitions") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(port, "lakehouse_sink_assigned_partitions") == 3, "no partitions within 60 s"
        time.sleep(rng.uniform(0.2, 2.5))
        sink.send_signal(signal.SIGKILL)
        sink.wait()
        kills += 1
    producer.join()
    assert (
        _exists(home, "orders") and count(home, "select count(*) from bronze.orders") > 0
    )  # killed mid-work
    # a killed member may still hold partitions: idle-exit waits for them (the sink's SETTLE_S)
    sink_once(home, "orders", env=broker.env)
    total, distinct = (
        count(home, "select count(*) from bronze.orders"),
        count(home, "select count(distinct order_id) from bronze.orders"),
    )
    assert kills >= 4
    assert total == distinct == produced[0] > 20_000


def metric(port: int, name: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def metrics_port(sink: subprocess.Popen[str]) -> int:
    """The port of a started sink's metrics endpoint, from the line it prints on stderr (past any
    kafka-python warning printed before it)."""
    assert sink.stderr is not None
    for _ in range(100):
        line = sink.stderr.readline()
        if line.startswith("metrics at http://"):
            return int(line.strip().rsplit(":", 1)[1].split("/")[0])
        assert line, f"the sink ended before serving metrics (exit {sink.wait()})"
    raise AssertionError("the sink printed no metrics address in its first 100 lines")


def test_sigterm_flushes_and_commits(home: Path, broker: Broker) -> None:
    produce(broker.settings, "orders", count=1500, seed=8)
    sink = start_cli(
        "sink",
        "run",
        "--topics",
        "orders",
        "--batch-seconds",
        "600",
        "--metrics-port",
        "0",
        "-o",
        "json",
        home=home,
        env=broker.env,
    )
    port = metrics_port(sink)
    deadline = time.monotonic() + 60
    while metric(port, "lakehouse_sink_pending_messages") != 1500 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(port, "lakehouse_sink_pending_messages") == 1500  # read, held, not committed
    assert not _exists(home, "orders")  # the table is created by the first commit
    sink.send_signal(signal.SIGTERM)
    out, err = sink.communicate(timeout=60)
    assert sink.returncode == 0, err[-2000:]
    assert json.loads(out)["rows"] == {"bronze.orders": 1500}
    assert count(home, "select count(*) from bronze.orders") == 1500


def _exists(home: Path, table: str) -> bool:
    with Lakehouse(Settings(home=home)) as lh:
        return bool(lh.catalog.table_exists(("bronze", table)))


def test_two_sinks_in_one_group_split_partitions(home: Path, broker: Broker) -> None:
    ensure_topics(broker.settings, ["orders"], 3)
    sinks = [
        start_cli(
            "sink", "run", "--topics", "orders", "--batch-records", "2000", "--metrics-port", "0", "-o", "json",
            home=home, env=broker.env,
        )
        for _ in range(2)
    ]  # fmt: skip
    try:
        ports = [metrics_port(sink) for sink in sinks]
        # both members hold partitions before anything is produced, so the work is split, not raced for
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            held = [metric(port, "lakehouse_sink_assigned_partitions") or 0 for port in ports]
            if sum(held) == 3 and min(held) >= 1:
                break
            time.sleep(0.2)
        assert sum(held) == 3 and min(held) >= 1, held
        produce(broker.settings, "orders", count=30_000, seed=9)
        deadline = time.monotonic() + 120
        while (
            sum(metric(p, 'lakehouse_sink_rows_committed_total{table="bronze.orders"}') or 0 for p in ports)
            < 30_000
        ):
            assert time.monotonic() < deadline, "the two sinks did not land 30,000 rows in 120 s"
            time.sleep(0.2)
    finally:
        for sink in sinks:
            sink.send_signal(signal.SIGTERM)
    summaries = []
    for sink in sinks:
        out, err = sink.communicate(timeout=60)
        assert sink.returncode == 0, err[-2000:]
        summaries.append(json.loads(out))
    # each member landed rows of its own partitions, together all of them, and nothing was doubled
    rows = [s["rows"].get("bronze.orders", 0) for s in summaries]
    assert min(rows) > 0 and sum(rows) == 30_000, summaries
    assert set(summaries[0]["partitions"]) | set(summaries[1]["partitions"]) == {
        f"orders/{p}" for p in range(3)
    }
    assert count(home, "select count(distinct order_id) from bronze.orders") == 30_000
    assert count(home, "select count(*) from bronze.orders") == 30_000


def _contract_variant(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the reference project whose bronze.orders contract ``edit`` changed."""
    from .conftest import REPO

    doc = yaml.safe_load((REPO / "contracts" / "bronze.yml").read_text())
    edit(doc["tables"]["orders"])
    path = tmp_path / "project" / "contracts" / "bronze.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(doc))
    return path.parent.parent


def test_compatible_contract_change_evolves_without_rewriting(
    home: Path, broker: Broker, tmp_path: Path
) -> None:
    send_raw(broker, "orders", [(None, envelope(order(i))) for i in range(50)])
    sink_once(home, "orders", env=broker.env)
    with Lakehouse(Settings(home=home)) as lh:
        files_before = set(lh.table("bronze.orders").inspect.files().column("file_path").to_pylist())

    def add_tier(t: dict[str, Any]) -> None:
        t["version"] = 2
        t["columns"].append({"name": "loyalty_tier", "type": "string"})

    v2 = {"LAKEHOUSE_PROJECT_DIR": str(_contract_variant(tmp_path, add_tier))}
    send_raw(
        broker,
        "orders",
        [(None, envelope(order(100 + i, loyalty_tier="gold"), version=2)) for i in range(30)],
    )
    summary = sink_once(home, "orders", env=broker.env | v2)
    assert summary["rows"] == {"bronze.orders": 30} and summary["dead_letters"] == {}
    with Lakehouse(Settings(home=home)) as lh:
        table = lh.table("bronze.orders")
        assert table.schema().find_field("loyalty_tier").required is False
        files_after = set(table.inspect.files().column("file_path").to_pylist())
        assert files_before < files_after  # old data files untouched, new ones added
        tiers = lh.sql(
            "select loyalty_tier, count(*) as n from bronze.orders group by 1 order by 1"
        ).to_pylist()
    assert tiers == [{"loyalty_tier": "gold", "n": 30}, {"loyalty_tier": None, "n": 50}]


def test_incompatible_contract_change_is_refused_and_dead_lettered(
    home: Path, broker: Broker, tmp_path: Path
) -> None:
    send_raw(broker, "orders", [(None, envelope(order(i))) for i in range(20)])
    sink_once(home, "orders", env=broker.env)

    def retype(t: dict[str, Any]) -> None:
        t["version"] = 2
        for c in t["columns"]:
            if c["name"] == "store_id":
                c["type"] = "int"

    bad = {"LAKEHOUSE_PROJECT_DIR": str(_contract_variant(tmp_path, retype))}
    send_raw(broker, "orders", [(None, envelope(order(500 + i), version=2)) for i in range(5)])
    result = run_cli("sink", "run", "--topics", "orders", "--idle-exit", "3", home=home, env=broker.env | bad)
    assert result.returncode == 1
    assert (
        "incompatible" in result.stderr and "'store_id'" in result.stderr and "Traceback" not in result.stderr
    )
    assert count(home, "select count(*) from bronze.dead_letters where reason like '%incompatible%'") == 5
    assert count(home, "select count(*) from bronze.orders") == 20


@pytest.fixture(
    params=[
        pytest.param("tansu", id="tansu", marks=pytest.mark.s3),
        pytest.param("kafka", id="kafka", marks=[pytest.mark.cluster, pytest.mark.slow]),
    ]
)
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Broker]]:
    """A broker whose log outlives its process, and the lakehouse it feeds: Tansu with its log on
    the stack's S3 (locally Tansu keeps it in memory), or Apache Kafka on its data directory."""
    if request.param == "tansu":
        from lakehouse.local import read_broker_state

        settings = Settings(profile="stack", home=request.getfixturevalue("stack_home"))
        with tansu(settings, {"LAKEHOUSE_PROFILE": "stack"}) as broker:
            assert (read_broker_state(settings) or {})["storage"] == "s3://tansu/"
            yield settings, broker
    else:
        with apache_kafka(tmp_path / "apache-kafka") as broker:
            yield Settings(home=tmp_path / "home"), broker


def _group_offsets(broker: Broker) -> dict[tuple[str, int], int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**client_config(broker.settings, client_id="test-offsets"))
    try:
        found = admin.list_group_offsets(broker.settings.group)[broker.settings.group]
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in found.items()}


def _log(broker: Broker, topic: str) -> dict[tuple[int, int], bytes | None]:
    """Every record of ``topic``'s log, read from its start: {(partition, offset): key}. Read,
    not asked for (Tansu 0.6's ListOffsets answers the last batch's base offset, short of the end)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **client_config(broker.settings, client_id="test-read-log"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,  # nothing more for 3 s: the end of the log
    )
    try:
        consumer.assign(
            [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        )
        return {(record.partition, record.offset): record.key for record in consumer}
    finally:
        consumer.close()


def test_broker_restart_keeps_the_log_and_the_sinks_progress(
    restartable: tuple[Settings, Broker],
) -> None:
    settings, broker = restartable
    produce(broker.settings, "returns", count=400, seed=2)
    first = sink_once(settings.home, "returns", env=broker.env, idle="4")
    assert first["rows"] == {"bronze.returns": 400}
    offsets, log = _group_offsets(broker), _log(broker, "returns")
    assert sum(offsets.values()) == len(log) == 400
    broker.restart()
    # the same log (not an empty one at the same address) and the group's committed offsets
    assert _log(broker, "returns") == log
    assert _group_offsets(broker) == offsets
    produce(broker.settings, "returns", count=300, seed=2, start=400)
    again = sink_once(settings.home, "returns", env=broker.env, idle="4")
    assert again["rows"] == {"bronze.returns": 300}  # on from where it was, nothing read twice
    with Lakehouse(settings) as lh:
        assert lh.sql("select count(distinct return_id) from bronze.returns").column(0)[0].as_py() == 700
        assert lh.sql("select count(*) from bronze.returns").column(0)[0].as_py() == 700


def test_the_customers_topic_lands_encrypted_never_in_clear(home: Path, broker: Broker) -> None:
    from .test_ingest import assert_no_plaintext, customer
    from .test_ingest import envelope as customer_envelope

    messages = [(f"C{i:06d}".encode(), customer_envelope(customer(i))) for i in range(300)]
    messages.insert(150, (b"C000999", customer_envelope(customer(999, birth_date="1999-99-99"))))
    send_raw(broker, "customers", messages)
    summary = sink_once(home, "customers", env=broker.env)  # commits in the sink's committer process
    assert summary["rows"] == {"bronze.customers": 300}
    assert summary["dead_letters"] == {"customers": 1}
    with Lakehouse(Settings(home=home)) as lh:
        rows = lh.table("bronze.customers").scan().to_arrow().to_pylist()
        assert all(r[c].startswith(f"pii:v1:{r['customer_id']}:") for r in rows for c in ("email", "street"))
        ava = next(r for r in rows if r["customer_id"] == "C000007")
        assert lh.keystore.decrypt(ava["email"]) == "ava.quinn7@example.com"
        assert ava["email_token"] == lh.keystore.token("ava.quinn7@example.com")
        (letter,) = lh.table("bronze.dead_letters").scan().to_arrow().to_pylist()
        assert letter["pii_subject"] == "C000999" and "'birth_date'" in letter["reason"]
        assert lh.keystore.open(letter["payload"].decode()) == messages[150][1]
        assert_no_plaintext(letter["reason"])
    for table in ("customers", "dead_letters"):
        for path in (home / "warehouse" / "bronze" / table).rglob("*.parquet"):
            assert_no_plaintext(path.read_bytes())
