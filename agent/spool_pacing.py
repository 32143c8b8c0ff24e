"""Which spooled batch goes next, and when: the delivery order and the backlog's token bucket.

The pacing half of :class:`roomwatch.agent.spool.Spool` (the storage half is
:mod:`roomwatch.agent.spool_store`). :func:`select` walks the stored batches in
delivery order — notices and events, fresh batches, the backlog — and lets
backlog samples go only as fast as a :class:`TokenBucket` refills
(``backlog_rate`` samples/s). Both read time from injected clocks, so tests move
time instead of waiting for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from roomwatch.agent.spool_hold import Entry

__all__ = ["EntrySource", "TokenBucket", "select"]


class TokenBucket:
    """Backlog samples per second, at most one second's worth at once; may go into debt for one big batch."""

    def __init__(self, rate: float, monotonic: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.monotonic = monotonic
        self.tokens = self.burst
        self.tokens_at = monotonic()

    @property
    def burst(self) -> float:
        return max(self.rate, 1.0)  # at most one second's worth at once; a bigger batch waits for a full bucket

    def _refill(self) -> None:
        now = self.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.tokens_at) * self.rate)
        self.tokens_at = now

    def budget(self) -> float:
        """Samples that may go now (``inf`` without pacing)."""
        if self.rate <= 0:
            return float("inf")
        self._refill()
        return self.tokens

    def spend(self, samples: int) -> None:
        """Pay for ``samples`` delivered (nothing without pacing)."""
        if self.rate > 0:
            self._refill()
            self.tokens -= samples

    def wait(self, need: float) -> float:
        """Seconds until ``need`` tokens are there."""
        return max(0.0, (need - self.budget()) / self.rate)


class EntrySource(Protocol):
    """The stored batches, as :class:`roomwatch.agent.spool_store.SpoolStore` lists them for each part of the order."""

    def event_entries(self, limit: int) -> list[Entry]: ...

    def fresh_entries(self, cutoff_ms: int, limit: int) -> list[Entry]: ...

    def backlog_entries(self, cutoff_ms: int, limit: int) -> list[Entry]: ...


def select(source: EntrySource, bucket: TokenBucket, limit: int, cutoff_ms: int) -> tuple[list[tuple[Entry, bool]], float]:
    """The next ``limit`` entries to send, each with "paced" (it pays backlog tokens), and the tokens
    the first entry that pacing holds back needs (0 when none is held back).

    ``cutoff_ms``: batches whose newest sample is older are backlog, the others fresh.
    """
    picked: list[tuple[Entry, bool]] = []
    if limit <= 0:
        return picked, 0.0
    budget: float | None = None
    blocked = 0.0
    for e in source.event_entries(limit):
        if e.n_samples and e.newest_ms < cutoff_ms and not e.priority:
            # An event batch with old samples (sealed by an agent before events got batches of their own):
            # its samples pay like backlog, or they would overtake fresher data unpaced. Events after it
            # wait with it, to keep their order (for at most a second's worth of tokens).
            need = min(e.n_samples, bucket.burst)
            budget = bucket.budget() if budget is None else budget
            if budget < need:
                blocked = need
                break
            budget -= e.n_samples
            picked.append((e, True))
        else:
            picked.append((e, False))
    if len(picked) < limit:
        picked += [(e, False) for e in source.fresh_entries(cutoff_ms, limit - len(picked))]
    if len(picked) < limit and not blocked:
        for e in source.backlog_entries(cutoff_ms, limit - len(picked)):
            need = min(e.n_samples, bucket.burst)
            budget = bucket.budget() if budget is None else budget
            if budget < need:
                return picked, need
            budget -= e.n_samples
            picked.append((e, True))
    return picked, blocked
