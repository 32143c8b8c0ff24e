"""The web status page against a real collector fed through the push API (known values, exact rendering).

The tour of a running ``roomwatch demo`` (login, acknowledge, silence, screenshots in
both languages) is tests/test_status_page_demo.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core.notice import notice_event
from roomwatch.core.wire import Batch, EventRecord, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import ROOT, http_get, http_post
from tests.peers.chromium import Page

ARTIFACTS = ROOT / "test-artifacts"
PLACE = {"agent": "agent-a", "site": "county-a", "room": "room-1"}


class Feeder:
    """Pushes batches as agent-a, the way an agent would."""

    def __init__(self, collector: CollectorHandle):
        self.c = collector
        self.seq = int(time.time() * 1000)

    def push(self, samples: dict[tuple[str, str, str], float], events: list[EventRecord] | None = None) -> None:
        now = int(time.time() * 1000)
        recs = []
        for (metric, device, sensor), value in samples.items():
            labels = {**PLACE, "device": device, **({"sensor": sensor} if sensor else {})}
            recs.append(SampleRecord(metric, labels, value, now))
        self.push_records(recs, events)

    def push_records(self, recs: list[SampleRecord], events: list[EventRecord] | None = None) -> None:
        now = int(time.time() * 1000)
        self.seq += 1
        body = encode_batch(Batch("agent-a", self.seq, recs, events or [], now))
        status, raw = http_post(self.c.url + "/api/v1/push", body, {
            "Authorization": f"Bearer {TOKENS['agent-a']}", "Content-Type": "application/json",
            "Content-Encoding": "gzip"})
        assert status == 200, raw


ROOM = {
    ("roomwatch_device_up", "th1", ""): 1, ("roomwatch_temperature_celsius", "th1", "inlet"): 23.4,
    ("roomwatch_humidity_ratio", "th1", "inlet"): 0.45,
    ("roomwatch_device_up", "door1", ""): 1, ("roomwatch_door_open", "door1", ""): 0,
    ("roomwatch_device_up", "ups1", ""): 1, ("roomwatch_ups_on_battery", "ups1", ""): 0,
    ("roomwatch_ups_battery_charge_ratio", "ups1", ""): 0.95, ("roomwatch_ups_battery_runtime_seconds", "ups1", ""): 1800,
    ("roomwatch_device_up", "leak1", ""): 0,
}


@pytest.fixture
def fed_collector(tmp_path: Path) -> Iterator[tuple[CollectorHandle, Feeder]]:
    """A collector (history answers of at most 1000 points) fed room 1's present by agent-a."""
    handle = start_collector(tmp_path, agent_timeout="1h", web={"language": "zh-CN"}, history={"max_samples": 1000})
    feeder = Feeder(handle)
    feeder.push(ROOM)
    yield handle, feeder
    handle.proc.stop()


@pytest.mark.peer
def test_rooms_api_groups_current_values(fed_collector: tuple[CollectorHandle, Feeder]) -> None:
    c, _ = fed_collector
    status, body = http_get(c.url + "/api/v1/rooms")
    assert status == 200
    doc = json.loads(body)
    assert doc["language"] == "zh-CN"
    [room] = doc["rooms"]
    assert (room["site"], room["room"], room["agents"]) == ("county-a", "room-1", ["agent-a"])
    s = room["summary"]
    assert s["temperature_max"] == 23.4 and s["humidity_min"] == 0.45
    assert (s["doors"], s["doors_open"], s["ups"], s["ups_on_battery"], s["devices_down"]) == (1, 0, 1, 0, 1)
    th1 = next(d for d in room["devices"] if d["device"] == "th1")
    assert th1["up"] is True
    assert th1["series"][0]["labels"] == {"sensor": "inlet"}
    assert [d["device"] for d in doc["down"]["devices"]] == ["leak1"]
    assert [a["id"] for a in doc["down"]["agents"]] == ["agent-b"]  # listed in the config, never pushed


@pytest.mark.peer
def test_static_files_and_headers(fed_collector: tuple[CollectorHandle, Feeder]) -> None:
    c, _ = fed_collector
    status, body = http_get(c.url + "/")
    assert status == 200 and b'data-default-lang="zh-CN"' in body
    for name in ("app.js", "style.css"):
        assert http_get(f"{c.url}/static/{name}")[0] == 200
    assert http_get(c.url + "/static/../__init__.py")[0] == 404
    assert http_get(c.url + "/static/index.html")[0] == 404
    # Nothing on the page points outside the collector.
    for name in ("index.html", "app.js", "style.css"):
        text = (ROOT / "collector" / "web" / name).read_text()
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name


async def _tile_text(page: Page, cls: str, room: str = "county-a/room-1") -> str:
    return await page.evaluate(f"(document.querySelector('[data-room=\"{room}\"] .{cls}') || {{}}).textContent")


