"""The gateway's key sets: Ed25519 keys that sign device tokens, X25519 keys batches are sealed
for. Each set is a 0600 JSON file; the newest key is active, older ones stay for verification
(signing: until every token they signed has expired; ingest: while devices may still hold
batches sealed for them). ``rotate`` adds a key; a running gateway notices the file changed and
reloads it, so rotation needs no restart and no downtime.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lakehouse.config import write_private
from lakehouse.errors import ConfigurationError

Kind = Literal["signing", "ingest"]


@dataclass(frozen=True)
class Key:
    kid: str
    private: Any  # Ed25519PrivateKey | X25519PrivateKey
    created_at: float
    retired_at: float | None

    def public_raw(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )


def _generate(kind: Kind) -> Any:
    return Ed25519PrivateKey.generate() if kind == "signing" else X25519PrivateKey.generate()


def _pem(private: Any) -> str:
    return str(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


class KeySet:
    """``clock`` paces the re-reads (monotonic); ``wall`` dates rotations and retention (epoch
    seconds, shared with other processes through the file). Both injectable for tests."""

    def __init__(
        self,
        path: Path,
        kind: Kind,
        *,
        retention: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.path, self.kind, self.retention = path, kind, retention
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._keys: list[Key] = []
        # (inode, mtime, size): a rotation replaces the file, so the inode changes even when two
        # writes fall in the same mtime tick
        self._signature: tuple[int, int, int] | None = None
        self._checked = 0.0

    # -- the file ---------------------------------------------------------------------------

    def _read(self) -> list[Key]:
        keys = []
        for entry in json.loads(self.path.read_text()):
            private = serialization.load_pem_private_key(entry["private_pem"].encode(), None)
            expected = Ed25519PrivateKey if self.kind == "signing" else X25519PrivateKey
            if not isinstance(private, expected):
                raise ConfigurationError(f"{self.path}: key {entry['kid']} is not an {expected.__name__}")
            keys.append(Key(entry["kid"], private, entry["created_at"], entry.get("retired_at")))
        return keys

    def _write(self, keys: list[Key]) -> None:
        entries = [
            {
                "kid": k.kid,
                "private_pem": _pem(k.private),
                "created_at": k.created_at,
                "retired_at": k.retired_at,
            }
            for k in keys
        ]
        tmp = self.path.with_suffix(".tmp")
        write_private(tmp, json.dumps(entries, indent=1))
        os.replace(tmp, self.path)

    def ensure(self) -> KeySet:
        """Create the set with one key if there is none yet."""
        if not self.path.exists():
            self.rotate()
        return self

    def rotate(self) -> Key:
        """A new active key; the previous one is retired (kept while it may still be needed)."""
        now = self._wall()
        keys = self._read() if self.path.exists() else []
        keys = [
            Key(k.kid, k.private, k.created_at, k.retired_at or now)
            for k in keys
            if k.retired_at is None or now - k.retired_at < self.retention
        ]
        fresh = Key(
            f"{self.kind}-{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(4)}",
            _generate(self.kind),
            now,
            None,
        )
        self._write([fresh, *keys])
        self._signature = None
        return fresh

    def _current(self) -> list[Key]:
        """The keys, re-read at most once a second when the file changed (a rotation)."""
        with self._lock:
            now = self._clock()
            if self._signature is None or now - self._checked > 1.0:
                self._checked = now
                try:
                    st = self.path.stat()
                except FileNotFoundError as exc:
                    raise ConfigurationError(f"key set {self.path} is missing") from exc
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
                if signature != self._signature:
                    self._keys, self._signature = self._read(), signature
            return self._keys

    # -- use ---------------------------------------------------------------------------------

    def active(self) -> Key:
        return self._current()[0]

    def get(self, kid: str) -> Key | None:
        """A key that may still verify or open: the active one, or one retired within retention."""
        now = self._wall()
        for key in self._current():
            if key.kid == kid and (key.retired_at is None or now - key.retired_at < self.retention):
                return key
        return None

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public signing keys as a JWKS (RFC 8037 OKP keys)."""
        from lakehouse_edge.envelope import b64e

        now = self._wall()
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "kid": k.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                    "x": b64e(k.public_raw()),
                }
                for k in self._current()
                if k.retired_at is None or now - k.retired_at < self.retention
            ]
        }


def public_ed25519(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
