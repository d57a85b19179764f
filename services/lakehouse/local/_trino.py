"""Trino for the stack: one node (coordinator and worker) on loopback, HTTPS only, password
authentication, OPA access control, the ``iceberg`` catalog on a REST catalog with native S3.

Run without Trino's launcher (``java -cp '<home>/lib/*' io.trino.server.TrinoServer``, see
infra/ARTIFACTS.md), so the PID recorded is Trino's. Everything lives under the service's 0700
directory: ``etc/`` (the properties files), ``data/`` (the working directory: Trino's request
log), ``tmp/`` (the JVM's temporary files), ``passwords.json`` (0600: the generated password of
each user, for clients) and ``trino.log``.

Secrets never reach the command line or a properties file: the internal shared secret, the S3
keys and the catalog's OAuth2 credential are referenced as ``${ENV:NAME}`` and handed over in
the process's environment (which only the same user can read, like the 0600 files). The files
that must hold secret material are 0600: the password hashes (PBKDF2), the HTTPS key store
(server key + certificate) and, from OPA, the client key Trino presents to OPA.

Besides Trino's own plugins the node loads ``trino-pii`` (built from ``services/trino-pii`` by
``lakehouse stack install``): ``pii_decrypt``, the column mask the compiled policy gives users
cleared to see personal data. It reads the platform's keystore and master key from the files
named by ``LAKEHOUSE_KEYSTORE_FILE`` and ``LAKEHOUSE_MASTER_KEY_FILE`` in Trino's environment,
and decrypts only for the session users listed in ``LAKEHOUSE_PII_READERS_FILE`` (the compiled
policy's ``trino/pii_readers.json``): Trino checks no access on a plugin's functions, so without
that list anyone holding a ciphertext could call it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import ssl
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.config import TRINO_OPERATOR, write_private
from lakehouse.errors import ServerError

from ._artifacts import INSTALL_HINT, Layout, find_java
from ._config import render_config, write_config
from ._process import free_port
from ._service import Launched, Running, launch, wait_ready

logger = logging.getLogger(__name__)


CATALOG = "iceberg"  # the catalog the compiled policy names (`lakehouse policy compile --catalog`)


ADMIN = TRINO_OPERATOR  # the operator account, next to the users of the policy


# The plugins this node loads, linked from the Trino home (fewer plugins, faster start).
PLUGINS = ("iceberg", "opa", "password-authenticators")


# Trino's file authenticator checks PBKDF2WithHmacSHA1 (``iterations:salt:hash``, hex) or
# bcrypt; the venv has no bcrypt, hashlib has PBKDF2. The passwords are 32 random bytes, so
# the iteration count does not carry their strength: it bounds the CPU each unknown password
# costs Trino (which caches the outcome per user and password).
PBKDF2_ITERATIONS = 100_000


# JVM flags of Trino's own jvm.config, sized for a 2-core machine shared with other servers.
JVM_FLAGS = (
    "-Xmx1G",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:+UseG1GC",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-XX:+EnableDynamicAgentLoading",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "--enable-native-access=ALL-UNNAMED",  # JNA and Trino's native code, without Java 25's warning
)


ENV_SHARED_SECRET = "TRINO_INTERNAL_SHARED_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_S3_ACCESS_KEY = "TRINO_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "TRINO_S3_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
ENV_CATALOG_CREDENTIAL = "TRINO_ICEBERG_OAUTH2_CREDENTIAL"


ENV_KEYSTORE_FILE = "LAKEHOUSE_KEYSTORE_FILE"  # read by the trino-pii plugin's pii_decrypt


ENV_MASTER_KEY_FILE = "LAKEHOUSE_MASTER_KEY_FILE"  # a file holding the base64 master key


ENV_PII_READERS_FILE = "LAKEHOUSE_PII_READERS_FILE"  # who pii_decrypt decrypts for (a JSON list)


@dataclass(frozen=True)
class PiiFiles:
    """What the trino-pii plugin's ``pii_decrypt`` reads: the keystore JSON, the file holding the
    base64 master key, and the compiled policy's list of users it decrypts for
    (``governance.pii_readers``). Paths, not secrets: the key files are 0600."""

    keystore: Path
    master_key: Path
    readers: Path

    def environment(self) -> dict[str, str]:
        return {
            ENV_KEYSTORE_FILE: str(self.keystore),
            ENV_MASTER_KEY_FILE: str(self.master_key),
            ENV_PII_READERS_FILE: str(self.readers),
        }


_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _private(path: Path, text: str) -> None:
    """``write_private`` into a new file: one left with a wider mode is replaced, not reused."""
    path.unlink(missing_ok=True)
    write_private(path, text)


def _properties(values: Mapping[str, str]) -> str:
    """A Java properties file; a value Java would read differently (a line break, a backslash
    escape) is refused rather than written."""
    for key, value in values.items():
        if any(c in key + value for c in "\n\r\\") or any(c in key for c in "=: #!"):
            raise ServerError(
                f"Trino property {key!r} cannot be written to a properties file: a line break or a "
                "backslash in it, or = : # ! or a space in its name"
            )
    return "".join(f"{key}={value}\n" for key, value in values.items())


CATALOG_TEMPLATE = "trino/catalog/iceberg.properties"


ACCESS_CONTROL_TEMPLATE = "trino/access-control.properties"


def iceberg_catalog(iceberg: Mapping[str, str]) -> tuple[dict[str, str], str, dict[str, str]]:
    """The ``iceberg`` catalog for an Iceberg REST catalog with native S3: the values of the
    chart's catalog template, the lines the template does not hold, and the secrets they
    reference (environment variable -> value).

    ``iceberg``: ``uri`` (the REST catalog), ``warehouse``, ``endpoint`` and ``region`` (S3),
    ``access_key_id``, ``secret_access_key``; ``sse`` (the storage setting: ``AES256``, the
    default, asks for SSE-S3 on every object Trino writes; ``aws:kms`` for SSE-KMS; ``none``);
    for a catalog that wants OAuth2 client credentials (SeaweedFS's, which the tests use; the
    chart's catalog is Nessie and never does), ``credential`` (``id:secret``) and optionally
    ``oauth2_server_uri`` and ``scope``. Other keys are ignored."""
    required = ("uri", "warehouse", "endpoint", "region", "access_key_id", "secret_access_key")
    missing = [key for key in required if not iceberg.get(key)]
    if missing:
        raise ServerError(f"the Iceberg catalog for Trino lacks {', '.join(missing)}")
    sse = {"AES256": "S3", "aws:kms": "KMS", "none": "NONE"}.get(iceberg.get("sse") or "AES256")
    if sse is None:
        raise ServerError(f"unknown server-side encryption {iceberg['sse']!r}: use AES256, aws:kms or none")
    values = {
        "rest_uri": iceberg["uri"],
        "warehouse": iceberg["warehouse"],
        "s3_endpoint": iceberg["endpoint"],
        "s3_region": iceberg["region"],
        "s3_sse_type": sse,
    }
    env = {ENV_S3_ACCESS_KEY: iceberg["access_key_id"], ENV_S3_SECRET_KEY: iceberg["secret_access_key"]}
    extra: dict[str, str] = {}
    if iceberg.get("credential"):
        extra["iceberg.rest-catalog.security"] = "OAUTH2"
        extra["iceberg.rest-catalog.oauth2.credential"] = f"${{ENV:{ENV_CATALOG_CREDENTIAL}}}"
        if iceberg.get("oauth2_server_uri"):
            extra["iceberg.rest-catalog.oauth2.server-uri"] = iceberg["oauth2_server_uri"]
        if iceberg.get("scope"):
            extra["iceberg.rest-catalog.oauth2.scope"] = iceberg["scope"]
        env[ENV_CATALOG_CREDENTIAL] = iceberg["credential"]
    return values, _properties(extra), env


def access_control(opa: Running) -> dict[str, str]:
    """The values of the chart's access-control template for the running OPA (``start_opa``)."""
    values = {
        "opa_url": opa.endpoints["url"],
        "opa_client_pem": opa.files["client"],
        "opa_ca_pem": opa.files["ca"],
    }
    rendered = render_config(ACCESS_CONTROL_TEMPLATE, values)
    for name in ("allow", "batch", "rowFilters", "batchColumnMasks"):  # the template's paths are OPA's
        if f"={opa.endpoints[name]}\n" not in rendered:
            raise ServerError(f"the access-control template does not point at OPA's {name} decision")
    return values


def pbkdf2_entry(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A password as Trino's file authenticator stores it: PBKDF2WithHmacSHA1,
    ``iterations:salt:hash`` in lowercase hex (16-byte salt, 32-byte hash)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, dklen=32)
    return f"{iterations}:{salt.hex()}:{digest.hex()}"


def ensure_passwords(path: Path, users: Iterable[str]) -> dict[str, str]:
    """Each of ``users`` (and ``admin``) with its password, generated once and kept in the 0600
    json file ``path`` (a user no longer listed loses its password)."""
    wanted = sorted({*users, ADMIN})
    bad = [user for user in wanted if not _USER.fullmatch(user)]
    if bad:
        raise ServerError(
            f"cannot make Trino accounts for {', '.join(map(repr, bad))}: use letters, digits, . _ @ -"
        )
    known: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ServerError(
                f"cannot read the Trino passwords in {path}: {exc}; remove the file to make new ones"
            ) from exc
        known = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}
    passwords = {user: known.get(user) or secrets.token_urlsafe(32) for user in wanted}
    _private(path, json.dumps(passwords, indent=2, sort_keys=True))
    return passwords


