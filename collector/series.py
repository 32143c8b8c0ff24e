"""The collector's current value of every series, and what ``/metrics`` shows.

A series is *current* while its newest sample is younger than
``series_expire`` and its device is not down. When a device reports
``roomwatch_device_up 0``, its other series are hidden at once (their last
values are history, not the room's state); when nothing arrives for
``series_expire`` a series is removed from ``/metrics`` and from memory.
A late sample (backlog from an agent's spool) never replaces a newer one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from roomwatch.core.exposition import Family, render_labels
from roomwatch.core.interning import label_pairs, string
from roomwatch.core.interning import labels as interned_labels
from roomwatch.core.vocabulary import DEVICE_UP, HEALTH_METRICS, describe, family_base
from roomwatch.core.wire import SampleRecord

__all__ = ["Series", "SeriesStore"]

_HEALTH = HEALTH_METRICS  # device_up and link counters stay visible while a device is down


@dataclass(slots=True)
class Series:
    metric: str
    labels: dict[str, str]
    block: str  # rendered label block, built once
    value: float
    ts: int  # ms, the sample's own time (clock-skew corrected)
    device_key: tuple[str, str] | None


class SeriesStore:
    """metric → label block → :class:`Series`, with a fast alias index for ingest."""

    def __init__(self, expire_seconds: float = 300.0):
        self.expire_ms = int(expire_seconds * 1000)
        self.by_metric: dict[str, dict[str, Series]] = {}
        # (metric, labels in arrival order) → Series: agents send labels in a stable order,
        # so the common path skips sorting and rendering.
        self._alias: dict[tuple[str, tuple[tuple[str, str], ...]], Series] = {}
        self.device_down_since: dict[tuple[str, str], int] = {}
        # No series is older than this (ms): a sample only moves a series' ts forward, so the bound
        # holds until a scan; expire() skips its full scan (22 ms at 100k series, every second)
        # while nothing can have expired.
        self._oldest_ts = 2**63
        #: Series held per agent (the per-agent series limit, roomwatch.collector.admission).
        self.per_agent: dict[str, int] = {}
        #: OpenMetrics family base → the metric name holding it (x and x_total must not both exist).
        self.bases: dict[str, str] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self.by_metric.values())

    def apply(self, agent_id: str, samples: Iterable[SampleRecord], skew_ms: int = 0) -> list[Series]:
        """Store samples of one batch; return the series whose current value changed."""
        changed: list[Series] = []
        alias = self._alias
        for s in samples:
            labels = s.labels
            if labels.get("agent") != agent_id:  # an agent may only write its own series
                labels = {**labels, "agent": agent_id}
            ts = s.ts + skew_ms
            key = (s.metric, tuple(labels.items()))
            series = alias.get(key)
            if series is None:
                pairs = label_pairs(labels)  # shared strings and pairs: this key lives as long as the series
                metric = string(s.metric)
                series = self._create(metric, interned_labels(pairs), s.value, ts)
                alias[(metric, pairs)] = series
                changed.append(series)
            elif ts >= series.ts:
                series.value = s.value
                series.ts = ts
                changed.append(series)
            else:
                continue  # older than what we show: history only
            if s.metric == DEVICE_UP and series.device_key is not None:
                if s.value == 0:
                    self.device_down_since.setdefault(series.device_key, ts)
                else:
                    self.device_down_since.pop(series.device_key, None)
        return changed

    def _create(self, metric: str, labels: dict[str, str], value: float, ts: int) -> Series:
        block = render_labels(labels)
        fam = self.by_metric.setdefault(metric, {})
        series = fam.get(block)
        if ts < self._oldest_ts:
            self._oldest_ts = ts
        if series is None:
            agent = labels["agent"]
            device = labels.get("device")
            dkey = (agent, device) if device else None
            series = fam[block] = Series(metric, labels, block, value, ts, dkey)
            self.per_agent[agent] = self.per_agent.get(agent, 0) + 1
            if len(fam) == 1:
                self.bases.setdefault(family_base(metric), metric)
        elif ts >= series.ts:
            series.value, series.ts = value, ts
        return series

    def is_current(self, series: Series, now_ms: int) -> bool:
        if now_ms - series.ts > self.expire_ms:
            return False
        if series.device_key is not None and series.metric not in _HEALTH:
            down = self.device_down_since.get(series.device_key)
            if down is not None and series.ts <= down:
                return False
        return True

    def families(self, now: float | None = None) -> list[Family]:
        """Current series grouped by metric, sorted, for exposition."""
        now_ms = int((time.time() if now is None else now) * 1000)
        expire = self.expire_ms
        down = self.device_down_since
        all_fresh = now_ms - self._oldest_ts <= expire  # no series can have expired: skip the per-series test
        out = []
        for metric in sorted(self.by_metric):
            fam = self.by_metric[metric]
            check_down = bool(down) and metric not in _HEALTH
            if all_fresh and not check_down:
                samples = [(s.block, s.value) for s in fam.values()]
            else:
                samples = [
                    (s.block, s.value)
                    for s in fam.values()
                    if now_ms - s.ts <= expire and not (check_down and s.device_key in down and s.ts <= down[s.device_key])
                ]
            if samples:
                d = describe(metric)
                out.append(Family(metric, d.help, d.type, samples))
        return out

    def current(self, metric: str, now: float | None = None) -> list[Series]:
        """Current series of one metric (used by the API and the alert engine)."""
        now_ms = int((time.time() if now is None else now) * 1000)
        return [s for s in self.by_metric.get(metric, {}).values() if self.is_current(s, now_ms)]

    def expire(self, now: float | None = None) -> int:
        """Forget series older than ``series_expire``; return how many went."""
        now_ms = int((time.time() if now is None else now) * 1000)
        if now_ms - self._oldest_ts <= self.expire_ms:
            return 0
        gone = 0
        oldest = 2**63
        cutoff = now_ms - self.expire_ms
        for metric in list(self.by_metric):
            fam = self.by_metric[metric]
            old = []
            for b, s in fam.items():
                if s.ts < cutoff:
                    old.append(b)
                elif s.ts < oldest:
                    oldest = s.ts
            for b in old:
                agent = fam.pop(b).labels["agent"]
                self.per_agent[agent] -= 1
            gone += len(old)
            if not fam:
                del self.by_metric[metric]
        self._oldest_ts = oldest
        if gone:
            self.per_agent = {a: n for a, n in self.per_agent.items() if n > 0}
            self.bases = {family_base(m): m for m in self.by_metric}
            self._alias = {k: s for k, s in self._alias.items() if self.by_metric.get(s.metric, {}).get(s.block) is s}
            alive = {s.device_key for s in self.by_metric.get(DEVICE_UP, {}).values()}
            for key in [k for k in self.device_down_since if k not in alive]:
                del self.device_down_since[key]
        return gone
