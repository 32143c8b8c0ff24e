"""Local fallback alerting with real processes: the link is down, the agent sends a leak by SMS itself (fake modem
on a pty), once; when the collector is back it learns what the agent sent (the fallback_notified notice) and its
own channels (a webhook receiver) do not send that alert again, while a new alert is delivered as usual."""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core.clock import SYSTEM
from roomwatch.core.wire import decode_batch
from tests.conftest import TOKENS, start_collector
from tests.helpers import alerting_settled, http_get, http_json, metric_value, wait_for
from tests.peers.fake_modem import FakeModem
from tests.peers.webhook_receiver import WebhookReceiver
from tests.reliability_rig import CounterAgent

PHONE = "+8613800138000"


def _texts(modem: FakeModem) -> list[tuple[str, str]]:
    assert all(p.total == 1 for p in modem.received)  # these texts fit one SMS each
    return [(p.number, p.text) for p in modem.received]


def _pushes(c: Any) -> int:
    return next(a["pushes"] for a in http_json(c.url + "/api/v1/agents")["agents"] if a["id"] == "agent-a")


def _spooled_batches(spool: Path) -> int:
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    finally:
        conn.close()


def _spooled_events(spool: Path) -> list:
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT body FROM batches WHERE n_events > 0 ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [e for (body,) in rows for e in decode_batch(zlib.decompress(body)).events]


