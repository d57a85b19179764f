"""The agent: enrollment, then collect -> seal -> queue on disk -> upload, exactly once.

Exactly once end to end: a batch gets its sequence number when it is sealed and queued, and
leaves the queue only when the gateway has answered that (device, seq) is in bronze, whether it
landed now or on an earlier try. A crash or power cut in between means one more upload of the
same batch, which the gateway recognises and does not land twice.

The gateway lands a batch only as the device's next seq and answers anything else 409 with the
seq it expects. The agent then never drops a batch silently:

- expected below the oldest queued batch: the seqs in between are not on the device any more
  (dropped from the full queue, or refused for good and kept in the rejected table). The agent
  declares them skipped (``/v1/batches/skip``, which leaves a record in ``bronze.dead_letters``,
  counted here as ``declared_skipped``) and uploads the batch again;
- expected above it: the gateway has used this seq, and those up to the expected one, for
  batches of an earlier state of this device (e.g. a restored SD card). Those queued batches
  cannot land under their seqs and cannot be re-sealed (the queue holds ciphertext only): they
  move to the rejected table, kept and logged as an error, and new batches are numbered from
  the expected seq on.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .client import GatewayClient
from .envelope import IngestKey, b64e, client_assertion, seal
from .errors import AgentError, GatewayRejected, GatewayUnavailable, QueueFull
from .queue import QueuedBatch, UploadQueue

logger = logging.getLogger("lakehouse_edge")

SCHEMA = "bronze.sensor_readings"
SCHEMA_VERSION = 1
TOKEN_REFRESH_MARGIN_S = 60


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class Identity:
    """What enrollment gave this device, kept in its state directory."""

    device_id: str
    store_id: str
    gateway: str
    ca_file: str | None
    assertion_audience: str
    ingest_key: IngestKey
    key: Ed25519PrivateKey

    @classmethod
    def load(cls, state_dir: Path) -> Identity:
        try:
            meta = json.loads((state_dir / "device.json").read_text())
            key = serialization.load_pem_private_key((state_dir / "device.key").read_bytes(), None)
        except FileNotFoundError as exc:
            raise AgentError(
                f"{state_dir} holds no enrolled device: run `lakehouse-edge enroll` first"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AgentError(f"{state_dir / 'device.key'} is not an Ed25519 key")
        return cls(
            device_id=meta["device_id"],
            store_id=meta["store_id"],
            gateway=meta["gateway"],
            ca_file=meta.get("ca_file"),
            assertion_audience=meta["assertion_audience"],
            ingest_key=IngestKey.from_json(meta["ingest_key"]),
            key=key,
        )

    def save(self, state_dir: Path) -> None:
        meta = {
            "device_id": self.device_id,
            "store_id": self.store_id,
            "gateway": self.gateway,
            "ca_file": self.ca_file,
            "assertion_audience": self.assertion_audience,
            "ingest_key": self.ingest_key.as_json(),
        }
        _write_private(state_dir / "device.json", json.dumps(meta, indent=2).encode())

    def client(self) -> GatewayClient:
        return GatewayClient(self.gateway, Path(self.ca_file) if self.ca_file else None)


def enroll(state_dir: Path, gateway: str, enrollment_token: str, ca_file: Path | None) -> Identity:
    """Make this device's Ed25519 key pair and register its public key with a one-time token.
    The private key never leaves the state directory."""
    if (state_dir / "device.json").exists():
        raise AgentError(f"{state_dir} is already enrolled; use a fresh state directory to enroll again")
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    client = GatewayClient(gateway, ca_file)
    try:
        answer = client.post_json(
            "/v1/devices/enroll",
            {"enrollment_token": enrollment_token, "public_key": b64e(public), "name": socket.gethostname()},
        )
    except GatewayRejected as exc:
        raise AgentError(f"enrollment refused: {exc}") from exc
    except GatewayUnavailable as exc:
        raise AgentError(
            f"enrollment failed, {exc}; check --gateway's host and port and that the gateway runs, "
            "then enroll again"
        ) from exc
    finally:
        client.close()
    _write_private(
        state_dir / "device.key",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    identity = Identity(
        device_id=answer["device_id"],
        store_id=answer["store_id"],
        gateway=gateway,
        ca_file=str(ca_file.resolve()) if ca_file else None,
        assertion_audience=answer["assertion_audience"],
        ingest_key=IngestKey.from_json(answer["ingest_key"]),
        key=key,
    )
    identity.save(state_dir)
    logger.info("enrolled as device %s for store %s", identity.device_id, identity.store_id)
    return identity


class Agent:
    def __init__(
        self,
        state_dir: Path,
        *,
        batch_size: int = 96,
        batch_seconds: float = 60.0,
        max_queue_bytes: int = 256 * 1024 * 1024,
        when_full: str = "drop-oldest",
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
    ):
        self.state_dir = state_dir
        self.identity = Identity.load(state_dir)
        self.queue = UploadQueue(state_dir / "queue.sqlite", max_bytes=max_queue_bytes, when_full=when_full)
        self.batch_size, self.batch_seconds = batch_size, batch_seconds
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.stop_event = threading.Event()
        self.source_done = threading.Event()
        self._queued = threading.Condition()
        self._numbering = threading.Lock()  # sealing takes the next seq; a 409 may move it on
        self._token: str | None = None
        self._token_expires = 0.0
        self._client = self.identity.client()
        self._collector_error: BaseException | None = None
        self.delivered_readings = 0

    # -- collecting ------------------------------------------------------------------------

    def seal_and_queue(self, readings: list[dict[str, Any]]) -> None:
        if not readings:
            return
        with self._numbering:
            seq = self.queue.next_seq()
            sealed = seal(
                readings,
                device_id=self.identity.device_id,
                seq=seq,
                schema=SCHEMA,
                schema_version=SCHEMA_VERSION,
                ingest_key=self.identity.ingest_key,
            )
            try:
                self.queue.put(seq, SCHEMA, len(readings), sealed)
            except QueueFull as exc:
                logger.warning("%s", exc)
        with self._queued:
            self._queued.notify_all()

    def collect(self, source: Iterator[dict[str, Any]]) -> None:
        """Read the source, sealing a batch every ``batch_size`` readings or ``batch_seconds``."""
        batch: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            for reading in source:
                reading.setdefault("store_id", self.identity.store_id)
                batch.append(reading)
                if len(batch) >= self.batch_size or time.monotonic() - started >= self.batch_seconds:
                    self.seal_and_queue(batch)
                    batch, started = [], time.monotonic()
                if self.stop_event.is_set():
                    break
        except BaseException as exc:  # a broken source: report it, keep what was read
            self._collector_error = exc
        finally:
            self.seal_and_queue(batch)
            self.source_done.set()
            with self._queued:
                self._queued.notify_all()

    # -- uploading -------------------------------------------------------------------------

    def _access_token(self) -> str:
        if self._token is None or time.time() > self._token_expires - TOKEN_REFRESH_MARGIN_S:
            assertion = client_assertion(
                self.identity.key,
                device_id=self.identity.device_id,
                audience=self.identity.assertion_audience,
            )
            answer = self._client.post_json(
                "/v1/token",
                {
                    "grant_type": "client_credentials",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": assertion,
                },
            )
            self._token, self._token_expires = (
                answer["access_token"],
                time.time() + float(answer["expires_in"]),
            )
            ingest = IngestKey.from_json(answer["ingest_key"])
            if ingest != self.identity.ingest_key:  # the platform rotated its ingest key
                logger.info("ingest key rotated to %s", ingest.kid)
                self.identity.ingest_key = ingest
                self.identity.save(self.state_dir)
            logger.info("access token refreshed (valid %ss)", answer["expires_in"])
        return self._token

    def upload_one(self) -> bool:
        """Upload the oldest queued batch. Returns False when the queue is empty."""
        batch = self.queue.peek()
        if batch is None:
            return False
        started = time.monotonic()
        try:
            status, answer = self._client.upload(batch.sealed, self._access_token())
        except GatewayRejected as exc:
            if exc.status == 401:  # expired or rotated away: a fresh token, then try again
                self._token = None
                raise GatewayUnavailable(f"token refused ({exc}); refreshing") from exc
            if exc.status == 403 and exc.problem.get("type", "").endswith("/device-revoked"):
                raise AgentError(f"this device was revoked: {exc.problem.get('detail')}") from exc
            if exc.status == 429:
                raise
            expected = exc.problem.get("expected_seq")
            if exc.status == 409 and isinstance(expected, int) and expected != batch.seq:
                self._out_of_order(batch, expected, exc)
                return True
            self.queue.reject(batch, exc.status, json.dumps(exc.problem))
            logger.error(
                "gateway rejected batch seq=%s for good, kept in the rejected table: %s", batch.seq, exc
            )
            return True
        self.queue.delivered(batch.seq)
        self.delivered_readings += batch.readings
        logger.info(
            "batch seq=%s readings=%s %s in %.0f ms",
            batch.seq,
            batch.readings,
            answer.get("status", status),
            1000 * (time.monotonic() - started),
        )
        return True

    def _out_of_order(self, batch: QueuedBatch, expected: int, exc: GatewayRejected) -> None:
        if expected < batch.seq:  # seqs expected..batch.seq-1 are no longer on this device
            last = batch.seq - 1
            reason = self.queue.missing_reason(expected, last)
            self._client.post_json(
                "/v1/batches/skip",
                {"schema": batch.schema, "from_seq": expected, "to_seq": last, "reason": reason},
                token=self._access_token(),
            )
            self.queue.count_skipped(last - expected + 1)
            logger.warning(
                "gateway expected seq %s, the oldest queued is %s: declared seqs %s-%s skipped (%s)",
                expected,
                batch.seq,
                expected,
                last,
                reason,
            )
            return
        with self._numbering:  # these seqs are used at the gateway: keep the batches, number anew
            moved = self.queue.renumber_from(expected, exc.status, json.dumps(exc.problem))
        logger.error(
            "gateway already used seqs up to %s (this device's state went back?): %s queued batch(es) "
            "from seq %s kept in the rejected table, new batches numbered from %s",
            expected - 1,
            moved,
            batch.seq,
            expected,
        )

    def run(self, source: Iterator[dict[str, Any]] | None, *, exit_when_drained: bool = False) -> None:
        """Collect in a thread and upload here until stopped (or, with ``exit_when_drained``,
        until the source has ended and every batch is delivered)."""
        if source is not None:
            threading.Thread(target=self.collect, args=(source,), daemon=True, name="collector").start()
        else:
            self.source_done.set()
        attempt = 0
        try:
            while not self.stop_event.is_set():
                try:
                    if self.upload_one():
                        attempt = 0
                        continue
                except (GatewayUnavailable, GatewayRejected) as exc:
                    delay = min(self.backoff_cap_s, self.backoff_base_s * 2**attempt) * random.random()
                    if isinstance(exc, GatewayRejected) and exc.retry_after:
                        delay = max(delay, exc.retry_after)
                    attempt = min(attempt + 1, 16)
                    logger.warning("upload deferred %.1fs: %s", delay, exc)
                    self.stop_event.wait(delay)
                    continue
                if exit_when_drained and self.source_done.is_set() and self.queue.peek() is None:
                    break
                with self._queued:
                    self._queued.wait(timeout=1.0)
        finally:
            self._client.close()
        if self._collector_error is not None:
            raise AgentError(f"the sensor source failed: {self._collector_error}") from self._collector_error

    def stop(self, *_: object) -> None:
        self.stop_event.set()
        with self._queued:
            self._queued.notify_all()
