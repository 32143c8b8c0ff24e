"""Physical ranges and sentinels, for every driver: the vocabulary's table, the drop counter, the agent's screen.

Pure functions and an in-process agent (no peers): the recordings tests
(test_snmp_recordings.py, test_nut_driver.py) check the same rules end to end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import DeviceConfig, Driver, Reading
from roomwatch.drivers.modbus.config import load_profile, profile_names
from roomwatch.drivers.modbus.table import Register, compile_row, decode_block, plan_requests
from roomwatch.drivers.mqtt.payloads import QUANTITIES
from roomwatch.drivers.nut import PHASED, POINTS, readings_from
from roomwatch.drivers.plausible import Drops, screen
from roomwatch.drivers.registry import register
from roomwatch.drivers.snmp.profile import Point, all_profiles, parse_oid
from roomwatch.drivers.snmp.readings import evaluate

UPS = "1.3.6.1.2.1.33.1"


def _oid(text: str) -> tuple[int, ...]:
    return parse_oid(text)


# ----------------------------------------------------------------- one table of ranges


def test_every_quantity_a_profile_can_emit_has_a_physical_range() -> None:
    """Every SNMP profile row, alarm table and line count, every NUT variable, Modbus profile row and MQTT
    quantity reports a metric with a range in roomwatch/core/vocabulary.py (a new profile or metric without one fails)."""
    missing = set()
    for prof in all_profiles().values():
        metrics = [p.metric for p in prof.points] + [p.metric for t in prof.tables for p in t.points]
        metrics += [m for a in prof.alarms for m in a.metrics] + list(prof.lines)
        missing |= {f"snmp {prof.name}: {m}" for m in metrics if m not in v.RANGES}
    missing |= {f"nut {p.var}: {p.metric}" for p in POINTS if p.metric not in v.RANGES}
    missing |= {f"nut {single}: {metric}" for metric, single, *_ in PHASED if metric not in v.RANGES}
    for name in profile_names():
        rows = load_profile(name)[1].registers
        missing |= {f"modbus {name}: {r.metric}" for r in rows if r.metric not in v.RANGES}
    missing |= {f"mqtt {q}: {d.metric}" for q, d in QUANTITIES.items() if d.metric not in v.RANGES}
    assert not missing, sorted(missing)


@pytest.mark.parametrize(("metric", "inside", "outside"), [
    (v.UPS_INPUT_VOLTAGE, [0.0, 231.3, 500.0], [2313.0, -1.0, 501.0]),
    (v.UPS_BATTERY_VOLTAGE, [12.0, 483.8, 800.0], [-12.0, 5420.0]),
    (v.UPS_BATTERY_TEMPERATURE, [-40.0, 0.5, 100.0], [-273.0, 100.1, 3276.7]),
    (v.TEMPERATURE, [-40.0, 25.0], [-41.0, 850.0]),
    (v.HUMIDITY, [0.0, 0.45, 1.0], [1.01, -0.01]),
    (v.UPS_LOAD, [0.0, 1.2, 2.5], [2.51, -0.1]),
    (v.UPS_BATTERY_CHARGE, [0.0, 1.0], [2.55, -0.01]),
    (v.UPS_BATTERY_RUNTIME, [0.0, 109762.0, 345600.0], [599940.0, 3932100.0]),  # 30 h idle APC; 9999 / 65535 min
    (v.HOST_HW_TEMPERATURE, [105.0], [200.0]),
])
def test_ranges(metric: str, inside: list[float], outside: list[float]) -> None:
    assert all(v.plausible(metric, x) for x in inside)
    assert not any(v.plausible(metric, x) for x in outside)
    assert v.plausible("roomwatch_no_such_metric", 1e12)  # no range known: nothing to judge


def test_screen_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roomwatch")
    drops = Drops("ups9", logging.getLogger("roomwatch.driver.ups9"))
    good = [Reading(v.UPS_INPUT_VOLTAGE, 0.0), Reading(v.UPS_LOAD, 0.3), Reading(v.HOST_LOAD1, 1e6)]
    bad = [Reading(v.UPS_INPUT_VOLTAGE, 2313.0), Reading(v.TEMPERATURE, float("nan"), {"sensor": "x"})]
    for _ in range(3):
        assert screen(good + bad, drops) == good
    assert drops.counts == {(v.UPS_INPUT_VOLTAGE, "out_of_range"): 3, (v.TEMPERATURE, "out_of_range"): 3}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "2313.0 left out (outside 0..500" in lines[0]  # once per device and metric
    assert {(r.labels["metric"], r.labels["reason"], r.value) for r in drops.readings() if r.labels} == {
        (v.UPS_INPUT_VOLTAGE, "out_of_range", 3.0), (v.TEMPERATURE, "out_of_range", 3.0)}
    assert all(r.metric == v.DEVICE_READINGS_DROPPED for r in drops.readings())


# ----------------------------------------------------------------- SNMP rows


@pytest.mark.parametrize(("point", "raw", "expected"), [
    (Point(v.UPS_INPUT_VOLTAGE), 2313, "out_of_range"),  # tenths in a volts object: absent, not guessed
    (Point(v.UPS_INPUT_VOLTAGE, scale=0.1), 2313, 231.3),  # where the MIB says tenths
    (Point(v.UPS_BATTERY_TEMPERATURE, absent=frozenset({0.0, -273.0})), -273, "sentinel"),
    (Point(v.UPS_BATTERY_RUNTIME, scale=60, absent=frozenset({9999.0})), 9999, "sentinel"),
    (Point(v.UPS_BATTERY_RUNTIME, scale=60), 65535, "out_of_range"),
    (Point(v.UPS_LOAD, scale=0.01), 251, "out_of_range"),
    (Point(v.UPS_INPUT_VOLTAGE), "n/a", "invalid"),
    (Point(v.UPS_INPUT_VOLTAGE), None, None),  # noSuchObject: nothing to count
    (Point(v.UPS_ON_BATTERY, mapping={3: 0.0, 5: 1.0}), 1, None),  # upsOutputSource other(1): no guess
    (Point(v.UPS_ON_BATTERY, mapping={3: 0.0, 5: 1.0}), 5, 1.0),
])
def test_point_read_says_why_a_value_is_absent(point: Point, raw: Any, expected: Any) -> None:
    assert point.read(raw) == expected


def test_a_later_row_stands_in_for_an_implausible_one_without_a_drop() -> None:
    xppc = all_profiles()["xppc"]
    drops = Drops("d")
    # XPPC input voltage in tenths (right), UPS-MIB line 1 also in tenths (wrong): the vendor row wins.
    scalars = {_oid("1.3.6.1.4.1.935.1.1.1.3.2.1.0"): 2313, _oid(f"{UPS}.3.3.1.3.1"): 2313}
    got = {r.metric: r.value for r in evaluate(xppc, scalars, {}, drops).readings}
    assert got[v.UPS_INPUT_VOLTAGE] == 231.3 and drops.counts == {}
    # Only the UPS-MIB object: absent and counted.
    got = {r.metric: r.value for r in evaluate(xppc, {_oid(f"{UPS}.3.3.1.3.1"): 2313}, {}, drops).readings}
    assert v.UPS_INPUT_VOLTAGE not in got and drops.counts == {(v.UPS_INPUT_VOLTAGE, "out_of_range"): 1}


def _phases(scalars: dict[str, Any], metric: str = v.UPS_INPUT_VOLTAGE) -> dict[str | None, float]:
    result = evaluate(all_profiles()["ups-mib"], {_oid(k): x for k, x in scalars.items()}, {})
    return {(r.labels or {}).get("phase"): r.value for r in result.readings if r.metric == metric}


def test_phase_labels_follow_the_line_count_or_the_zero_padding() -> None:
    lines = {f"{UPS}.3.3.1.3.{i}": x for i, x in ((1, 231), (2, 229), (3, 232))}
    assert _phases({**lines, f"{UPS}.3.2.0": 3}) == {"L1": 231, "L2": 229, "L3": 232}
    assert _phases(lines) == {"L1": 231, "L2": 229, "L3": 232}  # no count: three real lines
    assert _phases({**lines, f"{UPS}.3.2.0": 1}) == {None: 231}  # the unit says one line
    padded = {f"{UPS}.3.3.1.3.1": 242, f"{UPS}.3.3.1.3.2": 0, f"{UPS}.3.3.1.3.3": 0}
    assert _phases(padded) == {None: 242}  # NetMan 204: lines 2 and 3 read 0 on a single-phase unit
    assert _phases({**padded, f"{UPS}.3.2.0": 3}) == {"L1": 242, "L2": 0, "L3": 0}  # a real phase loss
    assert _phases({f"{UPS}.3.3.1.3.1": 230}) == {None: 230}


def test_alarm_table_gives_battery_replacement_and_flags() -> None:
    prof = all_profiles()["ups-mib"]
    entry = _oid(f"{UPS}.6.2.1")
    present = _oid(f"{UPS}.6.1.0")

    def read(count: Any, rows: dict[tuple[int, ...], Any]) -> dict[tuple[str, str | None], float]:
        result = evaluate(prof, {present: count} if count is not None else {}, {entry: {i: {2: o} for i, o in rows.items()}})
        return {(r.metric, (r.labels or {}).get("flag")): r.value for r in result.readings}

    assert read(0, {}) == {(v.UPS_BATTERY_REPLACE, None): 0.0}  # the MIB answers: no alarm
    assert read(None, {}) == {}  # the MIB does not answer: nothing
    assert read(2, {}) == {}  # alarms present but not listed: unknown, not 0
    bad, bypass, fan = (_oid(f"{UPS}.6.3.{i}") for i in (1, 9, 16))
    assert read(3, {(1,): bad, (2,): bypass, (3,): fan}) == {
        (v.UPS_BATTERY_REPLACE, None): 1.0, (v.UPS_STATUS_FLAG, "RB"): 1.0, (v.UPS_STATUS_FLAG, "BYPASS"): 1.0,
        (v.UPS_STATUS_FLAG, "ALARM"): 1.0}
    assert read(1, {(1,): bypass}) == {(v.UPS_BATTERY_REPLACE, None): 0.0, (v.UPS_STATUS_FLAG, "BYPASS"): 1.0}


# ----------------------------------------------------------------- NUT


def _nut(variables: dict[str, str]) -> tuple[dict[tuple[str, str | None], float], Drops]:
    drops = Drops("n")
    out = readings_from(variables, None, drops)
    return {(r.metric, (r.labels or {}).get("phase") or (r.labels or {}).get("flag")): r.value for r in out}, drops


def test_nut_placeholders_ranges_and_status_words() -> None:
    got, drops = _nut({"battery.runtime": "-60", "battery.temperature": "0.0", "ups.temperature": "-273",
                       "input.voltage": "2313", "battery.charge": "unknown", "ups.status": "OFF"})
    assert got == {(v.UPS_BATTERY_LOW, None): 0.0, (v.UPS_BATTERY_REPLACE, None): 0.0, (v.UPS_STATUS_FLAG, "OFF"): 1.0}
    assert drops.counts == {(v.UPS_BATTERY_RUNTIME, "sentinel"): 1, (v.UPS_BATTERY_TEMPERATURE, "sentinel"): 1,
                            (v.UPS_TEMPERATURE, "out_of_range"): 1, (v.UPS_INPUT_VOLTAGE, "out_of_range"): 1,
                            (v.UPS_BATTERY_CHARGE, "invalid"): 1}
    assert _nut({"ups.status": "OB LB"})[0][(v.UPS_ON_BATTERY, None)] == 1.0
    assert _nut({"ups.status": "OL BYPASS"})[0][(v.UPS_ON_BATTERY, None)] == 0.0


def test_nut_three_phase_variables() -> None:
    three = {"input.phases": "3", "input.L1-N.voltage": "230", "input.L2-N.voltage": "231",
             "input.L3-N.voltage": "229", "input.voltage": "400", "ups.load": "40"}
    got, _ = _nut(three)
    assert {k: x for k, x in got.items() if k[0] == v.UPS_INPUT_VOLTAGE} == {
        (v.UPS_INPUT_VOLTAGE, "L1"): 230, (v.UPS_INPUT_VOLTAGE, "L2"): 231, (v.UPS_INPUT_VOLTAGE, "L3"): 229}
    assert got[(v.UPS_LOAD, None)] == 0.4  # ups.load: the unit's total
    one, _ = _nut({"input.phases": "1", "input.L1-N.voltage": "230", "input.voltage": "230"})
    assert one == {(v.UPS_INPUT_VOLTAGE, None): 230}
    lone, _ = _nut({"input.L1-N.voltage": "228"})  # only line 1 published: no phase label
    assert lone == {(v.UPS_INPUT_VOLTAGE, None): 228}
    counted_only, _ = _nut({"input.phases": "3", "input.voltage": "231"})  # no per-phase variables: the one there is
    assert counted_only == {(v.UPS_INPUT_VOLTAGE, None): 231}
    both, _ = _nut({"output.phases": "3", "ups.load": "40", "output.L1.power.percent": "35",
                    "output.L2.power.percent": "45", "output.L3.power.percent": "40"})
    assert both == {(v.UPS_LOAD, None): 0.4}  # the unit's total first
    per_phase, _ = _nut({"output.L1.power.percent": "35", "output.L2.power.percent": "45"})
    assert per_phase == {(v.UPS_LOAD, "L1"): 0.35, (v.UPS_LOAD, "L2"): 0.45}


# ----------------------------------------------------------------- Modbus and MQTT


def test_modbus_sentinels_are_counted() -> None:
    rows = [Register("t", v.TEMPERATURE, 0, scale=0.1, invalid=(0x7FFF,)), Register("h", v.HUMIDITY, 1, unit="percent")]
    request = plan_requests(rows)[0]
    drops = Drops("m")
    assert [(r.metric, r.value) for r in decode_block(request, [0x7FFF, 45], drops)] == [(v.HUMIDITY, 0.45)]
    assert drops.counts == {(v.TEMPERATURE, "sentinel"): 1}
    assert compile_row(rows[0]).value([253]) == pytest.approx(25.3)


def test_mqtt_ranges_are_the_vocabulary_ranges() -> None:
    for q in QUANTITIES.values():
        assert (q.low, q.high) == v.RANGES[q.metric]


# ----------------------------------------------------------------- the agent


class ImplausibleConfig(DeviceConfig):
    driver: Literal["implausible-test"] = "implausible-test"


@register
class ImplausibleDriver(Driver):
    """A third-party driver that does not check ranges itself: the agent does."""

    name = "implausible-test"
    config_model = ImplausibleConfig
    values: ClassVar[list[float]] = [2313.0, 231.0]

    async def poll(self) -> Sequence[Reading]:
        return [Reading(v.UPS_INPUT_VOLTAGE, self.values[0]), Reading(v.UPS_OUTPUT_VOLTAGE, self.values[1])]


async def test_the_agent_screens_every_driver_and_pushes_the_counter(caplog: pytest.LogCaptureFixture,
                                                                     tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="roomwatch")
    cfg = AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False},
                                      "devices": [{"name": "odd", "driver": "implausible-test"}]})
    agent = Agent(cfg)
    seen: list[Any] = []
    agent.observers.append(lambda dev, samples, events: seen.append(samples))
    for _ in range(3):
        await agent.poll_device(agent.devices["odd"])
    last = {(s.metric, s.labels.get("metric"), s.labels.get("reason")): s.value for s in seen[-1]}
    assert (v.UPS_INPUT_VOLTAGE, None, None) not in last and last[(v.UPS_OUTPUT_VOLTAGE, None, None)] == 231.0
    assert last[(v.DEVICE_READINGS_DROPPED, v.UPS_INPUT_VOLTAGE, "out_of_range")] == 3.0
    assert v.DEVICE_READINGS_DROPPED in v.HEALTH_METRICS  # kept while the device is down, like device_up
    assert sum("left out" in r.getMessage() for r in caplog.records) == 1
    body = "\n".join(f.name for f in agent.latest.families())
    assert v.DEVICE_READINGS_DROPPED in body and agent.devices["odd"].up
