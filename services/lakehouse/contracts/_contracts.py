"""Data contracts: each source table declared once, in the project's ``contracts/*.yml``.

One declaration gives the Iceberg schema and partition spec, the Arrow schema that incoming rows
are validated against, and dbt's source definitions. The platform's own tables (dead letters)
are declared in the package (``platform.yml``), always loaded, and never by a project.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, Transform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

from lakehouse.config import Project, environment_project
from lakehouse.errors import ContractError

_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


_SIMPLE_TYPES: dict[str, tuple[IcebergType, pa.DataType]] = {
    "string": (StringType(), pa.string()),
    "int": (IntegerType(), pa.int32()),
    "long": (LongType(), pa.int64()),
    "double": (DoubleType(), pa.float64()),
    "boolean": (BooleanType(), pa.bool_()),
    "date": (DateType(), pa.date32()),
    "timestamp": (TimestampType(), pa.timestamp("us")),
    "binary": (BinaryType(), pa.binary()),
}


_TRANSFORMS: dict[str, Transform[Any, Any]] = {
    "identity": IdentityTransform(),
    "day": DayTransform(),
    "hour": HourTransform(),
    "month": MonthTransform(),
}


def _parse_type(name: str) -> tuple[IcebergType, pa.DataType]:
    if name in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[name]
    match = _DECIMAL.match(name)
    if match:
        precision, scale = int(match[1]), int(match[2])
        return DecimalType(precision, scale), pa.decimal128(precision, scale)
    raise ValueError(f"unknown type {name!r}; use one of {[*_SIMPLE_TYPES, 'decimal(P,S)']}")


class Column(BaseModel, frozen=True):
    name: str
    type: str
    required: bool = False
    description: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        _parse_type(value)
        return value

    @property
    def iceberg_type(self) -> IcebergType:
        return _parse_type(self.type)[0]

    @property
    def arrow_type(self) -> pa.DataType:
        return _parse_type(self.type)[1]


class PartitionBy(BaseModel, frozen=True):
    column: str
    transform: Literal["identity", "day", "hour", "month"] = "identity"


class Contract(BaseModel, frozen=True):
    """The declaration of one bronze table."""

    layer: str = "bronze"
    name: str
    version: int = Field(default=1, ge=1)  # producers stamp messages with it; raise it when columns change
    system: bool = False  # the platform's own table (dead letters): not a dbt source
    description: str = ""
    primary_key: list[str]
    columns: list[Column]
    partition_by: list[PartitionBy] = Field(default_factory=list)
    pii: list[str] = Field(default_factory=list)
    # personal data is stored encrypted under the data key of the row's subject (pii_subject),
    # normalised first (pii_normalize), and pii_tokens also get <name>_token, a keyed HMAC
    pii_subject: str | None = None
    pii_normalize: dict[str, Literal["trim", "lower_trim", "digits"]] = Field(default_factory=dict)
    pii_tokens: list[str] = Field(default_factory=list)
    # per-subject fingerprints: <name> -> the pii columns it covers; a keyed HMAC (key derived
    # from the subject's data key) of their normalised values, to detect changes without the
    # plaintext and without comparing ciphertexts (random nonces make every ciphertext differ)
    pii_fingerprints: dict[str, list[str]] = Field(default_factory=dict)
    # a platform column (long) stamped on every write with the order rows reached the platform,
    # for "latest received wins" downstream; producers never send it (lakehouse.ingest.as_stored)
    ingest_order: str | None = None
    rls: dict[Literal["region", "store"], str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_exist(self) -> Contract:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("duplicate column names")
        for kind, refs in (
            ("primary_key", self.primary_key),
            ("pii", self.pii),
            ("partition_by", [p.column for p in self.partition_by]),
            ("rls", list(self.rls.values())),
        ):
            unknown = [r for r in refs if r not in names]
            if unknown:
                raise ValueError(f"{kind} names unknown column(s) {unknown}")
        if self.pii and self.pii_subject not in names:
            raise ValueError("pii columns need pii_subject: the column whose data key encrypts them")
        covered = [c for cs in self.pii_fingerprints.values() for c in cs]
        outside = [c for c in [*self.pii_normalize, *self.pii_tokens, *covered] if c not in self.pii]
        if outside:
            raise ValueError(
                f"pii_normalize, pii_tokens and pii_fingerprints name non-pii column(s) {outside}"
            )
        derived = self.platform_columns
        clashing = [c for c in derived if c in names]
        if clashing:
            raise ValueError(
                f"token, fingerprint or ingest order column(s) {clashing} clash with declared columns"
            )
        if len(set(derived)) != len(derived):
            raise ValueError(f"token, fingerprint and ingest order columns {derived} repeat a name")
        not_required = [c.name for c in self.columns if c.name in self.primary_key and not c.required]
        if not_required:
            raise ValueError(f"primary key column(s) {not_required} must be required: true")
        return self

    @property
    def identifier(self) -> str:
        return f"{self.layer}.{self.name}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def platform_columns(self) -> list[str]:
        """Columns the platform computes on every write (never sent by producers): personal
        data's tokens and fingerprints, and the ingest order."""
        return [
            *(f"{t}_token" for t in self.pii_tokens),
            *self.pii_fingerprints,
            *([self.ingest_order] if self.ingest_order else []),
        ]

    @property
    def transforms_rows(self) -> bool:
        """Whether rows as stored differ from rows as sent (personal data, platform columns):
        then producers send ``arrow_schema()`` and ``lakehouse.ingest.as_stored`` makes the stored rows."""
        return bool(self.pii or self.platform_columns)

    @property
    def stored_columns(self) -> list[Column]:
        """The table's columns: as declared, except personal data stored as ciphertext text,
        plus the token, fingerprint and ingest order columns. ``columns`` is what producers send."""
        stored = [
            Column(name=c.name, type="string", required=c.required, description="encrypted (pii:v1)")
            if c.name in self.pii
            else c
            for c in self.columns
        ]
        tokens = [
            Column(name=f"{t}_token", type="string", description=f"keyed HMAC-SHA256 of the normalised {t}")
            for t in self.pii_tokens
        ]
        fingerprints = [
            Column(
                name=name,
                type="string",
                description=f"per-customer keyed HMAC-SHA256 of the normalised {', '.join(covered)}",
            )
            for name, covered in self.pii_fingerprints.items()
        ]
        ingest_order = []
        if self.ingest_order:
            ingest_order.append(
                Column(
                    name=self.ingest_order,
                    type="long",
                    description=(
                        "the order rows reached the platform, stamped on every write: microseconds "
                        "since 1970 when the batch was stamped, +1 per row of the batch (NULL: written "
                        "before the platform stamped it)"
                    ),
                )
            )
        return stored + tokens + fingerprints + ingest_order

    def stored_arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.stored_columns]
        )

    def iceberg_schema(self) -> Schema:
        fields = [
            NestedField(i, c.name, c.iceberg_type, required=c.required, doc=c.description or None)
            for i, c in enumerate(self.stored_columns, start=1)
        ]
        ids = [f.field_id for f in fields if f.name in self.primary_key]
        return Schema(*fields, identifier_field_ids=ids)

    def partition_spec(self) -> PartitionSpec:
        schema = self.iceberg_schema()
        return PartitionSpec(
            *(
                PartitionField(
                    source_id=schema.find_field(p.column).field_id,
                    field_id=1000 + i,
                    transform=_TRANSFORMS[p.transform],
                    name=f"{p.column}_{p.transform}",
                )
                for i, p in enumerate(self.partition_by)
            )
        )

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.columns])

    def table_properties(self) -> dict[str, str]:
        props = {
            "lakehouse.contract": self.identifier,
            "lakehouse.contract-version": str(self.version),
            "write.parquet.compression-codec": "zstd",
        }
        if self.pii:
            props["lakehouse.pii-columns"] = ",".join(self.pii)
        for key, column in self.rls.items():
            props[f"lakehouse.rls.{key}"] = column
        return props


