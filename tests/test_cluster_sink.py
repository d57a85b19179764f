"""The platform's Kafka clients (producer, sink, admin) on the stack's Apache Kafka: SASL_SSL
with SCRAM-SHA-512 as ``lakehouse``, the broker's certificate checked against the stack's CA.

The `cluster` tests run the `lakehouse` command in the stack profile against a stack home
with Apache Kafka (``kafka_home``): events land in bronze exactly once, a wrong password or an
untrusted CA is one line, and the password is in no log and no output. The `unit` tests check
the broker settings, how the stack profile finds its Kafka, the clients' keyword arguments and
kafka-python's records without a broker. The sink's whole battery (tests/test_streaming.py)
also runs on an Apache Kafka of each test's own, the local profile pointed at it through the
environment."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from lakehouse import ConfigurationError, Lakehouse, Settings
from lakehouse.config import (
    BrokerSettings,
    apply_stack_state,
    ensure_local_tls,
    process_identity,
    read_state,
    write_private,
)
from lakehouse.errors import BrokerUnreachable
from lakehouse.ingest.kafka import Sink, broker_errors, client_config, require_broker
from lakehouse.reference import ensure_topics, produce

from .conftest import require_kafka_artifacts, run_cli
from .test_streaming import sink_once

STACK = {"LAKEHOUSE_PROFILE": "stack"}

ON_THE_CLUSTER = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.kafka, pytest.mark.slow]


def on_the_cluster(test: Any) -> Any:
    for mark in ON_THE_CLUSTER:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def kafka_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stack home with SeaweedFS and Apache Kafka only, stopped by their recorded PIDs.

    Temporary: the session's whole stack (``cluster_home``) does not start yet while its Trino
    and OPA are being finished; once it does, these tests take ``cluster_home`` instead."""
    from lakehouse.local import start_stack, stop_stack

    require_kafka_artifacts()
    home = tmp_path_factory.mktemp("kafka-sink") / "home"
    settings = Settings(profile="stack", home=home)
    try:
        start_stack(settings, services=("kafka",))
        yield home
    finally:
        stop_stack(settings)


def _broker(home: Path) -> Any:
    """The broker settings the stack profile uses in ``home``."""
    return apply_stack_state(Settings(profile="stack", home=home)).broker


def _kafka_record(home: Path) -> dict[str, Any]:
    return dict((read_state(Settings(profile="stack", home=home)) or {})["services"]["kafka"])


def _distinct(home: Path, table: str, column: str, prefix: str) -> int:
    with Lakehouse(Settings(profile="stack", home=home)) as lh:
        if not lh.catalog.table_exists(("bronze", table)):
            return 0
        sql = f"select count(distinct {column}) from bronze.{table} where {column} like '{prefix}%'"
        return int(lh.sql(sql).column(0)[0].as_py())


def _total(home: Path, table: str, column: str, prefix: str) -> int:
    with Lakehouse(Settings(profile="stack", home=home)) as lh:
        sql = f"select count(*) from bronze.{table} where {column} like '{prefix}%'"
        return int(lh.sql(sql).column(0)[0].as_py())


def _broker_env(home: Path, **overrides: str) -> dict[str, str]:
    """The stack's Kafka named explicitly in the environment (as an operator would), with
    ``overrides`` (a wrong password, another CA)."""
    broker = _broker(home)
    env = {
        **STACK,
        "LAKEHOUSE_BROKER__BOOTSTRAP": broker.bootstrap,
        "LAKEHOUSE_BROKER__SECURITY_PROTOCOL": "SASL_SSL",
        "LAKEHOUSE_BROKER__USERNAME": "lakehouse",
        "LAKEHOUSE_BROKER__PASSWORD": broker.password.get_secret_value(),
        "LAKEHOUSE_BROKER__CA_FILE": str(broker.ca_file),
    }
    return env | overrides


# --- on the stack's Apache Kafka ---------------------------------------------------------------


