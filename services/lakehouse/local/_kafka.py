"""Apache Kafka of the ``stack`` profile: one KRaft node (broker and controller) on loopback,
reached over SASL_SSL with SCRAM-SHA-512 only, authorization by ACLs.

``start_kafka(root, layout=, tls=)`` runs the locked ``kafka.Kafka`` on the JDK ``find_java``
picks, in a session of its own (``_service.launch``), and returns its ``Running`` record:

- ``endpoints``: ``{"bootstrap": "127.0.0.1:P"}``;
- ``files``: ``{"ca": <the CA's PEM, to verify the broker>, "credentials": <credentials.json>}``.

``kafka_client_config(running)`` turns the record into kafka-python keyword arguments
(``lakehouse`` by default; ``user="admin"`` for the super user).

Everything lives under ``root`` (0700):

- ``credentials.json`` (0600): ``{"mechanism": "SCRAM-SHA-512", "users": {"admin": <password>,
  "lakehouse": <password>}, "controller": <password>}``, generated with ``secrets`` at the
  first start and reused by every later one. ``admin`` is the broker's own super user,
  ``lakehouse`` the platform's clients (producer, sink); ``controller`` is ``admin``'s password
  on the controller listener.
- ``jaas.properties`` (0600): the listeners' ``sasl.jaas.config``, the only file the server
  reads a secret from: ``server.properties`` refers to it through Kafka's
  ``FileConfigProvider``, allowed to read under ``root`` only.
- ``keystore.pem`` (0600): the server's key and certificate (Kafka's PEM key store), from the
  ``tls`` files given; the CA file given is the trust store.
- ``server.properties``, ``log4j2.properties``: the settings, no secret in them.
- ``node.json`` (0600): the cluster id and the ports of the last good start, reused while free.
- ``data/``: the log, formatted once (the SCRAM users go into its bootstrap metadata); a
  restart reopens it.
- ``kafka.log``: the one log (the format step's output, then the server's stdout and stderr).
- ``tmp/``: the JVM's temporary directory (snappy and zstd unpack native code there).

Listeners, both on 127.0.0.1, both SASL_SSL, TLS 1.2 or 1.3 with AEAD suites only:

- ``BROKER`` (clients, and the broker's inter-broker connections, as ``admin``): SCRAM-SHA-512.
- ``CONTROLLER`` (the KRaft quorum, the broker's link to its controller, as ``admin``): PLAIN.
  Kafka bootstraps SCRAM for broker listeners (KIP-900): a controller would have to check
  SCRAM logins with credentials kept in the very metadata log it serves, so a controller
  catching up with its quorum could not log in. One combined node does start with SCRAM there
  (tried: its credentials are in its own bootstrap metadata), but that is outside what Kafka
  supports; PLAIN over TLS with a password of its own is.

Authorization: ``StandardAuthorizer``, ``super.users=User:admin``, nothing allowed without an
ACL. ``lakehouse`` gets ``LAKEHOUSE_ACLS`` (create, describe, read and write topics; read
consumer groups), created at every start through kafka-python's admin client as ``admin``
(idempotent); it cannot delete topics, alter configs, nor see or change ACLs.

No secret is ever on a command line or in the log: the format step's ``--add-scram`` arguments
go through a 0600 Java argument file (``java @file``: ``ps`` shows ``@file``), removed once
done, and the format tool's echo of the SCRAM verifiers (salt, stored and server keys) is kept
out of ``kafka.log``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakehouse.config import write_private
from lakehouse.errors import ServerError

from ._artifacts import INSTALL_HINT, Layout, find_java
from ._config import write_config
from ._process import free_port
from ._service import Running, launch, wait_ready

logger = logging.getLogger(__name__)


NAME = "kafka"


MECHANISM = "SCRAM-SHA-512"


ADMIN = "admin"


CLIENT_USER = "lakehouse"


STORAGE_TOOL = "kafka.tools.StorageTool"


JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",  # IPv4 sockets for 127.0.0.1, not IPv6 ones mapping it
)


LAKEHOUSE_ACLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("TOPIC", "*", ("CREATE", "DESCRIBE", "READ", "WRITE")),
    ("GROUP", "*", ("READ",)),
)
"""(resource type, literal name, operations) allowed to ``lakehouse``: what the producer
(create topics, write), the sink (read topics and offsets, its consumer group) and their
metadata requests (describe) need."""


LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# every configuration object dumps all its values at INFO (2,300 lines a start): server.properties says it
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


_VERIFIERS_ECHO = "Bootstrap metadata:"  # the format tool prints the SCRAM records (salt, keys)


# --- credentials and files ----------------------------------------------------------------------


def _password() -> str:
    return secrets.token_urlsafe(32)  # 256 bits of [A-Za-z0-9_-]: nothing to quote anywhere


def _credentials(root: Path) -> dict[str, Any]:
    """The passwords: generated at the first start, kept (0600) and reused after."""
    path = root / "credentials.json"
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    data = {
        "mechanism": MECHANISM,
        "users": {ADMIN: _password(), CLIENT_USER: _password()},
        "controller": _password(),
    }
    write_private(path, json.dumps(data, indent=2) + "\n")
    return data


def read_credentials(running: Running) -> dict[str, Any]:
    """The credentials file of a started Kafka (``running.files["credentials"]``)."""
    data: dict[str, Any] = json.loads(Path(running.files["credentials"]).read_text())
    return data


def _jaas(credentials: dict[str, Any]) -> str:
    admin, controller = credentials["users"][ADMIN], credentials["controller"]
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN}" password="{admin}";'
    )
    plain = (  # the controller checks user_admin; the broker and the quorum log in as admin
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{controller}" user_{ADMIN}="{controller}";'
    )
    return f"broker.scram={scram}\ncontroller.plain={plain}\n"


def _cluster_id() -> str:
    """A Kafka ``Uuid`` as ``StorageTool random-uuid`` prints one (URL-safe base64 of 16 random
    bytes, unpadded, not starting with ``-``, not a reserved id), without a JVM start for it."""
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-") and int.from_bytes(raw, "big") > 1:
            return text


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Java's server sockets do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _node(root: Path) -> dict[str, Any]:
    """Cluster id and ports: those of the last good start while they are free, else free ones
    (the single voter's endpoint may change between starts: the controller takes the new one).
    Recorded by ``_record_node`` once formatted and once started."""
    path = root / "node.json"
    node: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"cluster_id": _cluster_id()}
    taken: set[int] = set()
    for key in ("broker_port", "controller_port"):
        port = node.get(key)
        if not isinstance(port, int) or port in taken or not _bindable(port):
            port = free_port(taken)
        taken.add(port)
        node[key] = port
    return node


def _record_node(root: Path, node: dict[str, Any]) -> None:
    write_private(root / "node.json", json.dumps(node, indent=2) + "\n")


def _refuse_if_running(root: Path) -> None:
    """``ServerError`` if a Kafka holds the lock of ``root``'s storage (``data/.lock``, taken
    with ``fcntl`` as Java's ``FileChannel.tryLock`` does): nothing of it is rewritten then."""
    lock = root / "data" / ".lock"
    if not lock.exists():
        return
    with open(lock, "rb+") as stream:
        try:
            fcntl.lockf(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ServerError(
                f"a Kafka already runs on {root / 'data'} (its lock is held): stop it first "
                f"(`lakehouse stack stop`), or start this one in another directory"
            ) from exc
        fcntl.lockf(stream, fcntl.LOCK_UN)


SERVER_TEMPLATE = "kafka/server.properties"


def server_values(root: Path, node: dict[str, Any], ca: Path) -> dict[str, str]:
    """The values of the chart's ``kafka/server.properties`` template for the stack's single
    node on loopback (the chart's StatefulSet gives each pod its own)."""
    broker, controller = node["broker_port"], node["controller_port"]
    return {
        "node_id": "1",
        "controller_quorum": f"127.0.0.1:{controller}",
        "listen_host": "127.0.0.1",
        "advertised_host": "127.0.0.1",
        "broker_port": str(broker),
        "controller_port": str(controller),
        "secrets_dir": str(root),
        "keystore_pem": str(root / "keystore.pem"),
        "truststore_pem": str(ca),
        "log_dirs": str(root / "data"),
        "replication_factor": "1",
        "min_insync_replicas": "1",
        "internal_topic_partitions": "1",
        "threads": "2",
    }


def _write_files(
    root: Path, tls: tuple[Path, Path, Path], credentials: dict[str, Any], node: dict[str, Any]
) -> Path:
    ca, cert, key = tls
    write_private(root / "keystore.pem", key.read_text().rstrip() + "\n" + cert.read_text())
    write_private(root / "jaas.properties", _jaas(credentials))
    write_private(root / "log4j2.properties", LOG4J2)
    return write_config(root / "server.properties", SERVER_TEMPLATE, server_values(root, node, ca))


def _java(layout: Layout) -> str:
    if layout.java is None or not layout.classpath:
        raise ServerError(f"the kafka layout names no JVM classpath: {INSTALL_HINT}")
    return str(find_java(layout.java, purpose="kafka").java)


def _jvm_options(root: Path, layout: Layout) -> list[str]:
    return [
        *JVM_OPTIONS,
        f"-Djava.io.tmpdir={root / 'tmp'}",
        f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
        "-cp",
        os.pathsep.join(str(path) for path in layout.classpath),
    ]


def _environment(root: Path) -> dict[str, str]:
    """The server's whole environment: none of the caller's JAVA_TOOL_OPTIONS, KAFKA_* or
    LAKEHOUSE_* variables reach it."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "TMPDIR": str(root / "tmp"),
    }


def _argfile_line(arg: str) -> str:
    """One argument of a Java argument file: quoted, ``\\`` and ``"`` escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


def _format(
    root: Path,
    layout: Layout,
    properties: Path,
    node: dict[str, Any],
    credentials: dict[str, Any],
    timeout: float,
) -> None:
    """Format the storage, the SCRAM users in its bootstrap metadata. The arguments are read by
    the ``java`` launcher from a 0600 argument file, so no password is on the command line; the
    tool's output reaches ``kafka.log`` without its echo of the SCRAM verifiers."""
    argfile, output = root / "format.args", root / "format.out"
    args = [
        *_jvm_options(root, layout),
        STORAGE_TOOL,
        "format",
        "--standalone",
        "--cluster-id",
        node["cluster_id"],
        "--config",
        str(properties),
    ]
    for user, password in credentials["users"].items():
        args += ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]
    write_private(argfile, "".join(_argfile_line(arg) for arg in args))
    output.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        launched = launch(
            f"{NAME} storage format",
            [_java(layout), f"@{argfile}"],
            cwd=root,
            log=output,
            env=_environment(root),
        )
        try:
            code: int | None = launched.process.wait(timeout=timeout)
        except BaseException:
            launched.stop()
            raise
    finally:
        argfile.unlink(missing_ok=True)
        lines = output.read_text(errors="replace").splitlines(keepends=True) if output.exists() else []
        output.unlink(missing_ok=True)
        with open(root / "kafka.log", "a") as log:
            log.writelines(line for line in lines if not line.startswith(_VERIFIERS_ECHO))
    if code != 0:
        shown = [line.rstrip() for line in lines if line.strip() and not line.startswith(_VERIFIERS_ECHO)]
        tail = "".join(f"\n  {line}" for line in shown[-20:])
        raise ServerError(
            f"formatting Kafka's storage in {root / 'data'} failed (exit {code}); "
            f"its output, also in {root / 'kafka.log'}:{tail}"
        )
    logger.info(
        "Kafka storage formatted in %.1fs (cluster %s)", time.monotonic() - started, node["cluster_id"]
    )


# --- clients ------------------------------------------------------------------------------------


def _client_config(bootstrap: str, ca: str, credentials: dict[str, Any], user: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": credentials["mechanism"],
        "sasl_plain_username": user,
        "sasl_plain_password": credentials["users"][user],
        "ssl_cafile": ca,
        "ssl_check_hostname": True,
    }


def kafka_client_config(running: Running, *, user: str = CLIENT_USER) -> dict[str, Any]:
    """kafka-python keyword arguments (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``)
    to reach a started Kafka as ``user``: SASL_SSL, SCRAM-SHA-512, the stack's CA verified and
    the broker's name checked against its certificate (kafka-python: TLS 1.2 at least)."""
    credentials = read_credentials(running)
    if user not in credentials["users"]:
        raise ServerError(f"Kafka has no user {user!r}: it knows {', '.join(sorted(credentials['users']))}")
    return _client_config(running.endpoints["bootstrap"], running.files["ca"], credentials, user)


def _admin(config: dict[str, Any], *, timeout_ms: int = 10_000) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        **config, client_id="lakehouse-stack", request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
    )


