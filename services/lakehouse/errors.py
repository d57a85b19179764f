"""The platform's exceptions: one root, subclasses named for what went wrong."""

from __future__ import annotations


class LakehouseError(Exception):
    """Root of every error the platform raises on purpose."""


class ConfigurationError(LakehouseError):
    """Settings are missing, inconsistent or insecure."""


class NoSuchTableError(LakehouseError):
    """A table named by the user does not exist in the catalog."""


class ContractError(LakehouseError):
    """A data contract is malformed, or a table does not match its contract."""


class SchemaMismatchError(LakehouseError):
    """Incoming rows do not fit the target table; the message names file, column and row."""

    def __init__(self, message: str, *, source: str, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.source = source
        self.column = column
        self.row = row


class LoadError(LakehouseError):
    """A load could not be committed; nothing was written."""


class QueryError(LakehouseError):
    """A query failed in the engine."""


class AccessDenied(QueryError):
    """A policy-bound query names something its user is not granted; nothing ran."""


class QueryLimitExceeded(QueryError):
    """A policy-bound query ran into one of its bounds (time, memory, result size)."""


class TransformError(LakehouseError):
    """A dbt run could not finish (it ran past its time limit and was stopped)."""


class ServerError(LakehouseError):
    """An embedded server (SeaweedFS, broker) failed to start or answer."""
