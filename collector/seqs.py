"""Which batch ``seq`` numbers an agent has delivered, as merged ranges.

Batches arrive out of order (a spool sends fresh data before backlog), so a
"highest seq" is not enough; a set of every seq would grow without bound.
Ranges stay tiny because an agent's seqs are consecutive within one run.
"""

from __future__ import annotations

import bisect

__all__ = ["SeqTracker"]


class SeqTracker:
    """Sorted, disjoint, inclusive ``[lo, hi]`` ranges of seen seqs."""

    def __init__(self, max_ranges: int = 4096, ranges: list[tuple[int, int]] | None = None):
        self.max_ranges = max_ranges
        self._lo: list[int] = []
        self._hi: list[int] = []
        for lo, hi in sorted(ranges or []):
            self._lo.append(lo)
            self._hi.append(hi)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._lo, seq) - 1
        return i >= 0 and seq <= self._hi[i]

    def add(self, seq: int) -> bool:
        """Record ``seq``; False if it was already there."""
        lo, hi = self._lo, self._hi
        i = bisect.bisect_right(lo, seq) - 1
        if i >= 0 and seq <= hi[i]:
            return False
        joins_left = i >= 0 and hi[i] == seq - 1
        joins_right = i + 1 < len(lo) and lo[i + 1] == seq + 1
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        elif joins_left:
            hi[i] = seq
        elif joins_right:
            lo[i + 1] = seq
        else:
            lo.insert(i + 1, seq)
            hi.insert(i + 1, seq)
            if len(lo) > self.max_ranges:
                # Forget the oldest range: a replay from that far back would be accepted once more,
                # which beats unbounded memory; history dedups by (series, ts) anyway.
                del lo[0], hi[0]
        return True

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    @property
    def highest(self) -> int | None:
        return self._hi[-1] if self._hi else None
