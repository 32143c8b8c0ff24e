"""Rule engine on a controllable clock: for, hysteresis, events, late samples, time windows, gates, staleness."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomwatch.core.exposition import render
from tests.alert_harness import Harness, at

TEMP = "roomwatch_temperature_celsius"
TH1 = {"site": "县政务中心", "room": "1号机房", "device": "th1"}
LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
DOOR = {"site": "县政务中心", "room": "1号机房", "device": "door1"}
UPS = {"site": "县政务中心", "room": "1号机房", "device": "ups1"}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_for_duration_fires_only_after_holding(h: Harness) -> None:
    h.push([(TEMP, TH1, 28.0)])
    assert h.states() == {"RoomTemperatureHigh": "pending"}
    for _ in range(29):  # 10 s samples for 4m50s: still pending
        h.advance(10)
        h.push([(TEMP, TH1, 28.0)])
    assert h.states() == {"RoomTemperatureHigh": "pending"}
    assert h.queued() == []
    h.advance(10)  # 5 min after the first sample: the timer promotes it
    assert h.states() == {"RoomTemperatureHigh": "firing"}
    [n] = h.queued()
    assert n.reason == "firing" and n.alerts[0].labels["alertname"] == "RoomTemperatureHigh"


def test_pending_needs_the_condition_throughout(h: Harness) -> None:
    h.push([(TEMP, TH1, 28.0)])
    h.advance(120)
    h.push([(TEMP, TH1, 26.5)])  # below 27 while only pending: the pending alert goes (no hysteresis yet)
    assert h.states() == {}
    h.advance(600)
    assert h.queued() == []


def test_hysteresis_resolves_only_past_clear(h: Harness) -> None:
    h.push([(TEMP, TH1, 28.0)])
    h.advance(300)
    h.push([(TEMP, TH1, 28.0)])
    assert h.states() == {"RoomTemperatureHigh": "firing"}
    h.queued()
    for value in (26.9, 27.1, 26.9, 27.1, 26.1):  # flapping around 27 keeps it firing, no message
        h.advance(10)
        h.push([(TEMP, TH1, value)])
        assert h.states() == {"RoomTemperatureHigh": "firing"}
    h.advance(60)
    assert h.queued() == []
    h.push([(TEMP, TH1, 25.9)])  # past clear (< 26)
    assert h.states() == {}
    h.advance(30)  # group_interval
    [n] = h.queued()
    assert n.status == "resolved" and n.alerts[0].status == "resolved" and n.alerts[0].value == 25.9


def test_for_zero_fires_within_the_ingest_call(h: Harness) -> None:
    h.push([("roomwatch_water_leak_detected", LEAK, 0.0)])
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)], [("water_leak", LEAK)])
    # no tick, no clock movement: the notification is already queued when ingest() returns
    [n] = h.queued()
    assert n.alerts[0].labels["alertname"] == "WaterLeak" and n.alerts[0].labels["severity"] == "critical"
    assert n.alerts[0].labels["agent"] == "a1"
    assert "漏水" in n.title and "县政务中心 / 1号机房 / leak1" in n.text


def test_state_event_alone_fires(h: Harness) -> None:
    h.push(events=[("smoke", {**LEAK, "device": "smoke1"})])
    [n] = h.queued()
    assert n.alerts[0].labels["alertname"] == "SmokeDetected"
    h.push(events=[("smoke_clear", {**LEAK, "device": "smoke1"})])
    assert h.states() == {}


def test_late_backlog_does_not_refire_or_resolve(h: Harness) -> None:
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    assert h.states() == {"WaterLeak": "firing"}
    h.queued()
    # an agent's spooled backlog from before: older timestamps, leak dry → ignored for state
    h.push([("roomwatch_water_leak_detected", LEAK, 0.0)], ts=h.now - 600)
    assert h.states() == {"WaterLeak": "firing"}
    h.push([("roomwatch_water_leak_detected", LEAK, 0.0)])  # fresh: resolves
    assert h.states() == {}
    h.advance(30)
    assert [n.status for n in h.queued()] == ["resolved"]
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)], ts=h.now - 300)  # old wet reading: no re-fire
    assert h.states() == {}
    h.advance(60)
    assert h.queued() == []


def test_samples_are_evaluated_at_their_own_time(h: Harness) -> None:
    """A catch-up batch (agent back after an outage, oldest first) measures for on sample time."""
    start = h.now - 400
    samples = [(TEMP, TH1, 29.0)]
    for i in range(0, 400, 10):
        h.push(samples, ts=start + i)
    a = h.alert("RoomTemperatureHigh")
    assert a is not None and a["state"] == "firing"
    assert a["activeSince"] == start and a["firedAt"] == start + 300


def test_door_out_of_hours_fires_at_once_but_not_in_hours(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2024-12-02 10:00"))  # Monday, working hours
    h.push([("roomwatch_door_open", DOOR, 1.0)], [("door_open", DOOR)])
    assert h.states() == {"DoorOpenTooLong": "pending"}
    h.push([("roomwatch_door_open", DOOR, 0.0)], [("door_close", DOOR)])
    h.clock.t = at("2024-12-02 20:15")
    h.push([("roomwatch_door_open", DOOR, 1.0)], [("door_open", DOOR)])
    assert h.states()["DoorOpenedOutOfHours"] == "firing"
    [n] = h.queued()
    assert "非工作时间" in n.text


def test_door_left_open_past_closing_time_fires_on_the_timer(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2024-12-02 17:25"), rules={"overrides": {"DoorOpenTooLong": {"enabled": False}}})
    h.push([("roomwatch_door_open", DOOR, 1.0)])
    h.advance(270)  # 17:29:30
    assert h.states() == {}
    h.advance(31)  # 17:30:01: outside working hours, still open
    assert h.states() == {"DoorOpenedOutOfHours": "firing"}


def test_working_hours_holidays_and_extra_workdays(tmp_path: Path) -> None:
    rules = {"working_hours": {"holidays": ["2024-10-01"], "extra_workdays": ["2024-09-29"], "start": "08:30",
                               "end": 1050}}  # 1050 = an unquoted 17:30 in YAML
    h = Harness(tmp_path, t0=at("2024-10-01 10:00"), rules=rules)  # a Tuesday, but National Day
    h.push([("roomwatch_door_open", DOOR, 1.0)])
    assert h.states()["DoorOpenedOutOfHours"] == "firing"
    other = tmp_path / "other"
    other.mkdir()
    h2 = Harness(other, t0=at("2024-09-29 10:00"), rules=rules)  # a Sunday worked (调休)
    h2.push([("roomwatch_door_open", DOOR, 1.0)])
    assert "DoorOpenedOutOfHours" not in h2.states()


def test_runtime_low_only_while_on_battery(h: Harness) -> None:
    rt = "roomwatch_ups_battery_runtime_seconds"
    h.push([(rt, UPS, 420.0), ("roomwatch_ups_on_battery", UPS, 0.0)])  # small UPS: 7 min at full charge
    h.advance(120)
    assert h.states() == {}
    h.push([("roomwatch_ups_on_battery", UPS, 1.0), (rt, UPS, 400.0)])
    assert h.states() == {"UPSRuntimeLow": "pending", "UPSOnBattery": "pending"}
    h.advance(60)
    h.push([(rt, UPS, 380.0)])
    assert h.states() == {"UPSRuntimeLow": "firing", "UPSOnBattery": "firing"}
    h.push([("roomwatch_ups_on_battery", UPS, 0.0)])  # mains back: resolves at once
    assert "UPSRuntimeLow" not in h.states()


def test_battery_replace_by_age_or_flag(h: Harness) -> None:
    age = "roomwatch_ups_battery_age_seconds"
    for i in range(0, 600, 60):
        h.push([(age, UPS, 95_000_000.0 + i), ("roomwatch_ups_battery_replace_needed", UPS, 0.0)])
        assert h.states() == {"UPSBatteryReplace": "pending"}
        h.advance(60)
    assert h.states() == {"UPSBatteryReplace": "firing"}
    h.push([(age, UPS, 86_400.0)])  # replaced: age back to a day, the flag clear
    assert h.states() == {}
    h.push([("roomwatch_ups_battery_replace_needed", UPS, 1.0)])  # the UPS's own self-test says so
    assert h.states() == {"UPSBatteryReplace": "pending"}


def test_silent_series_resolves_only_while_its_agent_is_up(tmp_path: Path) -> None:
    h = Harness(tmp_path, rules={"overrides": {"RoomTemperatureHigh": {"for": "0s"}}})
    h.push([(TEMP, TH1, 28.0), ("roomwatch_door_open", DOOR, 1.0)])
    h.advance(299)
    assert h.states() == {"RoomTemperatureHigh": "firing", "DoorOpenTooLong": "pending"}
    h.advance(2)  # series_expire (5m) without a sample while the agent pushes other things
    assert h.states() == {"DoorOpenTooLong": "pending"}
    h.advance(300)
    assert h.states() == {"DoorOpenTooLong": "firing"}  # a door reports on change: open until it says closed
    h.advance(30)
    resolved = [n for n in h.queued() if n.status == "resolved"]
    assert len(resolved) == 1 and "无数据" in resolved[0].text and resolved[0].alerts[0].labels["device"] == "th1"
    h.push([(TEMP, TH1, 28.0)])
    h.advance(600, keep_alive=())  # the agent is silent: keep the alert, AgentDown speaks for the room
    assert h.states() == {"RoomTemperatureHigh": "firing", "DoorOpenTooLong": "firing", "AgentDown": "firing"}


def test_agent_down_and_device_down(h: Harness) -> None:
    h.push([("roomwatch_device_up", {**UPS, "driver": "snmp"}, 0.0)])
    h.advance(119)
    assert h.states() == {"DeviceDown": "pending"}
    h.advance(1)
    assert h.states() == {"DeviceDown": "firing"}
    assert [n.alerts[0].labels["alertname"] for n in h.queued()] == ["DeviceDown"]
    h.advance(61, keep_alive=())  # agent_timeout 1m: the agent registry says a1 is down
    down = h.alert("AgentDown")
    assert down["labels"]["agent"] == "a1" and down["labels"]["site"] == "县政务中心"  # learnt from its series
    assert h.alert("DeviceDown")["inhibitedBy"] == [down["id"]]
    h.advance(3600, keep_alive=())
    names = [a.labels["alertname"] for n in h.queued() for a in n.alerts]
    assert names == ["AgentDown"]  # DeviceDown is inhibited: no resolve, no repeat
    h.push([("roomwatch_device_up", {**UPS, "driver": "snmp"}, 1.0)])  # a1 pushes again
    assert h.states() == {}


def test_standby_agent_is_never_agent_down_here(tmp_path: Path) -> None:
    """Scale-out: an agent whose home is another collector is silent here by design (docs/scaling.md)."""
    from tests.helpers import metric_value

    h = Harness(tmp_path, agents=[{"id": "a1", "token": "t" * 20},
                                  {"id": "away", "token": "u" * 20, "standby": True}])
    h.advance(600, keep_alive=("a1",))  # "away" never pushed here: its home collector has it
    assert h.states() == {}
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)], [("water_leak", LEAK)], agent="away")  # failover
    assert h.states() == {"WaterLeak": "firing"}
    text = render(h.collector.families(h.now)).decode()
    assert metric_value(text, "roomwatch_agent_up", agent="away") == 1.0
    h.advance(120, keep_alive=("a1",))  # back home: silent here, and that is no outage
    assert "AgentDown" not in h.states()
    text = render(h.collector.families(h.now)).decode()
    assert metric_value(text, "roomwatch_agent_up", agent="away") is None  # not 0: its home exports it
    assert metric_value(text, "roomwatch_agent_up", agent="a1") == 1.0
    assert [a.id for a in h.collector.agents.down_agents(h.now)] == []
    # the leak it raised here goes stale as "no data" (a day for state metrics) instead of firing forever
    h.advance(2 * 86400, step=600, keep_alive=("a1",))
    assert h.states() == {}
    # the home agent, silent for its timeout, is AgentDown as before
    h.advance(61, keep_alive=())
    assert h.alert("AgentDown")["labels"]["agent"] == "a1"


def test_agent_marked_standby_after_an_agent_down_resolves_it(tmp_path: Path) -> None:
    """The old shipped pair raised AgentDown on the failover collector; marking the agent standby and
    restarting that collector must end the alert, not restore it forever."""
    h = Harness(tmp_path, agents=[{"id": "a1", "token": "t" * 20}, {"id": "away", "token": "u" * 20}])
    h.advance(120, keep_alive=("a1",))
    assert h.alert("AgentDown")["labels"]["agent"] == "away"
    h.config_data["agents"][1]["standby"] = True
    h.restart()
    h.advance(120, keep_alive=("a1",))
    assert "AgentDown" not in h.states()


def test_standby_agent_alerts_are_kept_for_an_hour_after_it_left(tmp_path: Path) -> None:
    """It may have died here while its home collector is down: its alerts do not resolve as "no data" at
    once, only after an hour of silence (by then its home collector or Prometheus says more)."""
    h = Harness(tmp_path, agents=[{"id": "a1", "token": "t" * 20},
                                  {"id": "away", "token": "u" * 20, "standby": True}])
    h.push([(TEMP, TH1, 33.0)], agent="away")  # critical: > 32 °C
    h.advance(300, keep_alive=("a1",))
    h.push([(TEMP, TH1, 33.0)], agent="away")
    assert h.states().get("RoomTemperatureCritical") == "firing"
    h.advance(1800, step=10, keep_alive=("a1",))  # silent half an hour: still firing
    assert h.states().get("RoomTemperatureCritical") == "firing"
    h.advance(3600, step=10, keep_alive=("a1",))
    assert "RoomTemperatureCritical" not in h.states()


def test_event_rule_with_clear_event(tmp_path: Path) -> None:
    rule = {"alert": "UPSSelfTestFailed", "event": "ups_selftest_failed", "clear_event": "ups_selftest_ok",
            "severity": "warning", "annotations": {"summary": "UPS 自检失败"}}
    h = Harness(tmp_path, rules={"extra": [rule]})
    h.push(events=[("ups_selftest_failed", UPS)])
    assert h.states() == {"UPSSelfTestFailed": "firing"}
    h.push(events=[("ups_selftest_ok", UPS)])
    assert h.states() == {}


def test_rule_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text("rules:\n  - alert: UPSInputVoltageLow\n    metric: roomwatch_ups_input_voltage_volts\n"
                    "    when: \"< 180\"\n    clear: \"> 200\"\n    severity: warning\n")
    h = Harness(tmp_path, rules={"files": [str(tmp_path / "*.yaml")],
                                 "overrides": {"RoomTemperatureHigh": {"when": "> 25", "clear": "< 24", "for": "0s"}}})
    h.push([(TEMP, TH1, 25.5), ("roomwatch_ups_input_voltage_volts", UPS, 150.0)])
    assert h.states() == {"RoomTemperatureHigh": "firing", "UPSInputVoltageLow": "firing"}
    h.push([("roomwatch_ups_on_battery", UPS, 1.0)])
    h.advance(30)
    assert h.alert("UPSInputVoltageLow")["inhibitedBy"] == [h.alert("UPSOnBattery")["id"]]


def test_quiet_states_of_vanished_series_are_forgotten(h: Harness) -> None:
    for i in range(50):
        h.push([(TEMP, {**TH1, "device": f"th{i}"}, 22.0)])
    h.push([("roomwatch_door_open", DOOR, 1.0)])  # held by DoorOpenTooLong/OutOfHours: kept
    def temperature_states() -> int:
        return sum(1 for st in h.svc.engine.states.values() if st.rule.conds and st.rule.conds[0].metric == TEMP)

    assert temperature_states() == 150  # 50 sensors × 3 temperature rules (high, critical, rising fast)
    h.advance(301)
    h.svc.engine.gc(h.now)
    assert temperature_states() == 0
    assert {st.rule.name for st in h.svc.engine.states.values() if st.flags[0]} == {"DoorOpenTooLong", "DoorOpenedOutOfHours"}
    h.push([(TEMP, {**TH1, "device": "th1"}, 35.0)])  # a forgotten series comes back: evaluated as new
    assert h.states()["RoomTemperatureCritical"] == "pending"
