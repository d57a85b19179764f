"""Launching one server of the stack: a process of its own session with one log, waited for
until a real request answers, recorded by PID and start time, stopped by them.

Each service module (``_postgres``, ``_nessie``, ``_opa``, ``_trino``, ``_kafka``) writes its
configuration under ``<home>/stack/<service>/`` and returns a ``Running`` record; ``_stack``
starts them in order and keeps the records in the 0600 stack state file.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lakehouse.config import process_identity, recorded_alive
from lakehouse.errors import ServerError

from ._process import log_size, log_tail, terminate


@dataclass(frozen=True)
class Running:
    """A started server: its process, its log, where it answers, and the files a client needs
    (CA, credentials: 0600 files, never the secrets themselves)."""

    name: str
    pid: int
    started: str  # process_identity(pid): a reused PID is never taken for ours
    log: str
    endpoints: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Running:
        return cls(**{k: data[k] for k in ("name", "pid", "started", "log", "endpoints", "files")})

    def alive(self) -> bool:
        return recorded_alive({"pid": self.pid, "started": self.started})

    def stop(self, *, grace: float = 20.0) -> None:
        terminate(self.pid, grace=grace, started=self.started)


@dataclass
class Launched:
    """A process just started: wait for it with ``wait_ready``, then ``running(...)``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    since: int  # where this start's lines begin in the log

    def tail(self) -> str:
        return log_tail(self.log, since=self.since)

    def running(self, endpoints: dict[str, str], files: dict[str, str] | None = None) -> Running:
        started = process_identity(self.process.pid)
        if started is None:
            raise ServerError(
                f"{self.name} (pid {self.process.pid}) ended before it was recorded{self.tail()}"
            )
        return Running(
            name=self.name,
            pid=self.process.pid,
            started=started,
            log=str(self.log),
            endpoints=endpoints,
            files=files or {},
        )

    def stop(self) -> None:
        terminate(self.process.pid, grace=20.0)


def launch(
    name: str,
    args: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> Launched:
    """Start ``args`` in a session of its own (so the whole group stops together), appending its
    output to ``log``. ``env`` replaces the environment (default: this one's); ``popen`` passes
    on (``user``/``group`` for a server that refuses root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    since = log_size(log)
    with open(log, "ab") as stream:
        process = subprocess.Popen(
            list(args),
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=dict(env) if env is not None else dict(os.environ),
            **popen,
        )
    return Launched(name, process, log, since)


def wait_ready(
    launched: Launched, ready: Callable[[], bool], *, timeout: float, what: str = "to answer"
) -> None:
    """Poll ``ready()`` (a real request: exceptions count as not yet) until it is true; raise
    ``ServerError`` with the log's tail, and stop the process, if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if launched.process.poll() is not None:
            raise ServerError(
                f"{launched.name} exited with {launched.process.returncode} while starting{launched.tail()}"
            )
        try:
            if ready():
                return
        except Exception as exc:  # not ready yet; the last one is reported
            last = exc
        time.sleep(0.25)
    launched.stop()
    detail = f" (last: {last})" if last else ""
    raise ServerError(f"{launched.name} did not start {what} within {timeout:.0f}s{detail}{launched.tail()}")
