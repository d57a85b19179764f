"""The governed engine: a user's queries run in a DuckDB session that holds only what the user
may see.

Two DuckDB instances per user session, and the user's SQL reaches only one of them:

- the *source* (privileged, never given user text) reads the Iceberg tables, applies the user's
  row filters and column masks, decrypts personal data for cleared roles (``pii_decrypt`` lives
  here only), and hands out the result as Arrow streams;
- the *session* (the user's) has no file system access, no extensions, no settings to change
  (``enable_external_access=false``, ``lock_configuration=true``), no Python replacement scans
  and no functions of ours. Each table the query names and the policy grants is bound in it as a
  view over such a stream, holding only the granted columns, already filtered and masked.

So nothing the session can name reaches raw data: a name the grant does not cover is simply not
there, a file path is refused by DuckDB itself, and a parser differential or a scoping trick can
at most make a query fail. DuckDB's own parser (``json_serialize_sql``) is read to know which
tables and columns to bind and to refuse politely (a denied table, a statement that is not a
SELECT); it serves messages and speed, never security.

Every query is bounded: wall time (interrupted), memory (the session's limit), and result rows
and bytes (counted while the result streams), each from ``EngineSettings``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.exceptions import NoSuchTableError as IcebergNoSuchTable

from lakehouse.catalog import TableCache, list_tables
from lakehouse.config import Settings, parse_bytes
from lakehouse.errors import AccessDenied, NoSuchTableError, QueryError, QueryLimitExceeded, SessionFailed
from lakehouse.governance import Decision, Policy, filter_sql, mask_sql
from lakehouse.iceberg import new_source_connection, quote_ident, scan_sql

from ._session import SessionConfig, SessionProcess

logger = logging.getLogger(__name__)


BATCH_ROWS = 122_880  # DuckDB's row-group size: streams move whole vectors


SMALL_EXPANSION = 8  # Parquet (zstd) to Arrow, generously: what a small table costs in memory


MAX_QUERY_CHARS = 1_000_000


MAX_PARSE_DEPTH = 400  # DuckDB's serialised syntax tree nests ~10 levels per SQL level


AUDIT_LOG = "audit.query_log"


_NAME = re.compile(r"^[a-z0-9_][a-z0-9_$-]{0,127}$")


@dataclass(frozen=True)
class QueryLimits:
    """What one governed query may consume (``EngineSettings``: ``LAKEHOUSE_ENGINE__...``)."""

    timeout_s: float
    memory_limit: str
    max_result_rows: int
    max_result_bytes: int
    threads: int
    cache_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        engine = settings.engine
        return cls(
            timeout_s=engine.query_timeout,
            memory_limit=engine.governed_memory_limit,
            max_result_rows=engine.max_result_rows,
            max_result_bytes=parse_bytes(engine.max_result_bytes),
            threads=engine.threads,
            cache_bytes=parse_bytes(engine.governed_cache_bytes),
        )


# --- what a query names, read with DuckDB's own parser ----------------------------------------


@dataclass
class QueryShape:
    """The tables a SELECT names (as written), its CTE names, and the identifiers it uses."""

    tables: list[tuple[str, str, str]] = field(default_factory=list)  # (catalog, schema, name)
    ctes: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)  # lower-cased column references, aliases
    whole_refs: set[str] = field(default_factory=set)  # one-part column references (maybe a table)
    names: set[str] = field(default_factory=set)  # table names and aliases in FROM clauses
    every_column: bool = False  # a star, NATURAL join, PIVOT...: the query may need any column


def parse_shape(conn: duckdb.DuckDBPyConnection, query: str) -> QueryShape:
    """Read ``query`` with DuckDB's parser (no binding, nothing runs)."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryLimitExceeded(f"the query is {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}")
    try:
        raw = conn.execute("select json_serialize_sql(?)", [query]).fetchone()
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from exc
    try:
        doc = json.loads(raw[0] if raw else "{}")
    except RecursionError as exc:
        raise QueryLimitExceeded("the query nests too deeply") from exc
    if doc.get("error"):
        message = str(doc.get("error_message", "the query could not be parsed"))
        if "Only SELECT statements" in message:
            raise AccessDenied(_not_a_query(conn, query))
        raise QueryError(message.splitlines()[0])
    statements = doc.get("statements") or []
    if len(statements) != 1:
        raise AccessDenied(f"one statement per query (this one has {len(statements)})")
    shape = QueryShape()
    _walk(statements[0], shape, 0)
    return shape


