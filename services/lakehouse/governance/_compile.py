"""The policy compiled for each enforcement point, from the one ``Policy``.

- SQL fragments for Trino and for DuckDB (row filters, column masks) that compute the same values;
- Trino's OPA plugin: a static Rego module (``governance/trino.rego``) plus a generated data document;
- Trino's file-based access control ``rules.json``, the simpler alternative;
- who may call Trino's ``pii_decrypt`` (``trino/pii_readers.json``, read by the trino-pii plugin).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from lakehouse.config import TRINO_OPERATOR, Project, environment_project
from lakehouse.contracts import load_contracts
from lakehouse.errors import PolicyError

from ._policy import Decision, Filter, MaskKind, Policy

REGO_FILE = Path(__file__).with_name("trino.rego")


LAYERS = ("bronze", "silver", "gold", "platinum")


def table_schemas(project: Project | None = None) -> dict[str, list[str]]:
    """Columns of every table the platform builds: bronze from the project's contracts, the other
    layers from its dbt models' YAML (gold and platinum contracts are enforced, so these are
    exact). ``project`` defaults to the environment's; one without dbt/ has bronze tables only."""
    project = project if project is not None else environment_project()
    schemas = {c.identifier: [col.name for col in c.stored_columns] for c in load_contracts(project).values()}
    for layer in LAYERS[1:]:
        for path in sorted((project.dbt_dir / "models" / layer).glob("*.yml")):
            for model in (yaml.safe_load(path.read_text()) or {}).get("models", []):
                schemas[f"{layer}.{model['name']}"] = [c["name"] for c in model.get("columns", [])]
    from lakehouse.audit import AUDIT_TABLE, COLUMNS, KEY_SCHEMA, KEY_TABLE

    schemas[".".join(AUDIT_TABLE)] = list(COLUMNS)
    schemas[".".join(KEY_TABLE)] = list(KEY_SCHEMA.names)
    return schemas


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- SQL fragments -----------------------------------------------------------------------------


def filter_sql(filters: tuple[Filter, ...], *, table_ref: Any) -> str | None:
    """One boolean expression (filters OR-ed), or None for every row. ``table_ref(identifier)``
    names a lookup table in the target engine."""
    if not filters:
        return None
    parts = []
    for f in filters:
        if f.via is None:
            parts.append(f"{f.column} = {_literal(f.value)}")
        else:
            parts.append(
                f"{f.column} IN (SELECT {f.via['key']} FROM {table_ref(f.via['table'])} "
                f"WHERE {f.via['value']} = {_literal(f.value)})"
            )
    parts.sort()  # the order the Rego module produces (sort of a set)
    return parts[0] if len(parts) == 1 else " OR ".join(f"({p})" for p in parts)


_MASKS: dict[str, dict[MaskKind, str]] = {
    # the same value in both engines: sha256 of the UTF-8 bytes as lowercase hex, year truncation;
    # `decrypt` is the platform's pii_decrypt function (a DuckDB UDF here; in Trino, a function
    # the cluster must provide)
    "trino": {
        "redact": "CASE WHEN {c} IS NULL THEN NULL ELSE '***' END",
        "hash": "lower(to_hex(sha256(to_utf8({c}))))",
        "year": "date_trunc('year', {c})",
        "null": "NULL",
        "token": "{c}_token",
        "decrypt": "pii_decrypt({c})",
    },
    "duckdb": {
        "redact": "CASE WHEN {c} IS NULL THEN NULL ELSE '***' END",
        "hash": "sha256({c})",
        "year": "CAST(date_trunc('year', {c}) AS DATE)",
        "null": "NULL",
        "token": "{c}_token",
        "decrypt": "pii_decrypt({c})",
    },
}


def mask_sql(engine: str, kind: MaskKind, column: str) -> str:
    return _MASKS[engine][kind].format(c=column)


def trino_table(catalog: str) -> Any:
    return lambda identifier: f"{catalog}.{identifier}"


# --- Trino: OPA data and file-based rules -------------------------------------------------------


# The platform's own account on Trino: the operator who builds the layers (dbt) and administers.
# It reads and writes everything as stored (ciphertext, unfiltered), like the operator's embedded
# engine, and may impersonate users; every other account is a user of policies/ and reads only.
OPERATORS = (TRINO_OPERATOR,)


def _refuse_operator_names(policy: Policy) -> None:
    taken = sorted(set(OPERATORS) & set(policy.principals))
    if taken:
        raise PolicyError(
            f"policies/principals.yml names user {', '.join(taken)}, the platform's operator account "
            "on Trino: rename that user"
        )


