"""Measured battery health and self-tests: outages recorded and measured, kept across restarts and bounded;
a self-test's on-battery never looks like an outage (NUT, UPS-MIB, the agent's own tests); scheduled tests
against snmpsim with the result as a metric.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from roomwatch.agent import battery_health as bh
from roomwatch.agent.battery_health import BatteryHealth, Outage, measure
from roomwatch.agent.battery_test import BatteryTestConfig, next_due
from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.core.wire import SampleRecord
from tests.peers.nut import write_dev

BASE = {"agent": "a1", "device": "ups1"}


class Clock:
    def __init__(self, t: float = 1_750_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _agent_stub() -> Any:
    return SimpleNamespace(observers=[], enrichers=[])


def _poll(h: BatteryHealth, ob: float, charge: float | None, runtime: float | None, load: float = 0.4,
          up: bool = True) -> list[SampleRecord]:
    dev = SimpleNamespace(name="ups1", labels=BASE, up=up)
    samples = [SampleRecord(v.UPS_ON_BATTERY, dict(BASE), ob, 0), SampleRecord(v.UPS_LOAD, dict(BASE), load, 0)]
    if charge is not None:
        samples.append(SampleRecord(v.UPS_BATTERY_CHARGE, dict(BASE), charge, 0))
    if runtime is not None:
        samples.append(SampleRecord(v.UPS_BATTERY_RUNTIME, dict(BASE), runtime, 0))
    h.observe(dev, samples if up else [], [])
    return h.enrich(dev, samples)


def _metrics(records: list[SampleRecord]) -> dict[str, float]:
    return {r.metric: r.value for r in records}


def test_an_aged_battery_is_measured_in_an_outage(tmp_path: Path) -> None:
    """The UPS predicts 40 min at the start; the charge falls 100 % → 70 % in 6 minutes (20 min to empty):
    health 0.5, measured 20 min, the outage's 6 minutes; all kept across a restart."""
    clock = Clock()
    h = BatteryHealth(_agent_stub(), str(tmp_path / "battery.db"), clock)
    assert _poll(h, 0.0, 1.0, 2400.0) == []  # never an outage: nothing to say
    for i in range(37):  # 6 minutes on battery, a poll every 10 s
        _poll(h, 1.0, 1.0 - 0.3 * i / 36, 2400.0 - 40 * i)
        clock.t += 10
    got = _metrics(_poll(h, 0.0, 0.7, 1700.0))
    assert got[v.UPS_BATTERY_HEALTH] == pytest.approx(0.5, abs=0.01)
    assert got[v.UPS_MEASURED_RUNTIME] == pytest.approx(1200.0, rel=0.01)
    assert got[v.UPS_LAST_OUTAGE_RUNTIME] == pytest.approx(370.0, abs=1)
    assert got[v.UPS_LAST_OUTAGE_END] == clock.t
    [rec] = h.outages("ups1")
    assert rec["points"] == 37 and rec["expected"] == 2400.0 and rec["load"] == pytest.approx(0.4)
    h.close()
    again = BatteryHealth(_agent_stub(), str(tmp_path / "battery.db"), clock)
    assert _metrics(_poll(again, 0.0, 1.0, 2400.0))[v.UPS_BATTERY_HEALTH] == pytest.approx(0.5, abs=0.01)
    again.close()


def test_short_outages_and_small_drops_measure_nothing_but_are_counted() -> None:
    clock = Clock()
    h = BatteryHealth(_agent_stub(), None, clock)
    _poll(h, 1.0, 1.0, 2400.0)
    clock.t += 5
    assert _poll(h, 0.0, 1.0, 2400.0) == []  # a 5 s transfer blip: not an outage
    for _ in range(20):  # 200 s, charge falls only 2 points: an outage, no measurement
        _poll(h, 1.0, 0.99, 2400.0)
        clock.t += 10
    got = _metrics(_poll(h, 0.0, 0.98, 2400.0))
    assert v.UPS_BATTERY_HEALTH not in got and got[v.UPS_LAST_OUTAGE_RUNTIME] == pytest.approx(200.0)


