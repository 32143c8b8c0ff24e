"""The two clocks the agent reads, behind one injectable object.

``time()`` is the wall clock (Unix seconds): it stamps samples and events.
``monotonic()`` measures intervals: poll durations, ``max_age``, push intervals,
backoff, the spool's backlog pacing. The agent's parts take a :class:`Clock`
(default :data:`SYSTEM`), so tests move time instead of waiting for it and
assert what did or did not happen at a given instant.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM", "Clock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock Unix seconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""


class SystemClock:
    """The machine's clocks: :func:`time.time` and :func:`time.monotonic`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM: Clock = SystemClock()