def _plugin_dir(home: Path, target: Path, built: Mapping[str, Path]) -> Path:
    """``target`` holding a link to each plugin of ``PLUGINS`` in ``home/plugin`` and to each
    plugin directory of ``built`` (the layout's plugins built from this checkout: trino-pii)."""
    missing = [name for name in PLUGINS if not (home / "plugin" / name).is_dir()]
    if missing:
        raise ServerError(
            f"the Trino in {home} has no plugin {', '.join(missing)} (the lock's unpack.plugins "
            f"must list it): {INSTALL_HINT}"
        )
    absent = [name for name, folder in built.items() if not folder.is_dir()]
    if absent:
        raise ServerError(f"the plugin {', '.join(absent)} is not built: {INSTALL_HINT}")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in PLUGINS:
        (target / name).symlink_to(home / "plugin" / name, target_is_directory=True)
    for name, folder in built.items():
        (target / name).symlink_to(folder, target_is_directory=True)
    return target


READY_SCAN = "select count(*) from table(sequence(start => 1, stop => 3))"


def _node_active(url: str, context: ssl.SSLContext) -> bool:
    """Whether Trino's ``/v1/info`` (public) says the node has finished starting."""
    with urllib.request.urlopen(url + "/v1/info", timeout=5, context=context) as response:  # noqa: S310 - our https URL
        return json.loads(response.read()).get("starting") is False


