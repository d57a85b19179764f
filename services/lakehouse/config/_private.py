"""The platform's local state is its owner's alone: directories 0700, files 0600.

The ``lakehouse`` command runs with umask 077, so everything it (and the dbt, broker and
gateway processes it starts) creates under the home is private. The home and its state
directories are also made 0700 here, whoever creates them (a library user's process has its
own umask): nothing below a 0700 directory is reachable by other users.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created with its parents if missing;
    group and other bits removed if it exists)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_home(settings: Any) -> Path:
    """The platform's home and its state directory, 0700."""
    private_dir(settings.home)
    private_dir(settings.state_dir)
    return Path(settings.home)


def _owner_alive(name: str) -> bool:
    """A scratch directory is named ``<prefix><pid>-<random>``: is that process still running?"""
    from ._private import alive

    try:
        pid = int(name.rsplit("-", 2)[-2])
    except (IndexError, ValueError):
        return False
    return alive(pid)


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A private (0700) directory under ``parent`` that is removed, with everything in it, when
    the block ends, whether it succeeds or fails. Directories left by processes that died
    (SIGKILL, power cut) are removed the next time one is made under the same parent."""
    private_dir(parent)
    for stale in parent.glob(f"{prefix}*"):
        if stale.is_dir() and not _owner_alive(stale.name):
            logger.info("removing %s, left by a process that no longer runs", stale)
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))  # 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (state files hold credentials). A file that exists
    with a wider mode is narrowed to 0600 before anything is written into it; one that is not a
    regular file (a link planted in its place) is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file: refusing to write a secret into it")
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def process_identity(pid: int) -> str | None:
    """What tells this process apart from a later one given the same PID: this boot's id and
    the process's start time (``/proc/<pid>/stat`` field 22). None if it cannot be read (no
    such process, or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _ps_start_time(pid)
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return f"{boot}:{fields[19]}"


def _ps_start_time(pid: int) -> str | None:
    """Without /proc (macOS): the start time ``ps`` reports, to the second."""
    import subprocess

    try:
        done = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"ps:{done.stdout.strip()}" if done.returncode == 0 and done.stdout.strip() else None


def recorded_alive(state: dict[str, Any]) -> bool:
    """Whether the process a state file recorded (``pid`` and ``started``, its
    ``process_identity`` at start) still runs. A PID now held by another process, or a record
    without an identity, is not it: nothing may signal it on the record's word."""
    pid = state.get("pid")
    started = state.get("started")
    if not isinstance(pid, int) or not isinstance(started, str) or not alive(pid):
        return False
    return process_identity(pid) == started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours has exited
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True
