"""webhook and alertmanager channels against real receivers; the outbox's retry, give-up and rate limit; test-alert."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.store import MIGRATIONS as STORE_MIGRATIONS
from roomwatch.alerts.store import AlertStore
from roomwatch.alerts.templates import AlertView, render_notification
from roomwatch.channels.alertmanager import AlertmanagerChannel, AlertmanagerSender
from roomwatch.channels.base import AlertItem, Channel, Notification, Outcome, SendResult
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.webhook import WebhookChannel, WebhookSender
from tests.helpers import free_port, run_cli, wait_for, write_yaml
from tests.peers.alertmanager import Alertmanager
from tests.peers.webhook_receiver import WebhookReceiver

NOW = dt.datetime(2024, 12, 2, 2, 0, tzinfo=dt.UTC)


def item(fp: str, status: str = "firing", device: str = "leak1", alertname: str = "WaterLeak") -> AlertItem:
    labels = {"alertname": alertname, "severity": "critical", "site": "县政务中心", "room": "1号机房", "device": device}
    return AlertItem(fp, status, labels, {"summary": "机房漏水"}, NOW,
                     NOW + dt.timedelta(minutes=5) if status == "resolved" else None, 1.0,
                     f"http://collector:9640/#/alerts/{fp}")


def notification(items: list[AlertItem], receiver: str = "hook") -> Notification:
    status = "firing" if any(i.status == "firing" for i in items) else "resolved"
    return Notification('route0/{}:{room="1号机房", site="县政务中心"}', status, receiver, items, "【告警】机房漏水",
                        "text", "md", {"site": "县政务中心", "room": "1号机房"}, {"site": "县政务中心", "room": "1号机房"},
                        {"summary": "机房漏水"}, "http://collector:9640")


def webhook(url: str, **kw: Any) -> WebhookSender:
    return WebhookSender(WebhookChannel(name="hook", type="webhook", url=url, timeout=kw.pop("timeout", "2s"), **kw))


async def test_webhook_posts_alertmanager_v4(webhook_receiver: WebhookReceiver) -> None:
    ch = webhook(webhook_receiver.url + "/alerts")
    try:
        result = await ch.send(notification([item("00000000000000a1"), item("00000000000000a2", "resolved", "leak2")]))
    finally:
        await ch.close()
    assert result.outcome is Outcome.DELIVERED and "HTTP 200" in result.detail
    [got] = webhook_receiver.received
    body = got.body
    assert got.path == "/alerts"
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupKey"] == 'route0/{}:{room="1号机房", site="县政务中心"}' and body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"site": "县政务中心", "room": "1号机房"}
    assert body["externalURL"] == "http://collector:9640"
    firing, resolved = body["alerts"]
    assert firing == {"status": "firing", "labels": item("x").labels, "annotations": {"summary": "机房漏水"},
                      "startsAt": "2024-12-02T02:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
                      "generatorURL": "http://collector:9640/#/alerts/00000000000000a1", "fingerprint": "00000000000000a1"}
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2024-12-02T02:05:00.000Z"


async def test_webhook_max_alerts_truncates(webhook_receiver: WebhookReceiver) -> None:
    ch = webhook(webhook_receiver.url, max_alerts=2)
    try:
        await ch.send(notification([item(f"{i:016x}", device=f"leak{i}") for i in range(5)]))
    finally:
        await ch.close()
    body = webhook_receiver.received[0].body
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 3


@pytest.mark.parametrize(("status", "outcome"), [(500, Outcome.RETRY), (503, Outcome.RETRY), (429, Outcome.RETRY),
                                                  (404, Outcome.GIVE_UP), (401, Outcome.GIVE_UP)])
async def test_webhook_status_means(webhook_receiver: WebhookReceiver, status: int, outcome: Outcome) -> None:
    webhook_receiver.status = status
    ch = webhook(webhook_receiver.url)
    try:
        result = await ch.send(notification([item("00000000000000a1")]))
    finally:
        await ch.close()
    assert result.outcome is outcome and f"HTTP {status}" in result.detail


async def test_webhook_down_or_slow_is_retried() -> None:
    ch = webhook(f"http://127.0.0.1:{free_port()}/x?key=SECRETKEY")
    try:
        result = await ch.send(notification([item("00000000000000a1")]))
    finally:
        await ch.close()
    assert result.outcome is Outcome.RETRY and "connection failed" in result.detail
    assert "SECRETKEY" not in result.detail  # a key in the URL never reaches logs or test-alert output

    import socket

    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        ch = webhook(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout="500ms")
        try:
            result = await ch.send(notification([item("00000000000000a1")]))
        finally:
            await ch.close()
    assert result.outcome is Outcome.RETRY and "no reply within 0.5s" in result.detail


@pytest.mark.peer("alertmanager")
async def test_alertmanager_channel_pushes_and_resolves(alertmanager: Alertmanager) -> None:
    cfg = AlertmanagerChannel(name="am", type="alertmanager", urls=[alertmanager.url, f"http://127.0.0.1:{free_port()}"],
                              resend_interval="1m")
    ch = AlertmanagerSender(cfg)
    firing = item("00000000000000b1")
    firing.starts_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    try:
        result = await ch.send(notification([firing], "am"))
        assert result.outcome is Outcome.DELIVERED, result.detail  # one of the cluster accepted
        assert "alertmanager[1]: connection failed" in result.detail
        [got] = await asyncio.to_thread(alertmanager.alerts, 'alertname="WaterLeak"')
        assert got["labels"] == firing.labels and got["annotations"] == {"summary": "机房漏水"}
        assert got["status"]["state"] == "active" and got["generatorURL"].endswith("/#/alerts/00000000000000b1")
        ends = dt.datetime.fromisoformat(got["endsAt"].replace("Z", "+00:00"))
        assert dt.timedelta(minutes=3) < ends - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=4, seconds=5)
        resolved = item("00000000000000b1", "resolved")
        resolved.starts_at = firing.starts_at
        resolved.ends_at = dt.datetime.now(dt.UTC)
        result = await ch.send(notification([resolved], "am"))
        assert result.outcome is Outcome.DELIVERED
        await asyncio.to_thread(wait_for, lambda: alertmanager.alerts('alertname="WaterLeak"') == [], 10,
                                0.1, None, "the alert to resolve in Alertmanager")
    finally:
        await ch.close()


@pytest.mark.peer("alertmanager")
async def test_alertmanager_rejects_bad_alert_as_give_up(alertmanager: Alertmanager) -> None:
    ch = AlertmanagerSender(AlertmanagerChannel(name="am", type="alertmanager", urls=[alertmanager.url]))
    bad = item("00000000000000c1")
    bad.labels = {"alertname": "X", "bad-label": "v"}  # not a Prometheus label name: Alertmanager answers 400
    try:
        result = await ch.send(notification([bad], "am"))
    finally:
        await ch.close()
    assert result.outcome is Outcome.GIVE_UP and "HTTP 400" in result.detail


# ---------------------------------------------------------------- outbox


class _ScriptedConfig(ChannelBase):
    type: Literal["scripted"]


class Scripted(Channel):
    """Answers from a script of outcomes; records when each send happened."""

    type: ClassVar[str] = "scripted"
    config_model = _ScriptedConfig
    rate_limit = (3, 1.0)

    def __init__(self, script: list[Outcome]):
        super().__init__(_ScriptedConfig(name="s", type="scripted", timeout="1s"))
        self.script = script
        self.sent: list[tuple[float, str]] = []

    async def send(self, notification: Notification) -> SendResult:
        self.sent.append((time.monotonic(), notification.title))
        outcome = self.script.pop(0) if self.script else Outcome.DELIVERED
        return SendResult(outcome, outcome.value)


def _outbox(tmp_path: Path, ch: Channel, **kw: Any) -> tuple[Outbox, AlertStore]:
    store = AlertStore(str(tmp_path / "o.db"))
    return Outbox(store.conn, {ch.name: ch}, time.time, **kw), store


async def until(check: Any, timeout: float = 10.0) -> None:
    """Await ``check()`` becoming true on this loop (the store is used from this thread only)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _rows(store: AlertStore) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in store.conn.execute("SELECT state, attempts FROM outbox ORDER BY id")]


