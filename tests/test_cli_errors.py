"""Errors without tracebacks, no silent loss (issue 11): every mistake a user can make on the
command line of `lakehouse` or `lakehouse-edge` ends in a line (or argparse's and click's short
usage block) that names what was wrong and what to do, exit 2 for usage errors and 1 for the
rest; the traceback only when asked for. `gdpr forget` refuses an id that nothing holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

import lakehouse.cli
from lakehouse import Lakehouse, Settings
from lakehouse.cli import _governance, _main
from lakehouse_edge import cli as edge_cli

from .conftest import REPO, run_cli

EDGE_BIN = str(Path(sys.executable).parent / "lakehouse-edge")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


# --- every command of `lakehouse`, found by walking the typer app ----------------------------


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(lakehouse.cli.app), ()))


def _is_group(path: tuple[str, ...]) -> bool:
    return hasattr(COMMANDS[path], "commands")


def _passes_options_on(path: tuple[str, ...]) -> bool:
    """A command that hands unknown options to the tool it runs (`lakehouse dbt`)."""
    return bool((COMMANDS[path].context_settings or {}).get("ignore_unknown_options"))


# Commands that start a server, a stream or long work when run with no arguments: only their
# option parsing is exercised in-process. A new command named start/serve/run is one of them.
STARTS_WORK = {("generate",), ("demo",), ("dbt",), ("build",)}


def _starts_work(path: tuple[str, ...]) -> bool:
    return path in STARTS_WORK or path[-1:] in (("start",), ("serve",), ("run",))


def _name(path: tuple[str, ...]) -> str:
    return " ".join(("lakehouse", *path))


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """Run `lakehouse ARGS` in this process (its entry point, as the executable would), with the
    repository's project, a fresh home and a scratch working directory; restores what the entry
    point sets for the process (umask, logging)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAKEHOUSE_PROJECT_DIR", str(REPO))
    # `stack install` with no argument fetches every server artifact (1.6 GB): here it meets a
    # registry that refuses at once and a scratch cache, never the user's
    monkeypatch.setenv("LAKEHOUSE_ARTIFACT_CACHE", str(tmp_path / "artifact-cache"))
    monkeypatch.setenv("LAKEHOUSE_ARTIFACT_REPOSITORY", "http://127.0.0.1:9/")
    root = logging.getLogger()

    def run(*args: str, stdin: str = "") -> Result:
        monkeypatch.setattr(sys, "argv", ["lakehouse", *args])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # as `< /dev/null`
        umask = os.umask(0o077)
        os.umask(umask)
        handlers, level = list(root.handlers), root.level
        formatters = [h.formatter for h in handlers]
        code = 0
        try:
            _main.main()
        except SystemExit as exc:
            code = _exit_code(exc)
        finally:
            os.umask(umask)
            root.handlers[:] = handlers
            root.setLevel(level)
            for handler, formatter in zip(handlers, formatters, strict=True):
                handler.setFormatter(formatter)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_reported(result: Result, *, code: int | None = None) -> None:
    """No traceback; exit 2 with click's short usage block, or exit 1 with exactly one line
    `error: ...` as the last thing on stderr (log lines may come before it), and never the
    catch-all for an exception nobody translated."""
    assert "Traceback" not in result.text, result.text
    assert "This is unexpected" not in result.err, result.err
    if code is not None:
        assert result.code == code, result
    assert result.code in (0, 1, 2), result
    lines = result.err.strip().splitlines()
    if result.code == 2:
        assert "Usage:" in result.text and len(lines) <= 6, result.err
    elif result.code == 1:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], result.err


@pytest.mark.unit
@pytest.mark.parametrize("path", [p for p in COMMANDS if not _passes_options_on(p)], ids=_name)
def test_an_unknown_option_is_a_usage_error(cli: Callable[..., Result], path: tuple[str, ...]) -> None:
    result = cli(*path, "--no-such-option")
    assert_reported(result, code=2)
    assert "No such option: --no-such-option" in result.err
    assert f"Try '{_name(path)} --help' for help." in result.err


