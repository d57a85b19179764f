"""The device registry: devices, one-time enrollment tokens and used assertion ids.

SQLAlchemy Core over any URL: SQLite under the platform's state locally, PostgreSQL in a cluster.
Enrollment tokens are stored as SHA-256 hashes only, and consumed with one conditional UPDATE,
so two devices racing with the same token cannot both enroll.

Every path that issues a token or enrolls a device (the CLI, the gateway, Python callers) goes
through here, so the checks live here: the store must be in the reference data, the device
name must be printable text, the public key must be one a private key stands behind.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lakehouse.errors import EnrollmentRefused, InvalidEnrollment, RegistryError, WeakDeviceKey

from ._device_keys import check_device_key
from ._text import shown

STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


UNIT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


MAX_NAME = 128


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


registered_units = sa.Table(  # refrigeration units not (yet) in the reference data, registered for a store
    "units",
    metadata,
    sa.Column("unit_id", sa.String(64), primary_key=True),
    sa.Column("store_id", sa.String(32), nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
)


assertion_ids = sa.Table(
    "assertion_ids",
    metadata,
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


class Reference(Protocol):
    """What the registry asks of the reference data (``Ownership`` answers it)."""

    def check_store(self, store_id: str) -> None: ...

    def owner_of(self, unit: str) -> str | None: ...


def check_name(name: str | None) -> None:
    """A device name is shown to operators: printable text only, at most 128 characters."""
    if name is None:
        return
    for position, char in enumerate(name[: MAX_NAME + 1]):
        if not (char.isprintable() or char == " "):
            raise InvalidEnrollment(
                f"name: character U+{ord(char):04X} at position {position} is not printable "
                "(control and invisible characters are refused)"
            )
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidEnrollment(f"name must be 1 to {MAX_NAME} printable characters, not only spaces")


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
    def __init__(self, url: str, *, reference: Reference):
        self.reference = reference
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("pragma journal_mode=wal")
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise unless the database answers a query now (the gateway's readiness)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("select 1")

    def check_store(self, store_id: str) -> None:
        self.reference.check_store(store_id)  # first: an unknown store is named with the closest one
        if not STORE_ID.fullmatch(store_id):
            raise InvalidEnrollment(f"store id {shown(store_id)} must be 1-32 letters, digits, '-' or '_'")

    def issue_enrollment_token(
        self, store_id: str, ttl: float, *, units: Iterable[str] = ()
    ) -> tuple[str, float]:
        """A one-time token for one device of ``store_id``, a store of the reference data; only
        its hash is kept. ``units``: units of the store the reference data does not list yet."""
        self.check_store(store_id)
        wanted = self._check_units(store_id, units)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            for unit in wanted:
                conn.execute(
                    registered_units.insert().values(unit_id=unit, store_id=store_id, registered_at=now)
                )
            conn.execute(
                enrollment_tokens.insert().values(
                    token_hash=_hash(token), store_id=store_id, created_at=now, expires_at=now + ttl
                )
            )
        return token, now + ttl

    def _check_units(self, store_id: str, wanted: Iterable[str]) -> list[str]:
        """The units to register (those not registered yet); refuses another store's units."""
        known = self.units()
        fresh = []
        for unit in dict.fromkeys(wanted):
            if not UNIT_ID.fullmatch(unit):
                raise InvalidEnrollment(f"unit id {shown(unit)} must be 1-64 letters, digits, '-_.:'")
            owner = self.reference.owner_of(unit) or known.get(unit)
            if owner is not None and owner != store_id:
                raise InvalidEnrollment(f"unit {unit} belongs to store {owner}, not to {store_id}")
            if owner is None:
                fresh.append(unit)
        return fresh

    def units(self) -> dict[str, str]:
        """Units registered here (unit -> store)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(registered_units.c.unit_id, registered_units.c.store_id)).all()
        return {r.unit_id: r.store_id for r in rows}

    def enroll(self, token: str, public_key: bytes, name: str | None) -> Device:
        """Consume ``token`` and register a device with ``public_key`` in one transaction.
        The name and key are checked first, so a refused one does not spend the token."""
        check_name(name)
        try:
            check_device_key(public_key)
        except WeakDeviceKey as exc:
            raise InvalidEnrollment(str(exc)) from exc
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
                raise EnrollmentRefused("the enrollment token is unknown, expired or already used")
            self.reference.check_store(row.store_id)  # the store may have left the reference data
            device = Device(device_id, row.store_id, name, "active", public_key, now, None)
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
