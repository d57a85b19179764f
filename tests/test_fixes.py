"""Bugs found on the way, each pinned by a test that fails without its fix."""

from __future__ import annotations

import os
import signal
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import lakehouse.local
import lakehouse.reference
from lakehouse import Lakehouse
from lakehouse.cli import app
from lakehouse.ingest.kafka import Sink

from .conftest import REPO


def test_produce_passes_scale_to_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def publish(bootstrap: str, topic: str, **kwargs: Any) -> int:
        seen.update(kwargs)
        return int(kwargs["count"])

    monkeypatch.setattr(lakehouse.reference, "produce", publish)
    monkeypatch.setattr(lakehouse.local, "bootstrap_servers", lambda _settings: "127.0.0.1:9")
    result = CliRunner().invoke(app, ["produce", "--topic", "orders", "--count", "3", "--scale", "0.15"])
    assert result.exit_code == 0, result.output
    assert seen["scale"] == 0.15


class _FakeConsumer:
    """Stands in for KafkaConsumer: each poll runs ``on_poll`` and returns nothing."""

    def __init__(self, on_poll: Callable[[], None]) -> None:
        self.on_poll = on_poll

    def poll(self, timeout_ms: int) -> dict[Any, Any]:
        self.on_poll()
        return {}

    def close(self, autocommit: bool) -> None:
        pass


@pytest.fixture
def user_handlers() -> Iterator[Callable[[int, Any], None]]:
    """A library user's own SIGTERM/SIGINT handler, installed before the sink runs."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def mine(_sig: int, _frame: Any) -> None:
        raise AssertionError("the user's handler must not run while the sink runs")

    for sig in saved:
        signal.signal(sig, mine)
    try:
        yield mine
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _sink(lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, on_poll: Callable[[Sink], None]) -> Sink:
    sink = Sink(lh.catalog, "127.0.0.1:9", ["orders"])
    monkeypatch.setattr(sink, "_make_consumer", lambda: _FakeConsumer(lambda: on_poll(sink)))
    return sink


def test_sink_stops_on_sigterm_and_restores_the_handlers_it_found(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, user_handlers: Callable[[int, Any], None]
) -> None:
    sink = _sink(lh, monkeypatch, lambda _sink: os.kill(os.getpid(), signal.SIGTERM))
    sink.run()  # returns: SIGTERM reached the sink's handler, not the user's
    assert signal.getsignal(signal.SIGTERM) is user_handlers
    assert signal.getsignal(signal.SIGINT) is user_handlers


def test_sink_restores_the_handlers_when_it_fails(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, user_handlers: Callable[[int, Any], None]
) -> None:
    def broken(_sink: Sink) -> None:
        raise RuntimeError("broker went away")

    with pytest.raises(RuntimeError, match="broker went away"):
        _sink(lh, monkeypatch, broken).run()
    assert signal.getsignal(signal.SIGTERM) is user_handlers
    assert signal.getsignal(signal.SIGINT) is user_handlers


def test_sink_outside_the_main_thread_leaves_signals_alone(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, user_handlers: Callable[[int, Any], None]
) -> None:
    seen: list[Any] = []

    def look_then_stop(sink: Sink) -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        sink.stop()

    sink = _sink(lh, monkeypatch, look_then_stop)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    assert seen == [user_handlers]
    assert signal.getsignal(signal.SIGTERM) is user_handlers


def _model_table(lh: Lakehouse) -> Any:
    """A model's table with two snapshots of history."""
    from pyiceberg.table import Table

    table: Table = lh.catalog.create_table(("silver", "fix_model"), schema=_MODEL_SCHEMA)
    for value in ("a", "b"):
        table.append(pa.table({"id": [1], "label": [value]}, schema=_MODEL_SCHEMA))
    return lh.catalog.load_table(("silver", "fix_model"))


_MODEL_SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("label", pa.string())])


def test_dbt_model_table_survives_a_transient_error_while_evolving(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.transform.dbt_plugin import _replace_schema_if_changed

    table = _model_table(lh)

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("object store unavailable")

    monkeypatch.setattr(lh.catalog, "commit_table", unavailable)
    wider = _MODEL_SCHEMA.append(pa.field("extra", pa.string()))
    with pytest.raises(OSError, match="object store unavailable"):
        _replace_schema_if_changed(lh.catalog, table, wider)
    monkeypatch.undo()
    kept = lh.catalog.load_table(("silver", "fix_model"))
    assert len(kept.metadata.snapshots) == 2
    assert sorted(kept.scan().to_arrow().column("label").to_pylist()) == ["a", "b"]


def test_dbt_model_table_evolves_compatible_changes_and_recreates_incompatible_ones(lh: Lakehouse) -> None:
    from lakehouse.transform.dbt_plugin import _replace_schema_if_changed

    table = _model_table(lh)
    wider = _MODEL_SCHEMA.append(pa.field("extra", pa.string()))
    evolved = _replace_schema_if_changed(lh.catalog, table, wider)
    assert evolved.schema().column_names == ["id", "label", "extra"]
    assert len(evolved.metadata.snapshots) == 2  # history kept

    retyped = pa.schema([pa.field("id", pa.int64()), pa.field("label", pa.int64())])
    recreated = _replace_schema_if_changed(lh.catalog, evolved, retyped)
    assert str(recreated.schema().find_field("label").field_type) == "long"
    assert recreated.metadata.snapshots == []  # string -> long cannot evolve: starts over


def test_the_platform_declares_the_edge_agent_it_imports() -> None:
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    declared = {Requirement(r).name for r in requires("lakehouse-platform") or []}
    assert "lakehouse-edge" in declared
    gateway = (REPO / "services/lakehouse/ingest/edge/_app.py").read_text()
    assert "from lakehouse_edge" in gateway  # the reason it is declared
    # it comes from this repository, never an index, and stays out of the hash-pinned lock
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["sources"]["lakehouse-edge"]["path"] == "services/edge-agent"
    locked = (REPO / "requirements.lock").read_text().splitlines()
    assert not [line for line in locked if line.startswith(("lakehouse-edge", "-e"))]


@pytest.mark.parametrize(
    "secret",
    ["'", "a'b", "x'); select 42; --", "''", "back\\slash'", "end'", "$$q'$$", "ünï'cödé"],
)
def test_s3_secrets_with_quotes_reach_duckdb_verbatim(tmp_path: Path, secret: str) -> None:
    import duckdb

    from lakehouse import Settings
    from lakehouse.config._settings import StorageSettings
    from lakehouse.iceberg import configure_storage, install_extensions
    from lakehouse.iceberg._duckdb import extension_directory

    settings = Settings(
        home=tmp_path / "home",
        storage=StorageSettings(
            type="s3", endpoint="http://127.0.0.1:9", access_key_id=f"AK{secret}", secret_access_key=secret
        ),
    )
    extensions = extension_directory(settings)
    extensions.mkdir(parents=True)
    config = {"allow_unredacted_secrets": True, "extension_directory": str(extensions)}
    with duckdb.connect(config={**config, "autoinstall_known_extensions": False}) as conn:
        install_extensions(conn)
        configure_storage(conn, settings)
        (stored,) = conn.execute("select secret_string from duckdb_secrets(redact=false)").fetchone() or ("",)
    assert f";key_id=AK{secret};" in stored
    assert f";secret={secret};" in stored
