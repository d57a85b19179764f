"""One typed settings object for the platform.

Every field can be set from the environment with the ``LAKEHOUSE_`` prefix and ``__`` for nested
keys (``LAKEHOUSE_CATALOG__URI``), or from files in a secrets directory (Kubernetes secrets).
Constructing ``Settings()`` does no I/O; profile defaults are derived, not read.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lakehouse.errors import ConfigurationError

Profile = Literal["local", "stack", "cluster"]


# Values that must never protect anything outside a developer's machine.
WEAK_SECRETS = frozenset({"", "admin", "password", "changeme", "minioadmin", "secret", "lakehouse"})


DEFAULT_SECRETS_DIR = Path("/var/run/secrets/lakehouse")


# --- secrets never printed ----------------------------------------------------------------------

MASK = "***"


_SENSITIVE_NAME = (  # names of settings, parameters and fields that hold secrets
    r"[\w.-]*(?:pass(?:word|wd|phrase)?|pwd|secret|token|credential|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|master[_-]?key|signature|authorization)[\w.-]*"
)


_SECRET_KEY = re.compile(rf"^{_SENSITIVE_NAME}$", re.IGNORECASE)


# name=value in a query string, a libpq DSN or a sentence; quoted values whole
_SECRET_PARAM = re.compile(
    rf"(?P<lead>^|[?&;,\s(])(?P<name>{_SENSITIVE_NAME})(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^&;#,\s)]*)",
    re.IGNORECASE,
)


_SCHEME = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//")  # a URL's start, or a scheme-less //


_USER = re.compile(r"[^:/?#@\s]*:")


def _mask_url_userinfo(text: str, *, whole: bool) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``. The password runs to the
    last ``@`` of the URL, so one with unencoded ``@ / ? # :`` is masked whole (when the ``@``
    is in the query instead, more is masked than needed: never less)."""
    out, at = [], 0
    for match in _SCHEME.finditer(text):
        if match.start() < at:
            continue
        start = match.end()
        end = (
            len(text) if whole else next((i for i in range(start, len(text)) if text[i].isspace()), len(text))
        )
        segment = text[start:end]
        user = _USER.match(segment)
        last_at = segment.rfind("@")
        if user is not None and last_at > user.end() - 1:
            out += [text[at:start], segment[: user.end()], MASK, segment[last_at:]]
            at = end
    out.append(text[at:])
    return "".join(out)


def mask_secrets(text: str, known: Iterable[str] = (), *, whole: bool = False) -> str:
    """``text`` with passwords in URLs, secret-named parameters (``?password=``, ``token=``)
    and the ``known`` secret values (also percent-decoded) replaced by ``***``. ``whole``: the
    text is one value (a setting), so a URL in it does not end at a space."""
    masked = _mask_url_userinfo(text, whole=whole)
    masked = _SECRET_PARAM.sub(lambda m: f"{m['lead']}{m['name']}{m['eq']}{MASK}", masked)
    for secret in sorted(
        {s for value in known if value for s in (value, unquote(value))}, key=len, reverse=True
    ):
        if len(secret) >= 4:
            masked = masked.replace(secret, MASK)
    return masked


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.match(key) and value:
            return MASK
        return mask_secrets(value, whole=True)
    return value


