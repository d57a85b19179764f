"""Write tests/vectors/pii_v1.json: pii:v1 values made by the real Python keystore, for every
implementation of ``pii_decrypt`` to decrypt (the Trino plugin in services/trino-pii is checked
against it by tests/test_trino_pii.py).

The keystore is made with a fixed master key in a temporary directory: several subjects (one with
a non-ASCII name), unicode, empty and long values in two fields; then one subject is forgotten.
Recorded: the master key, the keystore file before and after the forget, and cases, each with
the outcome Python's ``pii_decrypt`` gives (``Keystore.decrypt``, ``KeyShredded`` as NULL) with
the keystore before and after the forget: ``value`` (and the plaintext), ``null`` or ``error``.
Besides the plain cases: values that are not ``pii:v1`` ciphertext, tampered and moved ones, and
payload variants (characters inserted, padding, truncation) generated from a seed, where Python's
lenient base64 decides between a value and an error.

Run: ``.venv/bin/python tests/vectors/make_pii_vectors.py`` (rewrites the file; nonces are random,
so the ciphertexts change, the outcomes do not).
"""

from __future__ import annotations

import base64
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from lakehouse.errors import KeyShredded
from lakehouse.privacy._keystore import Keystore

OUT = Path(__file__).with_name("pii_v1.json")
MASTER_KEY = bytes(range(32))  # fixed: a test vector, never a real key
SEED = 20260101

SUBJECTS = ["c-1", "c-2", "client-é-3", "c-4"]
FORGOTTEN = "c-4"
VALUES = {
    "c-1": {"full_name": "Ada Lovelace", "email": "ada@example.com"},
    "c-2": {"full_name": "Zoë Ñandú 李小龙 🙂", "email": ""},
    "client-é-3": {"full_name": "Ω" * 3000 + "x" * 7001, "email": "é@exämple.org"},
    "c-4": {"full_name": "Forgotten Person", "email": "gone@example.com"},
}


def outcome(keystore: Keystore, ciphertext: str | None) -> dict[str, Any]:
    """What the platform's ``pii_decrypt`` gives: the value, NULL (forgotten) or an error."""
    try:
        plain = keystore.decrypt(ciphertext)
    except KeyShredded:
        return {"outcome": "null"}
    except Exception:  # any error is the outcome "error"
        return {"outcome": "error"}
    return {"outcome": "null"} if plain is None else {"outcome": "value", "value": plain}


def _variants(good: str, rng: random.Random) -> list[tuple[str, str]]:
    """Payload variants of one good ciphertext: (name, ciphertext)."""
    head, _, payload = good.rpartition(":")
    out: list[tuple[str, str]] = [
        ("padding-1", f"{good}="),
        ("padding-2", f"{good}=="),
        ("padding-3", f"{good}==="),
        ("standard-alphabet", head + ":" + payload.replace("-", "+").replace("_", "/")),
        ("colon-in-payload", f"{head}:{payload[:5]}:{payload[5:]}"),
        ("truncated-1", good[:-1]),
        ("truncated-2", good[:-2]),
        ("truncated-3", good[:-3]),
        ("truncated-4", good[:-4]),
        ("pad-in-middle", f"{head}:{payload[:8]}=={payload[8:]}"),
        ("pad-after-two", f"{head}:{payload[:10]}={payload[10:]}"),
        ("empty-payload", f"{head}:"),
        ("short-payload", f"{head}:AAAA"),
        ("nonce-only", f"{head}:" + base64.urlsafe_b64encode(bytes(12)).decode()),
    ]
    junk = [" ", "!", ".", "=", "==", "+", "/", "-", "_", "\t", "é", "~", "*", "\\", "'"]
    for i in range(24):
        where = rng.randrange(len(payload) + 1)
        piece = rng.choice(junk)
        out.append(
            (
                f"insert-{i}-{piece.encode().hex()}-at-{where}",
                f"{head}:{payload[:where]}{piece}{payload[where:]}",
            )
        )
    for i in range(16):  # four characters at four places: the length stays valid
        chars = list(payload)
        for _ in range(4):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(junk[:4] + junk[9:]))
        out.append((f"insert4-{i}", f"{head}:{''.join(chars)}"))
    for i in range(6):
        where = rng.randrange(len(payload))
        flipped = "A" if payload[where] != "A" else "B"
        out.append((f"flip-{i}-at-{where}", f"{head}:{payload[:where]}{flipped}{payload[where + 1 :]}"))
    return out


