"""Whether a Kafka broker answers at a bootstrap address, found out in seconds.

kafka-python keeps retrying an address where nothing listens for over half a minute before it
gives up with its own exception. Producers and sinks ask here first: a TCP connection to each
bootstrap address, retried briefly (a broker started a moment ago), then one line naming the
address and what to do.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

from lakehouse.errors import BrokerUnreachable

WITHIN_S = 2.0  # how long an address may take to answer before it is reported


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


@contextlib.contextmanager
def broker_errors(bootstrap: str) -> Iterator[None]:
    """Translate kafka-python's "cannot reach the cluster" errors into ``BrokerUnreachable``."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    try:
        yield
    except KafkaConnectionError as exc:
        raise unreachable(bootstrap, str(exc) or type(exc).__name__) from exc
    except KafkaTimeoutError as exc:
        if "bootstrap" not in str(exc).lower():
            raise
        raise unreachable(bootstrap, str(exc)) from exc
