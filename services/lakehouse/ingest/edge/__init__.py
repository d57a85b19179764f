"""The edge gateway: device enrollment, EdDSA device tokens, sealed batches into bronze.

``lakehouse gateway serve`` runs it (uvicorn, TLS only); ``lakehouse devices ...`` administers
the registry. State lives under ``<home>/state/gateway``: key sets, the SQLite registry (a
PostgreSQL URL in a cluster), the audit log and, locally, a private CA. Which stores exist and
which units they own comes from the catalog's reference tables (``Ownership``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.config import Project, Settings, project_of
from lakehouse.errors import (
    ConfigurationError,
    EnrollmentRefused,
    InvalidEnrollment,
    RegistryError,
    UnknownStore,
)

from ._audit import AuditLog
from ._keys import KeySet
from ._ownership import Ownership
from ._registry import Device, Registry
from ._text import escape

if TYPE_CHECKING:
    from fastapi import FastAPI


__all__ = [
    "AuditLog",
    "Device",
    "EnrollmentRefused",
    "InvalidEnrollment",
    "KeySet",
    "Ownership",
    "Registry",
    "RegistryError",
    "UnknownStore",
    "build_app",
    "escape",
    "issue_enrollment_token",
    "paths",
    "registry",
    "revoke_device",
    "rotate_gateway_keys",
    "serve",
]


class _Paths:
    def __init__(self, settings: Settings):
        root = settings.state_dir / "gateway"
        self.root = root
        self.signing_keys = root / "signing-keys.json"
        self.ingest_keys = root / "ingest-keys.json"
        self.audit = root / "audit.jsonl"
        self.registry = root / "devices.db"
        self.tls = root / "tls"


def paths(settings: Settings) -> _Paths:
    return _Paths(settings)


def registry(settings: Settings) -> Registry:
    """The device registry, checking stores and units against the catalog's reference data
    (read on first use: listing or revoking devices never opens the catalog)."""
    return _registry_and_ownership(settings)[0]


def _registry_and_ownership(settings: Settings) -> tuple[Registry, Ownership]:
    from lakehouse.catalog import load_catalog

    url = settings.gateway.registry_url
    ownership = Ownership(
        lambda: load_catalog(settings), settings.gateway, registered_units=lambda: reg.units()
    )
    reg = Registry(
        url.get_secret_value() if url else f"sqlite:///{paths(settings).registry}", reference=ownership
    )
    return reg, ownership


def signing_keys(settings: Settings) -> KeySet:
    g = settings.gateway
    return KeySet(paths(settings).signing_keys, "signing", retention=g.token_ttl + g.clock_skew)


def ingest_keys(settings: Settings) -> KeySet:
    return KeySet(paths(settings).ingest_keys, "ingest", retention=settings.gateway.ingest_key_retention)


def tls_files(settings: Settings) -> tuple[Path | None, Path, Path]:
    """(CA for agents or None, certificate, key): configured files, or a local CA's outside cluster."""
    g = settings.gateway
    if g.tls_cert_file and g.tls_key_file:
        return None, g.tls_cert_file, g.tls_key_file
    if settings.profile == "cluster":
        raise ConfigurationError("the cluster profile needs gateway.tls_cert_file and gateway.tls_key_file")
    from lakehouse.config import ensure_local_tls

    return ensure_local_tls(paths(settings).tls)


# --- operator actions: each one audited here, whoever calls it (the CLI, a script, a service) ---


def issue_enrollment_token(settings: Settings, store: str, units: Iterable[str] = ()) -> tuple[str, float]:
    """A one-time enrollment token for one device of ``store`` and its expiry (epoch seconds);
    issued and refused requests are both recorded in the gateway's audit log."""
    units = tuple(units)
    audit = AuditLog(paths(settings).audit)
    reg = registry(settings)
    try:
        token, expires = reg.issue_enrollment_token(
            store, settings.gateway.enrollment_ttl, units=tuple(units)
        )
    except RegistryError as exc:
        audit.record("enrollment-token", "rejected", store_id=store, reason=str(exc))
        raise
    finally:
        reg.close()
    audit.record("enrollment-token", "ok", store_id=store, reason=f"units {list(units)}" if units else None)
    return token, expires


