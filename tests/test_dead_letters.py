"""Dead letters listed and replayed (issue 11): messages the write path could not land are replayed
through the same path once the user fixed the cause (a contract change in their project, a table
declared since), each landing exactly once however often, concurrently or interrupted a replay
runs; those that still fail stay one row each with their new reason; personal data is opened,
re-encrypted and refused for forgotten customers. Variants are generated from seeds."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from lakehouse import Lakehouse, LakehouseError, NoSuchDeadLetter, Project, Settings
from lakehouse.cli._dead_letters import parse_since
from lakehouse.iceberg import loaded_batch_ids
from lakehouse.ingest import IngestStats, list_dead_letters, replay_dead_letters
from lakehouse.ingest.kafka._committer import Committer, _Record

from .conftest import run_cli

SEEDS = [3, 17, 2026]

# A user's project, version 1: the contract producers have outgrown (see V2).
RENTALS_V1 = """\
tables:
  rentals:
    description: Bike rentals.
    primary_key: [rental_ref]
    ingest_order: ingest_seq
    columns:
      - {name: rental_ref, type: string, required: true}
      - {name: bike_serial, type: int}
      - {name: minutes, type: int}
      - {name: started_at, type: timestamp, required: true}
"""

# Version 2: what the producers now send (a new optional column, a wider serial, version 2
# envelopes), and a table that was not declared when its first messages arrived.
RENTALS_V2 = """\
tables:
  rentals:
    description: Bike rentals.
    version: 2
    primary_key: [rental_ref]
    ingest_order: ingest_seq
    columns:
      - {name: rental_ref, type: string, required: true}
      - {name: bike_serial, type: long}
      - {name: minutes, type: int}
      - {name: started_at, type: timestamp, required: true}
      - {name: colour, type: string}
  docks:
    description: Docking points, declared after their first messages arrived.
    primary_key: [dock_id]
    columns:
      - {name: dock_id, type: string, required: true}
      - {name: station_code, type: string}
"""

# Personal data: a drivers' log, v1 without the licence class that producers now send.
DRIVERS_V1 = """\
tables:
  driver_logs:
    description: Driver shifts, with personal data.
    primary_key: [log_id]
    pii: [driver_name, phone]
    pii_subject: driver_id
    pii_normalize: {driver_name: trim, phone: digits}
    pii_tokens: [phone]
    columns:
      - {name: log_id, type: string, required: true}
      - {name: driver_id, type: string, required: true}
      - {name: driver_name, type: string}
      - {name: phone, type: string}
