"""SQL on Trino as an authenticated user: the stack's Trino or the cluster's.

Trino enforces the policy itself (OPA access control compiled from ``policies/``), so this
engine holds nothing a user may not see: it authenticates over HTTPS (the CA verified) and
passes the SQL through. ``user`` is who the query runs as; the password is the user's own from
the stack's 0600 passwords file, or the configured account's (``engine.trino_user`` and
``engine.trino_password``), in which case Trino impersonates ``user`` only if the policy lets
that account do so (operators only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakehouse.config import Settings, trino_login
from lakehouse.errors import AccessDenied, QueryError, QueryLimitExceeded, ServerError

_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")
_PRECISION = re.compile(r"\((\d+)\)")


def arrow_type(trino_type: str) -> pa.DataType | None:
    """The Arrow type of a Trino result column; None: let Arrow infer it from the values."""
    name = trino_type.lower()
    simple = {
        "boolean": pa.bool_(),
        "tinyint": pa.int8(),
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "real": pa.float32(),
        "double": pa.float64(),
        "date": pa.date32(),
        "varbinary": pa.binary(),
        "uuid": pa.string(),
    }
    if name in simple:
        return simple[name]
    if name.startswith(("varchar", "char")):
        return pa.string()
    if decimal := _DECIMAL.fullmatch(name):
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    if name.startswith("timestamp"):
        digits = _PRECISION.search(name)
        unit = "us" if digits is None or int(digits[1]) > 3 else "ms"
        return pa.timestamp(unit, tz="UTC" if "with time zone" in name else None)
    return None


def one_line(message: str) -> str:
    return " ".join(message.split())


def https_session(ca: Path | str | None) -> Any:
    """A ``requests`` session that checks Trino's certificate against ``ca`` (else the system's
    CAs). It ignores the environment: REQUESTS_CA_BUNDLE would override ``verify``, and proxies
    would apply."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca) if ca else True
    return session


def connect(
    url: str,
    *,
    user: str,
    principal: str,
    password: str,
    session: Any,
    catalog: str | None = None,
    schema: str | None = None,
    timeout: float = 60.0,
) -> Any:
    """A ``trino`` DB-API connection to ``url`` (``https://host:port``) over ``session``
    (``https_session``): ``principal`` authenticates with ``password`` and queries run as
    ``user`` (Trino checks that ``principal`` may impersonate a different ``user``)."""
    import trino

    host, port = url.removeprefix("https://").rsplit(":", 1)
    return trino.dbapi.connect(
        host=host,
        port=int(port),
        user=user,
        http_scheme="https",
        auth=trino.auth.BasicAuthentication(principal, password),
        http_session=session,
        catalog=catalog,
        schema=schema,
        request_timeout=timeout,
        source="lakehouse",
    )


class TrinoEngine:
    """Queries on Trino as ``user`` (default: the configured account, else the operator)."""

    def __init__(self, settings: Settings, user: str | None = None) -> None:
        self.settings = settings
        self.user, self._principal, self._password = trino_login(settings, user)
        self._session: Any = None

    @property
    def url(self) -> str:
        cfg = self.settings.engine
        return f"https://{cfg.trino_host}:{cfg.trino_port}"

    def _connect(self, schema: str | None) -> Any:
        cfg = self.settings.engine
        if self._session is None:
            self._session = https_session(cfg.trino_ca_file)
        return connect(
            self.url,
            user=self.user,
            principal=self._principal,
            password=self._password,
            session=self._session,
            catalog=cfg.trino_catalog,
            schema=schema,
            timeout=cfg.query_timeout,
        )

    def statements(self, query: str) -> list[str]:
        """``query`` split into statements (Trino runs one per request)."""
        import sqlparse

        return [s.strip().rstrip(";").strip() for s in sqlparse.split(query) if s.strip().rstrip(";").strip()]

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run one statement as the user; the result as Arrow, at most ``engine.max_result_rows``."""
        import trino

        limit = self.settings.engine.max_result_rows
        connection = self._connect(schema)
        try:
            cursor = connection.cursor()
            cursor.execute(query.strip().rstrip(";"))
            rows = cursor.fetchmany(limit + 1)
            if len(rows) > limit:
                cursor.cancel()
                raise QueryLimitExceeded(
                    f"the result has more than {limit} rows (engine.max_result_rows): add a LIMIT or aggregate"
                )
            description = cursor.description or []
        except trino.exceptions.TrinoUserError as exc:
            message = f"Trino refused the query as {self.user}: {one_line(exc.message)}"
            if exc.error_name in ("PERMISSION_DENIED", "ACCESS_DENIED"):
                raise AccessDenied(message) from exc
            raise QueryError(message) from exc
        except trino.exceptions.HttpError as exc:
            if "401" in str(exc):
                raise AccessDenied(f"Trino at {self.url} refused the password of {self._principal}") from exc
            raise ServerError(f"Trino at {self.url} failed: {one_line(str(exc))}") from exc
        except (trino.exceptions.TrinoConnectionError, OSError) as exc:
            raise ServerError(f"cannot reach Trino at {self.url}: {one_line(str(exc))}") from exc
        finally:
            connection.close()
        return _to_arrow(description, rows)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _to_arrow(description: list[Any], rows: list[list[Any]]) -> pa.Table:
    if not description:
        return pa.table({})
    names = [column[0] for column in description]
    arrays = []
    for index, column in enumerate(description):
        values = [row[index] for row in rows]
        wanted = arrow_type(str(column[1]))
        try:
            arrays.append(pa.array(values, type=wanted))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    unique = _unique(names)
    return pa.table(dict(zip(unique, arrays, strict=True)))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out
