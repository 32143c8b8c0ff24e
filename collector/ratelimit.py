"""Token buckets for the push API: per agent and per source address (429 with Retry-After beyond).

The per-address bucket is checked before the token is even looked at, so a
host guessing tokens is slowed as much as a host flooding with valid ones.
Buckets idle for ten minutes are forgotten (memory stays bounded under a scan
from many addresses).
"""

from __future__ import annotations

import math
import time

__all__ = ["RateLimiter"]

_FORGET_AFTER = 600.0  # s
_MAX_KEYS = 100_000


class RateLimiter:
    """``rate`` requests/s with ``burst`` at once, per key; ``rate <= 0`` = unlimited."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}  # key → [tokens, last refill (monotonic)]
        self._swept = time.monotonic()
        self._logged: dict[str, float] = {}
        self.refused = 0

    def check(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        if now - self._swept > _FORGET_AFTER or len(self._buckets) > _MAX_KEYS:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        self.refused += 1
        return (1.0 - tokens) / self.rate

    def should_log(self, key: str, every: float = 60.0) -> bool:
        """True at most once per ``every`` seconds per key: a flood is logged, not echoed line by line."""
        now = time.monotonic()
        if now - self._logged.get(key, -every) < every:
            return False
        if len(self._logged) > _MAX_KEYS:
            self._logged.clear()
        self._logged[key] = now
        return True

    def _sweep(self, now: float) -> None:
        full = self.burst / self.rate  # a bucket idle this long is full again: same as a new one
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < max(full, 1.0)}
        if len(self._buckets) > _MAX_KEYS:
            self._buckets.clear()
        self._swept = now


def retry_after(seconds: float) -> str:
    """``Retry-After`` header value: whole seconds, at least 1 (RFC 9110 §10.2.3)."""
    return str(max(1, math.ceil(seconds)))
