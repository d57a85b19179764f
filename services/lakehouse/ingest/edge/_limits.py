"""Rate limits: token buckets per device (after authentication) and per client address (before
it, so a flood of unauthenticated requests costs a dictionary lookup, not a signature check, a
database query or an audit line each). In memory, per gateway replica; the clock is injectable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    wait: float  # 0: go ahead; else seconds until a request may go
    first: bool  # the first refusal since this key last had a token (audit that one only)

    def __bool__(self) -> bool:
        return self.wait > 0


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, ``rate`` per second sustained."""

    MAX_KEYS = 100_000  # full buckets are forgotten beyond this, so addresses cannot exhaust memory

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float, bool]] = {}  # key -> (tokens, at, refused)
        self._lock = threading.Lock()

    def check(self, key: str) -> Verdict:
        """Spend a token for ``key`` if there is one."""
        now = self.clock()
        with self._lock:
            tokens, at, refused = self._buckets.get(key, (float(self.burst), now, False))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now, False)
                if len(self._buckets) > self.MAX_KEYS:
                    self._forget_full(now)
                return Verdict(0.0, False)
            self._buckets[key] = (tokens, now, True)
            return Verdict((1.0 - tokens) / self.rate, not refused)

    def retry_after(self, key: str) -> float:
        """0 if a request may go now (and spends a token), else seconds until one may."""
        return self.check(key).wait

    def _forget_full(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) > self.MAX_KEYS // 2:  # that many keys at once: start afresh (amortised)
            self._buckets.clear()
