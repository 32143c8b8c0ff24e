"""The status page in a real headless Chromium against a running ``roomwatch demo`` (issue 7, item 5).

The demo runs as a user would start it (``roomwatch demo``, its door cycling every
20 s): its SNMP, NUT, Modbus and MQTT simulators feed a real agent and collector;
the test reads the login the demo printed, waits for the demo's door to open, sees
the ``DemoDoorOpened`` alert on the page and in the demo's notification output,
logs in, acknowledges and silences it from the page, and saves screenshots in
both languages to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, RoomwatchProcess, http_get, http_json, wait_for
from tests.peers.chromium import Page

ARTIFACTS = ROOT / "test-artifacts"
SITE, ROOM = "demo-county", "server-room-1"
TILE = f'[data-room="{SITE}/{ROOM}"]'
ROW = '#alerts-table tr[data-alertname="DemoDoorOpened"]'
#: The demo's devices by protocol, and a metric each must deliver.
DEVICES = {"th-modbus": "roomwatch_temperature_celsius", "ups-modbus": "roomwatch_ups_battery_charge_ratio",
           "room-th1": "roomwatch_temperature_celsius", "door1": "roomwatch_door_open",
           "ups-nut": "roomwatch_ups_battery_charge_ratio", "ups-snmp": "roomwatch_ups_battery_charge_ratio"}


@dataclass
class Demo:
    proc: RoomwatchProcess
    url: str  # the collector (status page)
    agent_url: str
    user: str
    password: str

    def output(self) -> str:
        return self.proc.log()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """``roomwatch demo`` on free ports with a fast door; stopped (and checked to stop cleanly) afterwards."""
    proc = RoomwatchProcess(["demo", "--collector-port", "0", "--agent-port", "0", "--dir", str(tmp_path / "demo"),
                             "--door-every", "20s"], tmp_path / "demo.log")
    try:
        wait_for(lambda: "Press Ctrl-C" in proc.log(), timeout=150, proc=proc.proc, what="the demo to print its URLs")
        out = proc.log()
        assert "not started" not in out, f"a simulator is missing (install the test peers: ./dev test):\n{out}"
        url = re.search(r"status page\s+(http://127\.0\.0\.1:\d+)/", out)
        agent = re.search(r"agent metrics\s+(http://127\.0\.0\.1:\d+)/metrics", out)
        login = re.search(r"login\s+user (\S+), password (\S+)", out)
        assert url and agent and login, out
        yield Demo(proc, url.group(1), agent.group(1), login.group(1), login.group(2))
    finally:
        code = proc.stop()
    assert code == 0, proc.log()
    assert "demo stopped." in proc.log()


def _room(demo: Demo) -> dict[str, Any]:
    rooms = http_json(demo.url + "/api/v1/rooms")["rooms"]
    return next(r for r in rooms if (r["site"], r["room"]) == (SITE, ROOM))


def _all_devices_report(demo: Demo) -> bool:
    devices = {d["device"]: d for d in _room(demo)["devices"]}
    return all(name in devices and devices[name]["up"] and any(s["metric"] == metric for s in devices[name]["series"])
               for name, metric in DEVICES.items())


def _agent_values(demo: Demo) -> dict[str, list[tuple[str, float]]]:
    """Room quantities as the agent read them from the simulators: metric → [(device, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(demo.agent_url + "/metrics")
    assert status == 200
    out: dict[str, list[tuple[str, float]]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.labels.get("device") in DEVICES:
                out.setdefault(s.name, []).append((s.labels["device"], float(s.value)))
    return out


async def _tiles_match_agent(page: Page, demo: Demo) -> str:
    """'' when the tile shows what the agent read from the devices (within what drifts between two reads)."""
    await page.evaluate("refresh()")  # the page's own refresh: GET /api/v1/rooms and /api/v1/alerts now
    tile = await page.evaluate(f"""(() => {{ const q = (c) => (document.querySelector('{TILE} .' + c) || {{}}).textContent;
        return {{temp: q('temp'), hum: q('hum'), ups: q('ups')}}; }})()""")
    got = _agent_values(demo)
    temps = dict(got.get("roomwatch_temperature_celsius", []))
    hums = [v for _, v in got.get("roomwatch_humidity_ratio", [])]
    charges = dict(got.get("roomwatch_ups_battery_charge_ratio", []))
    on_battery = any(v >= 1 for _, v in got.get("roomwatch_ups_on_battery", []))
    if set(temps) != {"th-modbus", "room-th1"} or set(charges) != {"ups-modbus", "ups-nut", "ups-snmp"} or not hums:
        return f"the agent does not read every simulator right now: {got}"
    if None in tile.values():
        return f"the tile lacks a line: {tile}"
    problems = []
    # The hottest sensor (Modbus XY-MD02 or the zigbee2mqtt sensor over MQTT).
    shown = float(tile["temp"].removesuffix(" °C"))
    if abs(shown - max(temps.values())) > 0.3:
        problems.append(f"temperature {tile['temp']} vs {temps}")
    pcts = [int(x) for x in re.findall(r"(\d+)%", tile["hum"])]
    if abs(pcts[0] - round(min(hums) * 100)) > 2 or abs(pcts[-1] - round(max(hums) * 100)) > 2:
        problems.append(f"humidity {tile['hum']} vs {hums}")
    # The UPS line: on mains unless one of the SNMP/NUT/Modbus UPSes runs on battery; the lowest charge.
    state, _, charge = tile["ups"].partition(" · ")
    if state != ("电池供电" if on_battery else "市电"):
        problems.append(f"UPS state {tile['ups']} vs on battery {on_battery}")
    if abs(int(charge.split("%")[0]) - round(min(charges.values()) * 100)) > 2:
        problems.append(f"UPS charge {tile['ups']} vs {charges}")
    return "; ".join(problems)


async def _login(page: Page, user: str, password: str) -> None:
    await page.evaluate("document.getElementById('login-open').click()")
    await page.wait_for("document.getElementById('login-dialog').open", what="the login dialog")
    # A wrong password first: the dialog stays and says so.
    fill = "(() => {{ const f = document.getElementById('login-form'); f.username.value = {u}; f.password.value = {p};" \
           " f.requestSubmit(); }})()"
    await page.evaluate(fill.format(u=json.dumps(user), p=json.dumps(password + "-wrong")))
    await page.wait_for("!document.getElementById('login-error').hidden", what="the login error")
    await page.evaluate(fill.format(u=json.dumps(user), p=json.dumps(password)))
    await page.wait_for(f"document.getElementById('user').textContent === {json.dumps(user)}", what="logged in")


def _demo_alert(demo: Demo) -> dict[str, Any] | None:
    alerts = http_json(demo.url + "/api/v1/alerts")["alerts"]
    return next((a for a in alerts if a["alertname"] == "DemoDoorOpened"), None)


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_status_page_tour_of_the_demo(demo: Demo, browser_page: Page) -> None:
    page = browser_page
    wait_for(lambda: _all_devices_report(demo), timeout=90, interval=0.5, proc=demo.proc.proc,
             what="every simulated device (SNMP, NUT, Modbus, MQTT) to report through the agent")
    assert demo.user == "demo" and len(demo.password) >= 12
    collector_yaml = (Path(demo.output().split("files and logs in ")[1].split(")")[0]) / "collector.yaml").read_text()
    assert demo.password not in collector_yaml  # only its hash is written down

    await page.viewport(1280, 900)
    await page.goto(demo.url + "/")
    await page.wait_for(f"document.querySelector('{TILE} .temp')", what="the demo room's tile")
    assert await page.evaluate("document.querySelector('h1').textContent") == "机房监控"  # Chinese by default
    # The tile shows the values the agent read from the simulators (they drift: compare until a read agrees).
    problems = ""
    for _ in range(20):
        problems = await _tiles_match_agent(page, demo)
        if not problems:
            break
        await asyncio.sleep(1)
    assert not problems, problems

    # The demo's door opens (every 20 s): the tile says so, DemoDoorOpened appears at once, and the demo's
    # notification sink (a real webhook channel) prints it.
    await page.wait_for(f"(document.querySelector('{TILE} .door') || {{}}).textContent === '开'", timeout=60,
                        what="the demo's door to show open")
    await page.wait_for(f"document.querySelector('{ROW}')", timeout=30, what="the DemoDoorOpened alert on the page")
    assert await page.evaluate(f"document.querySelector('{ROW} .sev').textContent") == "info"
    assert await page.evaluate(f"document.querySelector('{ROW} button.ack') === null")  # not before login
    wait_for(lambda: re.search(r"notification \S+ FIRING DemoDoorOpened \[info\] demo-county/server-room-1/door1 — ",
                               demo.output()), timeout=30, what="the notification in the demo's output")
    await page.screenshot(ARTIFACTS / "status-page-demo-alert.png")

    # A notification's link (#/alerts/<id>) marks that alert's row; an id no longer active says so.
    alert_id = await page.evaluate(f"document.querySelector('{ROW}').dataset.alertId")
    await page.evaluate(f"location.hash = '#/alerts/' + encodeURIComponent({json.dumps(alert_id)})")
    await page.wait_for(f"document.querySelector('{ROW}.linked')", what="the linked alert marked")
    assert await page.evaluate("document.querySelectorAll('tr.linked').length") == 1
    await page.evaluate("location.hash = '#/alerts/0000-1'")
    await page.wait_for("document.querySelector('.linked-gone')", what="the note that the linked alert is gone")
    assert await page.evaluate("document.querySelectorAll('tr.linked').length") == 0
    await page.evaluate("location.hash = ''")

    # Log in with what the demo printed; acknowledge, then silence, from the page.
    await _login(page, demo.user, demo.password)
    await page.wait_for(f"document.querySelector('{ROW} button.ack')", what="the acknowledge button after login")
    await page.evaluate(f"document.querySelector('{ROW} button.ack').click()")
    await page.wait_for(f"document.querySelector('{ROW} td.acked')", what="the alert shown acknowledged")
    alert = _demo_alert(demo)
    assert alert is not None and alert["acknowledged"] is True and alert["ack"]["by"] == "demo"
    await page.evaluate(f"document.querySelector('{ROW} button.silence').click()")
    await page.wait_for("document.getElementById('silence-dialog').open", what="the silence dialog")
    await page.evaluate("(() => { const f = document.getElementById('silence-form'); f.duration.value = '1h';"
                        " f.comment.value = 'demo tour'; f.requestSubmit(); })()")
    await page.wait_for("!document.getElementById('silence-dialog').open", what="the silence to be created")
    silences = json.loads(http_get(demo.url + "/api/v1/silences")[1])["silences"]
    [silence] = [x for x in silences if x["comment"] == "demo tour"]
    matchers = " ".join(silence["matchersText"])
    assert 'alertname="DemoDoorOpened"' in matchers and 'device="door1"' in matchers and silence["createdBy"] == "demo"
    alert = _demo_alert(demo)
    assert alert is not None and alert["silencedBy"] == [silence["id"]]

    # 24-hour charts of both temperature sensors: Modbus and MQTT.
    for device in ("th-modbus", "room-th1"):
        chart = f'figure.chart[data-metric="roomwatch_temperature_celsius"][data-device="{device}"] svg'
        await page.evaluate("loadHistory()")
        await page.wait_for(f"document.querySelector('{chart}')", timeout=30, what=f"the chart of {device}")
        assert await page.evaluate(f"document.querySelectorAll('{chart} circle.dot, {chart} path.line').length") >= 1
    assert await page.evaluate("document.querySelectorAll('.history-error').length") == 0
    shot = await page.screenshot(ARTIFACTS / "status-page-demo-zh.png")
    assert shot.stat().st_size > 10_000

    # English at the toggle.
    await page.evaluate("document.getElementById('lang-toggle').click()")
    await page.wait_for("document.querySelector('h1').textContent === 'Server rooms'", what="English heading")
    assert await page.evaluate(f"document.querySelector('{TILE} .door').textContent") in ("open", "closed")
    assert (await page.evaluate(f"document.querySelector('{TILE} .ups').textContent")).startswith(("mains", "battery"))
    assert (await page.evaluate(f"document.querySelector('{ROW} td.acked').textContent")) == "Acknowledged (demo)"
    await page.screenshot(ARTIFACTS / "status-page-demo-en.png")

    # A phone: no horizontal scrolling.
    await page.viewport(390, 844, mobile=True)
    await page.goto(demo.url + "/")
    await page.wait_for(f"document.querySelector('{TILE} .door')", what="the tile on a phone")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 391
    await page.screenshot(ARTIFACTS / "status-page-demo-phone.png")

    origins: Any = await page.evaluate(
        "[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert origins in ([demo.url], []), origins
    assert not page.exceptions, page.exceptions