def _history_records(room: str, device: str, sensors: int, every: int, hours: int, base: float) -> list[SampleRecord]:
    """``sensors`` temperature series of one device, a sample every ``every`` s for ``hours`` h until now."""
    now = int(time.time() * 1000)
    out = []
    for n in range(1, sensors + 1):
        labels = {**PLACE, "room": room, "device": device, "sensor": f"s{n:02d}"}
        out += [SampleRecord("roomwatch_temperature_celsius", labels, base + n / 10 + (k % 12) / 20, now - k * every * 1000)
                for k in range(hours * 3600 // every, -1, -1)]
        out.append(SampleRecord("roomwatch_device_up", {k: v for k, v in labels.items() if k != "sensor"}, 1, now))
    return out


@pytest.mark.slow
async def test_status_page_in_chromium(fed_collector: tuple[CollectorHandle, Feeder], browser_page: Page) -> None:
    """Exact rendering of known values, the fallback note, and 24-hour charts of rooms with many sensors.

    (Login, acknowledge, silence and screenshots of a live room: tests/test_status_page_demo.py.)
    """
    c, feeder = fed_collector
    page = browser_page
    # Room 1 gets 11 more temperature sensors (12 in all), a sample every 30 s for 3 hours: 4,300 raw samples,
    # more than history.max_samples (1000) — only the page's step=300s (≈37 points a sensor) makes them fit.
    # Room 2 has 40 sensors: even downsampled (≈1,500 points) it is over the limit, and only room 2 loses its charts.
    feeder.push_records(_history_records("room-1", "th-rack", 11, 30, 3, 18.0))
    feeder.push_records(_history_records("room-2", "th-wall", 40, 60, 3, 21.0))
    feeder.push(ROOM)  # the present of room 1 (th1 the hottest), after the backlog
    status, body = http_get(c.url + "/api/v1/history?metric=roomwatch_temperature_celsius&start=0&room=room-1")
    assert status == 400 and b"more than 1000 samples" in body  # what the page used to ask for

    await page.viewport(1280, 900)
    await page.goto(c.url + "/")
    await page.wait_for("document.querySelector('[data-room=\"county-a/room-1\"] .temp')", what="the room tile")
    # Chinese by default (web.language), values of the pushed readings.
    assert await page.evaluate("document.querySelector('h1').textContent") == "机房监控"
    assert await _tile_text(page, "temp") == "23.4 °C"
    assert await _tile_text(page, "hum") == "45%"
    assert await _tile_text(page, "door") == "关"
    assert await _tile_text(page, "ups") == "市电 · 95%"
    assert not await page.evaluate("document.querySelector('[data-room=\"county-a/room-1\"] .door').classList.contains('warn')")
    down = await page.evaluate("document.getElementById('down').textContent")
    assert "leak1" in down and "agent-b" in down

    # The door opens: pushed at once as an event, like the agent does.
    now = int(time.time() * 1000)
    feeder.push({("roomwatch_door_open", "door1", ""): 1},
                [EventRecord("door_open", {**PLACE, "device": "door1"}, now, 1.0, "door opened")])
    await page.wait_for("(document.querySelector('[data-room=\"county-a/room-1\"] .door') || {}).textContent === '开'",
                        timeout=30, what="the door to show open")

    # A leak the agent's local fallback already sent by SMS while the link was down: shown with a note.
    began = now - 600_000
    leak = {**PLACE, "device": "leak1"}
    feeder.push({}, [notice_event("WaterLeak", leak, "firing", "local-sms", "gsm_modem", began + 120_000, began / 1000,
                                  "leak1: 漏水")])
    feeder.push({}, [EventRecord("water_leak", leak, began, 1.0)])
    leak_row = "#alerts-table tr[data-alertname=\"WaterLeak\"]"
    await page.wait_for(f"document.querySelector('{leak_row} .fallback-note')", timeout=30, what="the fallback note")
    note = await page.evaluate(f"document.querySelector('{leak_row} .fallback-note').textContent")
    assert note.startswith("已由机房代理本地兜底通道（短信）于 "), note

    # Charts: every sensor of room 1, downsampled; room 2 says its history is not available, alone.
    await page.evaluate("loadHistory()")
    room1 = "figure.chart[data-metric=\"roomwatch_temperature_celsius\"]"
    await page.wait_for(f"document.querySelectorAll('{room1} svg').length >= 12", what="the 12 charts of room 1")
    await page.wait_for("document.querySelector('.history-error[data-room=\"county-a/room-2\"]')",
                        what="room 2's history note")
    charts = await page.evaluate(f"""[...document.querySelectorAll('{room1}')].map(f => [f.dataset.device,
        f.querySelector('h4').textContent, (f.querySelector('path.line') || {{getAttribute: () => ''}}).getAttribute('d')])""")
    assert {d for d, _, _ in charts} == {"th1", "th-rack"} and len(charts) == 12, charts
    assert not any("room-2" in title for _, title, _ in charts)
    for device, title, d in charts:
        points = len(re.findall(r"[ML]", d))
        if device == "th-rack":  # 3 hours at one point per 5 minutes, not 360 raw samples
            assert 30 <= points <= 40, (title, points)
    note = await page.evaluate("document.querySelector('.history-error[data-room=\"county-a/room-2\"]').textContent")
    assert note == "county-a / room-2：历史曲线暂不可用"
    reason = await page.evaluate("document.querySelector('.history-error[data-room=\"county-a/room-2\"]').title")
    assert "more than 1000 samples" in reason
    assert await page.evaluate("document.querySelectorAll('.history-error').length") == 1
    assert await page.evaluate("document.getElementById('history-na') === null")
    shot = await page.screenshot(ARTIFACTS / "status-page.png")
    assert shot.stat().st_size > 10_000

    # English at the toggle; the choice survives a reload.
    await page.evaluate("document.getElementById('lang-toggle').click()")
    await page.wait_for("document.querySelector('h1').textContent === 'Server rooms'", what="English heading")
    assert await _tile_text(page, "door") == "open"
    assert await _tile_text(page, "ups") == "mains · 95%"
    assert await page.evaluate("document.querySelector('.history-error').textContent") == \
        "county-a / room-2: history not available"
    await page.goto(c.url + "/")
    await page.wait_for("document.querySelector('[data-room=\"county-a/room-1\"] .door')", what="tile after reload")
    assert await page.evaluate("document.documentElement.lang") == "en"
    await page.screenshot(ARTIFACTS / "status-page-en.png")

    # Only same-origin requests, no script errors.
    origins: Any = await page.evaluate(
        "[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert origins == [c.url] or origins == [], origins
    assert not page.exceptions, page.exceptions
