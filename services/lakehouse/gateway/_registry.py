"""The device registry: devices, one-time enrollment tokens and used assertion ids.

SQLAlchemy Core over any URL: SQLite under the platform's state locally, PostgreSQL in a cluster.
Enrollment tokens are stored as SHA-256 hashes only, and consumed with one conditional UPDATE,
so two devices racing with the same token cannot both enroll.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import LakehouseError

STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
TOKEN_PREFIX = "lhe_"  # noqa: S105 (marks enrollment tokens so scanners can find leaked ones)

metadata = sa.MetaData()
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("store_id", sa.String(32), nullable=False),
    sa.Column("name", sa.String(128)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)
enrollment_tokens = sa.Table(
    "enrollment_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("store_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float),
    sa.Column("device_id", sa.String(64)),
)
assertion_ids = sa.Table(
    "assertion_ids",
    metadata,
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


class RegistryError(LakehouseError):
    """A registry operation was refused (unknown or used token, bad store id, unknown device)."""


@dataclass(frozen=True)
class Device:
    device_id: str
    store_id: str
    name: str | None
    status: str
    public_key: bytes
    enrolled_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.status == "active"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("pragma journal_mode=wal")
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def issue_enrollment_token(self, store_id: str, ttl: float) -> tuple[str, float]:
        """A one-time token for one device of ``store_id``; only its hash is kept."""
        if not STORE_ID.match(store_id):
            raise RegistryError(f"store id {store_id!r} must be 1-32 letters, digits, '-' or '_'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                enrollment_tokens.insert().values(
                    token_hash=_hash(token), store_id=store_id, created_at=now, expires_at=now + ttl
                )
            )
        return token, now + ttl

    def enroll(self, token: str, public_key: bytes, name: str | None) -> Device:
        """Consume ``token`` and register a device with ``public_key`` in one transaction."""
        now = time.time()
        hashed = _hash(token)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(enrollment_tokens.c.store_id).where(enrollment_tokens.c.token_hash == hashed)
            ).first()
            device_id = f"edge-{row.store_id if row else 'x'}-{secrets.token_hex(6)}"
            consumed = conn.execute(
                enrollment_tokens.update()
                .where(
                    enrollment_tokens.c.token_hash == hashed,
                    enrollment_tokens.c.used_at.is_(None),
                    enrollment_tokens.c.expires_at > now,
                )
                .values(used_at=now, device_id=device_id)
            )
            if row is None or consumed.rowcount != 1:
                raise RegistryError("the enrollment token is unknown, expired or already used")
            device = Device(
                device_id, row.store_id, (name or "")[:128] or None, "active", public_key, now, None
            )
            conn.execute(
                devices.insert().values(
                    device_id=device.device_id,
                    store_id=device.store_id,
                    name=device.name,
                    status=device.status,
                    public_key=device.public_key,
                    enrolled_at=device.enrolled_at,
                )
            )
        return device

    def device(self, device_id: str) -> Device | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(devices).where(devices.c.device_id == device_id)).first()
        return Device(**row._mapping) if row else None

    def devices(self) -> list[Device]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(devices).order_by(devices.c.enrolled_at)).all()
        return [Device(**r._mapping) for r in rows]

    def revoke(self, device_id: str) -> Device:
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.update()
                .where(devices.c.device_id == device_id, devices.c.status == "active")
                .values(status="revoked", revoked_at=time.time())
            )
        device = self.device(device_id)
        if device is None:
            raise RegistryError(f"no device {device_id!r}; `lakehouse devices list` shows them")
        if done.rowcount != 1:
            raise RegistryError(f"device {device_id} was already revoked")
        return device

    def use_assertion_id(self, jti: str, device_id: str, expires_at: float) -> bool:
        """Record a client assertion's jti; False if it was seen before (a replay)."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(assertion_ids.delete().where(assertion_ids.c.expires_at < now - 3600))
                conn.execute(
                    assertion_ids.insert().values(jti=jti, device_id=device_id, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True
