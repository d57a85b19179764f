"""Envelope encryption of personal data, one data key per data subject (a customer).

- A value is encrypted with AES-256-GCM under its subject's 256-bit data key (DEK); the
  associated data binds the subject and the field, so a ciphertext cannot be moved to another
  customer or column. Stored as text: ``pii:v1:<subject>:<field>:<base64url(nonce|ciphertext)>``.
- DEKs are kept wrapped (AES key wrap, RFC 3394) by a key-encryption key (KEK); KEKs are kept
  wrapped by the master key, which comes from the environment or a secret file (locally, unless
  set, a generated 0600 file under state/keys, created once: published with a hard link, so two
  processes racing to create it agree on one). Rotating the KEK re-wraps every DEK: no data file
  is rewritten.
- Destroying a subject's DEK (crypto-shredding) makes every copy of its ciphertext, in every
  snapshot, branch and backup, unreadable.
- ``token()`` is a keyed HMAC-SHA256 of a normalised value: equal emails give equal tokens, so
  joins and deduplication work without decrypting. ``fingerprint()`` is an HMAC keyed by a key
  derived from the subject's own DEK: it tells whether a subject's values changed (SCD2) without
  comparing ciphertexts, cannot be tested against guesses without that key, and dies with it.

The keystore is a 0600 JSON file written atomically under an exclusive lock. Every process
holding a ``Keystore`` re-reads it when it changed (checked at most once a second, and before
every write), and drops the cached keys of subjects forgotten meanwhile: a ``forget`` in one
process is refused and NULL in every running process within about a second.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from lakehouse.config import private_dir
from lakehouse.errors import KeyShredded, KeystoreError

PREFIX = "pii:v1:"


# The data key of dead letters whose subject cannot be read from the message (not JSON, no
# subject field): a subject no contract row can name ('#' is refused in subjects).
DEAD_LETTER_SUBJECT = "#dead-letters"


REFRESH_SECONDS = 1.0


MAX_SUBJECT = 200


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def subject_problem(subject: object) -> str | None:
    """Why ``subject`` cannot name a data key (None if it can)."""
    if not isinstance(subject, str) or not subject:
        return "the data subject is missing"
    if len(subject) > MAX_SUBJECT:
        return f"the data subject is longer than {MAX_SUBJECT} characters"
    if ":" in subject or subject.startswith("#"):
        return "the data subject may not contain ':' or start with '#'"
    if _CONTROL.search(subject):
        return "the data subject contains control characters"
    return None


Clock = Callable[[], float]


class Keystore:
    def __init__(
        self,
        path: Path,
        master_key: bytes,
        *,
        clock: Clock = time.monotonic,
        refresh_seconds: float = REFRESH_SECONDS,
    ):
        if len(master_key) != 32:
            raise KeystoreError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self.path, self._master = path, master_key
        self._clock, self._refresh_seconds = clock, refresh_seconds
        self._lock = threading.RLock()
        self._cache: dict[str, bytes] = {}  # subject -> unwrapped DEK, for this process
        self._fingerprint_keys: dict[str, bytes] = {}
        self._ciphers: dict[str, AESGCM] = {}  # subject -> AES-GCM with its DEK (cached with it)
        self._signature: tuple[int, ...] | None = None
        self._checked_at = -math.inf
        if not path.exists():
            with self._locked() as state:
                if not state["keks"]:
                    self._new_kek(state)
                    state["token_key"] = _b64e(
                        self._seal(self._master, secrets.token_bytes(32), b"token-key")
                    )
        self._reload()
        self._token_key = self._open(self._master, _b64d(self._state["token_key"]), b"token-key")

    # -- the file ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"keks": [], "deks": {}, "shredded": {}, "token_key": None}
        state: dict[str, Any] = json.loads(self.path.read_text())
        return state

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # every write replaces the file (a new inode while the old one still exists), so the
        # inode alone tells a change; size and times guard file systems that reuse inodes
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _reload(self) -> None:
        """Read the file (its signature first: a change racing the read is seen next time) and
        forget the cached keys of subjects whose data key is gone."""
        with self._lock:
            signature = self._stat()
            self._state = self._read()
            self._signature = signature
            self._prune()

    def _prune(self) -> None:
        for subject in [s for s in self._cache if s not in self._state["deks"]]:
            self._cache.pop(subject, None)
            self._fingerprint_keys.pop(subject, None)
            self._ciphers.pop(subject, None)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the keystore if another process changed it (at most once per
        ``refresh_seconds`` unless ``force``): forgotten subjects, rotations, new data keys."""
        now = self._clock()
        if not force and now - self._checked_at < self._refresh_seconds:
            return
        self._checked_at = now
        if self._stat() != self._signature:
            self._reload()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock, written back atomically (fsync, rename)."""
        private_dir(self.path.parent)
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with self._lock, os.fdopen(fd, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = self._read()
            yield state
            tmp = self.path.with_suffix(".tmp")
            out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(out_fd, "w") as out:
                out.write(json.dumps(state, indent=1, sort_keys=True))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            self._state = state
            self._signature = self._stat()  # our own write: nothing to re-read
            self._prune()

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

    def _shredded_error(self, subject: str, state: dict[str, Any]) -> KeyShredded:
        return KeyShredded(f"the data key of {subject} was destroyed on {state['shredded'][subject]}")

    def _data_key(self, subject: str, *, create: bool) -> bytes:
        self.refresh()
        cached = self._cache.get(subject)
        if cached is not None:
            return cached
        state = self._state
        entry = state["deks"].get(subject)
        if entry is None and subject in state["shredded"]:
            raise self._shredded_error(subject, state)
        if entry is None and not create:
            self.refresh(force=True)  # created by another process a moment ago?
            state = self._state
            entry = state["deks"].get(subject)
            if entry is None and subject in state["shredded"]:
                raise self._shredded_error(subject, state)
        if entry is None:
            if not create:
                raise KeystoreError(f"no data key for {subject}")
            self.ensure({subject})
            state = self._state
            entry = state["deks"][subject]
        try:
            dek = aes_key_unwrap(self._kek(state, entry["kek"]), _b64d(entry["wrapped"]))
        except InvalidUnwrap as exc:
            raise KeystoreError(f"the data key of {subject} does not unwrap: keystore damaged") from exc
        with self._lock:
            if subject in self._state["deks"]:  # not forgotten while we unwrapped it
                self._cache[subject] = dek
        return dek

    def ensure(self, subjects: set[str]) -> None:
        """Create the data keys of ``subjects`` that do not exist yet, in one write. Refuses
        forgotten subjects, as the keystore file says now (not as this process last saw it)."""
        for subject in subjects:
            problem = subject_problem(subject) if subject != DEAD_LETTER_SUBJECT else None
            if problem:
                raise KeystoreError(f"{problem}: {subject!r:.60}")
        self.refresh(force=True)
        missing = {s for s in subjects if s not in self._state["deks"]}
        shredded = sorted(s for s in subjects if s in self._state["shredded"])
        if shredded:
            raise KeyShredded(
                f"data keys of {shredded[:5]} were destroyed: their data may not be written again"
            )
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

    def shredded(self, subjects: set[str]) -> set[str]:
        """Which of ``subjects`` were forgotten (as the keystore file says now)."""
        self.refresh(force=True)
        return {s for s in subjects if s in self._state["shredded"]}

    # -- values ----------------------------------------------------------------------------------

    def _cipher(self, subject: str, *, create: bool) -> AESGCM:
        dek = self._data_key(subject, create=create)  # checks for a forget first
        cipher = self._ciphers.get(subject)
        if cipher is None:
            cipher = AESGCM(dek)
            if subject in self._cache:
                self._ciphers[subject] = cipher
        return cipher

    def seal(self, subject: str, field: str, data: bytes) -> str:
        """``data`` encrypted under ``subject``'s data key, bound to ``subject`` and ``field``."""
        if subject not in self._state["deks"] and subject != DEAD_LETTER_SUBJECT:
            problem = subject_problem(subject)  # subjects with a data key passed ensure()
            if problem:
                raise KeystoreError(f"{problem}: {subject!r:.60}")
        if not field or ":" in field:
            raise KeystoreError("fields may not be empty or contain ':'")
        nonce = os.urandom(12)
        sealed = self._cipher(subject, create=True).encrypt(nonce, data, f"{subject}:{field}".encode())
        return f"{PREFIX}{subject}:{field}:{_b64e(nonce + sealed)}"

    def encrypt_column(
        self, subjects: Sequence[str], field: str, values: Sequence[str | None]
    ) -> list[str | None]:
        """``encrypt`` for a column: the same values, one call (nonces drawn in one read)."""
        if not field or ":" in field:
            raise KeystoreError("fields may not be empty or contain ':'")
        self.ensure(set(subjects))  # validates them, refuses forgotten ones
        nonces = os.urandom(12 * len(values))
        out: list[str | None] = []
        encode = base64.urlsafe_b64encode
        ciphers: dict[str, tuple[AESGCM, bytes, str]] = {}
        for i, (subject, value) in enumerate(zip(subjects, values, strict=True)):
            if value is None:
                out.append(None)
                continue
            found = ciphers.get(subject)
            if found is None:
                head = f"{PREFIX}{subject}:{field}:"
                found = ciphers[subject] = (
                    self._cipher(subject, create=True),
                    f"{subject}:{field}".encode(),
                    head,
                )
            cipher, aad, head = found
            nonce = nonces[12 * i : 12 * i + 12]
            sealed = nonce + cipher.encrypt(nonce, value.encode(), aad)
            out.append(head + encode(sealed).rstrip(b"=").decode())
        return out

    def open(self, value: str) -> bytes:
        """The bytes ``seal`` sealed; raises KeyShredded once the subject is forgotten."""
        if not value.startswith(PREFIX) or value.count(":") < 4:
            raise KeystoreError("not a value this keystore encrypted")
        subject, field, payload = value[len(PREFIX) :].split(":", 2)
        try:
            sealed = _b64d(payload)
        except ValueError as exc:
            raise KeystoreError(f"a {field} value of {subject} is not base64: tampered") from exc
        cipher = self._cipher(subject, create=False)
        try:
            return cipher.decrypt(sealed[:12], sealed[12:], f"{subject}:{field}".encode())
        except InvalidTag as exc:
            raise KeystoreError(
                f"a {field} value of {subject} does not decrypt: tampered, or moved from another row"
            ) from exc

    def encrypt(self, subject: str, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        return self.seal(subject, field, value.encode())

    def decrypt(self, value: str | None) -> str | None:
        """The plaintext; raises KeyShredded once the subject is forgotten."""
        if value is None:
            return None
        return self.open(value).decode()

    def check(self, value: str) -> str | None:
        """Why ``value`` is not a ciphertext this keystore made and can still open (None if it
        is). The reason never quotes the value: a look-alike may be plaintext."""
        if not value.startswith(PREFIX) or value.count(":") < 4:
            return "not a pii:v1 ciphertext"
        try:
            self.open(value)
        except KeyShredded:
            return "its subject was forgotten"
        except (KeystoreError, ValueError, UnicodeError):
            return "it does not open with this keystore's keys (forged, tampered, or another keystore's)"
        return None

    def token(self, value: str | None) -> str | None:
        """A keyed, deterministic token of an already normalised value (for joins, dedup)."""
        if value is None:
            return None
        return hmac.new(self._token_key, value.encode(), hashlib.sha256).hexdigest()

    def fingerprint(self, subject: str, values: Sequence[str | None]) -> str:
        """A keyed HMAC-SHA256 of ``values`` (normalised), keyed by a key derived from the
        subject's own data key: equal for equal values of one subject, unrelated across subjects,
        and gone with the subject's key."""
        dek = self._data_key(subject, create=True)  # refuses a forgotten subject
        key = self._fingerprint_keys.get(subject)
        if key is None:
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"lakehouse pii fingerprint v1"
            ).derive(dek)
            self._fingerprint_keys[subject] = key
        message = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    # -- key operations --------------------------------------------------------------------------

    def rotate(self, progress: Callable[[int, int], None] | None = None) -> str:
        """A new KEK; every DEK re-wrapped under it; older KEKs destroyed. Ciphertexts unchanged.
        ``progress(done, total)`` is called as data keys are re-wrapped (every 1,000 and at the end)."""
        with self._locked() as state:
            kid = self._new_kek(state)
            kek = self._kek(state, kid)
            keks: dict[str, bytes] = {kid: kek}
            total = len(state["deks"])
            for done, (subject, entry) in enumerate(state["deks"].items(), 1):
                wrapping = keks.get(entry["kek"])
                if wrapping is None:  # each KEK opened once, not once per data key
                    wrapping = keks[entry["kek"]] = self._kek(state, entry["kek"])
                dek = aes_key_unwrap(wrapping, _b64d(entry["wrapped"]))
                state["deks"][subject] = {"kek": kid, "wrapped": _b64e(aes_key_wrap(kek, dek))}
                if progress is not None and (done % 1000 == 0 or done == total):
                    progress(done, total)
            state["keks"] = [k for k in state["keks"] if k["kid"] == kid]
        return kid

    def forget(self, subject: str) -> bool:
        """Destroy ``subject``'s data key; True if there was one."""
        with self._locked() as state:
            existed = state["deks"].pop(subject, None) is not None
            state["shredded"][subject] = _now()
        return existed

    def forgotten(self, subject: str) -> bool:
        return subject in self._read()["shredded"]

    def subjects(self) -> set[str]:
        """The subjects that have a data key now (as the keystore file says)."""
        self.refresh(force=True)
        return set(self._state["deks"])

    def status(self) -> dict[str, Any]:
        self.refresh()
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_master_key(path: Path) -> bytes:
    """The local master key at ``path``, generated if missing: exactly one ever exists.

    A new key is written whole to a private temporary file, then published with ``link()``, which
    fails if the name exists: of processes racing to create it, one wins and every other one
    reads the winner's key (never a half-written file: the name appears complete or not at all).
    """
    if not path.exists():
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(secrets.token_bytes(32)).decode())
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process published its key first: use that one
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                _publish_under_lock(tmp, path)  # a file system without hard links
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
    key = master_key_from(path.read_text())
    if len(key) != 32:
        raise KeystoreError(f"{path} does not hold a 32-byte master key: restore it from your backup")
    return key


