"""The edge gateway's HTTP API (FastAPI). Every error is RFC 9457 problem+json."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lakehouse_edge.envelope import CONTENT_TYPE, BombError, EnvelopeError, b64d, open_sealed, parse_header

from .._contracts import load_contracts
from .._settings import Settings
from .._sink import validate
from ._audit import AuditLog
from ._keys import KeySet
from ._land import Lander
from ._registry import Registry, RegistryError
from ._tokens import TokenError, Tokens

logger = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
PROBLEM_BASE = "urn:lakehouse:problem:"


class Problem(Exception):
    def __init__(
        self, status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
    ):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.headers = status, code, title, detail, headers


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# -- request and response bodies (they make the OpenAPI description) --------------------------


class EnrollRequest(BaseModel):
    enrollment_token: str = Field(min_length=8, max_length=256)
    public_key: str = Field(min_length=40, max_length=64, description="raw Ed25519 public key, base64url")
    name: str | None = Field(default=None, max_length=128)


class IngestKeyOut(BaseModel):
    kid: str
    x25519: str = Field(description="raw X25519 public key, base64url: seal batches for it")


class EnrollResponse(BaseModel):
    device_id: str
    store_id: str
    assertion_audience: str
    ingest_key: IngestKeyOut


class TokenRequest(BaseModel):
    grant_type: str = Field(pattern="^client_credentials$")
    client_assertion_type: str = Field(pattern="^urn:ietf:params:oauth:client-assertion-type:jwt-bearer$")
    client_assertion: str = Field(max_length=4096)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105
    expires_in: int
    ingest_key: IngestKeyOut


class BatchResponse(BaseModel):
    status: str = Field(description="landed, or duplicate when (device, seq) was already in bronze")
    device_id: str
    seq: int
    rows: int


# -- limits -----------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per device (per gateway replica)."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """0 if a request may go now (and spends a token), else seconds until one may."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "bad-request", "Bad request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem(
                413, "body-too-large", "Body too large", f"the body is {declared} bytes; the limit is {limit}"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", "Body too large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# -- the application --------------------------------------------------------------------------


@dataclass
class Gateway:
    """Everything a request needs, built once per process."""

    settings: Settings
    registry: Registry
    tokens: Tokens
    ingest_keys: KeySet
    lander: Lander
    audit: AuditLog
    limiter: RateLimiter

    def ingest_key_out(self) -> IngestKeyOut:
        from lakehouse_edge.envelope import b64e

        key = self.ingest_keys.active()
        return IngestKeyOut(kid=key.kid, x25519=b64e(key.public_raw()))


def create_app(gateway: Gateway) -> FastAPI:
    settings = gateway.settings.gateway
    contracts = load_contracts(gateway.settings.contracts_file)
    audit = gateway.audit

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gateway.lander.start()
        for identifier in settings.schemas:  # create the tables before the first device arrives
            gateway.lander.table(identifier)
        yield
        gateway.lander.stop()
        gateway.registry.close()

    app = FastAPI(
        title="Lakehouse edge gateway",
        version="1",
        description=(
            "Devices enroll with a one-time token, obtain short-lived EdDSA access tokens with a signed "
            "client assertion, and upload sealed batches (AES-256-GCM, data key wrapped with X25519 + "
            "HKDF-SHA256 + AES key wrap) that land in bronze exactly once per (device, seq)."
        ),
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )

    def client_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Any:
        request.state.request_id = uuid.uuid4().hex[:16]
        response = await call_next(request)
        response.headers["X-Request-Id"] = request.state.request_id
        response.headers["Cache-Control"] = "no-store"
        return response

    def reject(request: Request, event: str, problem: Problem, **details: Any) -> JSONResponse:
        audit.record(
            event,
            "rejected",
            status=problem.status,
            reason=problem.detail,
            client=client_of(request),
            request_id=getattr(request.state, "request_id", None),
            **details,
        )
        return problem_response(problem.status, problem.code, problem.title, problem.detail, problem.headers)

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return reject(request, "request", exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return reject(request, "request", Problem(422, "invalid-request", "Invalid request", where))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return reject(request, "request", Problem(exc.status_code, "http", str(exc.detail), str(exc.detail)))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:  # a defect, never bad input
        logger.exception("internal error (request %s)", getattr(request.state, "request_id", "?"))
        return problem_response(
            500, "internal", "Internal error", "the gateway failed; the request id names it in its log"
        )

    def bearer(request: Request) -> Any:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthorized", "Unauthorized", "a Bearer access token is required", challenge)
        try:
            claims = gateway.tokens.verify_access(token.strip())
        except TokenError as exc:
            raise Problem(exc.status, exc.code, "Unauthorized", exc.reason, challenge) from exc
        device = gateway.registry.device(claims.device_id)
        if device is None or not device.active:  # revocation takes effect on the next request
            raise Problem(
                403, "device-revoked", "Forbidden", f"device {claims.device_id} is revoked or unknown"
            )
        return claims

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/.well-known/jwks.json", summary="Public keys that verify device access tokens")
    async def jwks() -> dict[str, Any]:
        return gateway.tokens.keys.jwks()

    @app.post(
        "/v1/devices/enroll",
        status_code=201,
        response_model=EnrollResponse,
        summary="Register a device's public key",
    )
    def enroll(body: EnrollRequest, request: Request) -> EnrollResponse:
        try:
            public_key = b64d(body.public_key)
        except EnvelopeError as exc:
            raise Problem(422, "invalid-request", "Invalid request", f"public_key: {exc}") from exc
        if len(public_key) != 32:
            raise Problem(
                422, "invalid-request", "Invalid request", "public_key must be a raw 32-byte Ed25519 key"
            )
        try:
            device = gateway.registry.enroll(body.enrollment_token, public_key, body.name)
        except RegistryError as exc:
            raise Problem(401, "enrollment-refused", "Enrollment refused", str(exc)) from exc
        audit.record(
            "enroll", "ok", device_id=device.device_id, store_id=device.store_id, client=client_of(request)
        )
        return EnrollResponse(
            device_id=device.device_id,
            store_id=device.store_id,
            assertion_audience=gateway.tokens.assertion_audience,
            ingest_key=gateway.ingest_key_out(),
        )

    @app.post(
        "/v1/token",
        response_model=TokenResponse,
        summary="Exchange a signed client assertion for an access token",
    )
    def token(body: TokenRequest, request: Request) -> TokenResponse:
        try:
            device = gateway.tokens.verify_assertion(body.client_assertion)
        except TokenError as exc:
            raise Problem(exc.status, exc.code, "Token refused", exc.reason) from exc
        access, ttl = gateway.tokens.issue(device)
        audit.record(
            "token",
            "ok",
            device_id=device.device_id,
            store_id=device.store_id,
            kid=gateway.tokens.keys.active().kid,
            client=client_of(request),
        )
        return TokenResponse(access_token=access, expires_in=ttl, ingest_key=gateway.ingest_key_out())

    def open_batch(
        body: bytes, device_id: str, store_id: str
    ) -> tuple[dict[str, Any], pa.Table | None, str | None]:
        """Decrypt and validate (CPU work, off the event loop). Returns the header, the rows,
        or the contract violation that sends the batch to dead letters."""
        try:
            sealed = parse_header(body)
        except EnvelopeError as exc:
            raise Problem(400, "malformed-batch", "Malformed batch", str(exc)) from exc
        if sealed["device_id"] != device_id:
            raise Problem(403, "wrong-device", "Forbidden", "the batch names another device than the token")
        contract = contracts.get(sealed["schema"])
        if sealed["schema"] not in settings.schemas or contract is None:
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"devices may upload {settings.schemas}, not {sealed['schema']!r}",
            )
        if sealed["schema_version"] > contract.version:
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"schema version {sealed['schema_version']} is newer than {contract.identifier} v{contract.version}",
            )
        key = gateway.ingest_keys.get(sealed["ingest_kid"])
        if key is None:
            raise Problem(
                400,
                "unknown-ingest-key",
                "Unknown ingest key",
                f"ingest key {sealed['ingest_kid']!r} is unknown or retired: fetch a token for the current key",
            )
        try:
            readings = open_sealed(sealed, key.private, max_bytes=settings.max_decompressed_bytes)
        except BombError as exc:
            raise Problem(413, "decompressed-too-large", "Batch too large", str(exc)) from exc
        except EnvelopeError as exc:
            raise Problem(400, "undecryptable-batch", "Batch does not decrypt", str(exc)) from exc
        if not readings or len(readings) > settings.max_readings:
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"a batch holds 1 to {settings.max_readings} readings, not {len(readings)}",
            )
        if not all(isinstance(r, dict) for r in readings):
            return sealed, None, "every reading must be a JSON object"
        for i, reading in enumerate(readings):
            reading.setdefault("store_id", store_id)
            if reading["store_id"] != store_id:
                return (
                    sealed,
                    None,
                    f"reading {i}: store_id {reading['store_id']!r} is not this device's store {store_id!r}",
                )
        target = gateway.lander.target(contract.identifier)
        rows, _, bad = validate(readings, target, contract.identifier)
        if bad:
            first = min(bad)
            return (
                sealed,
                None,
                f"{len(bad)} reading(s) do not fit {contract.identifier}; reading {first}: {bad[first]}",
            )
        return sealed, rows, None

    @app.post(
        "/v1/batches",
        status_code=201,
        response_model=BatchResponse,
        summary="Upload one sealed batch of readings",
        openapi_extra={
            "requestBody": {"required": True, "content": {CONTENT_TYPE: {"schema": {"type": "object"}}}},
            "security": [{"bearer": []}],
        },
        responses={200: {"model": BatchResponse, "description": "already landed (a retry)"}},
    )
    async def upload(request: Request) -> JSONResponse:
        claims = await run_in_threadpool(bearer, request)
        wait = gateway.limiter.retry_after(claims.device_id)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests",
                f"device {claims.device_id} is over its rate limit",
                {"Retry-After": str(max(1, round(wait)))},
            )
        body = await read_limited(request, settings.max_body_bytes)
        try:
            sealed, rows, violation = await run_in_threadpool(
                open_batch, body, claims.device_id, claims.store_id
            )
        except Problem as exc:
            return reject(request, "upload", exc, device_id=claims.device_id, store_id=claims.store_id)
        identifier, seq = sealed["schema"], sealed["seq"]
        if gateway.lander.landed(identifier, claims.device_id, seq):
            return JSONResponse(
                BatchResponse(status="duplicate", device_id=claims.device_id, seq=seq, rows=0).model_dump(),
                status_code=200,
            )
        if violation is not None:
            await run_in_threadpool(
                gateway.lander.dead_letter, identifier, claims.device_id, seq, body, violation
            )
            return reject(
                request,
                "upload",
                Problem(
                    422,
                    "wrong-schema",
                    "Readings do not fit the contract",
                    violation + " (kept in bronze.dead_letters)",
                ),
                device_id=claims.device_id,
                store_id=claims.store_id,
                seq=seq,
            )
        assert rows is not None
        outcome = await asyncio.wrap_future(gateway.lander.submit(identifier, claims.device_id, seq, rows))
        landed = outcome == "landed"
        answer = BatchResponse(
            status=outcome, device_id=claims.device_id, seq=seq, rows=rows.num_rows if landed else 0
        )
        return JSONResponse(answer.model_dump(), status_code=201 if landed else 200)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
