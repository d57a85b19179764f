"""Personal data: the keystore (per-subject keys, AES-256-GCM) and erasure by crypto-shredding."""

from __future__ import annotations

from lakehouse.errors import KeyShredded

from ._erasure import forget, rotate_keys
from ._keystore import (
    DEAD_LETTER_SUBJECT,
    Keystore,
    environment_keystore,
    keystore_path,
    open_keystore,
    subject_problem,
)

__all__ = [
    "DEAD_LETTER_SUBJECT",
    "KeyShredded",
    "Keystore",
    "environment_keystore",
    "forget",
    "keystore_path",
    "open_keystore",
    "rotate_keys",
    "subject_problem",
]