def query(
    url: str, user: str, password: str, ca: Path, sql: str, *, timeout: float = 60.0
) -> list[list[Any]]:
    """Run ``sql`` as ``user`` over HTTPS (the CA verified) through the ``trino`` client; rows."""
    from lakehouse.query import connect, https_session

    session = https_session(ca)
    connection = connect(url, user=user, principal=user, password=password, session=session, timeout=timeout)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return [list(row) for row in cursor.fetchall()]
    finally:
        connection.close()
        session.close()


def _wait_for_query(launched: Launched, url: str, user: str, password: str, ca: Path, timeout: float) -> None:
    """Ready once the node is active, ``select 1`` answers ``[[1]]`` for ``user`` and a scan is
    scheduled on this node (``READY_SCAN``); a refusal by OPA or the authenticator ends the wait
    at once (the server works, the setup does not)."""
    import trino

    context = ssl.create_default_context(cafile=str(ca))
    refused: list[Exception] = []

    def ready() -> bool:
        if not _node_active(url, context):
            return False
        try:
            if query(url, user, password, ca, "select 1") != [[1]]:  # runs on the coordinator alone
                return False
            # splits are scheduled only once the node manager lists this node as a worker (it polls
            # every 5 s): until then a scan fails with NO_NODES_AVAILABLE. The built-in table
            # function needs no grant and is scheduled like a table scan.
            return query(url, user, password, ca, READY_SCAN) == [[3]]
        except (trino.exceptions.TrinoUserError, trino.exceptions.HttpError) as exc:
            if isinstance(exc, trino.exceptions.TrinoUserError) and exc.error_name != "PERMISSION_DENIED":
                raise
            if isinstance(exc, trino.exceptions.HttpError) and "401" not in str(exc):
                raise
            refused.append(exc)
            return True

    wait_ready(launched, ready, timeout=timeout, what="to answer `select 1` over HTTPS")
    if refused:
        launched.stop()
        raise ServerError(
            f"Trino started but refused `select 1` for {user}: {refused[0]} (the policy must let "
            f"that user run queries, and the password file must hold it){launched.tail()}"
        )


