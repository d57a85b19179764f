"""Bugs found on the way, each pinned by a test that fails without its fix."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
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
from .test_edge import Gateway as EdgeGateway
from .test_edge import access_token, enroll_direct, request, sealed_for, seed_reference, upload
from .test_edge import readings as edge_readings


@pytest.mark.unit
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

    def assignment(self) -> set[Any]:
        return set()  # no partition assigned: nothing to check against a log


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
    # no broker behind the fake consumer: the sink's check that one answers is not under test here
    monkeypatch.setattr("lakehouse.ingest.kafka._sink.require_broker", lambda _bootstrap: None)
    return sink


@pytest.mark.unit
def test_sink_stops_on_sigterm_and_restores_the_handlers_it_found(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, user_handlers: Callable[[int, Any], None]
) -> None:
    sink = _sink(lh, monkeypatch, lambda _sink: os.kill(os.getpid(), signal.SIGTERM))
    sink.run()  # returns: SIGTERM reached the sink's handler, not the user's
    assert signal.getsignal(signal.SIGTERM) is user_handlers
    assert signal.getsignal(signal.SIGINT) is user_handlers


@pytest.mark.integration
def test_sink_restores_the_handlers_when_it_fails(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch, user_handlers: Callable[[int, Any], None]
) -> None:
    def broken(_sink: Sink) -> None:
        raise RuntimeError("broker went away")

    with pytest.raises(RuntimeError, match="broker went away"):
        _sink(lh, monkeypatch, broken).run()
    assert signal.getsignal(signal.SIGTERM) is user_handlers
    assert signal.getsignal(signal.SIGINT) is user_handlers


@pytest.mark.unit
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


@pytest.mark.unit
def test_dbt_model_table_survives_a_transient_error_while_evolving(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.ingest._write import _replace_schema_if_changed

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


@pytest.mark.unit
def test_dbt_model_table_evolves_compatible_changes_and_recreates_incompatible_ones(lh: Lakehouse) -> None:
    from lakehouse.ingest._write import _replace_schema_if_changed

    table = _model_table(lh)
    wider = _MODEL_SCHEMA.append(pa.field("extra", pa.string()))
    evolved = _replace_schema_if_changed(lh.catalog, table, wider)
    assert evolved.schema().column_names == ["id", "label", "extra"]
    assert len(evolved.metadata.snapshots) == 2  # history kept

    retyped = pa.schema([pa.field("id", pa.int64()), pa.field("label", pa.int64())])
    recreated = _replace_schema_if_changed(lh.catalog, evolved, retyped)
    assert str(recreated.schema().find_field("label").field_type) == "long"
    assert recreated.metadata.snapshots == []  # string -> long cannot evolve: starts over


@pytest.mark.unit
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


@pytest.mark.unit
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


@contextlib.contextmanager
def _gateway_in_process(home: Path, **gateway: Any) -> Iterator[EdgeGateway]:
    """The gateway app over TLS on a free loopback port, in this process (so a test can reach
    into it); stopped when the block ends."""
    import uvicorn

    from lakehouse import Settings
    from lakehouse.ingest.edge import build_app, tls_files
    from lakehouse.ingest.edge._server import tls_context
    from lakehouse.local import free_port

    seed_reference(home)
    settings = Settings(home=home, gateway=gateway)
    ca, cert, key = tls_files(settings)
    assert ca is not None
    port = free_port(set())
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(settings),
            host="127.0.0.1",
            port=port,
            ssl_context_factory=lambda _config, _default: tls_context(cert, key),
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the gateway did not start"
            time.sleep(0.05)
        yield EdgeGateway(home, f"https://127.0.0.1:{port}", ca, port, {})
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.mark.integration
def test_gateway_answers_503_when_its_lander_blocks_and_healthz_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.ingest.edge._land import Lander

    release = threading.Event()
    commit = Lander._commit

    def blocked(self: Lander, identifier: str, uploads: list[Any]) -> Any:
        release.wait()  # a catalog or object store that does not answer
        return commit(self, identifier, uploads)

    monkeypatch.setattr(Lander, "_commit", blocked)
    try:
        with _gateway_in_process(home, land_timeout=1.0) as gw:
            assert request(gw, "GET", "/healthz")[0] == 200
            device = enroll_direct(gw)
            token = access_token(gw, device)

            status, headers, problem = upload(gw, token, sealed_for(device, 1))
            assert status == 503, problem
            assert headers["content-type"] == "application/problem+json"
            assert problem["code"] == "landing-unavailable" and headers["retry-after"] == "1"
            assert "retry" in problem["detail"]
            status, _, health = request(gw, "GET", "/healthz")
            assert status == 503 and health["code"] == "unhealthy", health
            assert "waited" in health["detail"]

            release.set()  # the store answers again: the held commit lands, the retry is a duplicate
            status, _, health = request(gw, "GET", "/healthz")
            while status == 503:  # the held commit is finishing
                time.sleep(0.05)
                status, _, health = request(gw, "GET", "/healthz")
            assert status == 200 and health == {"status": "ok"}
            status, _, answer = upload(gw, token, sealed_for(device, 1))
            assert (status, answer["status"]) == (200, "duplicate"), answer
    finally:
        release.set()
    assert len(edge_readings(home)) == 5  # landed once


@pytest.mark.integration
def test_gateway_healthz_reports_a_dead_lander(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lakehouse.ingest.edge._land import Lander

    def ended(self: Lander) -> None:
        """The commit thread ends at once, as an unexpected error outside a commit ends it."""

    monkeypatch.setattr(Lander, "_loop", ended)
    with _gateway_in_process(home) as gw:
        status, headers, health = request(gw, "GET", "/healthz")
        assert status == 503 and headers["content-type"] == "application/problem+json"
        assert health["detail"] == "the commit thread has stopped"
        device = enroll_direct(gw)
        status, _, problem = upload(gw, access_token(gw, device), sealed_for(device, 1))
        assert status == 503 and problem["code"] == "landing-unavailable", problem


@pytest.mark.integration
def test_dbt_past_its_time_limit_is_stopped_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from lakehouse import Settings
    from lakehouse.errors import TransformError
    from lakehouse.transform import _dbt

    started: list[subprocess.Popen[bytes]] = []

    class Recorded(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(_dbt.subprocess, "Popen", Recorded)
    monkeypatch.setattr(
        _dbt, "dbt_command", lambda _settings, args: [sys.executable, "-c", "import time; time.sleep(3600)"]
    )
    settings = Settings(home=tmp_path / "home", dbt={"timeout": 0.5})
    with pytest.raises(
        TransformError, match=r"dbt build ran past its time limit of 0.5 s .*LAKEHOUSE_DBT__TIMEOUT"
    ):
        _dbt.run_dbt(settings, ["build"])
    (dbt,) = started
    assert dbt.returncode == -signal.SIGTERM  # stopped and reaped, not left running


@pytest.mark.unit
def test_demo_edge_commands_are_bounded_and_fail_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from lakehouse.errors import LakehouseError
    from lakehouse.reference import _demo

    monkeypatch.setattr(_demo, "EDGE_COMMAND_TIMEOUT_S", 0.5)
    hangs = [sys.executable, "-c", "import time; time.sleep(3600)"]
    with pytest.raises(LakehouseError, match=r"^`lakehouse-edge status` did not finish within 0.5 s"):
        _demo._edge_command(hangs, ["status"], dict(os.environ))
    fails = [sys.executable, "-c", "import sys; sys.exit('gateway refused the token')"]
    with pytest.raises(
        LakehouseError, match=r"^`lakehouse-edge enroll` failed \(exit 1\): gateway refused the token$"
    ):
        _demo._edge_command(fails, ["enroll"], dict(os.environ))


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process in its own group that the platform did not start (as a reused PID would be)."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # ours, by its handle
        proc.wait()


@pytest.mark.integration
@pytest.mark.parametrize(
    "record",
    [
        {"started": "another-boot:12345"},  # the pid was recorded for a process that has ended
        {},  # a record without a start time proves nothing
    ],
)
def test_stop_never_signals_a_pid_that_now_belongs_to_another_process(
    tmp_path: Path, unrelated_process: subprocess.Popen[bytes], record: dict[str, str]
) -> None:
    from lakehouse.config import recorded_alive
    from lakehouse.local import stop_recorded

    state_file = tmp_path / "broker.json"
    state = {"pid": unrelated_process.pid, **record}
    state_file.write_text(json.dumps(state))
    assert not recorded_alive(state)
    assert stop_recorded(state_file, grace=0.5) is False
    assert unrelated_process.poll() is None  # still running: not signalled
    assert not state_file.exists()  # the stale record is forgotten


@pytest.mark.integration
def test_stop_signals_the_process_it_recorded(
    tmp_path: Path, unrelated_process: subprocess.Popen[bytes]
) -> None:
    from lakehouse.config import process_identity, recorded_alive
    from lakehouse.local import stop_recorded

    state_file = tmp_path / "broker.json"
    state = {"pid": unrelated_process.pid, "started": process_identity(unrelated_process.pid)}
    state_file.write_text(json.dumps(state))
    assert recorded_alive(state)
    assert stop_recorded(state_file, grace=30) is True
    assert unrelated_process.poll() is not None  # stopped (and reaped by the stop's liveness check)