@pytest.mark.peer
@pytest.mark.timeout(150)
def test_leak_while_the_link_is_down_is_sent_by_sms_once_and_not_again_by_the_collector(
        tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    modem = FakeModem()
    state = tmp_path / "state"
    state.write_text("roomwatch_water_leak_detected 0\nroomwatch_smoke_detected 1\n")
    db = tmp_path / "collector.db"
    # 15s: on a loaded machine a reply slower than the timeout is sent again (delivery is at-least-once), and this
    # test counts the messages.
    alerting = {"channels": [{"name": "hook", "type": "webhook", "url": webhook_receiver.url + "/alerts", "timeout": "15s"}],
                "routes": [{"matchers": ['alertname=~"WaterLeak|SmokeDetected"'], "channels": ["hook"],
                            "group_by": ["alertname", "device"], "group_interval": "1s"}],
                "alerts": {"retry_initial": "200ms", "retry_max": "1s"}}
    c = start_collector(tmp_path, name="c0", storage=str(db), **alerting)
    port = c.port
    agent = CounterAgent(tmp_path, [c.url], TOKENS["agent-a"], interval="300ms", push_interval="300ms",
                         agent={"site": "县机关", "room": "一号机房"},
                         fallback={"after": "2s", "channels": [{"name": "local-sms", "type": "gsm_modem",
                                                                "port": modem.path, "phone_numbers": [PHONE]}]})
    with open(agent.config) as f:
        conf = f.read()
    agent.config.write_text(conf.replace("test-counter\n", f"test-counter\n  state_file: {state}\n"))
    agent.start()
    try:
        # smoke is already known to the collector while the link is up: the collector alerts for it, not the agent
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_smoke_detected") == 1, timeout=20, what="smoke at collector")
        wait_for(lambda: webhook_receiver.alerts(), timeout=20, what="the smoke alert at the webhook")
        assert [(s, n) for s, n, _ in webhook_receiver.alerts()] == [("firing", "SmokeDetected")]
        c.proc.kill()
        c.proc.stop()
        state.write_text("roomwatch_water_leak_detected 1\nroomwatch_smoke_detected 1\n")
        wait_for(lambda: modem.received, timeout=30, what="an SMS from the agent")
        # the condition goes on (the agent keeps reading the leak and spooling it): no repeat
        spooled = _spooled_batches(agent.spool)
        wait_for(lambda: _spooled_batches(agent.spool) >= spooled + 8, timeout=30, what="more readings of the leak")
        texts = _texts(modem)  # (fake_modem.messages() groups single-part texts by number, so read parts)
        assert len(texts) == 1, texts
        number, text = texts[0]
        assert number == PHONE and "漏水" in text and "一号机房" in text and "烟雾" not in text
        assert not modem.errors
        events = [e for e in _spooled_events(agent.spool) if e.type == "fallback_notified"]
        assert len(events) == 1
        ev = events[0]
        assert ev.labels["alertname"] == "WaterLeak" and ev.labels["status"] == "firing"
        assert ev.labels["channel"] == "local-sms" and ev.labels["channel_type"] == "gsm_modem"
        assert ev.labels["device"] == "ctr" and ev.labels["agent"] == "agent-a"
        assert "漏水" in ev.message and ev.value is not None and 0 < ev.value < 30  # s from the leak to the SMS
        # the leak clears while still offline: one "resolved" SMS
        state.write_text("roomwatch_water_leak_detected 0\nroomwatch_smoke_detected 1\n")
        wait_for(lambda: len(_texts(modem)) == 2, timeout=20, what="the resolved SMS")
        assert "已恢复" in _texts(modem)[1][1]
        # the collector comes back and receives both notices ahead of the backlog with the leak in it
        c = start_collector(tmp_path, name="c1", storage=str(db), listen=f"127.0.0.1:{port}", **alerting)
        agent.wait_drained(timeout=60)
        drained_at = time.time()  # the collector has processed every batch: no alert changes from here on
        assert len(_texts(modem)) == 2  # back online: nothing more from the agent
        assert _spooled_events(agent.spool) == []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        events_accepted = conn.execute("SELECT events FROM ingest_agents WHERE agent = 'agent-a'").fetchone()[0]
        conn.close()
        assert events_accepted >= 4  # water_leak, fallback_notified firing, water_leak_clear, fallback resolved
        assert "sent WaterLeak firing" in agent.proc.log()
        # The collector saw the whole episode (fired, resolved) and sent none of it: the agent had.
        def leak_history() -> list[dict]:
            status, body = http_get(c.url + f"/api/v1/alerts/history?since={time.time() - 600}")
            assert status == 200
            return [a for a in json.loads(body)["alerts"] if a["alertname"] == "WaterLeak"]
        wait_for(lambda: [a["state"] for a in leak_history()] == ["resolved"], timeout=20, what="the leak episode")
        [episode] = leak_history()
        fb = episode["fallback"]
        assert (fb["channel"], fb["channelType"]) == ("local-sms", "gsm_modem") and fb["resolvedAt"] > fb["firingAt"]
        assert fb["note"].startswith("已由机房代理本地兜底通道（短信）于") and "漏水" in fb["message"]
        # every group flushed since the backlog was processed (where the leak would have been sent) and nothing
        # queued: the webhook has all it will get
        wait_for(lambda: alerting_settled(db, drained_at), timeout=20, what="alerting idle after the backlog")
        assert [n for _, n, _ in webhook_receiver.alerts()] == ["SmokeDetected"]
        assert "already sent it firing" in c.proc.log() and "already sent it resolved" in c.proc.log()
        # A new leak, with the link up: the collector alerts for it as usual; the agent's modem stays quiet.
        state.write_text("roomwatch_water_leak_detected 1\nroomwatch_smoke_detected 1\n")
        wait_for(lambda: len(webhook_receiver.alerts()) == 2, timeout=20, what="the new leak at the webhook")
        status, name, labels = webhook_receiver.alerts()[1]
        assert (status, name, labels["device"], labels["agent"]) == ("firing", "WaterLeak", "ctr", "agent-a")
        [active] = [a for a in json.loads(http_get(c.url + "/api/v1/alerts")[1])["alerts"] if a["alertname"] == "WaterLeak"]
        assert active["fallback"] is None
        # the agent's fallback sends only while no push succeeds for `after`; three more accepted pushes
        # show the link up through its checks (every second), so its modem has nothing to send
        pushes = _pushes(c)
        wait_for(lambda: _pushes(c) >= pushes + 3, timeout=20, what="three more pushes")
        assert len(_texts(modem)) == 2 and len(webhook_receiver.alerts()) == 2
    finally:
        agent.proc.stop()
        c.proc.stop()
        modem.stop()


def test_fallback_config_is_checked_with_the_channel_models(tmp_path: Path) -> None:
    from roomwatch.agent.config import load_agent_config
    from roomwatch.core.configbase import ConfigError
    from tests.helpers import write_yaml

    base = {"agent": {"id": "a", "spool": None}, "collector": {"urls": ["http://127.0.0.1:9640"], "token": "x" * 16}}
    ok = write_yaml(tmp_path / "ok.yaml", {**base, "fallback": {"after": "5m", "channels": [
        {"name": "sms", "type": "gsm_modem", "port": "/dev/ttyUSB2", "phone_numbers": [PHONE], "pin": "4321"}]}})
    cfg = load_agent_config(str(ok))
    assert cfg.fallback is not None and cfg.fallback.secret_values() == ["4321"]
    bad = write_yaml(tmp_path / "bad.yaml", {**base, "fallback": {"after": "5m", "channels": [
        {"name": "sms", "type": "gsm_modem", "port": "/dev/ttyUSB2", "phone_numbers": ["call me"]}]}})
    with pytest.raises(ConfigError) as info:
        load_agent_config(str(bad))
    assert "fallback.channels[0].phone_numbers" in str(info.value) and "not a phone number" in str(info.value)


async def test_a_number_over_its_limit_is_retried_alone_and_the_collector_told_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two numbers; the modem loses the network after the first got the SMS: the first is not sent it
    again on the next checks, the second gets it once the network is back, and the collector's notice
    (fallback_notified) is queued once, when the first number had it."""
    from types import SimpleNamespace

    from roomwatch.agent import fallback as fb
    from roomwatch.channels.gsm_modem import Modem

    monkeypatch.setattr(fb, "_RETRY_REMAINDER", 0.0, raising=False)
    monkeypatch.setattr(Modem, "PIN_SETTLE", 0.0)
    modem = FakeModem()
    other = "13900139000"
    try:
        config = fb.FallbackConfig.model_validate(
            {"after": "1s", "channels": [{"name": "local-sms", "type": "gsm_modem", "port": modem.path,
                                          "phone_numbers": [PHONE, other], "timeout": "2s", "send_timeout": "2s"}]})
        notices: list[object] = []
        agent = SimpleNamespace(config=SimpleNamespace(agent=SimpleNamespace(site="县机关", room="一号机房", id="a")),
                                pusher=SimpleNamespace(add_notice=notices.append), clock=SYSTEM)
        alerter = fb.FallbackAlerter(config, agent)  # type: ignore[arg-type]
        cond = fb._Condition("WaterLeak", {"device": "leak1"}, "漏水", time.time(), 1.0, firing=True)
        modem.cms_errors = [None, 331]  # the first number gets it, then no network
        assert await alerter._send(cond, "firing", 600) is False
        assert [p.number for p in modem.received] == [PHONE] and len(notices) == 1
        assert await alerter._send(cond, "firing", 660) is True  # only the second number this time
        assert [p.number for p in modem.received] == [PHONE, other] and len(notices) == 1
    finally:
        for ch in alerter.channels:
            await ch.close()
        modem.stop()