def _not_a_query(conn: duckdb.DuckDBPyConnection, query: str) -> str:
    kinds = [statement.type.name for statement in conn.extract_statements(query)]
    if kinds[-1:] == ["SELECT"] and "CREATE" in kinds:  # PIVOT first creates a type of its values
        return "a PIVOT runs in a governed session only with its values listed: PIVOT t ON c IN ('a', 'b') USING ..."
    what = ", ".join(sorted(set(kinds))) or "this statement"
    return (
        f"only queries (SELECT, WITH ... SELECT, VALUES, DESCRIBE) run in a governed session, not {what}: "
        "no DDL, DML, COPY, ATTACH, SET, PRAGMA, EXPLAIN or EXPORT"
    )


def _walk(node: Any, shape: QueryShape, depth: int) -> None:
    if depth > MAX_PARSE_DEPTH:
        raise QueryLimitExceeded("the query nests too deeply")
    if isinstance(node, list):
        for item in node:
            _walk(item, shape, depth + 1)
        return
    if not isinstance(node, dict):
        return
    kind, cls = node.get("type"), node.get("class")
    if kind == "BASE_TABLE":
        shape.tables.append(
            (node.get("catalog_name") or "", node.get("schema_name") or "", node["table_name"])
        )
        shape.names.add(str(node["table_name"]).lower())
        if node.get("alias"):
            shape.names.add(str(node["alias"]).lower())
    elif cls == "COLUMN_REF":
        parts = [str(n).lower() for n in node.get("column_names", [])]
        shape.identifiers.update(parts)
        if len(parts) == 1:
            shape.whole_refs.update(parts)
    elif cls == "STAR" or kind in ("PIVOT", "PIVOT_NODE", "UNPIVOT"):
        shape.every_column = True
    elif kind == "JOIN" and node.get("ref_type") not in (None, "REGULAR"):
        shape.every_column = True  # NATURAL joins compare every shared column
    for name in node.get("using_columns", []) or []:
        shape.identifiers.add(str(name).lower())
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        for entry in cte_map.get("map", []):
            shape.ctes.add(str(entry.get("key", "")).lower())
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            _walk(value, shape, depth + 1)
        elif key == "alias" and value:
            shape.identifiers.add(str(value).lower())


# --- the platform's side: governed relations, copied into the user's session ------------------


@dataclass
class _Copy:
    """A governed relation loaded into the session as a table, reused while its key holds."""

    name: str
    key: str  # snapshot + decision (+ keystore state when it decrypts): what makes it current
    columns: list[str]
    bytes: int
    decrypts: bool


@dataclass
class _Grant:
    identifier: str
    table: Any  # pyiceberg Table, pinned for this query
    decision: Decision
    columns: list[str]

    @property
    def stored_bytes(self) -> int:
        """Compressed size of the snapshot's data files (0 for an empty table)."""
        snapshot = self.table.current_snapshot()
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        return int(summary.get("total-files-size", 0))


