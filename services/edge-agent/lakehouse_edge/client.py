"""HTTPS to the gateway with the standard library: TLS verified against the platform's CA."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .envelope import CONTENT_TYPE
from .errors import CAFileError, GatewayRejected, GatewayUnavailable, GatewayUntrusted, GatewayURLError


def gateway_address(url: str) -> tuple[str, int]:
    """(host, port) of an https://HOST[:PORT] URL; GatewayURLError for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise GatewayURLError(f"gateway URL {url!r} is not https://HOST[:PORT]: {exc}") from exc
    if parts.scheme != "https" or not parts.hostname:
        raise GatewayURLError(
            f"gateway URL must be https://HOST[:PORT], not {url!r}: the gateway only speaks TLS"
        )
    return parts.hostname, port or 443


class GatewayClient:
    def __init__(self, url: str, ca_file: Path | None, *, timeout: float = 30.0):
        self.host, self.port = gateway_address(url)
        self.url = (
            f"https://[{self.host}]:{self.port}" if ":" in self.host else f"https://{self.host}:{self.port}"
        )
        self.timeout = timeout
        try:
            self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:  # missing, unreadable, or no PEM certificate in it
            reason = "no PEM certificate in it" if isinstance(exc, ssl.SSLError) else exc.strerror or str(exc)
            raise CAFileError(
                f"cannot use the CA file {ca_file}: {reason}; give the CA certificate that signed the "
                "gateway's (PEM; `lakehouse gateway tls` shows its ca_file)"
            ) from exc
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca_file = ca_file
        self._conn: http.client.HTTPSConnection | None = None

    def _unreachable(self, exc: BaseException) -> str:
        """Why the gateway could not be reached, in words, with what to check."""
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (nothing listens on that port)"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {self.host!r}"
        elif isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, ssl.SSLError):
            why = f"TLS handshake failed ({exc.reason or exc}): is it the gateway's TLS port?"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"cannot reach the gateway at {self.url}: {why}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One request on a kept-alive connection. Returns (status, JSON body) for 2xx; raises
        GatewayRejected for 4xx and GatewayUnavailable for everything that is worth retrying."""
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._tls
            )
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            response = self._conn.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as exc:  # not worth retrying: the wrong CA, or not ours
            self.close()
            trusted = f"the CA file {self._ca_file}" if self._ca_file else "any of the system's CAs"
            raise GatewayUntrusted(
                f"the gateway at {self.url} presented a certificate not signed by {trusted} "
                f"({exc.verify_message or exc.reason}): enroll with --ca-file set to the CA that signed "
                "it (`lakehouse gateway tls` shows its ca_file)"
            ) from exc
        except http.client.HTTPException as exc:
            self.close()
            raise GatewayUnavailable(f"the gateway at {self.url} broke the exchange: {exc!r}") from exc
        except OSError as exc:
            self.close()
            raise GatewayUnavailable(self._unreachable(exc)) from exc
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"detail": raw[:200].decode("utf-8", "replace")}
        if response.status >= 500:
            raise GatewayUnavailable(f"gateway answered {response.status}: {payload.get('detail', '')}")
        if response.status >= 400:
            retry_after = response.getheader("Retry-After")
            raise GatewayRejected(response.status, payload, float(retry_after) if retry_after else None)
        return response.status, payload

    def post_json(self, path: str, data: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, json.dumps(data).encode(), headers)[1]

    def upload(self, sealed: bytes, token: str) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": CONTENT_TYPE, "Authorization": f"Bearer {token}"}
        return self.request("POST", "/v1/batches", sealed, headers)
