"""The pyiceberg private API the platform relies on (lakehouse/iceberg/_pyiceberg.py) is there,
with the shape assumed, in the pinned pyiceberg: an upgrade fails here first, by name."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect

import pyiceberg.io.pyarrow as pyarrow_io
import pyiceberg.table as iceberg_table
import pytest
from pyiceberg.table.update.snapshot import _FastAppendFiles

from lakehouse.iceberg import _pyiceberg as shims

pytestmark = pytest.mark.unit

SHIMS = "services/lakehouse/iceberg/_pyiceberg.py"


def test_the_installed_pyiceberg_is_the_version_the_shims_were_written_for() -> None:
    installed = importlib.metadata.version("pyiceberg")
    assert installed == shims.PYICEBERG_VERSION, (
        f"pyiceberg {installed} is installed, the shims in {SHIMS} were checked against "
        f"{shims.PYICEBERG_VERSION}: re-read them against the new release, then update PYICEBERG_VERSION"
    )


def test_the_transaction_internals_the_shims_override_exist() -> None:
    transaction = iceberg_table.Transaction
    assert isinstance(inspect.getattr_static(transaction, "table_metadata"), property)
    assert callable(inspect.getattr_static(transaction, "_rebuild_snapshot_updates"))
    source = inspect.getsource(transaction.__init__)
    assert "self._table" in source
    assert "self._updates" in source
    # pyiceberg retries a conflicting commit by rebuilding its snapshot on the new state; the
    # shim must be where it does so, or a conflict would rebase rows planned for the old state
    assert "_rebuild_snapshot_updates()" in inspect.getsource(transaction.commit_transaction)


def test_the_writer_functions_have_the_parameters_the_shims_pass() -> None:
    write_file = inspect.signature(pyarrow_io.write_file).parameters
    assert {"io", "table_metadata", "tasks"} <= write_file.keys()
    compatible = inspect.signature(pyarrow_io._check_pyarrow_schema_compatible).parameters
    assert {"requested_schema", "provided_schema", "format_version"} <= compatible.keys()
    fields = {f.name for f in dataclasses.fields(iceberg_table.WriteTask)}
    assert {"write_uuid", "task_id", "record_batches", "partition_key", "schema"} <= fields
    assert callable(_FastAppendFiles.append_data_file)
    assert "commit_uuid" in inspect.getsource(_FastAppendFiles.__mro__[1].__init__)
