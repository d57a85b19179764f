"""Device access tokens (EdDSA JWTs the gateway signs) and client assertions (EdDSA JWTs a
device signs with its enrolled key). Every verification pins the algorithm, requires
``aud iss exp iat jti sub`` and tolerates ``clock_skew`` seconds; ``alg=none``, HMAC keyed
with a public key and unknown ``kid``s are refused before any signature is checked.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from lakehouse.errors import TokenError

from ._keys import KeySet, public_ed25519
from ._registry import Device, Registry

ALGORITHMS = ["EdDSA"]


REQUIRED = ["aud", "iss", "exp", "iat", "jti", "sub"]


MAX_ASSERTION_LIFETIME = 300


@dataclass(frozen=True)
class AccessClaims:
    device_id: str
    store_id: str
    jti: str
    expires_at: int


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(f"malformed token: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise TokenError(f"algorithm {header.get('alg')!r} is not accepted (only EdDSA)")
    return header


def _decode(token: str, key: Any, *, audience: str, issuer: str, leeway: int) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": REQUIRED, "verify_iat": True, "verify_nbf": True},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("the token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("the token is not valid yet (iat or nbf in the future)") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("the token is for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("the token is from another issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"the token is not valid: {exc}") from exc
    return claims


class Tokens:
    def __init__(self, keys: KeySet, registry: Registry, *, issuer: str, audience: str, ttl: int, skew: int):
        self.keys, self.registry = keys, registry
        self.issuer, self.audience, self.ttl, self.skew = issuer, audience, ttl, skew

    @property
    def assertion_audience(self) -> str:
        """What a device's client assertion must name as ``aud``: this gateway's token endpoint."""
        return f"{self.issuer}/v1/token"

    def issue(self, device: Device) -> tuple[str, int]:
        key = self.keys.active()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": device.device_id,
            "store": device.store_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid}), self.ttl

    def verify_access(self, token: str) -> AccessClaims:
        header = _header(token)
        key = self.keys.get(str(header.get("kid", "")))
        if key is None:
            raise TokenError("the token's kid is unknown (signed by a key this gateway does not hold)")
        claims = _decode(
            token, key.private.public_key(), audience=self.audience, issuer=self.issuer, leeway=self.skew
        )
        if not isinstance(claims.get("store"), str):
            raise TokenError("the token lacks the 'store' claim")
        return AccessClaims(str(claims["sub"]), claims["store"], str(claims["jti"]), int(claims["exp"]))

    def verify_assertion(self, assertion: str) -> Device:
        """The device that signed ``assertion``, which is then spent (its jti cannot be reused)."""
        _header(assertion)
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed client assertion: {exc}") from exc
        device = self.registry.device(str(unverified.get("iss", "")))
        if device is None:
            raise TokenError("the client assertion names no enrolled device")
        claims = _decode(
            assertion,
            public_ed25519(device.public_key),
            audience=self.assertion_audience,
            issuer=device.device_id,
            leeway=self.skew,
        )
        if claims["sub"] != device.device_id:
            raise TokenError("the client assertion's sub is not its issuer")
        if claims["exp"] - claims["iat"] > MAX_ASSERTION_LIFETIME:
            raise TokenError(f"client assertions may live at most {MAX_ASSERTION_LIFETIME}s")
        if not device.active:
            raise TokenError(f"device {device.device_id} is revoked", status=403, code="device-revoked")
        if not self.registry.use_assertion_id(str(claims["jti"]), device.device_id, float(claims["exp"])):
            raise TokenError("the client assertion was already used (replayed jti)")
        return device
