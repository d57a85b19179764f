"""The user's side of a governed session: a separate process that runs the user's SQL.

Why a process: the user's SQL must be bounded in time whatever it does, and DuckDB cannot be
interrupted everywhere (its optimizer is exponential in the nesting of some queries and checks
no interrupt while it plans). A process can always be killed. It also holds nothing to steal:
it never sees the keystore, the catalog or the object store's credentials, its environment is
empty, and its DuckDB has no file access, no extensions and locked settings.

The platform (``GovernedEngine``) talks to it over a socket pair: one JSON line per request,
followed, for ``load``, by an Arrow IPC stream of governed rows; one JSON line per answer,
followed, for a query's rows, by an Arrow IPC stream. Only ``query`` carries the user's text;
``load`` and ``exec`` carry what the platform wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

from lakehouse.errors import QueryError, QueryLimitExceeded, SessionFailed

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SessionConfig:
    threads: int
    memory_limit: str
    max_result_rows: int
    max_result_bytes: int


# --- the parent's handle --------------------------------------------------------------------


class SessionProcess:
    """The user's session process, started on first use and again after it was killed."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._rfile: BinaryIO | None = None
        self._wfile: BinaryIO | None = None
        self.generation = 0  # bumps on every (re)start: copies held by an older one are gone
        self._opening = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse.query._session", str(child.fileno())],
            pass_fds=[child.fileno()],
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},  # nothing of ours: no secrets, no settings
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        child.close()
        self._sock = parent
        self._rfile = parent.makefile("rb")
        self._wfile = parent.makefile("wb")
        self.generation += 1
        self._send({"op": "open", **self.config.__dict__})
        self._opening = True  # its answer is read by the first request: start-up overlaps our work

    def prestart(self) -> None:
        """Start the process now, without waiting for it (the platform prepares meanwhile)."""
        if not self.running:
            self._start()

    def _send(self, header: dict[str, Any], body: pa.RecordBatchReader | None = None) -> None:
        assert self._wfile is not None
        self._wfile.write(json.dumps(header).encode() + b"\n")
        if body is not None:
            with pa.ipc.new_stream(self._wfile, body.schema) as writer:
                for batch in body:
                    writer.write_batch(batch)
        self._wfile.flush()

    def _answer(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None and self._rfile is not None
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        line = self._rfile.readline()
        if not line:
            raise OSError("the session process ended")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise SessionFailed(str(answer.get("kind", "Error")), str(answer.get("message", "failed")))
        return answer

    def request(
        self, header: dict[str, Any], *, deadline: float, body: pa.RecordBatchReader | None = None
    ) -> tuple[dict[str, Any], pa.Table | None]:
        """Send one request and wait for its answer until ``deadline`` (monotonic seconds);
        past it, the process is killed and ``QueryLimitExceeded`` raised."""
        if not self.running:
            self._start()
        try:
            if self._opening:
                self._answer(max(deadline, time.monotonic() + START_TIMEOUT_S))
                self._opening = False
            assert self._sock is not None
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            self._send(header, body)
            answer = self._answer(deadline)
            rows = pa.ipc.open_stream(self._rfile).read_all() if answer.get("rows") else None
            return answer, rows
        except (TimeoutError, OSError, pa.ArrowInvalid) as exc:
            timed_out = isinstance(exc, TimeoutError) or time.monotonic() >= deadline
            self.kill()
            if timed_out:
                raise QueryLimitExceeded("the session ran past its deadline and was stopped") from exc
            raise QueryError(f"the session process failed: {exc}") from exc

    def kill(self) -> None:
        for handle in (self._rfile, self._wfile, self._sock):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        self._rfile = self._wfile = None
        self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                os.kill(self._proc.pid, signal.SIGKILL)  # our own child, by its pid
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self.kill()


# --- the session process ----------------------------------------------------------------------


def _connect(config: dict[str, Any]) -> Any:
    import duckdb

    return duckdb.connect(
        config={
            # no files, no extensions, no Python objects found by name, nothing to change
            "enable_external_access": False,
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "threads": int(config["threads"]),
            "memory_limit": str(config["memory_limit"]),
            "temp_directory": "",  # nothing spills to disk: memory_limit bounds the session
            "lock_configuration": True,
        }
    )


def _query(conn: Any, request: dict[str, Any], limits: dict[str, Any]) -> pa.Table:
    conn.execute(f"use memory.{request['schema']}")  # a name the platform bound (quoted by it)
    reader = conn.execute(request["sql"]).to_arrow_reader(122_880)
    batches, rows, size = [], 0, 0
    for batch in reader:
        rows, size = rows + batch.num_rows, size + batch.nbytes
        if rows > limits["max_result_rows"]:
            raise QueryLimitExceeded(
                f"the result has more than {limits['max_result_rows']:,} rows "
                "(engine.max_result_rows): aggregate, filter or add a LIMIT"
            )
        if size > limits["max_result_bytes"]:
            raise QueryLimitExceeded(
                f"the result is larger than {limits['max_result_bytes']:,} bytes "
                "(engine.max_result_bytes): select fewer columns or add a LIMIT"
            )
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _serve(sock: socket.socket) -> None:
    import duckdb

    rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
    conn: Any = None
    limits: dict[str, Any] = {}

    def reply(answer: dict[str, Any], rows: pa.Table | None = None) -> None:
        wfile.write(json.dumps({"ok": True, **answer, "rows": rows is not None}).encode() + b"\n")
        if rows is not None:
            with pa.ipc.new_stream(wfile, rows.schema) as writer:
                writer.write_table(rows)
        wfile.flush()

    while True:
        line = rfile.readline()
        if not line:
            return  # the platform closed its end: nothing more to do
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "open":
                conn, limits = _connect(request), request
                reply({})
            elif op == "load":  # governed rows the platform computed, into a table of the session
                incoming = pa.ipc.open_stream(rfile)
                conn.register("__incoming", incoming)
                try:
                    conn.execute(f"create or replace table {request['name']} as select * from __incoming")
                finally:
                    conn.unregister("__incoming")
                    for _ in incoming:  # a load that failed midway still reads its stream to the end
                        pass
                reply({})
            elif op == "exec":  # the platform's own statements: views, drops
                for statement in request["statements"]:
                    conn.execute(statement)
                reply({})
            elif op == "query":  # the user's SQL
                reply({}, _query(conn, request, limits))
            else:
                raise ValueError(f"unknown request {op!r}")
        except (duckdb.Error, QueryLimitExceeded, ValueError, pa.ArrowException) as exc:
            kind = type(exc).__name__
            message = str(exc).splitlines()[0] if str(exc) else kind
            wfile.write(json.dumps({"ok": False, "kind": kind, "message": message}).encode() + b"\n")
            wfile.flush()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        _serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
