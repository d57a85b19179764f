"""Envelope encryption per data subject: round trips, binding, rotation, shredding, tokens."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from lakehouse import Lakehouse
from lakehouse.privacy._keystore import KeyShredded, Keystore, KeystoreError, master_key_from


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


@pytest.mark.unit
def test_round_trip_binding_and_no_plaintext_at_rest(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "keystore.json", master)
    sealed = store.encrypt("C000001", "email", "ava@example.com")
    # the plaintext is nowhere in the stored text (a 3-letter piece of it can occur by chance in
    # 60 random base64 characters, about once in 600 runs: the whole value and its domain cannot)
    assert sealed is not None and sealed.startswith("pii:v1:C000001:email:")
    assert "ava@example.com" not in sealed and "example" not in sealed
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


@pytest.mark.unit
def test_wrong_master_key_is_refused(tmp_path: Path, master: bytes) -> None:
    Keystore(tmp_path / "keystore.json", master).encrypt("C1", "email", "x@example.com")
    with pytest.raises(KeystoreError, match="does not open with this master key"):
        Keystore(tmp_path / "keystore.json", os.urandom(32))
    with pytest.raises(KeystoreError, match="32 bytes"):
        Keystore(tmp_path / "other.json", b"short")
    assert master_key_from(base64.b64encode(master).decode()) == master


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_tokens_are_deterministic_and_keyed(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "a.json", master)
    assert store.token("ava@example.com") == Keystore(tmp_path / "a.json", master).token("ava@example.com")
    assert store.token("ava@example.com") != store.token("ben@example.com")
    other = Keystore(tmp_path / "b.json", master)  # another keystore: another token key
    assert other.token("ava@example.com") != store.token("ava@example.com")
    assert len(store.token("x") or "") == 64 and store.token(None) is None


@pytest.mark.unit
def test_personal_data_cannot_be_loaded_around_the_keystore(
    lh: Lakehouse, reference_files: dict[str, Path]
) -> None:
    from lakehouse.errors import LoadError
    from lakehouse.ingest import load_files

    with pytest.raises(LoadError, match="holds personal data"):
        load_files(lh.catalog, "bronze.customers", [reference_files["customers"]])
    assert len(lh.load("bronze.customers", [reference_files["customers"]]).files_loaded) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
def test_a_forget_elsewhere_is_seen_within_a_second_and_the_key_dropped(
    tmp_path: Path, master: bytes
) -> None:
    clock = FakeClock()
    path = tmp_path / "keystore.json"
    running = Keystore(path, master, clock=clock)  # a long-running process (engine, sink)
    other = Keystore(path, master)  # `lakehouse gdpr forget` in another process
    sealed = running.encrypt("C7", "email", "gone@example.com")
    kept = running.encrypt("C8", "email", "kept@example.com")
    assert running.decrypt(sealed) == "gone@example.com"  # C7's key is now cached here
    other.forget("C7")
    clock.now += 1.0
    with pytest.raises(KeyShredded):
        running.decrypt(sealed)
    with pytest.raises(KeyShredded):
        running.encrypt("C7", "email", "again@example.com")
    with pytest.raises(KeyShredded):
        running.fingerprint("C7", ["1 Oak St"])
    assert "C7" not in running._cache and running.decrypt(kept) == "kept@example.com"


@pytest.mark.unit
def test_writes_refuse_a_forgotten_subject_at_once(tmp_path: Path, master: bytes) -> None:
    clock = FakeClock()  # never advances: only the forced check before a write can see it
    path = tmp_path / "keystore.json"
    running = Keystore(path, master, clock=clock)
    running.encrypt("C7", "email", "gone@example.com")
    Keystore(path, master).forget("C7")
    with pytest.raises(KeyShredded):
        running.ensure({"C7"})
    assert running.shredded({"C7", "C8"}) == {"C7"}


@pytest.mark.unit
def test_the_keystore_file_is_checked_at_most_once_a_second(
    tmp_path: Path, master: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    store = Keystore(tmp_path / "keystore.json", master, clock=clock)
    sealed = store.encrypt("C1", "email", "a@example.com")
    checks = []
    original = Keystore._stat
    monkeypatch.setattr(Keystore, "_stat", lambda self: checks.append(1) or original(self))
    for _ in range(500):
        store.decrypt(sealed)
    assert len(checks) == 0  # the write just checked it, and no time has passed
    clock.now += 0.999
    store.decrypt(sealed)
    assert len(checks) == 0
    clock.now += 0.001
    store.decrypt(sealed)
    store.decrypt(sealed)
    assert len(checks) == 1  # a second later: one check, then none again until the next second


@pytest.mark.unit
def test_a_rotation_elsewhere_is_picked_up(tmp_path: Path, master: bytes) -> None:
    clock = FakeClock()
    path = tmp_path / "keystore.json"
    running = Keystore(path, master, clock=clock)
    old = running.encrypt("C1", "email", "a@example.com")
    other = Keystore(path, master)
    other.rotate()
    new = other.encrypt("C2", "email", "b@example.com")  # a subject created after the rotation
    clock.now += 1.0
    assert running.decrypt(new) == "b@example.com" and running.decrypt(old) == "a@example.com"
    running.encrypt("C3", "email", "c@example.com")  # wrapped under the current KEK, not a destroyed one
    assert Keystore(path, master).decrypt(running.encrypt("C3", "phone", "555")) == "555"
    assert running.status()["kek"] == other.status()["kek"]


_WATCHER = """
import sys, time
from pathlib import Path
from lakehouse.privacy import Keystore, KeyShredded
store = Keystore(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]))
value = sys.argv[3]
print("ready", store.decrypt(value), flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        store.decrypt(value)
    except KeyShredded:
        print("shredded", flush=True)
        sys.exit(0)
    time.sleep(0.02)
print("still decrypts", flush=True)
sys.exit(1)
"""


@pytest.mark.integration
def test_a_running_process_refuses_a_forgotten_subject_within_seconds(tmp_path: Path, master: bytes) -> None:
    import subprocess
    import sys

    path = tmp_path / "keystore.json"
    sealed = Keystore(path, master).encrypt("C7", "email", "gone@example.com")
    assert sealed is not None
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(path), master.hex(), sealed],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "ready gone@example.com"  # key cached there
        Keystore(path, master).forget("C7")
        # the real clock's refresh (the 1 s bound is proven with a fake clock above); the watcher
        # gives up after 30 s and says "still decrypts"
        assert watcher.stdout.readline().strip() == "shredded"
        assert watcher.wait(timeout=10) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()


def _race_for_the_master_key(home: str, subject: str, barrier: Any, out: Any) -> None:
    from lakehouse import Settings
    from lakehouse.privacy import open_keystore

    barrier.wait()
    try:
        settings = Settings(home=Path(home))
        store = open_keystore(settings)
        master_file = settings.state_dir / "keys" / "master.key"
        out.put((subject, master_file.read_text(), store.encrypt(subject, "email", f"{subject}@example.com")))
    except Exception as exc:  # reported to the test, which fails on it
        out.put((subject, "error", repr(exc)))


@pytest.mark.integration
@pytest.mark.parametrize("round_", range(3))
def test_racing_first_loads_create_one_master_key(tmp_path: Path, round_: int) -> None:
    import multiprocessing

    from lakehouse import Settings
    from lakehouse.privacy import open_keystore

    racers = 8
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(racers), context.Queue()
    home = tmp_path / "home"
    processes = [
        context.Process(target=_race_for_the_master_key, args=(str(home), f"C{i}", barrier, out))
        for i in range(racers)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [r for r in results if r[1] == "error"] == []
    assert len({master for _, master, _ in results}) == 1  # every process got the same key
    keys_dir = home / "state" / "keys"
    assert sorted(p.name for p in keys_dir.iterdir() if not p.name.endswith(".lock")) == [
        "keystore.json",
        "master.key",
    ]  # no temporary file left behind
    assert (keys_dir / "master.key").stat().st_mode & 0o777 == 0o600
    assert keys_dir.stat().st_mode & 0o077 == 0
    store = open_keystore(Settings(home=home))  # and one keystore opens everything they wrote
    assert {store.decrypt(sealed) for _, _, sealed in results} == {f"C{i}@example.com" for i in range(racers)}


@pytest.mark.unit
def test_fingerprints_are_per_subject_and_die_with_the_key(tmp_path: Path, master: bytes) -> None:
    store = Keystore(tmp_path / "keystore.json", master)
    address = ["1 Oak St", "Austin", "73301"]
    assert store.fingerprint("C1", address) == store.fingerprint("C1", list(address))
    assert store.fingerprint("C1", address) != store.fingerprint("C2", address)  # no cross-subject guessing
    assert store.fingerprint("C1", address) != store.fingerprint("C1", ["1 Oak St", "Austin", None])
    assert store.fingerprint("C1", ["a", "bc"]) != store.fingerprint("C1", ["ab", "c"])  # no ambiguity
    assert Keystore(tmp_path / "keystore.json", master).fingerprint("C1", address) == store.fingerprint(
        "C1", address
    )
    store.forget("C1")
    with pytest.raises(KeyShredded):
        store.fingerprint("C1", address)


@pytest.mark.unit
def test_only_this_keystores_ciphertexts_pass_the_check(tmp_path: Path, master: bytes) -> None:
    import base64 as b64

    store = Keystore(tmp_path / "keystore.json", master)
    real = store.encrypt("C1", "email", "ava@example.com")
    assert real is not None and store.check(real) is None
    stranger = Keystore(tmp_path / "other.json", os.urandom(32)).encrypt("C1", "email", "ava@example.com")
    store.encrypt("C9", "email", "gone@example.com")
    gone = store.encrypt("C9", "email", "gone@example.com")
    store.forget("C9")
    encoded = b64.urlsafe_b64encode(b"ava@example.com").decode()
    look_alikes = [
        "ava@example.com",
        "pii:v1:ava@example.com",
        f"pii:v1:C1:email:{encoded}",  # plaintext dressed as ciphertext
        f"pii:v1:C1:email:{encoded * 3}",
        f"pii:v1:ava@example.com:email:{encoded}",
        real[:-4],
        real.replace(":email:", ":phone:"),
        real.replace("C1", "C2"),
        real + "A",
        " " + real,
        stranger,
        gone,
        "",
    ]
    for value in look_alikes:
        problem = store.check(value or "")
        assert problem is not None, value
        assert "ava" not in problem and "example" not in problem  # never echoes the value