def start_trino(
    root: Path,
    *,
    layout: Layout,
    tls: tuple[Path, Path, Path],
    opa: Running,
    iceberg: dict[str, str],
    users: Iterable[str],
    pii: PiiFiles | None = None,
    branches: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> Running:
    """Trino on ``https://127.0.0.1:<free port>`` (no plain HTTP listener), ready once the node
    is active and, as the first of ``users`` (sorted; the policy must let that user run
    queries) over HTTPS with the CA verified, ``select 1`` answers and a scan is scheduled.

    ``tls``: (CA, server certificate, key) PEM files; ``opa``: the running OPA (``start_opa``:
    its four decision URLs, its CA and Trino's client PEM); ``iceberg``: see
    ``iceberg_catalog``; ``users``: who gets a password (plus ``admin``); ``pii``: the files
    ``pii_decrypt`` reads (all must exist; without them the function fails naming the missing
    variable, and without the readers it decrypts for nobody). Endpoints: ``https``;
    files: ``ca`` and ``passwords`` (0600 json, user -> password). ``branches``: more catalogs,
    each the same Nessie warehouse seen at a branch (catalog name -> branch; Nessie takes the
    branch as the first segment of its Iceberg REST path), for builds that publish by merging."""
    if layout.home is None or layout.java is None:
        raise ServerError(f"no Trino server in the artifact cache: {INSTALL_HINT}")
    java = find_java(layout.java, purpose=f"trino {layout.version}").java
    ca, cert, key = tls
    users = sorted(set(users))
    absent = [n for n in ("allow", "batch", "rowFilters", "batchColumnMasks") if n not in opa.endpoints]
    absent += [n for n in ("ca", "client") if n not in opa.files]
    if absent:
        raise ServerError(f"the OPA record lacks {', '.join(absent)}: start OPA with start_opa")
    if pii is not None:
        lacking = [str(path) for path in (pii.keystore, pii.master_key) if not path.is_file()]
        if lacking:
            raise ServerError(
                f"pii_decrypt's keys are missing: {', '.join(lacking)} (open the keystore first: "
                "lakehouse.privacy.open_keystore creates it)"
            )
        if not pii.readers.is_file():
            raise ServerError(
                f"pii_decrypt's readers are missing: {pii.readers} (compile the policy first: "
                "lakehouse.governance.write_compiled writes it)"
            )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    etc, data, tmp = root / "etc", root / "data", root / "tmp"
    for directory in (etc, data, tmp):
        directory.mkdir(mode=0o700, exist_ok=True)
    plugins = _plugin_dir(layout.home, root / "plugin", layout.plugins)

    passwords_file = root / "passwords.json"
    passwords = ensure_passwords(passwords_file, users)
    _private(etc / "password.db", "".join(f"{u}:{pbkdf2_entry(p)}\n" for u, p in passwords.items()))
    _private(etc / "https.pem", key.read_text() + cert.read_text())  # key store: key + chain
    _private(
        etc / "password-authenticator.properties",
        _properties({"password-authenticator.name": "file", "file.password-file": str(etc / "password.db")}),
    )
    write_config(etc / "access-control.properties", ACCESS_CONTROL_TEMPLATE, access_control(opa))
    catalog, extra, env = iceberg_catalog(iceberg)
    (etc / "catalog").mkdir(mode=0o700, exist_ok=True)
    for name, uri in {
        CATALOG: iceberg["uri"],
        **{name: f"{iceberg['uri'].rstrip('/')}/{branch}" for name, branch in (branches or {}).items()},
    }.items():
        path = write_config(
            etc / "catalog" / f"{name}.properties", CATALOG_TEMPLATE, catalog | {"rest_uri": uri}
        )
        if extra:
            _private(path, path.read_text() + extra)
    port = free_port(set())
    url = f"https://127.0.0.1:{port}"
    _private(
        etc / "config.properties",
        _properties(
            {
                "coordinator": "true",
                "node-scheduler.include-coordinator": "true",
                "node.environment": "lakehouse",
                "node.id": "lakehouse-trino",
                "node.bind-ip": "127.0.0.1",
                "node.internal-address": "127.0.0.1",
                "http-server.http.enabled": "false",
                "http-server.https.enabled": "true",
                "http-server.https.port": str(port),
                "http-server.https.keystore.path": str(etc / "https.pem"),
                "http-server.authentication.type": "PASSWORD",
                "password-authenticator.config-files": str(etc / "password-authenticator.properties"),
                "internal-communication.shared-secret": f"${{ENV:{ENV_SHARED_SECRET}}}",
                "internal-communication.https.required": "true",
                "internal-communication.https.keystore.path": str(etc / "https.pem"),
                "internal-communication.https.truststore.path": str(ca),
                "discovery.uri": url,
                "access-control.config-files": str(etc / "access-control.properties"),
                "plugin.dir": str(plugins),
                "catalog.config-dir": str(etc / "catalog"),
                "query.max-memory": "512MB",
                "query.max-memory-per-node": "512MB",
            }
        ),
    )
    _private(etc / "log.properties", "io.trino=INFO\n")
    env[ENV_SHARED_SECRET] = secrets.token_urlsafe(48)
    if pii is not None:
        env.update(pii.environment())
    env.update({k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")})
    args = [
        str(java),
        *JVM_FLAGS,
        f"-Djava.io.tmpdir={tmp}",
        f"-Dconfig={etc / 'config.properties'}",
        f"-Dlog.levels-file={etc / 'log.properties'}",
        "-cp",
        str(layout.home / "lib" / "*"),
        layout.main or "io.trino.server.TrinoServer",
    ]
    began = time.monotonic()
    launched = launch("trino", args, cwd=data, log=root / "trino.log", env=env)
    probe = users[0] if users else ADMIN
    _wait_for_query(launched, url, probe, passwords[probe], ca, timeout)
    logger.info("Trino ready at %s in %.1fs", url, time.monotonic() - began)
    return launched.running({"https": url}, {"ca": str(ca), "passwords": str(passwords_file)})
