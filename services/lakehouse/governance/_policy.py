"""Access policies: one declarative source (``policies/*.yml``) for who reads what.

``load_policy`` reads principals and access rules with the line of every key, so validation
errors name ``file:line``. ``Policy.decide(user, table)`` is the single decision every
enforcement point derives from: the embedded engine turns it into DuckDB views, the compilers
in ``_policy_compile`` turn the same policy into Trino's OPA Rego + data and ``rules.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lakehouse.config import environment_project
from lakehouse.errors import PolicyError

MaskKind = Literal["redact", "hash", "year", "null", "token", "decrypt"]


MASK_KINDS: tuple[str, ...] = ("redact", "hash", "year", "null", "token")


ENCRYPTED_MASKS = ("redact", "null", "token")  # what can be shown of a ciphertext without its key


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # attribute values end up in SQL literals


# --- YAML with line numbers ---------------------------------------------------------------------


class _Lines(dict[str, Any]):
    """A mapping that remembers the file and line of each of its keys."""

    file: str = ""
    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Lines:
    mapping = _Lines({str(k): v for k, v in loader.construct_mapping(node, deep=True).items()})
    mapping.file = str(loader.name)
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


def _read(path: Path) -> _Lines:
    try:
        with path.open() as handle:
            loader = _LineLoader(handle)
            loader.name = str(path)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: missing") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, _Lines):
        raise PolicyError(f"{path}:1: expected a mapping at the top")
    return data


def _where(mapping: Any, key: str | None = None) -> str:
    if isinstance(mapping, _Lines):
        return f"{mapping.file}:{mapping.key_lines.get(key, mapping.line) if key else mapping.line}"
    return "?"


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowFilterRule:
    """How a row-filter attribute (region, store) reaches a table's rows."""

    attribute: str
    columns: tuple[str, ...]
    via: dict[str, str] | None  # {column, table, key, value}


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    attributes: dict[str, str]
    clearances: frozenset[str]


@dataclass(frozen=True)
class Filter:
    """Rows whose ``column`` equals ``value``; with ``via``, rows whose ``column`` is a key of
    ``via.table`` whose ``via.value`` column equals ``value``."""

    attribute: str
    value: str
    column: str
    via: dict[str, str] | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    filters: tuple[Filter, ...] = ()  # OR-ed; empty means every row
    masks: dict[str, MaskKind] = field(default_factory=dict)
    reason: str = ""


@dataclass
class Policy:
    roles: dict[str, dict[str, Any]]
    principals: dict[str, Principal]
    grants: dict[str, dict[str, Any]]
    row_filters: dict[str, RowFilterRule]
    shared: frozenset[str]
    sensitive: dict[str, dict[str, Any]]  # clearance -> {masks: {column: kind}, tables: {table: [cols]}}
    files: tuple[Path, ...] = ()

    # -- decisions -------------------------------------------------------------------------

    def principal(self, user: str) -> Principal:
        found = self.principals.get(user)
        if found is None:
            raise PolicyError(
                f"unknown user {user!r}: policies/principals.yml declares {sorted(self.principals)}"
            )
        return found

    def readable(self, role: str, table: str) -> bool:
        grant = self.grants.get(role, {})
        return table in grant.get("tables", []) or table.split(".")[0] in grant.get("layers", [])

    def decide(self, user: str, table: str, columns: Iterable[str]) -> Decision:
        """What ``user`` may see of ``table`` (with ``columns``)."""
        principal = self.principal(user)
        columns = list(columns)
        granting = sorted(r for r in principal.roles if self.readable(r, table))
        if not granting:
            return Decision(False, reason=f"no role of {user} is granted {table}")
        # union of grants: each granting role whose row filter reaches the table contributes
        contributions: list[Filter | None] = []  # None: that role sees every row
        for role in granting:
            attribute = self.roles[role].get("row_filter")
            if attribute is None or table in self.shared:
                contributions.append(None)
                continue
            rule = self.row_filters[attribute]
            value = principal.attributes[attribute]
            column = next((c for c in rule.columns if c in columns), None)
            if column is not None:
                contributions.append(Filter(attribute, value, column))
            elif rule.via and rule.via["column"] in columns:
                contributions.append(Filter(attribute, value, rule.via["column"], rule.via))
        if not contributions:
            return Decision(False, reason=f"no row filter of {user}'s roles reaches {table}")
        chosen = [f for f in contributions if f is not None]
        filters = (
            () if None in contributions else tuple(f for i, f in enumerate(chosen) if f not in chosen[:i])
        )
        masks: dict[str, MaskKind] = {}
        for clearance, spec in self.sensitive.items():
            cleared = clearance in principal.clearances
            for column in spec["tables"].get(table, []):
                if not cleared:
                    masks[column] = spec["masks"][column]
                elif spec["encrypted"]:
                    masks[column] = "decrypt"  # shown in clear: the platform decrypts it
        return Decision(True, filters, masks)

    def sensitive_columns(self, table: str) -> set[str]:
        return {c for spec in self.sensitive.values() for c in spec["tables"].get(table, [])}


