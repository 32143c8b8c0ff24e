"""Shutdown on low battery, end to end: a real agent process, a real upsd whose dummy-ups UPS goes OB → LB.

The configured command is a marker script that appends a line to a file, so the
tests see whether, when and how often it ran.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core.wire import EventRecord
from tests.conftest import TOKENS
from tests.helpers import async_wait_for, free_port, http_get, metric_value, wait_for
from tests.peers.nut import NutServer, write_dev

pytestmark = pytest.mark.peer("upsd")

ONLINE = {"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800", "ups.mfr": "T", "ups.model": "M"}


@pytest.fixture
def ups(nut_factory: Any, tmp_path: Path) -> NutServer:
    return nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})


@pytest.fixture
def marker(tmp_path: Path) -> tuple[Path, Path]:
    """(script, file it appends to)."""
    out = tmp_path / "marker.txt"
    script = tmp_path / "marker.sh"
    script.write_text(f'#!/bin/sh\necho "ran $*" >> {out}\n')
    script.chmod(0o755)
    return script, out


def _action(script: Path, **overrides: Any) -> dict[str, Any]:
    return {"type": "shutdown", "name": "poweroff-host", "ups": "ups-rack", "command": [str(script), "now"],
            "grace": "2s", "confirm_readings": 2, **overrides}


def _device(server: NutServer) -> dict[str, Any]:
    return {"name": "ups-rack", "driver": "nut", "port": server.port, "ups": "rack", "interval": "300ms",
            "timeout": "2s"}


def _on_battery(url: str) -> float | None:
    status, body = http_get(url + "/metrics")
    return metric_value(body.decode(), "roomwatch_ups_on_battery", device="ups-rack") if status == 200 else None


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _charge(url: str) -> float | None:
    status, body = http_get(url + "/metrics")
    return metric_value(body.decode(), "roomwatch_ups_battery_charge_ratio", device="ups-rack") if status == 200 else None


def _polls_seen(ups: NutServer, url: str, charges: tuple[int, ...]) -> None:
    """Step the UPS's charge through ``charges`` and wait until the agent reported each: that many polls
    happened (the evidence that the agent went on reading, instead of a sleep)."""
    for charge in charges:
        ups.set_var("rack", "battery.charge", str(charge))
        wait_for(lambda c=charge: _charge(url) == c / 100, timeout=15, what=f"charge {charge} % at the agent")


def _logged_at(log: str, marker: str) -> float:
    """Time of the agent's first log line containing ``marker`` (its own clock: "2026-12-07 07:50:01,123")."""
    import datetime as dt

    line = next(x for x in log.splitlines() if marker in x)
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_fires_once_after_grace_with_collector_unreachable(ups: NutServer, marker: tuple[Path, Path],
                                                           agent_factory: Any) -> None:
    """OB alone (no critical condition) does nothing; OB + LB → pending, command runs once after the grace
    delay — with the collector down the whole time."""
    script, out = marker
    dead_collector = f"http://127.0.0.1:{free_port()}"
    proc, url = agent_factory(dead_collector, host={"enabled": False}, devices=[_device(ups)],
                              actions=[_action(script)])
    wait_for(lambda: _on_battery(url) == 0.0, timeout=15, what="UPS on mains in agent metrics")
    ups.set_var("rack", "ups.status", "OB DISCHRG")
    wait_for(lambda: _on_battery(url) == 1.0, timeout=15, what="UPS on battery in agent metrics")
    _polls_seen(ups, url, (90, 80, 70))  # several readings on battery, but no critical condition
    assert "SHUTDOWN PENDING" not in proc.log()
    ups.set_var("rack", "ups.status", "OB DISCHRG LB")
    wait_for(lambda: "SHUTDOWN PENDING" in proc.log(), timeout=15, what="pending shutdown")
    wait_for(lambda: _lines(out), timeout=15, what="the command to run")
    log = proc.log()
    # not before the 2 s grace, by the agent's own clock (its log stamps)
    assert _logged_at(log, "SHUTDOWN STARTED") - _logged_at(log, "SHUTDOWN PENDING") >= 2.0 - 0.001
    _polls_seen(ups, url, (60, 50))  # LB goes on being reported: the command must not run again
    assert _lines(out) == ["ran now"]
    log = proc.log()
    assert "the UPS reports low battery" in log and "SHUTDOWN STARTED" in log
    assert "cannot push to the collector" in log  # it really was unreachable
    assert "collector unreachable; not waiting for the event" in log
    assert log.count("SHUTDOWN STARTED") == 1 and proc.alive()