@pytest.mark.unit
@pytest.mark.timeout(120)  # a new command that serves forever with no arguments belongs in STARTS_WORK
@pytest.mark.parametrize("path", [p for p in COMMANDS if not _starts_work(p)], ids=_name)
def test_no_arguments_is_usage_or_a_clean_run(cli: Callable[..., Result], path: tuple[str, ...]) -> None:
    result = cli(*path)
    assert_reported(result)
    if _is_group(path):  # a group shows its commands
        assert result.code in (0, 2) and "Commands" in result.text
    elif any(p.required for p in COMMANDS[path].params):
        assert result.code == 2 and "Missing" in result.err
    # else it ran (0), failed in a line (1), or refused empty input (2), as assert_reported checks


@pytest.mark.unit
def test_the_lists_of_special_commands_name_real_commands() -> None:
    assert set(COMMANDS) >= STARTS_WORK
    # covered as a subprocess (dbt) and below (build)
    assert {p for p in COMMANDS if _passes_options_on(p)} == {("dbt",), ("build",)}
    assert len(COMMANDS) > 30  # the walk found the sub-commands, not only the groups


@pytest.mark.unit
def test_build_without_nessie_says_what_write_audit_publish_needs(cli: Callable[..., Result]) -> None:
    result = cli("build", "--select", "stg_regions")
    assert_reported(result, code=1)
    assert "write-audit-publish builds on a Nessie branch" in result.err
    assert "lakehouse stack start" in result.err


# --- mistakes at run time ----------------------------------------------------------------------


@pytest.mark.unit
def test_an_unknown_table_is_named_with_what_it_may_have_meant(cli: Callable[..., Result]) -> None:
    result = cli("policy", "explain", "--as", "sam", "nope.nope")
    assert_reported(result, code=1)
    assert "no table nope.nope" in result.err and "LAYER.TABLE, e.g. bronze." in result.err
    typo = cli("policy", "explain", "--as", "sam", "BRONZE.CUSTOMER")
    assert_reported(typo, code=1)
    assert "did you mean bronze.customers?" in typo.err


@pytest.mark.unit
def test_an_existing_export_file_is_never_overwritten(cli: Callable[..., Result], tmp_path: Path) -> None:
    existing = tmp_path / "sam.duckdb"
    existing.write_bytes(b"keep me")
    result = cli("policy", "export-duckdb", "--as", "sam", "--out", str(existing))
    assert_reported(result, code=2)
    assert f"Invalid value for '--out': {existing} exists; remove it or choose another file" in result.err
    assert existing.read_bytes() == b"keep me"
    missing_dir = cli("policy", "export-duckdb", "--as", "sam", "--out", str(tmp_path / "no" / "x.duckdb"))
    assert_reported(missing_dir, code=2)
    assert "does not exist" in missing_dir.err