class GovernedEngine:
    """What ``Lakehouse(user=...)`` and ``lakehouse sql --as`` query through.

    ``sql()`` returns only granted rows, masked as the policy says; ``check()`` names the tables
    a query would read or raises ``AccessDenied``. Every query, refused or not, is audited.
    """

    def __init__(self, settings: Settings, catalog: Any, policy: Policy, user: str) -> None:
        self.settings, self.catalog, self.policy, self.user = settings, catalog, policy, user
        policy.principal(user)  # an unknown user fails here, before anything is opened
        self.limits = QueryLimits.from_settings(settings)
        self.decisions: dict[str, dict[str, Any]] = {}  # what was applied, for the audit log
        self._source: duckdb.DuckDBPyConnection | None = None
        self._keystore: Any = None  # the source's, once it decrypts
        self._parser: duckdb.DuckDBPyConnection | None = None
        self._session = SessionProcess(
            SessionConfig(
                threads=self.limits.threads,
                memory_limit=self.limits.memory_limit,
                max_result_rows=self.limits.max_result_rows,
                max_result_bytes=self.limits.max_result_bytes,
            )
        )
        self._generation = 0  # the session process whose copies the bookkeeping below describes
        self._tables = TableCache(catalog)
        self._shapes: dict[str, QueryShape] = {}  # query text -> what it names (parsing is pure)
        self._views: dict[str, str] = {}  # layer.table -> the session table its view reads
        self._copies: OrderedDict[str, _Copy] = OrderedDict()  # layer.table -> its copy, LRU first
        self._scratch: list[str] = []  # tables loaded for the running query only
        self._keystore_seen = ""
        self._policy_version: str | None = None
        self._deadline = 0.0

    # -- the privileged source -----------------------------------------------------------------

    def _source_conn(self) -> duckdb.DuckDBPyConnection:
        if self._source is None:
            conn = new_source_connection(self.settings)
            self._register_decrypt(conn)
            self._source = conn
        return self._source

    def _register_decrypt(self, conn: Any) -> None:
        """``pii_decrypt(value)`` in the source only: personal data in clear for the relations of
        cleared users. A forgotten customer's data decrypts to NULL."""
        from lakehouse.errors import KeyShredded
        from lakehouse.privacy import open_keystore

        keystore = self._keystore = open_keystore(self.settings)

        def one(value: str | None) -> str | None:
            try:
                return keystore.decrypt(value)
            except KeyShredded:
                return None

        def decrypt(values: Any) -> Any:  # an Arrow vector at a time, not a call per row
            return pa.array([one(v) for v in values.to_pylist()], pa.string())

        conn.create_function(
            "pii_decrypt", decrypt, ["VARCHAR"], "VARCHAR", type="arrow", null_handling="special"
        )

    def _parse_conn(self) -> duckdb.DuckDBPyConnection:
        if self._parser is None:  # parsing only: json_serialize_sql runs nothing
            self._parser = duckdb.connect(config={"enable_external_access": False})
        return self._parser

    # -- what a query may read -----------------------------------------------------------------

    def _grant(self, identifier: str) -> _Grant | None:
        """The user's decision on ``identifier`` at its current snapshot; None if it does not exist."""
        layer, _, name = identifier.partition(".")
        if not (_NAME.match(layer) and _NAME.match(name)):
            return None  # not a name the catalog could hold: never sent to it
        try:
            table = self._tables.load((layer, name))
        except (IcebergNoSuchTable, NoSuchNamespaceError):
            return None
        columns = [f.name for f in table.schema().fields]
        return _Grant(identifier, table, self.policy.decide(self.user, identifier, columns), columns)

    def _resolve(self, shape: QueryShape, schema: str | None) -> dict[str, _Grant]:
        """The granted tables ``shape`` names; a friendly refusal for anything else."""
        grants: dict[str, _Grant] = {}
        for catalog, layer, name in shape.tables:
            if catalog:
                raise AccessDenied(
                    f"catalog-qualified names ({catalog}.{layer}.{name}) are not available: "
                    "name tables as layer.table"
                )
            if not layer and name.lower() in shape.ctes:
                continue
            layer = layer or schema or ""
            if not layer:
                example = f" (e.g. gold.{name})" if "." not in name else ", unquoted"
                raise NoSuchTableError(f"no table {name!r}: name it as layer.table{example} or pass --schema")
            identifier = f"{layer}.{name}".lower()
            if identifier in grants:
                continue
            if identifier == AUDIT_LOG and self.policy.decide(self.user, identifier, []).allowed:
                from lakehouse.audit import journal_for

                journal_for(self.settings).flush(self.catalog)  # the log holds every query so far
            grant = self._grant(identifier)
            if grant is None:
                raise NoSuchTableError(self._unknown(identifier))
            if not grant.decision.allowed:
                raise AccessDenied(f"{self.user} may not read {identifier}")
            grants[identifier] = grant
        return grants

    def _unknown(self, identifier: str) -> str:
        readable = self.readable_tables()
        close = difflib.get_close_matches(identifier, readable, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"no table {identifier} that {self.user} may read{hint}"

    def readable_tables(self) -> list[str]:
        """Every table the user may read (reads each table's schema: for listings, not queries)."""
        found = []
        for layer, name in list_tables(self.catalog):
            grant = self._grant(f"{layer}.{name}")
            if grant is not None and grant.decision.allowed:
                found.append(grant.identifier)
        return found

    def _governed_sql(self, grant: _Grant, columns: list[str], lookups: dict[str, str]) -> str:
        decision = grant.decision
        select = ", ".join(
            f"{mask_sql('duckdb', decision.masks[c], c)} as {quote_ident(c)}"
            if c in decision.masks
            else quote_ident(c)
            for c in columns
        )
        where = filter_sql(decision.filters, table_ref=lambda t: f"({lookups[t]})")
        return f"select {select} from ({scan_sql(grant.table)}) as source" + (
            f" where {where}" if where else ""
        )

    def _columns(self, grant: _Grant, shape: QueryShape) -> list[str]:
        """The columns the query may need; all of them when that cannot be told from names."""
        if shape.every_column or shape.whole_refs & shape.names:
            return grant.columns  # a star, or a table used as a value (a struct of its row)
        wanted = [c for c in grant.columns if c.lower() in shape.identifiers]
        return wanted or grant.columns[:1]  # count(*) still needs the rows

    # -- binding: governed rows into the session ---------------------------------------------------

    def _bind(self, grants: dict[str, _Grant], shape: QueryShape) -> None:
        """Point the session's view of each granted table at its governed rows: a copy kept in
        the session while the snapshot, the decision and the keystore stay the same (grown by
        the columns later queries name), or, for a table too large to keep, the columns this
        query names, loaded for this query only."""
        if self._session.generation != self._generation or not self._session.running:
            self._copies.clear()  # a new session process holds nothing yet
            self._views.clear()
        keystore = self._keystore_state()
        if keystore != self._keystore_seen:  # a forgotten customer: no decrypted copy survives
            self._keystore_seen = keystore
            if self._keystore is not None:
                self._keystore.refresh(force=True)  # and what is copied next decrypts as of now
            for identifier in [i for i, c in self._copies.items() if c.decrypts]:
                self._drop_copy(identifier)
        lookups: dict[str, str] = {}
        for grant in grants.values():
            for f in grant.decision.filters:
                if f.via and f.via["table"] not in lookups:
                    via = self._tables.load(tuple(f.via["table"].split(".")))  # type: ignore[arg-type]
                    lookups[f.via["table"]] = scan_sql(via)
        for grant in grants.values():
            self.decisions[grant.identifier] = {
                "filter": filter_sql(grant.decision.filters, table_ref=lambda t: t),
                "masks": dict(sorted(grant.decision.masks.items())),
            }
            needed = self._columns(grant, shape)
            decrypts = "decrypt" in grant.decision.masks.values()
            key = "|".join(
                [
                    grant.table.metadata_location,
                    json.dumps(self.decisions[grant.identifier], sort_keys=True),
                    keystore if decrypts else "",
                    json.dumps(
                        sorted(lookups.get(f.via["table"], "") for f in grant.decision.filters if f.via)
                    ),
                ]
            )
            copy = self._copies.get(grant.identifier)
            if copy is not None and copy.key == key and set(needed) <= set(copy.columns):
                self._copies.move_to_end(grant.identifier)
                self._point(grant.identifier, copy.name)
                continue
            kept = copy.columns if copy is not None and copy.key == key else []
            columns = [c for c in grant.columns if c in set(kept) | set(needed)]
            estimate = grant.stored_bytes * SMALL_EXPANSION * len(columns) // max(1, len(grant.columns))
            sql = self._governed_sql(
                grant, columns if estimate <= self.limits.cache_bytes // 2 else needed, lookups
            )
            name = "__granted_" + hashlib.sha256((key + sql).encode()).hexdigest()[:16]
            self._load(name, sql)
            if estimate <= self.limits.cache_bytes // 2:
                self._drop_copy(grant.identifier)
                self._copies[grant.identifier] = _Copy(name, key, columns, estimate, decrypts)
                self._evict(keep=grant.identifier)
            else:
                self._scratch.append(name)  # too large to keep: this query's columns, this query only
            self._point(grant.identifier, name)

    def _load(self, name: str, sql: str) -> None:
        cursor = self._source_conn().cursor()
        try:
            rows = cursor.execute(sql).to_arrow_reader(BATCH_ROWS)
            self._session.request({"op": "load", "name": name}, deadline=self._deadline, body=rows)
            self._generation = self._session.generation
        finally:
            cursor.close()

    def _evict(self, keep: str) -> None:
        while sum(c.bytes for c in self._copies.values()) > self.limits.cache_bytes:
            oldest = next(iter(self._copies))
            if oldest == keep:
                return
            self._drop_copy(oldest)

    def _exec(self, *statements: str) -> None:
        self._session.request({"op": "exec", "statements": list(statements)}, deadline=self._deadline)

    def _drop_copy(self, identifier: str) -> None:
        copy = self._copies.pop(identifier, None)
        if copy is not None and self._session.running:
            self._exec(f"drop table if exists {copy.name}")
            self._views.pop(identifier, None)

    def _point(self, identifier: str, name: str) -> None:
        """The session's ``layer.table`` reads ``name`` from now on."""
        if self._views.get(identifier) == name:
            return
        layer, table = (quote_ident(part) for part in identifier.split("."))
        self._exec(
            f"create schema if not exists {layer}",
            f"create or replace view {layer}.{table} as select * from {name}",
        )
        self._views[identifier] = name

    def _keystore_state(self) -> str:
        """Changes whenever the keystore file does (a customer forgotten, keys rotated)."""
        from lakehouse.privacy import keystore_path

        try:
            stat = keystore_path(self.settings).stat()
        except FileNotFoundError:
            return "no-keystore"
        return f"keystore:{stat.st_mtime_ns}:{stat.st_size}"

    # -- running -----------------------------------------------------------------------------

    def _shape(self, query: str) -> QueryShape:
        shape = self._shapes.get(query)
        if shape is None:
            shape = parse_shape(self._parse_conn(), query)
            if len(self._shapes) > 512:
                self._shapes.clear()
            self._shapes[query] = shape
        return shape

    def check(self, query: str, *, schema: str | None = None) -> list[str]:
        """The tables ``query`` reads, or ``AccessDenied`` naming what it may not."""
        return sorted(self._resolve(self._shape(query), schema))

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run ``query`` as the user. Every query, refused or not, is written to the audit
        journal before it answers (fail closed: no journal entry, no answer)."""
        tables: list[str] = []
        try:
            tables, result = self._run(query, schema)
        except QueryError as exc:
            outcome = "denied" if isinstance(exc, AccessDenied) else "error"
            self._audit(query, tables, None, outcome, str(exc))
            raise
        except NoSuchTableError as exc:
            self._audit(query, tables, None, "error", str(exc))
            raise
        self._audit(query, tables, result.num_rows, "ok", None)
        return result

    def _run(self, query: str, schema: str | None) -> tuple[list[str], pa.Table]:
        self._session.prestart()
        shape = self._shape(query)
        grants = self._resolve(shape, schema)
        self._deadline = time.monotonic() + self.limits.timeout_s
        try:
            self._bind(grants, shape)
            default = (
                schema.lower()
                if schema and any(i.startswith(f"{schema.lower()}.") for i in self._views)
                else "main"
            )
            _, rows = self._session.request(
                {"op": "query", "sql": query, "schema": quote_ident(default)}, deadline=self._deadline
            )
        except SessionFailed as exc:
            raise self._translate(exc) from exc
        except QueryLimitExceeded as exc:
            if "deadline" in str(exc):
                raise QueryLimitExceeded(
                    f"the query ran longer than {self.limits.timeout_s:g} s (engine.query_timeout) and was stopped"
                ) from exc
            raise
        finally:
            self._drop_scratch()
        return sorted(grants), rows if rows is not None else pa.table({})

    def _drop_scratch(self) -> None:
        scratch, self._scratch = self._scratch, []
        if scratch and self._session.running:
            self._deadline = max(self._deadline, time.monotonic() + 10)
            self._exec(*(f"drop table if exists {name}" for name in scratch))
            self._views = {i: n for i, n in self._views.items() if n not in scratch}

    def _translate(self, exc: SessionFailed) -> QueryError:
        text = str(exc)
        if exc.kind == "QueryLimitExceeded":
            return QueryLimitExceeded(text)
        if exc.kind == "OutOfMemoryException" or "Out of Memory" in text:
            return QueryLimitExceeded(
                f"the query needs more than {self.limits.memory_limit} of memory "
                "(engine.governed_memory_limit): aggregate or filter earlier"
            )
        if exc.kind == "PermissionException":
            return AccessDenied(f"refused by the governed session: {text}")
        if exc.kind == "CatalogException" and "does not exist" in text:
            return QueryError(
                f"{text} (a governed session holds only the tables {self.user} may read, "
                "their granted columns and DuckDB's built-in functions)"
            )
        return QueryError(text)

    def stream(self, query: str, *, schema: str | None = None) -> pa.RecordBatchReader:
        """The result as a reader (for writing to a file); bounded like ``sql()``."""
        result = self.sql(query, schema=schema)
        return pa.RecordBatchReader.from_batches(result.schema, result.to_batches())

    # -- audit and lifecycle ------------------------------------------------------------------

    def _audit(
        self, query: str, tables: list[str], rows: int | None, outcome: str, reason: str | None
    ) -> None:
        from lakehouse.audit import QueryRecord, journal_for

        principal = self.policy.principal(self.user)
        applied = {t: self.decisions[t] for t in tables if t in self.decisions}
        journal_for(self.settings).append(
            QueryRecord(
                self.user,
                sorted(principal.roles),
                query,
                tables,
                self._policy_hash(),
                applied,
                rows,
                outcome,
                reason,
            )
        )

    def _policy_hash(self) -> str:
        from lakehouse.audit import policy_version

        if self._policy_version is None:
            self._policy_version = policy_version(self.policy.files)
        return self._policy_version

    def refresh(self) -> None:
        """Nothing to do: every query binds the tables' current snapshots."""

    def close(self) -> None:
        self._session.close()
        self._views.clear()
        self._copies.clear()
        for conn in (self._parser, self._source):
            if conn is not None:
                conn.close()
        self._parser = self._source = None


def export_duckdb(engine: GovernedEngine, path: Any) -> dict[str, int]:
    """Write what ``engine``'s user may see into a new DuckDB database file, as plain tables
    (rows filtered, columns masked, nothing that points back at the warehouse), for a BI tool
    such as Superset to open read-only. Returns rows per table."""
    target = duckdb.connect(str(path))
    written: dict[str, int] = {}
    try:
        for identifier in sorted(engine.readable_tables()):
            layer, name = (quote_ident(part) for part in identifier.split("."))
            reader = engine.stream(f"select * from {layer}.{name}")
            target.execute(f"create schema if not exists {layer}")
            target.register("incoming", reader)
            target.execute(f"create table {layer}.{name} as select * from incoming")
            target.unregister("incoming")
            count = target.execute(f"select count(*) from {layer}.{name}").fetchone()
            written[identifier] = int(count[0]) if count else 0
        target.execute("checkpoint")
    finally:
        target.close()
    return written


def tables_in(query: str, conn: Any = None, *, default_layer: str | None = None) -> list[str]:
    """The ``layer.table`` names a query reads, as DuckDB's parser reads them (best effort: the
    operator's SQL is not checked, so a query that does not parse names none). ``conn``: any
    DuckDB connection to parse with (parsing runs nothing). ``default_layer``: the layer of
    unqualified names (otherwise they are left out)."""
    try:
        if conn is not None:
            shape = parse_shape(conn, query)
        else:
            with duckdb.connect() as scratch:
                shape = parse_shape(scratch, query)
    except QueryError:
        return []
    return sorted(
        {f"{layer or default_layer}.{name}" for _, layer, name in shape.tables if layer or default_layer}
    )