def test_the_host_shutting_down_mid_outage_closes_it_and_a_crash_is_recovered(tmp_path: Path) -> None:
    clock = Clock()
    path = str(tmp_path / "battery.db")
    h = BatteryHealth(_agent_stub(), path, clock)
    for i in range(30):
        _poll(h, 1.0, 1.0 - 0.01 * i, 1800.0 - 30 * i)
        clock.t += 10
    h.close()  # the agent stops: its host is powering off
    [rec] = BatteryHealth(_agent_stub(), path, clock).outages("ups1")
    assert rec["end"] is not None and rec["health"] is not None
    crashed = BatteryHealth(_agent_stub(), path, clock)
    for i in range(15):
        _poll(crashed, 1.0, 1.0 - 0.01 * i, 1800.0)
        clock.t += 10
    crashed._db.close()  # no close(): a crash
    recovered = BatteryHealth(_agent_stub(), path, clock)
    outages = recovered.outages("ups1")
    assert len(outages) == 2 and all(o["end"] is not None for o in outages)


def test_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bh, "KEEP_OUTAGES", 3)
    clock = Clock()
    h = BatteryHealth(_agent_stub(), None, clock)
    for _ in range(6):
        for _ in range(3):
            _poll(h, 1.0, 1.0, 1000.0)
            clock.t += 10
        _poll(h, 0.0, 1.0, 1000.0)
        clock.t += 100
    assert len(h.outages("ups1", limit=100)) == 3
    long = Outage("x", 0.0)
    for i in range(bh.MAX_POINTS * 3):
        long.add(float(i), 1.0, None, None)
    assert len(long.points) <= bh.MAX_POINTS and long.points[0][0] == 0.0 and long.points[-1][0] == bh.MAX_POINTS * 3 - 1
    assert measure(Outage("y", 0.0, [(0.0, None, None, None)]))["health"] is None


def test_next_due_keeps_to_working_days_and_the_hour() -> None:
    cfg = BatteryTestConfig.model_validate({"type": "battery_test", "ups": "u", "every": "30d", "at": "10:00"})
    friday_noon = dt.datetime(2026, 12, 4, 12, 0).astimezone().timestamp()  # a Friday, after 10:00
    due = dt.datetime.fromtimestamp(next_due(None, friday_noon, cfg)).astimezone()
    assert (due.weekday(), due.hour, due.minute) == (0, 10, 0)  # Monday 10:00
    last = dt.datetime(2026, 11, 3, 10, 0).astimezone().timestamp()
    due = dt.datetime.fromtimestamp(next_due(last, friday_noon, cfg)).astimezone()
    assert due.date() == dt.date(2026, 12, 3) + dt.timedelta(days=4)  # 30 days after → Thu 3 Dec, passed → Mon 7
    sunday = BatteryTestConfig.model_validate({"type": "battery_test", "ups": "u", "days": ["sun"], "at": "03:00"})
    due = dt.datetime.fromtimestamp(next_due(None, friday_noon, sunday)).astimezone()
    assert (due.weekday(), due.hour) == (6, 3)


@pytest.mark.peer("upsd")
async def test_nut_self_test_on_battery_is_not_an_outage(nut_factory: Any, tmp_path: Path) -> None:
    """dummy-ups reports OB while ups.test.result says "In progress": on_battery stays 0, no event, no outage,
    and the agent's NUT server serves OL to the secondaries. Then a real outage counts."""
    ups = await asyncio.to_thread(nut_factory, {"rack": write_dev(tmp_path / "rack.dev", {
        "ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800", "ups.test.result": "No test initiated"})})
    agent = Agent(AgentConfig.model_validate({
        "agent": {"id": "t", "spool": str(tmp_path / "spool.db")}, "host": {"enabled": False},
        "devices": [{"name": "rack-ups", "driver": "nut", "port": ups.port, "ups": "rack", "interval": "1s"}],
        "nut_server": {"listen": "127.0.0.1:0"}}))
    seen: list[tuple[float, list[str]]] = []
    agent.observers.append(lambda dev, samples, events: seen.append(
        (next((s.value for s in samples if s.metric == v.UPS_ON_BATTERY), -1.0), [e.type for e in events])))
    dev = agent.devices["rack-ups"]
    try:
        await agent.poll_device(dev)
        await asyncio.to_thread(ups.set_var, "rack", "ups.test.result", "In progress")
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OB DISCHRG")
        for _ in range(3):
            await agent.poll_device(dev)
        assert [ob for ob, _ in seen] == [0.0] * 4 and not any(types for _, types in seen)
        assert agent.ups_table.get("rack-ups").variables["ups.status"] == "OL"
        assert agent.battery.open == {}
        await asyncio.to_thread(ups.set_var, "rack", "ups.test.result", "Done and passed")
        await agent.poll_device(dev)
        assert seen[-1] == (1.0, ["ups_on_battery"])  # still OB after the test: a real outage
        assert "rack-ups" in agent.battery.open
    finally:
        await agent.stop()


