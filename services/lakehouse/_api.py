"""The platform's Python API: what the CLI does, as objects."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from ._catalog import load_catalog
from ._engine import Engine, list_tables
from ._keystore import Keystore
from ._load import LoadResult, ProgressCallback, load_files, parse_identifier
from ._settings import Settings
from ._stack import apply_stack_state
from .errors import LakehouseError, NoSuchTableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableInfo:
    layer: str
    table: str
    rows: int
    snapshots: int
    last_commit: str | None  # ISO-8601 UTC

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Lakehouse:
    """One handle on the configured lakehouse: catalog, embedded engine, loader.

    >>> lh = Lakehouse()
    >>> lh.sql("select count(*) from gold.fct_sales")

    With ``user``, every query runs under the policies in ``policies/``: only the rows and the
    masked columns that user is granted (``Lakehouse(user="sam")``).
    """

    def __init__(self, settings: Settings | None = None, *, user: str | None = None) -> None:
        settings = settings or Settings.load()
        self.settings = apply_stack_state(settings) if settings.profile == "stack" else settings
        self.user = user

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings)

    @cached_property
    def engine(self) -> Engine:
        if self.user is not None:
            from ._policy import load_policy
            from ._secure import SecureEngine

            return SecureEngine(
                self.settings, self.catalog, load_policy(self.settings.policies_dir), self.user
            )
        return Engine(self.settings, self.catalog)

    def table(self, identifier: str) -> Table:
        layer, name = parse_identifier(identifier)
        if not self.catalog.table_exists((layer, name)):
            raise NoSuchTableError(f"no table {identifier}; tables that exist: {self._names()}")
        return self.catalog.load_table((layer, name))

    def _names(self) -> str:
        return ", ".join(f"{n}.{t}" for n, t in list_tables(self.catalog)) or "(none)"

    def tables(self) -> list[TableInfo]:
        infos = []
        for layer, name in list_tables(self.catalog):
            table = self.catalog.load_table((layer, name))
            snapshot = table.current_snapshot()
            rows = 0
            if snapshot and snapshot.summary:
                rows = int(snapshot.summary.additional_properties.get("total-records", 0))
            last = (
                dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.UTC).isoformat(
                    timespec="seconds"
                )
                if snapshot
                else None
            )
            infos.append(TableInfo(layer, name, rows, len(table.metadata.snapshots), last))
        return infos

    def sql(self, query: str, *, schema: str | None = None) -> pa.Table:
        """Run SQL over every layer; tables are ``layer.table``; ``schema`` sets the default layer.

        Every query is audited in ``audit.query_log``: a policy-bound session (``user``) before
        it answers; the operator's unrestricted session in one commit when it closes."""
        self.engine.refresh() if self.engine._conn is not None else None
        if self.user is not None:
            return self.engine.sql(query, schema=schema)
        try:
            result = self.engine.sql(query, schema=schema)
        except LakehouseError as exc:
            self._operator_queries.append((query, None, "error", str(exc)))
            raise
        self._operator_queries.append((query, result.num_rows, "ok", None))
        return result

    @cached_property
    def _operator_queries(self) -> list[tuple[str, int | None, str, str | None]]:
        return []

    def _flush_operator_audit(self) -> None:
        queries = self.__dict__.pop("_operator_queries", None)
        if not queries:
            return
        import getpass

        from ._query_audit import QueryRecord, record_many, tables_in

        entries = [
            QueryRecord(
                f"operator:{getpass.getuser()}",
                ["operator"],
                query,
                tables_in(query),
                "unrestricted",
                {},
                rows,
                outcome,
                reason,
            )
            for query, rows, outcome, reason in queries
        ]
        try:
            record_many(self.catalog, entries)
        except Exception as exc:  # the results were already returned; say so loudly, do not hide them
            logger.warning("could not append %s operator queries to audit.query_log: %s", len(entries), exc)

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
        from ._contracts import contract_for

        contract = contract_for(identifier, self.settings.contracts_file)
        return load_files(
            self.catalog,
            identifier,
            files,
            fmt=fmt,
            create=create,
            progress=progress,
            contracts_file=self.settings.contracts_file,
            keystore=self.keystore if contract is not None and contract.pii else None,
        )

    @cached_property
    def keystore(self) -> Keystore:
        """Per-customer data keys for personal data (see ``lakehouse._keystore``)."""
        from ._keystore import open_keystore

        return open_keystore(self.settings)

    def close(self) -> None:
        self._flush_operator_audit()
        if "engine" in self.__dict__:
            self.engine.close()

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
