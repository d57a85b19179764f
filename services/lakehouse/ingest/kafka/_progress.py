"""The sink's live line on a terminal: rows committed and their rate, lag per topic, dead letters.

Drawn from ``IngestStats`` (what the Prometheus endpoint serves) once a second by a daemon
thread: nothing is asked of the broker or the catalog for it.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TextIO

from lakehouse.ingest import IngestStats

WINDOW_S = 5.0  # commits come every few seconds: a rate over one second would flicker to zero

CLEAR = "\r\x1b[2K"  # back to the start of the line, erase it


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def status_line(stats: IngestStats, rows_per_second: float, *, width: int | None = None) -> str:
    """One line: rows committed, their rate, lag (messages not yet committed) per topic of the
    partitions held, dead letters, and the batch held in memory; cut to ``width``."""
    rows = sum(dict(stats.rows).values())
    held = set(stats.assigned)
    lag: dict[str, int] = defaultdict(int)
    for tp, n in dict(stats.lag).items():
        if tp in held:
            lag[tp.rsplit("/", 1)[0]] += n
    if held:
        lag_text = "lag " + (", ".join(f"{topic} {n:,}" for topic, n in sorted(lag.items())) or "-")
    else:
        lag_text = "waiting for partitions"  # joining the consumer group
    dead = sum(dict(stats.dead_letters).values())
    line = f"sink: {_plural(rows, 'row')} ({rows_per_second:,.0f}/s) | {lag_text} | {_plural(dead, 'dead letter')}"
    if stats.pending:
        line += f" | {stats.pending:,} read, not yet committed"
    if width is not None and len(line) > width:
        line = line[: max(0, width - 1)] + "…"
    return line


class Rate:
    """Rows per second over the last ``window`` seconds, from samples of a growing count."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, count: int) -> float:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_at, first = self._samples[0]
        return (count - first) / (now - first_at) if now > first_at else 0.0


class LiveLine:
    """Redraws ``status_line`` on ``stream`` every ``interval`` seconds while the sink runs;
    ``close()`` erases it. Meant for a terminal: the caller checks ``stream.isatty()``."""

    def __init__(
        self,
        stats: IngestStats,
        stream: TextIO,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._rate = Rate()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sink-live-line")

    def start(self) -> LiveLine:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        rate = self._rate.update(self.clock(), sum(dict(self.stats.rows).values()))
        width = shutil.get_terminal_size().columns - 1
        with contextlib.suppress(OSError, ValueError):  # a closed terminal ends the line, not the sink
            self.stream.write(CLEAR + status_line(self.stats, rate, width=width))
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(CLEAR)
            self.stream.flush()