@pytest.mark.unit
@pytest.mark.parametrize(
    "args",
    [
        ("policy", "explain", "--as", "nobody", "bronze.customers"),
        ("policy", "export-duckdb", "--as", "nobody", "--out", "nobody.duckdb"),
        ("sql", "--as", "nobody", "select 1"),
    ],
    ids=["explain", "export-duckdb", "sql"],
)
def test_an_unknown_user_is_named_with_the_users_there_are(
    cli: Callable[..., Result], args: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert_reported(result, code=1)
    assert "unknown user 'nobody'" in result.err and "'sam'" in result.err
    assert not Path("nobody.duckdb").exists()


@pytest.mark.unit
def test_an_unwritable_output_directory_is_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("policy", "compile", "--out", str(blocker / "policy"))
    assert_reported(result, code=1)
    assert f"cannot write the compiled policy to {blocker / 'policy'}" in result.err
    assert "choose another --out" in result.err


@pytest.mark.unit
def test_rotating_no_gateway_key_is_refused_not_a_silent_success(cli: Callable[..., Result]) -> None:
    result = cli("gateway", "rotate-keys", "--no-signing")
    assert_reported(result, code=2)
    assert "nothing to rotate" in result.err


@pytest.mark.unit
def test_error_text_from_the_user_is_shown_as_typed(cli: Callable[..., Result]) -> None:
    result = cli("policy", "explain", "--as", "sam", "[/x]")  # a closing tag nobody opened
    assert_reported(result, code=1)
    assert "no table [/x]" in result.err


# --- the executable ----------------------------------------------------------------------------


@pytest.mark.integration
def test_the_executable_reports_usage_and_runtime_errors_in_a_line(tmp_path: Path) -> None:
    env = {"LAKEHOUSE_PROJECT_DIR": str(REPO)}
    home = tmp_path / "home"
    usage = run_cli("gdpr", "forget", "--no-such-option", home=home, env=env)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "No such option: --no-such-option" in usage.stderr
    assert run_cli(home=home, env=env).returncode == 2  # bare: the help, as a usage error

    table = run_cli("policy", "explain", "--as", "sam", "nope.nope", home=home, env=env)
    assert table.returncode == 1 and table.stdout == ""
    assert table.stderr.strip().splitlines() == [
        "error: no table nope.nope in the project's contracts or dbt models: "
        "name it LAYER.TABLE, e.g. bronze.customers"
    ]
    user = run_cli("policy", "explain", "--as", "nobody", "bronze.customers", home=home, env=env)
    assert user.returncode == 1 and len(user.stderr.strip().splitlines()) == 1
    assert "unknown user 'nobody'" in user.stderr

    debug = run_cli("--debug", "policy", "explain", "--as", "sam", "nope.nope", home=home, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "NoSuchTableError" in debug.stderr
    by_env = run_cli(
        "policy", "explain", "--as", "sam", "nope.nope", home=home, env={**env, "LAKEHOUSE_DEBUG": "1"}
    )
    assert "Traceback" in by_env.stderr


@pytest.mark.integration
@pytest.mark.dbt
def test_options_dbt_does_not_know_are_dbts_usage_errors(tmp_path: Path) -> None:
    result = run_cli(
        "dbt", "--no-such-option", home=tmp_path / "home", env={"LAKEHOUSE_PROJECT_DIR": str(REPO)}
    )
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "No such option" in result.stderr


# --- gdpr forget: refuse what nothing holds, report what was done -------------------------------


def _customer(customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "full_name": "Ava Quinn",
        "email": f"{customer_id.lower()}@example.com",
        "phone": "+1 512 555 0100",
        "birth_date": "1980-02-29",
        "street": "1 Garden Lane",
        "city": "Zanzibar City",
        "postal_code": "70001",
        "home_store_id": "S001",
        "updated_at": "2026-03-02T10:00:00",
    }


CUSTOMERS = ("C000001", "C000002", "C000003")


@pytest.fixture
def customers(home: Path, tmp_path: Path) -> Path:
    """A home whose bronze.customers holds three customers (their personal data encrypted)."""
    source = tmp_path / "customers.jsonl"
    source.write_text("".join(json.dumps(_customer(c)) + "\n" for c in CUSTOMERS))
    with Lakehouse(Settings(home=home)) as lh:
        lh.load("bronze.customers", [source])
        assert lh.keystore.subjects() == set(CUSTOMERS)
    return home


def _state(home: Path) -> tuple[set[str], int]:
    with Lakehouse(Settings(home=home)) as lh:
        return lh.keystore.subjects(), lh.table("bronze.customers").scan().to_arrow().num_rows


@pytest.mark.unit
def test_forget_refuses_an_id_nothing_holds_and_names_the_one_meant(
    cli: Callable[..., Result], customers: Path
) -> None:
    result = cli("gdpr", "forget", "c000002")
    assert_reported(result, code=1)
    assert "no data subject 'c000002' (did you mean 'C000002'?)" in result.err
    assert "nothing was erased" in result.err and "--force" in result.err
    assert _state(customers) == (set(CUSTOMERS), 3)  # no key destroyed, no row deleted
    with Lakehouse(Settings(home=customers)) as lh:
        assert not lh.keystore.forgotten("c000002")  # and the typo is not blocked forever

    far = cli("gdpr", "forget", "X-42")
    assert_reported(far, code=1)
    assert "no data subject 'X-42':" in far.err and "did you mean" not in far.err

    for invalid in ("", "C1:email"):
        refused = cli("gdpr", "forget", invalid)
        assert_reported(refused, code=1)
        assert "nothing was erased" in refused.err


@pytest.mark.unit
def test_forget_with_force_blocks_an_id_before_its_data_arrives(
    cli: Callable[..., Result], customers: Path
) -> None:
    result = cli("gdpr", "forget", "C000009", "--force", "-o", "json")
    assert_reported(result, code=0)
    report = json.loads(result.out)
    assert report["erased"] and not report["key_destroyed"]
    assert [t["rows_deleted"] for t in report["tables"]] == [0]
    with Lakehouse(Settings(home=customers)) as lh:
        assert lh.keystore.forgotten("C000009")
    assert _state(customers) == (set(CUSTOMERS), 3)


@pytest.mark.unit
def test_forget_and_rotate_say_what_they_did(
    cli: Callable[..., Result], customers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("gdpr", "forget", "C000002")
    assert_reported(result, code=0)
    assert (
        "data key destroyed; 1 row(s) deleted from 1 table(s); 7 personal value(s) checked in "
        "2 snapshot(s): 0 readable, 0 row(s) left"
    ) in result.out
    assert "erased: no personal value of C000002" in result.out
    assert result.err == ""  # not a terminal: no progress bar
    assert _state(customers) == ({"C000001", "C000003"}, 2)
    again = cli("gdpr", "forget", "C000002", "-o", "json")  # known (forgotten): verified again
    assert_reported(again, code=0)
    assert json.loads(again.out)["erased"]

    rotated = cli("keys", "rotate")
    assert_reported(rotated, code=0)
    assert "2 data key(s) re-wrapped, no data file rewritten" in rotated.out

    terminal = io.StringIO()  # on a terminal, both show how far they got on stderr
    monkeypatch.setattr(_governance, "err", Console(file=terminal, force_terminal=True, width=100))
    assert cli("gdpr", "forget", "C000003").code == 0
    assert "checked" in terminal.getvalue()
    assert cli("keys", "rotate").code == 0
    assert "re-wrapping data keys" in terminal.getvalue()


# --- lakehouse-edge ------------------------------------------------------------------------------


@pytest.fixture
def edge(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `lakehouse-edge ARGS` in this process."""
    monkeypatch.delenv(edge_cli.DEBUG_ENV, raising=False)
    monkeypatch.delenv(edge_cli.TOKEN_ENV, raising=False)

    def run(*args: str) -> Result:
        try:
            code = edge_cli.main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = _exit_code(exc)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_edge_error(result: Result, *, code: int, says: str) -> None:
    """Exit ``code``; stderr is one line `lakehouse-edge: error: ...` (for usage errors, after
    argparse's usage); no traceback."""
    assert "Traceback" not in result.text, result.err
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert lines and lines[-1].startswith("lakehouse-edge") and ": error: " in lines[-1], result.err
    if code == 1:
        assert len(lines) == 1, result.err
    assert says in lines[-1], lines[-1]


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("lhe_not-a-real-token\n")
    return path


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An https URL on a loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"


EDGE_COMMANDS = {
    "enroll": ("--gateway", "https://127.0.0.1:1"),
    "run": (),
    "status": (),
}  # and what they require


@pytest.mark.unit
@pytest.mark.parametrize("command", EDGE_COMMANDS)
def test_edge_usage_errors_exit_2(edge: Callable[..., Result], command: str, tmp_path: Path) -> None:
    assert_edge_error(
        edge("--state-dir", str(tmp_path), command, *EDGE_COMMANDS[command], "--no-such-option"),
        code=2,
        says="unrecognized arguments: --no-such-option",
    )


@pytest.mark.unit
def test_edge_commands_know_their_bad_values_and_missing_arguments(
    edge: Callable[..., Result], tmp_path: Path
) -> None:
    state = str(tmp_path / "state")
    assert set(EDGE_COMMANDS) == set(edge_cli._parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert_edge_error(edge(), code=2, says="the following arguments are required: command")
    assert_edge_error(edge("--state-dir", state, "enroll"), code=2, says="required: --gateway")
    assert_edge_error(edge("--log-level", "LOUD", "status"), code=2, says="--log-level: invalid choice")
    assert_edge_error(edge("--state-dir", state, "run", "--source", "kafka"), code=2, says="--source")
    assert_edge_error(edge("--state-dir", state, "run", "--units", "D1:oven"), code=2, says="fridge|freezer")
    assert_edge_error(edge("--state-dir", state, "run", "--start", "monday"), code=2, says="ISO 8601")
    bare = edge("--state-dir", state, "run")  # runs, but nothing is enrolled there
    assert_edge_error(
        bare, code=1, says=f"{state} holds no enrolled device: run `lakehouse-edge enroll` first"
    )
    status = edge("--state-dir", state, "status")
    assert status.code == 0 and json.loads(status.out)["identity"] is None


@pytest.mark.unit
def test_enroll_refuses_http(edge: Callable[..., Result], tmp_path: Path, token_file: Path) -> None:
    result = edge(
        "--state-dir",
        str(tmp_path / "s"),
        "enroll",
        "--gateway",
        "http://127.0.0.1:8443",
        "--token-file",
        str(token_file),
    )
    assert_edge_error(result, code=2, says="must be https://HOST[:PORT], not 'http://127.0.0.1:8443'")
    assert not (tmp_path / "s").exists()


@pytest.mark.unit
def test_enroll_says_when_nothing_listens(
    edge: Callable[..., Result], tmp_path: Path, token_file: Path, refused_url: str
) -> None:
    state = tmp_path / "s"
    result = edge(
        "--state-dir", str(state), "enroll", "--gateway", refused_url, "--token-file", str(token_file)
    )
    assert_edge_error(result, code=1, says=f"cannot reach the gateway at {refused_url}: connection refused")
    assert "check --gateway's host and port" in result.err
    assert not (state / "device.json").exists()


@pytest.mark.unit
def test_enroll_says_which_token_file_it_cannot_read(
    edge: Callable[..., Result], tmp_path: Path, refused_url: str
) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, why in (
        (tmp_path / "missing", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (binary, "it is not text"),
        (empty, "is empty"),
    ):
        result = edge(
            "--state-dir", str(tmp_path / "s"), "enroll", "--gateway", refused_url, "--token-file", str(path)
        )
        assert_edge_error(result, code=1, says=str(path))
        assert why in result.err and "--token-file FILE" in result.err


@pytest.mark.unit
def test_edge_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
    edge: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the queue broke\nacross two lines")

    monkeypatch.setattr(edge_cli, "UploadQueue", broken)
    result = edge("--state-dir", str(tmp_path), "status")
    assert_edge_error(
        result, code=1, says="RuntimeError: the queue broke across two lines (at test_cli_errors.py:"
    )
    assert "rerun with --debug (or LAKEHOUSE_EDGE_DEBUG=1)" in result.err
    debug = edge("--debug", "--state-dir", str(tmp_path), "status")
    assert debug.code == 1 and "Traceback" in debug.err
    monkeypatch.setenv(edge_cli.DEBUG_ENV, "1")
    assert "Traceback" in edge("--state-dir", str(tmp_path), "status").err


# a TLS server on loopback whose certificate nobody vouches for


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.fixture
def untrusted_gateway(tmp_path: Path) -> Iterator[str]:
    """https://127.0.0.1:PORT served with a self-signed certificate, until the test ends."""
    cert, key = _self_signed(tmp_path, "impostor")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(ssl.SSLError, OSError):  # the client refuses our certificate
                    context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.integration
def test_enroll_refuses_a_certificate_it_cannot_trust(
    edge: Callable[..., Result], tmp_path: Path, token_file: Path, untrusted_gateway: str
) -> None:
    state = tmp_path / "s"
    args = (
        "--state-dir",
        str(state),
        "enroll",
        "--gateway",
        untrusted_gateway,
        "--token-file",
        str(token_file),
    )
    system = edge(*args)  # no --ca-file: the system's CAs
    assert_edge_error(
        system,
        code=1,
        says=f"the gateway at {untrusted_gateway} presented a certificate not signed by any of the system's CAs",
    )
    assert "enroll with --ca-file" in system.err
    other_ca, _ = _self_signed(tmp_path, "platform")
    wrong = edge(*args, "--ca-file", str(other_ca))
    assert_edge_error(wrong, code=1, says=f"not signed by the CA file {other_ca}")
    not_pem = edge(*args, "--ca-file", str(token_file))
    assert_edge_error(not_pem, code=1, says=f"cannot use the CA file {token_file}: no PEM certificate in it")
    assert not (state / "device.json").exists() and not (state / "device.key").exists()


@pytest.mark.integration
def test_the_edge_executable_reports_in_one_line(tmp_path: Path, token_file: Path, refused_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_EDGE")}
    command = [EDGE_BIN, "--state-dir", str(tmp_path / "s"), "enroll", "--gateway", refused_url]
    result = subprocess.run(
        [*command, "--token-file", str(token_file)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"lakehouse-edge: error: enrollment failed, cannot reach the gateway at {refused_url}"
    )
    debug = subprocess.run(
        [*command, "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        env={**env, "LAKEHOUSE_EDGE_DEBUG": "1"},
        timeout=60,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConnectionRefusedError" in debug.stderr
    usage = subprocess.run([*command[:3], "enroll"], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
