"""Loading files into Iceberg tables: the one code path by which rows enter the lakehouse.

A load reads and validates every file first, then commits all of them in one Iceberg snapshot:
all or nothing. Each file is a batch identified by its content hash; the ids are recorded in the
snapshot summary of the very commit that writes the rows, so loading the same file again adds
nothing, even after a crash between the commit and anything else.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from lakehouse.config import Project
from lakehouse.contracts import contract_for
from lakehouse.errors import LakehouseError, LoadError, SchemaMismatchError
from lakehouse.iceberg import (
    loaded_batch_ids,
    open_table,
    parse_identifier,
    target_arrow_schema,
)
from lakehouse.privacy import Keystore

from ._conform import Format, conform
from ._write import Batch, Writer

logger = logging.getLogger(__name__)


_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class LoadResult:
    table: str
    rows: int = 0
    files_loaded: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    snapshot_id: int | None = None
    created: bool = False
    seconds: float = 0.0


ProgressCallback = Callable[[str, int], None]  # (what happened, rows)


def detect_format(path: Path, fmt: str | None) -> Format:
    if fmt:
        if fmt not in ("parquet", "csv", "jsonl"):
            raise LoadError(f"unknown format {fmt!r}; use parquet, csv or jsonl")
        return fmt  # type: ignore[return-value]
    suffixes = [s for s in path.suffixes if s not in (".gz", ".zst")]
    found = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if not found:
        raise LoadError(f"{path}: cannot tell the format from the name; pass --format parquet|csv|jsonl")
    return found


def batch_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading ---------------------------------------------------------------------------------


def _csv_options(target: pa.Schema | None, as_strings: bool) -> pacsv.ConvertOptions:
    column_types = {}
    if target is not None:
        column_types = {f.name: (pa.string() if as_strings else f.type) for f in target}
    return pacsv.ConvertOptions(
        column_types=column_types,
        strings_can_be_null=True,
        null_values=["", "NULL", "null", "NA"],
        true_values=["true", "True", "TRUE", "1", "t"],
        false_values=["false", "False", "FALSE", "0", "f"],
        timestamp_parsers=[pacsv.ISO8601],
    )


def read_file(path: Path, fmt: Format, target: pa.Schema | None) -> pa.Table:
    """Read one file into Arrow; CSV columns are parsed straight into the target types."""
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            try:
                return pacsv.read_csv(path, convert_options=_csv_options(target, as_strings=False))
            except pa.ArrowInvalid:
                if target is None:
                    raise
                # Parse as text and let conform() name the column and row that does not fit.
                return pacsv.read_csv(path, convert_options=_csv_options(target, as_strings=True))
        return pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaMismatchError(f"{path}: not readable as {fmt}: {exc}", source=str(path)) from exc


def load_files(
    catalog: Catalog,
    identifier: str,
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    create: bool = False,
    progress: ProgressCallback | None = None,
    project: Project | None = None,
    keystore: Keystore | None = None,
) -> LoadResult:
    """Append files to ``identifier`` in one atomic commit, skipping files already loaded.
    Personal data (the contract's ``pii``) is encrypted with ``keystore`` before it is written;
    without one, such a table refuses the load. Contracts are ``project``'s (default: the
    environment's); a table no contract declares is created from the files only with ``create``."""
    started = time.perf_counter()
    parse_identifier(identifier)
    files = [Path(p) for p in paths]
    if not files:
        raise LoadError("no files to load")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise LoadError(f"file(s) not found: {', '.join(missing)}")
    formats = [detect_format(p, fmt) for p in files]
    writer = Writer(catalog, project, keystore=keystore)
    table, created = open_table(
        catalog,
        identifier,
        create_from=(lambda: (read_file(files[0], formats[0], None).schema, files[0].name))
        if create
        else None,
        project=project,
    )
    result = LoadResult(table=identifier, created=created)
    target = target_arrow_schema(table)
    done = loaded_batch_ids(table)
    contract = contract_for(identifier, project)
    if contract is not None and contract.pii and keystore is None:
        raise LoadError(
            f"{identifier} holds personal data ({', '.join(contract.pii)}): load it through the platform "
            "(lakehouse load, Lakehouse.load), which encrypts it"
        )
    # rows as sent differ from rows as stored (personal data, platform columns): files hold the former
    transformed = contract if contract is not None and contract.transforms_rows else None
    source_schema = transformed.arrow_schema() if transformed is not None else target

    batches: list[Batch] = []
    paths_of: dict[str, Path] = {}
    seen: set[str] = set()
    for path, file_fmt in zip(files, formats, strict=True):
        bid = batch_id(path)
        if bid in done or bid in seen:
            result.files_skipped.append(str(path))
            if progress:
                progress(f"skipped {path.name} (already loaded)", 0)
            continue
        seen.add(bid)
        data = conform(
            read_file(path, file_fmt, source_schema),
            source_schema,
            source=str(path),
            fmt=file_fmt,
            table=identifier,
        )
        data = writer.stored(identifier, data, table, source=str(path)) if transformed else data
        batches.append(Batch(bid, data, path.name))
        paths_of[bid] = path
        if progress:
            progress(f"validated {path.name}", data.num_rows)

    try:
        outcome = writer.land_batches(table, batches)
    except LakehouseError:
        raise
    except Exception as exc:
        raise LoadError(f"commit to {identifier} failed, nothing was written: {exc}") from exc
    committed = {b.batch_id for b in (outcome.result or [])} if outcome else set()
    result.files_skipped += [str(paths_of[b.batch_id]) for b in batches if b.batch_id not in committed]
    if outcome:
        result.rows = outcome.rows.num_rows
        result.files_loaded = [str(paths_of[b.batch_id]) for b in batches if b.batch_id in committed]
        snapshot = outcome.table.current_snapshot()
        result.snapshot_id = snapshot.snapshot_id if snapshot else None
        if progress:
            progress(f"committed {len(committed)} file(s) to {identifier}", 0)
    result.seconds = time.perf_counter() - started
    return result