def opa_data(policy: Policy, schemas: dict[str, list[str]], *, catalog: str = "iceberg") -> dict[str, Any]:
    """The data document the Rego module evaluates against (``data.lakehouse``)."""
    _refuse_operator_names(policy)
    tables: dict[str, Any] = {}
    for identifier, columns in sorted(schemas.items()):
        schema, name = identifier.split(".")
        row_filters: dict[str, Any] = {}
        for attribute, rule in policy.row_filters.items():
            column = next((c for c in rule.columns if c in columns), None)
            if column is not None:
                row_filters[attribute] = {"template": f"{column} = %s"}
            elif rule.via and rule.via["column"] in columns:
                via = rule.via
                row_filters[attribute] = {
                    "template": f"{via['column']} IN (SELECT {via['key']} FROM {catalog}.{via['table']} "
                    f"WHERE {via['value']} = %s)"
                }
        masks = {
            column: {
                "clearance": clearance,
                "expression": mask_sql("trino", spec["masks"][column], column),
                "decrypt": mask_sql("trino", "decrypt", column) if spec["encrypted"] else None,
            }
            for clearance, spec in policy.sensitive.items()
            for column in spec["tables"].get(identifier, [])
        }
        tables.setdefault(schema, {})[name] = {
            "row_filters": row_filters,
            "shared": identifier in policy.shared,
            "masks": masks,
        }
    return {
        "lakehouse": {
            "catalog": catalog,
            "operators": sorted(OPERATORS),
            "users": {
                p.name: {
                    "roles": sorted(p.roles),
                    "attributes": {k: _literal(v) for k, v in sorted(p.attributes.items())},
                    "clearances": sorted(p.clearances),
                }
                for p in policy.principals.values()
            },
            "roles": {
                name: {
                    "row_filter": spec.get("row_filter"),
                    "layers": sorted(policy.grants.get(name, {}).get("layers", [])),
                    "tables": sorted(policy.grants.get(name, {}).get("tables", [])),
                }
                for name, spec in sorted(policy.roles.items())
            },
            "tables": tables,
        }
    }


def rules_json(policy: Policy, schemas: dict[str, list[str]], *, catalog: str = "iceberg") -> dict[str, Any]:
    """Trino file-based access control: one rule per user and readable table, first match wins,
    then a final deny. Row filters and masks are the same SQL the OPA policy returns; the
    operator account (``OPERATORS``) owns everything."""
    _refuse_operator_names(policy)
    operators = f"^({'|'.join(OPERATORS)})$"
    table_rules: list[dict[str, Any]] = [{"user": operators, "privileges": ["OWNERSHIP"]}]
    schema_rules: list[dict[str, Any]] = [{"user": operators, "owner": True}]
    for user in sorted(policy.principals):
        readable_schemas: set[str] = set()
        for identifier, columns in sorted(schemas.items()):
            decision = policy.decide(user, identifier, columns)
            if not decision.allowed:
                continue
            schema, name = identifier.split(".")
            readable_schemas.add(schema)
            rule: dict[str, Any] = {
                "user": f"^{user}$",
                "catalog": catalog,
                "schema": schema,
                "table": name,
                "privileges": ["SELECT"],
            }
            expression = filter_sql(decision.filters, table_ref=trino_table(catalog))
            if expression:
                rule["filter"] = expression
            if decision.masks:
                rule["columns"] = [
                    {"name": c, "mask": mask_sql("trino", k, c)} for c, k in sorted(decision.masks.items())
                ]
            table_rules.append(rule)
        schema_rules += [
            {"user": f"^{user}$", "catalog": catalog, "schema": s, "owner": False}
            for s in sorted(readable_schemas)
        ]
    return {
        "catalogs": [
            {"user": operators, "allow": "all"},
            {"user": f"^({'|'.join(sorted(policy.principals))})$", "catalog": catalog, "allow": "read-only"},
            {"catalog": ".*", "allow": "none"},
        ],
        "schemas": [*schema_rules, {"schema": ".*", "owner": False}],
        "tables": [*table_rules, {"privileges": []}],
    }


def trino_decision_sql(decision: Decision, catalog: str = "iceberg") -> tuple[str | None, dict[str, str]]:
    """A decision as Trino SQL: (row filter or None, {column: mask expression})."""
    return (
        filter_sql(decision.filters, table_ref=trino_table(catalog)),
        {c: mask_sql("trino", k, c) for c, k in decision.masks.items()},
    )


# --- Trino: who may decrypt ---------------------------------------------------------------------


PII_READERS_FILE = Path("trino") / "pii_readers.json"  # under write_compiled's ``out``


def pii_readers(policy: Policy) -> list[str]:
    """The users whose principal holds the clearance of an encrypted sensitive class, sorted: the
    only session users for whom Trino's ``pii_decrypt`` decrypts. Trino checks no access on a
    plugin's functions, so the function checks this list itself; the masks the policy gives these
    users call it, and nobody else gets clear text from it, whatever the query."""
    _refuse_operator_names(policy)
    encrypted = {clearance for clearance, spec in policy.sensitive.items() if spec["encrypted"]}
    return sorted(p.name for p in policy.principals.values() if p.clearances & encrypted)


def write_pii_readers(policy: Policy, out: Path) -> Path:
    """``out/trino/pii_readers.json``: ``pii_readers`` as a JSON list, swapped in whole (the
    plugin re-reads it when it changes: it sees the old list or the new one, never a part)."""
    path = out / PII_READERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(pii_readers(policy), indent=2) + "\n")
    os.replace(partial, path)
    return path


def write_compiled(
    policy: Policy, schemas: dict[str, list[str]], out: Path, *, catalog: str = "iceberg"
) -> list[Path]:
    """``out/opa/lakehouse.rego``, ``out/opa/data.json``, ``out/rules.json`` and
    ``out/trino/pii_readers.json`` (``pii_readers``, for the trino-pii plugin, which re-reads it
    when it changes)."""
    (out / "opa").mkdir(parents=True, exist_ok=True)
    written = [out / "opa" / "lakehouse.rego", out / "opa" / "data.json", out / "rules.json"]
    written[0].write_text(REGO_FILE.read_text())
    written[1].write_text(json.dumps(opa_data(policy, schemas, catalog=catalog), indent=2, sort_keys=True))
    written[2].write_text(json.dumps(rules_json(policy, schemas, catalog=catalog), indent=2))
    return [*written, write_pii_readers(policy, out)]