def load_contracts(project: Project | None = None) -> dict[str, Contract]:
    """Every contract by identifier (``bronze.orders``): the platform's own tables and those
    declared in ``project``'s ``contracts/*.yml`` (default: the environment's project, as a
    ``lakehouse`` command finds it; see ``lakehouse.config.find_project``)."""
    source = project if project is not None else environment_project()
    return _load_contracts(str(source.contracts_dir))


PLATFORM_CONTRACTS = "platform.yml"


@cache
def platform_contracts() -> dict[str, Contract]:
    """The platform's own tables (``bronze.dead_letters``), whatever the project."""
    text = resources.files("lakehouse.contracts").joinpath(PLATFORM_CONTRACTS).read_text()
    return parse_contracts(text, source=f"lakehouse/contracts/{PLATFORM_CONTRACTS}")


@cache
def _load_contracts(directory: str) -> dict[str, Contract]:
    platform = platform_contracts()
    contracts = dict(platform)
    declared_in: dict[str, Path] = {}
    for path in sorted(p for p in Path(directory).glob("*.yml") if p.is_file()):
        for identifier, contract in parse_contracts(path.read_text(), source=str(path)).items():
            if identifier in platform:
                raise ContractError(
                    f"{path}: {identifier} is the platform's own table and cannot be declared by a "
                    "project; name your table differently"
                )
            if identifier in declared_in:
                raise ContractError(
                    f"{path}: {identifier} is already declared in {declared_in[identifier]}; declare each "
                    "table once"
                )
            declared_in[identifier] = path
            contracts[identifier] = contract
    return contracts