class MaskingFormatter(logging.Formatter):
    """Log lines with secrets masked (passwords in URLs, secret-named parameters)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_bytes(text: str) -> int:
    """``512MB``, ``2GiB``, ``1000`` -> bytes (DuckDB's units: KB = 1000, KiB = 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match[2].lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigurationError(f"{text!r} is not a size: use a number with B, KB, MB, GB, KiB, MiB or GiB")
    return int(float(match[1]) * _UNITS[unit])


def _url_passwords(value: str) -> list[str]:
    """The passwords a URL-like value carries (userinfo, secret-named parameters)."""
    found = []
    for match in _SCHEME.finditer(value):
        segment = value[match.end() :]
        user = _USER.match(segment)
        last_at = segment.rfind("@")
        if user is not None and last_at > user.end() - 1:
            found.append(segment[user.end() : last_at])
    found += [m["value"].strip("'\"") for m in _SECRET_PARAM.finditer(value)]
    return found


# settings the project directory replaced: silently ignoring one would load another project's tables
_RETIRED = {
    "LAKEHOUSE_CONTRACTS_FILE": "put the contract files in <project>/contracts/",
    "LAKEHOUSE_POLICIES_DIR": "put principals.yml and access.yml in <project>/policies/",
    "LAKEHOUSE_DBT_PROJECT_DIR": "put the dbt project in <project>/dbt/",
}


def _refuse_retired_settings() -> None:
    for name, instead in _RETIRED.items():
        if name in os.environ:
            raise ConfigurationError(
                f"{name} is no longer read: {instead} and set LAKEHOUSE_PROJECT_DIR to <project>"
            )


class CatalogSettings(BaseModel):
    """The Iceberg catalog: ``sql`` (SQLite or PostgreSQL URL) or ``rest`` (Nessie, SeaweedFS)."""

    type: Literal["sql", "rest"] | None = None
    name: str = "lakehouse"
    uri: str | None = None
    warehouse: str | None = None
    credential: SecretStr | None = None  # OAuth2 client credentials "id:secret" for REST
    oauth2_server_uri: str | None = None
    scope: str | None = None
    # Nessie's API v2 (http://host:port/api/v2), for branches (write-audit-publish); the stack
    # fills it in while its Nessie runs
    nessie_api: str | None = None


class StorageSettings(BaseModel):
    """The object store under the warehouse: local ``file`` or ``s3``."""

    type: Literal["file", "s3"] | None = None
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    bucket: str = "warehouse"
    path_style: bool = True
    # Server-side encryption every object must carry: none, AES256 (SSE-S3) or aws:kms (SSE-KMS).
    sse: Literal["none", "AES256", "aws:kms"] = "none"


class EngineSettings(BaseModel):
    """The SQL engine: embedded DuckDB, or Trino (the stack's when it runs, the cluster's)."""

    # unset: duckdb locally, trino in cluster; in the stack profile trino while the stack's Trino
    # runs (``apply_stack_state``), else duckdb
    type: Literal["duckdb", "trino"] | None = None
    threads: int = Field(default=2, ge=1)
    memory_limit: str = "4GB"
    # bounds of every policy-bound query (lakehouse sql --as, Lakehouse(user=...))
    query_timeout: float = Field(default=300.0, gt=0)  # seconds of wall time
    governed_memory_limit: str = "2GB"  # the user's session; nothing spills to disk
    max_result_rows: int = Field(default=1_000_000, ge=1)
    max_result_bytes: str = "512MB"
    governed_cache_bytes: str = "512MB"  # small granted tables kept in memory between queries
    # `lakehouse sql QUERY` (operator, local profile) answers through a warm query server it
    # starts on first use (a Unix socket in the home's state/), which exits after this idle time
    query_server: bool = True
    query_server_idle_seconds: float = Field(default=900.0, gt=0)

    @field_validator("max_result_bytes", "governed_cache_bytes", "governed_memory_limit")
    @classmethod
    def _a_size(cls, value: str) -> str:
        parse_bytes(value)  # refused when the settings load, not at the first query
        return value

    # Trino, always over HTTPS with a password: ``user`` authenticates; ``lakehouse sql --as X``
    # (or ``Lakehouse(user=X)``) for another X asks Trino to impersonate X, which the policy allows
    # operators only. The stack fills these in (its passwords file holds each user's password).
    trino_host: str = "trino"
    trino_port: int = 8443
    trino_catalog: str = "iceberg"
    # the same catalog on the Nessie branch dbt builds on before publishing (dbt.wap_branch)
    trino_wap_catalog: str = "iceberg_wap"
    trino_user: str | None = None
    trino_password: SecretStr | None = None  # secrets directory: lakehouse_engine__trino_password
    trino_ca_file: Path | None = None  # PEM of the CA Trino's certificate is checked against
    trino_passwords_file: Path | None = None  # the stack's 0600 json of user -> password


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BrokerSettings(BaseModel):
    """The Kafka-compatible broker: Tansu started by the platform locally, the stack's Apache
    Kafka (SASL_SSL, SCRAM-SHA-512: ``apply_stack_state`` fills these in from the running stack),
    Apache Kafka in cluster. Every client the platform builds (sink, producer, admin) takes its
    connection from here (``lakehouse.ingest.kafka.client_config``)."""

    # host:port[,host:port]; unset: the stack's Apache Kafka when it runs (stack profile), else
    # the broker `lakehouse broker start` recorded
    bootstrap: str | None = None
    group: str = "lakehouse-sink"
    partitions: int = Field(default=3, ge=1)
    # PLAINTEXT only to a loopback address (the local Tansu); a broker elsewhere is reached over TLS
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"  # SASL_SSL
    username: str | None = None  # SASL_SSL
    password: SecretStr | None = None  # SASL_SSL; from the secrets directory: lakehouse_broker__password
    ca_file: Path | None = (
        None  # PEM of the CA the broker's certificate is checked against; unset: the system's
    )

    @model_validator(mode="after")
    def _checked(self) -> BrokerSettings:
        self.refuse_insecure()
        return self

    def refuse_insecure(self) -> None:
        """``ConfigurationError`` (one line saying what to set) for PLAINTEXT to a broker not on
        loopback, and for SASL_SSL without a user and password."""
        if self.bootstrap and self.security_protocol == "PLAINTEXT":
            hosts = [item.strip().rpartition(":")[0] or item.strip() for item in self.bootstrap.split(",")]
            remote = [host for host in hosts if not _loopback(host)]
            if remote:
                raise ConfigurationError(
                    f"broker.security_protocol PLAINTEXT is allowed only to a loopback broker, not to "
                    f"{', '.join(remote)}: set LAKEHOUSE_BROKER__SECURITY_PROTOCOL=SASL_SSL (with "
                    "LAKEHOUSE_BROKER__USERNAME, the password and LAKEHOUSE_BROKER__CA_FILE) or SSL"
                )
        if self.security_protocol == "SASL_SSL" and (not self.username or not self.password):
            missing = " and ".join(
                name
                for name, value in (("broker.username", self.username), ("broker.password", self.password))
                if not value
            )
            raise ConfigurationError(
                f"broker.security_protocol SASL_SSL needs {missing}: set LAKEHOUSE_BROKER__USERNAME and "
                "LAKEHOUSE_BROKER__PASSWORD (or the secrets file lakehouse_broker__password)"
            )


class GatewaySettings(BaseModel):
    """The edge gateway: TLS, device registry, tokens, limits. Durations in seconds."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    # PEM files; unset in local/stack: a local CA and server certificate under state/gateway/tls
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # SQLAlchemy URL of the device registry; unset: SQLite under state/ (cluster: PostgreSQL, required)
    registry_url: SecretStr | None = None
    issuer: str = "lakehouse-gateway"
    audience: str = "lakehouse-ingest"
    token_ttl: int = Field(default=900, ge=30, le=3600)
    enrollment_ttl: int = Field(default=900, ge=60, le=7 * 86400)
    clock_skew: int = Field(default=60, ge=0, le=300)
    ingest_key_retention: int = Field(default=30 * 86400, ge=0)  # old ingest keys still open queued batches
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_decompressed_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_readings: int = Field(default=20_000, ge=1)
    rate_per_device: float = Field(default=10.0, gt=0)  # sustained requests/s per device
    rate_burst: int = Field(default=40, ge=1)
    commit_interval: float = Field(default=0.01, ge=0)  # group commit: extra wait for more batches
    # an upload waits this long for its commit, then is answered 503 (its retry lands it once);
    # /healthz reports unhealthy while any upload has waited longer
    land_timeout: float = Field(default=30.0, gt=0)
    schemas: list[str] = ["bronze.sensor_readings"]  # what devices may upload
    # which stores exist and which refrigeration units (readings' device_id) each one owns
    stores_table: str = "bronze.stores"
    stores_id_column: str = "store_id"
    units_table: str = "bronze.devices"
    units_id_column: str = "device_id"
    units_store_column: str = "store_id"
    reference_refresh: float = Field(default=5.0, ge=0)  # reference tables re-checked at most this often
    # bounds on what an unauthenticated client can make the gateway hold or parse
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # request line and headers together
    max_token_bytes: int = Field(default=4096, ge=256)  # the Authorization header
    max_json_bytes: int = Field(default=16 * 1024, ge=1024)  # enrollment and token requests
    max_json_depth: int = Field(default=8, ge=2, le=64)  # nesting of any JSON the gateway parses
    rate_per_address: float = Field(default=50.0, gt=0)  # requests/s per client address, before auth
    address_burst: int = Field(default=200, ge=1)
    trusted_proxies: list[str] = []  # addresses whose X-Forwarded-For names the client
    max_connections: int = Field(default=1024, ge=1)
    header_timeout: float = Field(default=10.0, gt=0)  # to receive a request's line and headers
    body_timeout: float = Field(default=30.0, gt=0)  # to receive a request's body
    idle_timeout: int = Field(default=5, ge=1)  # keep-alive: idle connections closed after this
    # Prometheus /metrics and /healthz over plain HTTP on a port of their own, never on the
    # devices' TLS port; unset: not served (the chart sets 9401 and host 0.0.0.0 in a pod)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # /healthz checks the registry database and the catalog at most this often (probes are cheap)
    health_interval: float = Field(default=5.0, gt=0)
    health_timeout: float = Field(default=5.0, gt=0)  # a registry or catalog slower than this: 503


class SinkSettings(BaseModel):
    """The Kafka sink as a service (``lakehouse sink run``)."""

    # Prometheus /metrics and /healthz over plain HTTP; unset: not served unless --metrics-port
    # is given (the chart sets 9400 and host 0.0.0.0 in a pod)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


class DbtSettings(BaseModel):
    """dbt as the platform runs it (``lakehouse dbt``, the demo's build)."""

    timeout: float = Field(default=3600.0, gt=0)  # seconds a dbt command may run before it is stopped
    # `lakehouse build`: the Nessie branch a build and its tests run on before it is merged into main
    wap_branch: str = Field(default="wap", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class KeysSettings(BaseModel):
    """Envelope encryption of personal data (the keystore of per-customer data keys)."""

    # base64 of 32 random bytes; unset in local/stack: a generated 0600 file under state/keys
    master_key: SecretStr | None = None
    keystore_file: Path | None = None  # default: <home>/state/keys/keystore.json


class Settings(BaseSettings):
    """Everything the platform is configured by. ``profile`` picks the defaults of the rest."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_",
        env_nested_delimiter="__",
        # a Kubernetes Secret mounts one file per key: lakehouse_keys__master_key, ...
        secrets_nested_delimiter="__",
        extra="ignore",
    )

    profile: Profile = "local"
    home: Path = Path(".lakehouse")
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    dbt: DbtSettings = Field(default_factory=DbtSettings)
    # the user's project: contracts/ (every *.yml), dbt/ and policies/; unset: the nearest
    # directory from the current one upwards holding contracts/*.yml (lakehouse.config.project)
    project_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # secret files may hold one nested value each (lakehouse_keys__master_key) or a JSON section
        return init_settings, env_settings, dotenv_settings, NestedSecretsSettingsSource(file_secret_settings)

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Settings from the environment, plus a secrets directory when one is mounted."""
        secrets_dir = Path(os.environ.get("LAKEHOUSE_SECRETS_DIR", DEFAULT_SECRETS_DIR))
        kwargs: dict[str, Any] = dict(overrides)
        if secrets_dir.is_dir():
            kwargs["_secrets_dir"] = secrets_dir
        return cls(**kwargs)

    @model_validator(mode="after")
    def _profile_defaults(self) -> Settings:
        _refuse_retired_settings()
        self.home = self.home.expanduser().absolute()
        if self.project_dir is not None:
            self.project_dir = self.project_dir.expanduser().absolute()
        defaults = {
            "local": ("sql", "file", "duckdb"),
            "stack": ("rest", "s3", None),  # the engine: see EngineSettings.type
            "cluster": ("rest", "s3", "trino"),
        }[self.profile]
        self.catalog.type = self.catalog.type or defaults[0]  # type: ignore[assignment]
        self.storage.type = self.storage.type or defaults[1]  # type: ignore[assignment]
        self.engine.type = self.engine.type or defaults[2]  # type: ignore[assignment]
        if self.profile == "local":
            if self.catalog.type == "sql" and not self.catalog.uri:
                self.catalog.uri = f"sqlite:///{self.home / 'catalog.db'}"
            if self.storage.type == "file" and not self.catalog.warehouse:
                self.catalog.warehouse = (self.home / "warehouse").as_uri()
        if self.profile == "stack" and self.storage.sse == "none":
            self.storage.sse = "AES256"
        if self.profile == "cluster":
            self.catalog.uri = self.catalog.uri or "http://nessie:19120/iceberg"
            self.catalog.nessie_api = self.catalog.nessie_api or "http://nessie:19120/api/v2"
            self.storage.sse = "aws:kms" if self.storage.sse == "none" else self.storage.sse
            self._refuse_weak_secrets()
        return self

    def _refuse_weak_secrets(self) -> None:
        for name, secret in (
            ("storage.secret_access_key", self.storage.secret_access_key),
            ("catalog.credential", self.catalog.credential),
            ("broker.password", self.broker.password),
        ):
            if secret is None:
                continue
            value = secret.get_secret_value()
            if value.lower() in WEAK_SECRETS or value.split(":")[-1].lower() in WEAK_SECRETS:
                raise ConfigurationError(
                    f"{name} is a well-known default; the {self.profile} profile refuses it. "
                    "Set a generated secret through the environment or the secrets directory."
                )

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds (for masking text that might quote one)."""
        found: list[str] = []

        def walk(model: BaseModel) -> None:
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, SecretStr):
                    found.append(value.get_secret_value())
                elif isinstance(value, BaseModel):
                    walk(value)
                elif isinstance(value, str) and _SECRET_KEY.match(name):
                    found.append(value)
                elif isinstance(value, str):
                    found.extend(_url_passwords(value))

        walk(self)
        return [f for f in found if f]

    def display(self) -> dict[str, Any]:
        """The settings as JSON-ready data with every secret masked: ``SecretStr`` fields,
        secret-named fields, passwords in URLs and secret query parameters."""
        dumped: dict[str, Any] = _masked(self.model_dump(mode="json"))
        return dumped

    def __repr__(self) -> str:
        return mask_secrets(super().__repr__(), self.secret_values())

    def __str__(self) -> str:
        return mask_secrets(super().__str__(), self.secret_values())

    @property
    def state_dir(self) -> Path:
        """Where the platform keeps its own runtime state (servers it started, caches)."""
        return self.home / "state"
