"""How the platform's Kafka clients connect, and what it says when they cannot.

``client_config`` turns ``BrokerSettings`` into the keyword arguments of every kafka-python
client the platform builds (the sink's consumer and its probes, the producer, the admin client
creating topics): address, TLS with the broker's name checked against its certificate, SASL
user and password. No client is built without it.

kafka-python keeps retrying an address where nothing listens for over half a minute before it
gives up with its own exception. Producers and sinks ask here first (``require_broker``): a TCP
connection to each bootstrap address, retried briefly (a broker started a moment ago), then one
line naming the address and what to do. A broker that accepts the connection but refuses the
TLS handshake or the login also looks like a bootstrap timeout to kafka-python;
``broker_errors`` tells these apart and says which, in one line.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from lakehouse.config import BrokerSettings
from lakehouse.errors import BrokerUnreachable, ConfigurationError

from ._logs import Password, guard_kafka_logs, held_back

WITHIN_S = 2.0  # how long an address may take to answer before it is reported


# kafka-python's bootstrap: a broker that accepted the TCP connection (``require_broker``) but
# does not finish the handshake and login in this time refused them (its default waits 30 s)
BOOTSTRAP_TIMEOUT_MS = 10_000


def as_broker(broker: str | BrokerSettings) -> BrokerSettings:
    """``broker`` as settings: a plain ``host:port`` is a PLAINTEXT broker on loopback (Tansu)."""
    return broker if isinstance(broker, BrokerSettings) else BrokerSettings(bootstrap=broker)


def client_config(broker: str | BrokerSettings, *, client_id: str) -> dict[str, Any]:
    """The keyword arguments of a kafka-python client (``KafkaConsumer``, ``KafkaProducer``,
    ``KafkaAdminClient``) reaching ``broker`` as its settings say: PLAINTEXT (loopback only),
    SSL or SASL_SSL, the broker's certificate checked against ``ca_file`` (else the system's
    CAs) and its name against the certificate. The password is a ``Password`` (shown as
    ``'***'``) and kafka-python's loggers mask it (``guard_kafka_logs``).
    ``ConfigurationError`` when the settings cannot be used as they are."""
    broker = as_broker(broker)
    if not broker.bootstrap:
        raise ConfigurationError(
            "no broker address: set LAKEHOUSE_BROKER__BOOTSTRAP=host:port, or run `lakehouse broker start`"
        )
    broker.refuse_insecure()
    config: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "client_id": client_id,
        "security_protocol": broker.security_protocol,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    if broker.security_protocol in ("SSL", "SASL_SSL"):
        if broker.ca_file is not None and not broker.ca_file.is_file():
            raise ConfigurationError(
                f"broker.ca_file {broker.ca_file} is not a file: point LAKEHOUSE_BROKER__CA_FILE at "
                "the PEM of the CA that signed the broker's certificate"
            )
        config["ssl_cafile"] = str(broker.ca_file) if broker.ca_file is not None else None
        config["ssl_check_hostname"] = True
    secrets: list[str] = []
    if broker.security_protocol == "SASL_SSL":
        assert broker.password is not None  # refuse_insecure: SASL_SSL has a user and a password
        password = Password(broker.password.get_secret_value())
        secrets.append(password)
        config["sasl_mechanism"] = broker.sasl_mechanism
        config["sasl_plain_username"] = broker.username
        config["sasl_plain_password"] = password
    guard_kafka_logs(*secrets)
    return config


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    found = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise BrokerUnreachable(
                f"the bootstrap address {item.strip()!r} is not host:port "
                "(set LAKEHOUSE_BROKER__BOOTSTRAP=host:port, or run `lakehouse broker start`)",
                bootstrap=bootstrap,
            )
        found.append((host.strip("[]"), int(port)))
    return found


def unreachable(bootstrap: str, why: str) -> BrokerUnreachable:
    return BrokerUnreachable(
        f"no Kafka broker answers at {bootstrap} ({why}): start the local one with "
        "`lakehouse broker start`, or point LAKEHOUSE_BROKER__BOOTSTRAP at a running broker",
        bootstrap=bootstrap,
    )


def require_broker(
    bootstrap: str,
    *,
    within: float = WITHIN_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once one of the bootstrap addresses accepts a TCP connection; raise
    ``BrokerUnreachable`` if none does within ``within`` seconds."""
    addresses = _addresses(bootstrap)
    deadline = clock() + within
    why = "no answer"
    while True:
        for host, port in addresses:
            try:
                socket.create_connection((host, port), timeout=max(0.2, min(1.0, deadline - clock()))).close()
                return
            except OSError as exc:
                why = exc.strerror or type(exc).__name__
        if clock() >= deadline:
            raise unreachable(bootstrap, why.lower())
        sleep(0.2)


