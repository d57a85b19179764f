"""The ``lakehouse`` executable's first module: light on purpose.

``lakehouse sql QUERY`` as the operator on the local profile is answered by a warm query server
(``_query_server``) over a Unix socket in the home's ``state/``: this module imports only the
standard library, so such a query costs about what starting Python and DuckDB costs, not the
2-3 s of importing pyiceberg, pydantic and typer and binding the catalog. Everything else, and
any query the server cannot take, goes to the full command (``_main``). The server is started
in the background the first time, and that first query runs in this process.

A server answers only a client whose configuration (every ``LAKEHOUSE_*`` variable, the user,
the interpreter and the platform's code) matches its own; otherwise it exits and the query runs
here, so a query never runs under settings other than the caller's.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
from pathlib import Path

SOCKET_NAME = "query.sock"
SERVER_ENV = "LAKEHOUSE_ENGINE__QUERY_SERVER"
_OFF = {"0", "false", "no", "off"}
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
_FRAME = struct.Struct("!cQ")  # tag (o: stdout, e: stderr, x: exit code, s: stale), length


def main() -> None:
    request = fast_request(sys.argv[1:])
    if request is not None:
        code = _ask_server(*request)
        if code is not None:
            sys.exit(code)
    from ._main import main as full_main

    full_main()


def fingerprint() -> str:
    """What a server's answers depend on besides the request: the environment's settings, the
    user, the interpreter, and the platform's code and installed packages (by file times)."""
    package = Path(__file__).resolve().parents[1]
    code = sorted(
        (str(p.relative_to(package)), st.st_mtime_ns, st.st_size)
        for p in package.rglob("*.py")
        for st in [p.stat()]
    )
    site = [os.stat(p).st_mtime_ns for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    env = sorted(
        (k, v) for k, v in os.environ.items() if k.startswith("LAKEHOUSE_") and k != "LAKEHOUSE_DEBUG"
    )
    blob = json.dumps([env, os.getuid(), sys.executable, code, site])
    return hashlib.sha256(blob.encode()).hexdigest()


def home() -> Path:
    return Path(os.environ.get("LAKEHOUSE_HOME", ".lakehouse")).expanduser().absolute()


def socket_path() -> Path | None:
    """Where this environment's query server listens; None where there is none to use."""
    if os.environ.get(SERVER_ENV, "").strip().lower() in _OFF:
        return None
    if os.environ.get("LAKEHOUSE_PROFILE", "local") != "local":
        return None  # stack and cluster endpoints can change under a long-lived server
    secrets = Path(os.environ.get("LAKEHOUSE_SECRETS_DIR", "/var/run/secrets/lakehouse"))
    if secrets.exists():
        return None  # settings from mounted files: let the full settings loader read them
    path = home() / "state" / SOCKET_NAME
    return path if len(os.fsencode(path)) <= _MAX_SOCKET_PATH else None


def fast_request(args: list[str]) -> tuple[Path, dict[str, object]] | None:
    """``lakehouse sql`` arguments the server can answer, as a request; None otherwise (the
    shell, ``--as``, ``--help``, anything unusual: the full command handles those)."""
    if not args or args[0] != "sql":
        return None
    path = socket_path()
    if path is None:
        return None
    options: dict[str, str] = {}
    query: str | None = None
    rest = args[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in _OPTIONS and i + 1 < len(rest):
            options[_OPTIONS[arg]] = rest[i + 1]
            i += 2
        elif (arg == "-" or not arg.startswith("-")) and query is None:
            query = arg
            i += 1
        else:
            return None  # --as, --help, a second query...: the full command
    if "file" in options:
        if query is not None:
            return None
        try:
            query = Path(options.pop("file")).read_text()
        except OSError:
            return None  # the full command says what is wrong with the file
    elif query == "-":
        query = sys.stdin.read()
    if query is None or not query.strip():
        return None
    if options.get("output", "table") not in ("table", "csv", "tsv", "json", "jsonl", "markdown"):
        return None
    try:
        max_rows = int(options.get("max-rows", "1000"))
    except ValueError:
        return None
    if max_rows < 0:
        return None
    width = os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None
    request: dict[str, object] = {
        "fingerprint": fingerprint(),
        "cwd": os.getcwd(),
        "query": query,
        "schema": options.get("schema"),
        "output": options.get("output", "table"),
        "max_rows": max_rows,
        "width": width,
    }
    # should the server not answer, the full command runs the same query (stdin is read already)
    sys.argv = [sys.argv[0], "sql", query, *(a for k, v in options.items() for a in (f"--{k}", v))]
    return path, request


_OPTIONS = {
    "-o": "output",
    "--output": "output",
    "--schema": "schema",
    "--max-rows": "max-rows",
    "-f": "file",
    "--file": "file",
}


def _ask_server(path: Path, request: dict[str, object]) -> int | None:
    """Send the request; the exit code once the answer is written, or None when no server
    (or no matching one) answered and the full command must run the query here."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except OSError:
        client.close()
        start_server(path)
        return None
    with client:
        body = json.dumps(request).encode()
        client.sendall(struct.pack("!Q", len(body)) + body)
        reader = client.makefile("rb")
        answered = False
        try:
            while True:
                head = reader.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    return 1 if answered else None  # the server died mid-answer, or before it
                tag, length = _FRAME.unpack(head)
                payload = reader.read(length)
                if tag == b"s":
                    start_server(path)
                    return None
                if tag == b"x":
                    sys.stdout.flush()
                    return int(payload)
                answered = True
                stream = sys.stdout if tag == b"o" else sys.stderr
                stream.buffer.write(payload)
                stream.flush()
        except BrokenPipeError:  # `lakehouse sql ... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:  # closing the socket interrupts the server's query
            return 130


def start_server(path: Path) -> None:
    """Start the query server in the background for the next query (it stops when idle)."""
    import subprocess

    state = path.parent
    if not state.is_dir():
        return  # a home the platform has not made yet (privately): the query run here makes it
    try:
        log = os.open(state / "query-server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    try:
        subprocess.Popen(
            [sys.executable, "-m", "lakehouse.cli._query_server", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log)
