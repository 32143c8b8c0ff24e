"""The push protocol against a real collector process: each refusal as docs/api.md says."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from roomwatch.core.wire import Batch, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle
from tests.helpers import http_json, http_post, metric_value


def _batch(agent: str = "agent-a", seq: int = 1, n: int = 3, value: float = 21.5) -> Batch:
    now = int(time.time() * 1000)
    samples = [SampleRecord("roomwatch_temperature_celsius", {"agent": agent, "device": f"t{i}", "room": "r1"},
                            value + i, now) for i in range(n)]
    return Batch(agent, seq, samples, [], now)


def _push(c: CollectorHandle, body: bytes, token: str | None = TOKENS["agent-a"], gz: bool = True,
          extra: dict[str, str] | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if gz:
        headers["Content-Encoding"] = "gzip"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, raw = http_post(c.url + "/api/v1/push", body, headers)
    return status, json.loads(raw) if raw else {}


def _push_chunked(c: CollectorHandle, body: bytes) -> tuple[int, dict]:
    """POST with Transfer-Encoding: chunked (no Content-Length), as some HTTP clients send."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(c.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        pieces = (body[i:i + 8192] for i in range(0, len(body), 8192))
        conn.request("POST", "/api/v1/push", body=pieces, encode_chunked=True,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKENS['agent-a']}"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def test_accepts_gzip_and_plain(collector: CollectorHandle) -> None:
    status, doc = _push(collector, encode_batch(_batch(seq=1), compress=True))
    assert (status, doc) == (200, {"accepted": 3, "duplicate": False})
    status, doc = _push(collector, encode_batch(_batch(seq=2), compress=False), gz=False)
    assert (status, doc) == (200, {"accepted": 3, "duplicate": False})
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", agent="agent-a", device="t1") == 22.5
    assert metric_value(text, "roomwatch_agent_up", agent="agent-a") == 1


def test_missing_and_wrong_token_are_401(collector: CollectorHandle) -> None:
    body = encode_batch(_batch())
    assert _push(collector, body, token=None)[0] == 401
    status, doc = _push(collector, body, token="wrong-token-xxxxxxxx")
    assert status == 401 and "token" in doc["error"]
    # nothing was stored
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius") is None
    assert "wrong-token-xxxxxxxx" not in collector.proc.log()  # the presented secret is never logged


def test_other_agents_id_is_403(collector: CollectorHandle) -> None:
    status, doc = _push(collector, encode_batch(_batch(agent="agent-b")), token=TOKENS["agent-a"])
    assert status == 403
    assert "agent-a" in doc["error"] and "agent-b" in doc["error"]
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius") is None


def test_malformed_json_is_400_with_reason(collector: CollectorHandle) -> None:
    status, doc = _push(collector, gzip.compress(b'{"agent": "agent-a", "seq": 1, "samples": [}'))
    assert status == 400 and "not valid JSON" in doc["error"]
    bad_sample = {"agent": "agent-a", "seq": 5, "samples": [{"metric": "roomwatch_temperature_celsius",
                                                             "labels": {}, "value": "hot", "ts": 1_700_000_000_000}]}
    status, doc = _push(collector, gzip.compress(json.dumps(bad_sample).encode()))
    assert status == 400 and doc["error"] == "samples[0].value must be a finite number"
    status, doc = _push(collector, gzip.compress(b'{"agent": "agent-a", "seq": -1}'))
    assert status == 400 and "seq" in doc["error"]
    status, doc = _push(collector, b"\x1f\x8bnot really gzip")
    assert status == 400


@pytest.mark.peer
def test_oversize_is_413(tmp_path) -> None:
    from tests.conftest import start_collector

    c = start_collector(tmp_path, max_body="64KiB", max_body_decompressed="256KiB")
    try:
        big = encode_batch(_batch(n=5000), compress=False)
        assert len(big) > 256 * 1024
        status, _ = _push(c, big, gz=False)
        assert status == 413
        # a gzip bomb: small on the wire, huge once decompressed
        bomb = gzip.compress(b'{"agent":"agent-a","seq":1,"samples":[],"pad":"' + b"x" * 5_000_000 + b'"}')
        assert len(bomb) < 64 * 1024
        status, _ = _push(c, bomb)
        assert status == 413
        # chunked, so no Content-Length to check up front: counted as it arrives, still 413 past max_body
        mid = encode_batch(_batch(n=1000), compress=False)
        assert 64 * 1024 < len(mid) < 256 * 1024
        assert _push_chunked(c, mid)[0] == 413
        assert _push_chunked(c, encode_batch(_batch(seq=7), compress=False)) == (200, {"accepted": 3, "duplicate": False})
        assert metric_value(c.metrics(), "roomwatch_collector_samples_received_total") == 3  # the big one stored nothing
        assert c.proc.alive()
    finally:
        c.proc.stop()


