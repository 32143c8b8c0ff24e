"""Time intervals on routes with Alertmanager's semantics: weekdays, times, days of month (negative too), months,
years, location; mute and active intervals held back and released by the dispatcher (injected clock)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from roomwatch.alerts.timeintervals import TimeIntervalConfig, TimeIntervals, TimeSpec
from tests.alert_harness import Harness, at

SH = ZoneInfo("Asia/Shanghai")
LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}


def spec(**kw: object) -> TimeSpec:
    return TimeSpec.model_validate(kw)


def test_times_and_weekdays() -> None:
    office = spec(weekdays=["monday:friday"], times=[{"start_time": "08:30", "end_time": "17:30"}])
    assert office.holds(at("2025-03-03 08:30"), SH)  # a Monday, start included
    assert not office.holds(at("2025-03-03 17:30"), SH)  # end excluded
    assert not office.holds(at("2025-03-08 10:00"), SH)  # Saturday
    late = spec(times=[{"start_time": "22:00", "end_time": "24:00"}], weekdays=["Saturday"])
    assert late.holds(at("2025-03-08 23:59"), SH) and not late.holds(at("2025-03-09 00:00"), SH)
    assert spec(weekdays=["friday:friday", "sunday"]).holds(at("2025-03-09 12:00"), SH)


def test_days_of_month_months_years() -> None:
    last_week = spec(days_of_month=["-7:-1"])
    assert last_week.holds(at("2025-02-22 12:00"), SH) and not last_week.holds(at("2025-02-21 12:00"), SH)  # 28 days
    assert last_week.holds(at("2024-02-23 12:00"), SH) and not last_week.holds(at("2024-02-22 12:00"), SH)  # leap year
    assert spec(days_of_month=["1", "15:16"]).holds(at("2025-05-16 01:00"), SH)
    assert spec(months=["october:december"]).holds(at("2025-11-01 00:00"), SH)
    assert spec(months=["1:3"]).holds(at("2025-03-31 23:00"), SH) and not spec(months=["1:3"]).holds(at("2025-04-01 00:00"), SH)
    assert spec(years=["2025:2026"]).holds(at("2026-12-31 23:00"), SH)
    assert not spec(years=["2024"]).holds(at("2025-01-01 00:00"), SH)
    first_of_month = spec(days_of_month=["1:1"], months=["january"])  # every field must hold
    assert first_of_month.holds(at("2025-01-01 10:00"), SH) and not first_of_month.holds(at("2025-02-01 10:00"), SH)


def test_location() -> None:
    utc_morning = spec(times=[{"start_time": "00:00", "end_time": "01:00"}], location="UTC")
    assert utc_morning.holds(at("2025-03-03 08:30"), SH)  # 00:30 UTC
    assert not spec(times=[{"start_time": "00:00", "end_time": "01:00"}]).holds(at("2025-03-03 08:30"), SH)


@pytest.mark.parametrize(("kw", "message"), [
    ({"times": [{"start_time": "17:30", "end_time": "08:30"}]}, "must be before"),
    ({"times": [{"start_time": "8h", "end_time": "09:00"}]}, "time of day"),
    ({"weekdays": ["funday"]}, "one of monday"),
    ({"weekdays": ["friday:monday"]}, "ends before it starts"),
    ({"days_of_month": ["32"]}, "out of range"),
    ({"days_of_month": ["0"]}, "out of range"),
    ({"months": ["13"]}, "out of range"),
    ({"location": "Mars/Olympus"}, "unknown time zone"),
])
def test_mistakes_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TimeSpec.model_validate(kw)


def test_unquoted_yaml_times_are_taken_back() -> None:
    """YAML 1.1 reads 17:30 as 1050 (base 60)."""
    s = TimeSpec.model_validate({"times": [{"start_time": 510, "end_time": 1050}]})
    assert s.times[0].start_time == "08:30" and s.times[0].end_time == "17:30"


def test_builtin_working_hours_and_muted() -> None:
    from roomwatch.alerts.timewindow import WorkingHours

    hours = WorkingHours(SH, frozenset(range(5)), dt.time(8, 30), dt.time(17, 30), frozenset({dt.date(2025, 3, 4)}))
    ti = TimeIntervals([TimeIntervalConfig.model_validate({"name": "maint", "time_intervals": [
        {"weekdays": ["saturday"], "times": [{"start_time": "22:00", "end_time": "24:00"}]}]})], "Asia/Shanghai", hours)
    assert ti.holds("working_hours", at("2025-03-03 09:00"))
    assert ti.muted(("maint",), (), at("2025-03-08 22:30"))
    assert ti.muted((), ("working_hours",), at("2025-03-03 20:00"))  # active only in office hours
    assert not ti.muted((), ("working_hours",), at("2025-03-03 10:00"))
    assert ti.muted((), ("working_hours",), at("2025-03-04 10:00"))  # a holiday of the calendar


def test_info_only_in_office_hours_and_a_weekly_maintenance_window(tmp_path: Path) -> None:
    """An alert that fires in a muted period is held back (the group keeps it) and goes out when the period ends."""
    h = Harness(tmp_path, t0=at("2025-03-08 21:59"), time_intervals=[
        {"name": "maintenance", "time_intervals": [{"weekdays": ["saturday"],
                                                    "times": [{"start_time": "22:00", "end_time": "24:00"}]}]}],
        routes=[{"channels": ["duty"], "mute_time_intervals": ["maintenance"], "group_interval": "1m"}])
    h.advance(61)  # 22:00: the window starts
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    h.advance(60 * 60)
    assert h.queued() == []  # nothing during the window
    assert h.states() == {"WaterLeak": "firing"}  # the alert itself is there
    h.advance(60 * 60)  # past midnight: Sunday, the window is over
    sent = h.queued()
    assert [(n.reason, n.alerts[0].labels["alertname"]) for n in sent] == [("firing", "WaterLeak")]


def test_active_time_intervals_hold_info_until_office_hours(tmp_path: Path) -> None:
    h = Harness(tmp_path, t0=at("2025-03-03 07:00"), routes=[
        {"matchers": ['severity="critical"'], "channels": ["chief"]},
        {"channels": ["duty"], "active_time_intervals": ["working_hours"], "group_interval": "1m"}])
    h.push([("roomwatch_door_open", {"site": "s", "room": "r", "device": "door1"}, 1.0)])
    h.advance(11 * 60)  # DoorOpenTooLong (warning) fires at 07:10, outside office hours
    assert h.states().get("DoorOpenTooLong") == "firing" and h.queued() == []
    h.advance(90 * 60)  # 08:30: office hours
    assert [n.alerts[0].labels["alertname"] for n in h.queued()] == ["DoorOpenTooLong"]
