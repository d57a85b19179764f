"""The stack profile's Apache Kafka, really run: one KRaft node on loopback that speaks SASL_SSL
with SCRAM-SHA-512 only, verifies as the stack's CA says, enforces ACLs, keeps its secrets off
command lines and out of its log, and keeps its messages and credentials across a restart.

One Kafka is started for the module in a temporary directory (with a loopback CA of its own)
and stopped by its record; the tests that stop it start it again when they are done. The
module is skipped until `lakehouse stack install` has put the Kafka artifacts in the cache."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakehouse.config import ensure_local_tls
from lakehouse.errors import ArtifactUnavailable, ServerError, ToolchainMissing
from lakehouse.local import find_java, group_members, layouts, listening_sockets
from lakehouse.local._kafka import LAKEHOUSE_ACLS, client_acls, kafka_client_config, start_kafka
from lakehouse.local._service import Running

try:
    LAYOUT = layouts()["kafka"]
    find_java(LAYOUT.java or 17, purpose="kafka")
except (ArtifactUnavailable, ToolchainMissing) as exc:
    pytest.skip(
        f"needs Apache Kafka from the artifact cache: run `lakehouse stack install` ({exc})",
        allow_module_level=True,
    )


pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.kafka, pytest.mark.slow]


# kafka-python retries a refused bootstrap until this runs out, then says "Unable to bootstrap"
REFUSED_WITHIN_MS = 3000


class _Kafka:
    """The module's Kafka: started in ``root``, restarted on demand after a test stopped it."""

    def __init__(self, root: Path, tls: tuple[Path, Path, Path]) -> None:
        self.root, self.tls = root, tls
        self.record: Running | None = None

    def start(self) -> Running:
        self.record = start_kafka(self.root, layout=LAYOUT, tls=self.tls)
        return self.record

    def running(self) -> Running:
        if self.record is None or not self.record.alive():
            return self.start()
        return self.record

    def stop(self) -> None:
        if self.record is not None:
            self.record.stop()
            self.record = None


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Kafka]:
    base = tmp_path_factory.mktemp("kafka")
    server = _Kafka(base / "stack" / "kafka", ensure_local_tls(base / "tls", common_name="lakehouse kafka"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _admin(config: dict[str, Any], **extra: Any) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**config, **extra)


def _create_topic(running: Running, topic: str, partitions: int = 1) -> None:
    admin = _admin(kafka_client_config(running))
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()


def _produce(config: dict[str, Any], topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**config, acks="all", client_id="test-producer")
    try:
        for value in values:
            producer.send(topic, key=value[-1:], value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _read_all(config: dict[str, Any], topic: str, expected: int, *, timeout: float = 60.0) -> list[bytes]:
    """Every message of ``topic`` from the start, without a consumer group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**config, enable_auto_commit=False, client_id="test-reader")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [record.value for record in records]
        return values
    finally:
        consumer.close()


def _end_offsets(config: dict[str, Any], topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**config, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def _bootstrap(running: Running) -> tuple[str, int]:
    host, _, port = running.endpoints["bootstrap"].rpartition(":")
    return host, int(port)


def _handshake(running: Running, context: ssl.SSLContext) -> tuple[str | None, str]:
    host, port = _bootstrap(running)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else ""


# --- over SASL_SSL, as lakehouse ------------------------------------------------------------------


def test_lakehouse_produces_and_consumes_over_sasl_ssl_with_the_ca_verified(kafka: _Kafka) -> None:
    from kafka import KafkaConsumer

    running = kafka.running()
    config = kafka_client_config(running)
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "lakehouse"
    assert config["ssl_cafile"] == str(kafka.tls[0]) and config["ssl_check_hostname"] is True
    _create_topic(running, "orders", partitions=2)
    sent = [f"order-{i}".encode() for i in range(12)]
    _produce(config, "orders", sent)
    consumer = KafkaConsumer(
        "orders",
        **config,
        group_id="lakehouse-sink",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id="test-sink",
    )
    try:
        received: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received += [record.value for record in records]
        consumer.commit()  # the group's offsets: what the sink's group ACL must allow
        committed = {tp: consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()
    assert sorted(received) == sorted(sent)
    assert sum(offset or 0 for offset in committed.values()) == len(sent)


@pytest.mark.parametrize(
    ("user", "password_of"),
    [("lakehouse", None), ("admin", "lakehouse"), ("lakehous", "lakehouse"), ("lakehouse", "admin")],
    ids=["wrong-password", "admin-with-lakehouse-password", "unknown-user", "lakehouse-with-admin-password"],
)
def test_a_wrong_password_is_refused_and_nothing_is_produced(
    kafka: _Kafka, caplog: pytest.LogCaptureFixture, user: str, password_of: str | None
) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    running = kafka.running()
    good = kafka_client_config(running)
    topic = f"guarded-{user}-{password_of}"
    _create_topic(running, topic)
    before = _end_offsets(good, topic)
    users = json.loads(Path(running.files["credentials"]).read_text())["users"]
    password = users[password_of] if password_of else good["sasl_plain_password"][:-1] + "x"
    bad = {**good, "sasl_plain_username": user, "sasl_plain_password": password}
    since = Path(running.log).stat().st_size
    caplog.set_level(logging.WARNING, logger="kafka")
    with pytest.raises(KafkaTimeoutError, match="bootstrap"):
        producer = KafkaProducer(
            **bad, bootstrap_timeout_ms=REFUSED_WITHIN_MS, max_block_ms=REFUSED_WITHIN_MS
        )
        try:
            producer.send(topic, b"must not arrive").get(timeout=5)
        finally:
            producer.close()
    # The broker's word: refused for the credentials. kafka-python sees it as an error response
    # (SaslAuthenticationFailedError) or, when the broker's close wins the race, a disconnect.
    with open(running.log, "rb") as log:
        log.seek(since)
        assert re.search(
            rb"Failed authentication with /127\.0\.0\.1 .*invalid credentials with SASL mechanism SCRAM-SHA-512",
            log.read(),
        )
    assert "CERTIFICATE_VERIFY_FAILED" not in caplog.text and "ECONNREFUSED" not in caplog.text
    assert _end_offsets(good, topic) == before


# --- what cannot talk to the port -------------------------------------------------------------------


def test_a_plaintext_client_cannot_talk_to_the_port(kafka: _Kafka) -> None:
    from kafka.errors import KafkaTimeoutError

    running = kafka.running()
    host, port = _bootstrap(running)
    # ApiVersions v0, correlation id 7, client "test": a broker speaking PLAINTEXT answers it
    body = struct.pack(">hhih", 18, 0, 7, 4) + b"test"
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(struct.pack(">i", len(body)) + body)
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert reply[:1] in (b"", b"\x15"), reply  # nothing, or a TLS alert record: never a Kafka answer
    assert struct.pack(">i", 7) not in reply[4:8]
    good = kafka_client_config(running)
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        extra = (
            {k: v for k, v in good.items() if k.startswith("sasl_")} if protocol == "SASL_PLAINTEXT" else {}
        )
        with pytest.raises(KafkaTimeoutError, match="bootstrap"):
            _admin(
                {"bootstrap_servers": running.endpoints["bootstrap"], "security_protocol": protocol, **extra},
                bootstrap_timeout_ms=REFUSED_WITHIN_MS,
            )


def test_a_client_that_does_not_trust_the_ca_cannot_connect(
    kafka: _Kafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kafka.errors import KafkaTimeoutError

    running = kafka.running()
    version, _ = _handshake(running, ssl.create_default_context(cafile=running.files["ca"]))
    assert version in ("TLSv1.2", "TLSv1.3")  # the stack's CA: trusted
    other_ca, _, _ = ensure_local_tls(tmp_path / "other")
    for context in (ssl.create_default_context(cafile=str(other_ca)), ssl.create_default_context()):
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(running, context)
    caplog.set_level(logging.WARNING, logger="kafka")
    with pytest.raises(KafkaTimeoutError, match="bootstrap"):
        _admin(
            {**kafka_client_config(running), "ssl_cafile": str(other_ca)},
            bootstrap_timeout_ms=REFUSED_WITHIN_MS,
        )
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_tls_is_1_2_or_newer_with_aead_suites_only(kafka: _Kafka) -> None:
    running = kafka.running()
    tls12 = ssl.create_default_context(cafile=running.files["ca"])
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = _handshake(running, tls12)
    assert version == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    cbc = ssl.create_default_context(cafile=running.files["ca"])
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")  # Java enables these by default
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        _handshake(running, cbc)


# --- authorization -----------------------------------------------------------------------------------


def _every_acl() -> Any:
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    return ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )


def _cluster_acl() -> Any:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    return ACL(
        principal="User:lakehouse",
        host="*",
        operation=ACLOperation.ALTER,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(ResourceType.CLUSTER, "kafka-cluster"),
    )


def test_lakehouse_cannot_do_what_its_acls_do_not_grant_while_admin_can(kafka: _Kafka) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

    running = kafka.running()
    _create_topic(running, "doomed")
    broker_setting = [ConfigResource(ConfigResourceType.BROKER, "1", {"log.cleaner.threads": "1"})]
    topic_setting = [ConfigResource(ConfigResourceType.TOPIC, "doomed", {"retention.ms": "3600000"})]
    lakehouse = _admin(kafka_client_config(running))
    admin = _admin(kafka_client_config(running, user="admin"))
    try:
        refused = lakehouse.alter_configs(broker_setting, raise_on_unknown=False)
        assert "ClusterAuthorizationFailed" in str(refused["broker"]["1"])
        refused = lakehouse.alter_configs(topic_setting, raise_on_unknown=False)
        assert "TopicAuthorizationFailed" in str(refused["topic"]["doomed"])
        created = lakehouse.create_acls([_cluster_acl()])
        assert not created["succeeded"] and created["failed"]
        with pytest.raises(ClusterAuthorizationFailedError):
            lakehouse.describe_acls(_every_acl())
        with pytest.raises(TopicAuthorizationFailedError):
            lakehouse.delete_topics(["doomed"])

        assert admin.alter_configs(broker_setting, raise_on_unknown=False) == {"broker": {"1": "OK"}}
        assert admin.alter_configs(topic_setting) == {"topic": {"doomed": "OK"}}
        acls, _ = admin.describe_acls(_every_acl())
        assert set(acls) == set(client_acls("lakehouse"))  # exactly what LAKEHOUSE_ACLS says
        assert len(acls) == sum(len(operations) for _, _, operations in LAKEHOUSE_ACLS)
        assert admin.create_acls([_cluster_acl()])["succeeded"]
        admin.delete_acls([_cluster_acl()])
        admin.delete_topics(["doomed"])
    finally:
        lakehouse.close()
        admin.close()


# --- secrets, sockets, processes -----------------------------------------------------------------------


def test_credentials_are_private_and_no_password_is_in_the_log_the_properties_or_the_command_line(
    kafka: _Kafka,
) -> None:
    running = kafka.running()
    root = Path(running.files["credentials"]).parent
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("credentials.json", "jaas.properties", "keystore.pem", "node.json"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    credentials = json.loads((root / "credentials.json").read_text())
    passwords = [*credentials["users"].values(), credentials["controller"]]
    assert len(set(passwords)) == 3 and all(len(p) >= 40 for p in passwords)
    jaas = (root / "jaas.properties").read_text()
    assert (
        credentials["users"]["admin"] in jaas and credentials["controller"] in jaas
    )  # the one that holds them
    assert f"${{file:{root / 'jaas.properties'}:" in (root / "server.properties").read_text()
    exposed = {
        "kafka.log": Path(running.log).read_bytes(),
        "cmdline": Path(f"/proc/{running.pid}/cmdline").read_bytes(),
        "environ": Path(f"/proc/{running.pid}/environ").read_bytes(),
        **{
            path.name: path.read_bytes()
            for path in root.glob("*.properties")
            if path.name != "jaas.properties"
        },
    }
    assert {"server.properties", "log4j2.properties"} <= set(exposed)
    for where, text in exposed.items():
        for password in passwords:
            assert password.encode() not in text, where
    assert b"storedKey" not in exposed["kafka.log"]  # the SCRAM verifiers the format tool echoes
    assert not (root / "format.args").exists()


def test_kafka_listens_on_loopback_only(kafka: _Kafka) -> None:
    running = kafka.running()
    listening = listening_sockets(running.pid)
    assert ("127.0.0.1", _bootstrap(running)[1]) in listening
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening


def test_a_second_start_in_a_root_whose_kafka_runs_is_refused_and_changes_nothing(kafka: _Kafka) -> None:
    running = kafka.running()
    root = Path(running.files["credentials"]).parent
    before = {
        path.name: path.read_bytes() for path in root.iterdir() if path.is_file() and path.name != "kafka.log"
    }
    with pytest.raises(
        ServerError, match=r"^a Kafka already runs on .*data \(its lock is held\): stop it first"
    ):
        start_kafka(root, layout=LAYOUT, tls=kafka.tls, timeout=60)
    assert {
        path.name: path.read_bytes() for path in root.iterdir() if path.is_file() and path.name != "kafka.log"
    } == before
    assert running.alive()


def test_a_server_that_exits_while_starting_is_named_with_its_log(kafka: _Kafka, tmp_path: Path) -> None:
    ca, cert, _ = kafka.tls
    broken_key = tmp_path / "broken.key"
    broken_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    root = tmp_path / "kafka"
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"^kafka exited with \d+ while starting") as refused:
        start_kafka(root, layout=LAYOUT, tls=(ca, cert, broken_key), timeout=90)
    assert time.monotonic() - started < 60  # reported when it exits, not at the timeout
    assert f"lines of {root / 'kafka.log'}:" in str(refused.value)
    assert (
        "why: Caused by: org.apache.kafka.common.errors.InvalidConfigurationException: Failed to load PEM SSL keystore"
        in str(refused.value)
    )
    assert not _bootstrap_listens(root)


def _bootstrap_listens(root: Path) -> bool:
    port = (
        json.loads((root / "node.json").read_text()).get("broker_port")
        if (root / "node.json").exists()
        else None
    )
    if port is None:
        return False
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_a_restart_keeps_the_messages_and_the_credentials(kafka: _Kafka) -> None:
    running = kafka.running()
    root = Path(running.files["credentials"]).parent
    config = kafka_client_config(running)
    _create_topic(running, "durable", partitions=2)
    sent = [f"kept-{i}".encode() for i in range(20)]
    _produce(config, "durable", sent)
    credentials = (root / "credentials.json").read_bytes()
    kafka.stop()
    again = kafka.start()
    assert again.pid != running.pid
    assert (root / "credentials.json").read_bytes() == credentials
    assert again.endpoints == running.endpoints  # the same port while it is free
    assert sorted(_read_all(kafka_client_config(again), "durable", len(sent))) == sorted(sent)
    admin = _admin(kafka_client_config(again, user="admin"))
    try:
        acls, _ = admin.describe_acls(_every_acl())
    finally:
        admin.close()
    assert len(acls) == len(client_acls("lakehouse"))  # granted again, not twice


def test_stop_leaves_no_process_of_the_group(kafka: _Kafka) -> None:
    running = kafka.running()
    assert group_members(running.pid)
    kafka.stop()
    assert not running.alive()
    assert group_members(running.pid) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(_bootstrap(running), timeout=5).close()
