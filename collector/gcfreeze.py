"""Keep Python's full garbage collections short in a collector that holds many series.

A full (generation 2) collection walks every container object the interpreter
tracks. A collector's heap is mostly long-lived series state (current values,
rule states, history ids: about ten tracked objects per series), so with 200k
series one collection stops the event loop for ~0.7 s, and pushes and alerts
wait (bench/fleet.py: push p99 of 2,000 agents went from ~0.5 s to ~0.05 s
with this; BENCHMARKS.md "Profiles").

While the series count grows, this task moves every object alive at that
moment into the permanent generation (:func:`gc.freeze`), which collections
skip. Frozen objects are still freed by reference counting when a series
expires (series state holds no reference cycles); only cyclic garbage that
happens to exist at a freeze is kept, and freezes happen only when the fleet
has grown by a twentieth, so that stays small.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

__all__ = ["freeze_while_growing"]

log = logging.getLogger("roomwatch.collector")

MIN_SERIES = 5_000  # below this a full collection takes a few ms: nothing to gain
GROWTH = 1.05  # freeze again when the series count has grown by 5 %


async def freeze_while_growing(series_count: Callable[[], int], interval: float = 2.0) -> None:
    """Every ``interval`` s: :func:`gc.freeze` if ``series_count()`` grew past the last freeze by :data:`GROWTH`."""
    frozen_at = 0
    while True:
        await asyncio.sleep(interval)
        n = series_count()
        if n >= MIN_SERIES and n >= frozen_at * GROWTH:
            gc.freeze()
            log.debug("%d series: long-lived objects frozen (%d in the permanent generation)", n, gc.get_freeze_count())
            frozen_at = n
