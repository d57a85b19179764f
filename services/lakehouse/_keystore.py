"""Envelope encryption of personal data, one data key per data subject (a customer).

- A value is encrypted with AES-256-GCM under its subject's 256-bit data key (DEK); the
  associated data binds the subject and the field, so a ciphertext cannot be moved to another
  customer or column. Stored as text: ``pii:v1:<subject>:<field>:<base64url(nonce|ciphertext)>``.
- DEKs are kept wrapped (AES key wrap, RFC 3394) by a key-encryption key (KEK); KEKs are kept
  wrapped by the master key, which comes from the environment or a secret file (locally, unless
  set, a generated 0600 file under state/keys). Rotating the KEK re-wraps every DEK: no data
  file is rewritten.
- Destroying a subject's DEK (crypto-shredding) makes every copy of its ciphertext, in every
  snapshot, branch and backup, unreadable.
- ``token()`` is a keyed HMAC-SHA256 of a normalised value: equal emails give equal tokens, so
  joins and deduplication work without decrypting.

The keystore is a 0600 JSON file written atomically under an exclusive lock.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .errors import LakehouseError

PREFIX = "pii:v1:"


class KeystoreError(LakehouseError):
    """The keystore cannot be opened (wrong master key, damaged file) or a value is not ours."""


class KeyShredded(KeystoreError):
    """The subject's data key was destroyed: its personal data is gone for good."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Keystore:
    def __init__(self, path: Path, master_key: bytes):
        if len(master_key) != 32:
            raise KeystoreError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self.path, self._master = path, master_key
        self._cache: dict[str, bytes] = {}  # subject -> unwrapped DEK, for this process
        if not path.exists():
            with self._locked() as state:
                if not state["keks"]:
                    self._new_kek(state)
                    state["token_key"] = _b64e(
                        self._seal(self._master, secrets.token_bytes(32), b"token-key")
                    )
        self._state = self._read()
        self._token_key = self._open(self._master, _b64d(self._state["token_key"]), b"token-key")

    # -- the file ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"keks": [], "deks": {}, "shredded": {}, "token_key": None}
        state: dict[str, Any] = json.loads(self.path.read_text())
        return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock, written back atomically (fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = self._read()
            yield state
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(state, indent=1, sort_keys=True))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        self._state = state

    @staticmethod
    def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    @staticmethod
    def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag as exc:
            raise KeystoreError(
                "the keystore does not open with this master key (or it was tampered with)"
            ) from exc

    def _new_kek(self, state: dict[str, Any]) -> str:
        kid = f"kek-{len(state['keks']) + 1}-{secrets.token_hex(3)}"
        wrapped = self._seal(self._master, AESGCM.generate_key(bit_length=256), kid.encode())
        state["keks"].append({"kid": kid, "wrapped": _b64e(wrapped), "created_at": _now()})
        return kid

    def _kek(self, state: dict[str, Any], kid: str) -> bytes:
        entry = next((k for k in state["keks"] if k["kid"] == kid), None)
        if entry is None:
            raise KeystoreError(f"key-encryption key {kid} is missing from {self.path}")
        return self._open(self._master, _b64d(entry["wrapped"]), kid.encode())

    # -- data keys -------------------------------------------------------------------------------

    def _data_key(self, subject: str, *, create: bool) -> bytes:
        if subject in self._cache:
            return self._cache[subject]
        entry = self._state["deks"].get(subject)
        if entry is None and subject in self._state["shredded"]:
            raise KeyShredded(
                f"the data key of {subject} was destroyed on {self._state['shredded'][subject]}"
            )
        if entry is None:
            if not create:
                raise KeystoreError(f"no data key for {subject}")
            with self._locked() as state:
                if subject in state["shredded"]:
                    raise KeyShredded(
                        f"the data key of {subject} was destroyed on {state['shredded'][subject]}"
                    )
                if subject not in state["deks"]:
                    kid = state["keks"][-1]["kid"]
                    dek = AESGCM.generate_key(bit_length=256)
                    state["deks"][subject] = {
                        "kek": kid,
                        "wrapped": _b64e(aes_key_wrap(self._kek(state, kid), dek)),
                    }
            entry = self._state["deks"][subject]
        try:
            dek = aes_key_unwrap(self._kek(self._state, entry["kek"]), _b64d(entry["wrapped"]))
        except InvalidUnwrap as exc:
            raise KeystoreError(f"the data key of {subject} does not unwrap: keystore damaged") from exc
        self._cache[subject] = dek
        return dek

    def ensure(self, subjects: set[str]) -> None:
        """Create the data keys of ``subjects`` that do not exist yet, in one write."""
        missing = {s for s in subjects if s not in self._state["deks"]}
        if not missing:
            return
        with self._locked() as state:
            shredded = sorted(missing & state["shredded"].keys())
            if shredded:
                raise KeyShredded(
                    f"data keys of {shredded[:5]} were destroyed: their data may not be written again"
                )
            kid = state["keks"][-1]["kid"]
            kek = self._kek(state, kid)
            for subject in sorted(missing - state["deks"].keys()):
                dek = AESGCM.generate_key(bit_length=256)
                state["deks"][subject] = {"kek": kid, "wrapped": _b64e(aes_key_wrap(kek, dek))}

    def encrypt(self, subject: str, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        if ":" in subject or ":" in field:
            raise KeystoreError("subjects and fields may not contain ':'")
        aad = f"{subject}:{field}".encode()
        sealed = self._seal(self._data_key(subject, create=True), value.encode(), aad)
        return f"{PREFIX}{subject}:{field}:{_b64e(sealed)}"

    def decrypt(self, value: str | None) -> str | None:
        """The plaintext; raises KeyShredded once the subject is forgotten."""
        if value is None:
            return None
        if not value.startswith(PREFIX):
            raise KeystoreError("not a value this keystore encrypted")
        subject, field, payload = value[len(PREFIX) :].split(":", 2)
        try:
            return self._open(
                self._data_key(subject, create=False), _b64d(payload), f"{subject}:{field}".encode()
            ).decode()
        except KeystoreError as exc:
            if isinstance(exc, KeyShredded):
                raise
            raise KeystoreError(
                f"a {field} value of {subject} does not decrypt: tampered, or moved from another row"
            ) from exc

    def token(self, value: str | None) -> str | None:
        """A keyed, deterministic token of an already normalised value (for joins, dedup)."""
        if value is None:
            return None
        return hmac.new(self._token_key, value.encode(), hashlib.sha256).hexdigest()

    # -- key operations --------------------------------------------------------------------------

    def rotate(self) -> str:
        """A new KEK; every DEK re-wrapped under it; older KEKs destroyed. Ciphertexts unchanged."""
        with self._locked() as state:
            kid = self._new_kek(state)
            kek = self._kek(state, kid)
            for subject, entry in state["deks"].items():
                dek = aes_key_unwrap(self._kek(state, entry["kek"]), _b64d(entry["wrapped"]))
                state["deks"][subject] = {"kek": kid, "wrapped": _b64e(aes_key_wrap(kek, dek))}
            state["keks"] = [k for k in state["keks"] if k["kid"] == kid]
        return kid

    def forget(self, subject: str) -> bool:
        """Destroy ``subject``'s data key; True if there was one."""
        with self._locked() as state:
            existed = state["deks"].pop(subject, None) is not None
            state["shredded"][subject] = _now()
        self._cache.pop(subject, None)
        return existed

    def forgotten(self, subject: str) -> bool:
        return subject in self._read()["shredded"]

    def status(self) -> dict[str, Any]:
        return {
            "kek": self._state["keks"][-1]["kid"],
            "data_keys": len(self._state["deks"]),
            "shredded": len(self._state["shredded"]),
        }


def master_key_from(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except ValueError as exc:
        raise KeystoreError("the master key must be base64 of 32 random bytes") from exc
    return key


# --- the platform's keystore, and personal data in and out ------------------------------------


def open_keystore(settings: Any) -> Keystore:
    """The keystore the settings describe. The cluster profile requires a master key secret."""
    from ._process import write_private
    from .errors import ConfigurationError

    keys = settings.keys
    path = keys.keystore_file or settings.state_dir / "keys" / "keystore.json"
    if keys.master_key is not None:
        return Keystore(path, master_key_from(keys.master_key.get_secret_value()))
    if settings.profile == "cluster":
        raise ConfigurationError("the cluster profile needs keys.master_key (a Kubernetes Secret or KMS)")
    master_file = settings.state_dir / "keys" / "master.key"
    if not master_file.exists():
        write_private(master_file, base64.b64encode(secrets.token_bytes(32)).decode())
    return Keystore(path, master_key_from(master_file.read_text()))


_NORMALISE = {
    "trim": lambda v: v.strip(),
    "lower_trim": lambda v: v.strip().lower(),
    "digits": lambda v: "".join(ch for ch in v if ch.isdigit()),
}


def protect(data: Any, contract: Any, keystore: Keystore) -> Any:
    """Rows as producers sent them -> rows as stored: personal data normalised and encrypted
    under each row's subject, token columns added. Non-personal columns pass unchanged."""
    import pyarrow as pa

    subjects = data.column(contract.pii_subject).to_pylist()
    keystore.ensure({str(s) for s in subjects})
    columns: dict[str, Any] = {}
    for name in data.column_names:
        if name not in contract.pii:
            columns[name] = data.column(name)
            continue
        normalise = _NORMALISE.get(contract.pii_normalize.get(name, ""), lambda v: v)
        plain = [
            None if v is None else normalise(v.isoformat() if hasattr(v, "isoformat") else str(v))
            for v in data.column(name).to_pylist()
        ]
        plain = [v or None for v in plain]  # a value that normalises to nothing is no value
        columns[name] = pa.array(
            [keystore.encrypt(str(s), name, v) for s, v in zip(subjects, plain, strict=True)], pa.string()
        )
        if name in contract.pii_tokens:
            columns[f"{name}_token"] = pa.array([keystore.token(v) for v in plain], pa.string())
    return pa.table(columns).select(contract.stored_arrow_schema().names).cast(contract.stored_arrow_schema())
