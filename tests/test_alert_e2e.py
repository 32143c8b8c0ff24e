"""Alerting with real processes: push → collector → webhook receiver; kill -9 with queued messages; the API's auth."""

from __future__ import annotations

import base64
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from roomwatch.collector.webauth import hash_password
from roomwatch.core.wire import Batch, EventRecord, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import alerting_settled, http_get, http_post, metric_value, wait_for
from tests.peers.prometheus import promtool_check_metrics
from tests.peers.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.peer  # every test here starts a process

DOOR = {"site": "县政务中心", "room": "1号机房", "device": "door1"}
PASSWORD = "correct horse battery"


class Pusher:
    """Pushes like an agent would (with a real agent and MQTT broker: tests/test_door_e2e.py)."""

    def __init__(self, url: str, agent: str = "agent-a"):
        self.url, self.agent, self.seq = url, agent, int(time.time() * 1000)

    def push(self, samples: list[tuple[str, dict[str, str], float]] = (), events: list[tuple[str, dict[str, str]]] = ()) -> None:
        self.seq += 1
        ms = int(time.time() * 1000)
        batch = Batch(self.agent, self.seq, [SampleRecord(m, dict(lb), v, ms) for m, lb, v in samples],
                      [EventRecord(t, dict(lb), ms, None) for t, lb in events], ms)
        status, body = http_post(self.url + "/api/v1/push", encode_batch(batch, compress=False),
                                 {"Authorization": f"Bearer {TOKENS[self.agent]}", "Content-Type": "application/json"})
        assert status == 200, body

    def door(self, is_open: bool) -> None:
        self.push([("roomwatch_door_open", DOOR, 1.0 if is_open else 0.0)], [("door_open" if is_open else "door_close", DOOR)])


def _collector(tmp_path: Path, receiver_url: str, **extra: Any) -> CollectorHandle:
    conf: dict[str, Any] = {
        "channels": [{"name": "hook", "type": "webhook", "url": receiver_url + "/alerts", "timeout": "2s"}],
        "routes": [{"matchers": ['alertname=~"DoorOpenedOutOfHours|WaterLeak|SmokeDetected"'], "channels": ["hook"],
                    "group_interval": "1s"}],
        # every day off: the door is always "out of hours", so each opening is an alert
        "rules": {"working_hours": {"days": []}},
        "alerts": {"retry_initial": "200ms", "retry_max": "1s", "external_url": "http://roomwatch.example:9640"},
        "web": {"users": [{"name": "zhangsan", "password_hash": hash_password(PASSWORD)}]},
    }
    conf.update(extra)
    return start_collector(tmp_path, **conf)


@pytest.fixture
def hooked(tmp_path: Path, webhook_receiver: WebhookReceiver) -> Any:
    handle = _collector(tmp_path, webhook_receiver.url)
    yield handle, webhook_receiver
    handle.proc.stop()