def _lists_topics(config: dict[str, Any]) -> Callable[[], bool]:
    host, _, port = config["bootstrap_servers"].rpartition(":")

    def ready() -> bool:
        socket.create_connection((host, int(port)), timeout=1).close()  # quietly, until it listens
        admin = _admin(config, timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()
        return True

    return ready


def client_acls(user: str = CLIENT_USER) -> list[Any]:
    """``LAKEHOUSE_ACLS`` for ``user`` as kafka-python ``ACL`` objects."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return [
        ACL(
            principal=f"User:{user}",
            host="*",
            operation=ACLOperation[operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(ResourceType[kind], name, ACLResourcePatternType.LITERAL),
        )
        for kind, name, operations in LAKEHOUSE_ACLS
        for operation in operations
    ]


def _grant(admin_config: dict[str, Any], user: str, deadline: float) -> None:
    """Create ``user``'s ACLs (Kafka keeps one of each) and wait until the broker enforces them
    (its authorizer lists them), so a client started next is not refused."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import KafkaError

    wanted = client_acls(user)
    admin = _admin(admin_config)
    try:
        result = admin.create_acls(wanted)
        if result["failed"]:
            raise ServerError(f"Kafka refused {user}'s ACLs: {result['failed']}")
        every = ACLFilter(
            principal=f"User:{user}",
            host="*",
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
        )
        while True:
            found, error = admin.describe_acls(every)
            if set(wanted) <= set(found):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"Kafka did not list {user}'s ACLs in time (it lists {found}; {error})")
            time.sleep(0.1)
    except KafkaError as exc:
        raise ServerError(f"Kafka did not take {user}'s ACLs: {exc}") from exc
    finally:
        admin.close()