def build() -> dict[str, Any]:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keystore.json"
        keystore = Keystore(path, MASTER_KEY)
        keystore.ensure(set(SUBJECTS))
        keystore.rotate()  # the DEKs wrapped by a second KEK, as after `lakehouse keys rotate`
        cases: list[dict[str, Any]] = []

        def case(name: str, ciphertext: str | None, plaintext: str | None = None) -> None:
            cases.append({"name": name, "ciphertext": ciphertext, "plaintext": plaintext})

        sealed: dict[tuple[str, str], str] = {}
        for subject in SUBJECTS:
            for field, value in VALUES[subject].items():
                ciphertext = keystore.encrypt(subject, field, value)
                assert ciphertext is not None
                sealed[subject, field] = ciphertext
                case(f"{subject}/{field}", ciphertext, value)
        case("null", None)
        good, forgotten = sealed["c-1", "full_name"], sealed[FORGOTTEN, "full_name"]
        payload = good.rpartition(":")[2]
        case("not-ciphertext", "Ada Lovelace")
        case("empty-string", "")
        case("prefix-only", "pii:v1:")
        case("three-colons", "pii:v1:c-1:full_name")
        case("other-version", good.replace("pii:v1:", "pii:v2:", 1))
        case("upper-prefix", good.replace("pii:v1:", "PII:v1:", 1))
        case("leading-space", " " + good)
        case("empty-subject", f"pii:v1::full_name:{payload}")
        case("unknown-subject", f"pii:v1:c-99:full_name:{payload}")
        case("moved-field", f"pii:v1:c-1:email:{payload}")
        case("moved-subject", f"pii:v1:c-2:full_name:{payload}")
        case("forgotten-bad-base64", f"pii:v1:{FORGOTTEN}:full_name:AAAAA")
        case("forgotten-tampered", forgotten[:-2] + ("AA" if not forgotten.endswith("AA") else "BA"))
        case("forgotten-moved-field", forgotten.replace(":full_name:", ":email:"))
        case("not-utf8", keystore.seal("c-1", "full_name", b"\xff\xfe"))
        case("utf8-surrogate", keystore.seal("c-1", "full_name", b"\xed\xa0\x80"))
        case("utf8-overlong", keystore.seal("c-1", "full_name", b"\xc0\xaf"))
        case("sealed-bytes", keystore.seal("c-2", "note", "naïve".encode()), "naïve")
        for name, ciphertext in _variants(good, rng):
            case(f"variant/{name}", ciphertext)
        for name, ciphertext in _variants(sealed["client-é-3", "email"], rng)[:8]:
            case(f"variant-unicode-subject/{name}", ciphertext)
        before_text = path.read_text()
        for entry in cases:
            entry["before_forget"] = outcome(keystore, entry["ciphertext"])
        keystore.forget(FORGOTTEN)
        after = Keystore(path, MASTER_KEY)
        for entry in cases:
            entry["after_forget"] = outcome(after, entry["ciphertext"])
            plaintext = entry.pop("plaintext")
            if plaintext is not None:  # what was encrypted comes back before the forget
                assert entry["before_forget"] == {"outcome": "value", "value": plaintext}, entry["name"]
        return {
            "format": 1,
            "about": "pii:v1 values of services/lakehouse/privacy/_keystore.py; made by make_pii_vectors.py",
            "master_key": base64.b64encode(MASTER_KEY).decode(),
            "forgotten": [FORGOTTEN],
            "keystore_before_forget": before_text,
            "keystore": path.read_text(),
            "cases": cases,
        }


def main() -> None:
    vectors = build()
    OUT.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for entry in vectors["cases"]:
        key = f"{entry['before_forget']['outcome']}->{entry['after_forget']['outcome']}"
        counts[key] = counts.get(key, 0) + 1
    print(f"wrote {OUT}: {len(vectors['cases'])} cases, {counts}")


if __name__ == "__main__":
    main()
