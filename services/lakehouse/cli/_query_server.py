"""The warm query server behind ``lakehouse sql QUERY`` (see ``_entry``).

One process per home, started by the first query and gone after
``engine.query_server_idle_seconds`` without one. It listens on a Unix socket in the home's
private ``state/`` (0600 in a 0700 directory) and answers only its own user (checked with
``SO_PEERCRED``, not only by the file's mode). It keeps one operator ``Lakehouse`` open, so a
query pays neither the imports nor the catalog: tables are bound when a query names them and
re-bound when a commit moved them. Every query is journalled before it answers, as in-process,
and the journal is committed to ``audit.query_log`` once the server is idle for a moment and
when it exits.

Queries run one at a time, in the client's working directory; a client that goes away (Ctrl-C)
interrupts its query.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lakehouse._api import Lakehouse
from lakehouse.config import PRIVATE_UMASK, MaskingFormatter, Settings, mask_secrets
from lakehouse.errors import LakehouseError

from ._entry import _FRAME, fingerprint
from ._format import Format, escape, render

logger = logging.getLogger("lakehouse.query_server")

MAX_REQUEST_BYTES = 64 * 1024 * 1024
FLUSH_AFTER_IDLE_S = 2.0


class QueryServer:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.fingerprint = fingerprint()
        self.lh = Lakehouse(settings)
        self.stopping = False
        self._listener: socket.socket | None = None
        self._inode: int | None = None

    def serve(self) -> None:
        idle_limit = self.settings.engine.query_server_idle_seconds
        listener = self._listen()
        last = time.monotonic()
        flushed = True
        try:
            while not self.stopping:
                ready, _, _ = select.select([listener], [], [], 1.0)
                if not ready:
                    idle = time.monotonic() - last
                    if not flushed and idle >= FLUSH_AFTER_IDLE_S:
                        self._flush()
                        flushed = True
                    if idle >= idle_limit or not self._still_ours():
                        break
                    continue
                conn, _ = listener.accept()
                with conn:
                    self._handle(conn)
                last, flushed = time.monotonic(), False
        finally:
            self._close()

    def _listen(self) -> socket.socket:
        if self.path.exists():
            self.path.unlink()  # a dead server's socket: the lock says none is alive
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(16)
        self._listener = listener
        self._inode = self.path.stat().st_ino
        logger.info("query server %d listening on %s", os.getpid(), self.path)
        return listener

    def _still_ours(self) -> bool:
        """False once the socket file is gone or replaced (the home was removed or reset)."""
        try:
            return self.path.stat().st_ino == self._inode
        except OSError:
            return False

    def _handle(self, conn: socket.socket) -> None:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid != os.getuid():
            logger.warning("refused a client of uid %d", uid)
            return
        request = _read_request(conn)
        if request is None:
            return
        if request.get("fingerprint") != self.fingerprint:
            # another configuration or newer code: the client runs the query itself and starts
            # a server of its own; this one makes way
            _send(conn, b"s", b"")
            self.stopping = True
            return
        done = threading.Event()
        watcher = threading.Thread(target=self._interrupt_when_gone, args=(conn, done), daemon=True)
        watcher.start()
        try:
            code = self._answer(conn, request)
            _send(conn, b"x", str(code).encode())
        except OSError:
            pass  # the client went away
        finally:
            done.set()
            watcher.join()

    def _answer(self, conn: socket.socket, request: dict[str, Any]) -> int:
        fmt = Format(request.get("output", "table"))
        width = request.get("width")
        os.chdir(request.get("cwd") or "/")
        first = True
        try:
            for _, result in self.lh.sql_each(str(request["query"]), schema=request.get("schema")):
                text = render(result, fmt, width=width, max_rows=int(request.get("max_rows", 1000)))
                if text:
                    if not first and fmt in (Format.table, Format.markdown):
                        text = "\n" + text
                    _send(conn, b"o", text.encode())
                    first = False
        except LakehouseError as exc:
            message = "\n".join(escape(line) for line in mask_secrets(str(exc)).splitlines())
            _send(conn, b"e", f"error: {message}\n".encode())
            return 1
        except Exception as exc:
            logger.exception("query failed")
            _send(conn, b"e", f"error: {type(exc).__name__}: {mask_secrets(str(exc))}\n".encode())
            return 1
        return 0

    def _interrupt_when_gone(self, conn: socket.socket, done: threading.Event) -> None:
        while not done.is_set():
            ready, _, _ = select.select([conn], [], [], 0.2)
            if ready and not done.is_set():
                try:
                    gone = conn.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    engine_conn = getattr(self.lh.engine, "_conn", None)
                    if engine_conn is not None:
                        engine_conn.interrupt()
                    return
                done.wait(0.2)

    def _flush(self) -> None:
        try:
            self.lh.flush_audit()
        except Exception as exc:  # the records stay journalled; the next flush commits them
            logger.warning("audit records stay journalled: %s", exc)

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            if self._still_ours():
                self.path.unlink(missing_ok=True)
        self.lh.close()  # commits what is journalled
        logger.info("query server %d stopped", os.getpid())


def _read_request(conn: socket.socket) -> dict[str, Any] | None:
    conn.settimeout(10.0)
    try:
        head = _recv_exactly(conn, 8)
        (length,) = struct.unpack("!Q", head)
        if length > MAX_REQUEST_BYTES:
            _send(conn, b"e", b"error: the query is larger than the query server takes\n")
            _send(conn, b"x", b"1")
            return None
        request = json.loads(_recv_exactly(conn, length))
    except (OSError, ValueError, struct.error):
        return None
    finally:
        conn.settimeout(None)
    return request if isinstance(request, dict) and "query" in request else None


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the client went away")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _send(conn: socket.socket, tag: bytes, payload: bytes) -> None:
    conn.sendall(_FRAME.pack(tag, len(payload)) + payload)


def main(argv: list[str]) -> int:
    os.umask(PRIVATE_UMASK)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    path = Path(argv[0])
    lock_file = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server of this home is starting or running
    server = QueryServer(path, Settings.load())
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