def _causes(log: Path, since: int, *, most: int = 6) -> str:
    """The errors of a start's log (``ERROR`` lines and each ``Caused by:``), which a Java stack
    trace pushes out of the log's last lines: one line each, at most ``most``."""
    try:
        with open(log, "rb") as stream:
            stream.seek(since)
            lines = stream.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    found: list[str] = []
    for line in lines:
        text = line.strip()
        if (" ERROR " in text or text.startswith("Caused by: ")) and text not in found:
            found.append(text)
    return "".join(f"\n  why: {line}" for line in found[:most])


# --- start --------------------------------------------------------------------------------------


def start_kafka(
    root: Path, *, layout: Layout, tls: tuple[Path, Path, Path], timeout: float = 120.0
) -> Running:
    """Start Kafka in ``root`` (its own directory: formatting the storage on the first start,
    reopening it after) with the ``tls`` (CA, certificate, key) PEM files; return once ``admin``
    lists topics over SASL_SSL with the CA verified and ``lakehouse``'s ACLs are in force.

    ``ServerError`` naming what went wrong, with the end of ``kafka.log``, if the server exits
    while starting (a port or the data directory in use among the reasons) or is not ready
    within ``timeout`` seconds (it is stopped then)."""
    deadline = time.monotonic() + timeout
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    (root / "tmp").mkdir(mode=0o700, exist_ok=True)
    formatted = (root / "data" / "meta.properties").exists()
    if formatted and not (root / "credentials.json").exists():
        raise ServerError(
            f"Kafka's storage in {root / 'data'} was formatted with SCRAM credentials that are gone "
            f"({root / 'credentials.json'} is missing): remove {root} to start afresh (its topics go too)"
        )
    _refuse_if_running(root)
    credentials = _credentials(root)
    node = _node(root)
    properties = _write_files(root, tls, credentials, node)
    if not formatted:
        _format(root, layout, properties, node, credentials, max(1.0, deadline - time.monotonic()))
        _record_node(root, node)  # the cluster id of the storage, whatever happens next
    bootstrap = f"127.0.0.1:{node['broker_port']}"
    launched = launch(
        NAME,
        [_java(layout), *_jvm_options(root, layout), layout.main or "kafka.Kafka", str(properties)],
        cwd=root,
        log=root / "kafka.log",
        env=_environment(root),
    )
    admin = _client_config(bootstrap, str(tls[0]), credentials, ADMIN)
    try:
        try:
            wait_ready(
                launched,
                _lists_topics(admin),
                timeout=max(1.0, deadline - time.monotonic()),
                what=f"to answer SASL_SSL at {bootstrap}",
            )
        except ServerError as exc:
            head, last, tail = str(exc).partition("\nlast ")
            raise ServerError(
                head + _causes(root / "kafka.log", launched.since) + "\n" + last + tail
            ) from exc
        _grant(admin, CLIENT_USER, deadline)
        running = launched.running(
            {"bootstrap": bootstrap}, {"ca": str(tls[0]), "credentials": str(root / "credentials.json")}
        )
    except BaseException:
        launched.stop()
        raise
    _record_node(root, node)
    logger.info("Kafka started (pid %s) at %s", running.pid, bootstrap)
    return running