@on_the_cluster
def test_the_stack_profile_reaches_its_apache_kafka_over_sasl_ssl(kafka_home: Path) -> None:
    broker = _broker(kafka_home)
    record = _kafka_record(kafka_home)
    assert broker.bootstrap == record["endpoints"]["bootstrap"]
    assert (broker.security_protocol, broker.sasl_mechanism, broker.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "lakehouse",
    )
    assert str(broker.ca_file) == record["files"]["ca"]
    users = json.loads(Path(record["files"]["credentials"]).read_text())["users"]
    assert broker.password is not None and broker.password.get_secret_value() == users["lakehouse"]
    # set explicitly, the bootstrap wins: the stack's Kafka is not filled in around it
    explicit = apply_stack_state(
        Settings(profile="stack", home=kafka_home, broker=BrokerSettings(bootstrap="127.0.0.1:9"))
    ).broker
    assert (explicit.bootstrap, explicit.security_protocol, explicit.password) == (
        "127.0.0.1:9",
        "PLAINTEXT",
        None,
    )


@on_the_cluster
def test_produced_events_land_in_bronze_once_and_a_rerun_adds_nothing(kafka_home: Path) -> None:
    from kafka import KafkaAdminClient

    seed, prefix = 7101, "K7101"  # order ids K<seed><i>: this test's rows, whatever else the session wrote
    for topic in ("orders", "order_lines"):
        result = run_cli(
            "produce", "--topic", topic, "--count", "3000", "--seed", str(seed), home=kafka_home, env=STACK
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == f"published 3000 events to {topic}"
    first = sink_once(kafka_home, "orders", "order_lines", env=STACK, idle="3")
    assert first["rows"] == {"bronze.orders": 3000, "bronze.order_lines": 3000}
    assert first["dead_letters"] == {}
    again = sink_once(kafka_home, "orders", "order_lines", env=STACK, idle="2")
    assert again["rows"] == {}
    assert _distinct(kafka_home, "orders", "order_id", prefix) == _total(
        kafka_home, "orders", "order_id", prefix
    )
    assert _distinct(kafka_home, "orders", "order_id", prefix) == 3000
    assert _distinct(kafka_home, "order_lines", "order_id", prefix) == 3000
    # the events went through the stack's Apache Kafka, not a Tansu
    assert not (kafka_home / "state" / "broker.json").exists()
    admin = KafkaAdminClient(**client_config(_broker(kafka_home), client_id="test-admin"))
    try:
        assert {"orders", "order_lines"} <= set(admin.list_topics())
    finally:
        admin.close()


@on_the_cluster
@pytest.mark.parametrize("command", ["produce", "sink"])
def test_a_wrong_password_is_one_line_naming_the_refused_login(
    kafka_home: Path, tmp_path: Path, command: str
) -> None:
    wrong = "not-the-password-" + os.urandom(6).hex()
    env = _broker_env(kafka_home)
    if command == "produce":
        env["LAKEHOUSE_BROKER__PASSWORD"] = wrong
        args = ["produce", "--topic", "orders", "--count", "5"]
    else:  # the password from a secrets directory, as a Kubernetes secret mounts it
        del env["LAKEHOUSE_BROKER__PASSWORD"]
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "lakehouse_broker__password").write_text(wrong)
        env["LAKEHOUSE_SECRETS_DIR"] = str(secrets)
        args = ["sink", "run", "--topics", "orders", "--idle-exit", "2"]
    result = run_cli(*args, home=kafka_home, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refused the login of user 'lakehouse' with SCRAM-SHA-512" in lines[0]
    assert _broker(kafka_home).bootstrap in lines[0] and str(_broker(kafka_home).ca_file) in lines[0]
    assert "no Kafka broker answers" not in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert wrong not in result.stderr


@on_the_cluster
def test_an_untrusted_ca_is_one_line_naming_the_tls_handshake_and_the_ca_file(
    kafka_home: Path, tmp_path: Path
) -> None:
    other_ca, _, _ = ensure_local_tls(tmp_path / "other", common_name="not the stack")
    env = _broker_env(kafka_home, LAKEHOUSE_BROKER__CA_FILE=str(other_ca))
    result = run_cli("produce", "--topic", "orders", "--count", "5", home=kafka_home, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "answers but the TLS handshake failed" in lines[0] and str(other_ca) in lines[0]
    assert "Traceback" not in result.stderr


@on_the_cluster
def test_plaintext_to_the_stack_kafka_is_one_line_saying_it_expects_tls(kafka_home: Path) -> None:
    env = {**STACK, "LAKEHOUSE_BROKER__BOOTSTRAP": _broker(kafka_home).bootstrap}
    result = run_cli("produce", "--topic", "orders", "--count", "5", home=kafka_home, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer PLAINTEXT Kafka requests" in lines[0], result.stderr


@on_the_cluster
def test_the_password_is_in_no_log_and_no_output(
    kafka_home: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every client the platform builds (admin, producer, the sink's consumer and probes), with
    every logger at DEBUG (kafka-python logs a client's whole configuration there)."""
    settings = Settings(profile="stack", home=kafka_home)
    broker = _broker(kafka_home)
    password = broker.password.get_secret_value()
    caplog.set_level(logging.DEBUG)
    produce(broker, "returns", count=500, seed=7102)
    with Lakehouse(settings) as lh:
        sink = Sink(lh.catalog, broker, ["returns"], idle_exit=2.0, project=lh.project, settings=lh.settings)
        stats = sink.run()
    assert stats.summary()["rows"].get("bronze.returns", 0) >= 500
    # kafka-python did log its configuration, and the password was kept out of it
    dumps = [r.getMessage() for r in caplog.records if "with configuration" in r.getMessage()]
    assert dumps and all("'sasl_plain_password': '***'" in dump for dump in dumps)
    assert any(r.name.startswith("kafka.") and r.levelno == logging.DEBUG for r in caplog.records)
    assert password not in caplog.text
    assert all(password not in r.getMessage() and password not in repr(r.args) for r in caplog.records)
    printed = capfd.readouterr()
    assert password not in printed.out + printed.err
    # nor in anything the stack or the commands wrote but the 0600 credentials file
    record = _kafka_record(kafka_home)
    credentials = Path(record["files"]["credentials"])
    for path in kafka_home.rglob("*"):
        if path.is_file() and path != credentials and path.stat().st_size < 64 * 1024 * 1024:
            assert password.encode() not in path.read_bytes(), path
    shown = run_cli("settings", home=kafka_home, env=_broker_env(kafka_home))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["broker"]["password"] == "***" and password not in shown.stdout


# --- without a broker ---------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("profile", ["local", "stack", "cluster"])
@pytest.mark.parametrize(
    "bootstrap", ["kafka:9092", "10.0.0.7:9092", "127.0.0.1:9092,kafka-1.internal:9092", "[2001:db8::1]:9092"]
)
def test_plaintext_to_a_broker_off_loopback_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, profile: str, bootstrap: str
) -> None:
    monkeypatch.setenv("LAKEHOUSE_PROFILE", profile)
    monkeypatch.setenv("LAKEHOUSE_BROKER__BOOTSTRAP", bootstrap)
    with pytest.raises(ConfigurationError) as refused:
        Settings.load()
    message = str(refused.value)
    assert "\n" not in message and "PLAINTEXT is allowed only to a loopback broker" in message
    assert "LAKEHOUSE_BROKER__SECURITY_PROTOCOL=SASL_SSL" in message
    monkeypatch.setenv("LAKEHOUSE_BROKER__SECURITY_PROTOCOL", "SSL")
    assert Settings.load().broker.bootstrap == bootstrap  # over TLS it may be anywhere


@pytest.mark.unit
@pytest.mark.parametrize(
    "bootstrap", ["127.0.0.1:9092", "localhost:9092", "[::1]:9092", "127.0.0.2:1,localhost:2"]
)
def test_plaintext_to_loopback_is_allowed(bootstrap: str) -> None:
    config = client_config(bootstrap, client_id="t")
    assert config == {
        "bootstrap_servers": bootstrap,
        "client_id": "t",
        "security_protocol": "PLAINTEXT",
        "bootstrap_timeout_ms": config["bootstrap_timeout_ms"],
    }


@pytest.mark.unit
def test_sasl_ssl_without_a_user_or_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_BROKER__BOOTSTRAP", "kafka:9093")
    monkeypatch.setenv("LAKEHOUSE_BROKER__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LAKEHOUSE_BROKER__USERNAME", "lakehouse")
    with pytest.raises(
        ConfigurationError, match=r"SASL_SSL needs broker\.password: .*lakehouse_broker__password"
    ):
        Settings.load(profile="cluster")


@pytest.mark.unit
def test_the_broker_password_comes_from_a_secrets_file_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = "Kf9-from-a-secret-file-" + os.urandom(4).hex()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "lakehouse_broker__password").write_text(password)
    ca, _, _ = ensure_local_tls(tmp_path / "tls")
    monkeypatch.setenv("LAKEHOUSE_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("LAKEHOUSE_BROKER__BOOTSTRAP", "kafka-0.kafka:9093")
    monkeypatch.setenv("LAKEHOUSE_BROKER__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LAKEHOUSE_BROKER__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("LAKEHOUSE_BROKER__USERNAME", "lakehouse")
    monkeypatch.setenv("LAKEHOUSE_BROKER__CA_FILE", str(ca))
    settings = Settings.load(profile="cluster")
    assert settings.broker.password is not None and settings.broker.password.get_secret_value() == password
    assert password in settings.secret_values()
    shown = [json.dumps(settings.display()), repr(settings), str(settings), settings.model_dump_json()]
    assert all(password not in text for text in shown)
    assert settings.display()["broker"]["password"] == "***"
    config = client_config(settings.broker, client_id="t")
    assert config["sasl_plain_password"] == password and password not in repr(config)
    assert (config["sasl_mechanism"], config["sasl_plain_username"]) == ("SCRAM-SHA-256", "lakehouse")
    assert (config["ssl_cafile"], config["ssl_check_hostname"]) == (str(ca), True)


@pytest.mark.unit
def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    broker = BrokerSettings(bootstrap="kafka:9093", security_protocol="SSL", ca_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError, match=r"broker\.ca_file .*nope\.pem is not a file"):
        client_config(broker, client_id="t")


def _fake_stack(home: Path, *, alive: bool) -> Path:
    """A stack state naming a Kafka whose recorded process is this test's (or a dead one)."""
    settings = Settings(profile="stack", home=home)
    credentials = home / "stack" / "kafka" / "credentials.json"
    write_private(
        credentials,
        json.dumps({"mechanism": "SCRAM-SHA-512", "users": {"admin": "a" * 43, "lakehouse": "l" * 43}}),
    )
    kafka = {
        "name": "kafka",
        "pid": os.getpid(),
        "started": process_identity(os.getpid()) if alive else "another process",
        "log": str(home / "stack" / "kafka" / "kafka.log"),
        "endpoints": {"bootstrap": "127.0.0.1:39092"},
        "files": {"ca": str(home / "stack" / "tls" / "ca.pem"), "credentials": str(credentials)},
    }
    state = {
        "pid": os.getpid(),
        "started": process_identity(os.getpid()),
        "s3_endpoint": "http://127.0.0.1:1",
        "iceberg_uri": "http://127.0.0.1:2",
        "region": "us-east-1",
        "warehouse_bucket": "warehouse",
        "access_key_id": "LKTEST",
        "secret_access_key": "s" * 40,
        "services": {"kafka": kafka},
    }
    write_private(settings.state_dir / "stack.json", json.dumps(state))
    return credentials


@pytest.mark.unit
def test_the_stack_profile_takes_its_broker_from_the_running_stack_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    _fake_stack(home, alive=True)
    broker = apply_stack_state(
        Settings(profile="stack", home=home, broker=BrokerSettings(group="g", partitions=5))
    ).broker
    assert broker.bootstrap == "127.0.0.1:39092"
    assert (broker.security_protocol, broker.sasl_mechanism, broker.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "lakehouse",
    )
    assert broker.password is not None and broker.password.get_secret_value() == "l" * 43
    assert broker.ca_file == home / "stack" / "tls" / "ca.pem"
    assert (broker.group, broker.partitions) == ("g", 5)
    monkeypatch.setenv("LAKEHOUSE_BROKER__BOOTSTRAP", "127.0.0.1:19092")  # explicit: left as set
    explicit = apply_stack_state(Settings.load(profile="stack", home=home)).broker
    assert (explicit.bootstrap, explicit.security_protocol, explicit.password) == (
        "127.0.0.1:19092",
        "PLAINTEXT",
        None,
    )


@pytest.mark.unit
def test_without_a_running_stack_kafka_the_stack_profile_keeps_tansu(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _fake_stack(home, alive=False)
    settings = apply_stack_state(Settings(profile="stack", home=home))
    assert settings.broker.bootstrap is None and settings.broker.security_protocol == "PLAINTEXT"
    assert settings.catalog.uri == "http://127.0.0.1:2"  # the rest of the stack still applies


@pytest.mark.unit
def test_an_unreadable_stack_kafka_password_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _fake_stack(home, alive=True).write_text("{}")
    with pytest.raises(ConfigurationError, match=r"no password for lakehouse can be read there"):
        apply_stack_state(Settings(profile="stack", home=home))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sasl_broker(tmp_path: Path) -> Iterator[Any]:
    """SASL_SSL settings for a loopback port where nothing listens."""
    ca, _, _ = ensure_local_tls(tmp_path / "tls")
    yield BrokerSettings(
        bootstrap=f"127.0.0.1:{_closed_port()}",
        security_protocol="SASL_SSL",
        username="lakehouse",
        password=SecretStr("pw-" + os.urandom(12).hex()),
        ca_file=ca,
    )


@pytest.mark.unit
def test_kafka_python_never_logs_the_password(sasl_broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaTimeoutError

    password = sasl_broker.password.get_secret_value()
    caplog.set_level(logging.DEBUG)
    config = client_config(sasl_broker, client_id="t") | {"bootstrap_timeout_ms": 300}
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(**config)
    (dump,) = [r.getMessage() for r in caplog.records if "with configuration" in r.getMessage()]
    assert "'sasl_plain_password': '***'" in dump
    # formatted as text, not as a representation: the filter on kafka's loggers masks it
    for name in ("kafka", "kafka.net.connection", "kafka.admin.client"):
        logging.getLogger(name).debug("password %s, again %s", config["sasl_plain_password"], password)
    assert caplog.text.count("password ***, again ***") == 3
    assert password not in caplog.text
    assert all(password not in r.getMessage() and password not in repr(r.args) for r in caplog.records)


@pytest.mark.unit
def test_kafka_pythons_records_of_a_failed_connection_are_held_back(
    sasl_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: one error from the platform, none of kafka-python's retry lines."""
    from kafka import KafkaAdminClient

    caplog.set_level(logging.WARNING)
    config = client_config(sasl_broker, client_id="t") | {"bootstrap_timeout_ms": 300}
    with pytest.raises(BrokerUnreachable, match="no Kafka broker answers"), broker_errors(sasl_broker):
        KafkaAdminClient(**config)
    assert [r for r in caplog.records if r.name.startswith("kafka.")] == []
    with pytest.raises(BrokerUnreachable, match="no Kafka broker answers"):
        require_broker(sasl_broker.bootstrap, within=0.3)
    with pytest.raises(BrokerUnreachable):
        ensure_topics(sasl_broker, ["orders"], 1)
