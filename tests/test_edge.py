"""Edge uploads with real processes: the gateway (uvicorn, TLS) on loopback, agents as
`lakehouse-edge` subprocesses, bronze in a real Iceberg catalog."""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lakehouse import Lakehouse, Settings
from lakehouse.local import free_port, wait_for_port
from lakehouse_edge.envelope import IngestKey, b64e, client_assertion, seal

from .conftest import REPO, run_cli, start_cli

EDGE_BIN = str(Path(sys.executable).parent / "lakehouse-edge")
SCHEMA = "bronze.sensor_readings"

pytestmark = pytest.mark.slow


@dataclass
class Gateway:
    home: Path
    url: str
    ca_file: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)  # its stdout (access log) and stderr
    readers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.process = start_cli("gateway", "serve", "--port", str(self.port), home=self.home, env=self.env)
        self.output = []
        # drained while it runs: a full pipe would block the gateway's logging
        self.readers = [
            threading.Thread(target=self.output.extend, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self.readers:
            reader.start()
        wait_for_port("127.0.0.1", self.port, 60, pid=self.process.pid, log="gateway stderr")
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(self, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("the gateway did not become healthy")

    def stop(self) -> str:
        """Stop it; returns what it wrote (log and access log)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self.readers:
            reader.join(10)
        self.process = None
        return "".join(self.output)

    def enrollment_token(self, store: str = "S001") -> str:
        result = run_cli("devices", "enroll", "--store", store, "-o", "json", home=self.home, env=self.env)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["enrollment_token"])


def request(
    gw: Gateway, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(gw.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=context, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(raw) if raw else {},
        )
    finally:
        conn.close()


STORES = [f"S{i:03d}" for i in range(1, 10)]


def seed_reference(home: Path, stores: list[str] = STORES, units_per_store: int = 3) -> None:
    """The reference data the gateway checks against: bronze.stores (S001-S009) and
    bronze.devices (refrigeration units D-S001-1 .. D-S009-3, each owned by its store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = home.parent / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    units = [(f"D-{s}-{n}", s) for s in stores for n in range(1, units_per_store + 1)]
    pq.write_table(pa.table({"store_id": stores}), folder / "stores.parquet")
    pq.write_table(
        pa.table({"device_id": [u for u, _ in units], "store_id": [s for _, s in units]}),
        folder / "devices.parquet",
    )
    with Lakehouse(Settings(home=home)) as lh:
        lh.load("bronze.stores", [folder / "stores.parquet"])
        lh.load("bronze.devices", [folder / "devices.parquet"])


def start_gateway(home: Path, **settings: str) -> Gateway:
    seed_reference(home)
    env = {f"LAKEHOUSE_GATEWAY__{k.upper()}": v for k, v in settings.items()}
    tls = run_cli("gateway", "tls", "-o", "json", home=home, env=env)
    assert tls.returncode == 0, tls.stderr
    port = free_port(set())
    gw = Gateway(home, f"https://127.0.0.1:{port}", Path(json.loads(tls.stdout)["ca_file"]), port, env)
    gw.start()
    return gw


def edge(*args: str, state: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE_BIN, "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def start_edge(*args: str, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EDGE_BIN, "--state-dir", str(state), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def enroll_agent(gw: Gateway, state: Path, store: str = "S001") -> dict[str, str]:
    token_file = state.parent / f"{state.name}.token"
    token_file.write_text(gw.enrollment_token(store))
    result = edge(
        "enroll",
        "--gateway",
        gw.url,
        "--ca-file",
        str(gw.ca_file),
        "--token-file",
        str(token_file),
        state=state,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def readings(home: Path) -> list[tuple[str, Any]]:
    with Lakehouse(Settings(home=home)) as lh:
        rows = lh.sql("select device_id, reading_ts from bronze.sensor_readings").to_pylist()
    return sorted((r["device_id"], r["reading_ts"]) for r in rows)


def queue_status(state: Path) -> dict[str, int]:
    result = edge("status", state=state)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)["queue"])


@pytest.fixture
def gateway(home: Path) -> Iterator[Gateway]:
    gw = start_gateway(home)
    try:
        yield gw
    finally:
        if gw.process is not None:
            gw.stop()


# --- the agent end to end ---------------------------------------------------------------------


@pytest.mark.integration
def test_agents_land_every_reading_exactly_once_across_a_gateway_outage(
    gateway: Gateway, tmp_path: Path
) -> None:
    agents = [tmp_path / f"agent{i}" for i in range(3)]
    units = {}
    for i, state in enumerate(agents):
        identity = enroll_agent(gateway, state, store=f"S00{i + 1}")
        assert identity["store_id"] == f"S00{i + 1}"
        units[state] = f"D-S00{i + 1}-1:fridge,D-S00{i + 1}-2:freezer"
    per_agent = 1200
    gateway.stop()  # the devices start while the gateway is down: they queue, back off and retry
    procs = [
        start_edge(
            "run",
            "--units",
            units[s],
            "--seconds-per-reading",
            "0.02",
            "--limit",
            str(per_agent),
            "--batch-size",
            "40",
            "--backoff-cap",
            "3",
            "--exit-when-drained",
            "--start",
            "2026-07-01T00:00:00",
            state=s,
        )
        for s in agents
    ]
    time.sleep(4)
    assert all(p.poll() is None for p in procs), "agents must keep running while the gateway is down"
    assert sum(queue_status(s)["pending_batches"] for s in agents) > 0
    gateway.start()
    time.sleep(1.0)
    gateway.stop()  # a second, short outage while they deliver
    gateway.start()
    for p in procs:
        _, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]
        assert "upload deferred" in stderr  # they did see the outage
    rows = readings(gateway.home)
    assert len(rows) == 3 * per_agent
    assert len(set(rows)) == len(rows), "a reading landed twice"
    for s in agents:
        assert queue_status(s)["pending_batches"] == 0


@pytest.mark.integration
def test_agent_sigkilled_mid_upload_loses_and_doubles_nothing(gateway: Gateway, tmp_path: Path) -> None:
    state = tmp_path / "agent"
    enroll_agent(gateway, state)
    total, batch = 3000, 15
    first = start_edge(
        "run",
        "--units",
        "D-S001-1:fridge",
        "--seconds-per-reading",
        "0",
        "--limit",
        str(total),
        "--batch-size",
        str(batch),
        "--start",
        "2026-07-01T00:00:00",
        state=state,
    )
    rng = random.Random(11)
    kills, pending_after_kills = 0, []
    proc: subprocess.Popen[str] | None = first
    while True:
        # wait until the source is fully sealed into the queue before the first kill
        deadline = time.monotonic() + 60
        while queue_status(state)["last_seq"] < total // batch and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue_status(state)["last_seq"] == total // batch
        time.sleep(rng.uniform(0.2, 0.8))
        assert proc is not None
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        pending_after_kills.append(queue_status(state)["pending_batches"])
        if pending_after_kills[-1] == 0 or kills >= 4:
            break
        proc = start_edge("run", "--source", "none", state=state)
    final = edge("run", "--source", "none", "--exit-when-drained", state=state)
    assert final.returncode == 0, final.stderr[-3000:]
    assert pending_after_kills and pending_after_kills[0] > 0, "the first kill must interrupt the uploads"
    rows = readings(gateway.home)
    assert len(rows) == total
    assert len(set(rows)) == total


# --- the attack battery -----------------------------------------------------------------------


@dataclass
class Device:
    device_id: str
    key: Ed25519PrivateKey
    ingest: IngestKey
    audience: str


def enroll_direct(gw: Gateway, store: str = "S001") -> Device:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    status, _, body = request(
        gw,
        "POST",
        "/v1/devices/enroll",
        json.dumps({"enrollment_token": gw.enrollment_token(store), "public_key": b64e(public)}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, body
    return Device(body["device_id"], key, IngestKey.from_json(body["ingest_key"]), body["assertion_audience"])


def public_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def skip(gw: Gateway, token: str, first: int, last: int, schema: str = SCHEMA) -> tuple[int, Any]:
    """Declare seqs first..last lost, as an agent does after a 409; (status, next_seq or problem)."""
    status, _, body = request(
        gw,
        "POST",
        "/v1/batches/skip",
        json.dumps({"schema": schema, "from_seq": first, "to_seq": last, "reason": "rejected"}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    return status, body.get("next_seq", body)


def token_request(assertion: str) -> bytes:
    return json.dumps(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
    ).encode()


def access_token(gw: Gateway, device: Device) -> str:
    assertion = client_assertion(device.key, device_id=device.device_id, audience=device.audience)
    status, _, body = request(
        gw, "POST", "/v1/token", token_request(assertion), {"Content-Type": "application/json"}
    )
    assert status == 200, body
    return str(body["access_token"])


def sample(n: int = 5, unit: str = "D-S001-1", day: int = 1) -> list[dict[str, Any]]:
    """Readings of ``unit`` without a store_id: the gateway fills in the device's store."""
    return [
        {
            "device_id": unit,
            "reading_ts": f"2026-08-{day:02d}T{h:02d}:00:00",
            "temperature_c": 3.1,
            "door_open": False,
        }
        for h in range(n)
    ]


def sealed_for(device: Device, seq: int, rows: list[dict[str, Any]] | None = None, **kw: Any) -> bytes:
    return seal(
        rows if rows is not None else sample(),
        device_id=kw.get("device_id", device.device_id),
        seq=seq,
        schema=kw.get("schema", SCHEMA),
        schema_version=kw.get("schema_version", 1),
        ingest_key=device.ingest,
    )


def upload(gw: Gateway, token: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    return request(
        gw,
        "POST",
        "/v1/batches",
        body,
        {"Content-Type": "application/vnd.lakehouse.sealed-batch+json", "Authorization": f"Bearer {token}"},
    )


def gateway_signing_key(gw: Gateway) -> tuple[str, Any]:
    from cryptography.hazmat.primitives import serialization

    entry = json.loads((gw.home / "state" / "gateway" / "signing-keys.json").read_text())[0]
    return entry["kid"], serialization.load_pem_private_key(entry["private_pem"].encode(), None)


def _claims(device: Device, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "lakehouse-gateway",
        "aud": "lakehouse-ingest",
        "sub": device.device_id,
        "store": "S001",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return claims


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64e(json.dumps(header).encode())}.{b64e(json.dumps(claims).encode())}"


def forged(gw: Gateway, device: Device, *, key: Any = None, kid: str | None = None, **claims: Any) -> str:
    real_kid, real_key = gateway_signing_key(gw)
    return jwt.encode(
        _claims(device, **claims), key or real_key, algorithm="EdDSA", headers={"kid": kid or real_kid}
    )


def unsigned_token(device: Device) -> str:
    return _unsigned({"alg": "none", "typ": "JWT"}, _claims(device)) + "."


def hs256_with_public_key(gw: Gateway, device: Device) -> str:
    from cryptography.hazmat.primitives import serialization

    kid, key = gateway_signing_key(gw)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(device))
    return f"{signing_input}.{b64e(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"


def tamper_ciphertext(body: bytes) -> bytes:
    sealed = json.loads(body)
    raw = bytearray(base64.urlsafe_b64decode(sealed["ciphertext"] + "=="))
    raw[len(raw) // 2] ^= 0x01
    sealed["ciphertext"] = b64e(bytes(raw))
    return json.dumps(sealed).encode()


def change_header(body: bytes, **fields: Any) -> bytes:
    sealed = json.loads(body)
    sealed.update(fields)
    return json.dumps(sealed).encode()


def bomb(device: Device, seq: int) -> bytes:
    """A properly sealed batch whose JSON inflates from ~30 KB to 30 MB."""
    from lakehouse_edge.envelope import seal_compressed

    payload = b'[{"device_id":"' + b"A" * 30_000_000 + b'"}]'
    return seal_compressed(
        zlib.compress(payload, 9),
        device_id=device.device_id,
        seq=seq,
        schema=SCHEMA,
        schema_version=1,
        ingest_key=device.ingest,
    )


@pytest.fixture(scope="module")
def battery_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("battery") / "home"
    gw = start_gateway(home, max_body_bytes="65536", max_decompressed_bytes="1048576")
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.integration
def test_attack_battery_lands_nothing_and_never_answers_500(battery_gateway: Gateway) -> None:
    gw = battery_gateway
    device = enroll_direct(gw)
    token = access_token(gw, device)
    # a real upload first: the battery must not change what it landed
    status, _, body = upload(gw, token, sealed_for(device, 1))
    assert status == 201 and body["status"] == "landed", body
    before = readings(gw.home)
    assert len(before) == 5

    victim = enroll_direct(gw, "S002")
    victim_token = access_token(gw, victim)
    revoked = run_cli("devices", "revoke", victim.device_id, home=gw.home)
    assert revoked.returncode == 0, revoked.stderr

    reused_token = gw.enrollment_token()
    first_use = request(
        gw,
        "POST",
        "/v1/devices/enroll",
        json.dumps({"enrollment_token": reused_token, "public_key": b64e(public_key())}).encode(),
        {"Content-Type": "application/json"},
    )
    assert first_use[0] == 201
    replayed_assertion = client_assertion(device.key, device_id=device.device_id, audience=device.audience)
    assert (
        request(
            gw, "POST", "/v1/token", token_request(replayed_assertion), {"Content-Type": "application/json"}
        )[0]
        == 200
    )

    skew = 60
    now = int(time.time())
    cases: dict[str, tuple[str, str, bytes, dict[str, str], int]] = {}

    def batch_case(name: str, bearer: str, body: bytes, expected: int) -> None:
        headers = {
            "Content-Type": "application/vnd.lakehouse.sealed-batch+json",
            "Authorization": f"Bearer {bearer}",
        }
        cases[name] = ("POST", "/v1/batches", body, headers, expected)

    good = sealed_for(device, 2)
    batch_case("no token", "", good, 401)
    batch_case(
        "expired token", forged(gw, device, iat=now - 3600, nbf=now - 3600, exp=now - skew - 30), good, 401
    )
    batch_case(
        "not-yet-valid token",
        forged(gw, device, iat=now + skew + 600, nbf=now + skew + 600, exp=now + 7200),
        good,
        401,
    )
    batch_case("wrong audience", forged(gw, device, aud="someone-else"), good, 401)
    batch_case("wrong issuer", forged(gw, device, iss="https://evil.example"), good, 401)
    batch_case(
        "missing jti",
        jwt.encode(
            {k: v for k, v in _claims(device).items() if k != "jti"},
            gateway_signing_key(gw)[1],
            algorithm="EdDSA",
            headers={"kid": gateway_signing_key(gw)[0]},
        ),
        good,
        401,
    )
    batch_case("alg=none", unsigned_token(device), good, 401)
    batch_case("HS256 keyed with the public key", hs256_with_public_key(gw, device), good, 401)
    batch_case(
        "unknown kid", forged(gw, device, key=Ed25519PrivateKey.generate(), kid="signing-unknown"), good, 401
    )
    batch_case("right kid, wrong key", forged(gw, device, key=Ed25519PrivateKey.generate()), good, 401)
    batch_case("revoked device", victim_token, sealed_for(victim, 1), 403)
    batch_case("another device's batch", token, sealed_for(victim, 1), 403)
    batch_case("tampered ciphertext", token, tamper_ciphertext(good), 400)
    batch_case("wrong associated data (seq)", token, change_header(good, seq=99), 400)
    batch_case("wrong associated data (schema version)", token, change_header(good, schema_version=0), 400)
    batch_case("oversized body", token, b"{" + b" " * 70_000 + b"}", 413)
    batch_case("decompression bomb", token, bomb(device, 3), 413)
    batch_case("malformed JSON", token, b'{"v": 1, "device_id": ', 400)
    batch_case("not an object", token, b"[1, 2, 3]", 400)
    batch_case("wrong schema (table)", token, sealed_for(device, 2, schema="bronze.orders"), 422)
    batch_case("wrong schema (newer version)", token, sealed_for(device, 2, schema_version=99), 422)
    batch_case("a gap in the seqs", token, sealed_for(device, 4), 409)
    batch_case("a seq far ahead", token, sealed_for(device, 2**40), 409)
    batch_case("seq 0 (below the range)", token, sealed_for(device, 0), 422)
    batch_case("unknown ingest key", token, change_header(good, ingest_kid="ingest-nope"), 400)
    cases["replayed client assertion"] = (
        "POST",
        "/v1/token",
        token_request(replayed_assertion),
        {"Content-Type": "application/json"},
        401,
    )
    cases["assertion for another audience"] = (
        "POST",
        "/v1/token",
        token_request(
            client_assertion(device.key, device_id=device.device_id, audience="https://elsewhere/v1/token")
        ),
        {"Content-Type": "application/json"},
        401,
    )
    cases["assertion signed by another key"] = (
        "POST",
        "/v1/token",
        token_request(
            client_assertion(
                Ed25519PrivateKey.generate(), device_id=device.device_id, audience=device.audience
            )
        ),
        {"Content-Type": "application/json"},
        401,
    )
    cases["revoked device asks for a token"] = (
        "POST",
        "/v1/token",
        token_request(client_assertion(victim.key, device_id=victim.device_id, audience=victim.audience)),
        {"Content-Type": "application/json"},
        403,
    )
    cases["reused enrollment token"] = (
        "POST",
        "/v1/devices/enroll",
        json.dumps({"enrollment_token": reused_token, "public_key": b64e(public_key())}).encode(),
        {"Content-Type": "application/json"},
        401,
    )
    cases["malformed enrollment"] = (
        "POST",
        "/v1/devices/enroll",
        b"{not json",
        {"Content-Type": "application/json"},
        400,
    )

    failures = []
    for name, (method, path, body, headers, expected) in cases.items():
        status, response_headers, problem = request(gw, method, path, body, headers)
        if status != expected or response_headers.get("content-type") != "application/problem+json":
            failures.append(f"{name}: {status} {response_headers.get('content-type')} {problem}")
            continue
        if not (problem.get("status") == status and problem.get("detail") and problem.get("type")):
            failures.append(f"{name}: not a problem+json body: {problem}")
    assert not failures, "\n".join(failures)

    assert readings(gw.home) == before, "the battery landed rows"
    # contract violations, each as the device's next seq, are kept with their reason in dead
    # letters; the device then declares the seq skipped and goes on
    violations = {
        2: [{"device_id": "D-S001-1", "reading_ts": "not a time", "extra": 1}],
        3: [{**sample(1)[0], "store_id": "S002"}],
    }
    for seq, rows in violations.items():
        status, _, problem = upload(gw, token, sealed_for(device, seq, rows=rows))
        assert (status, problem["code"]) == (422, "wrong-schema"), problem
        assert "kept in bronze.dead_letters" in problem["detail"]
        status, _, problem = upload(gw, token, sealed_for(device, seq + 1))
        assert (status, problem["expected_seq"]) == (409, seq), problem
        assert skip(gw, token, seq, seq) == (200, seq + 1)
    # within the clock-skew tolerance a device's token is accepted
    skewed = forged(gw, device, iat=now + 30, nbf=now + 30, exp=now + 600)
    status, _, body = upload(gw, skewed, sealed_for(device, 4, rows=sample(2, day=7)))
    assert (status, body.get("status")) == (201, "landed"), body
    before = readings(gw.home)
    with Lakehouse(Settings(home=gw.home)) as lh:
        dead = lh.sql(
            "select source, source_offset, reason from bronze.dead_letters order by source_offset"
        ).to_pylist()
    assert [d["source_offset"] for d in dead] == [2, 3]
    assert all(d["source"] == f"edge:{device.device_id}" for d in dead)
    assert "store_id 'S002'" in dead[1]["reason"]
    # a legitimate retry of the landed batch is answered, not landed twice
    status, _, body = upload(gw, token, sealed_for(device, 4, rows=sample(2, day=7)))
    assert (status, body["status"]) == (200, "duplicate")
    assert readings(gw.home) == before

    audit = [json.loads(line) for line in (gw.home / "state/gateway/audit.jsonl").read_text().splitlines()]
    rejected = [e for e in audit if e["outcome"] == "rejected"]
    assert len(rejected) >= len(cases)
    assert {e["event"] for e in audit} >= {"enrollment-token", "enroll", "token", "revoke", "upload"}
    secrets_seen = [token, victim_token, reused_token, replayed_assertion]
    audit_text = (gw.home / "state/gateway/audit.jsonl").read_text()
    assert not any(s in audit_text for s in secrets_seen), "a token reached the audit log"


@pytest.mark.integration
def test_no_token_or_secret_reaches_the_gateway_log(battery_gateway: Gateway) -> None:
    gw = battery_gateway
    device = enroll_direct(gw)
    token = access_token(gw, device)
    upload(gw, token, sealed_for(device, 1, rows=sample(3, day=9)))
    stderr = gw.stop()
    gw.start()
    assert "Traceback" not in stderr and " 500 " not in stderr
    assert token not in stderr and token.split(".")[2] not in stderr
    assert "lhe_" not in stderr  # no enrollment token


@pytest.mark.integration
def test_rate_limit_answers_429_with_retry_after(home: Path) -> None:
    # one token per 100 s after a burst of 3: however slow the machine, the 4th upload on is refused
    gw = start_gateway(home, rate_per_device="0.01", rate_burst="3")
    try:
        device = enroll_direct(gw)
        token = access_token(gw, device)
        statuses = []
        for seq in range(1, 7):
            status, headers, _ = upload(gw, token, sealed_for(device, seq, rows=sample(2, day=seq)))
            statuses.append((status, headers.get("retry-after")))
        assert [s for s, _ in statuses] == [201, 201, 201, 429, 429, 429], statuses
        assert all(r is None for _, r in statuses[:3])
        assert all(r is not None and 1 <= int(r) <= 100 for _, r in statuses[3:]), statuses
    finally:
        gw.stop()


@pytest.mark.integration
def test_key_rotation_without_downtime(gateway: Gateway, tmp_path: Path) -> None:
    device = enroll_direct(gateway)
    old_token = access_token(gateway, device)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    sealed_old_key = sealed_for(device, 2, rows=sample(4, day=2))  # queued before the ingest key rotates
    rotated = run_cli("gateway", "rotate-keys", "--ingest", home=gateway.home)
    assert rotated.returncode == 0, rotated.stderr
    time.sleep(1.5)  # the running gateway notices the new key files
    new_token = access_token(gateway, device)
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid
    jwks = request(gateway, "GET", "/.well-known/jwks.json")[2]
    assert {k["kid"] for k in jwks["keys"]} >= {old_kid, jwt.get_unverified_header(new_token)["kid"]}
    assert all(k["kty"] == "OKP" and "d" not in k for k in jwks["keys"])
    # tokens from before and after, and a batch sealed for the old ingest key, all still work
    assert upload(gateway, old_token, sealed_for(device, 1, rows=sample(4, day=1)))[0] == 201
    assert upload(gateway, new_token, sealed_old_key)[0] == 201
    _, _, body = request(
        gateway,
        "POST",
        "/v1/token",
        token_request(client_assertion(device.key, device_id=device.device_id, audience=device.audience)),
        {"Content-Type": "application/json"},
    )
    assert body["ingest_key"]["kid"] != device.ingest.kid  # devices learn the new ingest key with their token
    assert len(readings(gateway.home)) == 8


@pytest.mark.integration
def test_openapi_describes_the_api(home: Path) -> None:
    result = run_cli("gateway", "openapi", home=home)
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert {"/v1/devices/enroll", "/v1/token", "/v1/batches", "/.well-known/jwks.json"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert (
        "application/vnd.lakehouse.sealed-batch+json"
        in spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    )


# --- the agent package on its own ------------------------------------------------------------


@pytest.mark.unit
def test_edge_agent_needs_only_cryptography() -> None:
    import tomllib

    project = tomllib.loads((REPO / "services/edge-agent/pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("=")[0] for d in project["dependencies"]] == ["cryptography"]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, lakehouse_edge.cli; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'lakehouse', 'pyiceberg', 'duckdb', 'pyarrow', 'jwt', 'fastapi', 'pydantic'}); print(bad)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


@pytest.mark.unit
def test_systemd_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "services/edge-agent/systemd/lakehouse-edge.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[:2] == ["/usr/local/bin/lakehouse-edge", "run"]
    assert service["User"] != "root"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "always",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key


@pytest.mark.unit
def test_queue_is_bounded_with_an_explicit_policy(tmp_path: Path) -> None:
    from lakehouse_edge.errors import QueueFull
    from lakehouse_edge.queue import UploadQueue

    oldest = UploadQueue(tmp_path / "a.sqlite", max_bytes=3000, when_full="drop-oldest")
    for seq in range(1, 6):
        oldest.put(seq, SCHEMA, 10, b"x" * 1000)
    assert [oldest.peek().seq] == [3]  # type: ignore[union-attr]
    assert oldest.status()["dropped_batches"] == 2 and oldest.pending_bytes() <= 3000
    newest = UploadQueue(tmp_path / "b.sqlite", max_bytes=3000, when_full="drop-newest")
    for seq in range(1, 4):
        newest.put(seq, SCHEMA, 10, b"x" * 1000)
    with pytest.raises(QueueFull):
        newest.put(4, SCHEMA, 10, b"x" * 1000)
    assert newest.next_seq() == 5  # a dropped batch's number is never reused
    assert newest.peek().seq == 1 and newest.status()["dropped_readings"] == 10  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="expects 5"):
        newest.put(9, SCHEMA, 1, b"y")
    assert (tmp_path / "a.sqlite").stat().st_mode & 0o077 == 0


@pytest.mark.unit
def test_sealed_batches_hide_readings_and_bind_their_header() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from lakehouse_edge.envelope import open_sealed, parse_header
    from lakehouse_edge.errors import EnvelopeError

    private = X25519PrivateKey.generate()
    ingest = IngestKey("ingest-1", private.public_key().public_bytes_raw())
    rows = sample(3)
    body = seal(rows, device_id="dev-1", seq=7, schema=SCHEMA, schema_version=1, ingest_key=ingest)
    assert b"D-S001-1" not in body and b"temperature" not in body
    assert open_sealed(parse_header(body), private, max_bytes=1 << 20) == rows
    for name, value in (
        ("device_id", "dev-2"),
        ("seq", 8),
        ("schema", "bronze.orders"),
        ("schema_version", 2),
    ):
        with pytest.raises(EnvelopeError, match="does not decrypt"):
            open_sealed(parse_header(change_header(body, **{name: value})), private, max_bytes=1 << 20)
    with pytest.raises(EnvelopeError, match="does not decrypt"):
        open_sealed(parse_header(body), X25519PrivateKey.generate(), max_bytes=1 << 20)


# --- the registry in a real PostgreSQL (the cluster profile's database) -----------------------


class StaticReference:
    """Reference data for a registry used on its own: these stores, no units."""

    def __init__(self, stores: set[str]):
        self.stores = stores

    def check_store(self, store_id: str) -> None:
        from lakehouse.ingest.edge import UnknownStore

        if store_id not in self.stores:
            raise UnknownStore(f"store {store_id!r} is not known")

    def owner_of(self, unit: str) -> str | None:
        return None


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL from the pgserver wheel, on a Unix socket in a temporary directory."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        server.psql("create database registry;")
        yield server.get_uri("registry").replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@pytest.mark.integration
def test_registry_on_postgresql(postgres_url: str, home: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lakehouse.ingest.edge import Registry, RegistryError

    registry = Registry(postgres_url, reference=StaticReference({"S007"}))
    assert registry.engine.dialect.name == "postgresql"
    token, _ = registry.issue_enrollment_token("S007", 60)
    keys = [public_key() for _ in range(8)]

    def attempt(i: int) -> str:
        try:
            return registry.enroll(token, keys[i], f"pi-{i}").device_id
        except RegistryError:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert sum(o != "refused" for o in outcomes) == 1, outcomes  # one token, one device, even when raced
    assert registry.use_assertion_id("jti-1", "d", time.time() + 60)
    assert not registry.use_assertion_id("jti-1", "d", time.time() + 60)
    registry.close()

    gw = start_gateway(home, registry_url=postgres_url)
    try:
        device = enroll_direct(gw, "S007")
        token = access_token(gw, device)
        assert upload(gw, token, sealed_for(device, 1, rows=sample(3, unit="D-S007-1")))[0] == 201
        revoked = run_cli("devices", "revoke", device.device_id, home=gw.home, env=gw.env)
        assert revoked.returncode == 0, revoked.stderr
        assert upload(gw, token, sealed_for(device, 2, rows=sample(3, unit="D-S007-1", day=2)))[0] == 403
        listed = run_cli("devices", "list", "-o", "json", home=gw.home, env=gw.env)
        statuses = {d["device_id"]: d["status"] for d in json.loads(listed.stdout)}
        assert statuses[device.device_id] == "revoked" and len(statuses) == 2
    finally:
        gw.stop()
    assert not (home / "state" / "gateway" / "devices.db").exists()  # nothing fell back to SQLite
