"""Device public keys (Ed25519) checked at enrollment: only keys a private key stands behind.

A small-order point A (the identity, the point of order 2, the two of order 4, the four of
order 8) makes ``[k]A`` take at most 8 values, so a signature ``(R, S=0)`` with ``R = -[k]A``
verifies for about one message in 8 without any private key: a device enrolled with such a key
authenticates by trying a few assertions. Such keys, their non-canonical encodings
(``y >= p``, a negative zero ``x``) and the all-zero key are refused, as libsodium's
``crypto_sign_verify`` does with its small-order blocklist.
"""

from __future__ import annotations

from lakehouse.errors import WeakDeviceKey

P = 2**255 - 19


D = (-121665 * pow(121666, -1, P)) % P


# y of the points of order 8: y^2 = (-1 + sqrt(1 + d)) / d (the doubling of such a point has y = 0)
Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022


SMALL_ORDER_Y = frozenset({0, 1, P - 1, Y_ORDER_8, P - Y_ORDER_8})


def _x_squared(y: int) -> int | None:
    """x^2 for the curve point with this y, or None when there is none (not on Ed25519)."""
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x2 = u * pow(v, -1, P) % P
    return x2 if x2 == 0 or pow(x2, (P - 1) // 2, P) == 1 else None


def check_device_key(raw: bytes) -> None:
    """Raise WeakDeviceKey unless ``raw`` is the canonical encoding of an Ed25519 point of
    large order (what a real key pair's public half always is)."""
    if len(raw) != 32:
        raise WeakDeviceKey(f"public_key must be a raw 32-byte Ed25519 key, not {len(raw)} bytes")
    if not any(raw):
        raise WeakDeviceKey("public_key is the all-zero key, which no private key stands behind")
    encoded = int.from_bytes(raw, "little")
    y, negative_x = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= P:
        raise WeakDeviceKey("public_key is a non-canonical encoding (y >= 2^255 - 19)")
    x2 = _x_squared(y)
    if x2 is None:
        raise WeakDeviceKey("public_key is not a point on Ed25519")
    if x2 == 0 and negative_x:
        raise WeakDeviceKey("public_key is a non-canonical encoding (x = 0 with its sign bit set)")
    if y in SMALL_ORDER_Y:
        raise WeakDeviceKey("public_key is a small-order point, which no private key stands behind")
