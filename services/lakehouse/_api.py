"""The platform's Python API: what the CLI does, as objects."""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from lakehouse.catalog import list_tables, load_catalog
from lakehouse.config import Project, Settings, apply_stack_state, project_of
from lakehouse.errors import AccessDenied, LakehouseError, NoSuchTableError
from lakehouse.iceberg import parse_identifier
from lakehouse.ingest import LoadResult, ProgressCallback, load_files
from lakehouse.privacy import Keystore
from lakehouse.query import Engine, GovernedEngine

if TYPE_CHECKING:
    from lakehouse.query import TrinoEngine
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableInfo:
    layer: str
    table: str
    rows: int | None  # None on a policy-bound handle
    snapshots: int
    last_commit: str | None  # ISO-8601 UTC

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Lakehouse:
    """One handle on the configured lakehouse: catalog, embedded engine, loader.

    >>> lh = Lakehouse()
    >>> lh.sql("select count(*) from gold.fct_sales")

    With ``user``, the handle is policy-bound (``Lakehouse(user="sam")``): ``sql()`` runs in a
    session holding only the rows and masked columns ``policies/`` grants that user, and
    ``tables()`` lists only those tables. Everything that would reach around the policy (the
    catalog, pyiceberg tables, the keystore, loads) is refused.

    With the ``trino`` engine (the stack's Trino while it runs, the cluster's), ``sql()`` runs
    on Trino as the user (the operator account without ``user``), and Trino's OPA access
    control applies the same compiled policy.

    Contracts and policies are the project's (``Settings.project_dir``, else the nearest project
    from the current directory upwards), resolved when first needed.
    """

    def __init__(self, settings: Settings | None = None, *, user: str | None = None) -> None:
        settings = settings or Settings.load()
        self.settings = apply_stack_state(settings) if settings.profile == "stack" else settings
        self.user = user
        self._engine: Engine | GovernedEngine | TrinoEngine | None = None

    def _operator_only(self, what: str) -> None:
        if self.user is not None:
            raise AccessDenied(
                f"{what} is not available on a policy-bound handle (user {self.user}): "
                "query through sql(), which applies the policy"
            )

    @cached_property
    def project(self) -> Project:
        """The project whose contracts, policies and dbt models this handle uses."""
        return project_of(self.settings)

    @cached_property
    def _catalog(self) -> Catalog:
        return load_catalog(self.settings)

    @property
    def catalog(self) -> Catalog:
        """The pyiceberg catalog itself (operator handles only)."""
        self._operator_only("the catalog")
        return self._catalog

    @property
    def engine(self) -> Engine | GovernedEngine | TrinoEngine:
        if self._engine is None:
            if self.settings.engine.type == "trino":
                from lakehouse.query import TrinoEngine

                self._engine = TrinoEngine(self.settings, self.user)
            elif self.user is not None:
                from lakehouse.governance import load_policy

                self._engine = GovernedEngine(
                    self.settings, self._catalog, load_policy(self.project.policies_dir), self.user
                )
            else:
                self._engine = Engine(self.settings, self._catalog)
        return self._engine

    def table(self, identifier: str) -> Table:
        """The pyiceberg table itself (operator handles only)."""
        self._operator_only("table()")
        layer, name = parse_identifier(identifier)
        if not self._catalog.table_exists((layer, name)):
            raise NoSuchTableError(f"no table {identifier}; tables that exist: {self._names()}")
        return self._catalog.load_table((layer, name))

    def _names(self) -> str:
        return ", ".join(f"{n}.{t}" for n, t in list_tables(self._catalog)) or "(none)"

    def tables(self) -> list[TableInfo]:
        """Every table with rows, snapshots and last commit; a policy-bound handle lists only
        the tables its user may read, without row counts (a table's total would reveal rows
        outside the grant)."""
        if self.user is not None:
            engine = self.engine
            if isinstance(engine, GovernedEngine):
                readable = set(engine.readable_tables())
            else:  # Trino lists only what its access control lets the user see
                listed = engine.sql(
                    "select table_schema, table_name from information_schema.tables "
                    "where table_schema <> 'information_schema'"
                )
                readable = {f"{s}.{t}" for s, t in zip(*listed.to_pydict().values(), strict=True)}
        infos = []
        for layer, name in list_tables(self._catalog):
            if self.user is not None and f"{layer}.{name}" not in readable:
                continue
            table = self._catalog.load_table((layer, name))
            snapshot = table.current_snapshot()
            rows: int | None = 0
            if snapshot and snapshot.summary:
                rows = int(snapshot.summary.additional_properties.get("total-records", 0))
            last = (
                dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.UTC).isoformat(
                    timespec="seconds"
                )
                if snapshot
                else None
            )
            infos.append(
                TableInfo(layer, name, None if self.user else rows, len(table.metadata.snapshots), last)
            )
        return infos

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run SQL over every layer; tables are ``layer.table``; ``schema`` sets the default layer.
        Several statements run in turn; the last one's result is returned (``sql_each`` yields
        each).

        Every query is audited (``audit.query_log``): its record is journalled before it answers
        and committed to the table in batches (see ``lakehouse.audit``)."""
        last = pa.table({})
        for _, result in self.sql_each(query, schema=schema):
            last = result
        return last

    def sql_each(self, query: str, *, schema: str | None = None) -> Iterator[tuple[str, pa.Table]]:
        """Run each statement of ``query`` in turn (as DuckDB splits them), yielding the
        statement and its result; each is audited on its own. A failing statement raises, and
        the statements after it do not run."""
        engine = self.engine
        if isinstance(engine, Engine):
            for statement in engine.statements(query) or [query]:
                yield statement, self._operator_sql(engine, statement, schema)
            return
        if not isinstance(engine, GovernedEngine):  # Trino: its own access control and query log
            for statement in engine.statements(query) or [query]:
                yield statement, engine.sql(statement, schema=schema)
            return
        import duckdb

        from lakehouse.query import MAX_QUERY_CHARS

        if len(query) > MAX_QUERY_CHARS:  # bounded before anything parses it: the engine refuses it
            yield query, engine.sql(query, schema=schema)
            return
        with duckdb.connect() as scratch:  # splitting only: the governed engine checks each
            try:
                statements = [s.query.strip() for s in scratch.extract_statements(query)] or [query]
            except duckdb.Error:
                statements = [query]  # the governed engine gives the parser's error
        for statement in statements:
            yield statement, engine.sql(statement, schema=schema)

    def _operator_sql(self, engine: Engine, query: str, schema: str | None) -> pa.Table:
        from lakehouse.audit import QueryRecord, journal_for
        from lakehouse.query import tables_in

        outcome: tuple[int | None, str, str | None] = (None, "error", "interrupted")
        try:
            result = engine.sql(query, schema=schema)
            outcome = (result.num_rows, "ok", None)
            return result
        except LakehouseError as exc:
            outcome = (None, "error", str(exc))
            raise
        finally:
            rows, status, reason = outcome
            journal_for(self.settings).append(
                QueryRecord(
                    f"operator:{getpass.getuser()}",
                    ["operator"],
                    query,
                    tables_in(query, engine._conn, default_layer=schema),
                    "unrestricted",
                    {},
                    rows,
                    status,
                    reason,
                )
            )

    def flush_audit(self) -> int:
        """Commit journalled query records to ``audit.query_log`` now; returns how many."""
        from lakehouse.audit import journal_for

        return journal_for(self.settings).flush(self._catalog)

    def load(
        self,
        identifier: str,
        files: Sequence[str | Path],
        *,
        fmt: str | None = None,
        create: bool = False,
        progress: ProgressCallback | None = None,
    ) -> LoadResult:
        """Append files to a table atomically and idempotently (see ``lakehouse.load_files``)."""
        self._operator_only("load()")
        from lakehouse.contracts import contract_for

        contract = contract_for(identifier, self.project)
        return load_files(
            self._catalog,
            identifier,
            files,
            fmt=fmt,
            create=create,
            progress=progress,
            project=self.project,
            keystore=self.keystore if contract is not None and contract.pii else None,
        )

    @cached_property
    def keystore(self) -> Keystore:
        """Per-customer data keys for personal data (see ``lakehouse.privacy``); operator only."""
        self._operator_only("the keystore")
        from lakehouse.privacy import open_keystore

        return open_keystore(self.settings)

    def close(self) -> None:
        """Close the engine and commit this process's journalled query records."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        from lakehouse.audit import journal_for

        journal = journal_for(self.settings)
        if not journal.pending():
            return
        try:
            journal.flush(self._catalog)
        except Exception as exc:  # the records stay journalled; the next flush commits them
            logger.warning("audit records stay journalled under %s: %s", journal.directory, exc)

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
