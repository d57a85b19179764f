"""The gateway's audit log: one JSON line per security event, appended (0600).

Enrollments, token issuance, revocations and every rejected request, with who (device, store,
client address), what, the outcome and the reason. Tokens, keys and payloads are never written:
callers pass only the fields below. Values can hold what a client sent (a reason quoting a
header field, an unknown device id), so each is clipped and its control characters escaped
before it is written: a line stays small whatever a client sends.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

from ._text import clip

MAX_VALUE = 256  # characters of any one value


MAX_REASON = 512


FIELDS = (
    "event",
    "outcome",
    "device_id",
    "store_id",
    "client",
    "status",
    "reason",
    "request_id",
    "kid",
    "seq",
)


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, outcome: str, **details: Any) -> None:
        unknown = set(details) - set(FIELDS)
        if unknown:  # a guard against ever logging a token or a payload by accident
            raise ValueError(f"audit fields {sorted(unknown)} are not allowed")
        entry = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "outcome": outcome,
        }
        entry.update({k: _bounded(k, v) for k, v in details.items() if v is not None})
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write per line: lines from several processes never interleave
            finally:
                os.close(fd)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _bounded(field: str, value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return value
    return clip(
        value if isinstance(value, str) else repr(value), MAX_REASON if field == "reason" else MAX_VALUE
    )
