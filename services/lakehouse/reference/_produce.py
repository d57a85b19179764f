"""The source simulator: the reference domain's operational events, published to Kafka topics.

Each event is JSON ``{"schema": "bronze.<table>", "version": N, "data": {...}}`` keyed by its
business key. Event ``i`` of a topic for a seed is always the same event with a unique key, so
``--count N`` is reproducible and a topic feeds the bronze table of the same name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from lakehouse.config import BrokerSettings, Project, environment_project

from ._domain import DAYS, START, domain_sizes, reference_contracts

logger = logging.getLogger(__name__)


TOPICS = ("orders", "order_lines", "shipments", "returns", "waste", "quality_inspections")


EVENT_SPACING_S = 20  # business time between consecutive events of a topic: a stream moves forward


def _when(rng: np.random.Generator, i: int) -> dt.datetime:
    """Event time: advancing through the reference period like a live stream (wrapping at its end),
    with a little jitter so events are not perfectly ordered."""
    seconds = (i * EVENT_SPACING_S + int(rng.integers(0, 120))) % (DAYS * 86400)
    return START + dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class _Ids:
    """Draws ids that exist in the reference domain of one scale (S001.., P0001.., C000001..)."""

    stores: int
    products: int
    customers: int

    @classmethod
    def at(cls, scale: float) -> _Ids:
        return cls(*domain_sizes(scale))

    def store(self, rng: np.random.Generator) -> str:
        return f"S{int(rng.integers(1, self.stores + 1)):03d}"

    def product(self, rng: np.random.Generator) -> str:
        return f"P{int(rng.integers(1, self.products + 1)):04d}"

    def customer(self, rng: np.random.Generator) -> str:
        return f"C{int(rng.integers(1, self.customers + 1)):06d}"


def _order_id(seed: int, i: int) -> str:
    return f"K{seed:04d}{i:09d}"


def _orders(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    oid = _order_id(seed, i)
    when = _when(np.random.default_rng([seed, i, 0]), i)  # the same time its order line uses
    customer = ids.customer(rng) if rng.random() < 0.88 else None
    store = ids.store(np.random.default_rng([seed, i, 1]))
    return oid, {
        "order_id": oid,
        "customer_id": customer,
        "store_id": store,
        "order_ts": when,
        "channel": "web" if rng.random() < 0.3 else "store",
        "promo_code": None,
        "ingested_at": when + dt.timedelta(seconds=2),
    }


def _order_lines(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    oid = _order_id(seed, i)
    when = _when(np.random.default_rng([seed, i, 0]), i)
    store = ids.store(np.random.default_rng([seed, i, 1]))
    return f"{oid}/1", {
        "order_id": oid,
        "line_number": 1,
        "store_id": store,
        "product_id": ids.product(rng),
        "quantity": int(1 + rng.poisson(0.6)),
        "unit_price": f"{rng.uniform(1, 20):.2f}",
        "discount_pct": "0.00",
        "ingested_at": when + dt.timedelta(seconds=2),
    }


def _shipments(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    key = f"KSH{seed:04d}{i:09d}"
    shipped = _when(rng, i) - dt.timedelta(hours=12)
    return key, {
        "shipment_id": key,
        "store_id": ids.store(rng),
        "product_id": ids.product(rng),
        "shipped_ts": shipped,
        "received_ts": shipped + dt.timedelta(hours=float(rng.uniform(6, 30))),
        "quantity": int(rng.integers(6, 48)),
        "carrier": "ColdFreight",
        "max_transit_temp_c": round(float(rng.uniform(-20, 6)), 2),
    }


def _returns(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    key = f"KRT{seed:04d}{i:09d}"
    return key, {
        "return_id": key,
        "order_id": _order_id(seed, i),
        "line_number": 1,
        "store_id": ids.store(rng),
        "product_id": ids.product(rng),
        "return_ts": _when(rng, i) + dt.timedelta(days=2),
        "quantity": 1,
        "reason_code": str(rng.choice(["DAMAGED", "CHANGED_MIND", "SPOILED"])),
    }


def _waste(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    key = f"KW{seed:04d}{i:09d}"
    return key, {
        "waste_id": key,
        "store_id": ids.store(rng),
        "product_id": ids.product(rng),
        "waste_date": _when(rng, i).date(),
        "quantity": int(1 + rng.poisson(2)),
        "reason_code": str(rng.choice(["EXPIRED", "DAMAGED", "TEMP_EXCURSION"])),
        "device_id": None,
    }


def _quality(rng: np.random.Generator, seed: int, i: int, ids: _Ids) -> tuple[str, dict[str, Any]]:
    key = f"KQI{seed:04d}{i:09d}"
    score = int(np.clip(rng.normal(88, 6), 0, 100))
    return key, {
        "inspection_id": key,
        "store_id": ids.store(rng),
        "product_id": ids.product(rng),
        "inspected_ts": _when(rng, i),
        "score": score,
        "passed": score >= 70,
        "inspector": "QA-stream",
    }


EVENTS: dict[str, Callable[[np.random.Generator, int, int, _Ids], tuple[str, dict[str, Any]]]] = {
    "orders": _orders,
    "order_lines": _order_lines,
    "shipments": _shipments,
    "returns": _returns,
    "waste": _waste,
    "quality_inspections": _quality,
}


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def event(
    topic: str, seed: int, i: int, scale: float = 1.0, project: Project | None = None
) -> tuple[bytes, bytes]:
    """Event ``i`` of ``topic`` for ``seed``: (key, value) as sent; ids exist at ``scale``; the
    envelope names the contract version of the reference ``project`` (default: the environment's)."""

    if topic not in EVENTS:
        raise ValueError(f"no simulator for topic {topic!r}; topics: {', '.join(EVENTS)}")
    key, data = EVENTS[topic](np.random.default_rng([seed, i, 2]), seed, i, _Ids.at(scale))
    contract = reference_contracts(project)[topic]
    envelope = {"schema": contract.identifier, "version": contract.version, "data": data}
    return key.encode(), orjson.dumps(envelope, default=_json_default)


def events(
    topic: str, seed: int, start: int = 0, scale: float = 1.0, project: Project | None = None
) -> Iterator[tuple[bytes, bytes]]:
    i, project = start, project or environment_project()  # resolved once, not per event
    while True:
        yield event(topic, seed, i, scale, project)
        i += 1


def ensure_topics(broker: str | BrokerSettings, topics: list[str], partitions: int) -> None:
    """Create the ``topics`` the broker does not have yet; ``BrokerUnreachable`` within seconds
    when no broker answers at its address, or it refuses the TLS handshake or the login.
    ``broker``: its settings, or a plain ``host:port`` of a PLAINTEXT broker on loopback."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from lakehouse.ingest.kafka import as_broker, broker_errors, client_config, require_broker

    broker = as_broker(broker)
    config = client_config(broker, client_id="lakehouse-admin")
    require_broker(config["bootstrap_servers"])
    with broker_errors(broker):
        admin = KafkaAdminClient(**config)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                admin.create_topics(new)
    finally:
        admin.close()


def produce(
    broker: str | BrokerSettings,
    topic: str,
    *,
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    seed: int = 42,
    start: int = 0,
    partitions: int = 3,
    scale: float = 1.0,
    project: Project | None = None,
) -> int:
    """Publish ``count`` events, or ``rate`` events/s for ``duration`` seconds; returns how many.
    ``BrokerUnreachable`` within seconds when no broker answers at its address, or it refuses
    the TLS handshake or the login. ``broker``: as ``ensure_topics``."""
    from kafka import KafkaProducer

    from lakehouse.ingest.kafka import as_broker, broker_errors, client_config

    if (count is None) == (rate is None):
        raise ValueError("give either count, or rate and duration")
    broker = as_broker(broker)
    ensure_topics(broker, [topic], partitions)
    with broker_errors(broker):
        producer = KafkaProducer(
            **client_config(broker, client_id="lakehouse-produce"),
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
        )
    sent = 0
    source = events(topic, seed, start, scale, project)
    try:
        if count is not None:
            for _ in range(count):
                key, value = next(source)
                producer.send(topic, key=key, value=value)
                sent += 1
        else:
            assert rate is not None and duration is not None
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < duration:
                due = int(rate * elapsed) + 1
                while sent < due:
                    key, value = next(source)
                    producer.send(topic, key=key, value=value)
                    sent += 1
                time.sleep(0.01)
        producer.flush()
    finally:
        producer.close()
    return sent
