"""The alert path watches itself: the daily heartbeat message, outbound heartbeat pings (a dead-man URL, a second
collector raising CollectorDown), channel failover per route; and duty rotas as route targets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from roomwatch.alerts.heartbeat import HeartbeatConfig, Pinger
from roomwatch.channels.recipients import PERSON
from tests.alert_harness import Harness, at
from tests.conftest import start_collector
from tests.helpers import http_get, wait_for

LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}


def test_daily_heartbeat_once_a_day_through_the_chosen_channels(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2025-03-03 08:59"), heartbeat={"daily": {"time": "09:00", "channels": ["duty", "chief"]}})
    h.push([("roomwatch_temperature_celsius", {"site": "县政务中心", "room": "1号机房", "device": "env1"}, 22.0)])
    h.advance(59)
    assert h.queued() == []
    h.advance(2)
    sent = h.queued()
    assert [(n.receiver, n.reason) for n in sent] == [("duty", "heartbeat"), ("chief", "heartbeat")]
    assert sent[0].text == "【平安报】roomwatch 一切正常：1 个机房，0 条告警，代理 1/1 在线。"
    h.restart()  # a restart the same day sends nothing again
    h.advance(3600, step=60)
    assert h.queued() == []
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    h.queued()
    h.advance(24 * 3600, step=300)
    texts = [n.text for n in h.queued() if n.reason == "heartbeat"]
    busy = "【值守报】roomwatch 运行中：1 个机房，1 条告警，代理 1/1 在线：机房漏水（县政务中心 / 1号机房 / leak1）。"
    assert texts == [busy] * 2


def test_daily_heartbeat_is_not_sent_long_after_its_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2025-03-03 16:00"), heartbeat={"daily": {"time": "09:00", "channels": ["duty"]}})
    h.advance(60)
    assert h.queued() == []  # seven hours late: tomorrow's is the next


@pytest.fixture
async def deadman() -> AsyncIterator[tuple[list[Any], TestServer]]:
    got: list[Any] = []
    answer = {"status": 200}

    async def handle(request: web.Request) -> web.Response:
        got.append((request.method, request.path, request.headers.get("Authorization")))
        return web.Response(status=answer["status"], text="ok")

    app = web.Application()
    app.router.add_route("*", "/ping/{uuid}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.answer = answer  # type: ignore[attr-defined]
    yield got, server
    await server.close()


async def test_ping_to_a_dead_man_service(deadman: tuple[list[Any], TestServer]) -> None:
    got, server = deadman
    url = str(server.make_url("/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"))
    pinger = Pinger(HeartbeatConfig.model_validate({"ping": {"url": url, "method": "POST", "bearer_token": "tok-123456"}}))
    assert await pinger.ping_once()
    server.answer["status"] = 503  # type: ignore[attr-defined]
    assert not await pinger.ping_once()
    await pinger.stop()
    assert got == [("POST", "/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278", "Bearer tok-123456")] * 2
    assert pinger.results == {("ping", "ok"): 1, ("ping", "failed"): 1}


@pytest.mark.peer
async def test_a_second_collector_raises_collector_down_for_the_first(tmp_path: Path) -> None:
    """The first collector pushes empty batches to the second as its agent (role: collector); when they stop, the
    second raises CollectorDown (not AgentDown) after its agent_timeout."""
    second = start_collector(tmp_path, name="second", agents=[
        {"id": "collector-a", "token": "heartbeat-token-0123456789", "role": "collector"}], agent_timeout="2s")
    try:
        pinger = Pinger(HeartbeatConfig.model_validate({"collector": {
            "url": second.url, "agent_id": "collector-a", "token": "heartbeat-token-0123456789"}}))
        assert await pinger.push_once()
        assert await pinger.push_once()  # a fresh seq every time: not a replay
        await pinger.stop()
        agents = json.loads(http_get(second.url + "/api/v1/agents")[1])["agents"]
        assert agents[0]["id"] == "collector-a" and agents[0]["up"] and agents[0]["pushes"] == 2

        def down() -> Any:
            alerts = json.loads(http_get(second.url + "/api/v1/alerts")[1])["alerts"]
            return [a for a in alerts if a["state"] == "firing"]

        firing = wait_for(down, timeout=30, what="CollectorDown on the second collector")
        assert [(a["alertname"], a["labels"]["agent"], a["labels"]["role"]) for a in firing] == [
            ("CollectorDown", "collector-a", "collector")]
        assert "collector-a" in firing[0]["annotations"]["description"]
        bad = Pinger(HeartbeatConfig.model_validate({"collector": {
            "url": second.url, "agent_id": "collector-a", "token": "wrong-token-0123456789"}}))
        assert not await bad.push_once()
        await bad.stop()
    finally:
        second.proc.stop()


def test_failover_hands_a_failing_channels_messages_to_the_next(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty", "chief"], "failover": "2m", "group_interval": "1s"}])
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    assert [n.receiver for n in h.queued()] == ["duty"]  # alternatives: the first working one only
    status = h.svc.outbox.status["duty"]
    status.failing_since = h.now  # its deliveries start failing (as the outbox records a retry)
    h.advance(60)
    assert [tuple(r) for r in h.svc.store.conn.execute("SELECT channel FROM outbox WHERE state = 'pending'")] == [("duty",)]
    h.advance(61)  # failing 2 min: its queued message goes to the next channel, and so do new ones
    pending = [(r[0], json.loads(r[1])) for r in h.svc.store.conn.execute(
        "SELECT channel, payload FROM outbox WHERE state = 'pending' ORDER BY id")]
    assert [(ch, [a["labels"]["alertname"] for a in p["alerts"]]) for ch, p in pending] == [
        ("chief", ["WaterLeak"]),  # handed over, not sent again
        ("chief", ["NotificationChannelFailing"])]  # and duty's failure is told through chief
    assert pending[0][1]["receiver"] == "chief"
    h.push([("roomwatch_smoke_detected", {**LEAK, "device": "smoke1"}, 1.0)])
    h.advance(2)
    assert [n.receiver for n in h.queued()][-1] == "chief"
    status.failing_since = None  # it works again: back to the first
    h.push([("roomwatch_door_open", {**LEAK, "device": "door1"}, 1.0)], events=[("door_open", {**LEAK, "device": "door1"})])
    h.advance(11 * 60, step=5)
    assert "duty" in [n.receiver for n in h.queued()]


def test_rota_target_tells_the_person_on_duty_and_follows_the_handover(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2025-03-03 08:00"), channels=[
        {"name": "call", "type": "gsm_call", "port": "/dev/null-modem", "check_interval": "0s"},
        {"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/duty"}],
        oncall={"people": [{"name": "张伟", "phone": "13800000001"}, {"name": "李娜", "phone": "13800000002"}],
                "rotas": [{"name": "duty", "start": "2025-03-03", "handover": "08:30", "people": ["张伟", "李娜"],
                           "channels": ["call"]}]},
        routes=[{"channels": ["duty", "oncall:duty"], "repeat_interval": "30m"}])
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    sent = {n.receiver: n for n in h.queued()}
    assert set(sent) == {"duty", "call"}
    assert sent["call"].extra[PERSON] == {"name": "李娜", "phone": "13800000002"}  # Sunday's shift until 08:30
    assert "p=" in sent["call"].alerts[0].annotations["ack_url"]  # the link knows who it was sent to
    assert PERSON not in sent["duty"].extra
    h.advance(31 * 60, step=30)  # past the 08:30 handover: the reminder calls the new person
    again = [n for n in h.queued() if n.receiver == "call"]
    assert [n.reason for n in again] == ["repeat"] and again[0].extra[PERSON]["name"] == "张伟"
    h.svc.commands.ack(h.alert("WaterLeak")["id"], "张伟")  # type: ignore[index]
    h.advance(31 * 60, step=30)
    assert h.queued() == []
