"""The embedded engine under policy: a DuckDB session that holds only what one user may see.

Each readable table is a view ``layer.table`` with the user's row filter and column masks built
in; nothing else is bound under a name the user may write. A query is parsed (sqlglot) before
it runs and refused unless it is one read-only SELECT over those views: no table functions
(``iceberg_scan``, ``read_parquet``, ``query``), no DuckDB metadata functions, no file paths, no
settings, attachments or pragmas. After binding, DuckDB's external access is switched off and
its configuration locked, as a second wall behind the parser.
"""

from __future__ import annotations

import secrets
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from ._engine import Engine, list_tables, quote_ident, scan_sql
from ._policy import Policy
from ._policy_compile import filter_sql, mask_sql
from .errors import QueryError

# scalar functions that reach outside the data the views expose
FORBIDDEN_FUNCTIONS = {
    "pii_decrypt",
    "getenv",
    "current_setting",
    "read_text",
    "read_blob",
    "query",
    "query_table",
    "glob",
    "sniff_csv",
    "parquet_metadata",
    "parquet_schema",
    "iceberg_metadata",
    "iceberg_snapshots",
}
READ_ONLY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)


class AccessDenied(QueryError):
    """The query reaches outside what the policy grants; nothing ran."""


class SecureEngine(Engine):
    """An ``Engine`` for one user: ``sql()`` returns only granted rows, masked as the policy says."""

    def __init__(self, settings: Any, catalog: Any, policy: Policy, user: str) -> None:
        super().__init__(settings, catalog)
        self.policy, self.user = policy, user
        policy.principal(user)  # unknown users fail here, before any data is touched
        self.granted: dict[str, str] = {}  # layer.table -> the view's SQL
        self.decisions: dict[str, Any] = {}
        # the unfiltered scans lookups need live in a schema with an unguessable name
        self._hidden = f"_h{secrets.token_hex(8)}"

    def connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        conn = self.new_connection()
        self._register_decrypt(conn)
        conn.execute(f"create schema {self._hidden}")
        tables = {
            f"{layer}.{name}": self.catalog.load_table((layer, name))
            for layer, name in list_tables(self.catalog)
        }
        for identifier, table in tables.items():
            conn.execute(f"create view {self._hidden}.{quote_ident(identifier)} as {scan_sql(table)}")
        for identifier, table in tables.items():
            columns = [f.name for f in table.schema().fields]
            decision = self.policy.decide(self.user, identifier, columns)
            if not decision.allowed:
                continue
            select = ", ".join(
                f"{mask_sql('duckdb', decision.masks[c], c)} as {quote_ident(c)}"
                if c in decision.masks
                else quote_ident(c)
                for c in columns
            )
            where = filter_sql(decision.filters, table_ref=lambda t: f"{self._hidden}.{quote_ident(t)}")
            layer, name = identifier.split(".")
            view = f"select {select} from {self._hidden}.{quote_ident(identifier)}" + (
                f" where {where}" if where else ""
            )
            conn.execute(f"create schema if not exists {quote_ident(layer)}")
            conn.execute(f"create view {quote_ident(layer)}.{quote_ident(name)} as {view}")
            self.granted[identifier] = view
            self.decisions[identifier] = {
                "filter": filter_sql(decision.filters, table_ref=lambda t: t),
                "masks": dict(sorted(decision.masks.items())),
            }
        # DuckDB itself may still read the tables' files (the views need them), and nothing else
        allowed = self._table_prefixes(tables.values())
        conn.execute("set allowed_directories = ?", [allowed])
        conn.execute("set enable_external_access = false")
        conn.execute("set lock_configuration = true")
        self._conn = conn
        return conn

    def _register_decrypt(self, conn: Any) -> None:
        """``pii_decrypt(value)``: personal data in clear, for the views of cleared users only
        (user queries may not call it). A forgotten customer's data decrypts to NULL."""
        from ._keystore import KeyShredded, open_keystore

        keystore = open_keystore(self.settings)

        def one(value: str | None) -> str | None:
            try:
                return keystore.decrypt(value)
            except KeyShredded:
                return None

        def decrypt(values: Any) -> Any:  # an Arrow vector at a time, not a call per row
            import pyarrow as pa

            return pa.array([one(v) for v in values.to_pylist()], pa.string())

        conn.create_function("pii_decrypt", decrypt, ["VARCHAR"], "VARCHAR", type="arrow")

    @staticmethod
    def _table_prefixes(tables: Any) -> list[str]:
        """The locations of the bound tables, in the forms DuckDB checks (path and file URL)."""
        from urllib.parse import urlparse

        prefixes: set[str] = set()
        for table in tables:
            location = table.location().rstrip("/") + "/"
            if location.startswith("file:"):
                path = urlparse(location).path
                prefixes |= {path, f"file://{path}"}
            else:
                prefixes.add(location)
        return sorted(prefixes)

    def refresh(self) -> None:
        self.close()

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run ``query`` as the user; every query, refused or not, lands in ``audit.query_log``
        (fail closed: a query whose audit record cannot be written returns nothing)."""
        self.connect()
        tables: list[str] = []
        try:
            tables = self.check(query, schema=schema)
            result = super().sql(query, schema=schema)
        except QueryError as exc:
            self._audit(query, tables, None, "denied" if isinstance(exc, AccessDenied) else "error", str(exc))
            raise
        self._audit(query, tables, result.num_rows, "ok", None)
        return result

    def _audit(
        self, query: str, tables: list[str], rows: int | None, outcome: str, reason: str | None
    ) -> None:
        from ._query_audit import QueryRecord, policy_version, record

        principal = self.policy.principal(self.user)
        applied = {t: self.decisions[t] for t in tables if t in self.decisions}
        record(
            self.catalog,
            QueryRecord(
                self.user,
                sorted(principal.roles),
                query,
                tables,
                policy_version(self.policy.files),
                applied,
                rows,
                outcome,
                reason,
            ),
        )

    def check(self, query: str, *, schema: str | None = None) -> list[str]:
        """Refuse anything but one SELECT over the user's views (raises AccessDenied); returns
        the tables the query reads."""
        try:
            statements = [s for s in sqlglot.parse(query, read="duckdb") if s is not None]
        except sqlglot.errors.ParseError as exc:
            raise AccessDenied(f"the query could not be parsed: {str(exc).splitlines()[0]}") from exc
        if len(statements) != 1:
            raise AccessDenied("one statement per query")
        root = statements[0]
        if not isinstance(root, READ_ONLY_ROOTS):
            raise AccessDenied(f"only SELECT queries are allowed, not {root.key.upper()}")
        ctes = {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}
        tables: set[str] = set()
        for node in root.walk():
            if isinstance(node, exp.Table):
                found = self._check_table(node, ctes, schema)
                if found:
                    tables.add(found)
            elif isinstance(node, exp.Func):
                name = (node.sql_name() if not isinstance(node, exp.Anonymous) else node.name).lower()
                if (
                    name in FORBIDDEN_FUNCTIONS
                    or name.startswith(("duckdb_", "pragma_", "read_"))
                    or name.endswith("_scan")
                ):
                    raise AccessDenied(f"function {name}() is not allowed")
            elif isinstance(node, (exp.Into, exp.Command, exp.Pragma, exp.Set)):
                raise AccessDenied("only SELECT queries are allowed")
        return sorted(tables)

    def _check_table(self, node: exp.Table, ctes: set[str], schema: str | None) -> str | None:
        if not isinstance(node.this, exp.Identifier):
            raise AccessDenied("table functions are not allowed; query the tables by name")
        if node.catalog:
            raise AccessDenied(f"catalog-qualified names are not allowed: {node.sql()}")
        name, layer = node.name, node.db or schema
        if not node.db and name.lower() in ctes:
            return None
        identifier = f"{layer}.{name}" if layer else name
        if identifier not in self.granted:
            raise AccessDenied(f"{self.user} may not read {identifier} (or it does not exist)")
        return identifier


def export_duckdb(engine: SecureEngine, path: Any) -> dict[str, int]:
    """Write what ``engine``'s user may see into a new DuckDB database file, as plain tables
    (rows filtered, columns masked, nothing that points back at the warehouse), for a BI tool
    such as Superset to open read-only. Returns rows per table."""
    import duckdb

    engine.connect()
    target = duckdb.connect(str(path))
    written: dict[str, int] = {}
    try:
        for identifier in sorted(engine.granted):
            layer, name = identifier.split(".")
            data = engine.sql(f"select * from {quote_ident(layer)}.{quote_ident(name)}")
            target.execute(f"create schema if not exists {quote_ident(layer)}")
            target.register("incoming", data)
            target.execute(f"create table {quote_ident(layer)}.{quote_ident(name)} as select * from incoming")
            target.unregister("incoming")
            written[identifier] = data.num_rows
        target.execute("checkpoint")
    finally:
        target.close()
    return written
