"""OPA for the stack: the compiled Trino policy (``lakehouse policy compile``) served on loopback
over mutual TLS, answering only the decisions Trino's OPA plugin asks for.

Trino's OPA plugin (476) cannot send a bearer token: its HTTP client (``opa.http-client.*``, an
airlift client) has no header setting, but it does present a client certificate from a PEM key
store. So OPA runs with ``--authentication=tls --authorization=basic``: a CA of OPA's own, made
here, signs OPA's server certificate and one client certificate (Trino's); the ``system.authz``
policy admits that certificate's subject to POST the four decision documents and nothing else
(no policy or data uploads, no queries, no other documents). Any other caller fails the TLS
handshake or gets 401.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.config import write_private
from lakehouse.errors import ServerError
from lakehouse.governance import OPA_CLIENT_IDENTITY, OPA_CLIENT_NAME, authz_policy, decision_paths

from ._artifacts import INSTALL_HINT, Layout
from ._process import free_port
from ._service import Running, launch, wait_ready

logger = logging.getLogger(__name__)


# the one client OPA admits, and (decision_paths, authz_policy) the decisions it may ask for:
# the governance package's, which writes the chart's OPA bundle from the same definitions
CLIENT_NAME = OPA_CLIENT_NAME  # the common name of the one client certificate OPA admits
CLIENT_IDENTITY = OPA_CLIENT_IDENTITY  # how OPA names it (the subject's RDN sequence)


@dataclass(frozen=True)
class OpaTls:
    """OPA's own CA, its server certificate and key, and the client PEM (certificate + key) the
    one admitted client presents. Every file is 0600; the CA's key is never written."""

    ca: Path
    cert: Path
    key: Path
    client: Path


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _still_valid(path: Path, *, margin: dt.timedelta) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + margin


def ensure_opa_tls(directory: Path) -> OpaTls:
    """OPA's mutual-TLS material under ``directory``, made on first use and again once a
    certificate is within a day of expiring (the running Trino must then restart too)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    found = OpaTls(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "client.pem"
    )
    margin = dt.timedelta(days=1)
    if all(p.exists() for p in (found.ca, found.key)) and all(
        _still_valid(p, margin=margin) for p in (found.cert, found.client)
    ):
        return found
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("lakehouse OPA CA"))
        .issuer_name(_name("lakehouse OPA CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, usage: x509.ObjectIdentifier, ip: str | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    def pem_key(key: Any) -> str:
        return str(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        )

    def pem_cert(cert: Any) -> str:
        return str(cert.public_bytes(serialization.Encoding.PEM).decode())

    server_key, server = issue("lakehouse OPA", ExtendedKeyUsageOID.SERVER_AUTH, "127.0.0.1")
    client_key, client = issue(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for path, text in (
        (found.key, pem_key(server_key)),
        (found.cert, pem_cert(server)),
        (found.client, pem_cert(client) + pem_key(client_key)),  # Trino's PEM key store
        (found.ca, pem_cert(ca)),  # the CA's key is dropped: nothing else gets signed
    ):
        path.unlink(missing_ok=True)  # a new 0600 file, whatever mode an old one had
        write_private(path, text)
    return found


def client_context(ca: Path, client: Path | None) -> ssl.SSLContext:
    """A TLS context trusting only OPA's CA, presenting ``client`` (a PEM with certificate and
    key) if given."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client))
    return context


def decide(url: str, input_: dict[str, Any], *, context: ssl.SSLContext, timeout: float = 5.0) -> Any:
    """POST ``input_`` to one decision ``url``; the decision (``result``), or None if the
    document is undefined (OPA answers ``{}``)."""
    if not url.startswith("https://"):
        raise ServerError(f"OPA is reached over HTTPS only, not {url}")
    request = urllib.request.Request(  # noqa: S310 - https only, checked above
        url,
        data=json.dumps({"input": input_}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310 - our https URL
        return json.loads(response.read()).get("result")


POLICY_FILES = ("lakehouse.rego", "data.json")  # what `write_compiled` puts in out/opa/


def _probe_user(data: Path) -> str | None:
    """A user the compiled data names (its decision must be an allow), or None."""
    try:
        users = json.loads(data.read_text()).get("lakehouse", {}).get("users", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise ServerError(f"cannot read the compiled policy data {data}: {exc}") from exc
    return str(sorted(users)[0]) if users else None


def start_opa(root: Path, *, layout: Layout, policy_dir: Path, timeout: float = 30.0) -> Running:
    """OPA serving the compiled policy in ``policy_dir`` (``lakehouse.rego`` + ``data.json``) on
    ``https://127.0.0.1:<free port>``, mutual TLS only (``ensure_opa_tls``), ready once a real
    Trino-shaped decision (a user of the data running a query) is allowed.

    Endpoints: ``url`` and the four decision URLs Trino's OPA plugin is configured with
    (``allow``, ``batch``, ``rowFilters``, ``batchColumnMasks``). Files: ``ca`` (OPA's CA) and
    ``client`` (the 0600 PEM, certificate and key, Trino presents)."""
    binary = layout.binary
    if binary is None or not binary.is_file():
        raise ServerError(f"the OPA binary is missing ({binary}): {INSTALL_HINT}")
    missing = [name for name in POLICY_FILES if not (policy_dir / name).is_file()]
    if missing:
        raise ServerError(
            f"no {' or '.join(missing)} in {policy_dir}: compile the policy (`lakehouse policy compile "
            "--out <dir>` writes <dir>/opa/)"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    tls = ensure_opa_tls(root / "tls")
    authz = root / "authz.rego"
    authz.unlink(missing_ok=True)
    write_private(authz, authz_policy(CLIENT_IDENTITY))
    port = free_port(set())
    url = f"https://127.0.0.1:{port}"
    args = [
        str(binary),
        "run",
        "--server",
        f"--addr=127.0.0.1:{port}",
        f"--tls-cert-file={tls.cert}",
        f"--tls-private-key-file={tls.key}",
        f"--tls-ca-cert-file={tls.ca}",
        "--min-tls-version=1.3",
        "--authentication=tls",
        "--authorization=basic",
        "--skip-version-check",
        "--log-format=json",
        *(str(policy_dir / name) for name in POLICY_FILES),  # those files only, nothing else there
        str(authz),
    ]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    began = time.monotonic()
    launched = launch("opa", args, cwd=root, log=root / "opa.log", env=env)
    endpoints = {"url": url, **{name: url + path for name, path in decision_paths().items()}}
    context = client_context(tls.ca, tls.client)
    user = _probe_user(policy_dir / "data.json")
    probe = {
        "context": {"identity": {"user": user or "", "groups": []}, "softwareStack": {"trinoVersion": "476"}},
        "action": {"operation": "ExecuteQuery"},
    }

    def ready() -> bool:
        decision = decide(endpoints["allow"], probe, context=context)
        return decision is True if user is not None else isinstance(decision, bool)

    wait_ready(launched, ready, timeout=timeout, what="to answer a decision")
    logger.info("OPA ready at %s in %.1fs", url, time.monotonic() - began)
    return launched.running(endpoints, {"ca": str(tls.ca), "client": str(tls.client)})
