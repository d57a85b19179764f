"""HTTPS to the gateway with the standard library: TLS verified against the platform's CA."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .envelope import CONTENT_TYPE
from .errors import GatewayRejected, GatewayUnavailable


class GatewayClient:
    def __init__(self, url: str, ca_file: Path | None, *, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"gateway URL must be https://HOST[:PORT], not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 443
        self.timeout = timeout
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._conn: http.client.HTTPSConnection | None = None

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
        except ssl.SSLCertVerificationError:
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from exc
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
