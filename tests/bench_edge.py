"""Edge gateway benchmark: N devices upload sealed batches concurrently over TLS.

The baseline is a bare FastAPI endpoint on the same uvicorn, TLS and machine that reads the same
bodies and answers 201 without authenticating, decrypting, validating or committing, so the
ratio is what the gateway's security and exactly-once landing cost. Also measured in process:
the cost per batch of verifying a device token (EdDSA) and of opening a sealed batch
(X25519 + HKDF + AES key unwrap + AES-256-GCM + zlib + JSON).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lakehouse import Settings
from lakehouse.ingest.edge import registry, tls_files
from lakehouse.local import free_port, terminate, wait_for_port
from lakehouse_edge.envelope import IngestKey, b64e, client_assertion, open_sealed, parse_header, seal

SCHEMA = "bronze.sensor_readings"


def bare_app() -> FastAPI:
    """The baseline: same framework and server, none of the work."""
    app = FastAPI()

    @app.post("/v1/batches", status_code=201)
    async def batches(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"status": "landed", "bytes": len(body)}, status_code=201)

    return app


def _readings(store: str, unit: int, batch: int, size: int) -> list[dict[str, Any]]:
    base = batch * size
    return [
        {
            "device_id": f"D-{store}-{unit}",
            "reading_ts": _ts(base + i),
            "temperature_c": 3.0 + (i % 7) / 10,
            "door_open": i % 11 == 0,
        }
        for i in range(size)
    ]


def _ts(step: int) -> str:
    minutes = step * 15
    day, rest = divmod(minutes, 1440)
    return f"2027-{1 + day // 28:02d}-{1 + day % 28:02d}T{rest // 60:02d}:{rest % 60:02d}:00"


def _request(
    port: int, context: ssl.SSLContext, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read())
        if response.status >= 300:
            raise RuntimeError(f"{path}: {response.status} {data}")
        return data
    finally:
        conn.close()


def _drive(
    port: int, context: ssl.SSLContext, work: list[tuple[str, list[bytes]]]
) -> tuple[float, list[float]]:
    """Each (token, bodies) uploaded in order by its own thread on a kept-alive connection."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def device(token: str, bodies: list[bytes]) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
        headers = {
            "Content-Type": "application/vnd.lakehouse.sealed-batch+json",
            "Authorization": f"Bearer {token}",
        }
        mine = []
        try:
            for body in bodies:
                started = time.perf_counter()
                conn.request("POST", "/v1/batches", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    raise RuntimeError(f"upload answered {response.status}")
                mine.append(time.perf_counter() - started)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=device, args=w) for w in work]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, latencies


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def bench_edge(work: Path, *, devices: int = 8, batches: int = 25, readings: int = 96) -> dict[str, Any]:
    home = work / "edge"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env.update(
        LAKEHOUSE_HOME=str(home),
        LAKEHOUSE_GATEWAY__RATE_PER_DEVICE="10000",
        LAKEHOUSE_GATEWAY__RATE_BURST="10000",
        LAKEHOUSE_GATEWAY__RATE_PER_ADDRESS="10000",  # every benchmark device uploads from loopback
        LAKEHOUSE_GATEWAY__ADDRESS_BURST="10000",
    )
    settings = Settings(home=home)
    stores = [f"S{d + 1:03d}" for d in range(devices)]
    _reference(settings, work / "edge-reference", stores)
    ca, cert, key = tls_files(settings)
    assert ca is not None
    context = ssl.create_default_context(cafile=str(ca))
    bin_dir = Path(sys.executable).parent
    gateway_port, bare_port = free_port(set()), free_port(set())
    gateway = subprocess.Popen(
        [str(bin_dir / "lakehouse"), "gateway", "serve", "--port", str(gateway_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bare = subprocess.Popen(
        [
            str(bin_dir / "uvicorn"),
            "tests.bench_edge:bare_app",
            "--factory",
            "--port",
            str(bare_port),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", gateway_port, 60, pid=gateway.pid)
        wait_for_port("127.0.0.1", bare_port, 60, pid=bare.pid)
        time.sleep(1.0)
        work_items: list[tuple[str, list[bytes]]] = []
        reg = registry(settings)
        for store in stores:
            token, _ = reg.issue_enrollment_token(store, 600)
            device_key = Ed25519PrivateKey.generate()
            enrolled = _request(
                gateway_port,
                context,
                "/v1/devices/enroll",
                json.dumps(
                    {
                        "enrollment_token": token,
                        "public_key": b64e(device_key.public_key().public_bytes_raw()),
                    }
                ).encode(),
                {"Content-Type": "application/json"},
            )
            assertion = client_assertion(
                device_key, device_id=enrolled["device_id"], audience=enrolled["assertion_audience"]
            )
            access = _request(
                gateway_port,
                context,
                "/v1/token",
                json.dumps(
                    {
                        "grant_type": "client_credentials",
                        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        "client_assertion": assertion,
                    }
                ).encode(),
                {"Content-Type": "application/json"},
            )
            ingest = IngestKey.from_json(access["ingest_key"])
            bodies = [
                seal(
                    _readings(store, 1, b, readings),
                    device_id=enrolled["device_id"],
                    seq=b + 1,
                    schema=SCHEMA,
                    schema_version=1,
                    ingest_key=ingest,
                )
                for b in range(batches)
            ]
            work_items.append((access["access_token"], bodies))
        reg.close()
        total = devices * batches * readings
        bare_seconds, bare_latencies = _drive(bare_port, context, work_items)
        gateway_seconds, gateway_latencies = _drive(gateway_port, context, work_items)
    finally:
        terminate(gateway.pid)
        terminate(bare.pid)
    return {
        "devices": devices,
        "batches": devices * batches,
        "readings_per_batch": readings,
        "gateway_readings_per_s": total / gateway_seconds,
        "bare_readings_per_s": total / bare_seconds,
        "ratio": bare_seconds / gateway_seconds,
        "gateway_p50_ms": 1000 * statistics.median(gateway_latencies),
        "gateway_p95_ms": 1000 * _p95(gateway_latencies),
        "bare_p95_ms": 1000 * _p95(bare_latencies),
        **crypto_costs(readings),
    }


def _reference(settings: Settings, folder: Path, stores: list[str]) -> None:
    """The stores and refrigeration units the gateway checks uploads against."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lakehouse import Lakehouse

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"store_id": stores}), folder / "stores.parquet")
    pq.write_table(
        pa.table({"device_id": [f"D-{s}-1" for s in stores], "store_id": stores}), folder / "devices.parquet"
    )
    with Lakehouse(settings) as lh:
        lh.load("bronze.stores", [folder / "stores.parquet"])
        lh.load("bronze.devices", [folder / "devices.parquet"])


def crypto_costs(readings: int, runs: int = 300) -> dict[str, float]:
    """Microseconds per batch: EdDSA token verification, sealing and opening a batch."""
    import jwt

    signing = Ed25519PrivateKey.generate()
    now = int(time.time())
    token = jwt.encode(
        {"iss": "i", "aud": "a", "sub": "d", "iat": now, "exp": now + 600, "jti": "j", "store": "S001"},
        signing,
        algorithm="EdDSA",
        headers={"kid": "k"},
    )
    public = signing.public_key()
    private = X25519PrivateKey.generate()
    ingest = IngestKey("k", private.public_key().public_bytes_raw())
    rows = _readings("S001", 1, 0, readings)

    def per_call_us(fn: Any) -> float:
        fn()
        started = time.perf_counter()
        for _ in range(runs):
            fn()
        return 1e6 * (time.perf_counter() - started) / runs

    sealed = seal(rows, device_id="d", seq=1, schema=SCHEMA, schema_version=1, ingest_key=ingest)
    return {
        "jwt_verify_us": per_call_us(
            lambda: jwt.decode(
                token,
                public,
                algorithms=["EdDSA"],
                audience="a",
                issuer="i",
                options={"require": ["aud", "iss", "exp", "iat", "jti", "sub"]},
            )
        ),
        "seal_us": per_call_us(
            lambda: seal(rows, device_id="d", seq=1, schema=SCHEMA, schema_version=1, ingest_key=ingest)
        ),
        "open_us": per_call_us(lambda: open_sealed(parse_header(sealed), private, max_bytes=1 << 22)),
        "json_only_us": per_call_us(lambda: json.loads(json.dumps(rows))),
    }