"""

DRIVERS_V2 = DRIVERS_V1 + "      - {name: licence_class, type: string}\n"

PROJECT_WITHOUT_DRIVERS = "tables:\n  stations:\n    primary_key: [code]\n    columns: [{name: code, type: string, required: true}]\n"


def write_project(root: Path, contracts: str) -> Project:
    (root / "contracts").mkdir(parents=True, exist_ok=True)
    (root / "contracts" / "tables.yml").write_text(contracts)
    return Project(root)


def envelope(schema: str, data: dict[str, Any], version: int = 1) -> bytes:
    return orjson.dumps({"schema": schema, "version": version, "data": data})


# --- generated traffic: good messages, messages a v2 contract fixes, messages nothing fixes ------


@dataclass
class Traffic:
    batches: dict[tuple[str, int], list[_Record]] = field(default_factory=dict)
    good: set[str] = field(default_factory=set)  # rental refs that land on arrival
    fixable: dict[str, str] = field(default_factory=dict)  # dead letter id -> rental ref or dock id
    failing: dict[str, str] = field(default_factory=dict)  # dead letter id -> kind
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> data sent

    def add(self, topic: str, partition: int, value: bytes) -> str:
        records = self.batches.setdefault((topic, partition), [])
        offset = sum(len(r) for (t, _), r in self.batches.items() if t == topic)  # one offset space
        records.append(_Record(offset, f"key-{offset}".encode(), value))
        return f"{topic}/{partition}/{offset}"


def traffic(seed: int) -> Traffic:
    """Rentals and docks messages in a seeded order: good ones, ones the v2 contract accepts (an
    unknown column, an int overflow, a newer envelope, a table not declared yet) and ones it
    does not (a bad number or date, a missing key, a version newer still, not JSON)."""
    rng = random.Random(seed)
    t = Traffic()
    kinds = ["good"] * rng.randint(4, 8)
    kinds += ["colour", "big-serial", "version-2", "dock"] * rng.randint(1, 3)
    kinds += ["bad-minutes", "bad-date", "no-ref", "version-3", "not-json"]
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        ref = f"R{seed}-{i}"
        data: dict[str, Any] = {
            "rental_ref": ref,
            "bike_serial": rng.randint(1, 9999),
            "minutes": rng.randint(1, 240),
            "started_at": f"2026-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:15:00",
        }
        version = 1
        if kind == "colour":
            data["colour"] = rng.choice(["red", "teal", "ochre", "vermilion", "ünïcode blue"])
        elif kind == "big-serial":
            data["bike_serial"] = rng.randint(2**31, 2**40)
        elif kind == "version-2":
            version, data["colour"] = 2, rng.choice(["black", "white"])
        elif kind == "bad-minutes":
            data["minutes"] = rng.choice(["abc", "twelve", "12.5x", "--"])
        elif kind == "bad-date":
            data["started_at"] = rng.choice(["2026-13-45", "yesterday", "2026-02-30T10:00:00"])
        elif kind == "no-ref":
            del data["rental_ref"]
        elif kind == "version-3":
            version = 3
        partition = rng.randint(0, 1)
        if kind == "dock":
            dock = {"dock_id": f"K{seed}-{i}", "station_code": rng.choice(["ST1", "ST2"])}
            letter = t.add("docks", 0, envelope("bronze.docks", dock))
            t.fixable[letter] = dock["dock_id"]
            continue
        value = (
            b"{rental_ref: " + ref.encode()
            if kind == "not-json"
            else envelope("bronze.rentals", data, version)
        )
        letter = t.add("rentals", partition, value)
        t.sent[ref] = data
        if kind == "good":
            t.good.add(ref)
        elif kind in ("colour", "big-serial", "version-2"):
            t.fixable[letter] = ref
        else:
            t.failing[letter] = kind
    return t


def deliver(lh: Lakehouse, t: Traffic, keystore: Any = None) -> None:
    """The Kafka route (the sink's committer, in process): good rows land, the rest become dead letters."""
    Committer(lh.catalog, lh.project, IngestStats(), keystore=keystore).commit_batch(t.batches)


def rows_of(lh: Lakehouse, identifier: str) -> list[dict[str, Any]]:
    layer, name = identifier.split(".")
    if not lh.catalog.table_exists((layer, name)):
        return []
    return list(lh.catalog.load_table((layer, name)).scan().to_arrow().to_pylist())


def letters(lh: Lakehouse) -> dict[str, dict[str, Any]]:
    rows = rows_of(lh, "bronze.dead_letters")
    by_id = {f"{r['source']}/{r['source_partition']}/{r['source_offset']}": r for r in rows}
    assert len(by_id) == len(rows)  # one row per dead letter, whatever was replayed
    return by_id


@pytest.fixture
def bikes(tmp_path: Path, home: Path) -> Iterator[Callable[[str], Lakehouse]]:
    """Handles on one home under the project's v1 or v2 (two directories: contracts are read once
    per directory and process, as a running service reads them)."""
    projects = {
        "v1": write_project(tmp_path / "bikes-v1", RENTALS_V1),
        "v2": write_project(tmp_path / "bikes-v2", RENTALS_V2),
    }
    opened: list[Lakehouse] = []

    def open_(version: str) -> Lakehouse:
        lh = Lakehouse(Settings(home=home, project_dir=projects[version].root))
        opened.append(lh)
        return lh

    yield open_
    for lh in opened:
        lh.close()


def refs(rows: list[dict[str, Any]], column: str = "rental_ref") -> Counter[str]:
    return Counter(r[column] for r in rows)


# --- replay: exactly once, failures kept in place ---------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("seed", SEEDS)
def test_fixed_dead_letters_land_once_and_the_others_stay_with_their_reason(
    bikes: Callable[[str], Lakehouse], seed: int
) -> None:
    t = traffic(seed)
    v1 = bikes("v1")
    deliver(v1, t)
    assert refs(rows_of(v1, "bronze.rentals")) == Counter(t.good)
    listed = {d.id: d for d in list_dead_letters(v1.catalog, v1.project)}
    assert set(listed) == set(t.fixable) | set(t.failing)
    assert not any(d.replayed or d.replay_attempts for d in listed.values())
    assert all(d.payload is None for d in listed.values())  # payloads only when asked for
    docks = [i for i in t.fixable if i.startswith("docks/")]
    assert all("no contract declares bronze.docks" in listed[i].reason for i in docks)
    assert all(listed[i].route == f"kafka docks/0 offset {i.rsplit('/', 1)[1]}" for i in docks)

    v2 = bikes("v2")
    report = replay_dead_letters(v2.catalog, v2.project, everything=True)
    rentals_fixed = {i: r for i, r in t.fixable.items() if i.startswith("rentals/")}
    assert sorted(report.landed["bronze.rentals"]) == sorted(rentals_fixed)
    assert sorted(report.landed.get("bronze.docks", [])) == sorted(docks)
    assert sorted(i for i, _, _ in report.failed) == sorted(t.failing)
    landed = rows_of(v2, "bronze.rentals")
    assert refs(landed) == Counter(t.good | set(rentals_fixed.values()))  # each exactly once
    by_ref = {r["rental_ref"]: r for r in landed}
    for ref in rentals_fixed.values():  # the values as sent: the wider serial, the new column
        assert by_ref[ref]["bike_serial"] == t.sent[ref]["bike_serial"]
        assert by_ref[ref]["colour"] == t.sent[ref].get("colour")
    assert refs(rows_of(v2, "bronze.docks"), "dock_id") == Counter(t.fixable[i] for i in docks)

    kept = letters(v2)  # still one row per dead letter: failures were rewritten, not appended
    assert set(kept) == set(t.fixable) | set(t.failing)
    for letter_id, kind in t.failing.items():
        assert kept[letter_id]["replay_attempts"] == 1 and kept[letter_id]["last_replay_at"] is not None
        expected = {
            "bad-minutes": "'minutes'",
            "bad-date": "'started_at'",
            "no-ref": "rental_ref",
            "version-3": "version 3 is newer than contract bronze.rentals v2",
            "not-json": "not JSON",
        }[kind]
        assert expected in kept[letter_id]["reason"], kept[letter_id]["reason"]
    listed = {d.id: d for d in list_dead_letters(v2.catalog, v2.project)}
    assert {i for i, d in listed.items() if d.replayed} == set(t.fixable)

    again = replay_dead_letters(v2.catalog, v2.project, everything=True)  # twice: nothing lands twice
    assert again.landed == {} and sorted(again.already) == sorted(t.fixable)
    assert refs(rows_of(v2, "bronze.rentals")) == refs(landed)
    assert all(letters(v2)[i]["replay_attempts"] == 2 for i in t.failing)
    assert len(letters(v2)) == len(kept)


@pytest.mark.unit
def test_replayed_rows_keep_their_place_in_the_ingest_order(bikes: Callable[[str], Lakehouse]) -> None:
    """A replayed row counts as received when its dead letter was kept, not at the replay: a
    correction sent after the original message stays the latest copy downstream."""
    t = traffic(5)
    deliver(bikes("v1"), t)
    letter_id, ref = next((i, r) for i, r in sorted(t.fixable.items()) if i.startswith("rentals/"))
    correction = envelope("bronze.rentals", {**t.sent[ref], "minutes": 9999}, version=2)
    v2 = bikes("v2")
    Committer(v2.catalog, v2.project, IngestStats()).commit_batch(
        {("rentals", 0): [_Record(1000, None, correction)]}
    )
    replay_dead_letters(v2.catalog, v2.project, table="bronze.rentals")
    copies = sorted(
        (r for r in rows_of(v2, "bronze.rentals") if r["rental_ref"] == ref), key=lambda r: r["ingest_seq"]
    )
    assert [r["minutes"] for r in copies] == [t.sent[ref]["minutes"], 9999]  # the correction is the latest
    received = letters(v2)[letter_id]["received_at"]
    micros = (received - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    assert micros <= copies[0]["ingest_seq"] < micros + len(t.fixable) + len(t.failing)


# --- choosing, unknown ids, dry runs -----------------------------------------------------------------


@pytest.mark.unit
def test_replay_by_id_and_by_table_and_mistakes_named(bikes: Callable[[str], Lakehouse]) -> None:
    t = traffic(11)
    v1 = bikes("v1")
    deliver(v1, t)
    v2 = bikes("v2")
    chosen = sorted(t.fixable)[:2]
    report = replay_dead_letters(v2.catalog, v2.project, ids=chosen)
    assert sorted(i for ids in report.landed.values() for i in ids) == chosen
    assert not report.failed  # only what was named was tried
    assert all(letters(v2)[i]["replay_attempts"] is None for i in t.failing)
    typo = chosen[0] + "0"
    with pytest.raises(NoSuchDeadLetter, match=rf"no dead letter {typo} \(did you mean"):
        replay_dead_letters(v2.catalog, v2.project, ids=[typo, chosen[1]])
    with pytest.raises(
        NoSuchDeadLetter,
        match=r"no dead letters of bronze\.rental: dead letters are kept for bronze\.docks, bronze\.rentals",
    ):
        replay_dead_letters(v2.catalog, v2.project, table="bronze.rental")
    with pytest.raises(LakehouseError, match="choose the dead letters"):
        replay_dead_letters(v2.catalog, v2.project, table="bronze.rentals", everything=True)
    docks = replay_dead_letters(v2.catalog, v2.project, table="bronze.docks")
    assert set(docks.landed) == {"bronze.docks"} and not docks.failed


@pytest.mark.unit
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_dry_run_says_what_would_happen_and_writes_nothing(
    bikes: Callable[[str], Lakehouse], seed: int
) -> None:
    t = traffic(seed)
    v1 = bikes("v1")
    deliver(v1, t)
    v2 = bikes("v2")

    def state() -> dict[str, Any]:
        tables = {
            f"{ns[0]}.{name}": v2.catalog.load_table((ns[0], name)).metadata.current_snapshot_id
            for ns in v2.catalog.list_namespaces()
            for _, name in v2.catalog.list_tables(ns)
        }
        return {
            "tables": tables,
            "keys": v2.keystore.path.read_bytes() if v2.keystore.path.exists() else None,
        }

    before = state()
    dry = replay_dead_letters(v2.catalog, v2.project, everything=True, dry_run=True)
    assert state() == before and "bronze.docks" not in before["tables"]  # no table created either
    real = replay_dead_letters(v2.catalog, v2.project, everything=True)
    assert dry.as_dict() == {**real.as_dict(), "dry_run": True}


# --- crashes and concurrent replays --------------------------------------------------------------------


@pytest.mark.unit
def test_a_crash_between_staging_and_commit_lands_nothing_and_a_retry_lands_once(
    bikes: Callable[[str], Lakehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lakehouse.iceberg._write as iceberg_write

    t = traffic(7)
    v1 = bikes("v1")
    deliver(v1, t)
    v2 = bikes("v2")
    real = iceberg_write.fast_append_files

    def crash_after_staging(tx: Any, summary: dict[str, str], *args: Any) -> None:
        real(tx, summary, *args)  # the data files are written and staged...
        if "lakehouse.replayed-dead-letters" in summary:
            raise RuntimeError("killed before the commit")  # ...and the process dies

    monkeypatch.setattr(iceberg_write, "fast_append_files", crash_after_staging)
    with pytest.raises(RuntimeError, match="killed before the commit"):
        replay_dead_letters(v2.catalog, v2.project, table="bronze.rentals")
    assert refs(rows_of(v2, "bronze.rentals")) == Counter(t.good)
    table = v2.catalog.load_table(("bronze", "rentals"))
    assert not [b for b in loaded_batch_ids(table) if b.startswith("dead-letter:")]
    assert not any(d.replayed for d in list_dead_letters(v2.catalog, v2.project))
    monkeypatch.setattr(iceberg_write, "fast_append_files", real)

    # a crash after the rows landed, before the failed attempts were recorded
    import lakehouse.ingest._replay as replay_module

    def crash(*args: Any) -> None:
        raise RuntimeError("killed before recording the attempts")

    monkeypatch.setattr(replay_module, "replace_rows", crash)
    with pytest.raises(RuntimeError, match="recording the attempts"):
        replay_dead_letters(v2.catalog, v2.project, table="bronze.rentals")
    monkeypatch.undo()
    fixed = {r for i, r in t.fixable.items() if i.startswith("rentals/")}
    assert refs(rows_of(v2, "bronze.rentals")) == Counter(t.good | fixed)
    retry = replay_dead_letters(v2.catalog, v2.project, table="bronze.rentals")
    assert retry.landed == {} and sorted(retry.already) == sorted(
        i for i in t.fixable if i.startswith("rentals/")
    )
    assert refs(rows_of(v2, "bronze.rentals")) == Counter(t.good | fixed)
    assert all(letters(v2)[i]["replay_attempts"] == 1 for i in t.failing)


@pytest.mark.unit
def test_a_replay_that_loses_the_race_lands_nothing_twice(
    bikes: Callable[[str], Lakehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: a second replay commits between the first one's plan and its commit."""
    import lakehouse.iceberg._commit as commit_module

    t = traffic(23)
    deliver(bikes("v1"), t)
    first, second = bikes("v2"), bikes("v2")
    real = commit_module.append_atomically
    inner: dict[str, Any] = {}

    def racing(table: Any, data: Any, properties: dict[str, str]) -> None:
        if "lakehouse.replayed-dead-letters" in properties and not inner:
            inner["running"] = True  # its own commits go straight through
            inner["report"] = replay_dead_letters(second.catalog, second.project, everything=True)
        real(table, data, properties)

    monkeypatch.setattr(commit_module, "append_atomically", racing)
    outer = replay_dead_letters(first.catalog, first.project, everything=True)
    won = inner["report"]
    assert sorted(i for ids in won.landed.values() for i in ids) == sorted(t.fixable)
    assert sorted(i for ids in outer.landed.values() for i in ids) == []
    assert sorted(outer.already) == sorted(t.fixable)
    fixed = {r for i, r in t.fixable.items() if i.startswith("rentals/")}
    assert refs(rows_of(first, "bronze.rentals")) == Counter(t.good | fixed)
    assert all(letters(first)[i]["replay_attempts"] == 2 for i in t.failing)  # both attempts counted


@pytest.mark.unit
def test_concurrent_replays_land_each_dead_letter_once(bikes: Callable[[str], Lakehouse]) -> None:
    t = traffic(31)
    deliver(bikes("v1"), t)
    handles = [bikes("v2") for _ in range(3)]
    start = threading.Barrier(len(handles))
    reports: list[Any] = []
    errors: list[BaseException] = []

    def replay(lh: Lakehouse) -> None:
        start.wait()
        try:
            reports.append(replay_dead_letters(lh.catalog, lh.project, everything=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replay, args=(lh,)) for lh in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    landed = Counter(i for r in reports for ids in r.landed.values() for i in ids)
    assert landed == Counter(list(t.fixable))  # every fixed dead letter landed by exactly one replay
    fixed = {r for i, r in t.fixable.items() if i.startswith("rentals/")}
    assert refs(rows_of(handles[0], "bronze.rentals")) == Counter(t.good | fixed)
    assert len(letters(handles[0])) == len(t.fixable) + len(t.failing)


# --- personal data ---------------------------------------------------------------------------------


def driver(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "log_id": f"L{i}",
        "driver_id": f"D{i:03d}",
        "driver_name": f"  Zed Quinn{i} ",
        "phone": f"+1 (512) 555-{i:04d}",
        **extra,
    }


@pytest.mark.unit
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_personal_dead_letters_replay_re_encrypted_and_forgotten_drivers_are_refused(
    tmp_path: Path, home: Path, seed: int
) -> None:
    rng = random.Random(seed)
    ids = rng.sample(range(1, 500), 6)
    sent = {i: driver(i, licence_class=rng.choice(["B", "C1", "CE", "D"])) for i in ids}
    interrupted, erased = ids[0], ids[1]  # key destroyed only / fully forgotten
    batch = {
        ("driver_logs", 0): [
            _Record(n, f"D{i:03d}".encode(), envelope("bronze.driver_logs", sent[i]))
            for n, i in enumerate(ids)
        ]
    }
    v1 = write_project(tmp_path / "drivers-v1", DRIVERS_V1)
    v2 = write_project(tmp_path / "drivers-v2", DRIVERS_V2)
    with Lakehouse(Settings(home=home, project_dir=v1.root)) as lh:
        keystore = lh.keystore
        Committer(lh.catalog, lh.project, IngestStats(), keystore=keystore).commit_batch(batch)
        kept = letters(lh)
        assert len(kept) == len(ids) and not rows_of(lh, "bronze.driver_logs")
        for n, i in enumerate(ids):
            letter = kept[f"driver_logs/0/{n}"]
            assert letter["pii_subject"] == f"D{i:03d}" and b"Quinn" not in letter["payload"]
            assert "['licence_class']" in letter["reason"] and "Quinn" not in letter["reason"]
    with Lakehouse(Settings(home=home, project_dir=v2.root)) as lh:
        from lakehouse.privacy import forget

        keystore = lh.keystore
        keystore.forget(f"D{interrupted:03d}")  # a gdpr forget stopped after destroying the key
        forget(lh.catalog, keystore, f"D{erased:03d}", lh.project)  # a whole one: dead letter deleted
        shown = {
            d.id: d for d in list_dead_letters(lh.catalog, lh.project, show_payload=True, keystore=keystore)
        }
        assert "driver_logs/0/1" not in shown  # erased with its customer
        assert (
            shown["driver_logs/0/0"].payload
            == f"<withheld: the data key of D{interrupted:03d} was destroyed (gdpr forget)>"
        )
        for n, i in list(enumerate(ids))[2:]:  # the operator sees the message as sent
            assert json.loads(shown[f"driver_logs/0/{n}"].payload or "")["data"] == sent[i]
        audit = rows_of(lh, "audit.key_log")
        assert [r for r in audit if r["operation"] == "show-dead-letters"]
        with pytest.raises(NoSuchDeadLetter, match="erased"):
            replay_dead_letters(lh.catalog, lh.project, ids=["driver_logs/0/1"])

        report = replay_dead_letters(lh.catalog, lh.project, table="bronze.driver_logs")
        assert sorted(report.landed["bronze.driver_logs"]) == [
            f"driver_logs/0/{n}" for n in range(2, len(ids))
        ]
        (refused,) = report.failed
        assert refused[0] == "driver_logs/0/0" and "was destroyed" in refused[2]
        landed = {r["log_id"]: r for r in rows_of(lh, "bronze.driver_logs")}
        assert set(landed) == {f"L{i}" for i in ids[2:]}
        for i in ids[2:]:  # re-encrypted under the driver's key, normalised, tokens computed
            row = landed[f"L{i}"]
            assert row["driver_name"].startswith(f"pii:v1:D{i:03d}:driver_name:")
            assert keystore.decrypt(row["driver_name"]) == f"Zed Quinn{i}"
            assert keystore.decrypt(row["phone"]) == f"1512555{i:04d}"
            assert row["phone_token"] == keystore.token(f"1512555{i:04d}")
            assert row["licence_class"] == sent[i]["licence_class"]
        after = letters(lh)["driver_logs/0/0"]
        assert after["payload"] is None and after["message_key"] is None  # kept without the message
        assert after["replay_attempts"] == 1 and "destroyed" in after["reason"]


@pytest.mark.unit
def test_a_table_declared_later_with_personal_data_encrypts_on_replay_and_refuses_the_forgotten(
    tmp_path: Path, home: Path
) -> None:
    """Messages for a table no contract declared were kept as received (the platform could not
    know they were personal); once declared, replay encrypts them, and a forgotten driver's
    message is refused and dropped from its dead letter."""
    ids = [5, 6, 7, 8]
    batch = {
        ("driver_logs", 1): [
            _Record(n, None, envelope("bronze.driver_logs", driver(i))) for n, i in enumerate(ids)
        ]
    }
    before = write_project(tmp_path / "before", PROJECT_WITHOUT_DRIVERS)
    after = write_project(tmp_path / "after", DRIVERS_V1)
    with Lakehouse(Settings(home=home, project_dir=before.root)) as lh:
        Committer(lh.catalog, lh.project, IngestStats(), keystore=None).commit_batch(batch)
        assert all("no contract declares bronze.driver_logs" in r["reason"] for r in letters(lh).values())
    with Lakehouse(Settings(home=home, project_dir=after.root)) as lh:
        keystore = lh.keystore
        keystore.ensure({"D007"})
        keystore.forget("D007")
        shown = {
            d.id: d.payload
            for d in list_dead_letters(lh.catalog, lh.project, show_payload=True, keystore=keystore)
        }
        assert shown["driver_logs/1/2"] == "<withheld: D007 was forgotten (gdpr forget)>"
        assert "Quinn5" in (shown["driver_logs/1/0"] or "")
        dry = replay_dead_letters(lh.catalog, lh.project, everything=True, dry_run=True)
        assert "D005" not in keystore.subjects()  # a dry run makes no data key
        report = replay_dead_letters(lh.catalog, lh.project, everything=True)
        assert dry.as_dict() == {**report.as_dict(), "dry_run": True}
        assert sorted(report.landed["bronze.driver_logs"]) == [
            "driver_logs/1/0",
            "driver_logs/1/1",
            "driver_logs/1/3",
        ]
        ((letter_id, _, reason),) = report.failed
        assert letter_id == "driver_logs/1/2" and "D007 was forgotten" in reason
        rows = rows_of(lh, "bronze.driver_logs")
        assert {keystore.decrypt(r["driver_name"]) for r in rows} == {
            "Zed Quinn5",
            "Zed Quinn6",
            "Zed Quinn8",
        }
        refused = letters(lh)["driver_logs/1/2"]
        assert refused["payload"] is None and "dropped" in refused["reason"]


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", dt.datetime(2026, 5, 1, 10, 30, tzinfo=dt.UTC)),
        ("6h", dt.datetime(2026, 5, 1, 6, 0, tzinfo=dt.UTC)),
        ("2d", dt.datetime(2026, 4, 29, 12, 0, tzinfo=dt.UTC)),
        ("1W", dt.datetime(2026, 4, 24, 12, 0, tzinfo=dt.UTC)),
        ("2026-04-30", dt.datetime(2026, 4, 30, tzinfo=dt.UTC)),
        ("2026-04-30T08:15:00+02:00", dt.datetime(2026, 4, 30, 6, 15, tzinfo=dt.UTC)),
    ],
)
def test_since_takes_times_and_ages(text: str, expected: dt.datetime) -> None:
    assert parse_since(text, now=dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)) == expected


@pytest.mark.integration
def test_the_cli_lists_and_replays_dead_letters_after_the_project_is_fixed(
    tmp_path: Path, home: Path
) -> None:
    project = write_project(tmp_path / "bikes", RENTALS_V1)
    env = {"LAKEHOUSE_PROJECT_DIR": str(project.root)}
    t = traffic(41)
    with Lakehouse(Settings(home=home, project_dir=project.root)) as lh:
        deliver(lh, t)

    listed = run_cli("dead-letters", "list", "-o", "json", home=home, env=env)
    assert listed.returncode == 0, listed.stderr
    entries = {e["id"]: e for e in json.loads(listed.stdout)}
    assert set(entries) == set(t.fixable) | set(t.failing)
    assert all(not e["replayed"] and "payload" not in e for e in entries.values())
    colours = run_cli(
        "dead-letters", "list", "--reason-like", "%COLOUR%", "--since", "1h", home=home, env=env
    )
    assert colours.returncode == 0 and "['colour']" in colours.stdout and "'minutes'" not in colours.stdout
    text = run_cli("dead-letters", "list", "--table", "bronze.docks", home=home, env=env)
    assert "kafka docks/0 offset" in text.stdout and "rentals/" not in text.stdout

    (project.root / "contracts" / "tables.yml").write_text(RENTALS_V2)  # the user fixes the project
    dry = run_cli("dead-letters", "replay", "--all", "--dry-run", home=home, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout and "would land" in dry.stdout
    replayed = run_cli("dead-letters", "replay", "--all", "-o", "json", home=home, env=env)
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert sorted(i for t_ in report["landed"].values() for i in t_["dead_letters"]) == sorted(t.fixable)
    assert sorted(i for g in report["still_failing"] for i in g["dead_letters"]) == sorted(t.failing)
    again = run_cli("dead-letters", "replay", "--table", "bronze.rentals", home=home, env=env)
    assert again.returncode == 0, again.stderr
    assert "landed" not in again.stdout.replace("not landed again", "")
    assert "already replayed, not landed again" in again.stdout and "still failing" in again.stdout
    with Lakehouse(Settings(home=home, project_dir=project.root)) as lh:
        fixed = {r for i, r in t.fixable.items() if i.startswith("rentals/")}
        assert refs(rows_of(lh, "bronze.rentals")) == Counter(t.good | fixed)
    after = {
        e["id"]: e
        for e in json.loads(run_cli("dead-letters", "list", "-o", "json", home=home, env=env).stdout)
    }
    assert {i for i, e in after.items() if e["replayed"]} == set(t.fixable)
    assert {e["replay_attempts"] for i, e in after.items() if i in t.failing} == {2}

    unknown = run_cli("dead-letters", "replay", "--id", "nope/0/1", home=home, env=env)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines() == [
        "error: no dead letter nope/0/1: ids are SOURCE/PARTITION/OFFSET as `lakehouse dead-letters list` "
        "shows them (a forgotten customer's dead letters are erased); nothing was replayed"
    ]
    unchosen = run_cli("dead-letters", "replay", home=home, env=env)
    assert (
        unchosen.returncode == 2 and "--table LAYER.TABLE, --id ID (repeatable) or --all" in unchosen.stderr
    )
