"""Per-number call limits of the voice services, kept before asking the service.

Aliyun voice allows each called number 1 call a minute, 5 an hour and 20 a day
(SingleCallByTts, help.aliyun.com/document_detail/393519); Tencent Cloud voice 1 in
30 s, 2 in 10 minutes and 5 a day for voice notifications (cloud.tencent.com/document/
product/1128/38004). A call over a limit is refused and may still count, so the channel
holds such a number back itself and says when it may be called again: the outbox retries
only that number then (``Failure.retry_after``), the others are called at once.

The windows are in memory: after a restart the service's own refusal (a retry code) takes over.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

__all__ = ["NumberPace"]

#: Numbers remembered at most (each holds a few timestamps); a configuration has far fewer.
MAX_NUMBERS = 4096


class NumberPace:
    """Sliding windows ``(calls, per seconds)`` per called number."""

    def __init__(self, windows: Sequence[tuple[int, float]]):
        self.windows = [(int(c), float(p)) for c, p in windows if c > 0 and p > 0]
        self._longest = max((p for _, p in self.windows), default=0.0)
        self._most = max((c for c, _ in self.windows), default=0)
        self._calls: dict[str, deque[float]] = {}

    def wait(self, number: str, now: float) -> float:
        """Seconds until ``number`` may be called again (0: now)."""
        times = self._calls.get(number)
        if not times:
            return 0.0
        while times and now - times[0] >= self._longest:
            times.popleft()
        wait = 0.0
        ordered = list(times)
        for count, per in self.windows:
            inside = len(ordered) - bisect.bisect_right(ordered, now - per)
            if inside >= count:
                wait = max(wait, per - (now - ordered[-count]) + 0.001)
        return wait

    def note(self, number: str, now: float) -> None:
        """``number`` was called (or the service took the request) at ``now``."""
        if number not in self._calls and len(self._calls) >= MAX_NUMBERS:
            self._calls.pop(next(iter(self._calls)))
        times = self._calls.setdefault(number, deque(maxlen=max(self._most, 1)))
        times.append(now)