def test_replayed_seq_is_not_double_counted(collector: CollectorHandle) -> None:
    body = encode_batch(_batch(seq=42))
    assert _push(collector, body) == (200, {"accepted": 3, "duplicate": False})
    assert _push(collector, body) == (200, {"accepted": 0, "duplicate": True})
    # out of order is fine: 41 arrives after 42, then is replayed too
    assert _push(collector, encode_batch(_batch(seq=41)))[1]["duplicate"] is False
    assert _push(collector, encode_batch(_batch(seq=41)))[1]["duplicate"] is True
    assert metric_value(collector.metrics(), "roomwatch_collector_samples_received_total") == 6
    agents = {a["id"]: a for a in http_json(collector.url + "/api/v1/agents")["agents"]}
    assert agents["agent-a"]["samples"] == 6 and agents["agent-a"]["pushes"] == 2


def test_agent_label_cannot_be_forged(collector: CollectorHandle) -> None:
    b = _batch(seq=7)
    b.samples[0].labels["agent"] = "agent-b"
    assert _push(collector, encode_batch(b))[0] == 200
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", agent="agent-b") is None
    assert metric_value(text, "roomwatch_temperature_celsius", agent="agent-a", device="t0") == 21.5


def test_late_sample_does_not_replace_newer_value(collector: CollectorHandle) -> None:
    now = int(time.time() * 1000)
    fresh = Batch("agent-a", 1, [SampleRecord("roomwatch_temperature_celsius", {"device": "t"}, 30.0, now)], [], now)
    late = Batch("agent-a", 2, [SampleRecord("roomwatch_temperature_celsius", {"device": "t"}, 20.0, now - 60_000)],
                 [], now)
    assert _push(collector, encode_batch(fresh))[0] == 200
    assert _push(collector, encode_batch(late))[0] == 200
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius", device="t") == 30.0


def test_skewed_agent_clock_is_corrected(collector: CollectorHandle) -> None:
    # The agent's clock is a day behind: its "now" samples are still current after correction.
    behind = int(time.time() * 1000) - 86_400_000
    b = Batch("agent-a", 9, [SampleRecord("roomwatch_temperature_celsius", {"device": "t"}, 25.0, behind)], [], behind)
    assert _push(collector, encode_batch(b))[0] == 200
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius", device="t") == 25.0
    agents = {a["id"]: a for a in http_json(collector.url + "/api/v1/agents")["agents"]}
    assert agents["agent-a"]["clock_skew_seconds"] > 86_000


def test_an_agent_clock_still_at_1970_is_corrected(collector: CollectorHandle) -> None:
    """A board without a battery-backed clock before NTP answers: its batches are kept, not refused."""
    boot = 120_000  # two minutes after 1970-01-01: the clock never set
    b = Batch("agent-a", 11, [SampleRecord("roomwatch_temperature_celsius", {"device": "t70"}, 24.0, boot)], [], boot)
    before = time.time()
    assert _push(collector, encode_batch(b)) == (200, {"accepted": 1, "duplicate": False})
    agents = {a["id"]: a for a in http_json(collector.url + "/api/v1/agents")["agents"]}
    assert agents["agent-a"]["clock_skew_seconds"] > before - 200  # ~56 years, corrected
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius", device="t70") == 24.0
    # NTP answered: the clock is right now, but a sample spooled while it read 1970 cannot be placed
    now = int(time.time() * 1000)
    late = Batch("agent-a", 12, [SampleRecord("roomwatch_temperature_celsius", {"device": "t71"}, 23.0, boot)], [], now)
    assert _push(collector, encode_batch(late)) == (200, {"accepted": 1, "duplicate": False})
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", device="t71") == 23.0  # at its receive time
    assert metric_value(text, "roomwatch_collector_past_timestamps_total", agent="agent-a") == 1
    # rebooted at 1970 again, it sends its spool: samples from before the reboot had a right clock, kept as stamped
    earlier = int(time.time() * 1000) - 3 * 3600 * 1000
    spooled = Batch("agent-a", 13, [SampleRecord("roomwatch_temperature_celsius", {"device": "t72"}, 35.0, earlier)],
                    [], boot)
    current = Batch("agent-a", 14, [SampleRecord("roomwatch_temperature_celsius", {"device": "t72"}, 22.0, boot)],
                    [], boot)
    assert _push(collector, encode_batch(current))[0] == 200  # fresh data goes first
    assert _push(collector, encode_batch(spooled))[0] == 200
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", device="t72") == 22.0  # the present wins
    assert metric_value(text, "roomwatch_collector_future_timestamps_total", agent="agent-a") is None