def parse_contracts(text: str, *, source: str) -> dict[str, Contract]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ContractError(f"{source}{where}: not valid YAML ({problem})") from exc
    tables = document.get("tables") if isinstance(document, dict) else None
    if not isinstance(tables, dict):
        raise ContractError(f"{source}: expected a 'tables:' mapping of table name to declaration")
    contracts: dict[str, Contract] = {}
    for name, body in tables.items():
        if not isinstance(body, dict):
            raise ContractError(f"{source}: table {name!r}: expected a mapping (columns, primary_key, ...)")
        try:
            contract = Contract(name=name, **body)
        except ValidationError as exc:
            raise ContractError(f"{source}: table {name!r}: {exc}") from exc
        contracts[contract.identifier] = contract
    return contracts


def contract_for(identifier: str, project: Project | None = None) -> Contract | None:
    return load_contracts(project).get(identifier)


# Iceberg's allowed type promotions (spec: "Schema Evolution").
def _promotable(old: IcebergType, new: IcebergType) -> bool:
    if old == new:
        return True
    if isinstance(old, IntegerType) and isinstance(new, LongType):
        return True
    if isinstance(old, DecimalType) and isinstance(new, DecimalType):
        return old.scale == new.scale and new.precision >= old.precision
    return False


def evolve_to_contract(table: Table, contract: Contract) -> Table:
    """Bring an existing table's schema up to its contract without rewriting data.

    New optional columns are added and types promoted where Iceberg allows it; anything else
    (a new required column, an incompatible type change) raises ContractError.
    """
    schema = table.schema()
    names = {f.name: f for f in schema.fields}
    added = [c for c in contract.stored_columns if c.name not in names]
    problems = [
        f"adds required column {c.name!r} (existing rows have no value; declare it optional)"
        for c in added
        if c.required
    ]
    promoted = []
    for c in contract.stored_columns:
        if c.name in names and names[c.name].field_type != c.iceberg_type:
            if _promotable(names[c.name].field_type, c.iceberg_type):
                promoted.append(c)
            else:
                problems.append(f"changes {c.name!r} from {names[c.name].field_type} to {c.iceberg_type}")
    if problems:
        raise ContractError(
            f"contract {contract.identifier} v{contract.version} is incompatible with the table: "
            + "; ".join(problems)
            + ". Compatible changes are new optional columns and Iceberg type promotions."
        )
    if not added and not promoted:
        return table
    with table.transaction() as tx:
        with tx.update_schema() as update:
            for c in added:
                update.add_column(c.name, c.iceberg_type, doc=c.description or None)
            for c in promoted:
                update.update_column(c.name, field_type=c.iceberg_type)
        tx.set_properties({"lakehouse.contract-version": str(contract.version)})
    return table


def dbt_sources_yaml(project: Project | None = None) -> str:
    """dbt's ``__sources.yml`` for bronze, generated from the project's contracts (default: the
    environment's project); its header names the files it came from."""
    project = project if project is not None else environment_project()
    tables = []
    for contract in load_contracts(project).values():
        if contract.system:
            continue
        columns: list[dict[str, Any]] = []
        for c in contract.stored_columns:
            column: dict[str, Any] = {"name": c.name}
            if c.description:
                column["description"] = c.description
            if c.required:
                column["data_tests"] = ["not_null"]
            if c.name in contract.pii:
                column["meta"] = {"pii": True}
            columns.append(column)
        tables.append(
            {
                "name": contract.name,
                "description": contract.description,
                "meta": {
                    "primary_key": contract.primary_key,
                    "rls": {str(k): v for k, v in contract.rls.items()},
                },
                "columns": columns,
            }
        )
    document = {
        "version": 2,
        "sources": [
            {
                "name": "bronze",
                "description": "Raw tables landed by the platform; generated from the project's contracts/.",
                "schema": "bronze",
                "tables": tables,
            }
        ],
    }
    files = ", ".join(p.relative_to(project.root).as_posix() for p in project.contract_files())
    header = (
        f"# GENERATED from the project's {files or 'contracts/'} by `lakehouse contracts dbt-sources`:\n"
        "# edit the contracts, then regenerate; changes made here are lost.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=110)