def test_door_event_reaches_the_webhook(hooked: Any) -> None:
    collector, receiver = hooked
    p = Pusher(collector.url)
    latencies = []
    for i in range(8):
        n = len(receiver.received)
        sent = time.time()
        p.door(True)
        wait_for(lambda n=n: len(receiver.received) > n, timeout=10, what=f"door opening {i} at the receiver")
        latencies.append(receiver.received[n].at - sent)
        got = receiver.received[n].body
        assert got["status"] == "firing" and got["alerts"][0]["labels"]["alertname"] == "DoorOpenedOutOfHours"
        assert got["alerts"][0]["labels"]["device"] == "door1" and got["alerts"][0]["labels"]["agent"] == "agent-a"
        p.door(False)
        wait_for(lambda n=n: len(receiver.received) > n + 1, timeout=10, what="the resolution")
        assert receiver.received[n + 1].body["status"] == "resolved"
    latencies.sort()
    print(f"\nevent pushed → webhook received, {len(latencies)} doors: p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    text = collector.metrics()
    assert metric_value(text, "roomwatch_notifications_total", channel="hook", outcome="delivered") == 16
    assert metric_value(text, "roomwatch_notification_channel_up", channel="hook") == 1
    res = promtool_check_metrics(text.encode())
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout


def _basic(user: str = "zhangsan", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json"}


def test_ack_and_silence_need_login(hooked: Any) -> None:
    collector, receiver = hooked
    Pusher(collector.url).door(True)
    wait_for(lambda: receiver.received, timeout=10, what="the door alert")
    alert = _door(collector)  # reading needs no login
    assert alert["state"] == "firing" and not alert["acknowledged"]
    assert alert["url"] == f"http://roomwatch.example:9640/#/alerts/{alert['id']}"
    text = collector.metrics()
    assert metric_value(text, "roomwatch_alerts", alertname="DoorOpenedOutOfHours", severity="warning", state="firing") == 1

    ack = f"{collector.url}/api/v1/alerts/{alert['id']}/ack"
    status, body = http_post(ack, b"{}", {"Content-Type": "application/json"})
    assert status == 401 and b"log in" in body
    status, _ = http_post(ack, b"{}", _basic(password="wrong password"))
    assert status == 401
    status, body = http_post(ack, json.dumps({"comment": "值班员已到现场"}).encode(), _basic())
    assert status == 200, body
    assert json.loads(body)["ack"]["by"] == "zhangsan"
    assert _door(collector)["acknowledged"] is True
    status, _ = http_post(f"{collector.url}/api/v1/alerts/0123456789abcdef-1/ack", b"", _basic())
    assert status == 404

    # the web page's way: log in, then the session cookie + the CSRF token
    status, body = http_post(collector.url + "/login", json.dumps({"username": "zhangsan", "password": PASSWORD}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 200
    csrf = json.loads(body)["csrf_token"]
    cookie = _login_cookie(collector.url)
    silence = json.dumps({"matchers": ['device="door1"'], "duration": "2h", "comment": "门禁维修"}).encode()
    status, body = http_post(collector.url + "/api/v1/silences", silence,
                             {"Content-Type": "application/json", "Cookie": cookie["header"]})
    assert status == 403 and b"X-CSRF-Token" in body
    headers = {"Content-Type": "application/json", "Cookie": cookie["header"], "X-CSRF-Token": cookie["csrf"]}
    status, _ = http_post(collector.url + "/api/v1/silences", silence, {**headers, "Origin": "http://evil.example"})
    assert status == 403
    status, body = http_post(collector.url + "/api/v1/silences", silence, headers)
    assert status == 200, body
    sid = json.loads(body)["silenceID"]
    assert csrf  # the login reply carries a token too (the page may keep either)
    [s] = json.loads(http_get(collector.url + "/api/v1/silences")[1])["silences"]
    assert s["id"] == sid and s["createdBy"] == "zhangsan" and s["status"]["state"] == "active"
    assert _door(collector)["silencedBy"] == [sid]
    status, _ = http_post(collector.url + "/api/v1/silences", b'{"matchers": []}', headers)
    assert status == 400
    import urllib.request

    req = urllib.request.Request(f"{collector.url}/api/v1/silences/{sid}", method="DELETE", headers=headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    assert json.loads(http_get(collector.url + "/api/v1/silences")[1])["silences"][0]["status"]["state"] == "expired"
    log = collector.proc.log()
    assert PASSWORD not in log and cookie["csrf"] not in log


def test_an_ack_link_from_a_resolved_episode_does_not_acknowledge_the_new_one(hooked: Any) -> None:
    collector, receiver = hooked
    p = Pusher(collector.url)
    p.door(True)
    wait_for(lambda: receiver.received, timeout=10, what="the first door alert")
    old_link = receiver.received[0].body["alerts"][0]["generatorURL"]
    old_id = old_link.rsplit("/", 1)[1]
    assert _door(collector)["id"] == old_id and _door(collector)["url"] == old_link
    p.door(False)
    wait_for(lambda: len(receiver.received) >= 2, timeout=10, what="the resolution")
    p.door(True)  # the same door opens again: a new incident of the same rule and labels
    wait_for(lambda: len(receiver.received) >= 3, timeout=10, what="the second door alert")
    new = _door(collector)
    assert new["id"] != old_id and new["fingerprint"] == old_id.split("-")[0]
    status, body = http_post(f"{collector.url}/api/v1/alerts/{old_id}/ack", b"", _basic())
    assert status == 409, body
    reason = json.loads(body)["error"]
    assert "resolved" in reason and new["id"] in reason
    status, body = http_post(f"{collector.url}/api/v1/alerts/{new['fingerprint']}/ack", b"", _basic())
    assert status == 409 and new["id"] in json.loads(body)["error"]  # a bare fingerprint names no episode
    assert _door(collector)["acknowledged"] is False
    status, body = http_post(f"{collector.url}/api/v1/alerts/{new['id']}/ack", b"", _basic())
    assert status == 200 and json.loads(body)["id"] == new["id"]
    assert _door(collector)["acknowledged"] is True
    # annotations in the configured language (Chinese), or in the one the status page asks for
    assert re.search(r"[\u4e00-\u9fff]", _door(collector)["annotations"]["summary"])
    english = json.loads(http_get(collector.url + "/api/v1/alerts?lang=en")[1])["alerts"]
    door = next(a for a in english if a["alertname"] == "DoorOpenedOutOfHours")
    assert door["annotations"]["summary"].isascii() and door["id"] == new["id"]
    status, body = http_get(collector.url + "/api/v1/alerts?lang=fr")
    assert status == 400 and "lang" in json.loads(body)["error"]


def _door(collector: CollectorHandle) -> dict[str, Any]:
    alerts = json.loads(http_get(collector.url + "/api/v1/alerts")[1])["alerts"]
    return next(a for a in alerts if a["alertname"] == "DoorOpenedOutOfHours")


def _login_cookie(url: str) -> dict[str, str]:
    import http.cookiejar
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    req = urllib.request.Request(url + "/login", data=json.dumps({"username": "zhangsan", "password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with opener.open(req, timeout=10) as resp:
        body = json.loads(resp.read())
    cookies = {c.name: c for c in jar}
    session = cookies["roomwatch_session"]
    assert session.has_nonstandard_attr("HttpOnly") and cookies["roomwatch_csrf"].value == body["csrf_token"]
    return {"header": f"roomwatch_session={session.value}", "csrf": body["csrf_token"]}


@pytest.mark.slow
def test_kill_9_with_undelivered_notifications(tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    """Queued messages survive kill -9 and are delivered once after the restart; delivered ones are not re-sent."""
    receiver = webhook_receiver
    collector = _collector(tmp_path, receiver.url)
    p = Pusher(collector.url)
    leak = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
    p.push([("roomwatch_water_leak_detected", leak, 1.0)])
    wait_for(lambda: receiver.alerts(), timeout=10, what="the first leak")
    receiver.stop()  # the receiver goes away …
    p.push([("roomwatch_water_leak_detected", {**leak, "room": "2号机房"}, 1.0)])
    p.push([("roomwatch_smoke_detected", {**leak, "room": "3号机房", "device": "smoke1"}, 1.0)])
    wait_for(lambda: (metric_value(collector.metrics(), "roomwatch_notifications_total", channel="hook",
                                   outcome="retry") or 0) >= 2
             and metric_value(collector.metrics(), "roomwatch_notifications_pending", channel="hook") == 2,
             timeout=15, what="two messages failing and queued")
    collector.proc.kill()  # SIGKILL: no goodbye
    collector.proc.stop()  # (closes the log file only)
    receiver.start()
    restart_at = time.time()
    restarted = start_collector(tmp_path, **json_config(collector))
    try:
        wait_for(lambda: len(receiver.alerts()) >= 3, timeout=20, what="the queued messages after the restart")
        # and nothing more comes: every group was flushed since the restart (where a duplicate or a re-send of
        # the first would be decided) and nothing is left in the outbox
        wait_for(lambda: alerting_settled(tmp_path / "collector.db", restart_at), timeout=20, what="alerting idle")
        got = sorted((a[1], a[2]["room"]) for a in receiver.alerts())
        assert got == [("SmokeDetected", "3号机房"), ("WaterLeak", "1号机房"), ("WaterLeak", "2号机房")], got
        assert all(a[0] == "firing" for a in receiver.alerts())
        alerts = json.loads(http_get(restarted.url + "/api/v1/alerts")[1])["alerts"]
        assert {a["labels"]["room"] for a in alerts if a["alertname"] != "AgentDown"} == {"1号机房", "2号机房", "3号机房"}
    finally:
        restarted.proc.stop()


def json_config(handle: CollectorHandle) -> dict[str, Any]:
    import yaml

    conf = yaml.safe_load(handle.config.read_text())
    return {k: v for k, v in conf.items() if k not in ("storage", "agents", "agent_timeout")} | {
        "listen": conf["listen"], "agent_timeout": conf["agent_timeout"]}
