"""Where sealed batches wait until the collector answers 200.

:class:`Outbox` is the seam the push loop talks to. :class:`MemoryOutbox`
keeps batches in RAM with a sample cap; a persistent spool implements the same
same methods so the push path does not change.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Protocol

from roomwatch.core.notice import carries_notice
from roomwatch.core.wire import Batch

__all__ = ["MemoryOutbox", "Outbox"]

log = logging.getLogger("roomwatch.agent.outbox")


class Outbox(Protocol):
    """Batches accepted for delivery; a batch leaves only through :meth:`ack`."""

    @property
    def dropped_samples(self) -> int:
        """Samples dropped at the cap (counted since the start, or for good in a persistent spool)."""

    def put(self, batch: Batch) -> None:
        """Keep ``batch`` until acknowledged (may drop the oldest at the cap, counting it)."""

    def next_batches(self, limit: int) -> list[Batch]:
        """Up to ``limit`` batches to send now, most urgent first."""

    def ack(self, seq: int) -> None:
        """The collector has ``seq``: forget it."""

    def drop(self, seq: int, reason: str) -> None:
        """Forget ``seq`` undelivered (e.g. ``"rejected"``: the collector refuses it for good), counting it."""

    def depth(self) -> int:
        """Batches waiting."""


class MemoryOutbox:
    """In-memory queue: fresh batches first (current values beat backlog), capped in samples."""

    def __init__(self, max_samples: int = 500_000):
        self.max_samples = max_samples
        self.dropped_samples = 0
        self._batches: deque[Batch] = deque()
        self._samples = 0

    def put(self, batch: Batch) -> None:
        self._batches.append(batch)
        self._samples += len(batch.samples)
        while self._samples > self.max_samples and len(self._batches) > 1:
            old = self._batches.popleft()
            self._samples -= len(old.samples)
            self.dropped_samples += len(old.samples)
            log.warning(
                "push queue full (%d samples): dropped the oldest batch seq=%d with %d samples and %d events",
                self.max_samples, old.seq, len(old.samples), len(old.events),
            )

    def next_batches(self, limit: int) -> list[Batch]:
        # Newest first: after an outage the room's present state matters more than its past. Local
        # fallback notices before anything (roomwatch/core/notice.py).
        newest_first = list(reversed(self._batches))
        return sorted(newest_first, key=lambda b: not carries_notice(b))[:limit]

    def ack(self, seq: int) -> None:
        for b in self._batches:
            if b.seq == seq:
                self._batches.remove(b)
                self._samples -= len(b.samples)
                return

    def drop(self, seq: int, reason: str) -> None:
        # Nothing to count here: the pusher's own counters (result="rejected") say it; the spool counts per reason.
        self.ack(seq)

    def depth(self) -> int:
        return len(self._batches)
