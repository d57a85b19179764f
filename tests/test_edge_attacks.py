"""The edge path attacked: forged units, unknown stores, header floods, crafted bodies, slow
clients, small-order keys, sequence gaps, control characters, weak TLS. Every attack comes in
generated variants (code points, sizes, positions, depths, seqs), and every refusal is checked
for its exact status, a problem+json body, nothing landed and no 500.

The first part needs no server (the bounds themselves, with injected clocks); the second runs
the gateway over TLS on loopback, one per module where the settings allow.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import socket
import ssl
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lakehouse import Lakehouse, Settings
from lakehouse.ingest.edge import AuditLog, escape
from lakehouse.ingest.edge._device_keys import WeakDeviceKey, check_device_key
from lakehouse.ingest.edge._json import JSONRejected, depth_exceeds, loads
from lakehouse.ingest.edge._land import MAX_SEQ
from lakehouse.ingest.edge._limits import RateLimiter
from lakehouse_edge.envelope import b64e, seal, seal_compressed

from .conftest import run_cli
from .test_edge import (
    SCHEMA,
    Device,
    Gateway,
    access_token,
    enroll_direct,
    readings,
    request,
    sample,
    sealed_for,
    skip,
    start_gateway,
    upload,
)

# --- generated Ed25519 torsion points (independent of the gateway's blocklist) ----------------

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
L = 2**252 + 27742317777372353535851937790883648493  # the prime order of the main subgroup


def _sqrt(a: int) -> int | None:
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if (x * x - a) % P == 0 else None


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


def _times(k: int, point: tuple[int, int]) -> tuple[int, int]:
    result, addend = (0, 1), point
    while k:
        if k & 1:
            result = _add(result, addend)
        addend, k = _add(addend, addend), k >> 1
    return result


def torsion_points(rng: random.Random) -> set[tuple[int, int]]:
    """The 8 points of small order, found as [L]Q for random curve points Q."""
    found: set[tuple[int, int]] = set()
    while len(found) < 8:
        y = rng.randrange(P)
        x = _sqrt((y * y - 1) * pow(D * y * y + 1, -1, P) % P)
        if x is not None:
            found.add(_times(L, (x, y)))
    return found


def encodings(point: tuple[int, int]) -> set[bytes]:
    """Every 32-byte encoding of a point: canonical, y + p where it fits, either sign bit."""
    x, y = point
    out = set()
    for y_enc in (y, y + P):
        if y_enc < 2**255:
            for sign in {x & 1, 1 - (x & 1)} if x == 0 else {x & 1}:
                out.add((y_enc | sign << 255).to_bytes(32, "little"))
    if x == 0:  # -0 = 0: the sign bit set is a non-canonical encoding of the same point
        out |= {(y_enc | 1 << 255).to_bytes(32, "little") for y_enc in (y, y + P) if y_enc < 2**255}
    return out


@pytest.fixture(scope="module")
def small_order_keys() -> list[bytes]:
    points = torsion_points(random.Random(9))
    assert all(_times(8, p) == (0, 1) for p in points)  # the generator really found torsion points
    keys = sorted({e for p in points for e in encodings(p)} | {bytes(32)})
    assert len(keys) >= 14  # 8 canonical points plus their non-canonical encodings
    return keys


@pytest.mark.unit
def test_small_order_and_all_zero_keys_are_refused(small_order_keys: list[bytes]) -> None:
    for key in small_order_keys:
        with pytest.raises(WeakDeviceKey):
            check_device_key(key)
    for _ in range(200):  # real public keys always pass
        check_device_key(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    rng = random.Random(3)
    for size in (0, 1, 31, 33, 64):
        with pytest.raises(WeakDeviceKey, match="32-byte"):
            check_device_key(rng.randbytes(size))


# --- the request head, measured before the parser sees it -----------------------------------


@pytest.mark.unit
def test_head_size_is_measured_across_any_split_of_the_bytes() -> None:
    from types import SimpleNamespace

    from lakehouse.ingest.edge._server import GuardedProtocol

    rng = random.Random(19)
    limit = 1024
    for _ in range(400):
        head_len = rng.randint(limit - 40, limit + 40)
        line = b"POST /v1/batches HTTP/1.1\r\nX-Pad: "
        head = line + b"a" * (head_len - len(line) - 4) + b"\r\n\r\n"
        assert len(head) == head_len
        data = head + b"{}\r\n\r\n" * rng.randint(0, 3)  # a body (with CRLFs) may follow in the same read
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 6)))
        state = SimpleNamespace(_head_bytes=0, _tail=b"", max_header_bytes=limit)
        refused, consumed = False, 0
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            if consumed >= head_len:
                break
            refused = GuardedProtocol._head_too_large(state, data[start:end])  # type: ignore[arg-type]
            consumed = end
            if refused:
                break
        assert refused == (head_len > limit), (head_len, cuts)


# --- ownership: the reference data, with an injected clock ---------------------------------


@pytest.mark.unit
def test_ownership_follows_the_reference_tables_within_the_refresh_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lakehouse.catalog import load_catalog
    from lakehouse.config import GatewaySettings
    from lakehouse.ingest.edge import Ownership, UnknownStore, _ownership

    home = tmp_path / "home"
    settings = Settings(home=home)

    def load(name: str, table: dict[str, list[str]]) -> None:
        path = tmp_path / f"{name}-{secrets.token_hex(4)}.parquet"
        pq.write_table(pa.table(table), path)
        with Lakehouse(settings) as lh:
            lh.load(f"bronze.{name}", [path])

    now = [100.0]
    scans = [0]
    real_rows = _ownership._rows

    def counted(*args: Any) -> Any:
        scans[0] += 1
        return real_rows(*args)

    monkeypatch.setattr(_ownership, "_rows", counted)
    ownership = Ownership(
        lambda: load_catalog(settings), GatewaySettings(reference_refresh=5), clock=lambda: now[0]
    )
    with pytest.raises(UnknownStore, match="no store is known"):  # nothing loaded yet
        ownership.check_store("S001")
    load("stores", {"store_id": ["S001", "S002"]})
    load("devices", {"device_id": ["D-S001-1", "D-S002-1"], "store_id": ["S001", "S002"]})
    now[0] += 5
    assert ownership.owner_of("D-S001-1") == "S001"
    assert ownership.refusal("D-S002-1", "S001").code == "foreign-unit"  # type: ignore[union-attr]
    assert ownership.refusal("D-S001-1", "S001") is None
    load("devices", {"device_id": ["D-S001-2", "D-S002-1"], "store_id": ["S001", "S001"]})  # contested
    scanned = scans[0]
    now[0] += 4.9  # within the period: the previous map, nothing read
    assert ownership.owner_of("D-S001-2") is None and scans[0] == scanned
    now[0] += 0.2  # the snapshot changed: re-read
    assert ownership.owner_of("D-S001-2") == "S001"
    assert ownership.owner_of("D-S002-1") is None  # listed under two stores: nobody's
    assert "several stores" in ownership.refusal("D-S002-1", "S002").detail  # type: ignore[union-attr]
    scanned = scans[0]
    for _ in range(5):  # unchanged snapshots are checked, never scanned again
        now[0] += 6
        assert ownership.owner_of("D-S001-1") == "S001"
    assert scans[0] == scanned
    with pytest.raises(UnknownStore, match="did you mean 'S002'"):
        ownership.check_store("s002")


# --- JSON bounds -------------------------------------------------------------------------------


def _reference_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _random_json(rng: random.Random, depth: int) -> Any:
    tricky = ['a"b', "[[[", "]]}}", "\\", '\\"[', "{", "\u2028", "x" * rng.randint(0, 30)]
    if depth == 0:
        return rng.choice([rng.choice(tricky), rng.randint(-(10**6), 10**6), 1.5, True, None])
    inner = [_random_json(rng, depth - 1)] + [_random_json(rng, rng.randint(0, depth - 1)) for _ in range(2)]
    rng.shuffle(inner)
    if rng.random() < 0.5:
        return inner
    return {rng.choice(tricky) + str(i): v for i, v in enumerate(inner)}


@pytest.mark.unit
def test_json_depth_is_measured_exactly_before_parsing() -> None:
    rng = random.Random(5)
    for _ in range(300):
        text = json.dumps(_random_json(rng, rng.randint(0, 12)), ensure_ascii=rng.random() < 0.5)
        depth = _reference_depth(text)
        for limit in (max(1, depth - 1), depth, depth + 1):
            assert depth_exceeds(text.encode(), limit) == (depth > limit), (text, limit)
    for depth in (9, 64, 1000, 100_000, 1_000_000):  # deep and unbalanced: refused, fast
        for opener in ("[", '{"a":', '[{"k":'):
            started = time.perf_counter()
            with pytest.raises(JSONRejected, match="nested deeper than 8"):
                loads((opener * depth).encode(), max_depth=8)
            assert time.perf_counter() - started < 2.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[NaN]", "NaN is not a JSON number"),
        ('{"t": Infinity}', "Infinity is not"),
        ("[-Infinity]", "-Infinity is not"),
        ("[1e400]", "overflows"),
        ("[-1e999]", "overflows"),
        ("[" + "9" * 25 + "]", "64 bits"),
        ("[9223372036854775808]", "64 bits"),
        ("[-9223372036854775809]", "64 bits"),
        ("[" + "1" * 5000 + "]", "64 bits"),
        ('["\\ud800"]', "surrogate"),
        ('{"\\udfff": 1}', "surrogate"),
        ('"\\ud83d\\ud83d"', "surrogate"),
        ("[1, 2", "not JSON"),
        ("\xff", "not JSON"),
    ],
)
def test_json_refuses_what_rfc_8259_or_64_bits_do_not_allow(text: str, why: str) -> None:
    with pytest.raises(JSONRejected, match=why):
        loads(text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff", max_depth=8)


@pytest.mark.unit
def test_json_accepts_the_edges_of_the_ranges() -> None:
    text = '[9223372036854775807, -9223372036854775808, 1.7976931348623157e308, "\\ud83d\\ude00"]'
    assert loads(text.encode(), max_depth=8) == [2**63 - 1, -(2**63), 1.7976931348623157e308, "\U0001f600"]


# --- rate limits with an injected clock -------------------------------------------------------


@pytest.mark.unit
def test_token_bucket_with_an_injected_clock() -> None:
    now = [1000.0]
    limiter = RateLimiter(2.0, 5, clock=lambda: now[0])
    assert [bool(limiter.check("a")) for _ in range(5)] == [False] * 5  # the burst
    refused = limiter.check("a")
    assert refused and refused.first and refused.wait == pytest.approx(0.5)
    again = limiter.check("a")
    assert again and not again.first  # one audit line per episode
    assert not limiter.check("b")  # keys are independent
    now[0] += 0.5
    assert not limiter.check("a")  # refilled at 2/s
    assert limiter.check("a").first  # a new episode
    now[0] += 100
    assert [bool(limiter.check("a")) for _ in range(6)] == [False] * 5 + [True]  # capped at the burst


@pytest.mark.unit
def test_rate_limiter_memory_is_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 1, clock=lambda: now[0])
    limiter.MAX_KEYS = 1000
    for i in range(10_000):
        limiter.check(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 1000


# --- key sets with injected clocks -----------------------------------------------------------


@pytest.mark.unit
def test_a_rotation_elsewhere_is_picked_up_within_a_second_and_retired_keys_expire(tmp_path: Path) -> None:
    from lakehouse.ingest.edge._keys import KeySet

    now, wall = [1000.0], [1_750_000_000.0]
    path = tmp_path / "signing.json"
    running = KeySet(path, "signing", retention=60, clock=lambda: now[0], wall=lambda: wall[0]).ensure()
    old = running.active()
    other = KeySet(path, "signing", retention=60, wall=lambda: wall[0])  # `gateway rotate-keys`
    new = other.rotate()
    now[0] += 0.999
    assert running.active().kid == old.kid  # the file is looked at once a second, not per request
    now[0] += 0.002
    assert running.active().kid == new.kid
    retired = running.get(old.kid)  # still verifies the tokens it signed
    assert retired is not None and retired.retired_at == wall[0]
    assert {k["kid"] for k in running.jwks()["keys"]} == {old.kid, new.kid}
    wall[0] += 59.9
    assert running.get(old.kid) is not None
    wall[0] += 0.2  # retention over: the retired key neither verifies nor is published
    assert running.get(old.kid) is None
    assert [k["kid"] for k in running.jwks()["keys"]] == [new.kid]


@pytest.mark.unit
def test_the_production_clocks_are_the_real_ones(tmp_path: Path) -> None:
    import time

    from lakehouse.ingest.edge._keys import KeySet
    from lakehouse.privacy import Keystore

    limiter = RateLimiter(1.0, 1)
    keys = KeySet(tmp_path / "k.json", "ingest", retention=1)
    store = Keystore(tmp_path / "keystore.json", bytes(32))
    assert limiter.clock is time.monotonic
    assert (keys._clock, keys._wall) == (time.monotonic, time.time)
    assert store._clock is time.monotonic


# --- text shown to operators ------------------------------------------------------------------

HOSTILE = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]] + [
    "\u200b", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066",
    "\u2067", "\u2068", "\u2069", "\u2028", "\u2029", "\ufeff", "\ue000", "\U000f0000", "\ud800",
    "\u0378",
]  # fmt: skip


def _visible(text: str) -> bool:
    return all(c.isprintable() or c == " " for c in text)


@pytest.mark.unit
def test_escape_leaves_no_invisible_or_control_character() -> None:
    rng = random.Random(8)
    for char in HOSTILE:
        for _ in range(3):
            name = "pi" + "".join(rng.choice(["-", "x", char, "é", " ", "[b]"]) for _ in range(8)) + char
            shown = escape(name)
            assert _visible(shown), repr(shown)
            code = ord(char)  # \xHH below 0x100, \uHHHH in the BMP, \UHHHHHHHH above
            written = (
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
            assert written in shown, (char, shown)
    assert escape("Pi 4 \u2013 Kühlraum [1]") == "Pi 4 \u2013 Kühlraum [1]"  # printable text is untouched


@pytest.mark.unit
def test_audit_lines_stay_small_and_escaped(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    rng = random.Random(2)
    for size in (10, 1000, 100_000, 8_000_000):
        hostile = "".join(rng.choice([*HOSTILE[:40], "a", "\x1b[2J"]) for _ in range(min(size, 1000))) * (
            size // 1000 + 1
        )
        before = audit.size()
        audit.record("request", "rejected", reason=hostile, client=hostile, device_id=hostile, seq=10**30)
        line = (tmp_path / "audit.jsonl").read_bytes()[before:]
        assert len(line) < 6000, len(line)
        entry = json.loads(line)
        for field in ("reason", "client", "device_id"):
            assert _visible(entry[field]) and "\x1b" not in entry[field]
        assert len(entry["reason"]) <= 512 * 10 + 40


# --- the gateway over TLS ---------------------------------------------------------------------

SEALED = {"Content-Type": "application/vnd.lakehouse.sealed-batch+json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("attacks") / "home"
    gateway = start_gateway(
        home,
        max_body_bytes="65536",
        max_decompressed_bytes="1048576",
        rate_per_address="1000",
        address_burst="1000",
        rate_per_device="1000",
        rate_burst="1000",
        header_timeout="1.5",
        body_timeout="2",
        idle_timeout="1",
        reference_refresh="0.5",
    )
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def device(gw: Gateway) -> Device:
    return enroll_direct(gw, "S001")


@pytest.fixture(scope="module")
def token(gw: Gateway, device: Device) -> str:
    return access_token(gw, device)


class Seqs:
    """The device's next seq, as the tests move it (a landing or a declared skip)."""

    def __init__(self) -> None:
        self.next = 1