def test_down_device_series_leave_metrics(collector: CollectorHandle) -> None:
    now = int(time.time() * 1000)
    up = [SampleRecord("roomwatch_temperature_celsius", {"device": "th"}, 22.0, now),
          SampleRecord("roomwatch_device_up", {"device": "th", "driver": "mqtt"}, 1.0, now)]
    assert _push(collector, encode_batch(Batch("agent-a", 1, up, [], now)))[0] == 200
    assert metric_value(collector.metrics(), "roomwatch_temperature_celsius", device="th") == 22.0
    down = [SampleRecord("roomwatch_device_up", {"device": "th", "driver": "mqtt"}, 0.0, now + 1000)]
    assert _push(collector, encode_batch(Batch("agent-a", 2, down, [], now)))[0] == 200
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", device="th") is None
    assert metric_value(text, "roomwatch_device_up", device="th") == 0


def test_a_sample_stamped_in_the_future_is_stored_at_its_receive_time(collector: CollectorHandle) -> None:
    """One sample 30 days ahead must not freeze the series: history, current value and alerts agree."""
    import urllib.parse

    from roomwatch.core.wire import EventRecord
    from tests.helpers import http_get

    labels = {"agent": "agent-a", "device": "th", "room": "r1"}
    now = int(time.time() * 1000)
    ahead = now + 30 * 86400 * 1000
    hot = Batch("agent-a", 1, [SampleRecord("roomwatch_temperature_celsius", labels, 35.0, ahead)],
                [EventRecord("door_open", {**labels, "device": "d"}, ahead, 1.0)], now)
    before = time.time()
    status, doc = _push(collector, encode_batch(hot))
    after = time.time()
    assert (status, doc) == (200, {"accepted": 2, "duplicate": False, "future_timestamps": 2})
    # The alert engine saw the sample at its receive time, not 30 days ahead.
    alerts = http_json(collector.url + "/api/v1/alerts")["alerts"]
    high = [a for a in alerts if a["alertname"] == "RoomTemperatureHigh"]
    assert len(high) == 1 and before - 1 <= high[0]["activeSince"] <= after + 1
    # The next sample, taken a second later by a clock that is right again, replaces it (stamped a second
    # after the receive time: no need to wait for the second to pass, the collector takes a stamp that close).
    later = int(after * 1000) + 1000
    cool = Batch("agent-a", 2, [SampleRecord("roomwatch_temperature_celsius", labels, 21.0, later)], [], later)
    assert _push(collector, encode_batch(cool)) == (200, {"accepted": 1, "duplicate": False})
    text = collector.metrics()
    assert metric_value(text, "roomwatch_temperature_celsius", device="th") == 21.0
    assert metric_value(text, "roomwatch_collector_future_timestamps_total", agent="agent-a") == 2
    assert not [a for a in http_json(collector.url + "/api/v1/alerts")["alerts"]
                if a["alertname"] == "RoomTemperatureHigh"]  # 21 °C clears it
    # History holds both samples, the first at its receive time; nothing 30 days ahead.
    query = urllib.parse.urlencode({"metric": "roomwatch_temperature_celsius", "device": "th",
                                    "start": before - 60, "end": ahead / 1000 + 60})
    status, raw = http_get(collector.url + "/api/v1/history?" + query)
    assert status == 200
    samples = json.loads(raw)["series"][0]["samples"]
    assert [v for _, v in samples] == [35.0, 21.0]
    assert before - 1 <= samples[0][0] <= after + 1
    assert "ahead of the collector's clock" in collector.proc.log()
