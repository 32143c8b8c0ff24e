"""On call, with real processes: a collector with a webhook channel, alerts.external_url and an escalation level;
a leak is pushed; the webhook body carries a one-tap link; a forged copy is refused, GET does not acknowledge,
POST does, and the escalation that follows leaves the acknowledged alert out. ``check-config`` says when nobody
can acknowledge."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_collector
from tests.helpers import free_port, http_get, http_post, metric_value, run_cli, wait_for, write_yaml
from tests.peers.webhook_receiver import WebhookReceiver
from tests.test_alert_e2e import Pusher

LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
SMOKE = {"site": "县政务中心", "room": "2号机房", "device": "smoke1"}


def _alert(url: str, name: str) -> dict[str, Any] | None:
    alerts = json.loads(http_get(url + "/api/v1/alerts")[1])["alerts"]
    return next((a for a in alerts if a["alertname"] == name), None)


@pytest.mark.peer
def test_acknowledge_from_the_phone_with_one_tap(tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    c = start_collector(tmp_path, listen=f"127.0.0.1:{port}", channels=[
        {"name": "hook", "type": "webhook", "url": webhook_receiver.url + "/duty", "timeout": "2s"},
        {"name": "boss", "type": "webhook", "url": webhook_receiver.url + "/boss", "timeout": "2s"}],
        routes=[{"matchers": ['alertname=~"WaterLeak|SmokeDetected"'], "channels": ["hook"], "group_interval": "1s",
                 "levels": [{"after": "10s", "channels": ["boss"]}]}],
        alerts={"external_url": base, "retry_initial": "200ms"})
    try:
        pusher = Pusher(c.url)
        pusher.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
        wait_for(lambda: webhook_receiver.received, timeout=15, what="the leak at the webhook")
        first = webhook_receiver.received[0]
        assert first.path == "/duty" and first.body["status"] == "firing"
        raw = json.dumps(first.body, ensure_ascii=False)
        links = [u for u in re.findall(r"http://[^\s\"]+", raw) if "ack" in u]
        assert links and all("#" not in u for u in links), links
        link = links[0]
        alert_id = _alert(c.url, "WaterLeak")["id"]  # type: ignore[index]
        assert f"/ack/{alert_id}?" in link

        forged = re.sub(r"s=([A-Za-z0-9_-])", lambda m: "s=" + ("B" if m.group(1) != "B" else "C"), link)
        assert forged != link
        assert http_get(forged)[0] in (401, 403, 404)
        assert http_post(forged, b"")[0] in (401, 403, 404)
        status, page = http_get(link)
        assert status == 200 and "机房漏水".encode() in page
        assert _alert(c.url, "WaterLeak")["acknowledged"] is False  # type: ignore[index]

        status, page = http_post(link, b"")
        assert status == 200 and "已确认".encode() in page
        leak = _alert(c.url, "WaterLeak")
        assert leak["acknowledged"] is True and leak["ack"]["via"] == "link"  # type: ignore[index]

        # The leak was acknowledged well within its 10 s. A smoke alert in another room, pushed now and left
        # unacknowledged, escalates after its own 10 s: by then the leak's escalation would have come too.
        pusher.push([("roomwatch_smoke_detected", SMOKE, 1.0)])
        esc = wait_for(lambda: [r for r in webhook_receiver.received if r.path == "/boss"], timeout=30,
                       what="the smoke alert's escalation")
        names = [a["labels"]["alertname"] for r in esc for a in r.body["alerts"]]
        assert names == ["SmokeDetected"]
        assert not [r for r in webhook_receiver.received if r.path == "/boss"
                    and any(a["labels"]["alertname"] == "WaterLeak" for a in r.body["alerts"])]
        text = c.metrics()
        assert metric_value(text, "roomwatch_ack_links_refused_total", reason="bad_signature") == 2
        assert metric_value(text, "roomwatch_acknowledgements_total", via="link") == 1
        assert not webhook_receiver.errors
    finally:
        c.proc.stop()


@pytest.mark.peer
def test_check_config_warns_when_nobody_can_acknowledge(tmp_path: Path) -> None:
    conf: dict[str, Any] = {
        "listen": "127.0.0.1:9640", "storage": str(tmp_path / "c.db"), "agents": [{"id": "a", "token": "t" * 20}],
        "channels": [{"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/d"},
                     {"name": "chief", "type": "webhook", "url": "http://127.0.0.1:9/c"}],
        "routes": [{"channels": ["duty"], "levels": [{"after": "15m", "channels": ["chief"]}]}],
    }
    res = run_cli("check-config", str(write_yaml(tmp_path / "c.yaml", conf)))
    assert res.returncode == 0, res.stderr
    [line] = [ln for ln in res.stdout.splitlines() if "warning" in ln]
    assert "acknowledge" in line and "确认" in line and "routes[0].levels" in line
    conf["alerts"] = {"external_url": "http://10.1.2.3:9640"}  # one-tap links: someone can
    res = run_cli("check-config", str(write_yaml(tmp_path / "c.yaml", conf)))
    assert res.returncode == 0 and "warning" not in res.stdout + res.stderr
    root = Path(__file__).resolve().parent.parent
    res = run_cli("check-config", str(root / "config" / "collector.example.yaml"))
    assert res.returncode == 0 and "warning" not in res.stdout + res.stderr, res.stdout