def test_mains_return_cancels(ups: NutServer, marker: tuple[Path, Path], agent_factory: Any) -> None:
    """Mains back before the grace delay ends: cancelled, logged, the command never runs."""
    script, out = marker
    proc, url = agent_factory(None, host={"enabled": False}, devices=[_device(ups)],
                              actions=[_action(script, grace="5s")])
    wait_for(lambda: _on_battery(url) == 0.0, timeout=15, what="UPS on mains in agent metrics")
    ups.set_var("rack", "ups.status", "OB DISCHRG LB")
    wait_for(lambda: "SHUTDOWN PENDING" in proc.log(), timeout=15, what="pending shutdown")
    pending_seen = time.monotonic()  # the pending timer is due at most 5 s (grace) after this
    ups.set_var("rack", "ups.status", "OL CHRG")
    wait_for(lambda: "SHUTDOWN CANCELLED" in proc.log(), timeout=15, what="cancelled shutdown")
    # Once the grace has passed, an answer from the agent proves its loop ran past the moment the command
    # was due (a due timer runs before later I/O): had it not been cancelled, it would have started by then.
    wait_for(lambda: time.monotonic() > pending_seen + 5.0, timeout=30, what="the end of the grace")
    assert _on_battery(url) == 0.0
    assert _lines(out) == []
    assert "SHUTDOWN STARTED" not in proc.log()


def _agent(cfg: dict[str, Any]) -> Agent:
    return Agent(AgentConfig.model_validate(cfg))


async def test_dry_run_logs_only_and_pushes_events(ups: NutServer, marker: tuple[Path, Path], collector: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """dry_run: pending and started are logged and pushed to the (real) collector; the command never runs."""
    script, out = marker
    agent = _agent({"agent": {"id": "agent-a"}, "host": {"enabled": False},
                    "collector": {"urls": [collector.url], "token": TOKENS["agent-a"], "push_interval": "1s"},
                    "devices": [_device(ups)], "actions": [_action(script, grace="1s", dry_run=True)]})
    pushed: list[EventRecord] = []
    assert agent.pusher is not None
    real_add = agent.pusher.add_events
    agent.pusher.add_events = lambda events: (pushed.extend(events), real_add(events))[1]  # type: ignore[method-assign]
    await agent.start()
    try:
        await async_wait_for(lambda: 'device="ups-rack"' in "".join(
            b for f in agent.latest.families() if f.name == "roomwatch_ups_on_battery" for b, _ in f.samples),
            what="a reading on mains")
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OB DISCHRG LB")
        action = agent.actions[0]
        await async_wait_for(lambda: action.logic.state == "fired", what="the action fired")

        def accepted() -> float:
            return metric_value(collector.metrics(), "roomwatch_collector_events_received_total") or 0.0

        await async_wait_for(lambda: len(pushed) >= 2 and accepted() >= len(pushed), what="the events at the collector")
    finally:
        await agent.stop()
    assert _lines(out) == []
    kinds = [e.type for e in pushed]
    assert kinds.count("shutdown_pending") == 1 and kinds.count("shutdown_started") == 1, kinds
    assert kinds.index("shutdown_pending") < kinds.index("shutdown_started")
    started = next(e for e in pushed if e.type == "shutdown_started")
    assert started.labels["dry_run"] == "true" and started.labels["action"] == "poweroff-host"
    assert started.labels["device"] == "ups-rack" and "DRY RUN" in started.message
    msgs = [r.getMessage() for r in caplog.records]
    assert any("DRY RUN: would run" in m for m in msgs)
    total = metric_value(collector.metrics(), "roomwatch_collector_events_received_total")
    assert total is not None and total >= len(pushed)  # every event pushed was accepted


async def test_single_glitchy_reading_does_not_trigger(ups: NutServer, marker: tuple[Path, Path]) -> None:
    """One poll sees OB + LB, the next ones OL: nothing happens (polls driven one by one)."""
    script, out = marker
    agent = _agent({"agent": {"id": "t"}, "host": {"enabled": False}, "devices": [_device(ups)],
                    "actions": [_action(script, grace="0s")]})
    dev = agent.devices["ups-rack"]
    try:
        await agent.poll_device(dev)
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OB LB")
        await agent.poll_device(dev)
        assert agent.actions[0].logic.ob_streak == 1
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OL")
        for _ in range(3):
            await agent.poll_device(dev)
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OB LB")
        await agent.poll_device(dev)
        await agent.poll_device(dev)  # now confirmed: pending, grace 0s
        assert agent.actions[0].logic.state == "pending"
        await async_wait_for(lambda: _lines(out), what="the command to run")
        assert _lines(out) == ["ran now"]
    finally:
        await agent.stop()