@pytest.fixture(scope="module")
def seqs() -> Seqs:
    return Seqs()


def assert_problem(
    answer: tuple[int, dict[str, str], dict[str, Any]], status: int, code: str | None = None
) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers.get("content-type") == "application/problem+json", headers
    assert body["status"] == status and body["type"].startswith("urn:lakehouse:problem:") and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def dead_letters(home: Path) -> list[dict[str, Any]]:
    from lakehouse.errors import NoSuchTableError

    with Lakehouse(Settings(home=home)) as lh:
        try:
            rows = lh.sql(
                "select source, source_offset, reason, payload from bronze.dead_letters"
            ).to_pylist()
        except NoSuchTableError:
            return []
    return sorted(rows, key=lambda r: (r["source"], r["source_offset"]))


def upload_sealed(gw: Gateway, token: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    return request(gw, "POST", "/v1/batches", body, {**SEALED, "Authorization": f"Bearer {token}"})


@pytest.mark.integration
@pytest.mark.slow
def test_forged_units_go_to_dead_letters_and_land_nothing(
    gw: Gateway, device: Device, token: str, seqs: Seqs
) -> None:
    rng = random.Random(21)
    before = readings(gw.home)
    variants: list[tuple[str, Any, int, str, str]] = []  # (name, unit, status, code, expected words)
    for other in ("S002", "S005", "S009"):
        for n in (1, 3):
            variants.append(
                (f"{other} unit", f"D-{other}-{n}", 403, "foreign-unit", f"belongs to store {other}")
            )
    for unknown in (
        "D-S001-4",
        "D-S010-1",
        "d-s001-1",
        "D-S001-1 ",
        "D-S001-1\x00",
        "D-\u202eS001-1",
        "x" * 5000,
    ):
        variants.append(
            (f"unknown {unknown[:12]!r}", unknown, 422, "unknown-unit", "is not a known refrigeration unit")
        )
    for odd in (None, 17, ["D-S001-1"], {"id": "D-S001-1"}):
        variants.append((f"not a string {odd!r}", odd, 422, "unknown-unit", "is not a unit id"))
    for name, unit, status, code, words in variants:
        rows = sample(rng.randint(1, 6))
        position = rng.randrange(len(rows))
        forged = {**rows[position], "device_id": unit}
        if rng.random() < 0.5:
            forged.pop("store_id", None)  # left out: the gateway fills in the device's own store
        rows[position] = forged
        seq = seqs.next
        problem = assert_problem(upload_sealed(gw, token, sealed_for(device, seq, rows=rows)), status, code)
        assert words in problem["detail"] and "S001" in problem["detail"], (name, problem)
        assert (
            f"reading {position}" in problem["detail"] and "kept in bronze.dead_letters" in problem["detail"]
        )
        if isinstance(unit, str) and unit.isprintable() and len(unit) < 60:
            assert f"unit '{unit}'" in problem["detail"], problem
        assert len(problem["detail"]) < 600
        # the device moves on only by declaring the seq skipped: the gap is explicit
        assert skip(gw, token, seq, seq) == (200, seq + 1)
        seqs.next = seq + 1
    assert readings(gw.home) == before, "a forged reading landed"
    dead = [d for d in dead_letters(gw.home) if d["source"] == f"edge:{device.device_id}"]
    kept = {d["source_offset"]: d for d in dead}
    assert len(kept) == len(variants)
    assert all(kept[o]["payload"] for o in kept), "the forged batches are kept whole"
    assert all("skipped by the device" not in d["reason"] for d in dead)  # the dead letter explains them


@pytest.mark.integration
@pytest.mark.slow
def test_a_foreign_unit_lands_once_the_reference_says_it_is_ours(
    gw: Gateway, device: Device, token: str, seqs: Seqs
) -> None:
    """The map follows the reference table (bounded staleness), not a restart."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sample(2, unit="D-S001-7", day=12)
    assert_problem(upload_sealed(gw, token, sealed_for(device, seqs.next, rows=rows)), 422, "unknown-unit")
    assert skip(gw, token, seqs.next, seqs.next)[0] == 200
    seqs.next += 1
    extra = gw.home.parent / "reference" / "devices-extra.parquet"
    pq.write_table(pa.table({"device_id": ["D-S001-7"], "store_id": ["S001"]}), extra)
    with Lakehouse(Settings(home=gw.home)) as lh:
        lh.load("bronze.devices", [extra])
    deadline = time.monotonic() + 10
    while True:
        status, _, body = upload_sealed(gw, token, sealed_for(device, seqs.next, rows=rows))
        if status == 201 or time.monotonic() > deadline:
            break
        assert_problem((status, {"content-type": "application/problem+json"}, body), 422, "unknown-unit")
        assert skip(gw, token, seqs.next, seqs.next)[0] == 200
        seqs.next += 1
        time.sleep(0.3)
    assert status == 201, body
    seqs.next += 1
    assert ("D-S001-7", "2026-08-12T00:00:00") in [(u, t.isoformat()) for u, t in readings(gw.home)]


# --- crafted bodies: 4xx, never 500, nothing landed -------------------------------------------


def _nest(depth: int, opener: str = "[", inner: str = "1") -> str:
    closer = {"[": "]", '{"k":': "}"}[opener]
    return opener * depth + inner + closer * depth


def sealed_plain(device: Device, seq: int, plain: bytes, **header: Any) -> bytes:
    """A properly sealed batch whose decrypted text is ``plain`` (any bytes, not only JSON)."""
    return seal_compressed(
        zlib.compress(plain),
        device_id=device.device_id,
        seq=seq,
        schema=header.get("schema", SCHEMA),
        schema_version=header.get("schema_version", 1),
        ingest_key=device.ingest,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_crafted_batches_answer_4xx_and_land_nothing(
    gw: Gateway, device: Device, token: str, seqs: Seqs
) -> None:
    rng = random.Random(31)
    before, dead_before = readings(gw.home), len(dead_letters(gw.home))
    good = sealed_for(device, seqs.next).decode()
    envelope = json.loads(good)
    cases: list[tuple[str, bytes, int, str]] = []
    # nesting in the envelope, at several depths, keys and positions
    for depth in (9, 10, 64, 1000, 9_000):
        for opener in ("[", '{"k":'):
            nested = _nest(depth, opener)
            position = rng.choice(["first", "last", "inside"])
            if position == "first":
                text = '{"pad":' + nested + "," + good[1:]
            elif position == "last":
                text = good[:-1] + ',"pad":' + nested + "}"
            else:
                text = good.replace('"schema":', '"schema":' + nested + ',"x":', 1)
            cases.append(
                (f"envelope nested {depth} ({opener}, {position})", text.encode(), 400, "malformed-batch")
            )
    cases.append(("envelope unbalanced", b"[" * 60_000, 400, "malformed-batch"))
    # number ranges and types of seq
    for raw in (
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "1.5",
        "-0.0",
        '"7"',
        "true",
        "null",
        str(2**63),
        "9" * 30,
        "1" * 5000,
    ):
        text = good.replace(f'"seq":{envelope["seq"]}', f'"seq":{raw}')
        cases.append((f"seq {raw[:12]}", text.encode(), 400, "malformed-batch"))
    for seq in (0, 2**53, 2**53 + 1, 2**63 - 1):
        cases.append((f"seq {seq} out of range", sealed_for(device, seq), 422, "seq-out-of-range"))
    for seq in (-1, -(2**63)):
        cases.append((f"seq {seq} negative", sealed_for(device, seq), 400, "malformed-batch"))
    # a batch that would be dead-lettered, with a seq no dead letter can hold (was a 500)
    forged_rows = [{**sample(1)[0], "device_id": "D-S002-1"}]
    for seq in (2**53, 2**62, 2**63 - 1):
        cases.append(
            (f"dead letter at seq {seq}", sealed_for(device, seq, rows=forged_rows), 422, "seq-out-of-range")
        )
    cases.append(
        (
            "dead letter far ahead",
            sealed_for(device, seqs.next + 10**9, rows=forged_rows),
            409,
            "seq-out-of-order",
        )
    )
    # nesting and numbers inside the decrypted readings
    base = '{"device_id":"D-S001-1","reading_ts":"2026-09-01T00:00:00","temperature_c":%s,"door_open":false}'
    for depth in (8, 9, 100, 100_000):
        plain = ("[" + base % _nest(depth) + "]").encode()
        cases.append(
            (
                f"readings nested {depth + 2}",
                sealed_plain(device, seqs.next, plain),
                400,
                "malformed-readings",
            )
        )
    cases.append(
        ("readings unbalanced", sealed_plain(device, seqs.next, b"[" * 200_000), 400, "malformed-readings")
    )
    for value in ("NaN", "Infinity", "-Infinity", "1e400", "-1e309", "9" * 25, "1" * 4500):
        plain = ("[" + base % value + "]").encode()
        cases.append(
            (f"temperature {value[:10]}", sealed_plain(device, seqs.next, plain), 400, "malformed-readings")
        )
    lone = b'[{"device_id":"D-S001-1\\udc00","reading_ts":"2026-09-01T00:00:00"}]'
    cases.append(("lone surrogate", sealed_plain(device, seqs.next, lone), 400, "malformed-readings"))
    cases.append(
        ("readings not JSON", sealed_plain(device, seqs.next, b"\xff\xfe"), 400, "malformed-readings")
    )
    cases.append(("readings an object", sealed_plain(device, seqs.next, b'{"a":1}'), 422, "wrong-schema"))
    cases.append(("readings empty", sealed_plain(device, seqs.next, b"[]"), 422, "wrong-schema"))
    failures = []
    for name, body, status, code in cases:
        got, headers, problem = upload_sealed(gw, token, body)
        if (got, problem.get("code")) != (status, code) or headers.get(
            "content-type"
        ) != "application/problem+json":
            failures.append(f"{name}: {got} {problem}")
    assert not failures, "\n".join(failures)
    assert readings(gw.home) == before
    assert len(dead_letters(gw.home)) == dead_before, "a refused batch reached dead letters"


@pytest.mark.integration
@pytest.mark.slow
def test_values_no_table_can_hold_go_to_dead_letters_not_500(
    gw: Gateway, device: Device, token: str, seqs: Seqs
) -> None:
    """Values that parse but that Iceberg or Python cannot store (year 0, a nested value)."""
    before = readings(gw.home)
    rows = [
        {"device_id": "D-S001-1", "reading_ts": "0000-01-01T00:00:00"},
        {"device_id": "D-S001-2", "reading_ts": "2026-09-01T00:00:00", "temperature_c": {"a": [1]}},
        {"device_id": "D-S001-3", "reading_ts": "2026-09-01T00:00:00", "door_open": 10**18},
    ]
    for row in rows:
        seq = seqs.next
        problem = assert_problem(
            upload_sealed(gw, token, sealed_for(device, seq, rows=[row])), 422, "wrong-schema"
        )
        assert "kept in bronze.dead_letters" in problem["detail"]
        # the same seq again (a retry) is answered the same way and not kept twice
        again = assert_problem(
            upload_sealed(gw, token, sealed_for(device, seq, rows=[row])), 422, "wrong-schema"
        )
        assert "not kept" in again["detail"]
        assert skip(gw, token, seq, seq) == (200, seq + 1)
        seqs.next += 1
    assert readings(gw.home) == before


@pytest.mark.integration
@pytest.mark.slow
def test_crafted_enrollment_and_token_bodies(gw: Gateway) -> None:
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, bytes, int, str]] = []
    for path in ("/v1/devices/enroll", "/v1/token"):
        for depth in (9, 100, 2500):
            for opener in ("[", '{"k":'):
                cases.append(
                    (f"{path} nested {depth}", path, _nest(depth, opener).encode(), 400, "malformed-json")
                )
        for size in (16 * 1024 + 1, 100_000, 1_000_000):
            body = b'{"pad":"' + b"x" * size + b'"}'
            cases.append((f"{path} {size} bytes", path, body, 413, "body-too-large"))
        cases.append((f"{path} NaN", path, b'{"x": NaN}', 400, "malformed-json"))
        cases.append((f"{path} not an object", path, b"[1,2]", 422, "invalid-request"))
    cases.append(("skip without a token", "/v1/batches/skip", b"{}", 401, "unauthorized"))
    failures = []
    for name, path, body, status, code in cases:
        got, headers, problem = request(gw, "POST", path, body, json_headers)
        if (got, problem.get("code")) != (status, code) or headers.get(
            "content-type"
        ) != "application/problem+json":
            failures.append(f"{name}: {got} {problem}")
    assert not failures, "\n".join(failures)


# --- sequences: never a silent drop -----------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_sequences_follow_their_model_under_generated_gaps(gw: Gateway) -> None:
    """Random uploads and skips of one device against a model of the documented semantics:
    a batch lands only as the next seq, the previous seq is a duplicate, anything else is a
    409 naming the expected seq, and a declared skip moves the mark."""
    device = enroll_direct(gw, "S003")
    token = access_token(gw, device)
    rng = random.Random(77)
    expected, landed, day = 1, [], 0
    for step in range(70):
        choice = rng.random()
        if choice < 0.4:
            seq = expected
        elif choice < 0.55:
            seq = expected - 1
        elif choice < 0.8:
            seq = expected + rng.choice([1, 2, 7, 1000, 2**40, 2**53 - 1 - expected])
        else:
            seq = max(1, expected - rng.randint(2, 9))
        if rng.random() < 0.2 and seq > expected:
            status, answer = skip(gw, token, expected, seq - 1)  # declare the gap, as an agent does
            assert (status, answer) == (200, seq), (step, answer)
            expected = seq
            continue
        day += 1
        rows = sample(2, unit="D-S003-2", day=1 + day % 28)
        for minute, row in enumerate(rows):
            row["reading_ts"] = f"2027-{1 + day // 28:02d}-{1 + day % 28:02d}T{step % 24:02d}:{minute:02d}:00"
        status, _, body = upload(gw, token, sealed_for(device, seq, rows=rows))
        if not 1 <= seq <= MAX_SEQ:
            assert_problem(
                (status, {"content-type": "application/problem+json"}, body), 422, "seq-out-of-range"
            )
        elif seq == expected:
            assert (status, body["status"]) == (201, "landed"), (step, body)
            landed += [r["reading_ts"] for r in rows]
            expected += 1
        elif seq == expected - 1:
            assert (status, body["status"]) == (200, "duplicate"), (step, body)
        else:
            problem = assert_problem(
                (status, {"content-type": "application/problem+json"}, body), 409, "seq-out-of-order"
            )
            assert problem["expected_seq"] == expected and f"expected seq {expected}" in problem["detail"]
    with Lakehouse(Settings(home=gw.home)) as lh:
        got = lh.sql("select reading_ts from bronze.sensor_readings where device_id = 'D-S003-2'").column(0)
    assert sorted(t.isoformat() for t in got.to_pylist()) == sorted(landed)
    # a declared skip that does not start at the expected seq is refused, naming it
    status, problem = skip(gw, token, expected + 1, expected + 5)
    assert status == 409 and problem["expected_seq"] == expected


# --- enrollment: known stores, printable names, keys that bind a private key -------------------


@pytest.mark.integration
@pytest.mark.slow
def test_enrollment_only_for_known_stores(gw: Gateway) -> None:
    from lakehouse.ingest.edge import InvalidEnrollment, registry

    variants = [
        "s001",
        "S01",
        "S0001",
        "S001 ",
        " S001",
        "S\u200b001",
        "S\uff10\uff101",  # fullwidth digits
        "\uff33001",
        "S010",
        "X001",
        "",
        "S001\n",
        "[red]S001",
    ]
    reg = registry(Settings(home=gw.home))
    try:
        rng = random.Random(29)
        for _ in range(20):  # S001 in another case, with invisible characters or something after it
            chars = [rng.choice([c, c.lower(), chr(ord(c) + 0xFEE0)]) for c in "S001"]  # case, width
            chars.insert(rng.randint(0, 4), rng.choice(["\u200b", "\u2060", " ", "\x1b[0m", "\t", ""]))
            if "".join(chars) != "S001":
                variants.append("".join(chars))
        for store in variants:
            with pytest.raises(InvalidEnrollment) as caught:
                reg.issue_enrollment_token(store, 60)
            message = str(caught.value)
            assert "\n" not in message and len(message) < 300 and _visible(message), message
            if store and store != "S001" and store not in ("S010", "X001"):
                assert "did you mean 'S001'?" in message, (store, message)
        with pytest.raises(InvalidEnrollment, match="belongs to store S002"):
            reg.issue_enrollment_token("S001", 60, units=["D-S002-1"])
    finally:
        reg.close()
    result = run_cli("devices", "enroll", "--store", "s001", home=gw.home, env=gw.env)
    assert result.returncode == 1 and result.stdout == "", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'S001'" in lines[0], result.stderr
    result = run_cli("devices", "enroll", "--store", "S404", home=gw.home, env=gw.env)
    assert result.returncode == 1 and "S404" in result.stderr and "bronze.stores" in result.stderr
    audit = (gw.home / "state/gateway/audit.jsonl").read_text()
    assert '"event":"enrollment-token","outcome":"rejected"' in audit


@pytest.mark.integration
@pytest.mark.slow
def test_a_unit_registered_for_a_store_lands_before_the_reference_knows_it(gw: Gateway) -> None:
    result = run_cli(
        "devices", "enroll", "--store", "S004", "--unit", "D-S004-8", "-o", "json", home=gw.home, env=gw.env
    )
    assert result.returncode == 0, result.stderr
    time.sleep(1.0)  # the gateway re-reads registered units every reference_refresh (0.5 s here)
    other = enroll_direct(gw, "S005")
    other_token = access_token(gw, other)
    problem = assert_problem(
        upload(gw, other_token, sealed_for(other, 1, rows=sample(1, unit="D-S004-8"))), 403, "foreign-unit"
    )
    assert "belongs to store S004" in problem["detail"]
    device = enroll_direct(gw, "S004")
    deadline = time.monotonic() + 10
    while True:  # the map picks up registered units within reference_refresh
        status, _, body = upload(
            gw, access_token(gw, device), sealed_for(device, 1, rows=sample(1, unit="D-S004-8"))
        )
        if status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 201, body


def _enroll(
    gw: Gateway, token: str, key: bytes, name: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {"enrollment_token": token, "public_key": b64e(key)}
    if name is not None:
        body["name"] = name
    return request(
        gw, "POST", "/v1/devices/enroll", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )


@pytest.mark.integration
@pytest.mark.slow
def test_small_order_keys_never_enroll(gw: Gateway, small_order_keys: list[bytes]) -> None:
    token = gw.enrollment_token("S006")
    for key in small_order_keys:
        problem = assert_problem(_enroll(gw, token, key), 422, "invalid-enrollment")
        assert "public_key" in problem["detail"]
    assert _enroll(gw, token, Ed25519PrivateKey.generate().public_key().public_bytes_raw())[0] == 201
    assert_problem(_enroll(gw, token, Ed25519PrivateKey.generate().public_key().public_bytes_raw()), 401)


@pytest.mark.integration
@pytest.mark.slow
def test_device_names_with_control_characters_are_refused_and_shown_escaped(gw: Gateway) -> None:
    rng = random.Random(4)
    token = gw.enrollment_token("S007")
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    for char in HOSTILE:
        name = "".join(rng.choice("pi-4 ") for _ in range(rng.randint(0, 10)))
        at = rng.randint(0, len(name))
        name = name[:at] + char + name[at:]
        answer = _enroll(gw, token, key, name)
        if char == "\ud800":  # not even encodable as UTF-8 JSON: json.dumps escapes it, the parser refuses it
            assert_problem(answer, 400, "malformed-json")
            continue
        problem = assert_problem(answer, 422, "invalid-enrollment")
        assert f"U+{ord(char):04X}" in problem["detail"] and f"position {at}" in problem["detail"], problem
    for name in ("", " ", "x" * 129):
        assert _enroll(gw, token, key, name)[0] == 422
    assert _enroll(gw, token, key, "Kühlraum \u2013 Pi 4 [1]")[0] == 201  # printable text, any script
    # names that reached the registry before names were checked are shown escaped
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{gw.home / 'state/gateway/devices.db'}")
    hostile = "evil\x1b[2J\x1b]0;pwned\x07\u202egnp.exe\r\n[bold red]x"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "insert into devices values ('edge-S007-legacy', 'S007', ?, 'active', ?, 0, null)",
            (hostile, bytes(32)),
        )
    engine.dispose()
    wide = {**gw.env, "COLUMNS": "400"}  # one line per device: rich wraps cells at the width
    text = run_cli("devices", "list", home=gw.home, env=wide)
    assert text.returncode == 0, text.stderr
    assert _visible(text.stdout.replace("\n", "")), repr(text.stdout)
    assert (
        "\\x1b[2J" in text.stdout
        and "\\u202e" in text.stdout
        and "[bold red]x" in text.stdout.replace("\n", "")
    )
    as_json = run_cli("devices", "list", "-o", "json", home=gw.home, env=gw.env)
    assert _visible(as_json.stdout.replace("\n", ""))
    assert hostile in [d["name"] for d in json.loads(as_json.stdout)]


# --- the connection: header floods, slow clients, TLS ------------------------------------------


def tls_socket(gw: Gateway, *, timeout: float = 10.0, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    context = context or ssl.create_default_context(cafile=str(gw.ca_file))
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_until_closed(sock: ssl.SSLSocket, limit: float = 15.0) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it."""
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic()


def problem_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers.get("content-type") == "application/problem+json", head
    problem = json.loads(body[: int(headers["content-length"])])
    assert problem["status"] == int(lines[0].split()[1]) and problem["type"].startswith(
        "urn:lakehouse:problem:"
    )
    return int(lines[0].split()[1]), problem


@pytest.mark.integration
@pytest.mark.slow
def test_header_floods_are_cut_at_the_head_limit_and_never_audited(gw: Gateway) -> None:
    audit = AuditLog(gw.home / "state/gateway/audit.jsonl")
    rng = random.Random(13)
    for size in (16 * 1024 + 100, 65_536, 1_000_000, 8_000_000):
        for name in ("X-Pad", "Authorization", "Cookie", "X-\x1b[2J"):
            value = ("Bearer " if name == "Authorization" else "") + "".join(
                rng.choice("Ab9.~") for _ in range(64)
            )
            pad = f"{name}: {value * (size // len(value) + 1)}\r\n"
            where = rng.randrange(3)
            head = "POST /v1/batches HTTP/1.1\r\n" + (pad if where == 0 else "")
            head += "Host: x\r\n" + (pad if where == 1 else "") + "Content-Length: 2\r\n"
            head += (pad if where == 2 else "") + "\r\n{}"
            before = audit.size()
            sock = tls_socket(gw)
            started = time.monotonic()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                sock.sendall(head.encode("latin-1"))  # the server stops reading at its limit
            answer, closed = read_until_closed(sock)
            sock.close()
            if answer or size <= 65_536:
                status, problem = problem_of(answer)
                if name.isprintable():
                    assert (status, problem["code"]) == (431, "header-too-large"), (
                        size,
                        name,
                        where,
                        problem,
                    )
                    assert "16384 bytes" in problem["detail"]
                else:  # not a header name at all: malformed, whichever check comes first
                    assert (status, problem["code"]) in {(431, "header-too-large"), (400, "bad-request")}
            assert closed - started < 10
            assert audit.size() == before, "a refused head reached the audit log"
    # the Authorization header itself is capped before it is parsed (below the head limit)
    for size in (4097, 8000, 15000):
        before = audit.size()
        got = request(gw, "POST", "/v1/batches", b"{}", {"Authorization": "Bearer " + "a" * size, **SEALED})
        problem = assert_problem(got, 431, "header-too-large")
        assert "Authorization header exceeds 4096 bytes" in problem["detail"]
        assert audit.size() - before < 700
    assert request(gw, "GET", "/healthz")[0] == 200


def _slow_client(gw: Gateway, first: bytes, trickle: bytes, every: float) -> tuple[bytes, float, float]:
    """Send ``first`` at once, then ``trickle`` a byte at a time; (answer, head sent at, closed at)."""
    sock = tls_socket(gw, timeout=every)
    sent_at = time.monotonic()
    answer = b""
    try:
        if first:
            sock.sendall(first)
        sent_at = time.monotonic()
        for i in range(len(trickle)):
            sock.sendall(trickle[i : i + 1])
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return answer, sent_at, time.monotonic()
            answer += chunk
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        return answer, sent_at, time.monotonic()
    rest, closed = read_until_closed(sock)
    sock.close()
    return answer + rest, sent_at, closed


@pytest.mark.integration
@pytest.mark.slow
def test_slow_and_idle_clients_are_timed_out(gw: Gateway, token: str) -> None:
    """header_timeout 1.5 s, body_timeout 2 s, idle_timeout 1 s in this module's gateway."""
    rng = random.Random(17)
    head = b"POST /v1/devices/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
    batch_head = (
        b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.lakehouse.sealed-batch+json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 60\r\n\r\n"
    )
    chunked = b"POST /v1/devices/enroll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"1\r\n{\r\n" * 30
    variants: dict[str, tuple[bytes, bytes, str]] = {}  # name -> (sent at once, trickled, expected)
    for k in sorted(rng.sample(range(len(head)), 4)):  # slow heads, from several positions
        variants[f"head from byte {k}"] = (head[:k], head[k:], "408 headers")
    variants["body of an enrollment"] = (head, b'{"enrollment_token":"' + b"x" * 40 + b'"}', "408 body")
    variants["body of a batch"] = (batch_head, b"{" + b" " * 58 + b"}", "408 body")
    variants["chunked body"] = (chunked, body, "408 body")
    variants["body after an early 401"] = (
        batch_head.replace(token.encode(), b"nope"),
        b" " * 60,
        "401 then closed",
    )
    variants["an early 401, its body, then silence"] = (
        batch_head.replace(token.encode(), b"nope") + b" " * 60,
        b"",
        "401 then idle",
    )
    results: dict[str, tuple[bytes, float, float]] = {}

    def run(name: str) -> None:
        first, trickle, _ = variants[name]
        results[name] = _slow_client(gw, first, trickle, rng.uniform(0.2, 0.35))

    def silent() -> None:
        sock = tls_socket(gw)
        started = time.monotonic()
        results["silent"] = (*read_until_closed(sock), started)

    def idle() -> None:
        sock = tls_socket(gw)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer, closed = read_until_closed(sock)
        results["idle after a request"] = (answer, started, closed)

    threads = [threading.Thread(target=run, args=(n,)) for n in variants]
    threads += [threading.Thread(target=silent), threading.Thread(target=idle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    failures = []
    for name, (_, _, expected) in variants.items():
        answer, sent_at, closed = results[name]
        took = closed - sent_at
        if expected == "401 then closed":
            ok = answer.startswith(b"HTTP/1.1 401") and 1.5 < took < 4.5
        elif expected == "401 then idle":  # the idle timeout (1 s) closes it
            ok = answer.startswith(b"HTTP/1.1 401") and 0.5 < took < 3.5
        else:
            status, problem = problem_of(answer) if answer.startswith(b"HTTP/1.1 408") else (0, {})
            limit = 1.5 if expected == "408 headers" else 2.0
            ok = (
                status == 408
                and problem.get("code") == "request-timeout"
                and limit - 0.5 < took < limit + 2.5
            )
            ok = ok and expected.split()[1] in problem.get("detail", "")
        if not ok:
            failures.append(f"{name}: {took:.1f}s {answer[:300]!r}")
    answer, closed, started = results["silent"]
    if answer or not 1.0 < closed - started < 4.0:
        failures.append(f"silent: {closed - started:.1f}s {answer!r}")
    answer, started, closed = results["idle after a request"]
    if not answer.startswith(b"HTTP/1.1 200") or not 0.5 < closed - started < 3.5:
        failures.append(f"idle: {closed - started:.1f}s {answer!r}")
    assert not failures, "\n".join(failures)


def _handshake(
    gw: Gateway, *, lowest: ssl.TLSVersion, highest: ssl.TLSVersion, ciphers: str
) -> tuple[str, str] | str:
    context = ssl.create_default_context(cafile=str(gw.ca_file))
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: exactly what is offered here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version, context.maximum_version = lowest, highest
    context.set_ciphers(ciphers + ":@SECLEVEL=0")  # the client offers what the server must refuse
    try:
        with tls_socket(gw, context=context) as sock:
            version, cipher = sock.version(), sock.cipher()
            assert version is not None and cipher is not None
            return version, cipher[0]
    except (ssl.SSLError, ConnectionResetError) as exc:
        return f"refused: {exc}"


@pytest.mark.integration
@pytest.mark.slow
def test_tls_1_3_preferred_and_1_2_only_with_aead(gw: Gateway) -> None:
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    assert _handshake(gw, lowest=v12, highest=v13, ciphers="ALL")[0] == "TLSv1.3"  # type: ignore[index]
    for cipher in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ):
        assert _handshake(gw, lowest=v12, highest=v12, ciphers=cipher) == ("TLSv1.2", cipher)
    refused = [
        "ECDHE-ECDSA-AES128-SHA",  # CBC
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-ECDSA-CAMELLIA128-SHA256",
        "ECDHE-ECDSA-AES128-CCM8",  # short tag
        "AES128-GCM-SHA256",  # AEAD, but no forward secrecy
        "AES256-SHA",
    ]
    for cipher in refused:
        answer = _handshake(gw, lowest=v12, highest=v12, ciphers=cipher)
        assert isinstance(answer, str) and answer.startswith("refused"), (cipher, answer)
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        answer = _handshake(gw, lowest=version, highest=version, ciphers="ALL")
        assert isinstance(answer, str) and answer.startswith("refused"), (version, answer)


# --- pre-authentication throttling -------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_unauthenticated_floods_are_throttled_per_address(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "home", rate_per_address="2", address_burst="5")
    try:
        audit = AuditLog(gw.home / "state/gateway/audit.jsonl")
        rng = random.Random(23)
        targets = [
            ("/v1/devices/enroll", b'{"enrollment_token":"lhe_nope_nope","public_key":"' + b"A" * 43 + b'"}'),
            ("/v1/token", b'{"grant_type":"client_credentials"}'),
            ("/v1/batches", b"{}"),
            ("/v1/batches/skip", b"{}"),
            ("/nowhere", b""),
        ]
        before, started = audit.size(), time.monotonic()
        answers = []
        for _ in range(40):
            path, body = rng.choice(targets)
            headers = {"Content-Type": "application/json"}
            if rng.random() < 0.5:
                headers["Authorization"] = "Bearer " + "x" * rng.randint(1, 3000)
            answers.append(request(gw, "POST", path, body * rng.choice([1, 1, 500]), headers))
        elapsed = time.monotonic() - started
        limited = [a for a in answers if a[0] == 429]
        assert all(a[0] != 429 for a in answers[:5])  # the burst
        assert len(limited) >= 40 - 5 - 2 * elapsed - 1, [a[0] for a in answers]
        for answer in limited:
            problem = assert_problem(answer, 429, "rate-limited")
            assert int(answer[1]["retry-after"]) >= 1 and "client address" in problem["detail"]
        assert all(a[0] < 500 for a in answers)
        throttled = [e for e in audit.entries() if e["event"] == "throttle"]
        assert 1 <= len(throttled) <= 2 + 2 * elapsed  # one line per episode, not per refused request
        assert audit.size() - before < 700 * (5 + 2 * elapsed + len(throttled))
        assert request(gw, "GET", "/healthz")[0] == 200  # a load balancer's probe is never throttled
    finally:
        gw.stop()


# --- the agent and 409 -------------------------------------------------------------------------


def _agent(gw: Gateway, state: Path, store: str, **options: Any) -> Any:
    from lakehouse_edge.agent import Agent, enroll

    enroll(state, gw.url, gw.enrollment_token(store), gw.ca_file)
    return Agent(state, batch_size=4, backoff_base_s=0.05, backoff_cap_s=0.2, **options)


def _rows(unit: str, start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "device_id": unit,
            "reading_ts": f"2028-01-{1 + (start + i) // 24:02d}T{(start + i) % 24:02d}:00:00",
            "temperature_c": 3.0,
        }
        for i in range(n)
    ]


def _landed(gw: Gateway, unit: str) -> list[str]:
    with Lakehouse(Settings(home=gw.home)) as lh:
        got = lh.sql(f"select reading_ts from bronze.sensor_readings where device_id = '{unit}'").column(0)
    return sorted(t.isoformat() for t in got.to_pylist())


@pytest.mark.integration
@pytest.mark.slow
def test_agent_declares_dropped_and_rejected_seqs_and_loses_nothing_silently(
    gw: Gateway, tmp_path: Path
) -> None:
    """A full queue drops the oldest batches, the gateway refuses one for good: the agent
    declares those seqs skipped after the 409 and delivers everything else."""
    agent = _agent(gw, tmp_path / "agent", "S008")
    ingest = agent.identity.ingest_key
    size = len(
        seal(
            _rows("D-S008-1", 0, 4), device_id="d", seq=1, schema=SCHEMA, schema_version=1, ingest_key=ingest
        )
    )
    agent.queue.max_bytes = int(size * 5.5)
    for b in range(8):  # seqs 1-8; the queue keeps the newest five: 1-3 are dropped
        agent.seal_and_queue(_rows("D-S008-1", 4 * b, 4))
    agent.queue.max_bytes = 1 << 30
    forged = _rows("D-S009-1", 100, 4)  # seq 9: another store's unit, refused for good
    agent.seal_and_queue(forged)
    agent.seal_and_queue(_rows("D-S008-1", 200, 4))  # seq 10
    assert agent.queue.status()["dropped_batches"] == 3
    agent.run(None, exit_when_drained=True)
    status = agent.queue.status()
    assert status["pending_batches"] == 0 and status["rejected_batches"] == 1
    assert status["declared_skipped"] == 4  # seqs 1-3 (dropped) and 9 (rejected)
    expected = sorted(r["reading_ts"] for b in range(3, 8) for r in _rows("D-S008-1", 4 * b, 4))
    expected = sorted(expected + [r["reading_ts"] for r in _rows("D-S008-1", 200, 4)])
    assert _landed(gw, "D-S008-1") == expected
    assert _landed(gw, "D-S009-1") == []
    device_id = agent.identity.device_id
    dead = [d for d in dead_letters(gw.home) if d["source"] == f"edge:{device_id}"]
    reasons = {d["source_offset"]: d["reason"] for d in dead}
    assert "declared skipped by the device (dropped)" in reasons[3]  # the gap, on the record
    assert "belongs to store S009" in reasons[9]  # the refused batch, whole


@pytest.mark.integration
@pytest.mark.slow
def test_agent_whose_state_went_back_keeps_its_batches_and_renumbers(gw: Gateway, tmp_path: Path) -> None:
    """An SD card restored from an older image: its queued seqs were used at the gateway since."""
    import shutil

    state = tmp_path / "agent"
    agent = _agent(gw, state, "S009")
    agent.seal_and_queue(_rows("D-S009-2", 0, 4))  # seq 1
    backup = tmp_path / "backup"
    shutil.copytree(state, backup)  # the image, taken with seq 1 queued
    for b in range(1, 4):
        agent.seal_and_queue(_rows("D-S009-2", 4 * b, 4))  # seqs 2-4
    agent.run(None, exit_when_drained=True)
    agent.queue.close()
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # restored: seq 1 queued, the next batches numbered 2, 3 ...
    from lakehouse_edge.agent import Agent

    restored = Agent(state, batch_size=4, backoff_base_s=0.05, backoff_cap_s=0.2)
    restored.seal_and_queue(_rows("D-S009-2", 100, 4))  # seq 2 again, new readings
    restored.seal_and_queue(_rows("D-S009-2", 200, 4))  # seq 3 again
    restored.run(None, exit_when_drained=True)
    status = restored.queue.status()
    # the gateway expects seq 5: seqs 1-3 cannot land (it cannot tell a retry of seq 1 from new
    # readings under a used number), so they are kept in the rejected table, never lost
    assert status["pending_batches"] == 0 and status["rejected_batches"] == 3, status
    restored.seal_and_queue(_rows("D-S009-2", 300, 4))  # numbered after what the gateway holds
    restored.run(None, exit_when_drained=True)
    landed = _landed(gw, "D-S009-2")
    assert len(landed) == len(set(landed)) == 4 * 4 + 4
    assert all(r["reading_ts"] in landed for r in _rows("D-S009-2", 300, 4))


# --- the gateway's own log ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_log_escapes_control_characters_and_never_500(gw: Gateway) -> None:
    """Last in the module: stops the gateway to read its whole output, then starts it again."""
    for path in ("/v1/%1b%5b2J%1b%5d0;pwned%07", "/%e2%80%ae/x", "/v1/%0d%0afake:%20line"):
        assert request(gw, "GET", path)[0] == 404
    output = gw.stop()
    gw.start()
    assert "Traceback" not in output and '" 500' not in output, output[-3000:]
    assert _visible(output.replace("\n", "")), [line for line in output.splitlines() if not _visible(line)]
    assert '"GET /v1/%1B%5B2J%1B%5D0%3Bpwned%07 HTTP/1.1" 404' in output  # there, percent-encoded


@pytest.mark.unit
def test_log_records_are_escaped_before_they_reach_a_terminal() -> None:
    import io
    import logging

    from lakehouse.ingest.edge._server import EscapeControlCharacters

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EscapeControlCharacters())
    log = logging.getLogger("test.edge.escape")
    log.addHandler(handler)
    log.propagate = False
    try:
        for char in HOSTILE:
            log.warning("device %s named %r", f"pi{char}4", {"name": char})
            log.warning(f"inline pi{char}4")
            try:
                raise ValueError(f"bad {char} value")
            except ValueError:
                log.exception("failed for %s", char)
    finally:
        log.removeHandler(handler)
    assert _visible(stream.getvalue().replace("\n", ""))
    assert "pi\\x1b4" in stream.getvalue()
