"""The agent's current values, for its own ``/metrics`` (pull mode).

Written on the event loop, read by the HTTP thread: a lock guards both.
A device's series leave when the device goes down, so a scrape never shows
an old reading as if it were current.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from roomwatch.core.exposition import Family, render_labels
from roomwatch.core.vocabulary import describe
from roomwatch.core.wire import SampleRecord

__all__ = ["LatestValues"]


class LatestValues:
    """metric → label block → value, plus an index of each device's series."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, float]] = {}
        self._by_device: dict[str, set[tuple[str, str]]] = {}
        self._label_cache: dict[tuple[tuple[str, str], ...], str] = {}

    def _block(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        block = self._label_cache.get(key)
        if block is None:
            if len(self._label_cache) > 100_000:  # bounded: labels churn only on misconfiguration
                self._label_cache.clear()
            block = self._label_cache[key] = render_labels(labels)
        return block

    def update(self, device: str, samples: Iterable[SampleRecord], replace: bool = False) -> None:
        """Store samples of ``device``; with ``replace`` its series not in ``samples`` are dropped."""
        with self._lock:
            keys = self._by_device.setdefault(device, set())
            fresh: set[tuple[str, str]] = set()
            for s in samples:
                block = self._block(s.labels)
                self._values.setdefault(s.metric, {})[block] = s.value
                fresh.add((s.metric, block))
            if replace:
                for metric, block in keys - fresh:
                    self._values.get(metric, {}).pop(block, None)
                keys.clear()
            keys.update(fresh)

    def drop_device(self, device: str, keep: AbstractSet[str] = frozenset()) -> None:
        """Forget the device's series except the metrics in ``keep`` (its health series)."""
        with self._lock:
            keys = self._by_device.get(device, set())
            for metric, block in list(keys):
                if metric in keep:
                    continue
                self._values.get(metric, {}).pop(block, None)
                keys.discard((metric, block))

    def families(self) -> list[Family]:
        """A consistent snapshot, sorted by metric name."""
        with self._lock:
            snap = {m: list(series.items()) for m, series in self._values.items() if series}
        out = []
        for metric in sorted(snap):
            d = describe(metric)
            out.append(Family(metric, d.help, d.type, snap[metric]))
        return out