UPS_MIB = "1.3.6.1.2.1.33.1"


def _rec(result: int, source: int) -> str:
    rows = [("1.3.6.1.2.1.1.2.0", "6", "1.3.6.1.4.1.99999"), (f"{UPS_MIB}.2.4.0", "2", "100"),
            (f"{UPS_MIB}.4.1.0", "2:writecache", f"value={source}"),
            (f"{UPS_MIB}.7.1.0", "6:writecache", f"value={UPS_MIB}.7.7.1"),
            (f"{UPS_MIB}.7.3.0", "2:writecache", f"value={result}")]
    return "".join(f"{o}|{t}|{val}\n" for o, t, val in rows)


def _snmp(cmd: str, port: int, *args: str) -> str:
    out = subprocess.run([cmd, "-v2c", "-c", "ups", "-On", "-Oqv", "-t", "1", "-r", "1", f"127.0.0.1:{port}", *args],
                         capture_output=True, text=True, timeout=15, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.peer("snmpsim")
async def test_scheduled_self_test_over_rfc1628_pages_nobody_and_reports_its_result(
        snmpsim_factory: Any, tmp_path: Path) -> None:
    """The action sets upsTestId; the card (snmpsim, driven here like the UPS) goes on battery with its test
    in progress, then passes. Meanwhile on_battery stays 0 and no on-battery event is raised; afterwards
    roomwatch_ups_self_test_failed 0 and the test time go out with the UPS's readings."""
    sim = await asyncio.to_thread(snmpsim_factory, {"ups": _rec(6, 3)})
    agent = Agent(AgentConfig.model_validate({
        "agent": {"id": "t", "spool": str(tmp_path / "spool.db")}, "host": {"enabled": False},
        "devices": [{"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "community": "ups",
                     "profile": "ups-mib", "interval": "1s"}],
        "actions": [{"type": "battery_test", "ups": "ups1", "max_duration": "30s"}]}))
    action = agent.actions[0]
    dev = agent.devices["ups1"]
    seen: list[tuple[float, list[str]]] = []
    agent.observers.append(lambda d, samples, events: seen.append(
        (next((s.value for s in samples if s.metric == v.UPS_ON_BATTERY), -1.0), [e.type for e in events])))

    async def ups_behaves() -> None:
        while (await asyncio.to_thread(_snmp, "snmpget", sim.port, f"{UPS_MIB}.7.1.0")) != f".{UPS_MIB}.7.7.4":
            await asyncio.sleep(0.05)
        await asyncio.to_thread(_snmp, "snmpset", sim.port, f"{UPS_MIB}.4.1.0", "i", "5", f"{UPS_MIB}.7.3.0", "i", "5")
        for _ in range(3):  # polls during the test
            await agent.poll_device(dev)
        await asyncio.to_thread(_snmp, "snmpset", sim.port, f"{UPS_MIB}.4.1.0", "i", "3", f"{UPS_MIB}.7.3.0", "i", "1")

    try:
        await agent.poll_device(dev)
        behave = asyncio.create_task(ups_behaves())
        assert await action.run_test()
        await behave
        await agent.poll_device(dev)
        assert {ob for ob, _ in seen} == {0.0} and not any(types for _, types in seen)
        last = agent.latest.families()
        values = {f.name: f.samples for f in last}
        assert values[v.UPS_SELF_TEST_FAILED][0][1] == 0.0 and v.UPS_LAST_SELF_TEST in values
        assert agent.battery.last_test("ups1")[1] == 0
    finally:
        await agent.stop()


@pytest.mark.peer("snmpsim")
async def test_ups_mib_test_in_progress_reads_as_mains(snmpsim_factory: Any) -> None:
    """upsOutputSource battery(5) with upsTestResultsSummary inProgress(5): on_battery 0 (profile row)."""
    from tests.test_snmp_recordings import poll_once

    sim = await asyncio.to_thread(snmpsim_factory, {"testing": _rec(5, 5), "outage": _rec(1, 5)})
    testing, _ = await poll_once(sim.port, community="testing", profile="ups-mib")
    outage, _ = await poll_once(sim.port, community="outage", profile="ups-mib")
    assert [r.value for r in testing if r.metric == v.UPS_ON_BATTERY] == [0.0]
    assert [r.value for r in outage if r.metric == v.UPS_ON_BATTERY] == [1.0]