def load_policy(directory: Path | None = None, schemas: dict[str, list[str]] | None = None) -> Policy:
    """Read and validate ``principals.yml`` and ``access.yml``. With ``schemas`` (table ->
    columns), tables and columns named by the policy are checked to exist. ``directory``
    defaults to the environment's project's ``policies/``."""
    directory = directory or environment_project().policies_dir
    if not (directory / "principals.yml").exists():
        raise PolicyError(
            f"no policies at {directory}: put principals.yml and access.yml in the project's policies/ "
            "(the project is LAKEHOUSE_PROJECT_DIR)"
        )
    principals_doc = _read(directory / "principals.yml")
    access_doc = _read(directory / "access.yml")
    errors: list[str] = []

    def err(where: Any, key: str | None, message: str) -> None:
        errors.append(f"{_where(where, key)}: {message}")

    def known_table(where: Any, key: str | None, table: str) -> bool:
        if schemas is not None and table not in schemas:
            err(where, key, f"unknown table {table!r}")
            return False
        return True

    def known_column(where: Any, key: str | None, table: str, column: str) -> None:
        if schemas is not None and table in schemas and column not in schemas[table]:
            err(where, key, f"unknown column {column!r} of {table}")

    # access.yml: row filters, shared tables, sensitive columns
    row_filters: dict[str, RowFilterRule] = {}
    for attribute, spec in (access_doc.get("row_filters") or {}).items():
        via = spec.get("via")
        if via is not None and set(via) != {"column", "table", "key", "value"}:
            err(spec, "via", "via needs exactly column, table, key and value")
            via = None
        if via is not None and known_table(via, "table", via["table"]):
            for part in ("key", "value"):
                known_column(via, part, via["table"], via[part])
        row_filters[attribute] = RowFilterRule(
            attribute, tuple(spec.get("columns") or ()), dict(via) if via else None
        )
    shared = access_doc.get("shared") or []
    for table in shared:
        known_table(access_doc, "shared", table)
    sensitive: dict[str, dict[str, Any]] = {}
    for clearance, spec in (access_doc.get("sensitive") or {}).items():
        masks = dict(spec.get("masks") or {})
        encrypted = bool(spec.get("encrypted", False))
        for column, kind in masks.items():
            if kind not in MASK_KINDS:
                err(spec["masks"], column, f"mask {kind!r} is not one of {list(MASK_KINDS)}")
            elif encrypted and kind not in ENCRYPTED_MASKS:
                err(
                    spec["masks"],
                    column,
                    f"{column} is encrypted: its mask must be one of {list(ENCRYPTED_MASKS)}",
                )
        tables = spec.get("tables") or {}
        for table, cols in tables.items():
            if not known_table(tables, table, table):
                continue
            for column in cols:
                known_column(tables, table, table, column)
                if column not in masks:
                    err(tables, table, f"sensitive column {table}.{column} has no mask in {clearance}.masks")
                elif masks[column] == "token":
                    known_column(tables, table, table, f"{column}_token")
        # same names, another meaning (a store's city): declared, so the name check spares them
        not_personal = spec.get("not_personal") or {}
        for table, cols in not_personal.items():
            if known_table(not_personal, table, table):
                for column in cols:
                    known_column(not_personal, table, table, column)
        sensitive[str(clearance)] = {
            "masks": masks,
            "encrypted": encrypted,
            "tables": {t: list(c) for t, c in tables.items()},
            "not_personal": {t: list(c) for t, c in not_personal.items()},
        }

    # principals.yml: roles, groups, users
    roles: dict[str, dict[str, Any]] = {}
    for name, spec in (principals_doc.get("roles") or {}).items():
        spec = spec or _Lines()
        if spec.get("row_filter") is not None and spec["row_filter"] not in row_filters:
            err(
                spec,
                "row_filter",
                f"row filter {spec['row_filter']!r} is not declared in access.yml row_filters",
            )
        for clearance in spec.get("clearances") or []:
            if clearance not in sensitive:
                err(spec, "clearances", f"clearance {clearance!r} is not a sensitive class of access.yml")
        roles[str(name)] = dict(spec)
    groups = principals_doc.get("groups") or {}
    for name, spec in groups.items():
        for role in spec.get("roles") or []:
            if role not in roles:
                err(spec, "roles", f"group {name}: unknown role {role!r}")
    principals: dict[str, Principal] = {}
    for name, spec in (principals_doc.get("users") or {}).items():
        if not NAME.match(str(name)):
            err(principals_doc["users"], name, f"user name {name!r} is not allowed")
        member_roles = set(spec.get("roles") or [])
        attributes: dict[str, str] = {}
        for group in spec.get("groups") or []:
            if group not in groups:
                err(spec, "groups", f"user {name}: unknown group {group!r}")
                continue
            member_roles |= set(groups[group].get("roles") or [])
            attributes.update({str(k): str(v) for k, v in (groups[group].get("attributes") or {}).items()})
        attributes.update({str(k): str(v) for k, v in (spec.get("attributes") or {}).items()})
        for role in sorted(member_roles):
            if role not in roles:
                err(spec, "roles", f"user {name}: unknown role {role!r}")
                continue
            needed = roles[role].get("row_filter")
            if needed and needed not in attributes:
                err(
                    spec,
                    None,
                    f"user {name}: role {role} filters rows by {needed!r}, but the user has no {needed} attribute",
                )
        for attribute, value in attributes.items():
            if not VALUE.match(value):
                err(
                    spec,
                    None,
                    f"user {name}: attribute {attribute}={value!r} must be letters, digits, '_', '.', '-'",
                )
        clearances = frozenset(
            c for r in member_roles if r in roles for c in roles[r].get("clearances") or []
        )
        principals[str(name)] = Principal(
            str(name), frozenset(member_roles & roles.keys()), attributes, clearances
        )

    # access.yml grants
    grants: dict[str, dict[str, Any]] = {}
    for role, spec in (access_doc.get("grants") or {}).items():
        if role not in roles:
            err(access_doc["grants"], role, f"grant for unknown role {role!r}")
            continue
        for layer in spec.get("layers") or []:
            if layer not in ("bronze", "silver", "gold", "platinum", "audit"):
                err(spec, "layers", f"unknown layer {layer!r}")
        for table in spec.get("tables") or []:
            known_table(spec, "tables", table)
        grants[str(role)] = dict(spec)

    policy = Policy(
        roles,
        principals,
        grants,
        row_filters,
        frozenset(shared),
        sensitive,
        (directory / "principals.yml", directory / "access.yml"),
    )
    if schemas is not None:
        errors += _unmasked_personal_data(policy, schemas, access_doc)
    if errors:
        raise PolicyError("invalid policy:\n  " + "\n  ".join(errors))
    return policy


def _unmasked_personal_data(policy: Policy, schemas: dict[str, list[str]], access_doc: _Lines) -> list[str]:
    """A column named like a declared sensitive column, in a table readable by a role without
    the clearance, but not itself declared: personal data that would leak unmasked."""
    problems = []
    for clearance, spec in policy.sensitive.items():
        names = set(spec["masks"])
        for table, columns in sorted(schemas.items()):
            declared = set(spec["tables"].get(table, [])) | set(spec["not_personal"].get(table, []))
            undeclared = sorted((names & set(columns)) - declared)
            if not undeclared:
                continue
            exposed = sorted(
                role
                for role in policy.roles
                if policy.readable(role, table)
                and clearance not in (policy.roles[role].get("clearances") or [])
            )
            if exposed:
                problems.append(
                    f"{_where(access_doc.get('sensitive', {}).get(clearance), 'tables')}: {table} has {clearance} "
                    f"column(s) {undeclared} not listed under sensitive.{clearance}.tables; roles {exposed} "
                    "would read them unmasked"
                )
    return problems
