"""Ingest counters (rows, dead letters, commits, lag) and their Prometheus endpoint."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class IngestStats:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    commits: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    assigned: set[str] = field(default_factory=set)
    ever_assigned: set[str] = field(default_factory=set)
    pending: int = 0  # messages read but not yet committed (the batch in memory)
    first_message_at: float | None = None
    last_commit_at: float | None = None

    def prometheus(self) -> str:
        """The Prometheus text exposition format."""
        elapsed = max(1e-9, time.monotonic() - self.started)
        lines = [
            "# HELP lakehouse_sink_rows_total Rows committed to bronze tables.",
            "# TYPE lakehouse_sink_rows_total counter",
            *(f'lakehouse_sink_rows_total{{table="{t}"}} {n}' for t, n in sorted(self.rows.items())),
            "# HELP lakehouse_sink_rows_per_second Committed rows per second since start.",
            "# TYPE lakehouse_sink_rows_per_second gauge",
            f"lakehouse_sink_rows_per_second {sum(self.rows.values()) / elapsed:.3f}",
            "# HELP lakehouse_sink_dead_letters_total Messages sent to bronze.dead_letters.",
            "# TYPE lakehouse_sink_dead_letters_total counter",
            *(
                f'lakehouse_sink_dead_letters_total{{topic="{t}"}} {n}'
                for t, n in sorted(self.dead_letters.items())
            ),
            "# HELP lakehouse_sink_lag Messages behind the end of each partition.",
            "# TYPE lakehouse_sink_lag gauge",
            *(
                f'lakehouse_sink_lag{{topic="{tp.rsplit("/", 1)[0]}",partition="{tp.rsplit("/", 1)[1]}"}} {n}'
                for tp, n in sorted(self.lag.items())
            ),
            "# HELP lakehouse_sink_assigned_partitions Partitions this member of the group holds now.",
            "# TYPE lakehouse_sink_assigned_partitions gauge",
            f"lakehouse_sink_assigned_partitions {len(self.assigned)}",
            "# HELP lakehouse_sink_pending_messages Messages read and held for the next commit.",
            "# TYPE lakehouse_sink_pending_messages gauge",
            f"lakehouse_sink_pending_messages {self.pending}",
            "# HELP lakehouse_sink_commit_seconds Iceberg commit latency.",
            "# TYPE lakehouse_sink_commit_seconds summary",
        ]
        for q in (0.5, 0.95, 0.99):
            lines.append(
                f'lakehouse_sink_commit_seconds{{quantile="{q}"}} {_quantile(self.commit_seconds, q):.6f}'
            )
        lines += [
            f"lakehouse_sink_commit_seconds_sum {sum(self.commit_seconds):.6f}",
            f"lakehouse_sink_commit_seconds_count {len(self.commit_seconds)}",
        ]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, Any]:
        return {
            "rows": dict(self.rows),
            "dead_letters": dict(self.dead_letters),
            "commits": self.commits,
            "commit_p50_s": _quantile(self.commit_seconds, 0.5),
            "commit_p95_s": _quantile(self.commit_seconds, 0.95),
            "partitions": sorted(self.ever_assigned),
        }


def serve_metrics(stats: IngestStats, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` on loopback in a daemon thread; port 0 picks a free one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = stats.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
