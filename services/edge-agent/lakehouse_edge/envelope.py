"""The sealed batch: the one wire format between edge agents and the gateway.

A batch of readings is JSON, compressed with zlib, then encrypted with AES-256-GCM under a fresh
256-bit data key. The data key is wrapped for the platform's ingest public key the way JWE's
``ECDH-ES+A256KW`` does it: an ephemeral X25519 key agreement, HKDF-SHA256 to a key-encryption
key, then AES key wrap (RFC 3394). The associated data binds the device id, the batch sequence
number, the schema and its version and the ingest key id, so a ciphertext cannot be replayed
under another device, sequence or schema.

Only ``cryptography`` is needed; the agent seals, the gateway opens.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .errors import BombError, EnvelopeError

VERSION = 1
HKDF_INFO = b"lakehouse-edge batch key wrap v1"
CONTENT_TYPE = "application/vnd.lakehouse.sealed-batch+json"
HEADER_FIELDS = ("v", "device_id", "seq", "schema", "schema_version", "ingest_kid")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError("expected base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise EnvelopeError(f"not base64url: {exc}") from exc


def associated_data(header: dict[str, Any]) -> bytes:
    """Canonical bytes of the header fields the ciphertext is bound to."""
    return json.dumps({k: header[k] for k in HEADER_FIELDS}, sort_keys=True, separators=(",", ":")).encode()


def _kek(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=HKDF_INFO).derive(shared)


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class IngestKey:
    """The platform's public key that batches are sealed for."""

    kid: str
    public_key: bytes  # raw X25519

    def as_json(self) -> dict[str, str]:
        return {"kid": self.kid, "x25519": b64e(self.public_key)}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> IngestKey:
        return cls(kid=data["kid"], public_key=b64d(data["x25519"]))


def seal(
    readings: list[dict[str, Any]],
    *,
    device_id: str,
    seq: int,
    schema: str,
    schema_version: int,
    ingest_key: IngestKey,
) -> bytes:
    """The wire bytes of one sealed batch."""
    compressed = zlib.compress(json.dumps(readings, separators=(",", ":")).encode(), 6)
    return seal_compressed(
        compressed,
        device_id=device_id,
        seq=seq,
        schema=schema,
        schema_version=schema_version,
        ingest_key=ingest_key,
    )


def seal_compressed(
    compressed: bytes, *, device_id: str, seq: int, schema: str, schema_version: int, ingest_key: IngestKey
) -> bytes:
    """Seal an already zlib-compressed JSON array of readings."""
    header: dict[str, Any] = {
        "v": VERSION,
        "device_id": device_id,
        "seq": seq,
        "schema": schema,
        "schema_version": schema_version,
        "ingest_kid": ingest_key.kid,
    }
    data_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    ciphertext = AESGCM(data_key).encrypt(nonce, compressed, associated_data(header))
    ephemeral = X25519PrivateKey.generate()
    epk = raw_public(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(ingest_key.public_key))
    wrapped = aes_key_wrap(_kek(shared, epk, ingest_key.public_key), data_key)
    sealed = {
        **header,
        "epk": b64e(epk),
        "wrapped_key": b64e(wrapped),
        "nonce": b64e(nonce),
        "ciphertext": b64e(ciphertext),
    }
    return json.dumps(sealed, separators=(",", ":")).encode()


def parse_header(body: bytes) -> dict[str, Any]:
    """The sealed batch as a dict with its header fields checked (nothing decrypted yet)."""
    try:
        sealed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"the body is not JSON: {exc}") from exc
    return check_header(sealed)


def check_header(sealed: Any) -> dict[str, Any]:
    """A parsed sealed batch with its header fields checked (the gateway parses with bounds)."""
    if not isinstance(sealed, dict):
        raise EnvelopeError("the body is not a JSON object")
    expected = {
        "v": int,
        "device_id": str,
        "seq": int,
        "schema": str,
        "schema_version": int,
        "ingest_kid": str,
        "epk": str,
        "wrapped_key": str,
        "nonce": str,
        "ciphertext": str,
    }
    for name, kind in expected.items():
        value = sealed.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EnvelopeError(f"field {name!r} is missing or not a {kind.__name__}")
    if sealed["v"] != VERSION:
        raise EnvelopeError(f"envelope version {sealed['v']} is not supported (expected {VERSION})")
    if sealed["seq"] < 0:
        raise EnvelopeError("field 'seq' must not be negative")
    return sealed


def open_sealed(sealed: dict[str, Any], private_key: X25519PrivateKey, *, max_bytes: int) -> list[Any]:
    """Decrypt, decompress and parse a sealed batch; raises EnvelopeError on any tampering."""
    try:
        readings = json.loads(open_plain(sealed, private_key, max_bytes=max_bytes))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"the decrypted batch is not JSON: {exc}") from exc
    if not isinstance(readings, list):
        raise EnvelopeError("the decrypted batch is not a JSON array of readings")
    return readings


def open_plain(sealed: dict[str, Any], private_key: X25519PrivateKey, *, max_bytes: int) -> bytes:
    """Decrypt and decompress a parsed sealed batch to its JSON text (not parsed)."""
    epk, wrapped, nonce = b64d(sealed["epk"]), b64d(sealed["wrapped_key"]), b64d(sealed["nonce"])
    if len(epk) != 32 or len(nonce) != 12:
        raise EnvelopeError("malformed ephemeral key or nonce")
    recipient = raw_public(private_key.public_key())
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(epk))
        data_key = aes_key_unwrap(_kek(shared, epk, recipient), wrapped)
        compressed = AESGCM(data_key).decrypt(nonce, b64d(sealed["ciphertext"]), associated_data(sealed))
    except (InvalidTag, InvalidUnwrap, ValueError) as exc:
        raise EnvelopeError(
            "the batch does not decrypt: ciphertext, key or associated data (device, seq, schema) tampered"
        ) from exc
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(compressed, max_bytes)
    except zlib.error as exc:
        raise EnvelopeError(f"the batch is not zlib data: {exc}") from exc
    if not inflater.eof:  # output stopped at the cap, or the stream is cut short
        if inflater.unconsumed_tail or len(plain) >= max_bytes:
            raise BombError(f"the batch decompresses beyond {max_bytes} bytes")
        raise EnvelopeError("the compressed batch is truncated")
    return plain


# --- the device's proof of possession ---------------------------------------------------------


def client_assertion(key: Ed25519PrivateKey, *, device_id: str, audience: str, lifetime_s: int = 60) -> str:
    """A signed JWT (RFC 7523 client assertion, EdDSA) proving the device holds its key.

    Written here with ``cryptography`` alone so the agent needs no JWT library; the gateway
    verifies it with PyJWT, algorithm pinned to EdDSA.
    """
    now = int(time.time())
    header = {"alg": "EdDSA", "typ": "JWT", "kid": device_id}
    claims = {
        "iss": device_id,
        "sub": device_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": uuid.uuid4().hex,
    }
    signing_input = ".".join(
        b64e(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    return f"{signing_input}.{b64e(key.sign(signing_input.encode()))}"
