"""``GET /api/v1/history?step=``: server-side downsampling, against a real collector process."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomwatch.core.wire import Batch, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import http_get, http_post

pytestmark = pytest.mark.peer  # every test here starts a process

T = "roomwatch_temperature_celsius"


def _push(c: CollectorHandle, seq: int, samples: list[SampleRecord]) -> None:
    body = encode_batch(Batch("agent-a", seq, samples, [], int(time.time() * 1000)))
    status, raw = http_post(c.url + "/api/v1/push", body,
                            {"Authorization": f"Bearer {TOKENS['agent-a']}", "Content-Encoding": "gzip"})
    assert status == 200, raw


def _history(c: CollectorHandle, **params: str) -> tuple[int, dict]:
    status, body = http_get(c.url + "/api/v1/history?" + urllib.parse.urlencode(params))
    return status, json.loads(body)


@pytest.fixture
def small_collector(tmp_path: Path) -> Iterator[CollectorHandle]:
    """A collector whose history answers hold at most 100 points (the smallest allowed)."""
    c = start_collector(tmp_path, agent_timeout="1h", history={"max_samples": 100})
    yield c
    c.proc.stop()


def test_step_averages_epoch_aligned_buckets_and_skips_empty_ones(small_collector: CollectorHandle) -> None:
    c = small_collector
    hour = (int(time.time()) // 3600 - 1) * 3600  # the start of the previous hour: all the data lies inside that hour
    base = hour + 60  # a minute boundary, Unix seconds
    ms = base * 1000
    known = [(0, 10.0), (30_000, 20.0), (59_999, 30.0),  # bucket 0: both edges of [base, base+60)
             (60_000, 100.0),  # the first millisecond of bucket 1 belongs to bucket 1
             # bucket 2 (base+120 … base+180) holds nothing
             (185_000, 7.0), (190_000, 9.0)]  # bucket 3
    _push(c, 1, [SampleRecord(T, {"device": "th1"}, v, ms + dt) for dt, v in known])
    _push(c, 2, [SampleRecord(T, {"device": "other"}, 50.0, ms + 5_000)])

    status, doc = _history(c, metric=T, start=str(base), end=str(base + 600), step="60s", device="th1")
    assert status == 200, doc
    (series,) = doc["series"]
    assert series["metric"] == T and series["labels"] == {"agent": "agent-a", "device": "th1"}
    # [bucket start, average]: 10/20/30 → 20, the lone 100, no point for the empty bucket, 7/9 → 8.
    assert series["samples"] == [[base, 20.0], [base + 60, 100.0], [base + 180, 8.0]]

    # A window starting inside a bucket: that bucket keeps its aligned start but averages only what is inside.
    status, doc = _history(c, metric=T, start=str(base + 30), end=str(base + 185), step="1m", device="th1")
    assert doc["series"][0]["samples"] == [[base, 25.0], [base + 60, 100.0], [base + 180, 7.0]]

    # Seconds work as well as durations; a step larger than the data gives one point per series.
    assert _history(c, metric=T, start=str(base), end=str(base + 600), step="60", device="th1")[1] == \
        _history(c, metric=T, start=str(base), end=str(base + 600), step="1m", device="th1")[1]
    status, doc = _history(c, metric=T, start=str(base), end=str(base + 600), step="1h")
    assert {s["labels"]["device"]: s["samples"] for s in doc["series"]} == {
        "th1": [[hour, sum(v for _, v in known) / len(known)]], "other": [[hour, 50.0]]}

    # Without step: every raw sample, as before.
    raw = _history(c, metric=T, start=str(base), end=str(base + 600), device="th1")[1]["series"][0]["samples"]
    assert raw == [[(ms + dt) / 1000, v] for dt, v in known]


def test_max_samples_bounds_the_downsampled_answer(small_collector: CollectorHandle) -> None:
    c = small_collector
    now = int(time.time())
    start = now - 200
    # Two sensors, one sample a second for 120 s: 240 raw samples, more than max_samples (100).
    for i, device in enumerate(("a", "b")):
        _push(c, 10 + i, [SampleRecord(T, {"device": device}, 20.0 + k % 7, (start + k) * 1000) for k in range(120)])

    status, doc = _history(c, metric=T, start=str(start - 1), end=str(now))
    assert status == 400 and "more than 100 samples" in doc["error"] and "step=" in doc["error"], doc
    # 2 s buckets: 60 points per sensor, 120 in all — the bound counts the downsampled points and refuses.
    status, doc = _history(c, metric=T, start=str(start - 1), end=str(now), step="2s")
    assert status == 400 and "more than 100 samples" in doc["error"] and "larger step" in doc["error"], doc
    # …while one sensor alone at 2 s (≤ 61 points), or both at 10 s (≤ 26 points), fit.
    status, doc = _history(c, metric=T, start=str(start - 1), end=str(now), step="2s", device="a")
    assert status == 200 and 60 <= len(doc["series"][0]["samples"]) <= 61
    status, doc = _history(c, metric=T, start=str(start - 1), end=str(now), step="10s")
    assert status == 200 and [s["labels"]["device"] for s in doc["series"]] == ["a", "b"]
    for s in doc["series"]:
        assert 12 <= len(s["samples"]) <= 13
        assert all(ts % 10 == 0 for ts, _ in s["samples"])
        assert [ts for ts, _ in s["samples"]] == sorted(ts for ts, _ in s["samples"])


def test_bad_step_is_a_clear_400(small_collector: CollectorHandle) -> None:
    for step in ("0s", "0", "500ms", "-5", "fast", "5 minutes", "nan", "400d", ""):
        status, doc = _history(small_collector, metric=T, step=step)
        assert status == 400 and "step" in doc["error"], (step, doc)
    assert small_collector.proc.alive()
