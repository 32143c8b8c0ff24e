"""The web status page in a real headless Chromium against a real collector fed through the push API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.webauth import hash_password
from roomwatch.notice import notice_event
from roomwatch.wire import Batch, EventRecord, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import ROOT, http_get, http_post
from tests.peers.chromium import Page, browser_page  # noqa: F401

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


USER, PASSWORD = "duty", "correct horse battery"


def _alerting_config() -> dict[str, Any]:
    """Web user + a door rule that fires at once (DoorOpenTooLong for 0s)."""
    return {"web": {"language": "zh-CN", "users": [{"name": USER, "password_hash": hash_password(PASSWORD, "pbkdf2-sha256")}]},
            "rules": {"overrides": {"DoorOpenTooLong": {"for": "0s"}}}}


@pytest.fixture
def fed_collector(tmp_path: Path) -> Iterator[tuple[CollectorHandle, Feeder]]:
    handle = start_collector(tmp_path, agent_timeout="1h", **_alerting_config())
    feeder = Feeder(handle)
    feeder.push(ROOM)
    yield handle, feeder
    handle.proc.stop()


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


async def _login(page: Page) -> None:
    await page.evaluate("document.getElementById('login-open').click()")
    await page.wait_for("document.getElementById('login-dialog').open", what="the login dialog")
    # A wrong password first: the dialog stays and says so.
    await page.evaluate(f"(() => {{ const f = document.getElementById('login-form'); f.username.value = {USER!r};"
                        " f.password.value = 'wrong'; f.requestSubmit(); })()")
    await page.wait_for("!document.getElementById('login-error').hidden", what="the login error")
    await page.evaluate(f"(() => {{ const f = document.getElementById('login-form'); f.username.value = {USER!r};"
                        f" f.password.value = {PASSWORD!r}; f.requestSubmit(); }})()")
    await page.wait_for(f"document.getElementById('user').textContent === {USER!r}", what="logged in")


async def _tile_text(page: Page, cls: str) -> str:
    return await page.evaluate(f"(document.querySelector('[data-room=\"county-a/room-1\"] .{cls}') || {{}}).textContent")


@pytest.mark.slow
async def test_status_page_in_chromium(fed_collector: tuple[CollectorHandle, Feeder], browser_page: Page) -> None:  # noqa: F811
    c, feeder = fed_collector
    page = browser_page
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
    assert http_get(c.url + "/api/v1/alerts")[0] == 200

    # The door opens: pushed at once as an event, like the agent does.
    now = int(time.time() * 1000)
    feeder.push({("roomwatch_door_open", "door1", ""): 1},
                [EventRecord("door_open", {**PLACE, "device": "door1"}, now, 1.0, "door opened")])
    await page.wait_for("(document.querySelector('[data-room=\"county-a/room-1\"] .door') || {}).textContent === '开'",
                        timeout=30, what="the door to show open")
    row = "#alerts-table tr[data-alertname=\"DoorOpenTooLong\"]"
    await page.wait_for(f"document.querySelector('{row}')", timeout=60, what="the door alert on the page")
    assert await page.evaluate(f"document.querySelector('{row} button.ack') === null")  # not before login
    await page.screenshot(ARTIFACTS / "status-page-alert.png")
    await _login(page)
    await page.wait_for(f"document.querySelector('{row} button.ack')", what="the acknowledge button after login")
    await page.evaluate(f"document.querySelector('{row} button.ack').click()")
    await page.wait_for(f"document.querySelector('{row} td.acked')", what="the alert shown acknowledged")
    alerts = json.loads(http_get(c.url + "/api/v1/alerts")[1])["alerts"]
    door = next(a for a in alerts if a["alertname"] == "DoorOpenTooLong")
    assert door["acknowledged"] is True and door["ack"]["by"] == USER
    # Silence it for an hour from the page.
    await page.evaluate(f"document.querySelector('{row} button.silence').click()")
    await page.wait_for("document.getElementById('silence-dialog').open", what="the silence dialog")
    await page.evaluate("(() => { const f = document.getElementById('silence-form'); f.duration.value = '1h';"
                        " f.comment.value = 'door work'; f.requestSubmit(); })()")
    await page.wait_for("!document.getElementById('silence-dialog').open", what="the silence to be created")
    silences = json.loads(http_get(c.url + "/api/v1/silences")[1])["silences"]
    [silence] = [x for x in silences if x["comment"] == "door work"]
    assert 'device="door1"' in " ".join(silence["matchersText"]) and silence["createdBy"] == USER
    door = next(a for a in json.loads(http_get(c.url + "/api/v1/alerts")[1])["alerts"] if a["alertname"] == "DoorOpenTooLong")
    assert door["silencedBy"] == [silence["id"]]

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

    chart = "figure.chart[data-metric=\"roomwatch_temperature_celsius\"][data-device=\"th1\"] svg"
    assert http_get(c.url + "/api/v1/history?metric=roomwatch_temperature_celsius")[0] == 200
    await page.wait_for(f"document.querySelector('{chart}')", what="the 24-hour temperature chart")
    assert await page.evaluate(f"document.querySelectorAll('{chart} circle.dot, {chart} path.line').length") >= 1
    shot = await page.screenshot(ARTIFACTS / "status-page.png")
    assert shot.stat().st_size > 10_000

    # English at the toggle; the choice survives a reload.
    await page.evaluate("document.getElementById('lang-toggle').click()")
    await page.wait_for("document.querySelector('h1').textContent === 'Server rooms'", what="English heading")
    assert await _tile_text(page, "door") == "open"
    assert await _tile_text(page, "ups") == "mains · 95%"
    await page.goto(c.url + "/")
    await page.wait_for("document.querySelector('[data-room=\"county-a/room-1\"] .door')", what="tile after reload")
    assert await page.evaluate("document.documentElement.lang") == "en"
    await page.screenshot(ARTIFACTS / "status-page-en.png")

    # A phone: one or two tiles across, no horizontal scrolling.
    await page.viewport(390, 844, mobile=True)
    await page.goto(c.url + "/")
    await page.wait_for("document.querySelector('[data-room=\"county-a/room-1\"] .door')", what="tile on a phone")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 391
    await page.screenshot(ARTIFACTS / "status-page-phone.png")

    # Only same-origin requests, no script errors.
    origins: Any = await page.evaluate(
        "[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert origins == [c.url] or origins == [], origins
    assert not page.exceptions, page.exceptions
