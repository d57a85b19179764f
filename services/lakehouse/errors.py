"""The platform's exceptions: one root (``LakehouseError``), subclasses named for what went
wrong, all defined here and exported from ``lakehouse``, so a caller can catch any of them by
name without knowing which module raises it."""

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


class NoSuchDeadLetter(LakehouseError):
    """A dead letter named by the user (by id, or by its table) is not in ``bronze.dead_letters``:
    a typo, or erased since (``gdpr forget`` deletes a forgotten customer's dead letters)."""


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


class CatalogConflict(LakehouseError):
    """The catalog refused a change that conflicts with another (a Nessie merge of a branch whose
    tables changed on both sides); nothing was published."""


class BrokerUnreachable(ServerError):
    """No Kafka broker answers at the bootstrap address: nothing was sent or read."""

    def __init__(self, message: str, *, bootstrap: str) -> None:
        super().__init__(message)
        self.bootstrap = bootstrap


class OffsetsOutOfRange(LakehouseError):
    """A table's Kafka offset marks do not fit the broker's log (the broker restarted with an
    empty log, the topic was re-created, or data was deleted before it was read): the sink
    stopped before reading those partitions. ``partitions`` names them (``topic/partition``)."""

    def __init__(self, message: str, *, partitions: list[str]) -> None:
        super().__init__(message)
        self.partitions = partitions


class PolicyError(LakehouseError):
    """The policy files are invalid; the message lists every problem as file:line."""


class SessionFailed(QueryError):
    """The session process answered with an error (its DuckDB error type and message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class KeystoreError(LakehouseError):
    """The keystore cannot be opened (wrong master key, damaged file) or a value is not ours."""


class KeyShredded(KeystoreError):
    """The subject's data key was destroyed: its personal data is gone for good."""


class PersonalDataError(LakehouseError):
    """Personal data would be stored in a form other than this keystore's ciphertext."""


# --- the edge gateway ------------------------------------------------------------------------


class RegistryError(LakehouseError):
    """A registry operation was refused (unknown or used token, bad store id, unknown device)."""


class EnrollmentRefused(RegistryError):
    """The enrollment token is unknown, expired or already used."""


class InvalidEnrollment(RegistryError):
    """What was asked for cannot be enrolled: an unknown store, a bad name, a weak key."""


class UnknownStore(InvalidEnrollment):
    """A store id that the reference data does not list."""


class ReferenceUnavailable(LakehouseError):
    """The reference tables could not be read (the catalog is down): try again later."""


class TokenError(LakehouseError):
    """A token or assertion is not acceptable; ``reason`` is safe to log and to return."""

    def __init__(self, reason: str, *, status: int = 401, code: str = "invalid-token"):
        super().__init__(reason)
        self.reason, self.status, self.code = reason, status, code


class JSONRejected(LakehouseError, ValueError):
    """The text is not JSON the gateway accepts; the message says why, in one line."""


class WeakDeviceKey(LakehouseError, ValueError):
    """The public key binds no private key (or is not an Ed25519 point at all)."""


# --- pinned server artifacts (infra/artifacts.lock.json) --------------------------------------


class ArtifactError(LakehouseError):
    """A pinned server artifact (Trino, Nessie, Kafka, OPA) cannot be had as locked in
    ``infra/artifacts.lock.json``; ``lakehouse stack install`` fetches and verifies them."""


class ArtifactMismatch(ArtifactError):
    """What was downloaded (or found in the cache) is not the locked artifact: wrong digest or
    size. It was refused and nothing of it is left in the cache."""

    def __init__(self, message: str, *, artifact: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.artifact, self.expected, self.actual = artifact, expected, actual


class ArtifactUnavailable(ArtifactError):
    """An artifact could not be downloaded (no answer, an HTTP error, a time-out), or it is not
    in the cache when a server needs it: run ``lakehouse stack install``."""


class ToolchainMissing(ArtifactError):
    """A service needs a JDK or Go that this machine lacks; the message names what to install."""
