"""Personal data on every ingest route, as an attacker would try it: rows as received become rows
as stored through one function (files, the Kafka sink's committer, the edge gateway's lander),
producers cannot supply what the platform computes (tokens, fingerprints, the ingest order), and
dead letters hold no plaintext."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import Lakehouse, Project, Settings
from lakehouse.contracts._contracts import load_contracts, parse_contracts
from lakehouse.errors import LakehouseError, LoadError, SchemaMismatchError
from lakehouse.ingest import IngestStats
from lakehouse.ingest import _write as _ingest
from lakehouse.ingest._write import as_stored, check_personal, ingest_sequence, received_schema
from lakehouse.ingest.kafka._committer import Committer, PackedRecords, _pack, _Record
from lakehouse.privacy import DEAD_LETTER_SUBJECT, Keystore

pytestmark = pytest.mark.unit

CUSTOMERS = load_contracts()["bronze.customers"]
READINGS = load_contracts()["bronze.sensor_readings"]


def customer(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "customer_id": f"C{i:06d}",
        "full_name": f"  Ava Quinn{i} ",
        "email": f"  AVA.QUINN{i}@Example.COM ",
        "phone": f"+1 (512) 555-{i:04d}",
        "birth_date": "1980-02-29",
        "street": f" {i} Secret Garden Lane ",
        "city": " Zanzibar City",
        "postal_code": f"7{i:04d} ",
        "home_store_id": "S001",
        "updated_at": "2026-03-02T10:00:00",
        **overrides,
    }


def envelope(data: dict[str, Any], schema: str = "bronze.customers") -> bytes:
    return orjson.dumps({"schema": schema, "version": 1, "data": data})


# each holds a character no base64url ciphertext has (a space, a dot, a bracket, a plus) or is
# long enough, so that random ciphertext never matches ("555-" did, about once in 100 runs)
PLAINTEXT_MARKERS = (
    "ava quinn",
    "ava.quinn",
    "secret garden",
    "zanzibar",
    "(512) 555",
    "+1512555",
    "example.com",
)


def assert_no_plaintext(blob: bytes | str) -> None:
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    leaked = [m for m in PLAINTEXT_MARKERS if m.lower() in text.lower()]
    assert leaked == [], leaked


@pytest.fixture
def lh(home: Path) -> Iterator[Lakehouse]:
    with Lakehouse(Settings(home=home)) as lakehouse:
        yield lakehouse


# --- the one function -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        {"email_token": "0" * 64},  # a token chosen by the producer would join with anyone's
        {"phone_token": "f" * 64},
        {"address_fingerprint": "0" * 64},  # would hide or fake an address change
        {"EMAIL_TOKEN": "x"},
        {"email_token": None},
        {"colour": "red"},
    ],
)
def test_producers_cannot_supply_what_the_platform_computes(lh: Lakehouse, forged: dict[str, Any]) -> None:
    rows = pa.Table.from_pylist([{**customer(1), **forged}])
    with pytest.raises(SchemaMismatchError, match=r"not sent to bronze\.customers"):
        as_stored(rows, CUSTOMERS, lh.keystore)


def test_without_a_keystore_personal_data_is_refused_not_written_in_clear() -> None:
    rows = pa.Table.from_pylist([customer(1)])
    with pytest.raises(LoadError, match="holds personal data"):
        as_stored(rows, CUSTOMERS, None)


@pytest.mark.parametrize(
    "subject",
    ["", "C1:email", DEAD_LETTER_SUBJECT, "#C1", "C1\x00", "C1\n", "C1\x1b[31m", "C" * 201],
)
def test_subjects_that_cannot_name_a_key_are_refused(lh: Lakehouse, subject: str) -> None:
    rows = pa.Table.from_pylist([customer(1), customer(2, customer_id=subject)])
    with pytest.raises(SchemaMismatchError, match="row 2: the data subject"):
        as_stored(rows, CUSTOMERS, lh.keystore)


def test_stored_rows_hold_normalised_ciphertext_tokens_and_fingerprints(lh: Lakehouse) -> None:
    keystore = lh.keystore
    rows = pa.Table.from_pylist(
        [customer(1), customer(1, street="1 Secret Garden Lane", updated_at="2026-04-01")]
    )
    stored = as_stored(rows, CUSTOMERS, keystore)
    assert stored.schema.names == CUSTOMERS.stored_arrow_schema().names
    first, again = stored.to_pylist()
    assert all(first[c].startswith("pii:v1:C000001:") for c in CUSTOMERS.pii)
    assert_no_plaintext(json.dumps(stored.to_pylist(), default=str))
    assert keystore.decrypt(first["email"]) == "ava.quinn1@example.com"
    assert keystore.decrypt(first["phone"]) == "15125550001"
    assert keystore.decrypt(first["street"]) == "1 Secret Garden Lane"  # trimmed
    assert keystore.decrypt(first["postal_code"]) == "70001"
    assert first["email_token"] == keystore.token("ava.quinn1@example.com")
    assert first["street"] != again["street"]  # a fresh nonce every time...
    assert first["address_fingerprint"] == again["address_fingerprint"]  # ...the same address
    check_personal(stored, set(CUSTOMERS.pii), keystore, "bronze.customers")


@pytest.mark.parametrize(
    "value",
    [
        "ava@example.com",
        "pii:v1:ava@example.com",
        "pii:v1:C000001:email:YXZhQGV4YW1wbGUuY29t",  # base64 of the plaintext, dressed up
        "PII:V1:C000001:email:AAAA",
        "",
    ],
)
def test_a_model_with_a_look_alike_in_a_personal_column_is_refused(lh: Lakehouse, value: str) -> None:
    stored = as_stored(pa.Table.from_pylist([customer(1)]), CUSTOMERS, lh.keystore)
    forged = stored.set_column(stored.schema.get_field_index("email"), "email", pa.array([value]))
    with pytest.raises(
        LakehouseError, match=r"gold.dim_customer.email row 1 is not this keystore's ciphertext"
    ) as info:
        check_personal(forged, {"email", "full_name"}, lh.keystore, "gold.dim_customer")
    if value:  # the refusal never quotes the value (the empty string is in every text)
        assert value not in str(info.value)


# --- the Kafka route: the sink's committer ------------------------------------------------------


def _batch(messages: list[tuple[bytes | None, bytes | None]]) -> dict[tuple[str, int], list[Any]]:
    pending: dict[tuple[str, int], list[Any]] = {}
    for offset, (key, value) in enumerate(messages):
        pending.setdefault(("customers", offset % 2), []).append(_Record(offset, key, value))
    return pending


@pytest.mark.parametrize(
    ("split", "blank", "first"),
    [("\n", "", 3), ("\n", " ", 11), ("\r", "\t", 4), ("\r\n", " \t ", 12), ("\n", "\r", 0), ("\r", "", 15)],
)
def test_a_message_of_two_lines_cannot_shift_rows_onto_a_blank_message(
    lh: Lakehouse, split: str, blank: str, first: int
) -> None:
    """The committer process parses a clean batch from its newline-joined values: a message
    holding two envelopes on two lines, and one the JSON reader would skip as blank, must not
    pass as two messages (every later row would land under another message's offset)."""
    lh.keystore.ensure({f"C{i:06d}" for i in range(20)})
    messages: list[tuple[bytes | None, bytes | None]] = [(None, envelope(customer(i))) for i in range(16)]
    two = envelope(customer(100)) + split.encode() + envelope(customer(101))
    second = (first + 5) % len(messages)  # the blank one comes after or before the other
    messages[first] = (None, two)
    messages[second] = (None, blank.encode())
    pending = {tp: PackedRecords(_pack(records)) for tp, records in _batch(messages).items()}
    Committer(lh.catalog, None, IngestStats(), keystore=lh.keystore).commit_batch(pending)

    dead = lh.table("bronze.dead_letters").scan().to_arrow().to_pylist()
    assert sorted(d["source_offset"] for d in dead) == sorted([first, second])
    landed = lh.table("bronze.customers").scan().to_arrow()
    assert landed.num_rows == len(messages) - 2


def test_a_commit_another_sink_raced_is_planned_again_and_counted_as_a_conflict(lh: Lakehouse) -> None:
    ours, theirs = (Committer(lh.catalog, None, IngestStats(), keystore=lh.keystore) for _ in range(2))
    land, raced = ours.writer.land, []

    def land_after_a_race(table: Any, plan: Any) -> Any:
        def plan_then_race(current: Any) -> Any:
            planned = plan(current)
            if not raced:  # the other sink commits its partition between our read and our commit
                raced.append(
                    theirs.commit_batch({("customers", 1): [_Record(7, None, envelope(customer(7)))]})
                )
            return planned

        return land(table, plan_then_race)

    ours.writer.land = land_after_a_race  # type: ignore[method-assign]
    ours.commit_batch({("customers", 0): [_Record(3, None, envelope(customer(3)))]})

    assert raced and ours.stats.commit_conflicts == 1 and theirs.stats.commit_conflicts == 0
    assert ours.stats.commits == 1
    ids = sorted(r["customer_id"] for r in lh.table("bronze.customers").scan().to_arrow().to_pylist())
    assert ids == ["C000003", "C000007"]  # both partitions' rows, once each


def test_the_sink_lands_customers_encrypted_and_seals_their_dead_letters(lh: Lakehouse) -> None:
    keystore = lh.keystore
    keystore.ensure({"C900001"})
    keystore.forget("C900001")
    good = [(f"C{i:06d}".encode(), envelope(customer(i))) for i in range(40)]
    poison = {
        b"bad-date": envelope(customer(900, birth_date="1980-13-45")),
        b"forged-token": envelope({**customer(901), "email_token": "0" * 64}),
        b"not-json": b'{"email": "ava.quinn902@example.com", Secret Garden',
        b"bad-subject": envelope(customer(903, customer_id="C9:x")),
        b"forgotten": envelope(customer(900001)),
    }
    committer = Committer(lh.catalog, None, IngestStats(), keystore=keystore)
    committer.commit_batch(_batch(good[:20] + list(poison.items()) + good[20:]))

    rows = lh.table("bronze.customers").scan().to_arrow()
    assert rows.num_rows == 40
    assert_no_plaintext(json.dumps(rows.to_pylist(), default=str))
    sample = rows.to_pylist()[0]
    assert keystore.decrypt(sample["city"]) == "Zanzibar City"
    dead = {r["source_offset"]: r for r in lh.table("bronze.dead_letters").scan().to_arrow().to_pylist()}
    by_key = {k: dead[20 + i] for i, k in enumerate(poison)}
    assert len(dead) == 5
    for name, letter in by_key.items():
        assert_no_plaintext(letter["reason"])
        assert_no_plaintext(letter["payload"] or b"")
        assert_no_plaintext(letter["message_key"] or "")
        assert letter["target_table"] == "bronze.customers", name
    assert "'birth_date'" in by_key[b"bad-date"]["reason"]  # the reason stays readable...
    assert "<personal data>" in by_key[b"bad-date"]["reason"]  # ...without the values
    assert "email_token" in by_key[b"forged-token"]["reason"]
    assert "not JSON" in by_key[b"not-json"]["reason"]
    assert "forgotten" in by_key[b"forgotten"]["reason"]
    # sealed under the subject when the message names one, else under the dedicated key
    assert by_key[b"bad-date"]["pii_subject"] == "C000900"
    assert keystore.open(by_key[b"bad-date"]["payload"].decode()) == poison[b"bad-date"]
    assert keystore.decrypt(by_key[b"bad-date"]["message_key"]) == "bad-date"
    for unattributed in (b"not-json", b"bad-subject"):
        assert by_key[unattributed]["pii_subject"] == DEAD_LETTER_SUBJECT
        assert keystore.open(by_key[unattributed]["payload"].decode()) == poison[unattributed]
    assert by_key[b"forgotten"]["payload"] is None and by_key[b"forgotten"]["message_key"] is None
    for table in ("customers", "dead_letters"):  # and nothing in clear in any data file
        for path in (lh.settings.home / "warehouse" / "bronze" / table).rglob("*.parquet"):
            assert_no_plaintext(path.read_bytes())


def test_gdpr_forget_covers_dead_letters(lh: Lakehouse) -> None:
    from lakehouse.privacy import forget

    committer = Committer(lh.catalog, None, IngestStats(), keystore=lh.keystore)
    committer.commit_batch(
        _batch(
            [
                (b"k", envelope(customer(7))),
                (b"k", envelope(customer(8, birth_date="x"))),
                (b"k", b"not json: ava.quinn9@example.com"),
            ]
        )
    )
    report = forget(lh.catalog, lh.keystore, "C000008").as_dict()
    checks = {t["table"]: t for t in report["tables"]}
    assert report["erased"]
    assert checks["bronze.dead_letters"]["values_checked"] == 2  # its sealed key and payload...
    assert checks["bronze.dead_letters"]["values_decryptable"] == 0  # ...no longer open
    assert checks["bronze.dead_letters"]["rows_now"] == 0
    assert lh.table("bronze.customers").scan().to_arrow().num_rows == 1
    # dead letters no customer could be read from: shredded together under their dedicated key
    unattributed = forget(lh.catalog, lh.keystore, DEAD_LETTER_SUBJECT).as_dict()
    assert unattributed["erased"] and lh.table("bronze.dead_letters").scan().to_arrow().num_rows == 0


# --- the edge route: the gateway's lander -------------------------------------------------------

DRIVERS = """
  driver_logs:
    description: A user contract with personal data, uploaded by edge devices.
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
      - {name: store_id, type: string}
"""


@pytest.fixture
def drivers_contracts(tmp_path: Path) -> Project:
    """A user project declaring only the drivers' table (dead letters are the platform's)."""
    path = tmp_path / "project" / "contracts" / "drivers.yml"
    path.parent.mkdir(parents=True)
    path.write_text("tables:\n" + DRIVERS)
    parse_contracts(path.read_text(), source=str(path))  # valid
    return Project(path.parent.parent)


def test_the_gateway_lands_a_personal_data_contract_encrypted(
    lh: Lakehouse, drivers_contracts: Project
) -> None:
    from lakehouse.ingest import validate
    from lakehouse.ingest.edge._land import Lander

    lander = Lander(lh.catalog, drivers_contracts, linger=0).start()  # its keystore: the environment's
    try:
        target = lander.target("bronze.driver_logs")
        assert "phone_token" not in target.names  # devices send plaintext, never tokens
        readings = [
            {
                "log_id": f"L{i}",
                "driver_id": f"D{i % 3}",
                "driver_name": f" Zed Quinn{i} ",
                "phone": "555-0101",
            }
            for i in range(6)
        ]
        forged = [{**readings[0], "phone_token": "0" * 64}]
        _, _, bad = validate(forged, target, "bronze.driver_logs")
        assert bad and "phone_token" in bad[0]
        rows, _, bad = validate(readings, target, "bronze.driver_logs")
        assert not bad
        outcome = lander.submit("bronze.driver_logs", "dev-1", 1, rows).result(timeout=60)
        assert getattr(outcome, "status", outcome) == "landed"
        lander.dead_letter("bronze.driver_logs", "dev-1", 2, orjson.dumps(readings), "a forged unit")
    finally:
        lander.stop()
    landed = lh.catalog.load_table(("bronze", "driver_logs")).scan().to_arrow().to_pylist()
    assert len(landed) == 6
    assert_no_plaintext(json.dumps(landed))
    keystore = Keystore(lh.keystore.path, lh.keystore._master)
    assert sorted(keystore.decrypt(r["driver_name"]) or "" for r in landed)[0] == "Zed Quinn0"
    assert landed[0]["phone_token"] == keystore.token("5550101")
    (letter,) = lh.catalog.load_table(("bronze", "dead_letters")).scan().to_arrow().to_pylist()
    assert letter["pii_subject"] == DEAD_LETTER_SUBJECT and letter["reason"] == "a forged unit"
    assert_no_plaintext(letter["payload"])
    assert json.loads(keystore.open(letter["payload"].decode()))[0]["driver_name"] == " Zed Quinn0 "


# --- the ingest order: what "the latest copy wins" means downstream ------------------------------


def reading(minute: int, temperature: float) -> dict[str, Any]:
    return {
        "device_id": "D-S001-1",
        "store_id": "S001",
        "reading_ts": dt.datetime(2026, 3, 2, 10, minute),
        "temperature_c": temperature,
        "door_open": False,
    }


def test_every_route_stamps_the_ingest_order(lh: Lakehouse, tmp_path: Path) -> None:
    first, second, forged = (tmp_path / f"{n}.parquet" for n in ("first", "second", "forged"))
    pq.write_table(pa.Table.from_pylist([reading(0, 3.0), reading(15, 3.1)]), first)
    pq.write_table(pa.Table.from_pylist([reading(0, 9.0)]), second)
    pq.write_table(pa.Table.from_pylist([{**reading(30, 3.2), "ingest_seq": 2**62}]), forged)
    lh.load("bronze.sensor_readings", [first])
    lh.load("bronze.sensor_readings", [second])
    with pytest.raises(SchemaMismatchError, match=r"\['ingest_seq'\] are not"):
        lh.load("bronze.sensor_readings", [forged])  # a file cannot choose its place in the order
    committer = Committer(lh.catalog, None, IngestStats())  # the Kafka route
    message = orjson.dumps({"schema": "bronze.sensor_readings", "version": 1, "data": reading(0, 4.0)})
    committer.commit_batch({("sensor_readings", 0): [_Record(0, b"D-S001-1", message)]})
    table = lh.table("bronze.sensor_readings")
    rows = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["ingest_seq"])
    assert [r["temperature_c"] for r in rows] == [3.0, 3.1, 9.0, 4.0]  # files in row order, then Kafka
    # the gateway validates uploads against rows as sent (no ingest_seq), then calls the same hook
    sent = received_schema("bronze.sensor_readings")
    assert sent is not None and "ingest_seq" not in sent.names
    upload = committer.writer.stored(
        "bronze.sensor_readings", pa.Table.from_pylist([reading(45, 5.0)], sent), table
    )
    assert upload.column("ingest_seq").to_pylist()[0] > rows[-1]["ingest_seq"]


def test_the_ingest_order_never_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ingest, "_last_sequence", 0)
    now = iter([5_000_000_000, 4_000_000_000, 9_000_000_000])  # ns; the clock steps back once
    first = ingest_sequence(3, clock=lambda: next(now)).to_pylist()
    second = ingest_sequence(2, clock=lambda: next(now)).to_pylist()
    third = ingest_sequence(1, clock=lambda: next(now)).to_pylist()
    assert first == [5_000_000, 5_000_001, 5_000_002]  # microseconds, +1 per row
    assert second == [5_000_003, 5_000_004]  # never below what was given
    assert third == [9_000_000]
    assert ingest_sequence(0).to_pylist() == []
