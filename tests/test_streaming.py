"""Kafka topics into bronze with a real broker (Tansu on loopback): exactly once, dead letters,
signals, consumer groups and schema evolution."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from kafka import KafkaProducer

from lakehouse import Lakehouse, Settings
from lakehouse.ingest import serve_metrics
from lakehouse.ingest.kafka import Sink
from lakehouse.reference import ensure_topics, produce

from .conftest import run_cli, start_cli

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def count(home: Path, sql: str) -> int:
    with Lakehouse(Settings(home=home)) as lh:
        return int(lh.sql(sql).column(0)[0].as_py())


def sink_once(home: Path, *topics: str, env: dict[str, str] | None = None, idle: str = "3") -> dict:
    result = run_cli(
        "sink", "run", "--topics", ",".join(topics), "--idle-exit", idle, "-o", "json", home=home, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def send_raw(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    ensure_topics(bootstrap, [topic], 3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def envelope(data: dict, version: int = 1, schema: str = "bronze.orders") -> bytes:
    return orjson.dumps({"schema": schema, "version": version, "data": data})


def order(i: int, **overrides: object) -> dict:
    return {"order_id": f"T{i:06d}", "store_id": "S001", "order_ts": "2026-03-02T10:00:00", **overrides}


def test_events_land_once_and_a_rerun_adds_nothing(home: Path, broker: str) -> None:
    assert (
        run_cli("produce", "--topic", "orders", "--count", "3000", "--seed", "5", home=home).returncode == 0
    )
    assert (
        run_cli("produce", "--topic", "order_lines", "--count", "3000", "--seed", "5", home=home).returncode
        == 0
    )
    first = sink_once(home, "orders", "order_lines")
    assert first["rows"] == {"bronze.orders": 3000, "bronze.order_lines": 3000}
    again = sink_once(home, "orders", "order_lines", idle="2")
    assert again["rows"] == {}
    assert count(home, "select count(distinct order_id) from bronze.orders") == 3000
    assert (
        count(home, "select count(*) from bronze.orders o join bronze.order_lines l using (order_id)") == 3000
    )


def test_poison_messages_go_to_dead_letters_with_their_reason(home: Path, broker: str) -> None:
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
    summary = sink_once(home, "orders")
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
    sink_once(home, "orders", idle="2")
    assert count(home, "select count(*) from bronze.dead_letters") == 7
    assert count(home, "select count(*) from bronze.orders") == 200


def test_sigkill_at_random_instants_loses_and_doubles_nothing(home: Path, broker: str) -> None:
    rng = random.Random(11)
    produced: list[int] = []
    producer = threading.Thread(
        target=lambda: produced.append(produce(broker, "orders", rate=2500, duration=14, seed=3)), daemon=True
    )
    producer.start()
    time.sleep(1)
    kills = 0
    while producer.is_alive() or kills < 4:
        sink = start_cli("sink", "run", "--topics", "orders", "--batch-seconds", "0.3", home=home)
        time.sleep(rng.uniform(3.5, 6.0))  # a group join takes ~3 s; then it commits every 0.3 s
        sink.send_signal(signal.SIGKILL)
        sink.wait()
        kills += 1
    producer.join()
    # a killed member may still hold partitions: idle-exit waits for them (the sink's SETTLE_S)
    sink_once(home, "orders")
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


def test_sigterm_flushes_and_commits(home: Path, broker: str) -> None:
    produce(broker, "orders", count=1500, seed=8)
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
    )
    assert sink.stderr is not None
    port = int(sink.stderr.readline().strip().rsplit(":", 1)[1].split("/")[0])
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


def test_two_sinks_in_one_group_split_partitions(home: Path, broker: str) -> None:
    ensure_topics(broker, ["orders"], 3)
    sinks = [
        start_cli(
            "sink", "run", "--topics", "orders", "--batch-records", "2000", "--metrics-port", "0", "-o", "json",
            home=home,
        )
        for _ in range(2)
    ]  # fmt: skip
    try:
        ports = []
        for sink in sinks:
            assert sink.stderr is not None
            ports.append(int(sink.stderr.readline().strip().rsplit(":", 1)[1].split("/")[0]))
        # both members hold partitions before anything is produced, so the work is split, not raced for
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            held = [metric(port, "lakehouse_sink_assigned_partitions") or 0 for port in ports]
            if sum(held) == 3 and min(held) >= 1:
                break
            time.sleep(0.2)
        assert sum(held) == 3 and min(held) >= 1, held
        produce(broker, "orders", count=30_000, seed=9)
        deadline = time.monotonic() + 120
        while sum(metric(p, 'lakehouse_sink_rows_total{table="bronze.orders"}') or 0 for p in ports) < 30_000:
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
    home: Path, broker: str, tmp_path: Path
) -> None:
    send_raw(broker, "orders", [(None, envelope(order(i))) for i in range(50)])
    sink_once(home, "orders")
    with Lakehouse(Settings(home=home)) as lh:
        files_before = set(lh.table("bronze.orders").inspect.files().column("file_path").to_pylist())

    def add_tier(t: dict) -> None:
        t["version"] = 2
        t["columns"].append({"name": "loyalty_tier", "type": "string"})

    v2 = {"LAKEHOUSE_PROJECT_DIR": str(_contract_variant(tmp_path, add_tier))}
    send_raw(
        broker,
        "orders",
        [(None, envelope(order(100 + i, loyalty_tier="gold"), version=2)) for i in range(30)],
    )
    summary = sink_once(home, "orders", env=v2)
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
    home: Path, broker: str, tmp_path: Path
) -> None:
    send_raw(broker, "orders", [(None, envelope(order(i))) for i in range(20)])
    sink_once(home, "orders")

    def retype(t: dict) -> None:
        t["version"] = 2
        for c in t["columns"]:
            if c["name"] == "store_id":
                c["type"] = "int"

    bad = {"LAKEHOUSE_PROJECT_DIR": str(_contract_variant(tmp_path, retype))}
    send_raw(broker, "orders", [(None, envelope(order(500 + i), version=2)) for i in range(5)])
    result = run_cli("sink", "run", "--topics", "orders", "--idle-exit", "3", home=home, env=bad)
    assert result.returncode == 1
    assert (
        "incompatible" in result.stderr and "'store_id'" in result.stderr and "Traceback" not in result.stderr
    )
    assert count(home, "select count(*) from bronze.dead_letters where reason like '%incompatible%'") == 5
    assert count(home, "select count(*) from bronze.orders") == 20


def test_metrics_endpoint_speaks_prometheus(home: Path, broker: str) -> None:
    produce(broker, "orders", count=500, seed=4)
    with Lakehouse(Settings(home=home)) as lh:
        sink = Sink(lh.catalog, broker, ["orders"], idle_exit=2, batch_max_seconds=0.2)
        server = serve_metrics(sink.stats, 0)
        try:
            sink.run()
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/metrics").read().decode()
            )
        finally:
            server.shutdown()
    assert 'lakehouse_sink_rows_total{table="bronze.orders"} 500' in body
    assert "# TYPE lakehouse_sink_commit_seconds summary" in body
    assert 'lakehouse_sink_lag{topic="orders",partition="0"} 0' in body
    assert "lakehouse_sink_rows_per_second" in body and "lakehouse_sink_dead_letters_total" in body


@pytest.mark.s3
def test_broker_restart_keeps_the_log_on_s3(stack_home: Path) -> None:
    from lakehouse.local import start_broker, stop_broker

    settings = Settings(profile="stack", home=stack_home)
    env = {"LAKEHOUSE_PROFILE": "stack"}
    state = start_broker(settings)
    try:
        assert state["storage"] == "s3://tansu/"
        produce(state["bootstrap"], "returns", count=400, seed=2)
        stop_broker(settings)
        state = start_broker(settings, port=int(state["bootstrap"].rsplit(":", 1)[1]))
        produce(state["bootstrap"], "returns", count=300, seed=2, start=400)
        summary = sink_once(stack_home, "returns", env=env, idle="4")
        assert summary["rows"] == {"bronze.returns": 700}
    finally:
        stop_broker(settings)
    with Lakehouse(Settings(profile="stack", home=stack_home)) as lh:
        assert lh.sql("select count(distinct return_id) from bronze.returns").column(0)[0].as_py() == 700


def test_the_customers_topic_lands_encrypted_never_in_clear(home: Path, broker: str) -> None:
    from .test_ingest import assert_no_plaintext, customer
    from .test_ingest import envelope as customer_envelope

    messages = [(f"C{i:06d}".encode(), customer_envelope(customer(i))) for i in range(300)]
    messages.insert(150, (b"C000999", customer_envelope(customer(999, birth_date="1999-99-99"))))
    send_raw(broker, "customers", messages)
    summary = sink_once(home, "customers")  # commits in the sink's committer process
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
