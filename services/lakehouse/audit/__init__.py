"""The audit trail: every query and key operation, journalled and committed to ``audit.*`` tables."""

from __future__ import annotations

from ._log import (
    AUDIT_TABLE,
    COLUMNS,
    KEY_SCHEMA,
    KEY_TABLE,
    QueryRecord,
    journal_for,
    policy_version,
    record_key_operation,
)

__all__ = [
    "AUDIT_TABLE",
    "COLUMNS",
    "KEY_SCHEMA",
    "KEY_TABLE",
    "QueryRecord",
    "journal_for",
    "policy_version",
    "record_key_operation",
]
