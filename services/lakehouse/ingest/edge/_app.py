"""The edge gateway's HTTP API (FastAPI). Every error is RFC 9457 problem+json.

What a client sends is bounded before it is parsed: the request head by the server (431), the
Authorization header and every body here (431, 413), JSON nesting and numbers by ``_json``
(400), and requests per client address before authentication (429). A device may write only
its own store's units; a batch naming another's goes to ``bronze.dead_letters`` (403/422).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from lakehouse.config import Settings
from lakehouse.contracts import load_contracts
from lakehouse.errors import (
    EnrollmentRefused,
    InvalidEnrollment,
    JSONRejected,
    ReferenceUnavailable,
    TokenError,
)
from lakehouse.ingest import serve_metrics, validate
from lakehouse_edge.envelope import CONTENT_TYPE, b64d, check_header, open_plain
from lakehouse_edge.errors import BombError, EnvelopeError

from ._audit import AuditLog
from ._json import loads
from ._keys import KeySet
from ._land import LANDED, MAX_SEQ, OUT_OF_ORDER, Lander, Outcome
from ._limits import RateLimiter
from ._metrics import GatewayMetrics, Readiness, route_of
from ._ownership import Ownership
from ._registry import Registry
from ._server import PROBLEM_BASE
from ._text import clip, shown
from ._tokens import Tokens

logger = logging.getLogger(__name__)


PROBLEM = "application/problem+json"


MAX_DETAIL = 512


UNTHROTTLED = frozenset({"/healthz"})  # what a load balancer polls


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.headers = status, code, title, detail, headers
        self.extra = extra  # problem members beyond RFC 9457's, e.g. expected_seq


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": clip(detail, MAX_DETAIL),
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# -- request and response bodies (they make the OpenAPI description) --------------------------


class EnrollRequest(BaseModel):
    enrollment_token: str = Field(min_length=8, max_length=256)
    public_key: str = Field(min_length=40, max_length=64, description="raw Ed25519 public key, base64url")
    name: str | None = Field(default=None, max_length=128, description="printable text, shown to operators")


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
    status: str = Field(description="landed, or duplicate when this was the device's last accepted seq")
    device_id: str
    seq: int
    rows: int


class SkipRequest(BaseModel):
    """Seqs the device will never upload (dropped from its full queue, or refused for good)."""

    schema_: str = Field(alias="schema", max_length=128)
    from_seq: int = Field(ge=1, le=MAX_SEQ, description="the gateway's expected seq (from its 409)")
    to_seq: int = Field(ge=1, le=MAX_SEQ, description="the last seq skipped")
    reason: Literal["dropped", "rejected", "dropped-and-rejected", "unknown"] = "unknown"


class SkipResponse(BaseModel):
    status: str = Field(description="skipped (also when this declaration was already recorded)")
    device_id: str
    next_seq: int


Body = TypeVar("Body", bound=BaseModel)


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# -- reading what a client sent -----------------------------------------------------------------


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise Problem(400, "bad-request", "Bad request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem(
                413, "body-too-large", "Body too large", f"the body is {declared} bytes; the limit is {limit}"
            )
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, "body-too-large", "Body too large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # the client left, or the server's body deadline closed it
        raise Problem(408, "request-timeout", "Request timeout", "the body did not arrive in time") from exc
    return b"".join(chunks)


def parse_body(model: type[Body], data: bytes, max_depth: int) -> Body:
    try:
        return model.model_validate(loads(data, max_depth=max_depth))
    except JSONRejected as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", str(exc)) from exc
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Problem(422, "invalid-request", "Invalid request", where) from exc


# -- opening a batch ---------------------------------------------------------------------------


@dataclass
class Opened:
    """A decrypted batch: its header, and its rows or why they may not land."""

    sealed: dict[str, Any]
    rows: pa.Table | None
    violation: Problem | None


def _contract_violation(detail: str) -> Problem:
    return Problem(422, "wrong-schema", "Readings do not fit the contract", detail)


def _timestamps_outside_python(rows: pa.Table) -> str | None:
    """Years 1-9999 only: Iceberg and every reader downstream convert timestamps to datetimes."""
    for name in rows.column_names:
        column = rows.column(name)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            bounds = pc.min_max(column.cast(pa.timestamp("us")) if pa.types.is_date(column.type) else column)
            low, high = bounds["min"].value, bounds["max"].value
            if low is not None and (low < _MIN_US or high > _MAX_US):
                return f"column {name!r} holds a time outside the years 1 to 9999"
    return None


_MIN_US = -62135596800 * 10**6  # 0001-01-01T00:00:00


_MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999


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
    limiter: RateLimiter  # per device
    ownership: Ownership
    address_limiter: RateLimiter  # per client address, before authentication
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    def ingest_key_out(self) -> IngestKeyOut:
        from lakehouse_edge.envelope import b64e

        key = self.ingest_keys.active()
        return IngestKeyOut(kid=key.kid, x25519=b64e(key.public_raw()))


def create_app(gateway: Gateway) -> FastAPI:
    settings = gateway.settings.gateway
    contracts = load_contracts(gateway.lander.project)
    audit = gateway.audit
    metrics = gateway.metrics
    readiness = Readiness(
        {
            "the device registry database": gateway.registry.ping,
            "the catalog": gateway.lander.catalog.list_namespaces,
        },
        interval=settings.health_interval,
        timeout=settings.health_timeout,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.lander.start()
        for identifier in settings.schemas:  # create the tables before the first device arrives
            gateway.lander.table(identifier)
        try:
            await run_in_threadpool(gateway.ownership.refresh)
        except ReferenceUnavailable as exc:
            logger.warning("%s; every reading is refused until it can be", exc)
        await run_in_threadpool(readiness.check_now)
        readiness.start()
        server = None
        if settings.metrics_port is not None:  # plain HTTP, apart from the devices' TLS port
            server = serve_metrics(
                metrics.registry, settings.metrics_port, host=settings.metrics_host, ready=trouble
            )
        app.state.metrics_server = server
        yield
        if server is not None:
            server.shutdown()
        readiness.stop()
        gateway.lander.stop()
        gateway.registry.close()

    app = FastAPI(
        title="Lakehouse edge gateway",
        version="1",
        description=(
            "Devices enroll with a one-time token, obtain short-lived EdDSA access tokens with a signed "
            "client assertion, and upload sealed batches (AES-256-GCM, data key wrapped with X25519 + "
            "HKDF-SHA256 + AES key wrap) that land in bronze exactly once per (device, seq). Seqs run "
            f"1, 2, 3, ... up to {MAX_SEQ} per device: a batch lands only as the device's next seq, "
            "anything else is answered 409 with the expected seq; lost seqs are declared skipped."
        ),
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )

    def client_of(request: Request) -> str | None:
        return request.client.host if request.client else None

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
        return problem_response(
            problem.status, problem.code, problem.title, problem.detail, problem.headers, **problem.extra
        )

    app.state.metrics = metrics

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        """Counts every answer, the guard's 429s and the errors' 500s included, by route template."""
        started = time.perf_counter()
        route = route_of(app.router.routes, request.scope)
        status = 500  # unless a response comes back: an exception becomes on_bug's 500
        try:
            response = await guard(request, call_next)
            status = response.status_code
            return response
        finally:
            metrics.answered(route, status, time.perf_counter() - started)

    async def guard(request: Request, call_next: Any) -> Any:
        request.state.request_id = uuid.uuid4().hex[:16]
        if request.url.path not in UNTHROTTLED:  # before anything is read, parsed or verified
            verdict = gateway.address_limiter.check(client_of(request) or "?")
            if verdict:
                problem = Problem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    "this client address is over its rate limit",
                    {"Retry-After": str(max(1, round(verdict.wait))), "Connection": "close"},
                )
                if verdict.first:  # one audit line per episode, not one per refused request
                    return reject(request, "throttle", problem)
                response = problem_response(429, problem.code, problem.title, problem.detail, problem.headers)
                response.headers["X-Request-Id"] = request.state.request_id
                return response
        response = await call_next(request)
        response.headers["X-Request-Id"] = request.state.request_id
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return reject(request, "request", exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return reject(request, "request", Problem(exc.status_code, "http", str(exc.detail), str(exc.detail)))

    @app.exception_handler(ReferenceUnavailable)
    async def on_reference(request: Request, exc: ReferenceUnavailable) -> JSONResponse:
        logger.warning("%s", exc)
        problem = Problem(503, "unavailable", "Unavailable", "the reference data cannot be read; try again")
        return reject(request, "request", problem)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:  # a defect, never bad input
        logger.exception("internal error (request %s)", getattr(request.state, "request_id", "?"))
        return problem_response(
            500, "internal", "Internal error", "the gateway failed; the request id names it in its log"
        )

    def bearer(request: Request) -> Any:
        header = request.headers.get("authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if len(header) > settings.max_token_bytes:  # before it is split, decoded or verified
            raise Problem(
                431,
                "header-too-large",
                "Request Header Fields Too Large",
                f"the Authorization header exceeds {settings.max_token_bytes} bytes",
            )
        scheme, _, token = header.partition(" ")
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
        wait = gateway.limiter.retry_after(claims.device_id)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests",
                f"device {claims.device_id} is over its rate limit",
                {"Retry-After": str(max(1, round(wait)))},
            )
        return claims

    async def json_body(request: Request, model: type[Body]) -> Body:
        body = await read_limited(request, settings.max_json_bytes)
        return parse_body(model, body, settings.max_json_depth)

    def lander_trouble() -> str | None:
        """Why uploads cannot land now, or None."""
        if not gateway.lander.alive():
            return "the commit thread has stopped"
        waited = gateway.lander.oldest_wait()
        if waited >= settings.land_timeout:
            return f"an upload has waited {waited:.0f} s for its commit (limit {settings.land_timeout:g} s)"
        return None

    def unavailable(detail: str) -> Problem:
        retry = {"Retry-After": str(max(1, round(settings.land_timeout)))}
        return Problem(503, "landing-unavailable", "Service unavailable", detail, retry)

    async def await_commit(future: Future[Outcome]) -> Outcome:
        """The lander's answer, or 503 once ``land_timeout`` has passed. The commit is not
        abandoned (shielded): if it lands later, the device's retry is answered duplicate."""
        waiting = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), settings.land_timeout)
        except TimeoutError:
            waiting.add_done_callback(
                lambda done: done.cancelled() or done.exception()
            )  # logged by the lander
            trouble = lander_trouble() or "the commit is slow"
            logger.error("answering 503: no commit within %g s (%s)", settings.land_timeout, trouble)
            raise unavailable(
                f"the batch was not committed within {settings.land_timeout:g} s; retry it later "
                "(the same seq lands once)"
            ) from None

    def trouble() -> str | None:
        """Why the gateway cannot serve uploads now (no I/O: the registry and catalog answers are
        the readiness thread's), or None."""
        return lander_trouble() or readiness.trouble()

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        found = trouble()
        if found is not None:
            return problem_response(503, "unhealthy", "Unhealthy", found)
        return JSONResponse({"status": "ok"})

    @app.get("/.well-known/jwks.json", summary="Public keys that verify device access tokens")
    async def jwks() -> dict[str, Any]:
        return gateway.tokens.keys.jwks()

    @app.post(
        "/v1/devices/enroll",
        status_code=201,
        response_model=EnrollResponse,
        summary="Register a device's public key",
        openapi_extra=_schema_of(EnrollRequest),
    )
    async def enroll(request: Request) -> EnrollResponse:
        body = await json_body(request, EnrollRequest)
        try:
            public_key = b64d(body.public_key)
        except EnvelopeError as exc:
            raise Problem(422, "invalid-request", "Invalid request", f"public_key: {exc}") from exc
        try:
            device = await run_in_threadpool(
                gateway.registry.enroll, body.enrollment_token, public_key, body.name
            )
        except EnrollmentRefused as exc:
            raise Problem(401, "enrollment-refused", "Enrollment refused", str(exc)) from exc
        except InvalidEnrollment as exc:
            raise Problem(422, "invalid-enrollment", "Enrollment refused", str(exc)) from exc
        audit.record(
            "enroll", "ok", device_id=device.device_id, store_id=device.store_id, client=client_of(request)
        )
        logger.info("enrolled %s for store %s (name %s)", device.device_id, device.store_id, device.name)
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
        openapi_extra=_schema_of(TokenRequest),
    )
    async def token(request: Request) -> TokenResponse:
        body = await json_body(request, TokenRequest)
        try:
            device = await run_in_threadpool(gateway.tokens.verify_assertion, body.client_assertion)
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

    def open_batch(body: bytes, device_id: str, store_id: str) -> Opened:
        """Decrypt and check (CPU work, off the event loop). Raises Problem for what cannot be
        kept; returns the rows, or the violation that sends the batch to dead letters."""
        try:
            sealed = check_header(loads(body, max_depth=settings.max_json_depth))
        except (JSONRejected, EnvelopeError) as exc:
            raise Problem(400, "malformed-batch", "Malformed batch", str(exc)) from exc
        if sealed["device_id"] != device_id:
            raise Problem(403, "wrong-device", "Forbidden", "the batch names another device than the token")
        if not 1 <= sealed["seq"] <= MAX_SEQ:
            raise Problem(
                422,
                "seq-out-of-range",
                "Sequence out of range",
                f"seq must be 1 to {MAX_SEQ}, not {sealed['seq']}",
            )
        contract = contracts.get(sealed["schema"])
        if sealed["schema"] not in settings.schemas or contract is None:
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"devices may upload {settings.schemas}, not {shown(sealed['schema'])}",
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
                f"ingest key {shown(sealed['ingest_kid'])} is unknown or retired: fetch a token for the current key",
            )
        try:
            plain = open_plain(sealed, key.private, max_bytes=settings.max_decompressed_bytes)
        except BombError as exc:
            raise Problem(413, "decompressed-too-large", "Batch too large", str(exc)) from exc
        except EnvelopeError as exc:
            raise Problem(400, "undecryptable-batch", "Batch does not decrypt", str(exc)) from exc
        try:
            readings = loads(plain, max_depth=settings.max_json_depth)
        except JSONRejected as exc:
            raise Problem(
                400, "malformed-readings", "Malformed readings", f"the decrypted batch: {exc}"
            ) from exc
        if not isinstance(readings, list) or not 1 <= len(readings) <= settings.max_readings:
            count = len(readings) if isinstance(readings, list) else "not an array"
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"a batch is a JSON array of 1 to {settings.max_readings} readings, not {count}",
            )
        return Opened(sealed, *_rows_of(readings, contract.identifier, store_id))

    def _rows_of(
        readings: list[Any], identifier: str, store_id: str
    ) -> tuple[pa.Table | None, Problem | None]:
        for i, reading in enumerate(readings):
            if not isinstance(reading, dict):
                return None, _contract_violation(f"reading {i} is not a JSON object")
            reading.setdefault("store_id", store_id)
            if reading["store_id"] != store_id:
                return None, _contract_violation(
                    f"reading {i}: store_id {shown(reading['store_id'])} is not this device's store {store_id!r}"
                )
        units = [r.get("device_id") for r in readings]  # the refrigeration units
        distinct = (
            dict.fromkeys(units) if all(isinstance(u, str) for u in units) else units
        )  # a few, in order
        for unit in distinct:
            refused = gateway.ownership.refusal(unit, store_id)
            if refused is not None:
                first = next(i for i, u in enumerate(units) if u is unit or u == unit)
                return None, Problem(
                    refused.status,
                    refused.code,
                    "Unit not this store's",
                    f"reading {first}: {refused.detail}",
                )
        try:
            rows, _, bad = validate(readings, gateway.lander.target(identifier), identifier)
        except (ValueError, OverflowError, pa.ArrowException) as exc:  # a value no column type takes
            return None, _contract_violation(
                f"the readings do not convert to {identifier}: {clip(str(exc), 200)}"
            )
        if bad:
            first = min(bad)
            return None, _contract_violation(
                f"{len(bad)} reading(s) do not fit {identifier}; reading {first}: {clip(bad[first], 300)}"
            )
        outside = _timestamps_outside_python(rows)
        if outside is not None:
            return None, _contract_violation(outside)
        return rows, None

    def out_of_order(device_id: str, identifier: str, seq: int, expected: int) -> Problem:
        behind = seq < expected
        why = (
            "seqs below it were already accepted (landed or declared skipped)"
            if behind
            else "a batch must be the device's next seq; declare lost seqs skipped at /v1/batches/skip"
        )
        return Problem(
            409,
            "seq-out-of-order",
            "Sequence out of order",
            f"seq {seq} of device {device_id} for {identifier} is not the next one: expected seq {expected} ({why})",
            expected_seq=expected,
        )

    @app.post(
        "/v1/batches",
        status_code=201,
        response_model=BatchResponse,
        summary="Upload one sealed batch of readings",
        openapi_extra={
            "requestBody": {"required": True, "content": {CONTENT_TYPE: {"schema": {"type": "object"}}}},
            "security": [{"bearer": []}],
        },
        responses={
            200: {"model": BatchResponse, "description": "already landed (a retry of the last batch)"},
            409: {"description": "not the device's next seq: the problem names expected_seq"},
        },
    )
    async def upload(request: Request) -> JSONResponse:
        claims = await run_in_threadpool(bearer, request)
        who = {"device_id": claims.device_id, "store_id": claims.store_id}
        body = await read_limited(request, settings.max_body_bytes)
        try:
            opened = await run_in_threadpool(open_batch, body, claims.device_id, claims.store_id)
        except Problem as exc:
            return reject(request, "upload", exc, **who)
        identifier, seq = opened.sealed["schema"], opened.sealed["seq"]
        if opened.violation is not None:
            expected = await run_in_threadpool(gateway.lander.next_seq, identifier, claims.device_id)
            if seq != expected:  # kept once, as the device's next batch: never out of order
                return reject(
                    request,
                    "upload",
                    out_of_order(claims.device_id, identifier, seq, expected),
                    seq=seq,
                    **who,
                )
            kept = await run_in_threadpool(
                gateway.lander.dead_letter, identifier, claims.device_id, seq, body, opened.violation.detail
            )
            violation = opened.violation
            violation.detail += (
                " (kept in bronze.dead_letters)"
                if kept
                else f" (not kept: bronze.dead_letters already holds seq {seq} of this device)"
            )
            return reject(request, "upload", violation, seq=seq, **who)
        assert opened.rows is not None
        if not gateway.lander.alive():
            return reject(request, "upload", unavailable("the gateway cannot commit now; retry later"), **who)
        try:
            outcome = await await_commit(
                gateway.lander.submit(identifier, claims.device_id, seq, opened.rows)
            )
        except Problem as exc:
            return reject(request, "upload", exc, seq=seq, **who)
        if outcome.status == OUT_OF_ORDER:
            return reject(
                request,
                "upload",
                out_of_order(claims.device_id, identifier, seq, outcome.expected),
                seq=seq,
                **who,
            )
        landed = outcome.status == LANDED
        answer = BatchResponse(
            status=outcome.status,
            device_id=claims.device_id,
            seq=seq,
            rows=opened.rows.num_rows if landed else 0,
        )
        return JSONResponse(answer.model_dump(), status_code=201 if landed else 200)

    @app.post(
        "/v1/batches/skip",
        response_model=SkipResponse,
        summary="Declare seqs the device will never upload",
        description=(
            "After a 409 that names a lower expected seq than the device's oldest queued batch: the "
            "seqs in between were dropped from the device's full queue or refused for good. The gap "
            "is recorded in the ledger and in bronze.dead_letters, never left silent."
        ),
        openapi_extra={**_schema_of(SkipRequest), "security": [{"bearer": []}]},
    )
    async def skip(request: Request) -> SkipResponse:
        claims = await run_in_threadpool(bearer, request)
        who = {"device_id": claims.device_id, "store_id": claims.store_id}
        body = await json_body(request, SkipRequest)
        identifier = body.schema_
        if identifier not in settings.schemas:
            raise Problem(
                422,
                "wrong-schema",
                "Wrong schema",
                f"devices may upload {settings.schemas}, not {shown(identifier)}",
            )
        if body.to_seq < body.from_seq:
            raise Problem(422, "invalid-request", "Invalid request", "to_seq must not be below from_seq")
        if not gateway.lander.alive():
            raise unavailable("the gateway cannot commit now; retry later")
        outcome = await await_commit(
            gateway.lander.submit_skip(identifier, claims.device_id, body.from_seq, body.to_seq)
        )
        if outcome.status == OUT_OF_ORDER:
            raise out_of_order(claims.device_id, identifier, body.from_seq, outcome.expected)
        reason = f"seqs {body.from_seq} to {body.to_seq} declared skipped by the device ({body.reason}): never delivered"
        await run_in_threadpool(
            gateway.lander.dead_letter, identifier, claims.device_id, body.to_seq, None, reason
        )
        audit.record("skip", "ok", seq=body.from_seq, reason=reason, client=client_of(request), **who)
        logger.warning("device %s: %s", claims.device_id, reason)
        return SkipResponse(status="skipped", device_id=claims.device_id, next_seq=outcome.expected)

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
