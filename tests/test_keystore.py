"""Envelope encryption per data subject: round trips, binding, rotation, shredding, tokens."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from lakehouse import Lakehouse
from lakehouse._keystore import KeyShredded, Keystore, KeystoreError, master_key_from


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


def test_round_trip_binding_and_no_plaintext_at_rest(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "keystore.json", master)
    sealed = store.encrypt("C000001", "email", "ava@example.com")
    assert sealed is not None and sealed.startswith("pii:v1:C000001:email:") and "ava" not in sealed
    assert store.decrypt(sealed) == "ava@example.com"
    assert store.encrypt("C000001", "email", "ava@example.com") != sealed  # fresh nonce each time
    assert store.encrypt("C000001", "email", None) is None and store.decrypt(None) is None
    # moved to another customer or another column, or tampered: refused
    for forged in (
        sealed.replace("C000001", "C000002"),
        sealed.replace(":email:", ":phone:"),
        sealed[:-2] + "AA",
    ):
        with pytest.raises(KeystoreError):
            store.decrypt(forged)
    # a second process (another Keystore object) reads the same keys
    assert Keystore(tmp_path / "keystore.json", master).decrypt(sealed) == "ava@example.com"
    raw = (tmp_path / "keystore.json").read_bytes()
    assert b"ava@example.com" not in raw
    assert (tmp_path / "keystore.json").stat().st_mode & 0o077 == 0


def test_wrong_master_key_is_refused(tmp_path: Path, master: bytes) -> None:
    Keystore(tmp_path / "keystore.json", master).encrypt("C1", "email", "x@example.com")
    with pytest.raises(KeystoreError, match="does not open with this master key"):
        Keystore(tmp_path / "keystore.json", os.urandom(32))
    with pytest.raises(KeystoreError, match="32 bytes"):
        Keystore(tmp_path / "other.json", b"short")
    assert master_key_from(base64.b64encode(master).decode()) == master


def test_rotation_rewraps_data_keys_without_touching_ciphertexts(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "keystore.json", master)
    sealed = {f"C{i}": store.encrypt(f"C{i}", "full_name", f"Name {i}") for i in range(20)}
    before = json.loads((tmp_path / "keystore.json").read_text())
    old_kek = store.status()["kek"]
    new_kek = store.rotate()
    after = json.loads((tmp_path / "keystore.json").read_text())
    assert new_kek != old_kek and [k["kid"] for k in after["keks"]] == [new_kek]
    assert all(after["deks"][s]["kek"] == new_kek for s in sealed)
    assert all(after["deks"][s]["wrapped"] != before["deks"][s]["wrapped"] for s in sealed)
    fresh = Keystore(tmp_path / "keystore.json", master)  # no cached keys: everything through the new KEK
    assert all(fresh.decrypt(v) == f"Name {s[1:]}" for s, v in sealed.items())


def test_forgetting_a_subject_shreds_every_copy(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "keystore.json", master)
    copies = [store.encrypt("C7", "email", "gone@example.com") for _ in range(3)]
    kept = store.encrypt("C8", "email", "kept@example.com")
    assert store.forget("C7") is True
    for reader in (store, Keystore(tmp_path / "keystore.json", master)):
        for copy in copies:
            with pytest.raises(KeyShredded):
                reader.decrypt(copy)
        assert reader.decrypt(kept) == "kept@example.com"
    with pytest.raises(KeyShredded):  # and no new data can be written for a forgotten subject
        store.encrypt("C7", "email", "again@example.com")


def test_tokens_are_deterministic_and_keyed(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "a.json", master)
    assert store.token("ava@example.com") == Keystore(tmp_path / "a.json", master).token("ava@example.com")
    assert store.token("ava@example.com") != store.token("ben@example.com")
    other = Keystore(tmp_path / "b.json", master)  # another keystore: another token key
    assert other.token("ava@example.com") != store.token("ava@example.com")
    assert len(store.token("x") or "") == 64 and store.token(None) is None


def test_personal_data_cannot_be_loaded_around_the_keystore(
    lh: Lakehouse, reference_files: dict[str, Path]
) -> None:
    from lakehouse._load import load_files
    from lakehouse.errors import LoadError

    with pytest.raises(LoadError, match="holds personal data"):
        load_files(lh.catalog, "bronze.customers", [reference_files["customers"]])
    assert len(lh.load("bronze.customers", [reference_files["customers"]]).files_loaded) == 1
