"""SeriesStore expiry: a series leaves memory series_expire after its newest sample, not before, whatever came since."""

from __future__ import annotations

from roomwatch.collector.series import SeriesStore
from roomwatch.core.wire import SampleRecord

T0 = 1_700_000_000_000  # ms
M = "roomwatch_temperature_celsius"


def _s(device: str, ts: int, value: float = 20.0) -> SampleRecord:
    return SampleRecord(M, {"agent": "a1", "device": device}, value, ts)


def _devices(store: SeriesStore) -> set[str]:
    return {s.labels["device"] for fam in store.by_metric.values() for s in fam.values()}


def test_series_expire_after_their_newest_sample() -> None:
    store = SeriesStore(expire_seconds=60)
    store.apply("a1", [_s("th1", T0), _s("th2", T0)])
    assert store.expire((T0 + 60_000) / 1000) == 0  # exactly series_expire old: still kept
    store.apply("a1", [_s("th2", T0 + 30_000)])  # th2 refreshed
    assert store.expire((T0 + 60_001) / 1000) == 1
    assert _devices(store) == {"th2"}
    assert store.expire((T0 + 90_000) / 1000) == 0
    assert store.expire((T0 + 90_001) / 1000) == 1
    assert len(store) == 0


def test_a_late_sample_creating_an_old_series_still_expires_on_time() -> None:
    """Backlog from a spool may create a series whose only sample is old, next to fresh ones."""
    store = SeriesStore(expire_seconds=60)
    store.apply("a1", [_s("fresh", T0 + 100_000)])
    assert store.expire((T0 + 100_000) / 1000) == 0
    store.apply("a1", [_s("late", T0)])  # 100 s old on arrival
    assert store.expire((T0 + 100_001) / 1000) == 1
    assert _devices(store) == {"fresh"}
    # after that scan, the fresh series is the oldest one: it goes exactly series_expire after its sample
    assert store.expire((T0 + 160_000) / 1000) == 0
    assert store.expire((T0 + 160_001) / 1000) == 1


def test_an_expired_series_comes_back_with_its_next_sample() -> None:
    store = SeriesStore(expire_seconds=60)
    store.apply("a1", [_s("th1", T0)])
    assert store.expire((T0 + 61_000) / 1000) == 1
    changed = store.apply("a1", [_s("th1", T0 + 62_000, 21.5)])
    assert [c.value for c in changed] == [21.5]
    assert [s.value for s in store.current(M, (T0 + 62_000) / 1000)] == [21.5]