def _answers(bootstrap: str) -> bool:
    """Whether one of the bootstrap addresses accepts a TCP connection now."""
    for host, port in _addresses(bootstrap):
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
            return True
    return False


def _tls_refusal(broker: BrokerSettings) -> str | None:
    """Why a TLS handshake with the broker fails as kafka-python's would (TLS 1.2 at least,
    the CA file or the system's CAs, the name checked), or None when it succeeds."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    if broker.ca_file is not None:
        context.load_verify_locations(str(broker.ca_file))
    else:
        context.load_default_certs()
    why = "no answer"
    for host, port in _addresses(broker.bootstrap or ""):
        try:
            with (
                socket.create_connection((host, port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or exc.reason or str(exc)
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "reason", None) or exc.strerror or str(exc) or type(exc).__name__
    return str(why)


def refused(broker: BrokerSettings) -> BrokerUnreachable:
    """What to say when the broker accepts the connection but no client gets through: the TLS
    handshake failed (checked here, as kafka-python does it), else the login was refused, else
    (PLAINTEXT) it does not speak plain Kafka."""
    bootstrap = broker.bootstrap or ""
    ca = str(broker.ca_file) if broker.ca_file is not None else "the system's CAs"
    if broker.security_protocol == "PLAINTEXT":
        return BrokerUnreachable(
            f"the broker at {bootstrap} accepts connections but does not answer PLAINTEXT Kafka "
            "requests: if it expects TLS, set LAKEHOUSE_BROKER__SECURITY_PROTOCOL=SASL_SSL (or SSL) "
            "with its user, password and CA file",
            bootstrap=bootstrap,
        )
    why = _tls_refusal(broker)
    if why is not None:
        return BrokerUnreachable(
            f"the broker at {bootstrap} answers but the TLS handshake failed ({why}), checking its "
            f"certificate against {ca}: point LAKEHOUSE_BROKER__CA_FILE at the CA that signed it",
            bootstrap=bootstrap,
        )
    if broker.security_protocol == "SASL_SSL":
        return BrokerUnreachable(
            f"the broker at {bootstrap} answers (TLS checked against {ca}) but refused the login of "
            f"user {broker.username!r} with {broker.sasl_mechanism}: a wrong password or an unknown "
            "user; check LAKEHOUSE_BROKER__USERNAME and the password (LAKEHOUSE_BROKER__PASSWORD or "
            "the secrets file lakehouse_broker__password; the stack profile reads the stack's own)",
            bootstrap=bootstrap,
        )
    return BrokerUnreachable(
        f"the broker at {bootstrap} answers and its TLS certificate is trusted ({ca}), but it did "
        "not take a Kafka client over SSL: does it expect SASL_SSL (LAKEHOUSE_BROKER__SECURITY_PROTOCOL)?",
        bootstrap=bootstrap,
    )


@contextlib.contextmanager
def broker_errors(broker: str | BrokerSettings) -> Iterator[None]:
    """Translate kafka-python's "cannot reach the cluster" errors into ``BrokerUnreachable``:
    nothing listens (``unreachable``), or something listens but refuses the TLS handshake or the
    login (``refused``: it says which, naming the user, mechanism and CA file). kafka-python's
    own records of the attempt are held back meanwhile (``held_back``): one line, not a dozen."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    broker = as_broker(broker)
    bootstrap = broker.bootstrap or ""
    with held_back():
        try:
            yield
        except KafkaConnectionError as exc:
            raise unreachable(bootstrap, str(exc) or type(exc).__name__) from exc
        except KafkaTimeoutError as exc:
            if "bootstrap" not in str(exc).lower():
                raise
            if _answers(bootstrap):
                raise refused(broker) from exc
            raise unreachable(bootstrap, str(exc)) from exc