async def test_outbox_retries_with_backoff_then_delivers(tmp_path: Path) -> None:
    ch = Scripted([Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED])
    ob, store = _outbox(tmp_path, ch, retry_initial=0.05, retry_max=1.0, failing_after=0.01)
    n = notification([item("00000000000000d1")], "s")
    ob.enqueue("s", n, time.time())
    await ob.start()
    try:
        await until(lambda: _rows(store) == [("delivered", 3)])
    finally:
        await ob.stop()
    gaps = [b[0] - a[0] for a, b in zip(ch.sent, ch.sent[1:], strict=False)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08  # 0.05 then 0.1 (±20 %)
    st = ob.status["s"]
    assert (st.retried, st.delivered, st.failing_since) == (2, 1, None) and st.up(time.time(), 0.01)


async def test_outbox_gives_up_and_reports_the_channel_down(tmp_path: Path) -> None:
    ch = Scripted([Outcome.GIVE_UP])
    ob, store = _outbox(tmp_path, ch)
    ob.enqueue("s", notification([item("00000000000000d2")], "s"), time.time())
    ob.enqueue("s", notification([item("00000000000000d3")], "s"), time.time())
    await ob.start()
    try:
        await until(lambda: _rows(store) == [("failed", 1), ("delivered", 1)])
        assert ob.status["s"].up(time.time(), 60)  # the next delivery worked: up again
    finally:
        await ob.stop()


async def test_outbox_rate_limit_spaces_sends(tmp_path: Path) -> None:
    ch = Scripted([])
    ob, store = _outbox(tmp_path, ch)
    for i in range(5):
        ob.enqueue("s", notification([item(f"{i:016x}")], "s"), time.time())
    await ob.start()
    try:
        await until(lambda: [r[0] for r in _rows(store)] == ["delivered"] * 5)
    finally:
        await ob.stop()
    times = [t for t, _ in ch.sent]
    assert times[3] - times[0] >= 0.99  # rate_limit (3, 1.0): the 4th waits for the window
    assert times[4] - times[1] >= 0.99


def test_messages_fit_max_bytes() -> None:
    from zoneinfo import ZoneInfo

    views = [AlertView(f"{i:016x}", "WaterLeak", "firing", "critical", {"site": "县政务中心", "room": "1号机房",
                                                                       "device": f"leak{i}"},
                       "roomwatch_water_leak_detected", 1.0, "== 1", "== 0", 0.0, NOW.timestamp(),
                       annotation_templates={"summary": {"zh-CN": "机房漏水", "en": "Water leak"}}) for i in range(20)]
    for lang in ("zh-CN", "en"):
        title, text, md = render_notification(views, status="firing", reason="firing", lang=lang, tz=ZoneInfo("Asia/Shanghai"),
                                              external_url="http://c:9640", now=NOW.timestamp(), max_bytes=600)
        assert len(text.encode()) <= 600 and len(md.encode()) <= 600 and len(title.encode()) <= 600
        assert ("另有" if lang == "zh-CN" else "more") in text
        assert text.count("leak") >= 2  # whole alerts first, then "and N more"
    _, text, _ = render_notification(views[:1], status="firing", reason="firing", lang="en", tz=ZoneInfo("Asia/Shanghai"),
                                     external_url="http://c:9640", now=NOW.timestamp())
    assert text.startswith("[critical] Water leak") and "Where: 县政务中心 / 1号机房 / leak0" in text
    assert "Acknowledge: http://c:9640/#/alerts/0000000000000000" in text


# ---------------------------------------------------------------- CLI


def _collector_file(tmp_path: Path, url: str) -> Path:
    return write_yaml(tmp_path / "collector.yaml", {
        "listen": "127.0.0.1:9640", "storage": str(tmp_path / "c.db"),
        "channels": [{"name": "hook", "type": "webhook", "url": url + "/alerts"}],
        "routes": [{"channels": ["hook"]}], "alerts": {"language": "en"}})


@pytest.mark.peer
def test_test_alert_command(tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    path = _collector_file(tmp_path, webhook_receiver.url)
    res = run_cli("test-alert", "-c", str(path), "--channel", "hook")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hook (webhook): delivered: HTTP 200 ok"
    [got] = webhook_receiver.received
    assert got.body["alerts"][0]["labels"]["alertname"] == "RoomwatchTest"
    assert "test message" in got.body["alerts"][0]["annotations"]["description"]
    # --lang as for `roomwatch report`; --language is kept as its alias.
    for flag in ("--lang", "--language"):
        res = run_cli("test-alert", "-c", str(path), "--channel", "hook", flag, "zh-CN")
        assert res.returncode == 0, res.stderr
        assert "测试" in webhook_receiver.received[-1].body["alerts"][0]["annotations"]["summary"]
    webhook_receiver.received.clear()
    webhook_receiver.status = 503
    res = run_cli("test-alert", "-c", str(path), "--channel", "hook")
    assert res.returncode == 1 and "retry: HTTP 503 try later" in res.stdout
    res = run_cli("test-alert", "-c", str(path), "--channel", "sms")
    assert res.returncode == 2 and "no channel named 'sms'; configured: hook" in res.stderr
    path.write_text(path.read_text() + "bogus: 1\n")
    res = run_cli("test-alert", "-c", str(path), "--channel", "hook")
    assert res.returncode == 2 and "bogus: unknown key" in res.stderr


def test_store_schema_is_versioned(tmp_path: Path) -> None:
    AlertStore(str(tmp_path / "s.db")).close()
    AlertStore(str(tmp_path / "s.db")).close()  # reopening applies nothing twice
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT version FROM schema_versions WHERE component = 'alerts'").fetchone() == (
        len(STORE_MIGRATIONS),)
    conn.close()


def test_store_of_the_first_release_is_migrated_keeping_its_alerts(tmp_path: Path) -> None:
    """A version-1 store (before local fallback notices) gets the new column and table; its episodes stay."""
    from roomwatch.core.sqlite import ensure_schema, open_db

    conn = open_db(tmp_path / "old.db")
    ensure_schema(conn, "alerts", STORE_MIGRATIONS[:1])
    conn.execute("INSERT INTO alert_episodes (fingerprint, rule, alertname, severity, labels, series_labels, metric, "
                 "state, active_since, fired_at) VALUES ('00000000000000aa', 'defaults:WaterLeak', 'WaterLeak', "
                 "'critical', '{}', '{}', 'roomwatch_water_leak_detected', 'firing', 1.0, 1.0)")
    conn.close()
    store = AlertStore(str(tmp_path / "old.db"))
    [alert] = store.open_alerts()
    assert (alert.fp, alert.state, alert.fallback) == ("00000000000000aa", "firing", None)
    assert store.conn.execute("SELECT COUNT(*) FROM fallback_notices").fetchone()[0] == 0
    assert store.conn.execute("SELECT version FROM schema_versions WHERE component = 'alerts'").fetchone()[0] == len(
        STORE_MIGRATIONS)
    assert (alert.ack_via, alert.ack_channel) == ("", "")  # version 3: how an alert was acknowledged
    store.close()