def _publish_under_lock(tmp: Path, path: Path) -> None:
    fd = os.open(path.with_name(f"{path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            os.replace(tmp, path)


# --- the platform's keystore ------------------------------------------------------------------


def keystore_path(settings: Any) -> Path:
    """Where the settings' keystore file is (``keys.keystore_file``, else under state/keys)."""
    return Path(settings.keys.keystore_file or settings.state_dir / "keys" / "keystore.json")


def open_keystore(settings: Any) -> Keystore:
    """The keystore the settings describe. The cluster profile requires a master key secret."""
    from lakehouse.errors import ConfigurationError

    keys = settings.keys
    path = keystore_path(settings)
    if keys.master_key is not None:
        return Keystore(path, master_key_from(keys.master_key.get_secret_value()))
    if settings.profile == "cluster":
        raise ConfigurationError("the cluster profile needs keys.master_key (a Kubernetes Secret or KMS)")
    from lakehouse.config import private_home

    private_home(settings)
    return Keystore(path, create_master_key(settings.state_dir / "keys" / "master.key"))


def environment_keystore() -> Keystore:
    """The keystore of the settings in this process's environment (``Settings.load()``): for
    services started as ``lakehouse ...`` commands, whose settings are exactly those."""
    from lakehouse.config import Settings

    return open_keystore(Settings.load())