def revoke_device(settings: Settings, device_id: str) -> Device:
    """Revoke a device (its tokens stop working on its next request), audited either way."""
    audit = AuditLog(paths(settings).audit)
    reg = registry(settings)
    try:
        device = reg.revoke(device_id)
    except RegistryError as exc:
        audit.record("revoke", "rejected", device_id=device_id, reason=str(exc))
        raise
    finally:
        reg.close()
    audit.record("revoke", "ok", device_id=device.device_id, store_id=device.store_id)
    return device


def rotate_gateway_keys(
    settings: Settings, *, signing: bool = True, ingest: bool = False
) -> list[tuple[str, str]]:
    """Add a new active signing and/or ingest key (a running gateway picks it up within a
    second); returns (kind, kid) per rotated key set, each rotation audited."""
    audit = AuditLog(paths(settings).audit)
    rotated: list[tuple[str, str]] = []
    for wanted, keyset in ((signing, signing_keys(settings)), (ingest, ingest_keys(settings))):
        if wanted:
            key = keyset.rotate()
            audit.record("rotate-keys", "ok", kid=key.kid, reason=f"{keyset.kind} key rotated")
            rotated.append((keyset.kind, key.kid))
    return rotated


def build_app(settings: Settings) -> FastAPI:
    from lakehouse.catalog import load_catalog

    from ._app import Gateway, create_app
    from ._land import Lander
    from ._limits import RateLimiter
    from ._metrics import GatewayMetrics
    from ._tokens import Tokens

    if settings.profile == "cluster" and settings.gateway.registry_url is None:
        raise ConfigurationError("the cluster profile needs gateway.registry_url (PostgreSQL)")
    g = settings.gateway
    project = project_of(settings)
    _check_schemas(g.schemas, project)
    reg, ownership = _registry_and_ownership(settings)
    keys = signing_keys(settings).ensure()
    metrics = GatewayMetrics()
    gateway = Gateway(
        settings=settings,
        registry=reg,
        tokens=Tokens(keys, reg, issuer=g.issuer, audience=g.audience, ttl=g.token_ttl, skew=g.clock_skew),
        ingest_keys=ingest_keys(settings).ensure(),
        lander=Lander(load_catalog(settings), project, linger=g.commit_interval, metrics=metrics),
        audit=AuditLog(paths(settings).audit),
        limiter=RateLimiter(g.rate_per_device, g.rate_burst),
        ownership=ownership,
        address_limiter=RateLimiter(g.rate_per_address, g.address_burst),
        metrics=metrics,
    )
    return create_app(gateway)


def _check_schemas(schemas: list[str], project: Project) -> None:
    """Every table devices may upload to is declared by the project's contracts."""
    from lakehouse.contracts import load_contracts

    undeclared = [s for s in schemas if s not in load_contracts(project)]
    if undeclared:
        raise ConfigurationError(
            f"gateway.schemas names {', '.join(undeclared)}, which the contracts of the project at "
            f"{project.root} do not declare: declare it in contracts/ or set LAKEHOUSE_GATEWAY__SCHEMAS"
        )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM: request heads bounded before they are parsed, read deadlines, TLS 1.3
    (or 1.2 with AEAD suites only), logs with control characters escaped."""
    import logging

    import uvicorn

    from ._server import log_config, protocol, tls_context

    g = settings.gateway
    ca, cert, key = tls_files(settings)
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=host or g.host,
        port=g.port if port is None else port,
        http=protocol(g, app.state.metrics),
        ws="none",
        ssl_context_factory=lambda _config, _default: tls_context(cert, key),
        log_config=log_config(),
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=g.idle_timeout,
        limit_concurrency=g.max_connections,
        proxy_headers=bool(g.trusted_proxies),  # else X-Forwarded-For from anyone would pick the client
        forwarded_allow_ips=g.trusted_proxies or None,
    )
    if ca is not None:
        logging.getLogger(__name__).info("local CA for agents: %s", ca)
    uvicorn.Server(config).run()
