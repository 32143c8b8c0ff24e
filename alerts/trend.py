"""The sliding least-squares fit behind ``rate … per …`` and ``reaches … within …`` rule conditions.

Prometheus computes ``deriv()`` and ``predict_linear()`` by simple linear
regression over a range of samples; :class:`Trend` does the same over the last
``window`` seconds of one series, incrementally: running sums of t, y, t², t·y
make each new sample O(1) (plus the samples that fall out of the window). The
time origin is re-based when it drifts a day from the newest sample, which keeps
the sums' precision.

A fit is given only once the samples span at least half the window (and there
are three): two readings ten seconds apart would turn one 0.5 °C sensor step
into a 15 °C-per-5-minutes "rise".
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MAX_POINTS", "Trend"]

#: Samples kept per series and condition; past this the oldest go first (an agent pushing many samples a
#: second must not grow the window without bound): the fit then covers a shorter span.
MAX_POINTS = 512
_REBASE = 86400.0


class Trend:
    """Samples of one series within ``window`` seconds, and the line fitted through them."""

    __slots__ = ("half", "n", "origin", "st", "stt", "sty", "sy", "ts", "window", "ys")

    def __init__(self, window: float):
        self.window = window
        self.half = window / 2
        self.ts: deque[float] = deque()
        self.ys: deque[float] = deque()
        self.origin = 0.0
        self.n = 0
        self.st = self.sy = self.stt = self.sty = 0.0

    def add(self, t: float, y: float) -> None:
        """Add a sample at time ``t`` (seconds, not before the newest) and drop those older than the window."""
        if y != y or y in (math.inf, -math.inf):  # NaN or infinite: no use in a fit
            return
        if self.n == 0 or t - self.origin > _REBASE:
            self._rebase(t)
        ts, ys = self.ts, self.ys
        ts.append(t)
        ys.append(y)
        x = t - self.origin
        n = self.n + 1
        st = self.st + x
        sy = self.sy + y
        stt = self.stt + x * x
        sty = self.sty + x * y
        limit = t - self.window
        if ts[0] < limit or n > MAX_POINTS:
            origin = self.origin
            while ts and (ts[0] < limit or n > MAX_POINTS):
                old_t, old_y = ts.popleft(), ys.popleft()
                x = old_t - origin
                n -= 1
                st -= x
                sy -= old_y
                stt -= x * x
                sty -= x * old_y
        self.n, self.st, self.sy, self.stt, self.sty = n, st, sy, stt, sty

    def add_slope(self, t: float, y: float) -> float | None:
        """:meth:`add` then :meth:`slope` (the engine's hot path for ``rate`` conditions)."""
        self.add(t, y)
        n = self.n
        ts = self.ts
        if n < 3 or ts[-1] - ts[0] < self.half:
            return None
        mean_t = self.st / n
        var = self.stt / n - mean_t * mean_t
        if var <= 0:
            return None
        return (self.sty / n - mean_t * (self.sy / n)) / var

    def _rebase(self, t: float) -> None:
        self.origin = self.ts[0] if self.ts else t
        self.n = 0
        self.st = self.sy = self.stt = self.sty = 0.0
        for old_t, old_y in zip(self.ts, self.ys, strict=True):
            x = old_t - self.origin
            self.n += 1
            self.st += x
            self.sy += old_y
            self.stt += x * x
            self.sty += x * old_y

    def fit(self) -> tuple[float, float] | None:
        """(slope per second, fitted value at the newest sample), or None when the samples are too few or too short."""
        n = self.n
        if n < 3 or self.ts[-1] - self.ts[0] < self.half:
            return None
        mean_t = self.st / n
        var = self.stt / n - mean_t * mean_t
        if var <= 0:
            return None
        slope = (self.sty / n - mean_t * (self.sy / n)) / var
        now = self.ts[-1] - self.origin
        return slope, self.sy / n + slope * (now - mean_t)

    def slope(self) -> float | None:
        """Change per second (Prometheus ``deriv``)."""
        fitted = self.fit()
        return None if fitted is None else fitted[0]

    def seconds_to(self, target: float) -> float | None:
        """Seconds from the newest sample until the fitted line reaches ``target``; inf when it moves away or is
        flat; None without a fit (Prometheus: ``predict_linear`` solved for the time of ``target``)."""
        fitted = self.fit()
        if fitted is None:
            return None
        slope, now = fitted
        if now == target:
            return 0.0
        if slope == 0:
            return math.inf
        t = (target - now) / slope
        return t if t >= 0 else math.inf
