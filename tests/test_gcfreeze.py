"""The collector freezes its long-lived objects while the series count grows, and only then."""

from __future__ import annotations

import asyncio
import gc

import pytest

import roomwatch.collector.gcfreeze as gcfreeze
from roomwatch.collector.gcfreeze import MIN_SERIES, freeze_while_growing


def test_freezes_when_grown_and_not_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = [10, MIN_SERIES, MIN_SERIES + 1, int(MIN_SERIES * 1.06), int(MIN_SERIES * 1.06), MIN_SERIES * 2]
    frozen_at: list[int] = []
    checks: list[int] = []

    class FakeGC:  # this test process keeps its own garbage collector as it is
        @staticmethod
        def freeze() -> None:
            frozen_at.append(checks[-1])

        get_freeze_count = staticmethod(gc.get_freeze_count)

    monkeypatch.setattr(gcfreeze, "gc", FakeGC)

    def count() -> int:
        checks.append(counts[len(checks)] if len(checks) < len(counts) else counts[-1])
        return checks[-1]

    async def run() -> None:
        task = asyncio.create_task(freeze_while_growing(count, interval=0.001))
        while len(checks) < len(counts) + 1:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(run())
    # too few; first freeze; not 5 % more; 6 % more; unchanged; doubled (then unchanged)
    assert frozen_at == [MIN_SERIES, int(MIN_SERIES * 1.06), MIN_SERIES * 2]

